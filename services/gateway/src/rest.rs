//! The REST routes: one axum route per annotated RPC, all served by [`serve`], which reads the
//! request (bounded), builds the message ([`transcode`]), forwards the caller's token
//! ([`auth`]), calls the service ([`upstream`]) and writes the answer as JSON or a [`Problem`].

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{RawPathParams, rejection::RawPathParamsRejection},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use shippy_shared::{
    discovery::{balance::BalancedChannel, trace::RequestId},
    idempotency::IdempotencyKey,
    runtime::http::ClientAddr,
};
use tonic::{Code, metadata::MetadataMap};

use crate::{
    auth::Credentials,
    problem::Problem,
    routes::{Body as BodyRule, Route},
    transcode, upstream,
};

/// What every REST route shares.
#[derive(Debug)]
pub struct Upstreams {
    /// A balanced channel per service name.
    pub channels: HashMap<&'static str, BalancedChannel>,
    /// Bearer tokens, checked and exchanged.
    pub credentials: Credentials,
    /// Largest body read.
    pub body_limit: usize,
    /// The deadline of one call.
    pub timeout: Duration,
}

/// The router of every route in `routes`.
pub fn router(routes: Vec<Route>, upstreams: Arc<Upstreams>) -> Router {
    let mut router = Router::new();
    for route in routes {
        let filter = match MethodFilter::try_from(route.method.clone()) {
            Ok(filter) => filter,
            Err(_) => continue,
        };
        let template = route.template.clone();
        let route = Arc::new(route);
        let upstreams = Arc::clone(&upstreams);
        router = router.route(
            &template,
            on(
                filter,
                move |params: Result<RawPathParams, RawPathParamsRejection>,
                      request: Request<Body>| {
                    serve(Arc::clone(&route), Arc::clone(&upstreams), params, request)
                },
            ),
        );
    }
    router
}

/// Serves one REST call of `route`, within one deadline (`gateway.timeout_ms`) for all of it:
/// reading the body, exchanging a provider's token, and the service's call get what is left of it,
/// not a full timeout each.
async fn serve(
    route: Arc<Route>,
    upstreams: Arc<Upstreams>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request<Body>,
) -> Response {
    let request_id = RequestId::current_or_new();
    let deadline = tokio::time::Instant::now() + upstreams.timeout;
    match call(&route, &upstreams, params, request, &request_id, deadline).await {
        Ok(json) => {
            let mut response = (StatusCode::OK, json).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(problem) => problem.with_request_id(request_id.as_str()).into_response(),
    }
}

async fn call(
    route: &Route,
    upstreams: &Upstreams,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request<Body>,
    request_id: &RequestId,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Problem> {
    // axum's own refusal is plain text; the gateway's refusals are problems.
    let params = params.map_err(|_| {
        Problem::new(
            Code::InvalidArgument,
            "a path segment is not valid UTF-8 after percent-decoding",
        )
    })?;
    let (parts, body) = request.into_parts();
    // The body gets the call's deadline too: a client trickling it in holds nothing for longer.
    let body = tokio::time::timeout_at(
        deadline,
        read_body(&parts, body, route, upstreams.body_limit),
    )
    .await
    .map_err(|_| {
        Problem::http(
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            format!(
                "the body did not arrive within {} ms",
                upstreams.timeout.as_millis()
            ),
        )
    })??;
    let path: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let message = transcode::request(route, &path, parts.uri.query(), &body)
        .map_err(|error| Problem::new(Code::InvalidArgument, error.to_string()))?;
    let mut metadata = MetadataMap::new();
    // The client's address, for limits that count per client (the user service's log-in limit
    // trusts it from registered gateways only). Any `x-forwarded-for` the client sent is dropped.
    if let Some(ClientAddr(client)) = parts.extensions.get::<ClientAddr>()
        && let Ok(value) = client.ip().to_string().parse()
    {
        metadata.insert("x-forwarded-for", value);
    }
    forward_idempotency_key(route, &parts.headers, &mut metadata)?;
    tokio::time::timeout_at(
        deadline,
        upstreams
            .credentials
            .forward(parts.headers.get(header::AUTHORIZATION), &mut metadata),
    )
    .await
    .map_err(|_| {
        Problem::new(
            Code::DeadlineExceeded,
            format!(
                "the call did not finish within {} ms",
                upstreams.timeout.as_millis()
            ),
        )
    })??;
    // The service's call gets what is left, as its gRPC deadline; the balancer keeps to it and
    // says which service did not answer in time.
    let channel = upstreams
        .channels
        .get(route.service.name)
        .cloned()
        .ok_or_else(|| Problem::new(Code::Unavailable, "this route's service is not reachable"))?;
    let answer = request_id
        .clone()
        .scope(upstream::call(
            channel,
            &route.grpc_path(),
            message,
            metadata,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        ))
        .await
        .map_err(|status| {
            if matches!(status.code(), Code::Internal | Code::Unknown | Code::DataLoss) {
                tracing::warn!(rpc = %route.grpc_path(), code = ?status.code(), message = status.message(), "the service failed");
            }
            Problem::from_status(&status)
        })?;
    transcode::response(&route.rpc.output(), answer).map(Bytes::from).ok_or_else(|| {
        tracing::error!(rpc = %route.grpc_path(), "the service's answer does not decode as its output message");
        Problem::new(Code::Internal, "the service's answer could not be read")
    })
}

/// Puts the request's `Idempotency-Key` header into the call's metadata, for a route whose call
/// honours one ([`shippy_proto::idempotency`]). Elsewhere the header is refused rather than
/// ignored: a client sending one believes a repeat is safe, and there it would not be.
fn forward_idempotency_key(
    route: &Route,
    headers: &http::HeaderMap,
    metadata: &mut MetadataMap,
) -> Result<(), Problem> {
    use shippy_proto::idempotency;
    let mut keys = headers.get_all(idempotency::METADATA_KEY).iter();
    let Some(key) = keys.next() else {
        return Ok(());
    };
    if keys.next().is_some() {
        return Err(Problem::new(
            Code::InvalidArgument,
            "send at most one Idempotency-Key header",
        ));
    }
    if !idempotency::honours_key(&route.grpc_path()) {
        return Err(Problem::new(
            Code::InvalidArgument,
            "this route does not honour an Idempotency-Key: a repeat of it is not made safe by one",
        ));
    }
    // The services' own rule, checked here too, so a bad key is refused before any call.
    let key = IdempotencyKey::parse(&String::from_utf8_lossy(key.as_bytes()))
        .map_err(|refused| Problem::new(Code::InvalidArgument, refused.to_string()))?;
    let value = tonic::metadata::AsciiMetadataValue::try_from(key.as_str())
        .map_err(|_| Problem::new(Code::Internal, "the key could not be passed on"))?;
    metadata.insert(idempotency::METADATA_KEY, value);
    Ok(())
}

/// The body, at most `limit` bytes, and JSON when there is one.
async fn read_body(
    parts: &http::request::Parts,
    body: Body,
    route: &Route,
    limit: usize,
) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("the body is larger than the gateway's limit of {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Problem::new(Code::InvalidArgument, "the body could not be read")
            }
        })?
        .to_bytes();
    if !body.is_empty() && !matches!(route.body, BodyRule::None) {
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Problem::http(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                "the body must be JSON: send `Content-Type: application/json`",
            ));
        }
    }
    Ok(body)
}
