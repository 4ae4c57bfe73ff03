//! Write coalescing for a client connection, with a buffer that exists only while a
//! response is being written. Pingora's own L4 write buffer (1,460 bytes, allocated at
//! accept) does the same job but stays allocated for the connection's whole life: for
//! 10,000 idle keep-alive connections that is 14 MiB holding nothing. The listeners
//! switch it off (`app.rs`) and this takes its place, with the same size and rules
//! (tokio's `BufWriter`'s): a response's head and a small body leave in one `write`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// Pingora's `DEFAULT_L4_WRITE_BUFFER_SIZE` (one Ethernet MSS).
const CAPACITY: usize = 1460;

#[derive(Debug, Default)]
pub struct WriteBuf {
    buf: Vec<u8>,
    /// How much of `buf` the socket has taken (a partial write leaves the rest).
    sent: usize,
}

impl WriteBuf {
    /// Takes `data`: buffered when it fits, else what is buffered goes out first and a
    /// large `data` goes straight to the socket.
    pub fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !ready!(self.poll_room(inner, cx, data.len()))? {
            return Pin::new(inner).poll_write(cx, data);
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// As `poll_write`, for the slices of one vectored write.
    pub fn poll_write_vectored<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !ready!(self.poll_room(inner, cx, total))? {
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    /// Makes room for `len` more bytes: true when they go into the buffer, false when
    /// they are too large for it and go straight to the socket (after what was buffered).
    fn poll_room<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > CAPACITY {
            ready!(self.poll_drain(inner, cx))?;
        }
        if len >= CAPACITY {
            return Poll::Ready(Ok(false));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(CAPACITY);
        }
        Poll::Ready(Ok(true))
    }

    /// Hands everything buffered to the socket (without flushing the layers below).
    pub fn poll_drain<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            match ready!(Pin::new(&mut *inner).poll_write(cx, &self.buf[self.sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Frees the buffer if it is empty: called when the connection turns idle.
    pub fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() != 0 {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that records each write call and takes at most `max` bytes per call.
    struct Sink {
        writes: Vec<Vec<u8>>,
        max: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = b.len().min(self.max);
            self.writes.push(b[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn ready<T>(p: Poll<T>) -> T {
        match p {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn a_head_and_a_small_body_leave_in_one_write_and_order_holds() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut sink = Sink {
            writes: Vec::new(),
            max: usize::MAX,
        };
        let mut w = WriteBuf::default();
        ready(w.poll_write(&mut sink, &mut cx, b"HTTP/1.1 200 OK\r\n\r\n")).unwrap();
        ready(w.poll_write(&mut sink, &mut cx, b"body")).unwrap();
        assert!(sink.writes.is_empty(), "nothing leaves before a drain");
        ready(w.poll_drain(&mut sink, &mut cx)).unwrap();
        assert_eq!(sink.writes, vec![b"HTTP/1.1 200 OK\r\n\r\nbody".to_vec()]);
        // A large body: the buffered head first, then the body straight through.
        let big = vec![b'x'; 5000];
        ready(w.poll_write(&mut sink, &mut cx, b"head")).unwrap();
        ready(w.poll_write(&mut sink, &mut cx, &big)).unwrap();
        assert_eq!(sink.writes[1], b"head");
        assert_eq!(sink.writes[2], big);
        w.release();
        assert_eq!(w.buf.capacity(), 0, "an idle connection holds no buffer");
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut sink = Sink {
            writes: Vec::new(),
            max: 3,
        };
        let mut w = WriteBuf::default();
        let slices = [io::IoSlice::new(b"abcd"), io::IoSlice::new(b"efg")];
        assert_eq!(
            ready(w.poll_write_vectored(&mut sink, &mut cx, &slices)).unwrap(),
            7
        );
        ready(w.poll_drain(&mut sink, &mut cx)).unwrap();
        assert_eq!(sink.writes.concat(), b"abcdefg");
        assert_eq!(sink.writes.len(), 3);
    }
}
