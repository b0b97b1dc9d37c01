//! The route table, read from the protos: every RPC with a `google.api.http` option becomes one
//! REST route, so a newly annotated RPC is reachable with no gateway code.
//!
//! Supported: the verbs `get`, `post`, `put`, `patch`, `delete`; path templates of literal
//! segments and `{field}` variables (a top-level scalar field of the request); `body` empty (the
//! other fields come from the query string), `*` (the whole request) or one message field.
//! Anything else in an annotation (custom verbs, `{field=**}`, `additional_bindings`,
//! `response_body`) stops the gateway at start-up with one sentence naming the RPC, rather than
//! serving a route that means something else than its annotation.

use std::collections::BTreeSet;

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MethodDescriptor, ReflectMessage as _,
    Value,
};
use shippy_shared::catalog::{self, ServiceSpec};

/// The fully qualified name of the option every route comes from.
const HTTP_OPTION: &str = "google.api.http";

/// One REST route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path template as annotated, e.g. `/v1/users/{id}` (also axum's syntax).
    pub template: String,
    /// The request fields named by `{…}` in the path, in order.
    pub path_fields: Vec<FieldDescriptor>,
    /// Where the JSON body goes.
    pub body: Body,
    /// The RPC.
    pub rpc: MethodDescriptor,
    /// The service that serves it (from the catalog).
    pub service: &'static ServiceSpec,
}

impl Route {
    /// The gRPC path, `/package.Service/Method`.
    pub fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.rpc.parent_service().full_name(),
            self.rpc.name()
        )
    }
}

/// The `body` of an annotation.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body; fields come from the path and the query string.
    None,
    /// The whole request message is the body.
    Whole,
    /// The body is this message field of the request; the others come from the query.
    Field(FieldDescriptor),
}

/// Why the route table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The descriptor set does not decode.
    #[error("the compiled protos cannot be read: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// The protos do not define the `google.api.http` option.
    #[error("the protos do not import google/api/annotations.proto")]
    NoHttpOption,
    /// An annotation the gateway cannot serve faithfully.
    #[error("{rpc}: {problem}")]
    Unsupported {
        /// The RPC, `package.Service.Method`.
        rpc: String,
        /// What is not supported.
        problem: String,
    },
}

/// Reads every annotated RPC of a catalog service from the encoded descriptor set.
pub fn from_descriptors(encoded: &[u8]) -> Result<(DescriptorPool, Vec<Route>), RouteError> {
    let pool = DescriptorPool::decode(encoded)?;
    let option = pool
        .get_extension_by_name(HTTP_OPTION)
        .ok_or(RouteError::NoHttpOption)?;
    let mut routes = Vec::new();
    let mut seen = BTreeSet::new();
    for service in pool.services() {
        let Some(spec) = catalog::ALL
            .iter()
            .find(|spec| spec.grpc_service == service.full_name())
        else {
            continue;
        };
        for rpc in service.methods() {
            let options = rpc.options();
            if !options.has_extension(&option) {
                continue;
            }
            let unsupported = |problem: String| RouteError::Unsupported {
                rpc: rpc.full_name().to_owned(),
                problem,
            };
            if rpc.is_client_streaming() || rpc.is_server_streaming() {
                return Err(unsupported("streaming RPCs have no REST route".into()));
            }
            let Value::Message(rule) = options.get_extension(&option).into_owned() else {
                return Err(unsupported("the http option is not a message".into()));
            };
            let route = route_of(&rule, &rpc, spec).map_err(unsupported)?;
            if !seen.insert((route.method.to_string(), shape(&route.template))) {
                return Err(unsupported(format!(
                    "{} {} is annotated on another RPC too",
                    route.method, route.template
                )));
            }
            routes.push(route);
        }
    }
    Ok((pool, routes))
}

/// A template with its variable names erased, so `/a/{x}` and `/a/{y}` count as the same path.
fn shape(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn text(rule: &DynamicMessage, name: &str) -> String {
    rule.get_field_by_name(name)
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn route_of(
    rule: &DynamicMessage,
    rpc: &MethodDescriptor,
    service: &'static ServiceSpec,
) -> Result<Route, String> {
    for unsupported in ["custom", "additional_bindings", "response_body"] {
        let set = rule
            .descriptor()
            .get_field_by_name(unsupported)
            .is_some_and(|field| rule.has_field(&field));
        if set {
            return Err(format!(
                "`{unsupported}` in google.api.http is not supported"
            ));
        }
    }
    let verbs = [
        ("get", Method::GET),
        ("post", Method::POST),
        ("put", Method::PUT),
        ("patch", Method::PATCH),
        ("delete", Method::DELETE),
    ];
    let (method, template) = verbs
        .into_iter()
        .map(|(name, method)| (method, text(rule, name)))
        .find(|(_, template)| !template.is_empty())
        .ok_or("google.api.http names no verb and path")?;
    let input = rpc.input();
    let mut path_fields = Vec::new();
    if !template.starts_with("/v") {
        return Err(format!(
            "the path {template:?} must start with a version, `/v1/`"
        ));
    }
    for segment in template.split('/').skip(1) {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let field = input
                .get_field_by_name(name)
                .ok_or_else(|| format!("{template}: {} has no field {name:?}", input.name()))?;
            if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
                return Err(format!(
                    "{template}: {{{name}}} must be a single scalar field"
                ));
            }
            path_fields.push(field);
        } else if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "{template}: segment {segment:?} is neither a literal nor a {{field}}"
            ));
        }
    }
    let body = match text(rule, "body").as_str() {
        "" => Body::None,
        "*" => Body::Whole,
        name => {
            let field = input
                .get_field_by_name(name)
                .ok_or_else(|| format!("body: {} has no field {name:?}", input.name()))?;
            if !matches!(field.kind(), Kind::Message(_)) || field.is_list() || field.is_map() {
                return Err(format!("body: {name} must be a message field"));
            }
            Body::Field(field)
        }
    };
    if matches!(body, Body::Whole) && !path_fields.is_empty() {
        // A path variable and a whole-message body could disagree about the same field.
        return Err("body \"*\" with path variables is not supported".into());
    }
    if method == Method::GET && !matches!(body, Body::None) {
        return Err("a GET route has no body".into());
    }
    Ok(Route {
        method,
        template,
        path_fields,
        body,
        rpc: rpc.clone(),
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Route> {
        from_descriptors(shippy_proto::FILE_DESCRIPTOR_SET)
            .expect("the shippy protos give a route table")
            .1
    }

    #[test]
    fn every_annotated_rpc_of_the_shippy_protos_has_its_route() {
        let table: Vec<(String, String, String)> = routes()
            .iter()
            .map(|r| (r.method.to_string(), r.template.clone(), r.grpc_path()))
            .collect();
        for expected in [
            (
                "POST",
                "/v1/consignments",
                "/shippy.consignment.v1.ShippingService/CreateConsignment",
            ),
            (
                "GET",
                "/v1/consignments",
                "/shippy.consignment.v1.ShippingService/GetConsignments",
            ),
            (
                "GET",
                "/v1/vessels",
                "/shippy.vessel.v1.VesselService/GetVessels",
            ),
            ("GET", "/v1/users/{id}", "/shippy.user.v1.UserService/Get"),
            ("POST", "/v1/auth/token", "/shippy.user.v1.UserService/Auth"),
        ] {
            let expected = (expected.0.into(), expected.1.into(), expected.2.into());
            assert!(
                table.contains(&expected),
                "{expected:?} missing from {table:?}"
            );
        }
        let get = routes()
            .into_iter()
            .find(|r| r.template == "/v1/users/{id}")
            .expect("route");
        assert_eq!(get.path_fields[0].name(), "id");
        assert!(matches!(get.body, Body::None));
    }

    #[test]
    fn shapes_ignore_variable_names() {
        assert_eq!(shape("/v1/a/{x}/b"), shape("/v1/a/{y}/b"));
        assert_ne!(shape("/v1/a/{x}"), shape("/v1/a/x"));
    }
}
