//! Active health checks: an HTTP GET per replica at the pool's interval, flipping a
//! replica after `unhealthy_after` failures / `healthy_after` successes, and one
//! background service that runs the checks of whatever pools the current snapshot has
//! (so pools added by a reload are checked without restarting anything).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::{Error, ErrorType::CustomCode, Result};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;

use super::Pool;
use crate::config;

/// The HTTP check of one pool, with a first pass that decides at once.
pub struct PoolHealthCheck {
    inner: HttpHealthCheck,
    pool: Arc<str>,
    healthy_after: usize,
    unhealthy_after: usize,
    /// Until the first pass completes every replica is presumed healthy; that pass must
    /// therefore flip a failing replica on its first failure, not after N of them.
    first_pass_done: Arc<AtomicBool>,
    last: Arc<LastChecks>,
    /// The pool this check belongs to, set once the pool exists: a flip rebuilds its
    /// ready list at once (weak, since the pool owns this check).
    owner: Arc<OnceLock<Weak<Pool>>>,
}

/// The most recent check of one replica, for `/status`.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub ok: bool,
    pub at: std::time::SystemTime,
    pub error: Option<String>,
    /// Since when the replica has been in its present state (in or out of rotation):
    /// its first check, or its last flip.
    pub state_since: std::time::SystemTime,
}

pub type LastChecks = dashmap::DashMap<std::net::SocketAddr, CheckRecord>;

impl PoolHealthCheck {
    pub fn new(
        pool: &Arc<str>,
        h: &config::Health,
        replicas: &[String],
        first_pass_done: Arc<AtomicBool>,
        last: Arc<LastChecks>,
        owner: Arc<OnceLock<Weak<Pool>>>,
    ) -> Self {
        // Send the Host an app expects from its own name (frameworks that check Host
        // would fail a check sent with an arbitrary one).
        let host = replicas
            .first()
            .and_then(|r| r.rsplit_once(':'))
            .map_or("localhost", |(h, _)| h);
        let mut inner = HttpHealthCheck::new(host, false);
        inner.peer_template.options.connection_timeout = Some(h.timeout);
        inner.peer_template.options.read_timeout = Some(h.timeout);
        inner.peer_template.options.write_timeout = Some(h.timeout);
        if let Ok(mut req) = RequestHeader::build("GET", h.path.as_bytes(), None) {
            let _ = req.insert_header("Host", host);
            let _ = req.insert_header("User-Agent", "gateway-health-check");
            inner.req = req;
        }
        inner.validator = Some(Box::new(|resp| {
            if resp.status.is_success() {
                Ok(())
            } else {
                Error::e_explain(
                    CustomCode("health check status", resp.status.as_u16()),
                    "not a 2xx",
                )
            }
        }));
        PoolHealthCheck {
            inner,
            pool: pool.clone(),
            healthy_after: h.healthy_after,
            unhealthy_after: h.unhealthy_after,
            first_pass_done,
            last,
            owner,
        }
    }
}

#[async_trait]
impl HealthCheck for PoolHealthCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let r = self.inner.check(target).await;
        if let Some(addr) = target.addr.as_inet() {
            let at = std::time::SystemTime::now();
            let state_since = self.last.get(addr).map_or(at, |prev| prev.state_since);
            let record = CheckRecord {
                ok: r.is_ok(),
                at,
                error: r.as_ref().err().map(|e| e.to_string()),
                state_since,
            };
            self.last.insert(*addr, record);
        }
        if let Err(e) = &r {
            tracing::debug!(event = "health_check_failed", pool = %self.pool, replica = %target.addr, error = %e);
        }
        r
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        // pingora has flipped the replica's readiness just before calling this.
        if let Some(mut record) = target.addr.as_inet().and_then(|a| self.last.get_mut(a)) {
            record.state_since = std::time::SystemTime::now();
        }
        if let Some(pool) = self.owner.get().and_then(Weak::upgrade) {
            pool.sync_ready();
        }
        if healthy {
            tracing::info!(event = "replica_healthy", pool = %self.pool, replica = %target.addr, "replica back in rotation");
        } else {
            tracing::warn!(event = "replica_unhealthy", pool = %self.pool, replica = %target.addr, "replica taken out of rotation");
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("pool {} replica {}", self.pool, target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        if !self.first_pass_done.load(Ordering::Relaxed) {
            1
        } else if success {
            self.healthy_after
        } else {
            self.unhealthy_after
        }
    }
}

/// Runs a pool's first pass (decisive), so it never sends traffic to a replica that is
/// already down when the pool starts.
pub async fn first_pass(pool: &Pool) {
    pool.run_health_check().await;
    pool.first_pass_flag().store(true, Ordering::Relaxed);
}

/// The pools to check now (a reload changes the set).
type PoolsSource = Box<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>;

/// The background service: every pool it is handed (the current snapshot's), each at
/// its own interval.
pub struct HealthService {
    pools: PoolsSource,
}

impl HealthService {
    pub fn new(pools: impl Fn() -> Vec<Arc<Pool>> + Send + Sync + 'static) -> Self {
        HealthService {
            pools: Box::new(pools),
        }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Keyed by the pool's address: a pool rebuilt by a reload is a new pool.
        let mut due: HashMap<usize, Instant> = HashMap::new();
        let mut dns_due: HashMap<usize, Instant> = HashMap::new();
        let tick = Duration::from_millis(100);
        loop {
            let pools = (self.pools)();
            let now = Instant::now();
            for pool in pools.iter() {
                let id = Arc::as_ptr(pool) as usize;
                let next_dns = dns_due
                    .entry(id)
                    .or_insert(now + pool.config.resolve_interval);
                if *next_dns <= now {
                    *next_dns = now + pool.config.resolve_interval;
                    let pool = Arc::clone(pool);
                    tokio::spawn(async move { pool.refresh().await });
                }
                let Some(interval) = pool.health_interval() else {
                    continue;
                };
                let next = due.entry(id).or_insert(now + interval);
                if *next <= now && pool.try_start_check() {
                    *next = now + interval;
                    let pool = Arc::clone(pool);
                    tokio::spawn(async move {
                        pool.run_health_check().await;
                        pool.end_check();
                    });
                }
            }
            let current = |id: &usize| pools.iter().any(|p| Arc::as_ptr(p) as usize == *id);
            dns_due.retain(|id, _| current(id));
            due.retain(|id, _| current(id));
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
        }
    }
}
