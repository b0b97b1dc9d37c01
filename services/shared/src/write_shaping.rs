//! Sockets whose HTTP/2 writes leave in fewer, fuller pieces: [`Coalesced`], used by the servers'
//! accepted connections (`runtime::connections`) and by the balanced client's connections to
//! other services (`discovery::balance::connection`).
//!
//! Why: each write is a system call at both ends, and on loopback the kernel's send path was the
//! largest single cost of a call. Two changes, both invisible to h2 except through its buffering:
//! - **The socket reports that it takes no vectored writes.** h2 picks from this how large a
//!   message must be to be sent from its own buffer rather than copied into h2's: 256 bytes with
//!   vectored writes, 1 KiB without. A message sent from its own buffer ends the write it starts,
//!   so an answer of 256 B to 1 KiB (a created consignment is about 440 B) went out as two writes,
//!   headers and message, then the trailers alone. Copied, the whole answer is one write. A
//!   message over 1 KiB takes one write more than before (the buffer, then the message), but such
//!   messages are pages of lists, where moving the bytes costs more than the extra call.
//! - **A write first lets the worker's other ready tasks run once.** Every call's frames are queued
//!   by that call's own task, and the connection's task writes out whatever is queued when it runs.
//!   Yielding once before the write lets the calls being finished on this worker join it. Go's
//!   gRPC writer does the same before it flushes a small batch. The second attempt always writes,
//!   so nothing waits longer than one pass of the scheduler.
//!
//! Measured under `FindAvailable` and `CreateConsignment` load (docs/PERFORMANCE.md, stops 24
//! and 25).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket whose writes are shaped as the module doc says. Reads pass straight through.
#[derive(Debug)]
pub(crate) struct Coalesced<S> {
    inner: S,
    /// Whether the write now being attempted has already yielded once.
    yielded: bool,
}

impl<S> Coalesced<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            yielded: false,
        }
    }

    /// The socket (a server reads its peer's address from it).
    #[cfg(feature = "server")]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Runs `write` on the socket, but only at the second attempt: the first returns `Pending` with
    /// the task woken at once, so other ready tasks run in between. Once a write is done (or
    /// failed), the next one yields again.
    fn write_after_yield<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let written = write(Pin::new(&mut self.inner), cx);
        if written.is_ready() {
            self.yielded = false;
        }
        written
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_after_yield(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_after_yield(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    /// Always false, so that h2 copies messages under 1 KiB into its own buffer and sends them
    /// whole (see the module doc). Writers that are handed several buffers anyway still get them
    /// written in one call.
    fn is_write_vectored(&self) -> bool {
        false
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
    use std::sync::Arc;

    use tokio::{
        io::AsyncReadExt as _,
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// Counts how often a task is woken.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_write_lets_other_tasks_run_once_then_sends_everything_in_one_piece() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut conn = Coalesced::new(server);
        // h2 copies messages under 1 KiB into its buffer only when told writes are not vectored.
        assert!(!conn.is_write_vectored());

        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let answer = [7u8; 600];
        for round in 1..=2 {
            // The first attempt yields and wakes the task at once, so it is polled again.
            let first = Pin::new(&mut conn).poll_write(&mut cx, &answer);
            assert!(first.is_pending(), "round {round}: first attempt yields");
            assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), round);
            // The second attempt writes.
            match Pin::new(&mut conn).poll_write(&mut cx, &answer) {
                Poll::Ready(Ok(n)) => assert_eq!(n, answer.len()),
                other => panic!("round {round}: second attempt wrote nothing: {other:?}"),
            }
            let mut got = vec![0; answer.len()];
            client.read_exact(&mut got).await.expect("read");
            assert_eq!(got, answer);
        }
    }
}
