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

use super::store::write_atomic;

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
