//! The `logging` phase's work, once per request whatever its end: the status it is
//! logged with (499 when the client left first), the access line and the metrics.

use pingora_core::{Error, ErrorSource};
use pingora_proxy::Session;

use super::ctx::Ctx;
use crate::access_line::AccessLine;
use crate::metrics::{self, Metrics};
use crate::telemetry;
use crate::traffic;

/// nginx's 499: the client closed the request before any response went out.
pub const CLIENT_CLOSED: u16 = 499;

/// The status a request is logged and counted with: what went out, 499 when the client
/// left before any response, 0 when nothing went out for another reason.
pub fn status(session: &Session, e: Option<&Error>, ctx: &Ctx) -> u16 {
    match session.response_written() {
        Some(r) => r.status.as_u16(),
        None if ctx.client_aborted
            || e.is_some_and(|e| e.esource() == &ErrorSource::Downstream) =>
        {
            CLIENT_CLOSED
        }
        None => 0,
    }
}

/// One line per request, written after the response (or failure) is complete.
pub fn access_log(session: &Session, e: Option<&Error>, ctx: &Ctx, status: u16) {
    if !ctx.snapshot.config.log.access_log {
        return;
    }
    let req = session.req_header();
    telemetry::emit(&AccessLine {
        request_id: ctx.request_id.as_str(),
        client_ip: ctx.client_ip,
        method: req.method.as_str(),
        host: crate::headers::request_host(&req.headers, &req.uri),
        path: req.uri.path(),
        status,
        bytes: session.body_bytes_sent(),
        duration_us: ctx.started.elapsed().as_micros(),
        route: ctx.route().map_or("-", |r| &*r.name),
        upstream: ctx.tried.last().copied(),
        attempts: ctx.tried.len(),
        error: e.map(|e| e.etype().as_str()),
    });
}

/// The request's metrics: its count and latency by route, method and status (in
/// Prometheus and in the status page's ring), the rate limit that refused it, if one
/// did, and what compression did to its body.
pub fn record(metrics: &Metrics, session: &Session, ctx: &Ctx, status: u16) {
    let route = ctx.route().map_or("-", |r| &*r.name);
    let now = std::time::Instant::now();
    let took = now.saturating_duration_since(ctx.started);
    let ring = match ctx.route.and_then(|i| ctx.snapshot.traffic.get(i)) {
        Some(ring) => ring,
        None => &ctx.snapshot.unrouted,
    };
    ring.record(
        now,
        traffic::Outcome {
            status,
            rate_limited: ctx.rate_limited_by.is_some(),
            took,
        },
    );
    let status_code = session.response_written().map(|r| r.status);
    let status = match (status_code.as_ref(), status) {
        (Some(s), _) => s.as_str(),
        (None, CLIENT_CLOSED) => "499",
        (None, _) => "0",
    };
    let method = metrics::method_label(&session.req_header().method);
    metrics.request_done(route, method, status, took);
    if status == "499" {
        metrics.client_aborts.with_label_values(&[route]).inc();
    }
    if let Some(limit) = &ctx.rate_limited_by {
        metrics
            .ratelimit_rejected
            .with_label_values(&[route, limit])
            .inc();
    }
    if let Some(encoder) = &ctx.encoder {
        let e = encoder.lock().unwrap_or_else(|p| p.into_inner());
        let labels = [route, e.coding.name()];
        metrics
            .compression_in
            .with_label_values(&labels)
            .inc_by(e.bytes_in);
        metrics
            .compression_out
            .with_label_values(&labels)
            .inc_by(e.bytes_out);
    }
}
