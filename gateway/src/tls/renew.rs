//! One attempt at a site's certificate, in the background: with a store, first what
//! another gateway already got, then the cluster's order lock (refreshed while the
//! order runs; a gateway that does not get it leaves the order to the one that did),
//! then the ACME order, the certificate kept on disk, written to the store only while
//! the lock is still this gateway's, and installed. Failures back off exponentially,
//! with jitter; the certificate in service keeps serving meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;

use super::manager::install;
use super::store::{entry_from_pem, write_atomic, Entry};
use super::{acme, shared, TlsState};
use crate::config::{Acme, Site, Tls};
use crate::metrics::Metrics;
use crate::store::certs::Lock;
use crate::store::Store;

/// How long an order lock lasts unless refreshed (every third of it).
const LOCK_TTL: Duration = Duration::from_secs(60);

/// How soon to look again when another gateway holds the lock, or the store has not
/// answered yet.
const OTHERS_ORDER: Duration = Duration::from_secs(2);

/// How long a store that does not answer is waited for before this gateway orders on
/// its own (without the lock, several gateways may then order the same name).
const ORDER_ALONE_AFTER: Duration = Duration::from_secs(30);

/// Per-site ACME state: when the next attempt may start, and how many failed in a row.
pub struct Run {
    pub next_attempt: Instant,
    pub failures: u32,
    pub busy: Arc<AtomicBool>,
}

impl Run {
    pub fn new() -> Arc<Mutex<Run>> {
        Arc::new(Mutex::new(Run {
            next_attempt: Instant::now(),
            failures: 0,
            busy: Arc::default(),
        }))
    }
}

/// What the status page shows of a site's orders, by its first name.
#[derive(Debug, Clone, Default)]
pub struct OrderStatus {
    pub last_ok: Option<SystemTime>,
    /// When the last order failed, and why (kept after a later success, which
    /// `last_ok` then postdates).
    pub last_error: Option<(SystemTime, String)>,
    /// Failures in a row, and when the next attempt may start after them.
    pub failures: u32,
    pub retry_at: Option<SystemTime>,
}

/// Everything one attempt needs, owned (it runs in a task of its own).
pub struct Attempt {
    pub tls: Arc<TlsState>,
    pub metrics: Arc<Metrics>,
    pub store: Option<Arc<Store>>,
    pub acme: Acme,
    pub site: Site,
    pub tls_cfg: Tls,
    /// The site's certificate is the default one (the first site).
    pub default: bool,
    /// For a name issued on demand: the policy, whose ask endpoint is asked again
    /// before a renewal.
    pub on_demand: Option<crate::config::OnDemand>,
    pub run: Arc<Mutex<Run>>,
}

impl Attempt {
    pub async fn go(self) {
        let outcome = self.attempt().await;
        let mut r = self.run.lock().unwrap_or_else(|p| p.into_inner());
        let mut status = self
            .tls
            .orders
            .entry(self.site.names[0].clone())
            .or_default();
        match outcome {
            Ok(Done::Installed) => {
                r.failures = 0;
                r.next_attempt = Instant::now();
                status.last_ok = Some(SystemTime::now());
                status.failures = 0;
                status.retry_at = None;
            }
            Ok(Done::Current) => r.failures = 0,
            Ok(Done::Later) => r.next_attempt = Instant::now() + OTHERS_ORDER,
            Err(e) => {
                self.metrics.acme_orders.with_label_values(&["error"]).inc();
                r.failures += 1;
                let base = self
                    .tls_cfg
                    .retry_min
                    .saturating_mul(1 << r.failures.min(16).saturating_sub(1))
                    .min(self.tls_cfg.retry_max);
                let wait = base.mul_f64(rand::rng().random_range(0.8..1.2));
                r.next_attempt = Instant::now() + wait;
                status.last_error = Some((SystemTime::now(), e.clone()));
                status.failures = r.failures;
                status.retry_at = Some(SystemTime::now() + wait);
                tracing::warn!(
                    event = "acme_order_failed",
                    names = ?self.site.names,
                    error = %e,
                    failures = r.failures,
                    retry_in_secs = wait.as_secs_f64(),
                    "certificate order failed; the current certificate (if any) keeps serving"
                );
            }
        }
        drop(status);
        r.busy.store(false, Ordering::Release);
        drop(r);
        self.tls.on_demand.settled.notify_waiters();
    }

    async fn attempt(&self) -> Result<Done, String> {
        let primary = &self.site.names[0];
        // Spawned while the site was due; a certificate may have been installed since
        // (the manager's own sync, a store event): then there is nothing to order.
        if !self.due() {
            return Ok(Done::Current);
        }
        if let (Some(policy), Some(_)) = (&self.on_demand, self.tls.store.get(primary)) {
            // A renewal: only while the app still wants the name.
            if !self.tls.on_demand.still_allowed(policy, primary).await? {
                // Not served, not kept: a restart must not bring it back unasked.
                self.tls
                    .on_demand
                    .forget(&self.metrics, primary, policy.refusal_ttl);
                self.tls.store.remove(primary);
                let _ = self
                    .metrics
                    .tls_cert_expiry
                    .remove_label_values(&[primary, "acme"]);
                let (cert, _) = acme::cert_paths(&self.tls_cfg.state_dir, primary);
                if let Some(dir) = cert.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
                tracing::info!(event = "on_demand_dropped", name = %primary, "the ask endpoint no longer allows this name: no longer served or renewed");
                return Ok(Done::Later);
            }
        }
        let lock = match &self.store {
            None => None,
            // A store that is not up (this gateway has just started, or it is down)
            // was not read: what another gateway stored is unknown. Wait for it a
            // while, rather than read nothing now, take the lock the moment it is up,
            // and order a certificate the store already holds.
            Some(store) if store.down_for().is_some_and(|d| d < ORDER_ALONE_AFTER) => {
                return Ok(Done::Later);
            }
            Some(store) if store.down_for().is_some() => {
                tracing::warn!(event = "acme_lock_unavailable", names = ?self.site.names, error = ?store.last_error(), "ordering without the cluster lock");
                None
            }
            Some(store) => {
                if self.current_from(store).await {
                    return Ok(Done::Installed);
                }
                match store.try_lock(primary, LOCK_TTL).await {
                    // Read again once the lock is ours: the gateway that held it may
                    // have stored its certificate and let go in between.
                    Ok(Some(lock)) if self.current_from(store).await => {
                        let _ = store.release_lock(&lock).await;
                        return Ok(Done::Installed);
                    }
                    Ok(Some(lock)) => Some(lock),
                    Ok(None) => {
                        tracing::debug!(event = "acme_order_elsewhere", names = ?self.site.names, "another gateway holds the order lock");
                        return Ok(Done::Later);
                    }
                    Err(e) => {
                        // A store that just started, or blinked, is waited for; one that
                        // stays away is not: this gateway orders for itself rather than
                        // go without a certificate.
                        if store.down_for().is_none_or(|d| d < ORDER_ALONE_AFTER) {
                            return Ok(Done::Later);
                        }
                        tracing::warn!(event = "acme_lock_unavailable", names = ?self.site.names, error = %e, "ordering without the cluster lock");
                        None
                    }
                }
            }
        };
        let refresher = match (&self.store, &lock) {
            (Some(store), Some(lock)) => {
                Some(tokio::spawn(keep_lock(Arc::clone(store), lock.clone())))
            }
            _ => None,
        };
        tracing::info!(
            event = "acme_order_started",
            names = ?self.site.names,
            directory = %self.acme.directory,
            fence = lock.as_ref().map(Lock::fence),
        );
        let result = acme::order(
            &self.acme,
            &self.site.names,
            &self.tls_cfg.state_dir,
            &self.tls,
            self.store.as_deref(),
            &self.metrics,
        )
        .await;
        if let Some(r) = refresher {
            r.abort();
        }
        let (chain, key) = match result {
            Ok(v) => v,
            Err(e) => {
                if let (Some(store), Some(lock)) = (&self.store, &lock) {
                    let _ = store.release_lock(lock).await;
                }
                return Err(e);
            }
        };
        let entry = self.keep(&chain, &key)?;
        if let (Some(store), Some(lock)) = (&self.store, &lock) {
            match store.save_cert(lock, &self.site.names, &chain, &key).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    event = "acme_lock_lost",
                    names = ?self.site.names,
                    "the order lock expired before the certificate came; it is served here, the store keeps the other gateway's"
                ),
                Err(e) => tracing::warn!(
                    event = "acme_certificate_store_failed",
                    names = ?self.site.names,
                    error = %e,
                    "the certificate is served here; other gateways order their own"
                ),
            }
        }
        self.metrics.acme_orders.with_label_values(&["ok"]).inc();
        tracing::info!(event = "acme_order_succeeded", names = ?self.site.names, serial = %entry.serial, not_after = entry.not_after);
        install(&self.tls, &self.metrics, entry, self.default);
        Ok(Done::Installed)
    }

    /// Whether the site has no certificate in service, or one due for replacement.
    fn due(&self) -> bool {
        super::manager::due(&self.tls, &self.site, self.acme.renew_before)
    }

    /// Installs the store's certificate if it is newer than the one in service, then
    /// tells whether what is in service now is current. Asked of the service, not of
    /// the sync: a copy no newer than the one the manager installed meanwhile is not
    /// installed again, and must not lead to an order either.
    async fn current_from(&self, store: &Store) -> bool {
        shared::sync_site(
            store,
            &self.tls,
            &self.metrics,
            &self.site,
            self.default,
            &self.tls_cfg.state_dir,
        )
        .await;
        !self.due()
    }

    /// Writes the certificate to the state dir (served at the next start without the
    /// CA or the store) and parses it for service.
    fn keep(&self, chain: &str, key: &str) -> Result<Entry, String> {
        let entry = entry_from_pem(chain, key, self.site.names.clone(), "acme")?;
        let (cert_path, key_path) = acme::cert_paths(&self.tls_cfg.state_dir, &self.site.names[0]);
        write_atomic(&key_path, key.as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        write_atomic(&cert_path, chain.as_bytes(), 0o644)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        Ok(entry)
    }
}

enum Done {
    Installed,
    /// The certificate in service became current before the attempt began.
    Current,
    /// Another gateway holds the order lock, or the store has not answered yet.
    Later,
}

/// Refreshes the order lock every third of its life until aborted.
async fn keep_lock(store: Arc<Store>, lock: Lock) {
    loop {
        tokio::time::sleep(LOCK_TTL / 3).await;
        match store.refresh_lock(&lock, LOCK_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    event = "acme_lock_lost",
                    fence = lock.fence(),
                    "another gateway took over the order lock"
                );
                return;
            }
            Err(e) => tracing::warn!(event = "acme_lock_refresh_failed", error = %e),
        }
    }
}
