//! The line ends of an HTTP/1 request head as its bytes arrive: where the head ends,
//! whether a bare LF was used as a line end (pingora's parser accepts one, which a
//! backend or another proxy may read differently: a smuggling vector), and the start of
//! the request line, kept for the access line of a refused head.

/// How much of a request line is kept for the access line of a refused head.
const FIRST_LINE_CAP: usize = 96;

/// The line-end state of a request head being read.
#[derive(Debug)]
pub(super) struct HeadScan {
    line_len: usize,
    last_was_cr: bool,
    seen_line: bool,
    /// The start of the current (or last) head's request line.
    first: [u8; FIRST_LINE_CAP],
    first_len: usize,
}

impl Default for HeadScan {
    fn default() -> Self {
        HeadScan {
            line_len: 0,
            last_was_cr: false,
            seen_line: false,
            first: [0; FIRST_LINE_CAP],
            first_len: 0,
        }
    }
}

impl HeadScan {
    /// The start of the request line of the head being read (or the last one).
    pub(super) fn request_line(&self) -> &[u8] {
        &self.first[..self.first_len]
    }

    /// Scans `bytes`; returns (bare LF seen, offset just past the head's end if it ends).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> (bool, Option<usize>) {
        let mut bare = false;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' => {
                    bare |= !self.last_was_cr;
                    self.last_was_cr = false;
                    if self.line_len == 0 && self.seen_line {
                        // The next head starts afresh; its first line overwrites this one.
                        self.seen_line = false;
                        return (bare, Some(i + 1));
                    }
                    // Empty lines before the request line are skipped (RFC 9112 2.2).
                    self.seen_line |= self.line_len > 0;
                    self.line_len = 0;
                }
                b'\r' => self.last_was_cr = true,
                _ => {
                    self.last_was_cr = false;
                    if !self.seen_line && self.line_len < FIRST_LINE_CAP {
                        self.first[self.line_len] = b;
                        self.first_len = self.line_len + 1;
                    }
                    self.line_len += 1;
                }
            }
        }
        (bare, None)
    }
}

#[cfg(test)]
mod tests {
    use super::{HeadScan, FIRST_LINE_CAP};

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

    #[test]
    fn keeps_the_start_of_each_request_line() {
        let mut s = HeadScan::default();
        s.feed(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(s.request_line(), b"GET /first HTTP/1.1");
        // The next head on the connection, trickled, replaces it.
        s.feed(b"\r\nPO");
        s.feed(b"ST /b HTTP/1.1\r\nX: y");
        assert_eq!(s.request_line(), b"POST /b HTTP/1.1");
        let long = format!("GET /{} HTTP/1.1", "a".repeat(200));
        s.feed(b"\r\n\r\n");
        s.feed(long.as_bytes());
        assert_eq!(s.request_line(), &long.as_bytes()[..FIRST_LINE_CAP]);
    }
}
