//! Certificates and challenges from the other gateways of a deployment: a site's
//! certificate read from the store (installed when it is newer than the one in
//! service, and kept on disk for the next start), and the store's events applied as
//! they come: a new certificate, a challenge to answer or to withdraw.

use std::path::Path;
use std::sync::Arc;

use super::manager::install;
use super::store::{entry_from_pem, write_atomic};
use super::{acme, TlsState};
use crate::config::{CertSource, Config, Site};
use crate::metrics::Metrics;
use crate::store::{Event, Store};

/// Installs the store's certificate for `site` if it covers the site's names and
/// expires later than the one in service. True when one was installed.
pub async fn sync_site(
    store: &Store,
    tls: &TlsState,
    metrics: &Metrics,
    site: &Site,
    default: bool,
    state_dir: &Path,
) -> bool {
    let primary = &site.names[0];
    let stored = match store.load_cert(primary).await {
        Ok(Some(c)) => c,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(event = "certificate_store_read_failed", site = %primary, error = %e);
            return false;
        }
    };
    if stored.names != site.names {
        // Written for another set of names (the config changed): not this site's.
        return false;
    }
    let entry = match entry_from_pem(&stored.chain, &stored.key, site.names.clone(), "acme") {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(event = "certificate_store_read_failed", site = %primary, error = %e);
            return false;
        }
    };
    let newer = tls
        .store
        .get(primary)
        .is_none_or(|cur| cur.source != "acme" || entry.not_after > cur.not_after);
    if !newer || entry.not_after <= super::manager::now_secs() {
        return false;
    }
    // Kept on disk as well, so a restart serves it before the store answers.
    let (cert_path, key_path) = acme::cert_paths(state_dir, primary);
    let written = write_atomic(&key_path, stored.key.as_bytes(), 0o600)
        .and_then(|()| write_atomic(&cert_path, stored.chain.as_bytes(), 0o644));
    if let Err(e) = written {
        tracing::warn!(event = "certificate_cache_failed", site = %primary, error = %e);
    }
    tracing::info!(event = "certificate_from_store", site = %primary, serial = %entry.serial);
    install(tls, metrics, entry, default);
    true
}

/// Every ACME site of `config`, synced from the store.
pub async fn sync_all(store: &Store, tls: &TlsState, metrics: &Metrics, config: &Config) {
    for (i, site) in config.sites.iter().enumerate() {
        if matches!(site.certificate, CertSource::Acme(_)) {
            sync_site(store, tls, metrics, site, i == 0, &config.tls.state_dir).await;
        }
    }
}

/// Applies one store event.
pub async fn apply(
    event: Event,
    store: &Arc<Store>,
    tls: &TlsState,
    metrics: &Metrics,
    config: &Config,
) {
    match event {
        Event::Cert(primary) => {
            let site = config
                .sites
                .iter()
                .enumerate()
                .find(|(_, s)| s.names[0] == primary);
            if let Some((i, site)) = site {
                sync_site(store, tls, metrics, site, i == 0, &config.tls.state_dir).await;
            }
        }
        Event::Http01 { token, answer } => {
            tls.challenges.insert(token, answer);
        }
        Event::Http01Done(token) => {
            tls.challenges.remove(&token);
        }
        Event::Alpn { name, digest } => {
            if let Err(e) = tls.alpn.insert(&name, &digest) {
                tracing::warn!(event = "alpn_challenge_failed", name = %name, error = %e);
            }
        }
        Event::AlpnDone(name) => tls.alpn.remove(&name),
        Event::Resync => sync_all(store, tls, metrics, config).await,
    }
}
