//! Per-request state carried through the pingora phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use super::error::GatewayError;
use crate::compress::encoder::Encoder;
use crate::config::{Coding, Route};
use crate::lifecycle::{InFlight, Lifecycle};
use crate::policy::CompiledPolicy;
use crate::request_id::RequestId;
use crate::state::Snapshot;
use crate::upstream::Pool;

pub struct Ctx {
    /// The config this request started with; a reload does not change it mid-request.
    pub snapshot: Arc<Snapshot>,
    pub started: Instant,
    pub request_id: RequestId,
    /// The client's address after trusted-proxy resolution.
    pub client_ip: Option<IpAddr>,
    /// Index into `snapshot.router.routes()`.
    pub route: Option<usize>,
    /// Replicas tried so far, in order; the last one is the current one.
    pub tried: Vec<SocketAddr>,
    /// When the current attempt's replica was picked (for connect timing).
    pub attempt_started: Option<Instant>,
    pub upgrade: bool,
    /// The request came over TLS (HSTS, `X-Forwarded-Proto: https`).
    pub tls: bool,
    /// The site the Host belongs to (index into the snapshot's sites).
    pub site: Option<usize>,
    /// Set once a response header went to the client: from then on nothing is retried.
    pub response_started: bool,
    /// The client went away (closed, reset, HTTP/2 RST_STREAM) while the request was
    /// being proxied: logged as 499, never retried, never charged to the replica.
    pub client_aborted: bool,
    /// A failure decided by the gateway itself (no route, no healthy replica).
    pub failure: Option<GatewayError>,
    /// How the last attempt at a replica failed, for when no retry is possible.
    pub last_failure: Option<GatewayError>,
    /// The request's `Origin`, when the route's CORS policy allows it.
    pub cors_origin: Option<HeaderValue>,
    /// This response answers a CORS preflight (its CORS headers are already set).
    pub preflight: bool,
    /// The tightest rate-limit state of this request, for the `X-RateLimit-*` headers.
    pub rate: Option<RateInfo>,
    /// The limit that refused this request (for logs and metrics).
    pub rate_limited_by: Option<Arc<str>>,
    /// Request body bytes seen so far (for the body size limit on chunked bodies).
    pub body_bytes: u64,
    /// The body read before forwarding (request buffering), for `request_body_filter`.
    pub held: super::body::Held,
    /// The coding the client and the route agree on for the response (`None`: as is).
    pub coding: Option<Coding>,
    /// The request asked for a range: the response goes uncompressed.
    pub range_request: bool,
    /// The response's compressor, once `response_filter` decided to compress (behind a
    /// mutex: the context must be `Sync`, zstd's state is not; never contended). Boxed:
    /// the context lives in the request's future, which is moved on every request, and
    /// most responses have no encoder.
    pub encoder: Option<Box<std::sync::Mutex<Encoder>>>,
    _in_flight: InFlight,
}

/// What the `X-RateLimit-*` (and on 429 `Retry-After`) headers report.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
    pub retry_after_secs: Option<u64>,
}

impl Ctx {
    pub fn new(snapshot: Arc<Snapshot>, lifecycle: &Arc<Lifecycle>) -> Self {
        Ctx {
            snapshot,
            started: Instant::now(),
            request_id: RequestId::default(),
            client_ip: None,
            route: None,
            tried: Vec::new(),
            attempt_started: None,
            upgrade: false,
            tls: false,
            site: None,
            response_started: false,
            client_aborted: false,
            failure: None,
            last_failure: None,
            cors_origin: None,
            preflight: false,
            rate: None,
            rate_limited_by: None,
            body_bytes: 0,
            held: Default::default(),
            coding: None,
            range_request: false,
            encoder: None,
            _in_flight: InFlight::new(lifecycle),
        }
    }

    pub fn route(&self) -> Option<&Route> {
        self.route
            .and_then(|i| self.snapshot.router.routes().get(i))
    }

    /// The policy that governs this request's response: its route's, or the fallback.
    pub fn policy(&self) -> &CompiledPolicy {
        self.route
            .and_then(|i| self.snapshot.policies.get(i))
            .unwrap_or(&self.snapshot.fallback)
    }

    pub fn pool(&self) -> Option<&Arc<Pool>> {
        self.route().and_then(|r| self.snapshot.pools.get(r.pool))
    }
}
