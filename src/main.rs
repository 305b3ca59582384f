//! The `acevisor` command line: `run` the daemon or `check-config` a file.
//!
//! This is the only place that uses `anyhow` and decides exit codes: 0 on success, 2 for any
//! problem with the config file (unreadable, unparsable, refused by validation) before anything
//! starts, 1 when the daemon itself fails. Clap's own usage errors also exit 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use acevisor::config::{Config, LoadError};
use anyhow::Context;
use clap::{Parser, Subcommand};

const DEFAULT_CONFIG: &str = "config/acevisor.toml";

#[derive(Debug, Parser)]
#[command(name = "acevisor", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: load and validate the config, then supervise engines until SIGTERM/Ctrl-C.
    Run {
        /// Config file to use.
        #[arg(long, short, value_name = "PATH", env = "ACEVISOR_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a config file: print the effective config as TOML (exit 0) or every error (exit 2).
    CheckConfig {
        /// Config file to check.
        #[arg(value_name = "PATH", env = "ACEVISOR_CONFIG", default_value = DEFAULT_CONFIG)]
        path: PathBuf,
    },
    // Later: `demo`, `status`, `healthcheck`.
}

/// Exit code for a config that cannot be used (and for clap usage errors).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { path } => check_config(&path),
    }
}

fn check_config(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return config_refused(&e),
    };
    match toml::to_string(&config) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: cannot print the effective config of {}: {e}",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return config_refused(&e),
    };
    match run_daemon(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(acevisor::daemon::run(config))
}

fn config_refused(e: &LoadError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_path_defaults_and_overrides() {
        let cli = Cli::try_parse_from(["acevisor", "run", "--config", "/etc/a.toml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Run { config } if config == Path::new("/etc/a.toml"))
        );
        let cli = Cli::try_parse_from(["acevisor", "check-config", "x.toml"]).unwrap();
        assert!(
            matches!(cli.command, Command::CheckConfig { path } if path == Path::new("x.toml"))
        );
    }
}
