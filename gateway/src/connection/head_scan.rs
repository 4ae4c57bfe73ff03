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
    ///
    /// Line ends are found with `memchr` and each line is taken whole: a browser's head
    /// is ~1 KB, and a loop over its bytes cost ~16 instructions each, more than
    /// everything else the gateway adds to a request.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> (bool, Option<usize>) {
        let mut bare = false;
        let mut start = 0;
        for lf in memchr::memchr_iter(b'\n', bytes) {
            self.take_line_bytes(&bytes[start..lf]);
            bare |= !self.last_was_cr;
            self.last_was_cr = false;
            if self.line_len == 0 && self.seen_line {
                // The next head starts afresh; its first line overwrites this one.
                self.seen_line = false;
                return (bare, Some(lf + 1));
            }
            // Empty lines before the request line are skipped (RFC 9112 2.2).
            self.seen_line |= self.line_len > 0;
            self.line_len = 0;
            start = lf + 1;
        }
        self.take_line_bytes(&bytes[start..]);
        (bare, None)
    }

    /// Takes bytes that hold no LF: a line's text, perhaps ending in the CR of its line
    /// end. CRs do not count toward a line's length; whether the last byte was one is
    /// what the LF after it checks.
    fn take_line_bytes(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        // Most lines end in their CR: the search stops there, not on an empty rest.
        while let Some(cr) = (!rest.is_empty())
            .then(|| memchr::memchr(b'\r', rest))
            .flatten()
        {
            self.take_text(&rest[..cr]);
            self.last_was_cr = true;
            rest = &rest[cr + 1..];
        }
        self.take_text(rest);
    }

    /// Takes text with neither CR nor LF; the start of a request line is kept.
    fn take_text(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        if !self.seen_line && self.line_len < FIRST_LINE_CAP {
            let n = text.len().min(FIRST_LINE_CAP - self.line_len);
            self.first[self.line_len..self.line_len + n].copy_from_slice(&text[..n]);
            self.first_len = self.line_len + n;
        }
        self.line_len += text.len();
        self.last_was_cr = false;
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

    /// The scan as it was first written, one byte at a time: what `feed` must agree with.
    fn reference(state: &mut (usize, bool, bool, Vec<u8>), bytes: &[u8]) -> (bool, Option<usize>) {
        let (line_len, last_was_cr, seen_line, first) = state;
        let mut bare = false;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' => {
                    bare |= !*last_was_cr;
                    *last_was_cr = false;
                    if *line_len == 0 && *seen_line {
                        *seen_line = false;
                        return (bare, Some(i + 1));
                    }
                    *seen_line |= *line_len > 0;
                    *line_len = 0;
                }
                b'\r' => *last_was_cr = true,
                _ => {
                    *last_was_cr = false;
                    if !*seen_line && *line_len < FIRST_LINE_CAP {
                        first.truncate(*line_len);
                        first.push(b);
                    }
                    *line_len += 1;
                }
            }
        }
        (bare, None)
    }

    #[test]
    fn agrees_with_a_byte_by_byte_scan_on_any_bytes_in_any_pieces() {
        // A small xorshift generator: many heads of CR, LF, text and spaces, cut at
        // random places, fed to both scans piece by piece, as reads deliver them.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..20_000 {
            let len = next(300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next(10) {
                    0 | 1 => b'\r',
                    2 | 3 => b'\n',
                    4 => b' ',
                    _ => b'a' + next(26) as u8,
                })
                .collect();
            let (mut ours, mut theirs) = (HeadScan::default(), (0, false, false, Vec::new()));
            let mut at = 0;
            while at < bytes.len() {
                let end = (at + 1 + next(120) as usize).min(bytes.len());
                let piece = &bytes[at..end];
                let (a, b) = (ours.feed(piece), reference(&mut theirs, piece));
                assert_eq!(a, b, "{:?} at {at}", String::from_utf8_lossy(&bytes));
                assert_eq!(ours.request_line(), &theirs.3[..]);
                // After a head's end, the next head starts at the byte after it.
                at = a.1.map_or(end, |e| at + e);
            }
        }
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
