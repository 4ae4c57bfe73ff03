//! The admin listener (default 127.0.0.1:9901, never a public listener): the status
//! page at `/` (`page.rs`), `/metrics`, `/healthz`, `/readyz`, `/status` (`status.rs`),
//! `/status/traffic` (`traffic.rs`), and `POST /reload`.

mod page;
mod status;
mod traffic;

use std::sync::Arc;
use std::time::SystemTime;

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
use crate::tls::TlsState;

pub struct AdminApp {
    pub state: SharedState,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub lifecycle: Arc<Lifecycle>,
    pub accepted: Arc<crate::connections::AcceptCounter>,
    /// From the start-up config (the admin listener itself cannot change live).
    pub allow: Vec<IpNet>,
    pub store: Option<Arc<Store>>,
    /// Certificates in service and their ACME orders, for `/status`.
    pub tls: Arc<TlsState>,
    /// When this process started (uptime on the status page).
    pub started: SystemTime,
}

/// Everything the admin listener serves may be opened in a browser (the status page and
/// what it fetches): nothing but its own script, style and JSON may run or load, no
/// other site may frame it, and no type is sniffed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, len)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::CONTENT_SECURITY_POLICY, CSP)
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(http::header::REFERRER_POLICY, "no-referrer")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_response(status: StatusCode, v: Value) -> Response<Vec<u8>> {
    respond(status, "application/json", v.to_string().into_bytes())
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
        if let (&Method::GET, Some((content_type, body))) = (&method, page::asset(&path)) {
            return respond(StatusCode::OK, content_type, body.to_vec());
        }
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
            (Method::GET, "/status/traffic") => {
                json_response(StatusCode::OK, traffic::series(&snapshot))
            }
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
            (
                _,
                "/healthz" | "/readyz" | "/metrics" | "/status" | "/status/traffic" | "/reload",
            ) => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": {"code": "method_not_allowed", "message": "wrong method for this endpoint"}}),
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "not_found", "message": "admin endpoints: / (status page) /metrics /healthz /readyz /status /status/traffic POST /reload"}}),
            ),
        }
    }
}
