//! The local CA for `certificate = "internal"` (like Caddy's `tls internal`): one CA
//! key and certificate kept in `<state_dir>/internal/`, and short-lived leaf
//! certificates issued from it (kept in `<state_dir>/internal/sites/NAME/`, so a
//! restart serves the same leaf). Trust `ca.pem` once and every local name works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::store::{entry_from_pem, write_atomic, Entry};
use super::TlsState;
use crate::config::{Config, Site};

/// How long an internal leaf certificate lives (renewed after two thirds).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 86400);

/// Where the leaf of the site whose first name is `primary` is kept.
pub fn leaf_paths(state_dir: &Path, primary: &str) -> (PathBuf, PathBuf) {
    let dir = state_dir
        .join("internal")
        .join("sites")
        .join(primary.replace('*', "_wildcard"));
    (dir.join("cert.pem"), dir.join("key.pem"))
}

pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_path: PathBuf,
}

/// The CA's identity; the same every time, so a reloaded key signs as the same issuer.
fn ca_params() -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Gateway Local CA");
    dn.push(DnType::OrganizationName, "gateway (internal)");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

impl LocalCa {
    /// Loads the CA from `dir`, or creates it there on first use.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, String> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            let cert_pem = std::fs::read_to_string(&cert_path)
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            let key =
                KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
            return Ok(LocalCa {
                issuer: Issuer::new(ca_params()?, key),
                cert_pem,
                cert_path,
            });
        }
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let params = ca_params()?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        tracing::info!(
            event = "internal_ca_created",
            ca = %cert_path.display(),
            "created a local CA; trust it once to use the internal certificates without warnings (see docs/tls.md)"
        );
        Ok(LocalCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            cert_path,
        })
    }

    /// A leaf certificate for `names`: (chain PEM, key PEM).
    pub fn issue(&self, names: &[String]) -> Result<(String, String), String> {
        let mut p = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        p.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::seconds(LEAF_LIFETIME.as_secs() as i64);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }
}

/// A leaf for `site` from the local CA, unless the one in service already covers
/// exactly its names and is not in the last third of its life (`None`: keep it). A
/// reload thus does not mint a new certificate for every internal site, and neither
/// does a restart: the leaf is kept in the state dir next to the CA and served again
/// while it is still good for its names and signed by this CA.
pub fn internal_entry(
    tls: &TlsState,
    config: &Config,
    site: &Site,
) -> Result<Option<Entry>, String> {
    let fresh = |e: &Entry| {
        e.source == "internal"
            && e.names == site.names
            && super::manager::now_secs() < e.not_after - LEAF_LIFETIME.as_secs() as i64 / 3
    };
    if tls.store.get(&site.names[0]).is_some_and(|e| fresh(&e)) {
        return Ok(None);
    }
    let ca = tls.local_ca(&config.tls.state_dir)?;
    let (cert_path, key_path) = leaf_paths(&config.tls.state_dir, &site.names[0]);
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
