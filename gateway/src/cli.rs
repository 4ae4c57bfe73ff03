//! Command line: `gateway run`, `gateway check` (like `nginx -t`).

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
    },
    /// Validate a config file and exit: 0 with a summary, or 1 listing every problem.
    Check {
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
}
