//! Requests that pingora's own HTTP/1 parser refuses never reach our request phases: a
//! malformed head, or framing it rejects (differing `Content-Length`s, a
//! `Transfer-Encoding` that does not end in `chunked`, a header name with a space...).
//! Pingora answers them with a bare `400` and nothing else (and `CONNECT` with a bare
//! `405`). The connection wrapper (`stream.rs`) sees that answer go out and puts this
//! one in its place: the gateway's JSON error with a request id, the same headers as
//! every other gateway-made error, one access-log line and the request metrics.
//! Nothing changes about what is refused.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::access_line::AccessLine;
use crate::metrics::Metrics;
use crate::proxy::ctx::{Ctx, Lifecycle};
use crate::proxy::respond::{self, GatewayError};
use crate::state::SharedState;
use crate::{request_id, telemetry};

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

pub struct Refuser {
    state: SharedState,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
}

// The connection stream must be `Debug` (pingora's `IO`); the shared state says nothing
// useful there.
impl std::fmt::Debug for Refuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refuser")
    }
}

impl Refuser {
    pub fn new(state: SharedState, lifecycle: Arc<Lifecycle>, metrics: Arc<Metrics>) -> Self {
        Refuser {
            state,
            lifecycle,
            metrics,
        }
    }

    /// The whole response to send instead of pingora's (the connection closes after it),
    /// logged and counted like any other request.
    pub fn answer(&self, head: &RefusedHead) -> Vec<u8> {
        let mut ctx = Ctx::new(self.state.load_full(), &self.lifecycle);
        ctx.request_id = request_id::generate();
        ctx.tls = head.tls;
        ctx.client_ip = head.peer;
        let err = match head.status {
            405 => GatewayError::MethodNotAllowed,
            _ => GatewayError::BadRequest,
        };
        let (bytes, body_len) = respond::error_response_bytes(&ctx, err);

        let line = String::from_utf8_lossy(head.request_line);
        let mut parts = line.split(' ');
        let method = parts.next().filter(|m| !m.is_empty()).unwrap_or("-");
        let path = parts.next().unwrap_or("-");
        if ctx.snapshot.config.log.access_log {
            telemetry::emit(&AccessLine {
                request_id: ctx.request_id.as_str(),
                client_ip: head.peer,
                method,
                host: "-",
                path,
                status: err.status(),
                bytes: body_len,
                duration_us: head.elapsed.as_micros(),
                route: "-",
                upstream: None,
                attempts: 0,
                // As pingora's error type would read in any other access line.
                error: (err == GatewayError::BadRequest).then_some("InvalidHTTPHeader"),
            });
        }
        let method_label = http::Method::from_bytes(method.as_bytes())
            .map_or("OTHER", |m| crate::metrics::method_label(&m));
        self.metrics
            .request_done("-", method_label, &err.status().to_string(), head.elapsed);
        bytes
    }
}
