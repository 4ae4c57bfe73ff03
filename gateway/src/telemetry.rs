//! Logs: JSON (or pretty) lines on stdout through `tracing`, pingora's own `log`
//! records included, and the one access-log line per request.

use pingora_core::Error;
use pingora_proxy::Session;

use crate::config::{Log, LogFormat};
use crate::proxy::ctx::Ctx;

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(log: &Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let installed = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A second init (tests, or `run` after `check`) keeps the first subscriber.
    drop(installed);
}

/// One line per request, written after the response (or failure) is complete.
pub fn access_log(session: &Session, e: Option<&Error>, ctx: &Ctx) {
    if !ctx.snapshot.config.log.access_log {
        return;
    }
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let host = crate::headers::request_host(&req.headers, &req.uri);
    let client_ip = ctx.client_ip.map(|ip| ip.to_string());
    let upstream = ctx.tried.last().map(|a| a.to_string());
    tracing::info!(
        target: "access",
        request_id = %ctx.request_id,
        client_ip = client_ip.as_deref().unwrap_or("-"),
        method = %req.method,
        host,
        path = req.uri.path(),
        status,
        bytes = session.body_bytes_sent(),
        duration_ms = ctx.started.elapsed().as_micros() as f64 / 1000.0,
        route = ctx.route().map_or("-", |r| &*r.name),
        upstream = upstream.as_deref().unwrap_or("-"),
        attempts = ctx.tried.len(),
        error = e.map(|e| e.etype().as_str()),
        "access"
    );
}
