//! One HTTP/2 connection per instance: opened on first use, opened again after it breaks, kept
//! honest by keepalive pings.
//!
//! Why not tonic's `Channel` (what this replaced): every `Channel` puts a `tower::buffer` in front
//! of its connection, so each call was handed to the buffer's task, then through hyper's dispatch
//! queue to the connection's task: two task switches and two channel sends per call before a byte
//! moved, measured at about a tenth of the consignment service's CPU under load. Here the calling
//! task opens the HTTP/2 stream itself (the `h2` crate, the one hyper and tonic use) and the
//! connection's task only reads and writes frames. What the balancer needs from a transport is
//! small, because unary request bodies are already buffered (see `dispatch`): headers and one data
//! frame out, an answer with its trailers back, and whether a failed attempt ever reached a
//! server.
//!
//! The settings are those the `Channel` had: connect timeout, `TCP_NODELAY`, a ping every 10 s
//! answered within 5 s or the connection is dropped, and hyper's client settings: windows of 2 MiB
//! per stream and 5 MiB per connection (small answers never wait for a `WINDOW_UPDATE`), answer
//! headers of at most 16 KiB (an instance cannot make its caller buffer more), at most 100 streams
//! before the server's limit is known, no server push.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use h2::{Ping, Reason, RecvStream, client::SendRequest};
use http::uri::{Authority, Scheme};
use http_body::Frame;
use tokio::net::TcpStream;
use tonic::body::Body;

use crate::write_shaping::Coalesced;

/// How often an open connection is pinged.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is given up.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's client defaults, which the `Channel` used (see the module doc).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const STREAMS_BEFORE_SETTINGS: usize = 100;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// No server saw the request: the connection could not be opened, or the server refused the
    /// stream before processing it (`REFUSED_STREAM`, or a `GOAWAY` that did not cover it).
    #[error("{0}")]
    NotSent(String),
    /// The connection or the stream broke after the request went out: a server may have seen it.
    #[error("{0}")]
    Broken(h2::Error),
}

/// The connection to one instance.
#[derive(Debug)]
pub(super) struct Connection {
    address: String,
    authority: Authority,
    connect_timeout: Duration,
    /// How often the connection is pinged, and how long an answer may take.
    keepalive: (Duration, Duration),
    current: Mutex<Option<Open>>,
    /// Held while a connection is being opened, so a burst of first calls opens one.
    opening: tokio::sync::Mutex<()>,
}

/// An open connection: the handle streams are opened on, and whether it is done (its task ended,
/// or a call found it closed).
#[derive(Debug, Clone)]
struct Open {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Open {
    /// Waits until the connection takes a new stream; marks it done when it never will (a
    /// `GOAWAY`, or the server went away: nothing was sent). Marked, not removed: another call
    /// may have put a new connection in its place already.
    async fn ready(self) -> Result<Self, h2::Error> {
        let Self { sender, closed } = self;
        match sender.ready().await {
            Ok(sender) => Ok(Self { sender, closed }),
            Err(error) => {
                closed.store(true, Ordering::Release);
                Err(error)
            }
        }
    }

    fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Connection {
    /// A connection to `address` (`host:port`), opened when first used; `None` when `address`
    /// cannot be a URI's authority.
    pub(super) fn lazy(address: &str, connect_timeout: Duration) -> Option<Self> {
        let authority = Authority::try_from(address)
            .inspect_err(|error| tracing::warn!(%address, %error, "ignoring unusable address"))
            .ok()?;
        Some(Self {
            address: address.to_owned(),
            authority,
            connect_timeout,
            keepalive: (KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT),
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends one unary request (`parts` with `body` as its only data frame) and waits for the
    /// answer's headers; the answer's body streams from the connection as it is read.
    pub(super) async fn send(
        &self,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<http::Response<Body>, SendError> {
        let mut request = http::Request::from_parts(parts, ());
        let uri = std::mem::take(request.uri_mut());
        let mut uri = uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        *request.uri_mut() = http::Uri::from_parts(uri)
            .map_err(|error| SendError::NotSent(format!("unusable request path: {error}")))?;
        let mut open = self.ready().await?;
        let (answer, mut stream) = match open.sender.send_request(request, body.is_empty()) {
            Ok(sent) => sent,
            Err(error) => {
                // Nothing went out: the connection failed between `ready` and now.
                open.mark_closed();
                return Err(SendError::NotSent(format!(
                    "{}: connection closed: {error}",
                    self.address
                )));
            }
        };
        if !body.is_empty() {
            stream.send_data(body, true).map_err(classify)?;
        }
        let answer = answer.await.map_err(classify)?;
        Ok(answer.map(|recv| {
            Body::new(Answer {
                recv,
                data_done: false,
            })
        }))
    }

    /// A handle ready for a new stream, on the open connection or on a new one when it is gone.
    async fn ready(&self) -> Result<Open, SendError> {
        if let Some(open) = self.live()
            && let Ok(open) = open.ready().await
        {
            return Ok(open);
        }
        let _opening = self.opening.lock().await;
        // Someone else may have opened it while this call waited.
        let open = match self.live() {
            Some(open) => open,
            None => {
                let open = self.open().await?;
                if let Ok(mut current) = self.current.lock() {
                    *current = Some(open.clone());
                }
                open
            }
        };
        open.ready()
            .await
            .map_err(|error| SendError::NotSent(format!("{}: {error}", self.address)))
    }

    /// The open connection, unless it has ended or a call found it unusable.
    fn live(&self) -> Option<Open> {
        let current = self.current.lock().ok()?;
        current.as_ref().filter(|open| !open.is_closed()).cloned()
    }

    async fn open(&self) -> Result<Open, SendError> {
        let unreachable = |reason: String| {
            SendError::NotSent(format!("cannot connect to {}: {reason}", self.address))
        };
        let handshake = async {
            let tcp = TcpStream::connect(self.address.as_str()).await?;
            tcp.set_nodelay(true)?;
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_header_list_size(MAX_HEADER_LIST)
                .initial_max_send_streams(STREAMS_BEFORE_SETTINGS)
                .enable_push(false)
                // Requests leave in fewer, fuller writes, as the servers' answers do.
                .handshake::<_, Bytes>(Coalesced::new(tcp))
                .await
                .map_err(std::io::Error::other)
        };
        let (sender, mut connection) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.connect_timeout)))?
            .map_err(|error| unreachable(error.to_string()))?;
        let closed = Arc::new(AtomicBool::new(false));
        let pings = connection.ping_pong();
        let address = self.address.clone();
        let flag = Arc::clone(&closed);
        let (interval, patience) = self.keepalive;
        tokio::spawn(async move {
            let keepalive = async {
                let Some(mut pings) = pings else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(interval).await;
                    match tokio::time::timeout(patience, pings.ping(Ping::opaque())).await {
                        Ok(Ok(_pong)) => {}
                        Ok(Err(error)) => return format!("ping failed: {error}"),
                        Err(_) => return format!("no answer to a ping within {patience:?}"),
                    }
                }
            };
            let reason = tokio::select! {
                ended = &mut connection => match ended {
                    Ok(()) => None,
                    Err(error) => Some(error.to_string()),
                },
                reason = keepalive => Some(reason),
            };
            // Before the connection is dropped (which fails its streams), so no new call takes it.
            flag.store(true, Ordering::Release);
            drop(connection);
            if let Some(reason) = reason {
                tracing::debug!(%address, %reason, "connection closed");
            }
        });
        Ok(Open { sender, closed })
    }
}

/// Sorts a stream's failure: refused before processing, or broken after it may have begun.
fn classify(error: h2::Error) -> SendError {
    // Only the server's word counts: h2 resets streams itself too (`REFUSED_STREAM` among its
    // reasons, e.g. for answer headers over the limit), and such a request was processed.
    let unprocessed =
        error.is_remote() && (error.is_go_away() || error.reason() == Some(Reason::REFUSED_STREAM));
    if unprocessed {
        SendError::NotSent(error.to_string())
    } else {
        SendError::Broken(error)
    }
}

/// An answer's body: its data frames, then its trailers (where gRPC puts the status), giving
/// back flow-control credit as data is read.
struct Answer {
    recv: RecvStream,
    data_done: bool,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Failing means the stream is already gone; the next poll says so.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    //! Against real HTTP/2 servers on loopback (the `h2` crate's server side).

    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server does with each request.
    #[derive(Clone, Copy)]
    enum Server {
        /// Answers with the request's body echoed and a `grpc-status: 0` trailer.
        Echo,
        /// Resets the stream with this reason.
        Reset(Reason),
        /// Answers with headers larger than a caller takes.
        HugeHeaders,
    }

    /// Serves on a free loopback port; returns its address and a count of connections accepted.
    async fn serve(behaviour: Server) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        tokio::spawn(async move {
                            let body = Answer {
                                recv: request.into_body(),
                                data_done: false,
                            }
                            .collect()
                            .await;
                            match behaviour {
                                Server::Reset(reason) => respond.send_reset(reason),
                                Server::HugeHeaders => {
                                    let mut answer = http::Response::new(());
                                    let value = "x".repeat(32 * 1024);
                                    answer
                                        .headers_mut()
                                        .insert("x-padding", value.parse().expect("value"));
                                    let _ = respond.send_response(answer, true);
                                }
                                Server::Echo => {
                                    let body = body.expect("request body").to_bytes();
                                    let answer = http::Response::new(());
                                    let mut stream =
                                        respond.send_response(answer, false).expect("answer");
                                    stream.send_data(body, false).expect("data");
                                    let mut trailers = http::HeaderMap::new();
                                    trailers.insert("grpc-status", "0".parse().expect("value"));
                                    stream.send_trailers(trailers).expect("trailers");
                                }
                            }
                        });
                    }
                });
            }
        });
        (address, accepted)
    }

    fn request() -> http::request::Parts {
        http::Request::post("/svc.Svc/Call")
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    fn connection(address: &str) -> Connection {
        Connection::lazy(address, Duration::from_secs(2)).expect("address")
    }

    /// One call on a new connection to `address`.
    async fn send_once(address: &str) -> Result<http::Response<Body>, SendError> {
        connection(address)
            .send(request(), Bytes::from_static(b"x"))
            .await
    }

    #[tokio::test]
    async fn an_answer_brings_its_body_and_trailers_over_one_reused_connection() {
        let (address, accepted) = serve(Server::Echo).await;
        let connection = connection(&address);
        for round in 0..3 {
            let body = Bytes::from(format!("call {round}"));
            let answer = connection
                .send(request(), body.clone())
                .await
                .expect("answer");
            let collected = answer.into_body().collect().await.expect("body");
            let trailers = collected.trailers().cloned().expect("trailers");
            assert_eq!(collected.to_bytes(), body);
            assert_eq!(trailers["grpc-status"], "0");
        }
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "one connection for all"
        );
    }

    #[tokio::test]
    async fn an_unreachable_instance_or_a_refused_stream_was_never_sent() {
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = closed.local_addr().expect("address").to_string();
        drop(closed);
        let error = send_once(&address).await;
        assert!(matches!(error, Err(SendError::NotSent(_))), "{error:?}");

        let (refusing, _) = serve(Server::Reset(Reason::REFUSED_STREAM)).await;
        let error = send_once(&refusing).await;
        assert!(matches!(error, Err(SendError::NotSent(_))), "{error:?}");
    }

    #[tokio::test]
    async fn a_stream_reset_after_it_was_taken_is_broken() {
        let (address, _) = serve(Server::Reset(Reason::INTERNAL_ERROR)).await;
        let error = send_once(&address).await;
        assert!(matches!(error, Err(SendError::Broken(_))), "{error:?}");
    }

    #[tokio::test]
    async fn an_answer_with_oversized_headers_is_broken_not_never_sent() {
        let (address, _) = serve(Server::HugeHeaders).await;
        let error = send_once(&address).await;
        assert!(matches!(error, Err(SendError::Broken(_))), "{error:?}");
    }

    #[tokio::test]
    async fn a_silent_peer_is_given_up_by_keepalive_and_the_next_call_reconnects() {
        // Accepts TCP and never says a word: no settings, no pong, no answer.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
                let _ = accepted_tx.send(());
            }
        });
        let mut connection = connection(&address);
        connection.keepalive = (Duration::from_millis(100), Duration::from_millis(100));
        // Bounded only so a broken keepalive fails the test instead of hanging it.
        let error = tokio::time::timeout(
            Duration::from_secs(30),
            connection.send(request(), Bytes::from_static(b"x")),
        )
        .await
        .expect("keepalive ended the call");
        assert!(matches!(error, Err(SendError::Broken(_))), "{error:?}");
        accepted.recv().await.expect("first connection");
        let again = tokio::time::timeout(
            Duration::from_secs(30),
            connection.send(request(), Bytes::from_static(b"x")),
        )
        .await
        .expect("keepalive ended the call");
        assert!(matches!(again, Err(SendError::Broken(_))), "{again:?}");
        accepted
            .recv()
            .await
            .expect("a second connection for the next call");
    }
}
