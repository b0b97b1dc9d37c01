//! What every HTTP request passes through, in one place: a request id and a span (so the calls
//! it makes carry both), a per-client rate limit, the response headers every answer gets, and
//! the request metrics. CORS is a `tower-http` layer around it ([`cors`]), configured by
//! `gateway.cors.*`.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{MatchedPath, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use shippy_shared::{
    config::gateway::{ClientRate, CorsSettings},
    discovery::{
        context::CallContext,
        trace::{self, EdgeSampler, REQUEST_ID_HEADER, RequestId},
    },
    runtime::{client_key, http::ClientAddr},
};
use tonic::Code;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument as _;

use crate::{
    client::{self, BadBlock, Block},
    problem::Problem,
};

/// The console's policy: its own scripts and styles only, nothing inline, never in a frame.
const CONSOLE_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The per-client limiter; `None` when `gateway.rate.per_second` is 0.
#[derive(Debug)]
pub struct Edge {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    proxies: Vec<Block>,
    sampler: EdgeSampler,
}

impl Edge {
    /// The edge of `rate` behind `proxies`, deciding traces with `sampler`; forgets quiet clients
    /// every minute, so memory follows the active ones.
    pub fn new(
        rate: &ClientRate,
        proxies: &[String],
        sampler: EdgeSampler,
    ) -> Result<Arc<Self>, BadBlock> {
        let proxies = proxies
            .iter()
            .map(|block| Block::parse(block))
            .collect::<Result<Vec<_>, _>>()?;
        let limiter = NonZeroU32::new(rate.per_second).map(|per_second| {
            let burst = NonZeroU32::new(rate.burst)
                .unwrap_or(per_second)
                .max(per_second);
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        let edge = Arc::new(Self {
            limiter,
            proxies,
            sampler,
        });
        let weak = Arc::downgrade(&edge);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                let Some(edge) = weak.upgrade() else { return };
                if let Some(limiter) = &edge.limiter {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }
        });
        Ok(edge)
    }

    /// Whether `peer` is one of `gateway.trusted_proxies`, through which many clients come.
    pub fn is_proxy(&self, peer: IpAddr) -> bool {
        self.proxies.iter().any(|block| block.contains(peer))
    }

    /// `Some(seconds to wait)` when `client` (counted by [`client_key`]) is over its rate.
    fn over_rate(&self, client: IpAddr) -> Option<u64> {
        let limiter = self.limiter.as_ref()?;
        limiter
            .check_key(&client_key(client))
            .err()
            .map(|not_until| {
                not_until
                    .wait_time_from(governor::clock::DefaultClock::default().now())
                    .as_secs()
                    + 1
            })
    }
}

/// The middleware: see the module docs.
pub async fn layer(
    State(edge): State<Arc<Edge>>,
    mut request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = RequestId::from_headers(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let console = method == Method::GET && (route == "/" || route.starts_with("/console/"));
    let open = || {
        tracing::info_span!(
            "http.server",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        )
    };
    // A caller's `traceparent` makes this request part of its trace; without one, a trace starts
    // here. The trace goes with the calls the route makes (an unsampled one builds no spans).
    let parent = trace::extract(request.headers());
    let (span, call) = edge.sampler.open_call(parent, CallContext::default(), open);
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map(|peer| client::client_of(peer.0.ip(), request.headers(), &edge.proxies));
    if let Some(client) = client {
        // What the routes and the services see as the client from here on.
        request
            .extensions_mut()
            .insert(ClientAddr(std::net::SocketAddr::new(client, 0)));
    }
    let mut response = match client.and_then(|client| edge.over_rate(client)) {
        Some(wait) => Problem::new(
            Code::ResourceExhausted,
            format!("too many requests from this address; try again in {wait} s"),
        )
        .retry_after(wait)
        .with_request_id(request_id.as_str())
        .into_response(),
        None => {
            let call = call.scope(next.run(request));
            request_id
                .clone()
                .scope(call)
                .instrument(span.clone())
                .await
        }
    };
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static(REQUEST_ID_HEADER),
        request_id.header_value(),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if console {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    } else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    record(&method, route, status, started.elapsed());
    response
}

fn record(method: &Method, route: String, status: StatusCode, elapsed: Duration) {
    metrics::counter!(
        "shippy_gateway_requests_total",
        "method" => method_label(method),
        "route" => route.clone(),
        "status" => status.as_u16().to_string(),
    )
    .increment(1);
    metrics::histogram!("shippy_gateway_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
}

/// The `method` label of a request: its method when it is one of HTTP's own, `other` otherwise.
/// Any token is a valid method name, and every label value is a series kept for the life of the
/// process: labelled as sent, a client could grow the gateway's memory (and every scrape) one
/// made-up method at a time.
fn method_label(method: &Method) -> &'static str {
    static KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// Why the CORS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CorsError {
    /// `*` with bearer tokens would let any site call the API with a user's token.
    #[error(
        "gateway.cors.allowed_origins: `*` is not allowed (the API takes bearer tokens); list the origins"
    )]
    Wildcard,
    /// Not `scheme://host[:port]`.
    #[error("gateway.cors.allowed_origins: {0:?} is not an origin like https://app.example.com")]
    NotAnOrigin(String),
}

/// The CORS layer of `settings`, or `None` when no other origin is allowed.
pub fn cors(settings: &CorsSettings) -> Result<Option<CorsLayer>, CorsError> {
    if settings.allowed_origins.is_empty() {
        return Ok(None);
    }
    let mut origins = Vec::new();
    for origin in &settings.allowed_origins {
        if origin.trim() == "*" {
            return Err(CorsError::Wildcard);
        }
        let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
            && !origin.trim_end_matches('/').contains(['?', '#', ' '])
            && origin.splitn(4, '/').nth(3).is_none_or(str::is_empty);
        let value = HeaderValue::from_str(origin.trim_end_matches('/'))
            .ok()
            .filter(|_| valid)
            .ok_or_else(|| CorsError::NotAnOrigin(origin.clone()))?;
        origins.push(value);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(REQUEST_ID_HEADER),
                HeaderName::from_static(shippy_proto::idempotency::METADATA_KEY),
            ])
            .expose_headers([HeaderName::from_static(REQUEST_ID_HEADER)])
            .max_age(Duration::from_secs(settings.max_age_secs)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_own_methods_are_labelled_as_sent() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::GET), "GET");
        let made_up = Method::from_bytes(b"QZX1").expect("a valid token");
        assert_eq!(method_label(&made_up), "other");
    }

    #[test]
    fn cors_refuses_wildcards_and_non_origins() {
        let with = |origins: &[&str]| CorsSettings {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            max_age_secs: 60,
        };
        assert!(cors(&with(&[])).expect("none").is_none());
        assert!(
            cors(&with(&["https://app.example.com"]))
                .expect("ok")
                .is_some()
        );
        assert!(matches!(cors(&with(&["*"])), Err(CorsError::Wildcard)));
        for bad in ["app.example.com", "https://a.example/path", "ftp://x"] {
            assert!(
                matches!(cors(&with(&[bad])), Err(CorsError::NotAnOrigin(_))),
                "{bad} accepted"
            );
        }
    }
}
