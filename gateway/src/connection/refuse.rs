//! Requests that pingora's own HTTP/1 parser refuses never reach the HTTP layer's
//! phases: a malformed head, or framing it rejects (differing `Content-Length`s, a
//! `Transfer-Encoding` that does not end in `chunked`, a header name with a space...).
//! Pingora answers them with a bare `400` and nothing else (and `CONNECT` with a bare
//! `405`). The connection stream (`stream.rs`) sees that answer go out and sends the
//! one a [`RefuseHead`] gives in its place: the gateway's JSON error with a request
//! id, logged and counted (`proxy/refuse.rs`). Nothing changes about what is refused.

use std::net::IpAddr;
use std::time::Duration;

/// What the connection knows of a head pingora refused.
#[derive(Debug)]
pub struct RefusedHead<'a> {
    /// The status pingora chose: 400 (unparsable head or framing) or 405 (`CONNECT`).
    pub status: u16,
    pub peer: Option<IpAddr>,
    pub tls: bool,
    /// The start of the request line as received (possibly cut short).
    pub request_line: &'a [u8],
    /// Since the head's first byte.
    pub elapsed: Duration,
}

/// Answers a refused head; given to the connection layer by the HTTP layer above it.
pub trait RefuseHead: Send + Sync + std::fmt::Debug {
    /// The whole response to send instead of pingora's (the connection closes after
    /// it). Called once per refused head; logging and counting it is the answerer's.
    fn answer(&self, head: &RefusedHead) -> Vec<u8>;
}
