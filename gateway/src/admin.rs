//! The admin listener (default 127.0.0.1:9901, never a public listener): `/metrics`,
//! `/healthz`, `/readyz`, `/status`, and `POST /reload`.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use ipnet::IpNet;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::{Outcome, Reloader};
use crate::state::{SharedState, Snapshot};
use crate::store::Store;

pub struct AdminApp {
    pub state: SharedState,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub lifecycle: Arc<Lifecycle>,
    pub accepted: Arc<crate::connections::AcceptCounter>,
    /// From the start-up config (the admin listener itself cannot change live).
    pub allow: Vec<IpNet>,
    pub store: Option<Arc<Store>>,
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, len)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_response(status: StatusCode, v: Value) -> Response<Vec<u8>> {
    respond(status, "application/json", v.to_string().into_bytes())
}

fn epoch_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AdminApp {
    fn allowed(&self, session: &ServerSession) -> bool {
        let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        else {
            return false;
        };
        let ip = crate::net::canonical(ip);
        // The host itself is always allowed (a container's HEALTHCHECK, `gateway reload`);
        // without a list, loopback only.
        let this_host = ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST;
        this_host
            || (self.allow.is_empty() && ip.is_loopback())
            || crate::headers::is_trusted(ip, &self.allow)
    }

    /// Pools used by routes that have no healthy replica.
    fn unready_pools(snapshot: &Snapshot) -> Vec<String> {
        let mut used: Vec<usize> = snapshot.config.routes.iter().map(|r| r.pool).collect();
        used.sort_unstable();
        used.dedup();
        used.into_iter()
            .filter_map(|i| snapshot.pools.get(i))
            .filter(|p| !p.any_healthy())
            .map(|p| p.name().to_owned())
            .collect()
    }

    fn status(&self, snapshot: &Snapshot) -> Value {
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
                })
            })
            .collect();
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
            "config": {
                "source": c.source.display().to_string(),
                "listeners": c.listeners.iter().map(|l| l.address.to_string()).collect::<Vec<_>>(),
                "admin": c.admin.address.to_string(),
                "trusted_proxies": c.server.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "routes": routes,
                "rate_limits": limits,
            },
            "pools": pools,
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
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if !self.allowed(session) {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"error": {"code": "forbidden", "message": "not allowed on the admin listener"}}),
            );
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let snapshot = self.state.load_full();
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
            (Method::GET, "/readyz") => {
                let unready = Self::unready_pools(&snapshot);
                if unready.is_empty() {
                    json_response(StatusCode::OK, json!({"status": "ready"}))
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "not_ready", "pools_without_healthy_replicas": unready}),
                    )
                }
            }
            (Method::GET, "/metrics") => {
                let text = self.metrics.render(crate::metrics::Scrape {
                    listeners: &snapshot.config.listeners,
                    pools: &snapshot.pools,
                    limiters: &snapshot.limiters,
                    in_flight: self.lifecycle.in_flight(),
                    accepted: self.accepted.accepted(),
                    refused: self.accepted.refused(),
                });
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    text.into_bytes(),
                )
            }
            (Method::GET, "/status") => json_response(StatusCode::OK, self.status(&snapshot)),
            (Method::POST, "/reload") => match self.reloader.reload("admin").await {
                Outcome::Applied { needs_restart } => json_response(
                    StatusCode::OK,
                    json!({"result": "ok", "needs_restart": needs_restart}),
                ),
                Outcome::Rejected { errors } => json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"result": "error", "errors": errors}),
                ),
            },
            (_, "/healthz" | "/readyz" | "/metrics" | "/status" | "/reload") => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": {"code": "method_not_allowed", "message": "wrong method for this endpoint"}}),
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "not_found", "message": "admin endpoints: /metrics /healthz /readyz /status POST /reload"}}),
            ),
        }
    }
}
