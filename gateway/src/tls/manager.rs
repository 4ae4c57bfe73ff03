//! Keeps every site's certificate in service: files and the local CA at start-up and
//! on reload; ACME orders in the background for missing or expiring certificates
//! (`renew.rs`: backoff, and with a store the cluster's order lock); with a store, the
//! other gateways' certificates and challenges as their events arrive (`shared.rs`).
//! The old certificate keeps serving until its replacement is installed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::internal::{internal_entry, LocalCa};
use super::renew::{Attempt, Run};
use super::store::{entry_from_pem, Entry};
use super::{acme, shared, ConfigSource, TlsState};
use crate::config::{CertSource, Config, OnDemand, Site};
use crate::metrics::Metrics;
use crate::store::Store;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds before expiry at which `entry` is renewed.
fn renew_before(entry: &Entry, configured: Option<Duration>) -> i64 {
    let lifetime = (entry.not_after - entry.not_before).max(1);
    match configured {
        Some(d) => d.as_secs() as i64,
        None => (30 * 86400).min(lifetime / 3),
    }
}

/// When `entry`, serving `site`, is due to be replaced (Unix seconds): ACME within its
/// renewal window, the local CA's with a third of its life left; files never.
pub fn next_renewal(entry: &Entry, site: &Site) -> Option<i64> {
    match &site.certificate {
        CertSource::Acme(a) => Some(entry.not_after - renew_before(entry, a.renew_before)),
        CertSource::Internal => {
            Some(entry.not_after - super::internal::LEAF_LIFETIME.as_secs() as i64 / 3)
        }
        CertSource::Files { .. } => None,
    }
}

pub fn install(tls: &TlsState, metrics: &Metrics, entry: Entry, default: bool) {
    for n in &entry.names {
        metrics
            .tls_cert_expiry
            .with_label_values(&[n, entry.source])
            .set(entry.not_after as f64);
    }
    tracing::info!(
        event = "certificate_installed",
        names = ?entry.names,
        source = entry.source,
        serial = %entry.serial,
        not_after = entry.not_after,
        "certificate in service"
    );
    tls.store.install(entry, default);
    // Handshakes waiting for an on-demand name look again.
    tls.on_demand.settled.notify_waiters();
}

/// Installs what needs no network: files, internal certificates, and ACME certificates
/// persisted by an earlier run (served at once, without contacting the CA). Returns
/// problems, each naming its site.
pub fn install_local(config: &Config, tls: &TlsState, metrics: &Metrics) -> Vec<String> {
    // On-demand names stay in service across reloads, as long as a site issues on demand.
    let on_demand = config.on_demand_site().is_some();
    let claimed: Vec<String> = config
        .sites
        .iter()
        .flat_map(|s| s.names.iter().cloned())
        .chain(
            on_demand
                .then(|| tls.on_demand.admitted())
                .into_iter()
                .flatten(),
        )
        .collect();
    tls.store.set_claimed(&claimed);
    let mut problems = Vec::new();
    for (i, site) in config.sites.iter().enumerate() {
        let default = i == 0;
        let names = site.names.clone();
        let result = match &site.certificate {
            CertSource::Files { cert, key } => std::fs::read_to_string(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))
                .and_then(|c| {
                    std::fs::read_to_string(key)
                        .map_err(|e| format!("{}: {e}", key.display()))
                        .map(|k| (c, k))
                })
                .and_then(|(c, k)| entry_from_pem(&c, &k, names, "files"))
                .map(Some),
            CertSource::Internal => internal_entry(tls, config, site),
            CertSource::Acme(_) => acme::load_kept(&config.tls.state_dir, &names),
        };
        match result {
            Ok(Some(entry)) => install(tls, metrics, entry, default),
            Ok(None) => {}
            Err(e) => problems.push(format!("sites[{i}] ({}): {e}", site.names.join(", "))),
        }
    }
    problems
}

pub struct CertManager {
    config: ConfigSource,
    tls: Arc<TlsState>,
    metrics: Arc<Metrics>,
    /// With `[store]`: certificates, the account, order locks and challenges shared
    /// with the other gateways (`shared.rs`, `renew.rs`).
    store: Option<Arc<Store>>,
}

/// Whether `site` needs a certificate now: none in service, or one within its renewal
/// window.
pub fn due(tls: &TlsState, site: &Site, renew: Option<Duration>) -> bool {
    match tls.store.get(&site.names[0]) {
        None => true,
        Some(e) => e.source != "acme" || now_secs() >= e.not_after - renew_before(&e, renew),
    }
}

/// How often every ACME site is read from the store again, besides events (which a
/// reconnecting listener may have missed: it asks for a resync itself).
const SYNC_EVERY: Duration = Duration::from_secs(60);

impl CertManager {
    pub fn new(
        config: impl Fn() -> Arc<Config> + Send + Sync + 'static,
        tls: Arc<TlsState>,
        metrics: Arc<Metrics>,
        store: Option<Arc<Store>>,
    ) -> Self {
        CertManager {
            config: Box::new(config),
            tls,
            metrics,
            store,
        }
    }

    fn renew_internal(&self, config: &Config) {
        for (i, site) in config.sites.iter().enumerate() {
            if site.certificate != CertSource::Internal {
                continue;
            }
            match internal_entry(&self.tls, config, site) {
                Ok(Some(e)) => install(&self.tls, &self.metrics, e, i == 0),
                Ok(None) => {}
                Err(e) => tracing::error!(event = "internal_certificate_failed", error = %e),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut runs: HashMap<String, Arc<Mutex<Run>>> = HashMap::new();
        let mut seen: usize = 0;
        let mut events = self.store.as_ref().map(|s| s.events());
        let mut last_sync: Option<Instant> = None;
        loop {
            let config = (self.config)();
            let id = Arc::as_ptr(&config) as usize;
            if id != seen {
                seen = id;
                for p in install_local(&config, &self.tls, &self.metrics) {
                    tracing::error!(event = "certificate_load_failed", error = %p);
                }
            }
            self.renew_internal(&config);
            let sync_due = last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY);
            if let (Some(store), true) = (&self.store, sync_due) {
                last_sync = Some(Instant::now());
                shared::sync_all(store, &self.tls, &self.metrics, &config).await;
            }
            for (i, site, on_demand) in with_on_demand(&config, &self.tls) {
                let CertSource::Acme(acme_cfg) = &site.certificate else {
                    continue;
                };
                let run = runs
                    .entry(site.names.join(","))
                    .or_insert_with(Run::new)
                    .clone();
                let busy = {
                    let r = run.lock().unwrap_or_else(|p| p.into_inner());
                    if Instant::now() < r.next_attempt
                        || r.busy.load(Ordering::Acquire)
                        || !due(&self.tls, &site, acme_cfg.renew_before)
                    {
                        continue;
                    }
                    Arc::clone(&r.busy)
                };
                busy.store(true, Ordering::Release);
                tokio::spawn(
                    Attempt {
                        tls: Arc::clone(&self.tls),
                        metrics: Arc::clone(&self.metrics),
                        store: self.store.clone(),
                        acme: acme_cfg.clone(),
                        site: site.into_owned(),
                        tls_cfg: config.tls.clone(),
                        default: i == 0,
                        on_demand: on_demand.cloned(),
                        run,
                    }
                    .go(),
                );
            }
            let event = async {
                match events.as_mut() {
                    Some(rx) => rx.recv().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.tls.on_demand.wake.notified() => {}
                Some(e) = event => {
                    if let Some(store) = &self.store {
                        shared::apply(e, store, &self.tls, &self.metrics, &config).await;
                    }
                }
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
        }
    }
}

/// Every site of the file (by index, borrowed), then a site of one name for each name
/// admitted on demand, with the ACME settings of the site that issues on demand (index
/// `usize::MAX`: never the default certificate) and its policy, so renewals ask again.
fn with_on_demand<'a>(
    config: &'a Config,
    tls: &TlsState,
) -> Vec<(usize, Cow<'a, Site>, Option<&'a OnDemand>)> {
    let mut all: Vec<_> = config
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| (i, Cow::Borrowed(s), None))
        .collect();
    if let Some((_, issuer, policy)) = config.on_demand_site() {
        for name in tls.on_demand.admitted() {
            let site = Site {
                names: vec![name],
                on_demand: None,
                ..issuer.clone()
            };
            all.push((usize::MAX, Cow::Owned(site), Some(policy)));
        }
    }
    all
}

/// The local CA, created once and shared.
impl TlsState {
    pub fn local_ca(&self, state_dir: &std::path::Path) -> Result<Arc<LocalCa>, String> {
        let mut slot = self.local_ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ca) = slot.as_ref() {
            return Ok(Arc::clone(ca));
        }
        let ca = Arc::new(LocalCa::load_or_create(&state_dir.join("internal"))?);
        *slot = Some(Arc::clone(&ca));
        Ok(ca)
    }
}
