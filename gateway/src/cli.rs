//! Command line: `gateway run`, `check` (like `nginx -t`), `reload`, `status`,
//! `healthcheck`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "An edge gateway: TLS, routing, health-checked round robin."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve with the given config (or the embedded localhost default).
    Run {
        /// Config file; without it the embedded default (config/gateway.toml) is used.
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Take over the listening sockets of a running gateway (then send it SIGQUIT):
        /// a binary upgrade or listener change without refusing a connection.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file and exit: 0 with a summary, or 1 listing every problem.
    Check {
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the running gateway to reload its config file; exits 1 printing the problems
    /// when the new config is refused (the old one keeps serving).
    Reload {
        /// The config file of the running gateway (to find its admin listener).
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// The admin listener's address, instead of reading it from the config.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Print the running gateway's /status (routes, pools and replica health,
    /// certificates, reloads) as JSON: `docker compose exec gateway gateway status`.
    Status {
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Do nothing until SIGTERM or SIGINT. In Compose this holds the network namespace
    /// (and the published ports) that gateway containers join, so a new gateway can
    /// take over from an old one without the ports going away (docs/deploy.md).
    Hold,
    /// Probe the admin listener's /healthz (for container HEALTHCHECKs): exit 0 if alive.
    Healthcheck {
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
}
