//! `GET /openapi.json`: an OpenAPI 3.0 document made from the same route table and descriptors
//! as the routes themselves, so the document cannot drift from what is served.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use crate::routes::{Body, Route};

/// The document of `routes`.
pub fn document(routes: &[Route], version: &str) -> Value {
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for route in routes {
        let input = route.rpc.input();
        let output = route.rpc.output();
        add_schema(&output, &mut schemas);
        let mut parameters: Vec<Value> = route
            .path_fields
            .iter()
            .map(|field| {
                json!({
                    "name": field.name(), "in": "path", "required": true,
                    "schema": field_schema(field, &mut schemas),
                })
            })
            .collect();
        let mut operation = serde_json::Map::new();
        match &route.body {
            Body::Whole => {
                add_schema(&input, &mut schemas);
                operation.insert("requestBody".into(), body(&input));
            }
            Body::Field(field) => {
                if let Kind::Message(inner) = field.kind() {
                    add_schema(&inner, &mut schemas);
                    operation.insert("requestBody".into(), body(&inner));
                }
            }
            Body::None => {}
        }
        if !matches!(route.body, Body::Whole) {
            for field in input.fields() {
                let in_path = route.path_fields.contains(&field);
                let in_body = matches!(&route.body, Body::Field(body) if *body == field);
                if in_path || in_body || matches!(field.kind(), Kind::Message(_)) || field.is_map()
                {
                    continue;
                }
                parameters.push(json!({
                    "name": field.name(), "in": "query", "required": false,
                    "schema": field_schema(&field, &mut schemas),
                }));
            }
        }
        if shippy_proto::idempotency::honours_key(&route.grpc_path()) {
            parameters.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "Your name for what this call creates, unique among your calls: \
                    the same request repeated with the same key is answered with what the first \
                    created (`created: false`) and creates nothing more. Printable ASCII without \
                    spaces, at most 128 characters; a UUID is a good one.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            }));
        }
        operation.insert(
            "operationId".into(),
            json!(format!(
                "{}_{}",
                route.rpc.parent_service().name(),
                route.rpc.name()
            )),
        );
        operation.insert("tags".into(), json!([route.service.name]));
        operation.insert(
            "summary".into(),
            json!(format!("{} (gRPC {})", route.rpc.name(), route.grpc_path())),
        );
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        operation.insert(
            "responses".into(),
            json!({
                "200": {
                    "description": "The RPC's answer.",
                    "content": {"application/json": {"schema": reference(&output)}},
                },
                "default": {
                    "description": "An error: the status follows the gRPC code.",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            }),
        );
        paths.entry(route.template.clone()).or_default().insert(
            route.method.as_str().to_lowercase(),
            Value::Object(operation),
        );
    }
    let mut components: serde_json::Map<String, Value> = schemas.into_iter().collect();
    components.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "shippy REST API",
            "version": version,
            "description": "Every route is an RPC of the shippy services, from its google.api.http annotation. JSON follows the proto3 JSON mapping; answers use the protos' field names and include every field. Calls that need a user take `Authorization: Bearer <token>` (from POST /v1/auth/token, or a token of the configured OpenID Connect provider).",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{}, {"bearer": []}],
    })
}

fn body(message: &MessageDescriptor) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": reference(message)}}})
}

fn reference(message: &MessageDescriptor) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
}

fn add_schema(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) {
    if schemas.contains_key(message.full_name()) {
        return;
    }
    // Inserted first, so a recursive message refers to itself instead of looping.
    schemas.insert(message.full_name().to_owned(), Value::Null);
    let mut properties = serde_json::Map::new();
    for field in message.fields() {
        let schema = field_schema(&field, schemas);
        properties.insert(field.name().to_owned(), schema);
    }
    schemas.insert(
        message.full_name().to_owned(),
        json!({"type": "object", "properties": properties, "additionalProperties": false}),
    );
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let one = match field.kind() {
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        // proto3 JSON writes 64-bit integers as strings.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "int64"})
        }
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Double => json!({"type": "number", "format": "double"}),
        Kind::Enum(values) => {
            json!({"type": "string", "enum": values.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::Message(message) => {
            add_schema(&message, schemas);
            reference(&message)
        }
    };
    if field.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "The gRPC code's name, e.g. INVALID_ARGUMENT."},
            "request_id": {"type": "string"},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_schemas() {
        let (_, routes) =
            crate::routes::from_descriptors(shippy_proto::FILE_DESCRIPTOR_SET).expect("routes");
        let doc = document(&routes, "0.1.0");
        let create = &doc["paths"]["/v1/consignments"]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/shippy.consignment.v1.Consignment"
        );
        let consignment = &doc["components"]["schemas"]["shippy.consignment.v1.Consignment"];
        assert_eq!(consignment["properties"]["containers"]["type"], "array");
        assert_eq!(
            doc["paths"]["/v1/users/{id}"]["get"]["parameters"][0]["in"],
            "path"
        );
        assert!(
            doc["components"]["schemas"]
                .as_object()
                .expect("schemas")
                .values()
                .all(|s| !s.is_null())
        );
    }
}
