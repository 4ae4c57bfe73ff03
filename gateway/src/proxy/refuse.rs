//! The answer to a head pingora refused before any request phase ran (see
//! `connection/refuse.rs`): the gateway's JSON error with a fresh request id and the
//! headers every gateway-made error carries, one access line and the request metrics.
//! It needs no per-request `Ctx`: the snapshot's fallback policy governs the answer.

use std::sync::Arc;

use super::error::GatewayError;
use super::respond::{self, Finish};
use crate::access_line::AccessLine;
use crate::connection::{RefuseHead, RefusedHead};
use crate::metrics::Metrics;
use crate::state::SharedState;
use crate::{request_id, telemetry};

pub struct HeadRefuser {
    state: SharedState,
    metrics: Arc<Metrics>,
}

// The connection stream must be `Debug` (pingora's `IO`); the shared state says nothing
// useful there.
impl std::fmt::Debug for HeadRefuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadRefuser")
    }
}

impl HeadRefuser {
    pub fn new(state: SharedState, metrics: Arc<Metrics>) -> Self {
        HeadRefuser { state, metrics }
    }
}

impl RefuseHead for HeadRefuser {
    fn answer(&self, head: &RefusedHead) -> Vec<u8> {
        let snapshot = self.state.load();
        let request_id = request_id::generate();
        let err = match head.status {
            405 => GatewayError::MethodNotAllowed,
            _ => GatewayError::BadRequest,
        };
        let finish = Finish {
            request_id: &request_id,
            hsts: if head.tls {
                snapshot.sites.hsts(None)
            } else {
                None
            },
            policy: &snapshot.fallback,
            cors_origin: None,
            preflight: false,
            rate: None,
        };
        let (bytes, body_len) = respond::error_response_bytes(&finish, err);

        let line = String::from_utf8_lossy(head.request_line);
        let mut parts = line.split(' ');
        let method = parts.next().filter(|m| !m.is_empty()).unwrap_or("-");
        let path = parts.next().unwrap_or("-");
        if snapshot.config.log.access_log {
            telemetry::emit(&AccessLine {
                request_id: request_id.as_str(),
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
