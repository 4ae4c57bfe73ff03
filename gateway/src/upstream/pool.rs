//! One upstream pool: its replicas (pingora's `Backends`, following DNS), the health
//! state its checks maintain, round-robin selection, and the peer settings (timeouts)
//! for proxying.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backends, LoadBalancer};

use super::discovery::{resolve_all, DnsDiscovery};
use super::health::{CheckRecord, LastChecks, PoolHealthCheck};
use crate::config;

pub struct Pool {
    pub config: config::Pool,
    lb: LoadBalancer<RoundRobin>,
    /// The round-robin position (see `select`).
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
        if let Some(h) = &cfg.health {
            let check = PoolHealthCheck::new(
                &cfg.name,
                h,
                &cfg.replicas,
                Arc::clone(&first_pass_done),
                Arc::clone(&last_checks),
            );
            backends.set_health_check(Box::new(check));
        }
        let lb = LoadBalancer::<RoundRobin>::from_backends(backends);
        lb.update()
            .await
            .map_err(|e| format!("cannot set up replicas: {e}"))?;
        Ok(Arc::new(Pool {
            config: cfg.clone(),
            lb,
            next: AtomicUsize::new(0),
            checking: AtomicBool::new(false),
            first_pass_done,
            last_checks,
        }))
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
    /// The rotation is ours, over pingora's backend set and health state: pingora's
    /// `select_with` builds a `HashSet` per call (~1.7k instructions per request with
    /// three replicas), this walks the set once from a shared position.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let backends = self.lb.backends();
        let set = backends.get_backend();
        let n = set.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        set.iter()
            .cycle()
            .skip(start)
            .take(n)
            .filter(|b| backends.ready(b))
            .filter_map(|b| b.addr.as_inet().copied())
            .find(|a| !tried.contains(a))
    }

    /// Whether any replica is healthy (for readiness).
    pub fn any_healthy(&self) -> bool {
        self.select(&[]).is_some()
    }

    /// Whether a replica is currently considered healthy.
    pub fn is_healthy(&self, addr: SocketAddr) -> bool {
        self.lb
            .backends()
            .get_backend()
            .iter()
            .any(|b| b.addr.as_inet() == Some(&addr) && self.lb.backends().ready(b))
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
