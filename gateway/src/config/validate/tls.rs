//! Validation of `[tls]` and `[[sites]]`: certificate sources, redirects, HSTS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{at, key, valid_dns_name, Validator};
use crate::config::defaults;
use crate::config::doc::Seg;
use crate::config::schema::{self, CertSourceKind, RedirectKind};
use crate::config::{Acme, CertSource, Challenge, Dns, Listener, Site, Tls};

const YEAR: Duration = Duration::from_secs(365 * 86400);

/// Relative paths in the file are relative to the file's directory, so
/// `gateway check --config /etc/gateway/gateway.toml` sees what `run` sees.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Validator<'_> {
    pub(super) fn tls(&mut self, t: &schema::TlsSection, base: &Path) -> Tls {
        let b = [key("tls")];
        Tls {
            state_dir: resolve(base, t.state_dir.as_deref().unwrap_or(defaults::STATE_DIR)),

            retry_min: self.positive(&at(&b, "retry_min"), t.retry_min, defaults::RETRY_MIN),
            retry_max: self.positive(&at(&b, "retry_max"), t.retry_max, defaults::RETRY_MAX),
        }
    }

    pub(super) fn sites(
        &mut self,
        sites: Vec<schema::SiteSection>,
        base: &Path,
        listeners: &[Listener],
        dns: Option<&Arc<Dns>>,
        warnings: &mut Vec<String>,
    ) -> Vec<Site> {
        let has_plain = listeners.iter().any(|l| !l.tls);
        let has_tls = listeners.iter().any(|l| l.tls);
        if has_tls && sites.is_empty() {
            self.err(
                &[key("listeners")],
                "a TLS listener needs at least one [[sites]] entry with names and a certificate",
            );
        }
        if !has_tls && !sites.is_empty() {
            warnings.push(
                "[[sites]] are configured but no listener has `tls = true`: no HTTPS is served"
                    .into(),
            );
        }
        let mut seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        let mut on_demand_seen = false;
        for (i, s) in sites.into_iter().enumerate() {
            let b = vec![key("sites"), Seg::Index(i)];
            let mut names = Vec::new();
            if s.names.is_empty() {
                self.err(
                    &at(&b, "names"),
                    "list at least one name, e.g. [\"example.com\", \"www.example.com\"]",
                );
            }
            for (j, n) in s.names.iter().enumerate() {
                let mut p = at(&b, "names");
                p.push(Seg::Index(j));
                let lower = n.to_ascii_lowercase();
                let plain = lower.strip_prefix("*.").unwrap_or(&lower);
                if !valid_dns_name(plain) && lower.parse::<std::net::IpAddr>().is_err() {
                    self.err(
                        &p,
                        format!("invalid name {n:?}: write \"example.com\" or \"*.example.com\""),
                    );
                } else if seen.contains(&lower) {
                    self.err(&p, format!("name {n:?} belongs to another site already"));
                } else {
                    seen.push(lower.clone());
                    names.push(lower);
                }
            }
            let certificate = match s.certificate {
                CertSourceKind::Internal => CertSource::Internal,
                CertSourceKind::Files => match (&s.cert_file, &s.key_file) {
                    (Some(c), Some(k)) => {
                        let (cert, key_path) = (resolve(base, c), resolve(base, k));
                        for (field, path) in [("cert_file", &cert), ("key_file", &key_path)] {
                            if let Err(e) = std::fs::metadata(path) {
                                self.err(
                                    &at(&b, field),
                                    format!("cannot read {}: {e}", path.display()),
                                );
                            }
                        }
                        CertSource::Files {
                            cert,
                            key: key_path,
                        }
                    }
                    _ => {
                        self.err(
                            &at(&b, "certificate"),
                            "certificate = \"files\" needs cert_file and key_file (PEM)",
                        );
                        CertSource::Internal
                    }
                },
                CertSourceKind::Acme => match &s.acme {
                    Some(a) => {
                        let listeners = (has_plain, has_tls);
                        self.acme(&at(&b, "acme"), a, base, &names, listeners, dns)
                    }
                    None => {
                        self.err(&at(&b, "certificate"), "certificate = \"acme\" needs a [sites.acme] table with at least `directory`");
                        CertSource::Internal
                    }
                },
            };
            if s.certificate != CertSourceKind::Files
                && (s.cert_file.is_some() || s.key_file.is_some())
            {
                self.err(
                    &at(&b, "cert_file"),
                    "cert_file/key_file are only used with certificate = \"files\"",
                );
            }
            if s.certificate != CertSourceKind::Acme && s.acme.is_some() {
                // Allowed, so one file can switch with `certificate = "${CERTIFICATE:-internal}"`.
                warnings.push(format!(
                    "sites[{i}]: [sites.acme] is ignored while certificate is not \"acme\""
                ));
            }
            let redirect = match s.redirect.unwrap_or(RedirectKind::Permanent308) {
                RedirectKind::Permanent308 => Some(308),
                RedirectKind::Moved301 => Some(301),
                RedirectKind::Off => None,
            };
            let hsts = s.hsts.unwrap_or(true).then(|| {
                let max_age = s.hsts_max_age.map_or(defaults::HSTS_MAX_AGE, |d| d.0);
                let sub = s.hsts_include_subdomains.unwrap_or(false);
                let preload = s.hsts_preload.unwrap_or(false);
                if preload && (!sub || max_age < YEAR) {
                    warnings.push(format!(
                        "sites[{i}]: hsts_preload needs hsts_include_subdomains = true and hsts_max_age of at least one year, or browsers' preload lists refuse the site"
                    ));
                }
                let mut v = format!("max-age={}", max_age.as_secs());
                if sub {
                    v.push_str("; includeSubDomains");
                }
                if preload {
                    v.push_str("; preload");
                }
                v
            });
            let on_demand = self.on_demand(&b, s.on_demand, &certificate, &mut on_demand_seen);
            out.push(Site {
                names,
                certificate,
                on_demand,
                redirect,
                hsts,
            });
        }
        out
    }

    fn acme(
        &mut self,
        b: &[Seg],
        a: &schema::AcmeSection,
        base: &Path,
        names: &[String],
        (has_plain, has_tls): (bool, bool),
        dns: Option<&Arc<Dns>>,
    ) -> CertSource {
        if !a.directory.starts_with("https://") {
            self.err(&at(b, "directory"), "the ACME directory must be an https:// URL, e.g. https://acme-staging-v02.api.letsencrypt.org/directory");
        }
        let challenge = match a.challenge.as_deref().unwrap_or("http-01") {
            "http-01" => {
                if !has_plain {
                    self.err(&at(b, "challenge"), "HTTP-01 needs a plain listener (port 80) to answer the CA: add a [[listeners]] entry without tls, or use challenge = \"tls-alpn-01\"");
                }
                Challenge::Http01
            }
            "tls-alpn-01" => {
                if !has_tls {
                    self.err(&at(b, "challenge"), "TLS-ALPN-01 needs an HTTPS listener (port 443) to answer the CA: add a [[listeners]] entry with tls = true");
                }
                Challenge::TlsAlpn01
            }
            "dns-01" => match dns {
                Some(d) => {
                    for n in names {
                        let plain = n.strip_prefix("*.").unwrap_or(n);
                        if plain != d.zone && !plain.ends_with(&format!(".{}", d.zone)) {
                            self.err(b, format!("{n} is not in the zone {} that [dns] updates: DNS-01 can only prove names of that zone", d.zone));
                        }
                    }
                    Challenge::Dns01(Arc::clone(d))
                }
                None => {
                    self.err(&at(b, "challenge"), "DNS-01 needs a [dns] section naming the server that takes RFC 2136 updates for the zone, and its TSIG key");
                    Challenge::Http01
                }
            },
            other => {
                self.err(
                    &at(b, "challenge"),
                    format!("unknown challenge {other:?}: use \"http-01\", \"tls-alpn-01\" or \"dns-01\""),
                );
                Challenge::Http01
            }
        };
        for n in names {
            if n.starts_with("*.") && !matches!(challenge, Challenge::Dns01(_)) {
                self.err(b, format!("{n}: wildcard names need the DNS-01 challenge: set challenge = \"dns-01\" and a [dns] section"));
            } else if n == "localhost"
                || n.ends_with(".localhost")
                || n.parse::<std::net::IpAddr>().is_ok()
            {
                self.err(b, format!("{n}: a CA cannot validate this name; use certificate = \"internal\" for local names"));
            }
        }
        if let Some(e) = &a.email {
            if !e.contains('@') || e.contains(char::is_whitespace) {
                self.err(&at(b, "email"), format!("invalid email {e:?}"));
            }
        }
        let ca_root = a.ca_root.as_deref().map(|p| resolve(base, p));
        if let Some(p) = &ca_root {
            if let Err(e) = std::fs::metadata(p) {
                self.err(
                    &at(b, "ca_root"),
                    format!("cannot read {}: {e}", p.display()),
                );
            }
        }
        let renew_before = self.positive_opt(&at(b, "renew_before"), a.renew_before);
        CertSource::Acme(Acme {
            directory: a.directory.clone(),
            email: a.email.clone(),
            ca_root,
            renew_before,
            challenge,
        })
    }
}
