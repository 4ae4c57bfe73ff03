//! Wiring: build the first snapshot, then a pingora `Server` with the proxy service on
//! every listener, the health-check service, and the drain watcher for graceful exit.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};

use crate::config::Config;
use crate::proxy::ctx::Lifecycle;
use crate::proxy::Gateway;
use crate::ratelimit::sweeper::Sweeper;
use crate::state::Snapshot;
use crate::telemetry;
use crate::upstream::health::HealthService;

/// Runs until SIGTERM (graceful: in-flight requests finish) or SIGINT (fast).
pub fn run(config: Config) -> ExitCode {
    telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a runtime");
            return ExitCode::FAILURE;
        }
    };
    let listeners = config.listeners.clone();
    let server_cfg = config.server.clone();
    // First pass of every pool's health checks happens here, before any listener opens.
    let snapshot = match runtime.block_on(Snapshot::build(config, None)) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(error = %e, "config error");
            }
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    drop(runtime);
    let state = Arc::new(ArcSwap::from_pointee(snapshot));

    let conf = ServerConf {
        threads: server_cfg.threads,
        grace_period_seconds: Some(server_cfg.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let lifecycle = Arc::new(Lifecycle::default());
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(Arc::clone(&state), Arc::clone(&lifecycle)),
        "gateway",
    );
    for l in &listeners {
        proxy.add_tcp(&l.address.to_string());
        tracing::info!(event = "listening", address = %l.address, "listening (http)");
    }
    server.add_service(proxy);
    let limiter_state = Arc::clone(&state);
    let sweeper = Sweeper::new(move || limiter_state.load().limiters.clone());
    server.add_service(background_service("rate-limit sweeper", sweeper));
    server.add_service(background_service(
        "health checks",
        HealthService::new(Arc::clone(&state)),
    ));
    server.add_service(background_service(
        "drain watcher",
        DrainWatcher { lifecycle },
    ));
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}

/// After SIGTERM pingora stops accepting and then waits the whole grace period; this
/// ends the process as soon as no request is in flight, so a restart is not held up
/// by an idle gateway.
struct DrainWatcher {
    lifecycle: Arc<Lifecycle>,
}

#[async_trait]
impl BackgroundService for DrainWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.lifecycle.begin_shutdown();
        tracing::info!(
            event = "draining",
            in_flight = self.lifecycle.in_flight(),
            "shutdown: draining in-flight requests"
        );
        let mut idle_ticks = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.lifecycle.in_flight() == 0 {
                idle_ticks += 1;
            } else {
                idle_ticks = 0;
            }
            // Two quiet ticks: a connection accepted just before the listener closed has
            // had time to start its request.
            if idle_ticks >= 2 {
                tracing::info!(
                    event = "drained",
                    "all in-flight requests finished: exiting"
                );
                std::process::exit(0);
            }
        }
    }
}
