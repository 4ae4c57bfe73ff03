//! The client connection's stream, wrapped: it enforces the request-head deadline and
//! carries the connection's slot in the per-client count. Everything else is handed to
//! the stream pingora accepted (TCP or TLS), so pingora sees the same connection.

use std::any::Any;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::slots::Slot;

/// `head` states besides a deadline (milliseconds since `origin`, plus one).
const WAITING: u64 = 0;
const RECEIVED: u64 = u64::MAX;

/// The request-head clock of one HTTP/1 connection.
#[derive(Debug)]
struct HeadClock {
    timeout: Duration,
    origin: Instant,
    /// WAITING (idle keep-alive: the next request has not started), RECEIVED (the head
    /// was parsed), or the deadline.
    state: AtomicU64,
    timeouts: IntCounter,
}

impl HeadClock {
    fn deadline_from_now(&self) -> u64 {
        (self.origin.elapsed() + self.timeout).as_millis() as u64 + 1
    }
}

#[derive(Debug)]
pub struct ClientStream {
    inner: Stream,
    head: Option<HeadClock>,
    /// Wakes a read that waits past the head deadline (allocated on first need).
    alarm: Option<Pin<Box<Sleep>>>,
    slot: Option<Slot>,
    /// Where the head scan is (HTTP/1 only): pingora's parser accepts a bare LF as a
    /// line end, which a backend or another proxy may read differently (a smuggling
    /// vector), so the head's raw bytes are checked here as they arrive.
    scan: HeadScan,
    bare_lf: AtomicBool,
}

/// The line-end state of a request head being read.
#[derive(Debug, Default)]
struct HeadScan {
    line_len: usize,
    last_was_cr: bool,
    seen_line: bool,
}

impl HeadScan {
    /// Scans `bytes`; returns (bare LF seen, offset just past the head's end if it ends).
    fn feed(&mut self, bytes: &[u8]) -> (bool, Option<usize>) {
        let mut bare = false;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' => {
                    bare |= !self.last_was_cr;
                    self.last_was_cr = false;
                    if self.line_len == 0 && self.seen_line {
                        *self = HeadScan::default();
                        return (bare, Some(i + 1));
                    }
                    // Empty lines before the request line are skipped (RFC 9112 2.2).
                    self.seen_line |= self.line_len > 0;
                    self.line_len = 0;
                }
                b'\r' => self.last_was_cr = true,
                _ => {
                    self.last_was_cr = false;
                    self.line_len += 1;
                }
            }
        }
        (bare, None)
    }
}

impl ClientStream {
    /// `header_timeout: None` for HTTP/2, whose requests share one connection. The clock
    /// starts at once: the first request's head must arrive within the timeout.
    pub fn new(
        inner: Stream,
        header_timeout: Option<Duration>,
        slot: Option<Slot>,
        timeouts: &IntCounter,
    ) -> Self {
        let head = header_timeout.map(|timeout| {
            let clock = HeadClock {
                timeout,
                origin: Instant::now(),
                state: AtomicU64::new(WAITING),
                timeouts: timeouts.clone(),
            };
            clock
                .state
                .store(clock.deadline_from_now(), Ordering::Relaxed);
            clock
        });
        ClientStream {
            inner,
            head,
            alarm: None,
            slot,
            scan: HeadScan::default(),
            bare_lf: AtomicBool::new(false),
        }
    }

    /// The `ClientStream` under a pingora session's stream, if it is one of ours.
    pub fn of(stream: &Stream) -> Option<&ClientStream> {
        (**stream).as_any().downcast_ref::<ClientStream>()
    }

    /// Whether the connection went over its client's connection cap.
    /// Whether this request's head used a bare LF line end (it is refused with 400).
    pub fn head_had_bare_lf(&self) -> bool {
        self.bare_lf.swap(false, Ordering::Relaxed)
    }

    pub fn over_cap(&self) -> bool {
        self.slot.as_ref().is_some_and(Slot::over)
    }

    /// The request head was parsed: the deadline no longer applies to this request.
    pub fn head_received(&self) {
        if let Some(h) = &self.head {
            h.state.store(RECEIVED, Ordering::Relaxed);
        }
    }

    /// The request is over: the next one's clock starts with its first byte.
    pub fn request_done(&self) {
        if let Some(h) = &self.head {
            h.state.store(WAITING, Ordering::Relaxed);
        }
    }

    /// The deadline in effect, if any (`Err` once it has passed).
    fn check_deadline(&self) -> Result<Option<u64>, ()> {
        let Some(h) = &self.head else { return Ok(None) };
        match h.state.load(Ordering::Relaxed) {
            WAITING | RECEIVED => Ok(None),
            deadline if h.origin.elapsed().as_millis() as u64 + 1 >= deadline => Err(()),
            deadline => Ok(Some(deadline)),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = match this.check_deadline() {
            Ok(d) => d,
            Err(()) => {
                if let Some(h) = &this.head {
                    h.timeouts.inc();
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received in time",
                )));
            }
        };
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match (&polled, &this.head, deadline) {
            // The first bytes of a keep-alive request: its clock starts now.
            (Poll::Ready(Ok(())), Some(h), None) if buf.filled().len() > before => {
                let _ = h.state.compare_exchange(
                    WAITING,
                    h.deadline_from_now(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            // Waiting on a client inside its head: wake up at the deadline, so a client
            // that trickles bytes or goes silent is cut off on time.
            (Poll::Pending, Some(h), Some(deadline)) => {
                let at = tokio::time::Instant::from_std(
                    h.origin + Duration::from_millis(deadline.saturating_sub(1)),
                );
                let alarm = this
                    .alarm
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if alarm.deadline() != at {
                    alarm.as_mut().reset(at);
                }
                if alarm.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            }
            _ => {}
        }
        // Scan the head's bytes for bare LFs until its blank line; body bytes after it
        // are not looked at.
        if let (Poll::Ready(Ok(())), Some(h)) = (&polled, &this.head) {
            if h.state.load(Ordering::Relaxed) != RECEIVED && buf.filled().len() > before {
                let (bare, end) = this.scan.feed(&buf.filled()[before..]);
                if bare {
                    this.bare_lf.store(true, Ordering::Relaxed);
                }
                if end.is_some() {
                    h.state.store(RECEIVED, Ordering::Relaxed);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClientStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The peer's IP, if the connection is over TCP.
pub fn peer_ip(stream: &Stream) -> Option<std::net::IpAddr> {
    let digest = stream.get_socket_digest()?;
    match digest.peer_addr()? {
        PeerAddr::Inet(a) => Some(a.ip()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

// `Any` is required by pingora's `IO` (through the blanket impl) for downcasts.
const _: fn() = || {
    fn is_io<T: pingora_core::protocols::IO + Any>() {}
    is_io::<ClientStream>();
};

#[cfg(test)]
mod tests {
    use super::HeadScan;

    fn scan(parts: &[&[u8]]) -> (bool, Option<usize>) {
        let mut s = HeadScan::default();
        let mut bare = false;
        for p in parts {
            let (b, end) = s.feed(p);
            bare |= b;
            if end.is_some() {
                return (bare, end);
            }
        }
        (bare, None)
    }

    #[test]
    fn finds_the_head_end_and_bare_line_feeds() {
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\n"]),
            (false, Some(27))
        );
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r", b"\nHost: x\r\n\r", b"\n"]),
            (false, Some(1))
        );
        assert!(scan(&[b"GET / HTTP/1.1\nHost: x\r\n\r\n"]).0);
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: x\n\n"]), (true, Some(25)));
        // A leading empty line is not the end of a head; trickled bytes are not either.
        assert_eq!(scan(&[b"\r\n", b"GET / HTTP/1.1\r\n", b"H"]), (false, None));
    }
}
