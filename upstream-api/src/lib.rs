//! upstream-api: the small axum app our users run behind the gateway, and the replica
//! every end-to-end test puts there.
//!
//! Map: `app()` builds the router; `request_id` stamps and logs every request; `error`
//! is the one JSON error contract; `items` is a small in-memory resource; `probe` is
//! the in-image health check client; `serve()` runs until a shutdown signal, then goes
//! not-ready, waits the drain delay and lets in-flight requests finish.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod handlers;
mod items;
mod probe;
mod request_id;
mod sample;
mod tls_allowed;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use probe::probe;

/// Shared state of one replica.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    replica_id: String,
    draining: AtomicBool,
    maintenance_file: Option<PathBuf>,
    items: items::Store,
    /// Names `/tls/allowed` says yes to (lowercase; `*.suffix` for any subdomain).
    tls_allowed: Vec<String>,
}

impl AppState {
    /// `tls_allowed`: the names the on-demand TLS ask endpoint allows.
    pub fn new(
        replica_id: String,
        maintenance_file: Option<PathBuf>,
        tls_allowed: Vec<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                replica_id,
                draining: AtomicBool::new(false),
                maintenance_file,
                items: items::Store::default(),
                tls_allowed: tls_allowed.iter().map(|n| n.to_ascii_lowercase()).collect(),
            }),
        }
    }

    fn tls_allowed(&self) -> &[String] {
        &self.inner.tls_allowed
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// Why this replica should not get new traffic, if it should not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.inner.draining.load(Ordering::Relaxed) {
            return Some("draining");
        }
        match &self.inner.maintenance_file {
            Some(p) if p.exists() => Some("maintenance"),
            _ => None,
        }
    }

    fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    fn items(&self) -> &items::Store {
        &self.inner.items
    }
}

/// The whole HTTP surface of the API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/api/whoami", get(handlers::whoami))
        .route("/api/slow", get(handlers::slow))
        .route("/api/events", get(handlers::events))
        .route("/api/sample", get(sample::sample))
        .route("/api/echo", post(handlers::echo))
        .route("/api/ws", get(handlers::ws))
        .route("/api/items", get(items::list).post(items::create))
        .route("/api/items/{id}", get(items::get_one).delete(items::delete))
        .route("/tls/allowed", get(tls_allowed::ask))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn(request_id::stamp))
        .with_state(state)
}

/// Serve until `shutdown` resolves; then report not-ready for `drain_delay` (so load
/// balancers stop sending new requests), stop accepting, and finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_delay: Duration,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, replica = state.replica_id(), "upstream-api listening");
    let app = app(state.clone());
    let drained = async move {
        shutdown.await;
        tracing::info!(
            drain_delay_ms = drain_delay.as_millis() as u64,
            "shutdown requested: draining"
        );
        state.set_draining();
        tokio::time::sleep(drain_delay).await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(drained)
        .await?;
    tracing::info!("all requests finished: exiting");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can only run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// JSON logs on stdout, level from `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .init();
}

/// Parses `250ms`, `5s`, `2m`, `1h` (the units the flags accept).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("x5s"), None);
    }
}
