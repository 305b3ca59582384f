//! `run`: wires config, Docker, the HTTP clients and the actor tree together, and runs until
//! SIGTERM or Ctrl-C, then flushes the trace exporter; if the actor tree stops on its own, `run`
//! fails so the process exits non-zero. `start` is the same wiring over any
//! effects, for tests.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::join_all;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::actors::messages::SupervisorMsg;
use crate::actors::supervisor::{Deps, Supervisor, SupervisorArgs};
use crate::clients::engine::EngineClient;
use crate::clients::gluetun::GluetunClient;
use crate::config::{Config, OnShutdown, VpnMode};
use crate::core::labels::LabelKeys;
use crate::metrics::Metrics;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::instrumented::Instrumented;
use crate::runtime::{ContainerRuntime, ListQuery};

/// Reads the Gluetun API keys from the env vars the config names (secrets never live in the file).
pub fn gluetun_keys(config: &Config) -> Vec<Option<String>> {
    config
        .vpn
        .gluetun
        .iter()
        .map(|g| {
            let var = g.api_key_env.as_deref()?;
            let key = std::env::var(var).ok().filter(|k| !k.is_empty());
            if key.is_none() {
                warn!(vpn = %g.container, env = var, "Gluetun API key env var is not set: probing without a key");
            }
            key
        })
        .collect()
}

/// Starts the actor tree over `deps`. The Supervisor is unnamed, so tests can run many trees in
/// one process.
pub async fn start(
    config: Config,
    deps: Deps,
    gluetun_keys: Vec<Option<String>>,
) -> anyhow::Result<(ActorRef<SupervisorMsg>, JoinHandle<()>)> {
    let (sup, handle) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config,
            deps,
            gluetun_keys,
        },
    )
    .await
    .context("cannot start the supervisor")?;
    Ok((sup, handle))
}

/// Why the daemon stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or Ctrl-C: a requested shutdown.
    Signal,
    /// The Supervisor stopped on its own: nothing supervises the engines any more.
    TreeDied,
}

/// Waits for a shutdown signal or for the Supervisor (whose task is `tree`) to stop, whichever
/// comes first.
pub async fn until_stopped(
    tree: &mut JoinHandle<()>,
    signal: impl std::future::Future<Output = ()>,
) -> Stopped {
    tokio::select! {
        () = signal => Stopped::Signal,
        _ = tree => Stopped::TreeDied,
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C; fails when the actor tree stops on its own.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Inside the runtime: the gRPC trace exporter needs it.
    let telemetry = crate::telemetry::init(&config);
    let docker = DockerRuntime::connect(config.docker.host.as_deref(), config.docker.call_timeout)
        .context("cannot set up the Docker client")?;
    match docker.ping().await {
        Ok(()) => info!("Docker reachable"),
        Err(e) => warn!(error = %e, "Docker not reachable yet; acevisor keeps trying"),
    }
    if config.vpn.mode == VpnMode::None
        && let Err(e) = docker
            .create_network_if_missing(&config.docker.network, &config.docker.labels)
            .await
    {
        warn!(network = %config.docker.network, error = %e, "cannot create the engine network");
    }
    // Docker call latency for /metrics; DockerRuntime opens its own `docker.<op>` spans.
    let metrics = Arc::new(Metrics::new());
    let runtime: Arc<dyn ContainerRuntime> =
        Arc::new(Instrumented::new(docker, metrics.clone()).without_spans());
    let deps = Deps {
        runtime: runtime.clone(),
        control: Arc::new(
            GluetunClient::new(config.vpn.control_timeout)
                .context("cannot build the Gluetun client")?,
        ),
        engine_api: Arc::new(
            EngineClient::new(config.engines.health.timeout)
                .context("cannot build the engine client")?,
        ),
        name_registry: None,
    };
    let keys = gluetun_keys(&config);
    let api_config = config.clone();
    info!(mode = ?config.vpn.mode, vpns = config.vpn.gluetun.len(), min_replicas = config.engines.min_replicas, "acevisor starting");
    let on_shutdown = config.engines.on_shutdown;
    let stop_timeout = config.docker.stop_timeout;
    let managed = LabelKeys::new(&config.docker.label_prefix);
    let instance = config.instance.clone();
    let (sup, handle) = start(config, deps, keys).await?;
    let (stop_api, api_stopped) = tokio::sync::watch::channel(false);
    let api = crate::api::launch(&api_config, sup.clone(), metrics, async move {
        let mut stopped = api_stopped;
        let _ = stopped.wait_for(|s| *s).await;
    })
    .await?;
    info!(listen = %api.local_addr, "API serving");
    let mut handle = handle;
    let stopped = until_stopped(&mut handle, shutdown_signal()).await;
    let _ = stop_api.send(true);
    if stopped == Stopped::TreeDied {
        // Nothing supervises the engines any more: exit non-zero so the container's restart
        // policy starts a fresh acevisor, which adopts the engines from their labels.
        error!("the supervisor stopped unexpectedly; exiting so acevisor is restarted");
        if let Ok(Err(e)) = api.server.await {
            warn!(error = %e, "API server stopped with an error");
        }
        telemetry.shutdown().await;
        anyhow::bail!("the supervisor stopped unexpectedly");
    }
    if let Ok(Err(e)) = api.server.await {
        warn!(error = %e, "API server stopped with an error");
    }
    // Stops its children too, the Streams actor among them.
    sup.stop(Some("shutdown".into()));
    let _ = handle.await;
    match on_shutdown {
        OnShutdown::Keep => info!("shut down; engines keep running (on_shutdown = \"keep\")"),
        OnShutdown::Remove => {
            remove_managed_engines(&*runtime, &managed, &instance, stop_timeout).await
        }
    }
    telemetry.shutdown().await;
    Ok(())
}

/// `on_shutdown = "remove"`: removes every engine of this instance, found by its labels, as an
/// ordinary removal does: stopped gracefully first (SIGTERM, SIGKILL after `stop_timeout`), all at
/// once, then removed. Runs after the actor tree stopped, so nothing recreates them.
pub async fn remove_managed_engines(
    runtime: &dyn ContainerRuntime,
    keys: &LabelKeys,
    instance: &str,
    stop_timeout: Duration,
) {
    let query = ListQuery {
        labels: vec![
            keys.managed_filter(instance),
            format!("{}=engine", keys.key("role")),
        ],
        name: None,
        all: true,
    };
    let engines = match runtime.list(&query).await {
        Ok(engines) => engines,
        Err(e) => {
            warn!(error = %e, "on_shutdown = \"remove\": cannot list the engines; they keep running");
            return;
        }
    };
    info!(
        engines = engines.len(),
        ?stop_timeout,
        "on_shutdown = \"remove\": stopping and removing engines"
    );
    join_all(engines.iter().map(|engine| async move {
        // A failed stop is no reason to keep the engine: the removal forces it.
        if let Err(e) = runtime.stop(&engine.id, stop_timeout).await {
            warn!(engine = %engine.name, container_id = %engine.id, error = %e, "engine did not stop gracefully; removing it by force");
        }
        match runtime.remove(&engine.id).await {
            Ok(()) => info!(engine = %engine.name, container_id = %engine.id, "engine removed"),
            Err(e) => {
                warn!(engine = %engine.name, container_id = %engine.id, error = %e, "cannot remove engine")
            }
        }
    }))
    .await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
