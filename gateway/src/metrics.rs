//! Prometheus metrics: every family the gateway exports, registered in one place.
//!
//! Request-path recording is a label lookup plus atomic adds (route names come from
//! config, never raw paths, so label sets stay bounded). Health gauges and table sizes
//! are computed at scrape time from the current snapshot, costing the request path
//! nothing.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::config::Listener;
use crate::ratelimit::Limiter;
use crate::store::StoreMetrics;
use crate::upstream::Pool;

/// Request latency buckets: sub-millisecond to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_connect: HistogramVec,
    pub upstream_retries: IntCounterVec,
    upstream_healthy: IntGaugeVec,
    pool_healthy: IntGaugeVec,
    pub ratelimit_rejected: IntCounterVec,
    ratelimit_tracked: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    last_reload_success: Gauge,
    in_flight: IntGauge,
    connections_accepted: prometheus::IntCounter,
    connections_open: IntGaugeVec,
    pub tls_cert_expiry: prometheus::GaugeVec,
    /// Counter handles for the hot `ok` outcome, so the request path neither formats
    /// the replica address nor hashes labels after the first request to a replica.
    ok_handles:
        dashmap::DashMap<std::net::SocketAddr, Vec<(std::sync::Arc<str>, prometheus::IntCounter)>>,
    pub acme_orders: IntCounterVec,
    /// RFC 2136 updates of DNS-01 records, by op (add, remove) and result.
    pub dns_updates: IntCounterVec,
    /// On-demand TLS decisions for names not in the file, by result.
    pub on_demand: IntCounterVec,
    /// Names this gateway keeps certificates for on demand (against `max_names`).
    pub on_demand_names: prometheus::IntGauge,
    /// Connections closed because their request head missed `header_timeout`.
    pub header_timeouts: prometheus::IntCounter,
    /// Connections beyond `max_connections_per_client` (refused, or answered 429).
    pub connections_over_cap: prometheus::IntCounter,
    /// HTTP/2 connections closed after `keepalive_timeout` idle.
    pub h2_idle_closed: prometheus::IntCounter,
    /// Connections closed at accept because `max_connections` were open (mirrored
    /// from the accept filter at scrape time).
    connections_refused: prometheus::IntCounter,
    /// The shared store's state, errors and call latency (`[store]`).
    pub store: StoreMetrics,
    /// Requests a cluster rate limit decided without the store, by fallback.
    pub ratelimit_fallbacks: IntCounterVec,
    /// Requests the client abandoned before any response (logged as 499).
    pub client_aborts: IntCounterVec,
    /// Response bytes given to the compressor and sent, by route and coding.
    pub compression_in: IntCounterVec,
    pub compression_out: IntCounterVec,
}

/// Store calls: from 100 µs (loopback) to the 1 s the budget may be set to.
const STORE_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Infallible in practice (names and labels are static); a failure would be a bug we
/// want to see at start-up, so it is reported, not hidden.
fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: T,
) -> Result<T, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        Ok(Metrics {
            requests: reg(
                &r,
                counter(
                    "gateway_requests_total",
                    "Requests answered, by route, method and status.",
                    &["route", "method", "status"],
                )?,
            )?,
            request_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gateway_request_duration_seconds",
                        "Time from request start to the end of the response, by route.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route"],
                )?,
            )?,
            upstream_requests: reg(
                &r,
                counter(
                    "gateway_upstream_requests_total",
                    "Attempts at a replica, by outcome: ok, connect_error, timeout, error.",
                    &["pool", "replica", "outcome"],
                )?,
            )?,
            upstream_connect: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gateway_upstream_connect_duration_seconds",
                        "Time to open a new connection to a replica.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["pool"],
                )?,
            )?,
            upstream_retries: reg(
                &r,
                counter(
                    "gateway_upstream_retries_total",
                    "Requests sent again to another replica.",
                    &["pool"],
                )?,
            )?,
            upstream_healthy: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "gateway_upstream_healthy",
                        "1 when the replica passes its health checks.",
                    ),
                    &["pool", "replica"],
                )?,
            )?,
            pool_healthy: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "gateway_pool_healthy_replicas",
                        "Healthy replicas per pool.",
                    ),
                    &["pool"],
                )?,
            )?,
            ratelimit_rejected: reg(
                &r,
                counter(
                    "gateway_ratelimit_rejected_total",
                    "Requests refused with 429.",
                    &["route", "limit"],
                )?,
            )?,
            ratelimit_tracked: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "gateway_ratelimit_tracked_keys",
                        "Clients a rate limit currently tracks.",
                    ),
                    &["limit"],
                )?,
            )?,
            config_reloads: reg(
                &r,
                counter(
                    "gateway_config_reloads_total",
                    "Configuration reloads, by result: ok, error.",
                    &["result"],
                )?,
            )?,
            last_reload_success: reg(
                &r,
                Gauge::new(
                    "gateway_config_last_reload_success_timestamp_seconds",
                    "When the config was last loaded successfully.",
                )?,
            )?,
            in_flight: reg(
                &r,
                IntGauge::new("gateway_requests_in_flight", "Requests being handled now.")?,
            )?,
            tls_cert_expiry: reg(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "gateway_tls_certificate_expiry_timestamp_seconds",
                        "When the certificate served for a name expires.",
                    ),
                    &["name", "source"],
                )?,
            )?,
            acme_orders: reg(
                &r,
                counter(
                    "gateway_acme_orders_total",
                    "ACME certificate orders, by result: ok, error.",
                    &["result"],
                )?,
            )?,
            dns_updates: reg(
                &r,
                counter(
                    "gateway_dns_updates_total",
                    "RFC 2136 updates of DNS-01 challenge records, by op (add, remove) and result (ok, error).",
                    &["op", "result"],
                )?,
            )?,
            on_demand: reg(
                &r,
                counter(
                    "gateway_tls_on_demand_total",
                    "On-demand TLS decisions for names not in the config, by result.",
                    &["result"],
                )?,
            )?,
            on_demand_names: reg(
                &r,
                prometheus::IntGauge::new(
                    "gateway_tls_on_demand_names",
                    "Names this gateway keeps certificates for on demand (bounded by sites.on_demand.max_names).",
                )?,
            )?,
            ok_handles: dashmap::DashMap::new(),
            header_timeouts: reg(
                &r,
                prometheus::IntCounter::new(
                    "gateway_client_header_timeouts_total",
                    "Client connections closed because the request head did not arrive within limits.header_timeout.",
                )?,
            )?,
            connections_over_cap: reg(
                &r,
                prometheus::IntCounter::new(
                    "gateway_client_connections_over_cap_total",
                    "Client connections beyond limits.max_connections_per_client (HTTP/1: answered 429 and closed; HTTP/2: closed).",
                )?,
            )?,
            h2_idle_closed: reg(
                &r,
                prometheus::IntCounter::new(
                    "gateway_client_h2_idle_closed_total",
                    "HTTP/2 client connections ended with GOAWAY after limits.keepalive_timeout with nothing sent either way.",
                )?,
            )?,
            connections_refused: reg(
                &r,
                prometheus::IntCounter::new(
                    "gateway_connections_refused_total",
                    "Client connections closed at accept, before any TLS, because limits.max_connections were open.",
                )?,
            )?,
            connections_accepted: reg(
                &r,
                prometheus::IntCounter::new(
                    "gateway_connections_accepted_total",
                    "TCP connections accepted on the public listeners.",
                )?,
            )?,
            connections_open: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "gateway_connections_open",
                        "Established client connections, by listener.",
                    ),
                    &["listener"],
                )?,
            )?,
            store: StoreMetrics {
                up: reg(
                    &r,
                    IntGauge::new(
                        "gateway_store_up",
                        "1 while the shared store ([store]) answers, 0 while it does not (or is not configured).",
                    )?,
                )?,
                errors: reg(
                    &r,
                    counter(
                        "gateway_store_errors_total",
                        "Failed or timed-out calls to the shared store, by operation.",
                        &["op"],
                    )?,
                )?,
                calls: reg(
                    &r,
                    HistogramVec::new(
                        HistogramOpts::new(
                            "gateway_store_call_duration_seconds",
                            "Time of one call to the shared store, by operation.",
                        )
                        .buckets(STORE_BUCKETS.to_vec()),
                        &["op"],
                    )?,
                )?,
            },
            ratelimit_fallbacks: reg(
                &r,
                counter(
                    "gateway_ratelimit_fallbacks_total",
                    "Requests a cluster rate limit decided without the store (down or slow), by limit and fallback: local, allow, deny.",
                    &["limit", "mode"],
                )?,
            )?,
            client_aborts: reg(
                &r,
                counter(
                    "gateway_client_aborts_total",
                    "Requests the client closed, reset or cancelled before any response went out (status 499), by route. Never retried, never a replica's error.",
                    &["route"],
                )?,
            )?,
            compression_in: reg(
                &r,
                counter(
                    "gateway_compression_in_bytes_total",
                    "Response body bytes compressed, as the replica sent them, by route and encoding.",
                    &["route", "encoding"],
                )?,
            )?,
            compression_out: reg(
                &r,
                counter(
                    "gateway_compression_out_bytes_total",
                    "Compressed response body bytes sent, by route and encoding.",
                    &["route", "encoding"],
                )?,
            )?,
            registry: r,
        })
    }

    /// One finished request: `gateway_requests_total` and its duration, both places a
    /// request ends (the proxy's `logging`, and a head pingora refused itself).
    pub fn request_done(&self, route: &str, method: &str, status: &str, took: std::time::Duration) {
        self.requests
            .with_label_values(&[route, method, status])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// `gateway_upstream_requests_total{pool, replica, outcome="ok"}` for one replica.
    pub fn upstream_ok(&self, pool: &str, replica: std::net::SocketAddr) -> prometheus::IntCounter {
        // A replica is almost always in one pool: a direct lookup, then a tiny scan.
        if let Some(list) = self.ok_handles.get(&replica) {
            if let Some((_, c)) = list.iter().find(|(p, _)| &**p == pool) {
                return c.clone();
            }
        }
        let c = self
            .upstream_requests
            .with_label_values(&[pool, &replica.to_string(), "ok"]);
        self.ok_handles
            .entry(replica)
            .or_default()
            .push((std::sync::Arc::from(pool), c.clone()));
        c
    }

    pub fn mark_config_loaded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_reload_success.set(now);
    }

    /// The text exposition, with scrape-time gauges refreshed from what is running now
    /// (the admin listener hands in the current snapshot's parts).
    pub fn render(&self, now: Scrape<'_>) -> String {
        let Scrape {
            listeners,
            pools,
            limiters,
            in_flight,
            accepted,
            refused,
        } = now;
        // Counters that mirror the connection filter's atomics.
        let delta = accepted.saturating_sub(self.connections_accepted.get());
        self.connections_accepted.inc_by(delta);
        let delta = refused.saturating_sub(self.connections_refused.get());
        self.connections_refused.inc_by(delta);
        let ports: Vec<u16> = listeners.iter().map(|l| l.address.port()).collect();
        let open = crate::connections::open_by_port(&ports);
        for l in listeners {
            let n = open.get(&l.address.port()).copied().unwrap_or(0);
            self.connections_open
                .with_label_values(&[&l.address.to_string()])
                .set(n as i64);
        }
        self.upstream_healthy.reset();
        self.pool_healthy.reset();
        for pool in pools {
            let mut healthy = 0;
            for replica in &pool.replicas() {
                let ok = pool.is_healthy(*replica);
                healthy += i64::from(ok);
                self.upstream_healthy
                    .with_label_values(&[pool.name(), &replica.to_string()])
                    .set(i64::from(ok));
            }
            self.pool_healthy
                .with_label_values(&[pool.name()])
                .set(healthy);
        }
        self.ratelimit_tracked.reset();
        for l in limiters {
            self.ratelimit_tracked
                .with_label_values(&[&l.config.name])
                .set(l.tracked() as i64);
        }
        self.in_flight.set(in_flight as i64);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What the scrape-time gauges are read from.
pub struct Scrape<'a> {
    pub listeners: &'a [Listener],
    pub pools: &'a [Arc<Pool>],
    pub limiters: &'a [Arc<Limiter>],
    pub in_flight: usize,
    pub accepted: u64,
    pub refused: u64,
}

/// A bounded method label: the standard methods, else `OTHER`.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
