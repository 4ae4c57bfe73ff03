//! The client connection's stream, wrapped: it enforces the request-head deadline,
//! carries the connection's slot in the per-client count, and swaps pingora's bare
//! refusal of a head for ours (`refuse.rs`). Everything else is handed to the stream
//! pingora accepted (TCP or TLS; `passthrough.rs`), so pingora sees the same connection.

use std::any::Any;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::Stream;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::coalesce::WriteBuf;
use super::head_scan::HeadScan;
use super::refuse::{RefuseHead, RefusedHead};
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
    /// When the current head's first byte came (milliseconds since `origin`).
    started_ms: AtomicU64,
    timeouts: IntCounter,
}

impl HeadClock {
    fn deadline_from_now(&self) -> u64 {
        let now = self.origin.elapsed();
        self.started_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
        (now + self.timeout).as_millis() as u64 + 1
    }
}

#[derive(Debug)]
pub struct ClientStream {
    pub(super) inner: Stream,
    head: Option<HeadClock>,
    /// Wakes a read that waits past the head deadline (allocated on first need).
    alarm: Option<Pin<Box<Sleep>>>,
    slot: Option<Slot>,
    /// Where the head scan is (HTTP/1 only): pingora's parser accepts a bare LF as a
    /// line end, which a backend or another proxy may read differently (a smuggling
    /// vector), so the head's raw bytes are checked here as they arrive.
    scan: HeadScan,
    bare_lf: AtomicBool,
    /// Our request phases took the current head (from `request_filter` to `logging`).
    /// A `400` pingora writes while this is false is its own refusal of a head it could
    /// not parse; `refuse.rs` answers in its place.
    admitted: AtomicBool,
    refuser: Option<Arc<dyn RefuseHead>>,
    /// Our answer replacing pingora's bare 400, and how much of it went out.
    refusal: Option<(Vec<u8>, usize)>,
    /// Coalesces a response's writes; allocated only while one is being written.
    out: WriteBuf,
    /// HTTP/2 only: when bytes last moved either way, for the idle timeout.
    activity: Option<Arc<Activity>>,
}

/// When a connection last read or wrote a byte (HTTP/2: frames of any kind), read by
/// its idle watcher (`connection/mod.rs`).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long nothing has moved.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// What one read for a new request takes at most: pingora's own initial parse buffer.
const FIRST_READ: usize = 4096;

impl ClientStream {
    /// `header_timeout: None` for HTTP/2, whose requests share one connection. The clock
    /// starts at once: the first request's head must arrive within the timeout.
    pub fn new(
        inner: Stream,
        header_timeout: Option<Duration>,
        slot: Option<Slot>,
        timeouts: &IntCounter,
        refuser: Option<Arc<dyn RefuseHead>>,
    ) -> Self {
        let head = header_timeout.map(|timeout| {
            let clock = HeadClock {
                timeout,
                origin: Instant::now(),
                state: AtomicU64::new(WAITING),
                started_ms: AtomicU64::new(0),
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
            admitted: AtomicBool::new(false),
            refuser,
            refusal: None,
            out: WriteBuf::default(),
            activity: None,
        }
    }

    /// Tracks when bytes last moved on this connection (HTTP/2's idle timeout).
    pub fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = Some(activity);
        self
    }

    /// Waits for the start of the client's next request and returns what one read got
    /// (for pingora's parser to start from: `None` when the client closed first). The
    /// read goes into a buffer on the stack of `poll`, so a waiting connection holds no
    /// buffer at all (`http1.rs`); the bytes pass the head clock and scan as any read.
    pub async fn next_request_bytes(&mut self) -> io::Result<Option<BytesMut>> {
        // The connection is idle until a request comes: it keeps no write buffer.
        self.out.release();
        std::future::poll_fn(|cx| {
            // Uninitialised: zeroing 4 KiB per request cost ~11k instructions.
            let mut space = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut buf = ReadBuf::uninit(&mut space);
            std::task::ready!(Pin::new(&mut *self).poll_read(cx, &mut buf))?;
            let got = buf.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(None));
            }
            let mut bytes = BytesMut::with_capacity(FIRST_READ);
            bytes.extend_from_slice(got);
            Poll::Ready(Ok(Some(bytes)))
        })
        .await
    }

    /// Whether this request's head used a bare LF line end (it is refused with 400).
    fn head_had_bare_lf(&self) -> bool {
        self.bare_lf.swap(false, Ordering::Relaxed)
    }

    /// Whether the connection went over its client's connection cap.
    fn over_cap(&self) -> bool {
        self.slot.as_ref().is_some_and(Slot::over)
    }

    /// The request head was parsed: the deadline no longer applies to this request.
    fn head_received(&self) {
        if let Some(h) = &self.head {
            h.state.store(RECEIVED, Ordering::Relaxed);
            self.admitted.store(true, Ordering::Relaxed);
        }
    }

    /// The request is over: the next one's clock starts with its first byte.
    fn request_done(&self) {
        if let Some(h) = &self.head {
            h.state.store(WAITING, Ordering::Relaxed);
            self.admitted.store(false, Ordering::Relaxed);
        }
    }

    /// Whether `first` (the start of a write) is pingora answering a head it refused
    /// itself; if so, our answer is prepared to go out instead.
    fn refusing(&mut self, first: &[u8]) -> bool {
        if self.refusal.is_some() {
            return true;
        }
        let (Some(h), Some(refuser)) = (&self.head, &self.refuser) else {
            return false;
        };
        // Pingora's own answers before our phases run: 400 (a head it cannot take) and
        // 405 (`CONNECT`).
        let status = match first.get(..13) {
            Some(b"HTTP/1.1 400 ") => 400,
            Some(b"HTTP/1.1 405 ") => 405,
            _ => return false,
        };
        if self.admitted.load(Ordering::Relaxed) {
            return false;
        }
        // A head parsed from pingora's buffer without a read here (the clock is still
        // WAITING) would be one pipelined behind the previous request: its line and start
        // are unknown. (Pingora keeps HTTP/1 pipelining off unless a session enables it.)
        let (request_line, elapsed) = match h.state.load(Ordering::Relaxed) {
            WAITING => (&[][..], 0),
            _ => {
                let started = h.started_ms.load(Ordering::Relaxed);
                let now = h.origin.elapsed().as_millis() as u64;
                (self.scan.request_line(), now.saturating_sub(started))
            }
        };
        let answer = refuser.answer(&RefusedHead {
            status,
            peer: peer_ip(&self.inner),
            tls: self.inner.get_ssl_digest().is_some(),
            request_line,
            elapsed: Duration::from_millis(elapsed),
        });
        self.refusal = Some((answer, 0));
        true
    }

    /// Sends what is left of our answer; pingora's own bytes are dropped meanwhile.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((answer, sent)) = &mut self.refusal else {
            return Poll::Ready(Ok(()));
        };
        std::task::ready!(self.out.poll_drain(&mut self.inner, cx))?;
        while *sent < answer.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
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

/// What the HTTP layer may ask of, and tell, the connection a request came on. Pingora
/// gives a request no slot for its connection's own state, so the handle is found from
/// the session's stream here, the one place that knows the connection's type; the
/// HTTP layer sees only these four calls.
#[derive(Clone, Copy)]
pub struct ClientHandle<'a>(&'a ClientStream);

impl<'a> ClientHandle<'a> {
    /// The handle of the connection under a pingora session's stream (`None` for a
    /// stream that is not one of ours, such as a test's).
    pub fn of(stream: Option<&'a Stream>) -> Option<Self> {
        stream
            .and_then(|s| (**s).as_any().downcast_ref::<ClientStream>())
            .map(ClientHandle)
    }

    /// The head is in: its deadline is met. Returns (over the per-client cap, the head
    /// had a bare LF), the two reasons to refuse it before anything else.
    pub fn head_received(self) -> (bool, bool) {
        self.0.head_received();
        (self.0.over_cap(), self.0.head_had_bare_lf())
    }

    /// The request is over: the next one's head clock starts with its first byte.
    pub fn request_done(self) {
        self.0.request_done()
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
        if let (Some(a), Poll::Ready(Ok(()))) = (&this.activity, &polled) {
            a.touch();
        }
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
        let this = self.get_mut();
        if this.refusing(buf) {
            return this.poll_refusal(cx).map_ok(|()| buf.len());
        }
        if let Some(a) = &this.activity {
            a.touch();
        }
        this.out.poll_write(&mut this.inner, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            std::task::ready!(this.poll_refusal(cx))?;
        }
        std::task::ready!(this.out.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            std::task::ready!(this.poll_refusal(cx))?;
        }
        std::task::ready!(this.out.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.refusing(first) {
            let total = bufs.iter().map(|b| b.len()).sum();
            return this.poll_refusal(cx).map_ok(|()| total);
        }
        if let Some(a) = &this.activity {
            a.touch();
        }
        this.out.poll_write_vectored(&mut this.inner, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
