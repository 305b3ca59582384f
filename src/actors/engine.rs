//! The Engine actor: one per engine container. Creates (or adopts) its container, waits for its
//! HTTP API (readiness), probes its health on an interval, reacts to its Docker events, renames
//! it when told (names close their gaps), and stops it gracefully then removes it when told. It reports facts to the Supervisor; it decides nothing about the pool.
//!
//! Creation: `Started` as soon as Docker reports the container started (the Supervisor frees
//! the creation permit), then the runtime's start-settle check (`confirm_start`) while the engine's
//! API is already tried; `Created` once the container survived it, `CreateFailed` when it exited.
//!
//! Tracing: creation and the wait for readiness run in the `engine.create` span the Supervisor
//! opened for the decision (`EngineArgs::span`), dropped once the engine is ready, so health
//! probes never attach to the incident that created the engine. A removal runs in the
//! `engine.remove` span its `Remove` message carries; a container that dies on its own opens an
//! `engine.died` trace.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::{Instrument, Span, field, info, info_span, warn};

use crate::actors::messages::{EngineMsg, EngineReport, GoneCause, SupervisorMsg};
use crate::clients::EngineApi;
use crate::config::HealthConfig;
use crate::runtime::{ContainerRuntime, ContainerSpec, EventKind, RuntimeError};

/// How the actor comes to its container.
#[derive(Clone, Debug)]
pub enum EngineMode {
    Create(ContainerSpec),
    Adopt { container_id: String },
}

pub struct EngineArgs {
    pub name: String,
    pub mode: EngineMode,
    pub http_port: u16,
    /// Address the engine answers on (the VPN's IP); `None` = look up the engine's own IP.
    pub host: Option<String>,
    /// Docker network to look the engine's IP up on (mode `none`).
    pub network: Option<String>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub engine_api: Arc<dyn EngineApi>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub health: HealthConfig,
    pub ready_timeout: Duration,
    /// The grace a removed engine gets between SIGTERM and SIGKILL (`docker.stop_timeout`).
    pub stop_timeout: Duration,
    /// The `engine.create` span (until ready); `Span::none()` for an adopted container.
    pub span: Span,
}

pub struct EngineState {
    /// This actor's id, sent with every report so the Supervisor can tell a stale actor's
    /// reports (an engine it has already forgotten, whose name was reused) from the current one's.
    actor: ActorId,
    args: EngineArgs,
    container_id: Option<String>,
    started: Instant,
    ready: bool,
    failures: u32,
    unhealthy: bool,
    removing: bool,
    /// The last removal error logged (a Docker outage is logged once, not once per retry).
    remove_error: Option<String>,
    /// Why the container is being removed, kept across retries so a death stays a death.
    gone_cause: Option<GoneCause>,
    /// The graceful stop before the removal is done (a retried removal does not stop again).
    stopped: bool,
}

impl EngineState {
    fn report(&self, report: EngineReport) {
        let _ = self.args.supervisor.cast(SupervisorMsg::Engine {
            name: self.args.name.clone(),
            actor: self.actor,
            report,
        });
    }

    fn readiness_poll(&self) -> Duration {
        self.args.health.interval.min(Duration::from_millis(250))
    }
}

pub struct Engine;

impl Actor for Engine {
    type Msg = EngineMsg;
    type State = EngineState;
    type Arguments = EngineArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EngineMsg>,
        args: EngineArgs,
    ) -> Result<EngineState, ActorProcessingErr> {
        let container_id = match &args.mode {
            EngineMode::Adopt { container_id } => Some(container_id.clone()),
            EngineMode::Create(_) => None,
        };
        Ok(EngineState {
            actor: myself.get_id(),
            args,
            container_id,
            started: Instant::now(),
            ready: false,
            failures: 0,
            unhealthy: false,
            removing: false,
            remove_error: None,
            gone_cause: None,
            stopped: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<EngineMsg>,
        _st: &mut EngineState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(EngineMsg::Start)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<EngineMsg>,
        msg: EngineMsg,
        st: &mut EngineState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EngineMsg::Start => {
                let span = st.args.span.clone();
                start(&myself, st).instrument(span).await
            }
            EngineMsg::ProbeReady if !st.removing && !st.ready => {
                let span = st.args.span.clone();
                probe_ready(&myself, st).instrument(span).await
            }
            EngineMsg::Probe if !st.removing => probe(&myself, st).await,
            EngineMsg::Docker { id, kind }
                if !st.removing && st.container_id.as_deref() == Some(id.as_str()) =>
            {
                on_docker(&myself, st, kind).await
            }
            EngineMsg::Remove => remove(&myself, st, GoneCause::Removed).await,
            EngineMsg::Rename { to } => rename(st, to).await,
            _ => {}
        }
        Ok(())
    }
}

async fn start(myself: &ActorRef<EngineMsg>, st: &mut EngineState) {
    // The engine's API already answered during its start-settle check.
    let mut answered_early = false;
    if let EngineMode::Create(spec) = &st.args.mode {
        match st.args.runtime.start_new(spec).await {
            Ok(id) => {
                Span::current().record("container_id", id.as_str());
                // Docker says it runs: the creation permit is free from here. A container that
                // exits within the settle window is still a failed creation.
                st.report(EngineReport::Started {
                    container_id: id.clone(),
                });
                let (settled, answered) = settle_while_probing(st, &id).await;
                if let Err(e) = settled {
                    creation_failed(myself, st, e.to_string());
                    return;
                }
                info!(engine = %st.args.name, container_id = %id, "engine container started");
                st.container_id = Some(id);
                answered_early = answered;
            }
            Err(e) => match created_anyway(st.args.runtime.as_ref(), spec).await {
                // Docker did create and start it, but the reply was lost (timeout, broken
                // connection).
                Some((id, true)) => {
                    warn!(engine = %st.args.name, container_id = %id, error = %e, "creation reply lost, but the container runs: adopting it");
                    st.container_id = Some(id);
                }
                found => {
                    // Created but never started (the create reply was lost, so no start was
                    // sent): removed, so the name it holds is free when the creation is retried.
                    let mut error = e.to_string();
                    if let Some((id, false)) = found {
                        match st.args.runtime.remove(&id).await {
                            Ok(()) => {
                                info!(engine = %st.args.name, container_id = %id, "removed the container a failed creation left created but not started")
                            }
                            Err(re) => {
                                error = format!(
                                    "{error}; and its container {id}, created but not started, could not be removed: {re}"
                                );
                            }
                        }
                    }
                    creation_failed(myself, st, error);
                    return;
                }
            },
        }
    }
    let id = st.container_id.clone().unwrap_or_default();
    if st.args.host.is_none() {
        match st.args.runtime.inspect(&id).await {
            Ok(Some(info)) => st.args.host = info.ip_on(st.args.network.as_deref()),
            Ok(None) => {
                st.report(EngineReport::Gone {
                    cause: GoneCause::Destroyed,
                });
                myself.stop(None);
                return;
            }
            Err(e) => {
                warn!(engine = %st.args.name, error = %e, "cannot look up the engine's address yet")
            }
        }
    }
    st.started = Instant::now();
    st.report(EngineReport::Created {
        container_id: id,
        host: st.args.host.clone(),
    });
    if answered_early {
        ready(myself, st);
    } else {
        let _ = myself.cast(EngineMsg::ProbeReady);
    }
}

/// How often the engine's API is tried while its container's start is being confirmed.
const EARLY_PROBE: Duration = Duration::from_millis(50);

/// Confirms the start of container `id` and meanwhile, when the engine's address is known, tries
/// its API, so an engine that answers within the settle window is ready the moment its start is
/// confirmed (never before). Returns the confirmation and whether the API answered.
async fn settle_while_probing(
    st: &EngineState,
    id: &str,
) -> (crate::runtime::RuntimeResult<()>, bool) {
    let settle = st.args.runtime.confirm_start(id);
    tokio::pin!(settle);
    let Some(host) = st.args.host.clone() else {
        return (settle.await, false);
    };
    let api = st.args.engine_api.clone();
    let port = st.args.http_port;
    let answers = async move {
        while api.status(&host, port).await.is_err() {
            tokio::time::sleep(EARLY_PROBE).await;
        }
    };
    tokio::select! {
        biased;
        settled = &mut settle => (settled, false),
        () = answers => (settle.await, true),
    }
}

fn ready(myself: &ActorRef<EngineMsg>, st: &mut EngineState) {
    st.ready = true;
    st.report(EngineReport::Ready);
    st.args.span = Span::none();
    myself.send_after(st.args.health.interval, || EngineMsg::Probe);
}

/// Reports a failed creation (its container removed or never made) and stops the actor.
fn creation_failed(myself: &ActorRef<EngineMsg>, st: &EngineState, error: String) {
    let span = Span::current();
    span.record("error", field::display(&error));
    span.record("otel.status_code", "error");
    warn!(engine = %st.args.name, error = %error, "engine creation failed");
    st.report(EngineReport::CreateFailed { error });
    myself.stop(None);
}

/// After a failed create: the container of that name and whether it runs, when it is exactly
/// the one asked for (it carries every label of the spec), so a lost reply never leaves an
/// orphan behind.
async fn created_anyway(
    runtime: &dyn ContainerRuntime,
    spec: &ContainerSpec,
) -> Option<(String, bool)> {
    let info = runtime.inspect(&spec.name).await.ok()??;
    let ours = spec
        .labels
        .iter()
        .all(|(k, v)| info.labels.get(k) == Some(v));
    ours.then_some((info.id, info.running))
}

async fn probe_ready(myself: &ActorRef<EngineMsg>, st: &mut EngineState) {
    let answered = match &st.args.host {
        Some(host) => st
            .args
            .engine_api
            .status(host, st.args.http_port)
            .await
            .is_ok(),
        None => false,
    };
    if answered {
        ready(myself, st);
    } else if st.started.elapsed() >= st.args.ready_timeout {
        warn!(engine = %st.args.name, timeout = ?st.args.ready_timeout, "engine API never answered: unhealthy");
        st.ready = true;
        st.unhealthy = true;
        st.report(EngineReport::Unhealthy {
            since: Instant::now(),
        });
        st.args.span = Span::none();
        myself.send_after(st.args.health.interval, || EngineMsg::Probe);
    } else {
        myself.send_after(st.readiness_poll(), || EngineMsg::ProbeReady);
    }
}

async fn probe(myself: &ActorRef<EngineMsg>, st: &mut EngineState) {
    let result = match &st.args.host {
        Some(host) => st.args.engine_api.status(host, st.args.http_port).await,
        None => Err("no address known".to_string()),
    };
    match result {
        Ok(()) => {
            st.failures = 0;
            if st.unhealthy {
                st.unhealthy = false;
                info!(engine = %st.args.name, "engine healthy again");
                st.report(EngineReport::Healthy);
            }
        }
        Err(e) => {
            st.failures += 1;
            if st.failures >= st.args.health.failure_threshold && !st.unhealthy {
                st.unhealthy = true;
                warn!(engine = %st.args.name, failures = st.failures, error = %e, "engine unhealthy");
                st.report(EngineReport::Unhealthy {
                    since: Instant::now(),
                });
            }
        }
    }
    myself.send_after(st.args.health.interval, || EngineMsg::Probe);
}

async fn on_docker(myself: &ActorRef<EngineMsg>, st: &mut EngineState, kind: EventKind) {
    match kind {
        EventKind::Die { exit_code } => {
            let span = info_span!(parent: None, "engine.died", engine = %st.args.name, exit_code);
            async {
                warn!(engine = %st.args.name, ?exit_code, "engine container died");
                remove(myself, st, GoneCause::Died { exit_code }).await;
            }
            .instrument(span)
            .await
        }
        EventKind::Destroy => {
            warn!(engine = %st.args.name, "engine container removed out of band");
            st.removing = true;
            st.report(EngineReport::Gone {
                cause: GoneCause::Destroyed,
            });
            myself.stop(None);
        }
        _ => {}
    }
}

/// Removes the container and reports it gone once Docker confirms; on a Docker error, retries
/// with backoff (the number stays held until the container is really gone).
async fn remove(myself: &ActorRef<EngineMsg>, st: &mut EngineState, cause: GoneCause) {
    st.removing = true;
    // A retry after a failed removal keeps the first cause (a died engine stays died).
    let cause = st.gone_cause.get_or_insert(cause).clone();
    st.args.span = Span::none();
    let Some(id) = st.container_id.clone() else {
        st.report(EngineReport::Gone { cause });
        myself.stop(None);
        return;
    };
    // Stopped gracefully first: a real engine flushes its state on SIGTERM. An engine that died
    // has exited already. A failed stop is no reason to keep the engine: the removal forces it.
    if cause == GoneCause::Removed && !st.stopped {
        match st.args.runtime.stop(&id, st.args.stop_timeout).await {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => st.stopped = true,
            Err(e) if e.is_transport() => {
                if st.remove_error.as_deref() != Some(e.to_string().as_str()) {
                    warn!(engine = %st.args.name, container_id = %id, error = %e, "engine stop failed; retrying");
                }
                st.remove_error = Some(e.to_string());
                myself.send_after(Duration::from_secs(1), || EngineMsg::Remove);
                return;
            }
            Err(e) => {
                warn!(engine = %st.args.name, container_id = %id, error = %e, "engine did not stop gracefully; removing it by force");
                st.stopped = true;
            }
        }
    }
    let result = match st.args.runtime.remove(&id).await {
        Ok(()) => st
            .args
            .runtime
            .inspect(&id)
            .await
            .map(|left| left.is_none()),
        Err(e) => Err(e),
    };
    match result {
        Ok(true) => {
            st.report(EngineReport::Gone { cause });
            myself.stop(None);
        }
        Ok(false) => {
            myself.send_after(Duration::from_millis(200), || EngineMsg::Remove);
        }
        Err(e) => {
            if st.remove_error.as_deref() != Some(e.to_string().as_str()) {
                warn!(engine = %st.args.name, container_id = %id, error = %e, "engine removal failed; retrying");
            }
            st.remove_error = Some(e.to_string());
            myself.send_after(Duration::from_secs(1), || EngineMsg::Remove);
        }
    }
}

/// Renames the container (Docker does it atomically, the engine keeps running) and reports the
/// outcome; from then on this actor reports under the new name.
async fn rename(st: &mut EngineState, to: String) {
    let result = match st.container_id.clone() {
        Some(id) => st.args.runtime.rename(&id, &to).await,
        None => Err(RuntimeError::NotFound {
            op: "rename",
            target: st.args.name.clone(),
        }),
    };
    match result {
        Ok(()) => {
            info!(engine = %st.args.name, to = %to, "engine renamed");
            // Reported under the old name, which the Supervisor still knows it by.
            st.report(EngineReport::Renamed { to: to.clone() });
            st.args.name = to;
        }
        Err(e) => {
            warn!(engine = %st.args.name, to = %to, error = %e, "engine rename failed");
            st.report(EngineReport::RenameFailed {
                conflict: matches!(e, RuntimeError::Conflict { .. }),
                to,
                error: e.to_string(),
            });
        }
    }
}
