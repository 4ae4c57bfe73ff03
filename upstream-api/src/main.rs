//! upstream-api: parse flags, set up JSON logs, serve until SIGTERM/SIGINT, drain, exit.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use upstream_api::{serve, AppState};

/// The small API that runs behind the gateway (and behind every test).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Replica id reported by /api/whoami (defaults to the listen address).
    #[arg(long, env = "REPLICA_ID")]
    replica_id: Option<String>,
    /// How long /readyz reports "draining" before the listener stops after SIGTERM,
    /// so that load balancers notice before connections are refused.
    #[arg(long, env = "DRAIN_DELAY", default_value = "0s", value_parser = humantime_duration)]
    drain_delay: Duration,
    /// While this file exists, /readyz answers 503 ("maintenance"): take the replica out of
    /// rotation without stopping it.
    #[arg(long, env = "MAINTENANCE_FILE")]
    maintenance_file: Option<std::path::PathBuf>,
    /// `healthcheck` probes http://LISTEN/healthz and exits 0 when it answers 200
    /// (for container HEALTHCHECKs: no curl needed in the image).
    /// Names `/tls/allowed` (the gateway's on-demand TLS ask endpoint) allows, comma
    /// separated; `*.example.com` allows every subdomain.
    #[arg(long, env = "TLS_ALLOWED_DOMAINS", value_delimiter = ',')]
    tls_allowed_domains: Vec<String>,
    #[arg(value_parser = ["serve", "healthcheck"], default_value = "serve")]
    command: String,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    upstream_api::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (e.g. 500ms, 5s)"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.command == "healthcheck" {
        return match upstream_api::probe(args.listen).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    upstream_api::init_logging();
    // In a container the hostname tells replicas apart (Compose: the container id).
    let replica_id = args
        .replica_id
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| args.listen.to_string());
    let tls_allowed = args
        .tls_allowed_domains
        .into_iter()
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let state = AppState::new(replica_id, args.maintenance_file, tls_allowed);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %args.listen, error = %e, "cannot bind");
            return std::process::ExitCode::FAILURE;
        }
    };
    match serve(
        listener,
        state,
        upstream_api::shutdown_signal(),
        args.drain_delay,
    )
    .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            std::process::ExitCode::FAILURE
        }
    }
}
