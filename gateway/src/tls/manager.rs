//! Keeps every site's certificate in the store: files and the local CA at start-up and
//! on reload; ACME orders in the background for missing or expiring certificates, with
//! exponential backoff and jitter on failure. The old certificate keeps serving until
//! its replacement is installed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use rand::Rng;

use super::internal::{self, LocalCa, LEAF_LIFETIME};
use super::store::{entry_from_pem, write_atomic, Entry};
use super::{acme, TlsState};
use crate::config::{CertSource, Config, Site};
use crate::metrics::Metrics;

fn now_secs() -> i64 {
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

fn install(tls: &TlsState, metrics: &Metrics, entry: Entry, default: bool) {
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
}

/// Installs what needs no network: files, internal certificates, and ACME certificates
/// persisted by an earlier run (served at once, without contacting the CA). Returns
/// problems, each naming its site.
pub fn install_local(config: &Config, tls: &TlsState, metrics: &Metrics) -> Vec<String> {
    let claimed: Vec<String> = config
        .sites
        .iter()
        .flat_map(|s| s.names.iter().cloned())
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
            CertSource::Acme(_) => {
                let (cert, key) = acme::cert_paths(&config.tls.state_dir, &site.names[0]);
                match (
                    std::fs::read_to_string(&cert),
                    std::fs::read_to_string(&key),
                ) {
                    (Ok(c), Ok(k)) => entry_from_pem(&c, &k, names, "acme")
                        .map(|e| (e.not_after > now_secs()).then_some(e)),
                    _ => Ok(None),
                }
            }
        };
        match result {
            Ok(Some(entry)) => install(tls, metrics, entry, default),
            Ok(None) => {}
            Err(e) => problems.push(format!("sites[{i}] ({}): {e}", site.names.join(", "))),
        }
    }
    problems
}

/// Per-site ACME state: when the next attempt may start, and how many failed in a row.
struct Run {
    next_attempt: Instant,
    failures: u32,
    busy: Arc<AtomicBool>,
}

/// The config in force now (a reload replaces it).
type ConfigSource = Box<dyn Fn() -> Arc<Config> + Send + Sync>;

pub struct CertManager {
    config: ConfigSource,
    tls: Arc<TlsState>,
    metrics: Arc<Metrics>,
}

impl CertManager {
    pub fn new(
        config: impl Fn() -> Arc<Config> + Send + Sync + 'static,
        tls: Arc<TlsState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        CertManager {
            config: Box::new(config),
            tls,
            metrics,
        }
    }

    fn due(&self, site: &Site, renew: Option<Duration>) -> bool {
        match self.tls.store.get(&site.names[0]) {
            None => true,
            Some(e) => e.source != "acme" || now_secs() >= e.not_after - renew_before(&e, renew),
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

/// A leaf for `site` from the local CA, unless the one in service already covers
/// exactly its names and is not in the last third of its life (`None`: keep it). A
/// reload thus does not mint a new certificate for every internal site, and neither
/// does a restart: the leaf is kept in the state dir next to the CA and served again
/// while it is still good for its names and signed by this CA.
fn internal_entry(tls: &TlsState, config: &Config, site: &Site) -> Result<Option<Entry>, String> {
    let fresh = |e: &Entry| {
        e.source == "internal"
            && e.names == site.names
            && now_secs() < e.not_after - LEAF_LIFETIME.as_secs() as i64 / 3
    };
    if tls.store.get(&site.names[0]).is_some_and(|e| fresh(&e)) {
        return Ok(None);
    }
    let ca = tls.local_ca(&config.tls.state_dir)?;
    let (cert_path, key_path) = internal::leaf_paths(&config.tls.state_dir, &site.names[0]);
    if let (Ok(chain), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        let kept = entry_from_pem(&chain, &key, site.names.clone(), "internal")
            .ok()
            .filter(|e| fresh(e) && chain.ends_with(&ca.cert_pem) && covers(&chain, &site.names));
        if kept.is_some() {
            return Ok(kept);
        }
    }
    let (chain, key) = ca.issue(&site.names)?;
    write_atomic(&key_path, key.as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    write_atomic(&cert_path, chain.as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    entry_from_pem(&chain, &key, site.names.clone(), "internal").map(Some)
}

/// Whether the first certificate of `chain_pem` names exactly `names` (its SANs).
fn covers(chain_pem: &str, names: &[String]) -> bool {
    let Some(Ok(der)) = rustls_pemfile::certs(&mut chain_pem.as_bytes()).next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let mut got: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|o| std::net::IpAddr::from(o).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|o| std::net::IpAddr::from(o).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut want = names.to_vec();
    got.sort();
    want.sort();
    got == want
}

#[async_trait]
impl BackgroundService for CertManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut runs: HashMap<String, Arc<Mutex<Run>>> = HashMap::new();
        let mut seen: usize = 0;
        loop {
            let config = &(self.config)();
            let id = Arc::as_ptr(config) as usize;
            if id != seen {
                seen = id;
                for p in install_local(config, &self.tls, &self.metrics) {
                    tracing::error!(event = "certificate_load_failed", error = %p);
                }
            }
            self.renew_internal(config);
            for (i, site) in config.sites.iter().enumerate() {
                let CertSource::Acme(acme_cfg) = &site.certificate else {
                    continue;
                };
                let key = site.names.join(",");
                let run = runs
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(Mutex::new(Run {
                            next_attempt: Instant::now(),
                            failures: 0,
                            busy: Arc::default(),
                        }))
                    })
                    .clone();
                let busy = {
                    let r = run.lock().unwrap_or_else(|p| p.into_inner());
                    if Instant::now() < r.next_attempt
                        || r.busy.load(Ordering::Acquire)
                        || !self.due(site, acme_cfg.renew_before)
                    {
                        continue;
                    }
                    Arc::clone(&r.busy)
                };
                busy.store(true, Ordering::Release);
                let (tls, metrics, acme_cfg, names) = (
                    self.tls.clone(),
                    self.metrics.clone(),
                    acme_cfg.clone(),
                    site.names.clone(),
                );
                let tls_cfg = config.tls.clone();
                tokio::spawn(async move {
                    tracing::info!(event = "acme_order_started", names = ?names, directory = %acme_cfg.directory);
                    let result = acme::order(&acme_cfg, &names, &tls_cfg.state_dir, &tls)
                        .await
                        .and_then(|(chain, key)| {
                            let entry = entry_from_pem(&chain, &key, names.clone(), "acme")?;
                            let (cert_path, key_path) =
                                acme::cert_paths(&tls_cfg.state_dir, &names[0]);
                            write_atomic(&key_path, key.as_bytes(), 0o600)
                                .map_err(|e| format!("{}: {e}", key_path.display()))?;
                            write_atomic(&cert_path, chain.as_bytes(), 0o644)
                                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
                            Ok(entry)
                        });
                    let mut r = run.lock().unwrap_or_else(|p| p.into_inner());
                    match result {
                        Ok(entry) => {
                            metrics.acme_orders.with_label_values(&["ok"]).inc();
                            tracing::info!(event = "acme_order_succeeded", names = ?names, serial = %entry.serial, not_after = entry.not_after);
                            install(&tls, &metrics, entry, i == 0);
                            r.failures = 0;
                            r.next_attempt = Instant::now();
                        }
                        Err(e) => {
                            metrics.acme_orders.with_label_values(&["error"]).inc();
                            r.failures += 1;
                            let base = tls_cfg
                                .retry_min
                                .saturating_mul(1 << r.failures.min(16).saturating_sub(1))
                                .min(tls_cfg.retry_max);
                            let wait = base.mul_f64(rand::rng().random_range(0.8..1.2));
                            r.next_attempt = Instant::now() + wait;
                            tracing::warn!(
                                event = "acme_order_failed",
                                names = ?names,
                                error = %e,
                                failures = r.failures,
                                retry_in_secs = wait.as_secs_f64(),
                                "certificate order failed; the current certificate (if any) keeps serving"
                            );
                        }
                    }
                    r.busy.store(false, Ordering::Release);
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
        }
    }
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
