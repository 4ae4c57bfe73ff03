//! `[pools.*]`: replica addresses (checked, and never one of the gateway's own
//! listeners), timeouts, retries and the active health check.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::{key, valid_dns_name, valid_name, Validator};
use crate::config::doc::Seg;
use crate::config::schema;
use crate::config::{defaults, Health, Listener, Pool};

impl Validator<'_> {
    pub(super) fn pools(
        &mut self,
        pools: BTreeMap<String, schema::PoolSection>,
        listeners: &[Listener],
    ) -> Vec<Pool> {
        let mut out = Vec::new();
        for (name, p) in pools {
            let base = [key("pools"), key(&name)];
            let at = |k: &str| [base[0].clone(), base[1].clone(), key(k)];
            if !valid_name(&name) {
                self.err(
                    &base,
                    "pool names may use letters, digits, '-' and '_' only",
                );
            }
            if p.replicas.is_empty() {
                self.err(
                    &at("replicas"),
                    "a pool needs at least one replica (\"host:port\")",
                );
            }
            let mut seen = HashSet::new();
            for (i, r) in p.replicas.iter().enumerate() {
                let mut rp = at("replicas").to_vec();
                rp.push(Seg::Index(i));
                if let Err(m) = check_replica(r) {
                    self.err(&rp, m);
                } else if !seen.insert(r.as_str()) {
                    self.err(&rp, format!("replica {r:?} is listed twice"));
                } else if let Some(l) = own_listener(r, listeners) {
                    self.err(
                        &rp,
                        format!("replica {r:?} is this gateway's own listener {l}: every request would loop back into the gateway"),
                    );
                }
            }
            let connect_timeout = self.positive(
                &at("connect_timeout"),
                p.connect_timeout,
                defaults::CONNECT_TIMEOUT,
            );
            let read_timeout =
                self.positive(&at("read_timeout"), p.read_timeout, defaults::READ_TIMEOUT);
            let write_timeout = self.positive(
                &at("write_timeout"),
                p.write_timeout,
                defaults::WRITE_TIMEOUT,
            );
            let idle_timeout =
                self.positive(&at("idle_timeout"), p.idle_timeout, defaults::IDLE_TIMEOUT);
            let upgrade_idle_timeout = self.positive(
                &at("upgrade_idle_timeout"),
                p.upgrade_idle_timeout,
                defaults::UPGRADE_IDLE_TIMEOUT,
            );
            let health = p.health.map(|h| self.health(&at("health"), h));
            out.push(Pool {
                name: Arc::from(name.as_str()),
                replicas: p.replicas,
                connect_timeout,
                read_timeout,
                write_timeout,
                idle_timeout,
                upgrade_idle_timeout,
                max_retries: p.max_retries.unwrap_or(defaults::MAX_RETRIES),
                resolve_interval: self.positive(
                    &at("resolve_interval"),
                    p.resolve_interval,
                    defaults::RESOLVE_INTERVAL,
                ),
                health,
            });
        }
        out
    }

    fn health(&mut self, base: &[Seg], h: schema::HealthSection) -> Health {
        let at = |k: &str| {
            let mut p = base.to_vec();
            p.push(key(k));
            p
        };
        let path = h.path.unwrap_or_else(|| defaults::HEALTH_PATH.to_owned());
        if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
            self.err(
                &at("path"),
                format!("health check path {path:?} must start with '/' and contain no spaces"),
            );
        }
        let interval = self.positive(&at("interval"), h.interval, defaults::HEALTH_INTERVAL);
        let timeout = self.positive(&at("timeout"), h.timeout, defaults::HEALTH_TIMEOUT);
        let mut count = |k: &str, v: Option<usize>, d: usize| match v {
            Some(0) => {
                self.err(&at(k), "must be at least 1");
                d
            }
            Some(n) => n,
            None => d,
        };
        let healthy_after = count("healthy_after", h.healthy_after, defaults::HEALTHY_AFTER);
        let unhealthy_after = count(
            "unhealthy_after",
            h.unhealthy_after,
            defaults::UNHEALTHY_AFTER,
        );
        Health {
            path,
            interval,
            timeout,
            healthy_after,
            unhealthy_after,
        }
    }
}

/// The listener a replica address names, when it is one of ours (a literal address or
/// `localhost`; names that resolve elsewhere cannot be told apart here).
fn own_listener(r: &str, listeners: &[Listener]) -> Option<std::net::SocketAddr> {
    let (host, port) = r.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => h.parse().ok()?,
    };
    listeners.iter().map(|l| l.address).find(|l| {
        l.port() == port
            && (l.ip() == ip
                || (l.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
    })
}

/// `host:port`, with a DNS name, IPv4, or `[IPv6]` host and a non-zero port.
fn check_replica(r: &str) -> Result<(), String> {
    let bad =
        || format!("replica {r:?} must be \"host:port\" (e.g. \"api:8000\" or \"127.0.0.1:8001\")");
    let (host, port) = r.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad()),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| bad());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() || valid_dns_name(host) {
        Ok(())
    } else {
        Err(bad())
    }
}
