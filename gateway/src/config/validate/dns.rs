//! Validation of `[dns]`: the primary server that takes RFC 2136 updates for DNS-01,
//! its TSIG key (the secret from the environment) and where propagation is checked.

use std::sync::Arc;

use base64::Engine;

use super::{at, key, valid_dns_name, Validator};
use crate::config::doc::Seg;
use crate::config::schema::DnsSection;
use crate::config::{defaults, Dns, Secret, TsigAlgorithm};

/// `host:port`, or `host` with port 53: what the file may name a DNS server by.
fn server_address(s: &str) -> Option<String> {
    let (host, port) = match s.rsplit_once(':') {
        // `[::1]:53`, `ns1.example.com:5353`
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.starts_with('[')) => {
            (h, p.parse::<u16>().ok().filter(|p| *p > 0)?)
        }
        // A bare IPv6 address, or no port at all.
        _ => (s, 53),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ok = bare.parse::<std::net::IpAddr>().is_ok() || valid_dns_name(bare);
    match bare.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => ok.then(|| format!("[{v6}]:{port}")),
        Err(_) => ok.then(|| format!("{bare}:{port}")),
    }
}

impl Validator<'_> {
    pub(super) fn dns(&mut self, d: Option<DnsSection>) -> Option<Arc<Dns>> {
        let d = d?;
        let b = [key("dns")];
        let server_at = |v: &mut Self, path: &[Seg], s: &str| {
            server_address(s).unwrap_or_else(|| {
                v.err(
                    path,
                    format!("invalid DNS server {s:?}: write \"ns1.example.com\", \"192.0.2.53\" or \"192.0.2.53:5353\""),
                );
                String::new()
            })
        };
        let server = server_at(self, &at(&b, "server"), &d.server);
        let zone = d.zone.trim_end_matches('.').to_ascii_lowercase();
        if !valid_dns_name(&zone) {
            self.err(
                &at(&b, "zone"),
                format!(
                    "invalid zone {:?}: write the zone's apex, e.g. \"example.com\"",
                    d.zone
                ),
            );
        }
        let tsig_key = d.tsig_key.trim_end_matches('.').to_ascii_lowercase();
        if !valid_dns_name(&tsig_key) {
            self.err(
                &at(&b, "tsig_key"),
                format!(
                    "invalid key name {:?}: the name the server's `key` statement gives it, e.g. \"acme-update\"",
                    d.tsig_key
                ),
            );
        }
        let tsig_algorithm = match d
            .tsig_algorithm
            .as_deref()
            .unwrap_or(defaults::DNS_TSIG_ALGORITHM)
            .to_ascii_lowercase()
            .as_str()
        {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                self.err(
                    &at(&b, "tsig_algorithm"),
                    format!("unsupported TSIG algorithm {other:?}: use \"hmac-sha256\", \"hmac-sha384\" or \"hmac-sha512\" (MD5 and SHA-1 are not safe)"),
                );
                TsigAlgorithm::HmacSha256
            }
        };
        let var = &d.tsig_secret_env;
        let tsig_secret = match (self.env)(var) {
            None => {
                self.err(
                    &at(&b, "tsig_secret_env"),
                    format!("the environment variable {var} is not set"),
                );
                Secret::new(Vec::new())
            }
            Some(v) => match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                Ok(k) if !k.is_empty() => Secret::new(k),
                _ => {
                    self.err(
                        &at(&b, "tsig_secret_env"),
                        format!("{var} must hold the key's secret in base64, as `tsig-keygen` prints it"),
                    );
                    Secret::new(Vec::new())
                }
            },
        };
        let check_servers = match &d.check_servers {
            None => vec![server.clone()],
            Some(list) if list.is_empty() => {
                self.err(
                    &at(&b, "check_servers"),
                    "list at least one server, or leave the key out to check the primary",
                );
                Vec::new()
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut p = at(&b, "check_servers");
                    p.push(Seg::Index(i));
                    server_at(self, &p, s)
                })
                .collect(),
        };
        let ttl = self.positive(&at(&b, "ttl"), d.ttl, defaults::DNS_TTL);
        let timeout = self.positive(&at(&b, "timeout"), d.timeout, defaults::DNS_TIMEOUT);
        let propagation_timeout = self.positive(
            &at(&b, "propagation_timeout"),
            d.propagation_timeout,
            defaults::DNS_PROPAGATION_TIMEOUT,
        );
        Some(Arc::new(Dns {
            server,
            zone,
            tsig_key,
            tsig_algorithm,
            tsig_secret,
            check_servers,
            ttl,
            timeout,
            propagation_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::server_address;

    #[test]
    fn server_addresses() {
        assert_eq!(
            server_address("ns1.example.com").as_deref(),
            Some("ns1.example.com:53")
        );
        assert_eq!(
            server_address("192.0.2.1:5353").as_deref(),
            Some("192.0.2.1:5353")
        );
        assert_eq!(server_address("[::1]:5353").as_deref(), Some("[::1]:5353"));
        assert_eq!(server_address("::1").as_deref(), Some("[::1]:53"));
        assert_eq!(server_address("ns1.example.com:0"), None);
        assert_eq!(server_address("bad host"), None);
        assert_eq!(server_address(""), None);
    }
}
