//! `/status`: what the gateway is doing, as JSON: its routes, pools and every
//! replica's health, certificates, rate limits, the shared store, reloads. The status
//! page draws it; scripts read it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::AdminApp;
use crate::config::{CertSource, Config};
use crate::state::Snapshot;

pub(super) fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AdminApp {
    pub(super) fn status(&self, snapshot: &Snapshot) -> Value {
        let c = &snapshot.config;
        let pools: Vec<Value> = snapshot
            .pools
            .iter()
            .map(|p| {
                let replicas: Vec<Value> = p
                    .replicas()
                    .iter()
                    .map(|r| {
                        let last = p.last_check(*r);
                        json!({
                            "address": r.to_string(),
                            "healthy": p.is_healthy(*r),
                            "last_check": last.as_ref().map(|l| json!({
                                "ok": l.ok, "at": epoch_secs(l.at), "error": l.error,
                            })),
                            "state_since": last.as_ref().map(|l| epoch_secs(l.state_since)),
                        })
                    })
                    .collect();
                json!({
                    "name": p.name(),
                    "active_health_checks": p.config.health.is_some(),
                    "replicas": replicas,
                })
            })
            .collect();
        let routes: Vec<Value> = c
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": &*r.name,
                    "host": r.host.as_ref().map(|h| h.to_string()),
                    "path": r.path,
                    "strip_prefix": r.strip_prefix,
                    "pool": c.pools.get(r.pool).map(|p| &*p.name),
                    "rate_limits": r.policy.rate_limits.iter().filter_map(|&i| c.rate_limits.get(i).map(|l| &*l.name)).collect::<Vec<_>>(),
                    "cors": r.policy.cors.and_then(|i| c.cors.get(i)).map(|p| &*p.name),
                    "max_body_size": r.policy.max_body_size,
                    "request_buffer": r.policy.request_buffer,
                    "compression": r.policy.compression.and_then(|i| c.compression.get(i)).map(|p| &*p.name),
                })
            })
            .collect();
        let now = std::time::Instant::now();
        let limits: Vec<Value> = snapshot
            .limiters
            .iter()
            .map(|l| {
                let key = match &l.config.key {
                    crate::config::RateKey::Address => "address".to_owned(),
                    // The header's name only: its values are never shown.
                    crate::config::RateKey::Header(h) => format!("header {h}"),
                    crate::config::RateKey::Global => "global".to_owned(),
                };
                json!({
                    "name": &*l.config.name,
                    "rate": format!("{} per {}", l.config.count, humantime::format_duration(l.config.period)),
                    "burst": l.config.burst,
                    "key": key,
                    "tracked_clients": l.tracked(),
                    // Addresses only (a header key's values are never shown).
                    "refused_recently": l.refused.top(5, now).iter().map(|r| json!({
                        "client": r.client.to_string(),
                        "refusals": r.refusals,
                        "last_seconds_ago": now.saturating_duration_since(r.last).as_secs(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let reloads: Vec<Value> = self
            .reloader
            .history()
            .iter()
            .map(|r| {
                json!({
                    "at": epoch_secs(r.at), "trigger": r.trigger, "ok": r.ok,
                    "errors": r.errors, "needs_restart": r.needs_restart,
                })
            })
            .collect();
        json!({
            "gateway": {
                "version": env!("CARGO_PKG_VERSION"),
                "started_at": epoch_secs(self.started),
                "uptime_seconds": self.started.elapsed().map_or(0, |d| d.as_secs()),
                "now": epoch_secs(SystemTime::now()),
            },
            "config": {
                "source": c.source.display().to_string(),
                "digest": c.digest,
                "listeners": c.listeners.iter().map(|l| l.address.to_string()).collect::<Vec<_>>(),
                "admin": c.admin.address.to_string(),
                "trusted_proxies": c.server.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "routes": routes,
                "rate_limits": limits,
            },
            "pools": pools,
            "certificates": self.certificates(c),
            "store": self.store.as_ref().map(|s| json!({
                "address": s.address(),
                "up": s.is_up(),
                "last_error": s.last_error(),
                "instance": s.instance,
            })),
            "requests_in_flight": self.lifecycle.in_flight(),
            "reloads": reloads,
        })
    }

    /// Every configured site: the certificate in service (if any), when it is due to
    /// be replaced, and for ACME how its orders went.
    fn certificates(&self, c: &Config) -> Vec<Value> {
        c.sites
            .iter()
            .map(|site| {
                let source = match site.certificate {
                    CertSource::Acme(_) => "acme",
                    CertSource::Internal => "internal",
                    CertSource::Files { .. } => "files",
                };
                let served = self.tls.store.get(&site.names[0]);
                let order = self.tls.orders.get(&site.names[0]).map(|o| o.clone());
                json!({
                    "names": site.names,
                    "source": source,
                    "served": served.as_ref().map(|e| json!({
                        "not_before": e.not_before,
                        "not_after": e.not_after,
                        "serial": e.serial,
                        "names": e.names,
                    })),
                    "next_renewal": served.as_ref().and_then(|e| crate::tls::manager::next_renewal(e, site)),
                    "acme": order.map(|o| json!({
                        "last_ok": o.last_ok.map(epoch_secs),
                        "last_error": o.last_error.map(|(at, message)| json!({"at": epoch_secs(at), "message": message})),
                        "failures": o.failures,
                        "retry_at": o.retry_at.map(epoch_secs),
                    })),
                })
            })
            .collect()
    }
}
