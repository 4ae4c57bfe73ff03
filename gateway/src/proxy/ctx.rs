//! Per-request state carried through the pingora phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::respond::GatewayError;
use crate::config::Route;
use crate::state::Snapshot;
use crate::upstream::Pool;

pub struct Ctx {
    /// The config this request started with; a reload does not change it mid-request.
    pub snapshot: Arc<Snapshot>,
    pub started: Instant,
    pub request_id: String,
    /// The client's address after trusted-proxy resolution.
    pub client_ip: Option<IpAddr>,
    /// Index into `snapshot.router.routes()`.
    pub route: Option<usize>,
    /// Replicas tried so far, in order; the last one is the current one.
    pub tried: Vec<SocketAddr>,
    pub upgrade: bool,
    /// Set once a response header went to the client: from then on nothing is retried.
    pub response_started: bool,
    /// A failure decided by the gateway itself (no route, no healthy replica).
    pub failure: Option<GatewayError>,
    /// How the last attempt at a replica failed, for when no retry is possible.
    pub last_failure: Option<GatewayError>,
    _in_flight: InFlight,
}

impl Ctx {
    pub fn new(snapshot: Arc<Snapshot>, in_flight: &Arc<AtomicUsize>) -> Self {
        Ctx {
            snapshot,
            started: Instant::now(),
            request_id: String::new(),
            client_ip: None,
            route: None,
            tried: Vec::new(),
            upgrade: false,
            response_started: false,
            failure: None,
            last_failure: None,
            _in_flight: InFlight::new(in_flight),
        }
    }

    pub fn route(&self) -> Option<&Route> {
        self.route
            .and_then(|i| self.snapshot.router.routes().get(i))
    }

    pub fn pool(&self) -> Option<&Arc<Pool>> {
        self.route().and_then(|r| self.snapshot.pools.get(r.pool))
    }
}

/// Counts requests in progress, so a graceful shutdown can end as soon as they are done.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
