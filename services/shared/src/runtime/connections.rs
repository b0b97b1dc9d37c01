//! Accepted connections, bounded (`server.*`): at most `max_connections` open at once, and each
//! must send the HTTP/2 preface within `handshake_timeout_ms` of being accepted.
//!
//! Why here and not in tonic: we accept the sockets ourselves (to set `TCP_NODELAY`, see
//! [`incoming`]), and tonic has neither a connection cap nor a handshake deadline. Without them,
//! sockets that connect and never speak stay open forever and use up file descriptors.
//!
//! Over the cap a new connection is closed at once rather than left waiting in the accept queue: a
//! client then sees the refusal immediately (and a balanced client tries another instance) instead
//! of hanging until its deadline. Calls on connections already open are not affected.
//!
//! Writes are shaped so that answers leave in fewer, fuller writes ([`Coalesced`]).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_stream::{Stream, StreamExt as _, wrappers::TcpListenerStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{config::ServerSettings, write_shaping::Coalesced};

/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), the first
/// bytes every gRPC client sends.
const PREFACE_LEN: usize = 24;

/// At most one "connection refused" warning in this long, however many are refused.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connections `listener` accepts, with Nagle's algorithm off, each holding one of
/// `server.max_connections` permits until it closes and closed if it has not sent the preface
/// within `server.handshake_timeout_ms`.
///
/// `TCP_NODELAY`: tonic's `tcp_nodelay` only applies to listeners it binds itself; without it,
/// small gRPC replies wait for delayed ACKs (~40 ms stalls).
pub(super) fn incoming(
    listener: TcpListener,
    settings: &ServerSettings,
) -> impl Stream<Item = io::Result<Guarded>> + use<> {
    let cap = match settings.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => usize::try_from(n).unwrap_or(Semaphore::MAX_PERMITS),
    };
    let permits = Arc::new(Semaphore::new(cap));
    let handshake = settings.handshake_timeout();
    let mut refused = Refusals::default();
    TcpListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Err(error) => Some(Err(error)),
        Ok(stream) => match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                Some(Ok(Guarded::new(stream, permit, handshake)))
            }
            Err(_) => {
                // Dropping the socket closes it.
                refused.note(cap);
                None
            }
        },
    })
}

/// Counts refused connections and warns about them at most every [`WARN_EVERY`].
#[derive(Debug, Default)]
struct Refusals {
    since_warning: u64,
    warned_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, cap: usize) {
        self.since_warning += 1;
        if self.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                refused = self.since_warning,
                max_connections = cap,
                "connection limit reached: closing new connections (server.max_connections)"
            );
            self.since_warning = 0;
            self.warned_at = Some(Instant::now());
        }
    }
}

/// An accepted connection: holds its permit until dropped, and fails its reads (so the server
/// closes it) once its handshake deadline passes before the client sent the preface.
#[derive(Debug)]
pub(super) struct Guarded {
    inner: Coalesced<TcpStream>,
    /// Until the preface has arrived: when it must have.
    deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, handshake: Option<Duration>) -> Self {
        Self {
            inner: Coalesced::new(inner),
            deadline: handshake.map(|after| Box::pin(tokio::time::sleep(after))),
            received: 0,
            _permit: permit,
        }
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.get_ref().connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Polling the timer registers the task, so a silent client is woken and closed on time.
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            tracing::debug!("closing a connection that sent no HTTP/2 preface in time");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent no HTTP/2 preface within server.handshake_timeout_ms",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.deadline.is_some() && matches!(polled, Poll::Ready(Ok(()))) {
            this.received += buf.filled().len() - before;
            if this.received >= PREFACE_LEN {
                this.deadline = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A listener on loopback serving `settings`' bounds, and a task that echoes the first read of
    /// each accepted connection (an error ends it).
    async fn serve(settings: ServerSettings) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = Box::pin(incoming(listener, &settings));
        tokio::spawn(async move {
            while let Some(Ok(mut conn)) = accepted.next().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 64];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let _ = conn.write_all(&buf[..n]).await;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Waits (bounded) until the peer closes `stream`.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0; 64];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_speaking_ones_kept() {
        let addr = serve(ServerSettings {
            handshake_timeout_ms: 200,
            ..ServerSettings::default()
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut speaking = TcpStream::connect(addr).await.expect("connect");
        speaking
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        assert!(closed(&mut silent).await, "silent connection closed");
        // Well after the deadline, the one that spoke still works.
        tokio::time::sleep(Duration::from_millis(300)).await;
        speaking.write_all(b"ping").await.expect("write");
        let mut buf = [0; 4];
        let mut got = 0;
        while got < 4 {
            let n = speaking.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed though it spoke");
            got += n;
        }
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once_and_their_permits_come_back() {
        let addr = serve(ServerSettings {
            max_connections: 2,
            handshake_timeout_ms: 0,
            ..ServerSettings::default()
        })
        .await;
        let mut first = TcpStream::connect(addr).await.expect("connect");
        let _second = TcpStream::connect(addr).await.expect("connect");
        // Make sure both were accepted before the third arrives.
        first.write_all(b"x").await.expect("write");
        let mut one = [0; 1];
        first.read_exact(&mut one).await.expect("echo");
        let mut third = TcpStream::connect(addr).await.expect("connect");
        assert!(closed(&mut third).await, "third connection refused");
        drop(first);
        // The freed permit lets a new connection in (retry: the close is noticed asynchronously).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut again = TcpStream::connect(addr).await.expect("connect");
            let echoed = async {
                again.write_all(b"y").await?;
                again.read_exact(&mut one).await
            };
            if tokio::time::timeout(Duration::from_secs(1), echoed)
                .await
                .is_ok_and(|r| r.is_ok())
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "permit never freed");
        }
    }
}
