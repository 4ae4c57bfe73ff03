//! The `logging` phase's work, once per request whatever its end: the access line and
//! the request metrics.

use pingora_core::Error;
use pingora_proxy::Session;

use super::ctx::Ctx;
use crate::access_line::AccessLine;
use crate::metrics::{self, Metrics};
use crate::telemetry;

/// One line per request, written after the response (or failure) is complete.
pub fn access_log(session: &Session, e: Option<&Error>, ctx: &Ctx) {
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
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        bytes: session.body_bytes_sent(),
        duration_us: ctx.started.elapsed().as_micros(),
        route: ctx.route().map_or("-", |r| &*r.name),
        upstream: ctx.tried.last().copied(),
        attempts: ctx.tried.len(),
        error: e.map(|e| e.etype().as_str()),
    });
}

/// The request's metrics: its count and latency by route, method and status, and the
/// rate limit that refused it, if one did.
pub fn record(metrics: &Metrics, session: &Session, ctx: &Ctx) {
    let route = ctx.route().map_or("-", |r| &*r.name);
    let status_code = session.response_written().map(|r| r.status);
    let status = status_code.as_ref().map_or("0", |s| s.as_str());
    let method = metrics::method_label(&session.req_header().method);
    metrics.request_done(route, method, status, ctx.started.elapsed());
    if let Some(limit) = &ctx.rate_limited_by {
        metrics
            .ratelimit_rejected
            .with_label_values(&[route, limit])
            .inc();
    }
}
