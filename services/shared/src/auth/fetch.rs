//! One bounded `GET` of a JSON document over HTTP/1.1, plain or TLS: all the user service asks of
//! an OpenID Connect provider (its discovery document and key set).
//!
//! Why not a general HTTP client crate: this is two requests an hour, and the TLS stack is
//! already in the binary (MongoDB's rustls with the `ring` provider and the webpki root
//! certificates); a client crate would add its own copies of much of it to every image. What it
//! does: one connection per request, the certificate checked against the webpki roots and the
//! URL's host name, no redirects (one could lead from https to plain http), the whole exchange
//! under one deadline, and at most `limit` bytes read.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use url::Url;

/// Why a document could not be fetched (logged, never sent to clients).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GetError {
    /// Not an http(s) URL with a host.
    #[error("{0} is not an http(s) URL with a host")]
    Unusable(Url),
    /// Connecting, the TLS handshake or the exchange failed.
    #[error("{url}: {cause}")]
    Transport {
        /// Where.
        url: Url,
        /// What happened.
        cause: String,
    },
    /// No answer within the deadline.
    #[error("{0} did not answer within the deadline")]
    TimedOut(Url),
    /// The answer's status was not 2xx.
    #[error("{url} answered {status}")]
    Status {
        /// Where.
        url: Url,
        /// The status.
        status: http::StatusCode,
    },
    /// The body was larger than allowed.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// Where.
        url: Url,
        /// The limit.
        limit: usize,
    },
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The TLS settings of every fetch: the webpki roots, the `ring` provider, TLS 1.2 and 1.3.
fn tls() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `GET url` with `Accept: application/json`: the body, at most `limit` bytes, within `deadline`.
pub(crate) async fn get(url: &Url, limit: usize, deadline: Duration) -> Result<Bytes, GetError> {
    tokio::time::timeout(deadline, exchange(url, limit))
        .await
        .map_err(|_| GetError::TimedOut(url.clone()))?
}

async fn exchange(url: &Url, limit: usize) -> Result<Bytes, GetError> {
    let transport = |cause: String| GetError::Transport {
        url: url.clone(),
        cause,
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(GetError::Unusable(url.clone()));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| transport(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match url.scheme() {
        "http" => Box::new(tcp),
        "https" => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| transport(e.to_string()))?;
            let config = tls().map_err(|e| transport(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| transport(format!("TLS: {e}")))?;
            Box::new(stream)
        }
        _ => return Err(GetError::Unusable(url.clone())),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("shippy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(e.to_string()))?;
    if !response.status().is_success() {
        return Err(GetError::Status {
            url: url.clone(),
            status: response.status(),
        });
    }
    let too_large = || GetError::TooLarge {
        url: url.clone(),
        limit,
    };
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                transport(e.to_string())
            }
        })
}
