//! Accepted connections, bounded (`server.*`): at most `max_connections` open at once, at most
//! `max_connections_per_client` of them from one client address, and each must send the HTTP/2
//! preface within `handshake_timeout_ms` of being accepted.
//!
//! The per-client cap keeps one address from taking every connection the cap allows, which would
//! lock every other client out: an IPv6 client counts by its /64 ([`client_key`]), since one host
//! may send from any address of it. Addresses through which many clients come (the gateway's
//! trusted proxies) are exempt; the total cap still holds.
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
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
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

/// Client addresses exempt from `server.max_connections_per_client`.
#[derive(Clone)]
pub(crate) struct Exempt(Arc<dyn Fn(IpAddr) -> bool + Send + Sync>);

impl Exempt {
    /// Nobody is exempt.
    pub(crate) fn none() -> Self {
        Self(Arc::new(|_| false))
    }

    /// The addresses `which` names are exempt (the HTTP listener's trusted proxies).
    #[cfg(any(test, feature = "http"))]
    pub(crate) fn by(which: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(which))
    }

    fn contains(&self, client: IpAddr) -> bool {
        (self.0)(client)
    }
}

impl std::fmt::Debug for Exempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exempt(..)")
    }
}

/// What a client is counted as: its address, an IPv6 client by its network (the first 64 bits:
/// one host is normally handed a whole /64 and may connect from any address in it), an
/// IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn client_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
        v4 => v4,
    }
}

/// The connections `listener` accepts, with Nagle's algorithm off, each holding one of
/// `server.max_connections` permits, and one of its client's `server.max_connections_per_client`
/// (unless `exempt` says its address is exempt), until it closes; closed if it has not sent the
/// preface within `server.handshake_timeout_ms`.
///
/// `TCP_NODELAY`: tonic's `tcp_nodelay` only applies to listeners it binds itself; without it,
/// small gRPC replies wait for delayed ACKs (~40 ms stalls).
pub(super) fn incoming(
    listener: TcpListener,
    settings: &ServerSettings,
    exempt: Exempt,
) -> impl Stream<Item = io::Result<Guarded>> + use<> {
    let cap = match settings.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => usize::try_from(n).unwrap_or(Semaphore::MAX_PERMITS),
    };
    let permits = Arc::new(Semaphore::new(cap));
    let per_client = Arc::new(PerClient {
        cap: settings.max_connections_per_client,
        open: Mutex::default(),
    });
    let handshake = settings.handshake_timeout();
    let mut refused = Refusals::default();
    TcpListenerStream::new(listener).filter_map(move |accepted| {
        let stream = match accepted {
            Err(error) => return Some(Err(error)),
            Ok(stream) => stream,
        };
        // Dropping the socket (returning `None`) closes it.
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refused.note(Refused::Total(cap));
            return None;
        };
        let client = stream.peer_addr().ok().map(|peer| peer.ip());
        let slot = match client.filter(|ip| per_client.cap > 0 && !exempt.contains(*ip)) {
            Some(ip) => match PerClient::take(&per_client, client_key(ip)) {
                Some(slot) => Some(slot),
                None => {
                    refused.note(Refused::Client(per_client.cap, ip));
                    return None;
                }
            },
            None => None,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        Some(Ok(Guarded::new(stream, permit, slot, handshake)))
    })
}

/// The connections open per client, for `server.max_connections_per_client`.
#[derive(Debug)]
struct PerClient {
    /// The most per client; 0 = no limit.
    cap: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerClient {
    /// A place for one more connection of `client`, if it has fewer than the cap open.
    fn take(this: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut open = this.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client).or_insert(0);
        if *count >= this.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counts: Arc::clone(this),
            client,
        })
    }
}

/// One connection's place in its client's count, given back when the connection closes.
#[derive(Debug)]
pub(super) struct ClientSlot {
    counts: Arc<PerClient>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // No entry is kept for a client with nothing open: the map holds at most
                // `server.max_connections` addresses.
                open.remove(&self.client);
            }
        }
    }
}

/// Which cap refused a connection.
enum Refused {
    /// `server.max_connections`.
    Total(usize),
    /// `server.max_connections_per_client`, for this client.
    Client(u32, IpAddr),
}

/// Counts refused connections and warns about them at most every [`WARN_EVERY`].
#[derive(Debug, Default)]
struct Refusals {
    since_warning: u64,
    warned_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, why: Refused) {
        self.since_warning += 1;
        if self.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            match why {
                Refused::Total(cap) => tracing::warn!(
                    refused = self.since_warning,
                    max_connections = cap,
                    "connection limit reached: closing new connections (server.max_connections)"
                ),
                Refused::Client(cap, client) => tracing::warn!(
                    refused = self.since_warning,
                    max_connections_per_client = cap,
                    %client,
                    "a client's connection limit reached: closing its new connections (server.max_connections_per_client)"
                ),
            }
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
    _slot: Option<ClientSlot>,
}

impl Guarded {
    fn new(
        inner: TcpStream,
        permit: OwnedSemaphorePermit,
        slot: Option<ClientSlot>,
        handshake: Option<Duration>,
    ) -> Self {
        Self {
            inner: Coalesced::new(inner),
            deadline: handshake.map(|after| Box::pin(tokio::time::sleep(after))),
            received: 0,
            _permit: permit,
            _slot: slot,
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
        serve_exempting(settings, Exempt::none()).await
    }

    /// [`serve`], the clients `exempt` names exempt from the per-client cap.
    async fn serve_exempting(settings: ServerSettings, exempt: Exempt) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = Box::pin(incoming(listener, &settings, exempt));
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

    /// Connects to `addr` from `from` (a loopback address: every 127.x.y.z is this host).
    async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("address"))
            .expect("bind");
        socket.connect(addr).await.expect("connect")
    }

    /// Whether `stream` is served: what it writes comes back.
    async fn echoes(stream: &mut TcpStream) -> bool {
        let mut one = [0; 1];
        let echoed = async {
            stream.write_all(b"z").await?;
            stream.read_exact(&mut one).await
        };
        tokio::time::timeout(Duration::from_secs(20), echoed)
            .await
            .is_ok_and(|r| r.is_ok())
    }

    #[tokio::test]
    async fn one_client_cannot_take_every_connection_and_proxies_are_exempt() {
        let settings = ServerSettings {
            max_connections_per_client: 2,
            handshake_timeout_ms: 0,
            ..ServerSettings::default()
        };
        let proxy: IpAddr = "127.0.0.3".parse().expect("address");
        let addr = serve_exempting(settings, Exempt::by(move |ip| ip == proxy)).await;
        let mut first = connect_from("127.0.0.2", addr).await;
        let mut second = connect_from("127.0.0.2", addr).await;
        assert!(echoes(&mut first).await && echoes(&mut second).await);
        let mut third = connect_from("127.0.0.2", addr).await;
        assert!(
            closed(&mut third).await,
            "a third from the same client refused"
        );
        // Another client is not held back by the first one's connections.
        let mut other = connect_from("127.0.0.4", addr).await;
        assert!(echoes(&mut other).await, "another client served");
        // Through a proxy come many clients: it is not counted as one.
        let mut through_proxy = Vec::new();
        for _ in 0..5 {
            let mut stream = connect_from("127.0.0.3", addr).await;
            assert!(echoes(&mut stream).await, "the proxy's connections served");
            through_proxy.push(stream);
        }
        // A closed connection gives its place back (retry: the close is noticed asynchronously).
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut again = connect_from("127.0.0.2", addr).await;
            if echoes(&mut again).await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "place never given back"
            );
        }
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_network() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("an address");
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:bbbb::9")),
            client_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_ne!(client_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(client_key(ip("10.0.0.1")), ip("10.0.0.1"));
    }
}
