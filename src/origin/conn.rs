//! Connections the origin cannot be starved by. Without this, a client that opens sockets and
//! sends nothing, trickles a request a byte at a time, or asks for a large file and never
//! reads it, holds a file descriptor and buffered memory forever, and enough of them stop
//! everyone else being served. So: a cap on open connections (below the process's file
//! limit), and a connection is closed when `IDLE` passes without an answer going out, counted
//! from the last answer bytes written or from the start of the request after them. Reading
//! more of a request does not push the deadline back, or a byte every minute would hold a
//! connection forever; so the server must start answering within `IDLE` (its test knobs
//! `--latency` and `--stall` are bounded well below it).

use axum::serve::Listener;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How long a connection may go without answer bytes leaving: an idle keep-alive, a client
/// that sends its request too slowly or not at all, or one that does not read.
pub const IDLE: Duration = Duration::from_secs(60);

/// The TCP listener, with each connection counted and watched.
pub struct GuardedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, idle: Duration) -> Self {
        let slots = Arc::new(Semaphore::new(connection_cap()));
        GuardedListener {
            listener,
            slots,
            idle,
        }
    }
}

/// Each connection costs a socket and, while it downloads, an open file: half the descriptors
/// left after a margin for everything else.
fn connection_cap() -> usize {
    use rustix::process::{getrlimit, Resource};
    // `None` is "unlimited".
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    (soft.min(1 << 20) as usize).saturating_sub(64).max(64) / 2
}

impl Listener for GuardedListener {
    type Io = GuardedConnection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Waiting for a slot leaves new connections in the kernel's backlog meanwhile.
        let slot = self.slots.clone().acquire_owned().await;
        let slot = slot.expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((tcp, addr)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                    return (GuardedConnection::new(tcp, slot, self.idle), addr);
                }
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A TCP connection that fails with `TimedOut` after `idle` without an answer going out.
pub struct GuardedConnection {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Answer bytes were written since request bytes were last read: the next request bytes
    /// start a new request, which gets a fresh `idle` to be answered in.
    answered: bool,
}

impl GuardedConnection {
    fn new(tcp: TcpStream, slot: OwnedSemaphorePermit, idle: Duration) -> Self {
        GuardedConnection {
            tcp,
            _slot: slot,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            answered: true,
        }
    }

    fn on_write(&mut self, poll: &Poll<io::Result<usize>>) {
        if matches!(poll, Poll::Ready(Ok(n)) if *n > 0) {
            self.answered = true;
            self.push_deadline_back();
        }
    }

    fn push_deadline_back(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Waiting checks the deadline (and asks to be woken at it).
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_pending() && self.deadline.as_mut().poll(cx).is_ready() {
            let e = io::Error::new(io::ErrorKind::TimedOut, "no answer went out in time");
            return Poll::Ready(Err(e));
        }
        poll
    }
}

impl AsyncRead for GuardedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before && self.answered {
            self.answered = false;
            self.push_deadline_back();
        }
        self.watch(cx, poll)
    }
}

impl AsyncWrite for GuardedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.on_write(&poll);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.on_write(&poll);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A guarded listener with one accepted connection, and the client's end of it.
    async fn connected(idle: Duration) -> (GuardedListener, GuardedConnection, TcpStream) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = GuardedListener::new(tcp, idle);
        let client = TcpStream::connect(addr).await.unwrap();
        let (conn, _) = listener.accept().await;
        (listener, conn, client)
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_its_slot_freed() {
        let (listener, mut conn, _client) = connected(Duration::from_millis(200)).await;
        let free = listener.slots.available_permits();
        let mut buf = [0u8; 8];
        let started = std::time::Instant::now();
        let error = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(conn);
        assert_eq!(listener.slots.available_permits(), free + 1);
    }

    #[tokio::test]
    async fn a_request_trickled_a_byte_at_a_time_does_not_hold_the_connection() {
        use tokio::io::AsyncWriteExt;
        let (_listener, mut conn, mut client) = connected(Duration::from_millis(300)).await;
        let trickle = tokio::spawn(async move {
            for byte in b"GET / HTTP/1.1\r\n".iter().cycle().take(40) {
                if client.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1];
        let error = loop {
            match conn.read(&mut buf).await {
                Ok(0) => panic!("the trickle ended before the connection was closed"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        trickle.abort();
    }

    #[tokio::test]
    async fn an_answer_going_out_keeps_the_connection() {
        use tokio::io::AsyncWriteExt;
        let idle = Duration::from_millis(300);
        let (_listener, conn, mut client) = connected(idle).await;
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        // The server waits for the next request (a read that checks the deadline) while it is
        // still answering: answer bytes going out must keep pushing the deadline back.
        let (mut reading, mut writing) = tokio::io::split(conn);
        let waiting = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let result = reading.read(&mut buf).await;
            (result.map_err(|e| e.kind()), std::time::Instant::now())
        });
        for _ in 0..10 {
            writing.write_all(b"answer bytes").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                !waiting.is_finished(),
                "closed while answers were going out"
            );
        }
        let last_answer = std::time::Instant::now();
        let (result, at) = waiting.await.unwrap();
        assert_eq!(result.unwrap_err(), io::ErrorKind::TimedOut);
        let after = at - last_answer;
        assert!(
            after < Duration::from_secs(2),
            "closed {after:?} after the answers"
        );
        drain.abort();
    }
}
