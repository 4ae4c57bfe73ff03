//! Wiring: build the first snapshot, then a pingora `Server` with the proxy service on
//! every listener, the admin service, and the background services (health checks,
//! rate-limit sweeps, SIGHUP reloads, SIGUSR1 access-log reopening, the drain watcher
//! for graceful exit).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::refuse::HeadRefuser;
use crate::proxy::Gateway;
use crate::ratelimit::sweeper::Sweeper;
use crate::reload::Reloader;
use crate::state::Snapshot;
use crate::store::{Store, StoreService};
use crate::telemetry;
use crate::tls::manager::{install_local, CertManager};
use crate::tls::TlsState;
use crate::upstream::health::HealthService;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};

/// Pingora gives every connection a 64 KiB read buffer up front: 10,000 idle keep-alive
/// connections then cost about 1 GiB. Plain HTTP reads straight into the request
/// parser's own buffer instead; TLS straight into rustls's own record buffer (4 KiB
/// reads, grown to a whole record when one is larger), which it holds anyway: a 16 KiB
/// buffer under it was half of an idle TLS connection's memory and one more copy of
/// every byte received. The write side's buffer is ours, held only while a response is
/// written (`connection/coalesce.rs`). See docs/performance.md for the measurements.
const READ_BUFFER: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: Some(0),
};

/// Runs until SIGTERM (graceful: in-flight requests finish) or SIGINT (fast).
/// `source` is the config file, for reloads (`None`: the embedded default).
pub fn run(config: Config, source: Option<PathBuf>, upgrade: bool) -> ExitCode {
    telemetry::init(&config.log);
    for w in &config.warnings {
        tracing::warn!(event = "config_warning", warning = %w);
    }
    if let Some(path) = &config.log.access_log_file {
        if let Err(e) = crate::access_line::log_access_to(path) {
            tracing::error!(event = "access_log_unwritable", error = %e);
            eprintln!("not starting: cannot write the access log {e}");
            return ExitCode::FAILURE;
        }
    }
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            tracing::error!(error = %e, "cannot set up metrics");
            return ExitCode::FAILURE;
        }
    };
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
    let admin_cfg = config.admin.clone();
    // The shared store, when configured: connected by its service once the server
    // runs; with `required`, the gateway does not start without it.
    let store = match config
        .store
        .clone()
        .map(|c| Store::new(c, metrics.store.clone()))
    {
        None => None,
        Some(Ok(s)) => Some(Arc::new(s)),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot set up the store");
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(store) = &store {
        match runtime.block_on(crate::store::reachable(store)) {
            Ok(()) => {
                tracing::info!(event = "store_configured", store = %store.address(), "shared store reachable")
            }
            Err(e) if store.cfg.required => {
                tracing::error!(event = "store_unreachable", store = %store.address(), error = %e, "not starting: [store] required = true");
                eprintln!("not starting: the store at {} cannot be reached ({e}) and [store] required = true", store.address());
                return ExitCode::FAILURE;
            }
            Err(e) => tracing::warn!(
                event = "store_unreachable",
                store = %store.address(),
                error = %e,
                "starting without the shared store: rate limits use their fallback until it answers"
            ),
        }
    }
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
    metrics.mark_config_loaded();
    // Certificates that need no network serve from the first connection: files, the
    // local CA, and ACME certificates persisted by an earlier run.
    let tls = Arc::new(TlsState::default());
    let problems = install_local(&snapshot.config, &tls, &metrics);
    if !problems.is_empty() {
        for p in &problems {
            tracing::error!(event = "certificate_load_failed", error = %p);
            eprintln!("{p}");
        }
        return ExitCode::FAILURE;
    }
    let state = Arc::new(ArcSwap::from_pointee(snapshot));
    let reloader = Arc::new(Reloader::new(
        source,
        Arc::clone(&state),
        Arc::clone(&metrics),
    ));

    let conf = ServerConf {
        threads: server_cfg.threads,
        grace_period_seconds: Some(server_cfg.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: server_cfg.upgrade_sock.display().to_string(),
        upstream_keepalive_pool_size: server_cfg.upstream_keepalive,
        ..ServerConf::default()
    };
    // With --upgrade, bootstrap waits on `upgrade_sock` for the listening sockets of the
    // running gateway, which sends them when it gets SIGQUIT and then drains.
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let lifecycle = Arc::new(Lifecycle::default());
    let gateway = Gateway::new(
        Arc::clone(&state),
        Arc::clone(&lifecycle),
        Arc::clone(&metrics),
        Arc::clone(&tls),
        store.clone(),
    );
    // Counts connections at accept (and closes them there past max_connections).
    let accepted = crate::connections::shared();
    // Pingora's HTTP proxy, wrapped so each client connection passes the per-client cap
    // and gets a request-head deadline (connection/) before pingora reads from it.
    let limits_state = Arc::clone(&state);
    let edge = crate::connection::EdgeApp::new(
        pingora_proxy::http_proxy(&server.configuration, gateway),
        Arc::new(move || limits_state.load().config.limits),
        crate::connection::Counters {
            header_timeouts: metrics.header_timeouts.clone(),
            over_cap: metrics.connections_over_cap.clone(),
            h2_idle_closed: metrics.h2_idle_closed.clone(),
        },
        Arc::new(HeadRefuser::new(Arc::clone(&state), Arc::clone(&metrics))),
        Arc::clone(&accepted),
    );
    let mut proxy = pingora_core::services::listening::Service::new("gateway".to_owned(), edge);
    // SO_REUSEPORT when asked: a second gateway in the same network namespace binds the
    // same ports, the way a zero-downtime container upgrade hands over (docs/deploy.md).
    let mut socket = TcpSocketOptions::default();
    socket.so_reuseport = server_cfg.reuse_port.then_some(true);
    for l in &listeners {
        if l.tls {
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up TLS");
                    return ExitCode::FAILURE;
                }
            };
            settings.set_cert_resolver(
                Arc::clone(&tls.store) as Arc<dyn rustls::server::ResolvesServerCert>
            );
            // ALPN: `h2` and `http/1.1`, or `http/1.1` alone for clients and balancers
            // that must not get HTTP/2.
            if l.http2 {
                settings.enable_h2();
            }
            let endpoint = ListenerConfig::tcp(l.address.to_string())
                .tcp_socket_options(socket.clone())
                .tls(settings)
                .l4_buffer(READ_BUFFER);
            proxy.add_listener(endpoint);
            tracing::info!(event = "listening", address = %l.address, http2 = l.http2, "listening (https)");
        } else {
            proxy.add_listener(
                ListenerConfig::tcp(l.address.to_string())
                    .tcp_socket_options(socket.clone())
                    .l4_buffer(READ_BUFFER),
            );
            tracing::info!(event = "listening", address = %l.address, "listening (http)");
        }
    }
    // Answers TLS-ALPN-01 validations and waits for on-demand certificates before
    // pingora's handshake (see tls/hello.rs).
    let hello_state = Arc::clone(&state);
    proxy
        .endpoints()
        .set_pre_tls_callback(Arc::new(crate::tls::hello::HelloHook {
            tls: Arc::clone(&tls),
            metrics: Arc::clone(&metrics),
            config: Box::new(move || Arc::clone(&hello_state.load().config)),
        }));
    proxy.set_connection_filter(
        Arc::clone(&accepted) as Arc<dyn pingora_core::listeners::ConnectionFilter>
    );
    server.add_service(proxy);

    let admin = AdminApp {
        state: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
        reloader: Arc::clone(&reloader),
        lifecycle: Arc::clone(&lifecycle),
        accepted,
        allow: admin_cfg.allow.clone(),
        store: store.clone(),
        tls: Arc::clone(&tls),
        started: std::time::SystemTime::now(),
    };
    let mut admin_service = Service::new("admin".to_owned(), admin);
    admin_service.add_tcp_with_settings(&admin_cfg.address.to_string(), socket);
    tracing::info!(event = "listening", address = %admin_cfg.address, "admin listener");
    server.add_service(admin_service);

    if let Some(store) = &store {
        server.add_service(background_service(
            "store",
            StoreService::new(Arc::clone(store)),
        ));
    }
    server.add_service(background_service(
        "health checks",
        HealthService::new({
            let state = Arc::clone(&state);
            move || state.load().pools.clone()
        }),
    ));
    let limiter_state = Arc::clone(&state);
    let sweeper = Sweeper::new(move || limiter_state.load().limiters.clone());
    server.add_service(background_service("rate-limit sweeper", sweeper));
    let config_state = Arc::clone(&state);
    let certs = CertManager::new(
        move || Arc::clone(&config_state.load().config),
        Arc::clone(&tls),
        Arc::clone(&metrics),
        store.clone(),
    );
    server.add_service(background_service("certificates", certs));
    server.add_service(background_service(
        "sighup reload",
        SighupReload { reloader },
    ));
    server.add_service(background_service("access log reopen", ReopenOnUsr1));
    server.add_service(background_service(
        "drain watcher",
        DrainWatcher { lifecycle },
    ));
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}

/// SIGHUP reloads the config file, like nginx.
struct SighupReload {
    reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot listen for SIGHUP: reload through `gateway reload` only");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => { self.reloader.reload("SIGHUP").await; }
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
        }
    }
}

/// SIGUSR1 reopens the access log file, like nginx: logrotate moves the file away,
/// then signals, and lines go to a new file of the configured name.
struct ReopenOnUsr1;

#[async_trait]
impl BackgroundService for ReopenOnUsr1 {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let kind = tokio::signal::unix::SignalKind::user_defined1();
        let Ok(mut usr1) = tokio::signal::unix::signal(kind) else {
            tracing::error!("cannot listen for SIGUSR1: the access log file is not reopened");
            return;
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => match crate::access_line::reopen_access_log() {
                    Ok(Some(path)) => tracing::info!(event = "access_log_reopened", path = %path.display()),
                    Ok(None) => tracing::debug!("SIGUSR1 without an access log file: nothing to reopen"),
                    Err(e) => tracing::error!(event = "access_log_reopen_failed", error = %e, "access lines keep going to the old file"),
                },
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
        }
    }
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
