//! A second, plain-HTTP listener beside a service's gRPC port, for a service that also speaks
//! HTTP/JSON to browsers and `curl` (the REST gateway).
//!
//! It shares the gRPC port's life: bound in `build` (so a test learns its port before serving),
//! served from the moment the gRPC server starts, registered in discovery as the instance's
//! `http_address`, and shut down with it: no new connections once draining ends, in-flight
//! requests finished within `shutdown.grace_ms`. Its connections get the same bounds as the gRPC
//! port's (`connections`: a cap in all and one per client, the trusted proxies the service names
//! exempt from the latter, and a deadline for the first bytes), plus HTTP/1 header limits: the size
//! of the request head and how long it may take to arrive (slow-header clients).
//!
//! The serving code is behind the `http` feature: only the gateway has such a listener, and the
//! HTTP/1 server stack it needs would otherwise sit unused in every service's image.

use std::{net::SocketAddr, time::Duration};

#[cfg(feature = "http")]
use axum::Router;
#[cfg(feature = "http")]
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
#[cfg(feature = "http")]
use tokio::net::TcpListener;
#[cfg(feature = "http")]
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
#[cfg(feature = "http")]
use tonic::transport::server::Connected as _;
#[cfg(feature = "http")]
use tower::ServiceExt as _;

#[cfg(feature = "http")]
use super::connections;
#[cfg(feature = "http")]
use crate::config::ServerSettings;

/// Largest request head (request line and headers) an HTTP/1 client may send.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one HTTP/1 request.
pub const MAX_HEADERS: usize = 64;
/// How long the request head may take to arrive, once the first bytes have.
#[cfg(feature = "http")]
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The peer address of the connection a request came on, as an extension of every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A bound HTTP listener and the router it will serve.
#[cfg(feature = "http")]
#[derive(Debug)]
pub(crate) struct HttpSite {
    pub(crate) listener: TcpListener,
    pub(crate) advertised: String,
    pub(crate) router: Router,
    pub(crate) bounds: ServerSettings,
    /// Addresses exempt from `bounds.max_connections_per_client`.
    pub(crate) proxies: connections::Exempt,
}

/// Without the `http` feature there is no HTTP listener: no value of this type exists.
#[cfg(not(feature = "http"))]
#[derive(Debug)]
pub(crate) enum HttpSite {}

impl HttpSite {
    /// The address registered as the instance's `http_address`.
    pub(crate) fn advertised(&self) -> String {
        #[cfg(feature = "http")]
        return self.advertised.clone();
        #[cfg(not(feature = "http"))]
        match *self {}
    }
}

/// Without the `http` feature: nothing to serve (no `HttpSite` exists).
#[cfg(not(feature = "http"))]
pub(crate) async fn serve(site: HttpSite, _stop: CancellationToken, _grace: Duration) {
    match site {}
}

/// Serves `site` until `stop` fires, then lets open requests finish for up to `grace`.
#[cfg(feature = "http")]
pub(crate) async fn serve(site: HttpSite, stop: CancellationToken, grace: Duration) {
    let HttpSite {
        listener,
        router,
        bounds,
        proxies,
        ..
    } = site;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(bounds.keepalive_interval())
        .keep_alive_timeout(bounds.keepalive_timeout())
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    // Boxed, so dropping it below closes the listening socket: no new connections while the
    // open ones finish.
    let mut incoming = Box::pin(connections::incoming(listener, &bounds, proxies));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = incoming.next() => accepted,
        };
        let stream = match accepted {
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                tracing::debug!(%error, "HTTP accept failed");
                continue;
            }
            None => break,
        };
        let client = stream.connect_info().remote_addr();
        let router = router.clone();
        let service =
            tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                if let Some(client) = client {
                    request.extensions_mut().insert(ClientAddr(client));
                }
                router.clone().oneshot(request)
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(incoming);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis(),
            "HTTP requests did not finish in time; exiting anyway"
        );
    }
}
