//! The `acevisor` command line: `run` the daemon, `check-config` a file, or `healthcheck` a
//! running daemon (the container image's `HEALTHCHECK`).
//!
//! This is the only place that uses `anyhow` and decides exit codes: 0 on success, 2 for any
//! problem with the config file (unreadable, unparsable, refused by validation) before anything
//! starts, 1 when the daemon itself fails or a health check fails. Clap's own usage errors also
//! exit 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use acevisor::config::{Config, LoadError};
use anyhow::Context;
use clap::{Parser, Subcommand};

const DEFAULT_CONFIG: &str = "config/acevisor.toml";
const DEFAULT_HEALTH_URL: &str = "http://127.0.0.1:8000/livez";

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
    /// Ask a running daemon whether it is alive: exit 0 when the URL answers 200, else 1.
    ///
    /// Made for the container image's `HEALTHCHECK`; it needs no config file.
    Healthcheck {
        /// URL to GET (acevisor's `/livez` on the port of `api.listen`).
        #[arg(long, value_name = "URL", env = "ACEVISOR_HEALTHCHECK_URL", default_value = DEFAULT_HEALTH_URL)]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    // Later: `demo`, `status`.
}

/// Exit code for a config that cannot be used (and for clap usage errors).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { path } => check_config(&path),
        Command::Healthcheck { url, timeout } => healthcheck(&url, timeout),
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
    let key_set = config
        .api
        .api_key_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .is_some_and(|key| !key.is_empty());
    if let Some(why) = acevisor::config_check::open_api_refusal(&config, key_set) {
        eprintln!("error: {why}");
        return ExitCode::from(EXIT_CONFIG);
    }
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

/// One GET with a short timeout and no proxy (the target is the daemon itself, usually on
/// loopback). A current-thread runtime is plenty for one request.
fn healthcheck(url: &str, timeout: Duration) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(probe(url, timeout)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "GET {url} answered {status}"
    );
    Ok(())
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

    #[test]
    fn healthcheck_defaults_to_livez_on_loopback() {
        let cli = Cli::try_parse_from(["acevisor", "healthcheck"]).unwrap();
        match cli.command {
            Command::Healthcheck { url, timeout } => {
                if std::env::var_os("ACEVISOR_HEALTHCHECK_URL").is_none() {
                    assert_eq!(url, DEFAULT_HEALTH_URL);
                }
                assert_eq!(timeout, Duration::from_secs(3));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "acevisor",
            "healthcheck",
            "--url",
            "http://10.0.0.2:9000/livez",
            "--timeout",
            "500ms",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Healthcheck { url, timeout }
                if url == "http://10.0.0.2:9000/livez" && timeout == Duration::from_millis(500)
        ));
    }
}
