//! `gateway`: parse the command line, load the config, then check or run.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{Cli, Command};
use gateway::config::{self, Config, ConfigErrors};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(config.as_deref()) {
            Ok(c) => {
                println!("ok: {}: {}", c.source.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match load(config.as_deref()) {
            Ok(c) => gateway::app::run(c),
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("not starting: {} problem(s) in the config", errors.0.len());
                ExitCode::FAILURE
            }
        },
    }
}
