//! `gateway`: parse the command line, load the config, then check, run, or talk to the
//! running gateway's admin listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gateway::cli::{Cli, Command};
use gateway::config::{self, Config, ConfigErrors};

/// mimalloc: measured on this machine (docs/performance.md) as a large share of the
/// gap between glibc malloc and nginx on the request path.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => config::load(p),
        None => config::load_str(
            Path::new(config::DEFAULT_CONFIG_NAME),
            config::DEFAULT_CONFIG,
            &|n| std::env::var(n).ok(),
        ),
    }
}

/// The admin address: `--admin`, else the config's, else the default. A config that
/// does not load still lets `reload` reach the gateway, which then reports the problems.
fn admin_address(flag: Option<SocketAddr>, config: Option<&Path>) -> SocketAddr {
    flag.or_else(|| load(config).ok().map(|c| c.admin.address))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)))
}

fn reload(flag: Option<SocketAddr>, config: Option<PathBuf>) -> ExitCode {
    let addr = admin_address(flag, config.as_deref());
    match gateway::client::request(addr, "POST", "/reload", Duration::from_secs(60)) {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            println!("reloaded");
            for k in v["needs_restart"].as_array().into_iter().flatten() {
                println!(
                    "needs restart to change: {}",
                    k.as_str().unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Ok((_, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match v["errors"].as_array() {
                Some(errors) => errors
                    .iter()
                    .for_each(|e| eprintln!("{}", e.as_str().unwrap_or_default())),
                None => eprintln!("{body}"),
            }
            eprintln!("reload refused: the running config is unchanged");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT, doing nothing (`gateway hold`).
fn hold() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("cannot listen for signals");
            return ExitCode::FAILURE;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(config.as_deref()) {
            Ok(c) => {
                for w in &c.warnings {
                    println!("warning: {}: {w}", c.source.display());
                }
                println!("ok: {}: {}", c.source.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Run { config, upgrade } => match load(config.as_deref()) {
            Ok(c) => gateway::app::run(c, config, upgrade),
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("not starting: {} problem(s) in the config", errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Reload { config, admin } => reload(admin, config),
        Command::Status { config, admin } => {
            let addr = admin_address(admin, config.as_deref());
            match gateway::client::request(addr, "GET", "/status", Duration::from_secs(10)) {
                Ok((200, body)) => {
                    match serde_json::from_str::<serde_json::Value>(&body) {
                        Ok(v) => println!("{v:#}"),
                        Err(_) => println!("{body}"),
                    }
                    ExitCode::SUCCESS
                }
                Ok((status, body)) => {
                    eprintln!("status {status}: {body}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Hold => hold(),
        Command::Healthcheck { config, admin } => {
            let addr = admin_address(admin, config.as_deref());
            match gateway::client::request(addr, "GET", "/healthz", Duration::from_secs(3)) {
                Ok((200, _)) => ExitCode::SUCCESS,
                Ok((status, _)) => {
                    eprintln!("unhealthy: {status}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
