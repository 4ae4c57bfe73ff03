//! Logs: JSON (or pretty) lines on stdout through `tracing`, pingora's own `log`
//! records included, and where access lines go (`emit`; the proxy's `logging` phase
//! writes one per request, `proxy/log.rs`).

use crate::access_line::{self, AccessLine};
use crate::config::{Log, LogFormat};

/// The format of the installed subscriber: the first `init` wins, as for the subscriber.
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(log: &Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = FORMAT.set(log.format);
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

/// Writes an access line where the log level lets `access` through: JSON lines
/// directly (`access_line`), pretty ones through `tracing`.
pub fn emit(line: &AccessLine) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    match FORMAT.get() {
        // A file gets JSON lines whatever the format of the other logs.
        _ if access_line::to_file() => line.emit_json(),
        Some(LogFormat::Json) => line.emit_json(),
        _ => tracing::info!(
            target: "access",
            request_id = line.request_id,
            client_ip = %line.client_ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            method = line.method,
            host = line.host,
            path = line.path,
            status = line.status,
            bytes = line.bytes,
            duration_ms = line.duration_us as f64 / 1000.0,
            route = line.route,
            upstream = %line.upstream.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            attempts = line.attempts,
            error = line.error,
            "access"
        ),
    }
}
