//! `run`: wires config, runtime, clients and the actor tree together and runs until a signal.

use crate::config::Config;

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("not implemented yet")
}
