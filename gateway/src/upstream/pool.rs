//! One upstream pool: its replicas (pingora's `Backends`, following DNS), the health
//! state its checks maintain, round-robin selection, and the peer settings (timeouts)
//! for proxying.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backends, LoadBalancer};

use super::discovery::{resolve_all, DnsDiscovery};
use super::health::{CheckRecord, LastChecks, PoolHealthCheck};
use crate::config;

pub struct Pool {
    pub config: config::Pool,
    lb: LoadBalancer<RoundRobin>,
    /// The replicas ready for traffic, in the backend set's order, rebuilt
    /// (`sync_ready`) whenever pingora flips a replica (the health check's status
    /// callback) and after each DNS refresh: selection reads one snapshot, where asking
    /// pingora per candidate costs two SipHash lookups each (~1k instructions per
    /// request).
    ready: ArcSwap<Vec<SocketAddr>>,
    /// Held while `ready` is rebuilt, so a rebuild that read older state cannot store
    /// it over a newer one (a DNS refresh and a health flip may come together).
    ready_sync: Mutex<()>,
    /// The round-robin position over `ready` (see `select`).
    next: AtomicUsize,
    /// Set while a health-check pass runs, so passes never overlap.
    checking: AtomicBool,
    /// Shared with the pool's health check: set once its first (decisive) pass is done.
    first_pass_done: Arc<AtomicBool>,
    last_checks: Arc<LastChecks>,
}

impl Pool {
    /// Resolves the replicas and builds the balancer. Every replica starts healthy until
    /// the first health-check pass, which `upstream::health::first_pass` runs before
    /// the pool takes traffic.
    pub async fn build(cfg: &config::Pool) -> Result<Arc<Pool>, String> {
        // Fail fast, with the DNS error in words, before pingora wraps it.
        resolve_all(&cfg.replicas).await?;
        let mut backends = Backends::new(Box::new(DnsDiscovery {
            entries: cfg.replicas.clone(),
        }));
        let first_pass_done = Arc::new(AtomicBool::new(false));
        let last_checks = Arc::new(LastChecks::new());
        let owner = Arc::new(OnceLock::new());
        if let Some(h) = &cfg.health {
            let check = PoolHealthCheck::new(
                &cfg.name,
                h,
                &cfg.replicas,
                Arc::clone(&first_pass_done),
                Arc::clone(&last_checks),
                Arc::clone(&owner),
            );
            backends.set_health_check(Box::new(check));
        }
        let lb = LoadBalancer::<RoundRobin>::from_backends(backends);
        lb.update()
            .await
            .map_err(|e| format!("cannot set up replicas: {e}"))?;
        let pool = Pool {
            config: cfg.clone(),
            lb,
            ready: ArcSwap::default(),
            ready_sync: Mutex::new(()),
            next: AtomicUsize::new(0),
            checking: AtomicBool::new(false),
            first_pass_done,
            last_checks,
        };
        pool.sync_ready();
        let pool = Arc::new(pool);
        let _ = owner.set(Arc::downgrade(&pool));
        Ok(pool)
    }

    /// Rebuilds `ready` from pingora's backend set and health state.
    pub(super) fn sync_ready(&self) {
        // A poisoned lock only means another rebuild panicked; the list is still whole.
        let _held = self.ready_sync.lock().unwrap_or_else(|e| e.into_inner());
        let backends = self.lb.backends();
        let ready = backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b))
            .filter_map(|b| b.addr.as_inet().copied())
            .collect();
        self.ready.store(Arc::new(ready));
    }

    /// The replicas right now (they follow DNS), in a stable order.
    pub fn replicas(&self) -> Vec<SocketAddr> {
        self.lb
            .backends()
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().copied())
            .collect()
    }

    /// Resolves the replica names again; a failed lookup keeps the current replicas.
    pub async fn refresh(&self) {
        if let Err(e) = self.lb.update().await {
            tracing::warn!(event = "replica_dns_failed", pool = %self.config.name, error = %e, "keeping the last known replicas");
        }
        self.sync_ready();
    }

    /// The last health check of `addr`, if one ran.
    pub fn last_check(&self, addr: SocketAddr) -> Option<CheckRecord> {
        self.last_checks.get(&addr).map(|r| r.clone())
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The next healthy replica in round-robin order that this request has not tried yet.
    ///
    /// The rotation is ours, over the ready list: pingora's `select_with` builds a
    /// `HashSet` per call (~1.7k instructions per request with three replicas). Rotating
    /// over the healthy replicas only (not over all, skipping the unhealthy) spreads a
    /// down replica's share evenly, as nginx does, instead of doubling its successor's.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let ready = self.ready.load();
        let n = ready.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| ready[(start + i) % n])
            .find(|a| !tried.contains(a))
    }

    /// Whether any replica is healthy (for readiness).
    pub fn any_healthy(&self) -> bool {
        !self.ready.load().is_empty()
    }

    /// Whether a replica is currently considered healthy.
    pub fn is_healthy(&self, addr: SocketAddr) -> bool {
        self.ready.load().contains(&addr)
    }

    /// Runs one health-check pass over every replica (no-op without `[health]`).
    pub async fn run_health_check(&self) {
        if self.config.health.is_some() {
            self.lb.backends().run_health_check(true).await;
        }
    }

    /// Connection settings for proxying one request to `addr`.
    pub fn peer(&self, addr: SocketAddr, upgrade: bool) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(addr, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.config.connect_timeout);
        o.write_timeout = Some(self.config.write_timeout);
        // The gateway strips hop-by-hop request headers itself, in one pass
        // (`headers::hop_by_hop`), with the same refusals as this policy's standard form.
        o.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
        o.idle_timeout = Some(self.config.idle_timeout);
        // An upgraded connection (WebSocket) is idle between messages for long stretches;
        // the read timeout is what ends an idle tunnel.
        o.read_timeout = Some(if upgrade {
            self.config.upgrade_idle_timeout
        } else {
            self.config.read_timeout
        });
        Box::new(peer)
    }

    pub fn health_interval(&self) -> Option<Duration> {
        self.config.health.as_ref().map(|h| h.interval)
    }

    pub(super) fn first_pass_flag(&self) -> &AtomicBool {
        &self.first_pass_done
    }

    pub(super) fn try_start_check(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    pub(super) fn end_check(&self) {
        self.checking.store(false, Ordering::Release);
    }
}
