//! The certificate store behind the TLS listeners: a rustls `ResolvesServerCert` over an
//! `ArcSwap`'d table, so certificates are chosen by SNI (exact name, then wildcard, then
//! the default) and replaced (renewals) with no restart and no dropped connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One installed certificate.
#[derive(Debug)]
pub struct Entry {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
    pub source: &'static str,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub serial: String,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Arc<Entry>>,
    /// `.example.com` -> entry for `*.example.com`.
    wildcard: HashMap<String, Arc<Entry>>,
    default: Option<Arc<Entry>>,
    /// Names a site claims: an SNI for one of these without a certificate yet fails the
    /// handshake instead of getting the default certificate.
    claimed: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct CertStore {
    table: ArcSwap<Table>,
    /// Serialises writers (installs are rare; readers never wait).
    write: std::sync::Mutex<()>,
}

impl CertStore {
    /// Names every configured site claims, in config order (the first site's certificate
    /// is the default for clients without SNI or with an unknown name).
    pub fn set_claimed(&self, names: &[String]) {
        self.update(|t| {
            t.claimed = names.iter().cloned().collect();
            t.exact.retain(|n, _| names.contains(n));
            t.wildcard
                .retain(|suffix, _| names.contains(&format!("*{suffix}")));
            if let Some(d) = &t.default {
                if !d.names.iter().any(|n| names.contains(n)) {
                    t.default = None;
                }
            }
        });
    }

    /// Serves `entry` for its names from now on.
    pub fn install(&self, entry: Entry, default: bool) {
        let entry = Arc::new(entry);
        self.update(|t| {
            for n in &entry.names {
                match n.strip_prefix('*') {
                    Some(suffix) => t.wildcard.insert(suffix.to_owned(), Arc::clone(&entry)),
                    None => t.exact.insert(n.clone(), Arc::clone(&entry)),
                };
            }
            if default || t.default.is_none() {
                t.default = Some(Arc::clone(&entry));
            }
        });
    }

    /// Stops serving `name` (exactly that name; a name issued on demand that the app
    /// no longer allows).
    pub fn remove(&self, name: &str) {
        self.update(|t| {
            if let Some(e) = t.exact.remove(name) {
                if t.default.as_ref().is_some_and(|d| Arc::ptr_eq(d, &e)) {
                    t.default = None;
                }
            }
        });
    }

    /// The entry currently served for `name` (exact, then wildcard).
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        let t = self.table.load();
        lookup(&t, name).cloned()
    }

    /// Whether `name` (lowercase) is the file's business: a certificate is served for
    /// it, or a configured site claims it (its certificate may still be on its way).
    pub fn covers(&self, name: &str) -> bool {
        let t = self.table.load();
        lookup(&t, name).is_some() || claimed(&t, name)
    }

    /// Every installed entry, once each.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let t = self.table.load();
        let mut out: Vec<Arc<Entry>> = Vec::new();
        for e in t.exact.values().chain(t.wildcard.values()) {
            if !out.iter().any(|x| Arc::ptr_eq(x, e)) {
                out.push(Arc::clone(e));
            }
        }
        out
    }

    fn update(&self, f: impl FnOnce(&mut Table)) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.table.load();
        let mut next = Table {
            exact: cur.exact.clone(),
            wildcard: cur.wildcard.clone(),
            default: cur.default.clone(),
            claimed: cur.claimed.clone(),
        };
        f(&mut next);
        self.table.store(Arc::new(next));
    }
}

fn lookup<'a>(t: &'a Table, name: &str) -> Option<&'a Arc<Entry>> {
    if let Some(e) = t.exact.get(name) {
        return Some(e);
    }
    let (_, parent) = name.split_once('.')?;
    t.wildcard.get(&format!(".{parent}"))
}

/// Whether a configured site claims `name`, exactly or by its wildcard.
fn claimed(t: &Table, name: &str) -> bool {
    t.claimed.contains(name)
        || name
            .split_once('.')
            .is_some_and(|(_, p)| t.claimed.contains(&format!("*.{p}")))
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let t = self.table.load();
        let Some(sni) = hello.server_name() else {
            return t.default.as_ref().map(|e| Arc::clone(&e.key));
        };
        let sni = sni.to_ascii_lowercase();
        if let Some(e) = lookup(&t, &sni) {
            return Some(Arc::clone(&e.key));
        }
        if claimed(&t, &sni) {
            // A configured site without its certificate yet: fail this name only.
            return None;
        }
        t.default.as_ref().map(|e| Arc::clone(&e.key))
    }
}

/// Parses a PEM chain and key into a servable entry.
pub fn entry_from_pem(
    chain_pem: &str,
    key_pem: &str,
    names: Vec<String>,
    source: &'static str,
) -> Result<Entry, String> {
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid certificate PEM: {e}"))?;
    let first = certs.first().ok_or("no certificate in the PEM file")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| format!("invalid key PEM: {e}"))?
        .ok_or("no private key in the PEM file")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| format!("invalid certificate: {e}"))?;
    let validity = parsed.validity();
    Ok(Entry {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        serial: parsed.raw_serial_as_string(),
        key: Arc::new(CertifiedKey::new(certs, signing)),
        names,
        source,
    })
}

/// HTTP-01 tokens being answered right now: token -> key authorization.
pub type Challenges = dashmap::DashMap<String, String>;

/// Writes a file atomically (temp file + rename), with `mode` (0600 for keys), so a crash
/// never leaves half a certificate behind.
pub fn write_atomic(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
