//! JSON ↔ protobuf for one route, by the descriptors (the proto3 JSON mapping): the request
//! message is built from the path variables, the query string and the JSON body; the answer is
//! written with the protos' field names (`vessel_id`, as in `consignment.json` and the CLI's
//! `--json`), every field present, defaults included, so clients need not know proto3's
//! "absent means default" rule.
//!
//! Input is hostile: unknown fields, wrong types and trailing bytes are refused with one sentence
//! that names the field or position; nothing here panics on input.

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
    Value,
};

use shippy_proto::codec::MAX_FIELDS;

use crate::routes::{Body, Route};

/// Why a request could not be turned into its message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    /// The body is not valid JSON for the request (the serde message names where and why).
    #[error("the body is not a valid {message}: {cause}")]
    Body {
        /// The message expected.
        message: String,
        /// Where and why.
        cause: String,
    },
    /// This route takes no body, but one was sent.
    #[error("this route takes no body; send its fields in the query string")]
    UnexpectedBody,
    /// A query parameter that is not a field of the request.
    #[error("unknown query parameter {0:?}")]
    UnknownParameter(String),
    /// A path or query value of the wrong type.
    #[error("{field}: {value:?} is not a valid {kind}")]
    BadValue {
        /// The field.
        field: String,
        /// The value given.
        value: String,
        /// What was expected.
        kind: &'static str,
    },
    /// The query string is not valid percent-encoded UTF-8.
    #[error("the query string is not valid UTF-8 after percent-decoding")]
    BadQuery,
}

/// The encoded request message of `route` from its path variables (in template order), query
/// string and body.
pub fn request(
    route: &Route,
    path: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<Bytes, InputError> {
    let input = route.rpc.input();
    let body_is_empty = body.iter().all(u8::is_ascii_whitespace);
    let mut message = match &route.body {
        Body::Whole if !body_is_empty => from_json(&input, body)?,
        Body::None if !body_is_empty => return Err(InputError::UnexpectedBody),
        _ => DynamicMessage::new(input.clone()),
    };
    if let Body::Field(field) = &route.body
        && !body_is_empty
        && let Kind::Message(inner) = field.kind()
    {
        message.set_field(field, Value::Message(from_json(&inner, body)?));
    }
    for (field, (_, value)) in route.path_fields.iter().zip(path) {
        message.set_field(field, scalar(field, value)?);
    }
    if !matches!(route.body, Body::Whole)
        && let Some(query) = query
    {
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, value) = (decode(key)?, decode(value)?);
            let field = input
                .get_field_by_name(&key)
                .or_else(|| input.get_field_by_json_name(&key))
                .filter(|field| {
                    !matches!(field.kind(), Kind::Message(_))
                        && !field.is_map()
                        && !route.path_fields.contains(field)
                })
                .ok_or_else(|| InputError::UnknownParameter(key.clone()))?;
            let value = scalar(&field, &value)?;
            if field.is_list() {
                if let Value::List(list) = message.get_field_mut(&field) {
                    list.push(value);
                }
            } else {
                message.set_field(&field, value);
            }
        }
    }
    Ok(message.encode_to_vec().into())
}

/// The JSON of an answer of `output`, or `None` if the bytes are not one (a broken upstream).
pub fn response(output: &MessageDescriptor, encoded: Bytes) -> Option<Vec<u8>> {
    let message = DynamicMessage::decode(output.clone(), encoded).ok()?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &options)
        .ok()?;
    Some(out)
}

fn from_json(descriptor: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, InputError> {
    let fail = |cause: String| InputError::Body {
        message: descriptor.full_name().to_owned(),
        cause,
    };
    // A byte-order mark is accepted, as the CLI accepts files saved with one.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    count_list_elements(body).map_err(|error| fail(error.to_string()))?;
    let mut json = serde_json::Deserializer::from_slice(body);
    let message = DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut json,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|error| fail(error.to_string()))?;
    json.end().map_err(|error| fail(error.to_string()))?;
    Ok(message)
}

/// Refuses a body whose lists hold more than [`MAX_FIELDS`] elements in all, before it is turned
/// into a message. Each element of a list becomes a whole value once parsed (`{}` is three bytes
/// of JSON and a message in memory), so a body within the size limit could otherwise take far more
/// memory than its size, with no token needed: the services' own limits (at most 10 000
/// containers) apply only after the gateway has built and sent the message. The walk allocates
/// nothing; a body that is not JSON is left for the parse after it to describe.
fn count_list_elements(body: &[u8]) -> Result<(), serde_json::Error> {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess};

    /// List elements still allowed.
    struct Count<'a>(&'a mut usize);

    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, value: D) -> Result<(), D::Error> {
            value.deserialize_any(self)
        }
    }

    impl<'de> de::Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut list: A) -> Result<(), A::Error> {
            while list.next_element_seed(Count(&mut *self.0))?.is_some() {
                *self.0 = self.0.checked_sub(1).ok_or_else(|| {
                    de::Error::custom(format_args!(
                        "its lists hold more than {MAX_FIELDS} elements in all; no shippy call \
                         takes as many"
                    ))
                })?;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
            while members.next_key::<IgnoredAny>()?.is_some() {
                members.next_value_seed(Count(&mut *self.0))?;
            }
            Ok(())
        }
    }

    let mut allowed = MAX_FIELDS;
    let mut json = serde_json::Deserializer::from_slice(body);
    match Count(&mut allowed).deserialize(&mut json) {
        Err(error) if error.is_data() => Err(error),
        _ => Ok(()),
    }
}

fn decode(text: &str) -> Result<String, InputError> {
    let plus_as_space = text.replace('+', " ");
    percent_decode(&plus_as_space).ok_or(InputError::BadQuery)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A path or query value as the field's type.
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, InputError> {
    let bad = |kind: &'static str| InputError::BadValue {
        field: field.name().to_owned(),
        value: text.chars().take(64).collect(),
        kind,
    };
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(text.parse().map_err(|_| bad("boolean (true or false)"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| bad("32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| bad("64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(text.parse().map_err(|_| bad("unsigned 32-bit integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(text.parse().map_err(|_| bad("unsigned 64-bit integer"))?)
        }
        Kind::Float => Value::F32(text.parse().map_err(|_| bad("number"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad("number"))?),
        Kind::Enum(values) => Value::EnumNumber(
            values
                .get_value_by_name(text)
                .map(|value| value.number())
                .or_else(|| text.parse().ok())
                .ok_or_else(|| bad("value of the enum"))?,
        ),
        Kind::Bytes | Kind::Message(_) => return Err(bad("value for the path or query")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes;

    fn route(template: &str, method: &str) -> Route {
        routes::from_descriptors(shippy_proto::FILE_DESCRIPTOR_SET)
            .expect("routes")
            .1
            .into_iter()
            .find(|r| r.template == template && r.method.as_str() == method)
            .expect("route")
    }

    #[test]
    fn the_example_consignment_file_is_a_valid_body() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../consignment.json"
        ))
        .expect("consignment.json");
        let encoded = request(&route("/v1/consignments", "POST"), &[], None, &body)
            .expect("consignment.json is accepted");
        let decoded = shippy_proto::consignment::v1::Consignment::decode(encoded).expect("decodes");
        assert_eq!(decoded.weight, 55000);
        assert_eq!(decoded.containers.len(), 3);
        assert_eq!(decoded.containers[0].customer_id, "cust001");
    }

    #[test]
    fn bad_bodies_and_parameters_get_one_sentence_each() {
        let create = route("/v1/consignments", "POST");
        let unknown = request(&create, &[], None, br#"{"weight": 1, "wieght": 2}"#)
            .expect_err("unknown field");
        assert!(unknown.to_string().contains("wieght"), "{unknown}");
        let wrong = request(&create, &[], None, br#"{"weight": "heavy"}"#).expect_err("type");
        assert!(
            wrong
                .to_string()
                .contains("shippy.consignment.v1.Consignment"),
            "{wrong}"
        );
        assert!(request(&create, &[], None, b"{} trailing").is_err());
        let list = route("/v1/consignments", "GET");
        assert_eq!(
            request(&list, &[], Some("page_sise=3"), b""),
            Err(InputError::UnknownParameter("page_sise".into()))
        );
        assert!(matches!(
            request(&list, &[], Some("page_size=many"), b""),
            Err(InputError::BadValue { .. })
        ));
        assert_eq!(
            request(&list, &[], None, b"{}"),
            Err(InputError::UnexpectedBody)
        );
    }

    #[test]
    fn lists_may_hold_only_so_many_elements_in_all() {
        let create = route("/v1/consignments", "POST");
        let body = |n: usize, element: &str| {
            format!(
                r#"{{"description": "d", "weight": 1, "containers": [{}]}}"#,
                vec![element; n].join(",")
            )
        };
        // Four MiB of empty containers: refused before any is built.
        let flood = body(1_400_000, "{}");
        let refused = request(&create, &[], None, flood.as_bytes()).expect_err("too many");
        assert!(
            refused
                .to_string()
                .contains("its lists hold more than 20000 elements in all"),
            "{refused}"
        );
        assert!(request(&create, &[], None, body(MAX_FIELDS + 1, "{}").as_bytes()).is_err());
        // As many as the bound, spread over nested lists or not, pass on to the service.
        let element = r#"{"customer_id": "c", "origin": "o"}"#;
        let encoded = request(&create, &[], None, body(MAX_FIELDS, element).as_bytes())
            .expect("within the bound");
        let decoded = shippy_proto::consignment::v1::Consignment::decode(encoded).expect("decodes");
        assert_eq!(decoded.containers.len(), MAX_FIELDS);
        // A body that is not JSON is still described by the parser.
        let broken = request(&create, &[], None, b"{\"containers\": [{}, ").expect_err("cut");
        assert!(broken.to_string().contains("EOF"), "{broken}");
    }

    #[test]
    fn query_and_path_fill_their_fields() {
        let list = route("/v1/consignments", "GET");
        let encoded = request(&list, &[], Some("pageSize=7&page_token=a%2Bb"), b"").expect("ok");
        let decoded = shippy_proto::consignment::v1::GetRequest::decode(encoded).expect("decodes");
        assert_eq!((decoded.page_size, decoded.page_token.as_str()), (7, "a+b"));
        let get = route("/v1/users/{id}", "GET");
        let encoded = request(&get, &[("id".into(), "u-1".into())], None, b"").expect("ok");
        let decoded = shippy_proto::user::v1::User::decode(encoded).expect("decodes");
        assert_eq!(decoded.id, "u-1");
    }

    #[test]
    fn answers_use_proto_names_and_keep_defaults() {
        let create = route("/v1/consignments", "POST");
        let answer = shippy_proto::consignment::v1::Response {
            created: true,
            consignment: Some(shippy_proto::consignment::v1::Consignment {
                vessel_id: "v-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = response(&create.rpc.output(), answer.encode_to_vec().into()).expect("json");
        let json: serde_json::Value = serde_json::from_slice(&json).expect("valid json");
        assert_eq!(json["consignment"]["vessel_id"], "v-1");
        assert_eq!(json["next_page_token"], "");
        assert_eq!(json["consignments"], serde_json::json!([]));
    }
}
