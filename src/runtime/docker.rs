//! `DockerRuntime`: `ContainerRuntime` over the Docker API (bollard), with a timeout on every call.
//!
//! What this module owns, beyond translating calls:
//! - **Deadlines.** Every request runs under `call_timeout` (`RuntimeError::Timeout`); `stop` and
//!   `restart` get the container's stop grace on top.
//! - **Errors keep Docker's words.** 404 and 409 are mapped per operation (a 404 on create is a
//!   missing image or network, not a missing container), transport failures become `Unreachable`.
//! - **Names are never renumbered.** A create that hits a 409 because Docker is still removing the
//!   previous holder of the name waits with short backoff until the holder is gone (within the call
//!   timeout); a name held by a container that is *not* being removed is a `Conflict` at once.
//! - **A start that dies at once is a failed start.** `start_new` returns once Docker reports the
//!   container started (so a caller's creation permit is free for the next one); `confirm_start`
//!   then gives it a short settle window, and if it exits inside it (an engine whose P2P port is
//!   taken), fails with the exit code and the container's last log lines, and removes it.
//! - **Listing is one call.** `list_brief` answers from Docker's container list alone (IDs,
//!   names, labels, state) and inspects only a container whose state the list leaves ambiguous;
//!   `list` inspects every container, for `StartedAt`, health and addresses.
//! - **Events without a gap.** `events()` asks Docker to replay from the moment of the call, so
//!   "subscribe, then list" loses nothing even though the HTTP request goes out on first poll.
//!   The stream never simply ends: a closed connection is a final `Err` item (reconnect, re-list).
//!
//! Each Docker call runs inside a `docker.<op>` tracing span with `container` and `error` fields.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, EventMessage, EventMessageTypeEnum, HealthStatusEnum, HostConfig,
    NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    InspectNetworkOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, RestartContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use tracing::{Instrument, Span, field};

use super::calls::op_span;
use super::{
    Attach, ContainerBrief, ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec,
    DockerHealth, EventKind, EventStream, ListQuery, RuntimeError, RuntimeResult,
};

/// How long a freshly started container must keep running before `confirm_start` calls it
/// started. Long enough to catch a process that fails on its first syscalls (a taken port), short
/// enough not to matter next to an engine's own start-up time.
pub const DEFAULT_START_SETTLE: Duration = Duration::from_millis(300);

/// Backoff bounds while waiting for Docker to finish removing a name's previous holder.
const NAME_WAIT_FIRST: Duration = Duration::from_millis(25);
const NAME_WAIT_MAX: Duration = Duration::from_millis(400);

/// Docker's default grace for `restart` when none is given.
const DOCKER_DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How many inspects `list` runs at once.
const LIST_INSPECT_CONCURRENCY: usize = 8;

/// Replay margin for `events()`: covers clock skew between us and a remote daemon. Replayed
/// events are harmless (they are triggers to re-inspect), lost ones are not.
const EVENTS_REPLAY_MARGIN: Duration = Duration::from_secs(1);

/// How many log lines of a container that died during start go into the error.
const FAILED_START_LOG_LINES: &str = "20";

/// The Docker engine, reached over a Unix socket or plain HTTP.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    call_timeout: Duration,
    start_settle: Duration,
    /// Creates that had to wait for Docker to release a name (shared by clones).
    name_waits: Arc<AtomicU64>,
}

/// Who holds a name Docker refused to give us.
enum NameHolder {
    /// Nobody any more, or a container in the middle of removal: worth waiting for.
    Leaving,
    /// A container that is not going away by itself, with its Docker status.
    Staying(String),
}

impl DockerRuntime {
    /// Connects to `host` (`unix:///path`, `tcp://host:port` or `http://host:port`), else to
    /// `DOCKER_HOST`, else to the local socket. Nothing is sent yet: call `ping` to check the
    /// daemon. A Unix socket path that does not exist is `Unreachable` here already; callers retry.
    pub fn connect(host: Option<&str>, call_timeout: Duration) -> RuntimeResult<Self> {
        let host = host
            .map(str::to_string)
            .filter(|h| !h.trim().is_empty())
            .or_else(|| {
                std::env::var("DOCKER_HOST")
                    .ok()
                    .filter(|h| !h.trim().is_empty())
            });
        // bollard's own per-request timeout (whole seconds) only bounds waiting for response
        // headers; ours is the real deadline, so give bollard a little more than that.
        let bollard_secs = call_timeout.as_secs() + 2;
        let connected = match host.as_deref() {
            None => Docker::connect_with_unix(
                "/var/run/docker.sock",
                bollard_secs,
                bollard::API_DEFAULT_VERSION,
            ),
            Some(h) if h.starts_with("unix://") => {
                Docker::connect_with_unix(h, bollard_secs, bollard::API_DEFAULT_VERSION)
            }
            Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
                Docker::connect_with_http(h, bollard_secs, bollard::API_DEFAULT_VERSION)
            }
            Some(h) if h.starts_with('/') => {
                Docker::connect_with_unix(h, bollard_secs, bollard::API_DEFAULT_VERSION)
            }
            Some(h) => {
                return Err(RuntimeError::Unreachable {
                    op: "connect",
                    message: format!(
                        "unsupported Docker host {h:?}: use unix:///path, tcp://host:port or \
                         http://host:port (TLS is not built in)"
                    ),
                });
            }
        };
        let docker = connected.map_err(|e| RuntimeError::Unreachable {
            op: "connect",
            message: error_chain(&e),
        })?;
        Ok(DockerRuntime {
            docker,
            call_timeout,
            start_settle: DEFAULT_START_SETTLE,
            name_waits: Arc::new(AtomicU64::new(0)),
        })
    }

    /// `connect` with the `[docker]` section of the config.
    pub fn from_config(config: &crate::config::DockerConfig) -> RuntimeResult<Self> {
        DockerRuntime::connect(config.host.as_deref(), config.call_timeout)
    }

    /// Changes how long a new container must survive its start (`DEFAULT_START_SETTLE`).
    /// `Duration::ZERO` turns the check off.
    pub fn with_start_settle(mut self, settle: Duration) -> Self {
        self.start_settle = settle;
        self
    }

    /// How many creates so far (by this runtime and its clones) found their name still held by a
    /// container Docker was removing, and waited for it instead of failing.
    pub fn name_conflict_waits(&self) -> u64 {
        self.name_waits.load(Ordering::Relaxed)
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The bollard client, for calls the trait does not cover (tests, diagnostics).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Creates a bridge network unless one of that name exists (mode `none` and tests). Labels
    /// are applied only when it is created here. Losing a creation race to someone else is fine.
    pub async fn create_network_if_missing(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> RuntimeResult<()> {
        let span = op_span("create_network", name);
        async {
            let exists = self
                .timed(self.call_timeout, async {
                    self.docker
                        .inspect_network(name, None::<InspectNetworkOptions>)
                        .await
                })
                .await;
            match exists {
                Ok(_) => return Ok(()),
                Err(BollardCall::Docker(BollardError::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) => {}
                Err(e) => return Err(e.into_runtime("inspect_network", name)),
            }
            let request = NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                labels: Some(to_hash_map(labels)),
                ..Default::default()
            };
            match self
                .timed(self.call_timeout, self.docker.create_network(request))
                .await
            {
                Ok(_) => Ok(()),
                Err(BollardCall::Docker(BollardError::DockerResponseServerError {
                    status_code: 409,
                    ..
                })) => Ok(()),
                Err(e) => Err(e.into_runtime("create_network", name)),
            }
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| record_error(&span, e))
    }

    /// Removes a network; `Ok` when it does not exist.
    pub async fn remove_network(&self, name: &str) -> RuntimeResult<()> {
        let span = op_span("remove_network", name);
        let result = self
            .timed(self.call_timeout, self.docker.remove_network(name))
            .instrument(span.clone())
            .await;
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(BollardCall::Docker(BollardError::DockerResponseServerError {
                status_code: 404,
                ..
            })) => Ok(()),
            Err(e) => Err(e.into_runtime("remove_network", name)),
        };
        outcome.inspect_err(|e| record_error(&span, e))
    }

    /// Runs one Docker request under `limit`.
    async fn timed<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, BollardCall> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(BollardCall::Docker(e)),
            Err(_) => Err(BollardCall::Elapsed(limit)),
        }
    }

    /// Inspect without a span of its own (used inside other operations).
    async fn inspect_raw(
        &self,
        id_or_name: &str,
        limit: Duration,
    ) -> RuntimeResult<Option<ContainerInspectResponse>> {
        let result = self
            .timed(limit, async {
                self.docker
                    .inspect_container(id_or_name, None::<InspectContainerOptions>)
                    .await
            })
            .await;
        match result {
            Ok(r) => Ok(Some(r)),
            Err(BollardCall::Docker(BollardError::DockerResponseServerError {
                status_code: 404,
                ..
            })) => Ok(None),
            Err(e) => Err(e.into_runtime("inspect_container", id_or_name)),
        }
    }

    /// Who holds `name` right now.
    async fn name_holder(&self, name: &str, limit: Duration) -> RuntimeResult<NameHolder> {
        let Some(holder) = self.inspect_raw(name, limit).await? else {
            // The container record is gone; Docker releases the name a moment later.
            return Ok(NameHolder::Leaving);
        };
        let status = holder.state.as_ref().and_then(|s| s.status);
        Ok(match status {
            Some(ContainerStateStatusEnum::REMOVING) => NameHolder::Leaving,
            Some(s) => NameHolder::Staying(s.to_string()),
            None => NameHolder::Staying("unknown".into()),
        })
    }

    /// `create`, waiting out a name that Docker is still releasing. Returns the new ID.
    async fn create_waiting_for_name(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        let deadline = Instant::now() + self.call_timeout;
        let mut backoff = NAME_WAIT_FIRST;
        let mut waited = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let options = CreateContainerOptionsBuilder::new()
                .name(&spec.name)
                .build();
            let result = self
                .timed(
                    remaining,
                    self.docker
                        .create_container(Some(options), create_body(spec)),
                )
                .await;
            let message = match result {
                Ok(created) => {
                    if waited {
                        self.name_waits.fetch_add(1, Ordering::Relaxed);
                        tracing::Span::current().record("waited_for_name", true);
                    }
                    return Ok(created.id);
                }
                Err(BollardCall::Docker(BollardError::DockerResponseServerError {
                    status_code: 409,
                    message,
                })) => message,
                Err(BollardCall::Elapsed(_)) => {
                    return Err(RuntimeError::Timeout {
                        op: "create_container",
                        after: self.call_timeout,
                    });
                }
                Err(BollardCall::Docker(e)) => return Err(map_create_error(e, &spec.name)),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self
                .name_holder(&spec.name, remaining.max(Duration::from_millis(1)))
                .await
            {
                Ok(NameHolder::Staying(status)) => {
                    return Err(RuntimeError::Conflict {
                        op: "create_container",
                        name: spec.name.clone(),
                        message: format!("{message} (holder is {status}, not being removed)"),
                    });
                }
                Ok(NameHolder::Leaving) => {}
                Err(RuntimeError::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() + backoff >= deadline {
                return Err(RuntimeError::Conflict {
                    op: "create_container",
                    name: spec.name.clone(),
                    message: format!(
                        "{message} (still being removed after {:?})",
                        self.call_timeout
                    ),
                });
            }
            waited = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(NAME_WAIT_MAX);
        }
    }

    /// Docker's container list for a query (one call, summaries only).
    async fn list_summaries(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerSummary>> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if !query.labels.is_empty() {
            filters.insert("label".into(), query.labels.clone());
        }
        if let Some(name) = &query.name {
            filters.insert("name".into(), vec![name.clone()]);
        }
        let options = ListContainersOptionsBuilder::new()
            .all(query.all)
            .filters(&filters)
            .build();
        self.timed(self.call_timeout, async {
            self.docker.list_containers(Some(options)).await
        })
        .await
        .map_err(|e| e.into_runtime("list_containers", ""))
    }

    /// Inspects `ids`, a few at a time; a container removed meanwhile is simply left out.
    async fn inspect_all(&self, ids: Vec<String>) -> RuntimeResult<Vec<ContainerInspectResponse>> {
        let inspected: Vec<RuntimeResult<Option<ContainerInspectResponse>>> =
            futures_util::stream::iter(ids)
                .map(|id| async move { self.inspect_raw(&id, self.call_timeout).await })
                .buffer_unordered(LIST_INSPECT_CONCURRENCY)
                .collect()
                .await;
        let mut found = Vec::with_capacity(inspected.len());
        for result in inspected {
            found.extend(result?);
        }
        Ok(found)
    }

    /// After a successful start: fails when the container exits within the settle window.
    async fn check_survives_start(&self, id: &str) -> Result<(), String> {
        if self.start_settle.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(self.start_settle).await;
        let inspected = match self.inspect_raw(id, self.call_timeout).await {
            Ok(Some(i)) => i,
            Ok(None) => return Err("container vanished right after start".into()),
            // Not knowing is not a failure of the container: let health checks decide.
            Err(_) => return Ok(()),
        };
        let state = inspected.state.unwrap_or_default();
        if state.running.unwrap_or(false) {
            return Ok(());
        }
        let code = state.exit_code.unwrap_or(-1);
        let mut message = format!(
            "container exited with code {code} within {:?} of start",
            self.start_settle
        );
        if let Some(err) = state.error.filter(|e| !e.is_empty()) {
            message.push_str(&format!(": {err}"));
        }
        let tail = self.log_tail(id).await;
        if !tail.is_empty() {
            message.push_str(&format!("; last output: {tail}"));
        }
        Err(message)
    }

    /// The last lines a container wrote (stdout and stderr), best effort.
    async fn log_tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(FAILED_START_LOG_LINES)
            .build();
        let collected = self
            .timed(self.call_timeout, async {
                self.docker
                    .logs(id, Some(options))
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await;
        match collected {
            Ok(chunks) => chunks
                .iter()
                .map(|c| c.to_string())
                .collect::<String>()
                .trim()
                .replace('\n', " | "),
            Err(_) => String::new(),
        }
    }

    /// Removes a container we just created and could not start; the start error is what the
    /// caller needs, so a failure here only goes into the span.
    async fn discard(&self, id: &str) {
        if let Err(e) = self.remove(id).await {
            tracing::Span::current().record("cleanup_error", field::display(&e));
        }
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn ping(&self) -> RuntimeResult<()> {
        let span = op_span("ping", "");
        self.timed(self.call_timeout, self.docker.ping())
            .instrument(span.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.into_runtime("ping", ""))
            .inspect_err(|e| record_error(&span, e))
    }

    async fn list(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerInfo>> {
        let span = op_span("list_containers", query.name.as_deref().unwrap_or(""));
        async {
            let summaries = self.list_summaries(query).await?;
            // The summary lacks StartedAt and (before API 1.50) health: inspect each one, so
            // `list` and `inspect` describe a container the same way.
            let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
            let mut infos: Vec<ContainerInfo> = self
                .inspect_all(ids)
                .await?
                .into_iter()
                .map(to_info)
                .collect();
            infos.sort_by(|a, b| a.name.cmp(&b.name));
            Span::current().record("count", infos.len());
            Ok(infos)
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| record_error(&span, e))
    }

    async fn list_brief(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerBrief>> {
        let span = op_span("list_containers", query.name.as_deref().unwrap_or(""));
        async {
            let summaries = self.list_summaries(query).await?;
            let mut briefs = Vec::with_capacity(summaries.len());
            let mut ambiguous = Vec::new();
            for summary in summaries {
                match to_brief(&summary) {
                    Some(brief) => briefs.push(brief),
                    None => ambiguous.extend(summary.id),
                }
            }
            Span::current().record("inspected", ambiguous.len());
            let inspected = self.inspect_all(ambiguous).await?;
            briefs.extend(
                inspected
                    .into_iter()
                    .map(|c| ContainerBrief::from(to_info(c))),
            );
            briefs.sort_by(|a, b| a.name.cmp(&b.name));
            Span::current().record("count", briefs.len());
            Ok(briefs)
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| record_error(&span, e))
    }

    async fn inspect(&self, id_or_name: &str) -> RuntimeResult<Option<ContainerInfo>> {
        let span = op_span("inspect_container", id_or_name);
        self.inspect_raw(id_or_name, self.call_timeout)
            .instrument(span.clone())
            .await
            .map(|found| found.map(to_info))
            .inspect_err(|e| record_error(&span, e))
    }

    async fn start_new(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        let span = op_span("create_container", &spec.name);
        async {
            let id = self.create_waiting_for_name(spec).await?;
            Span::current().record("id", id.as_str());
            let started = self
                .timed(self.call_timeout, async {
                    self.docker
                        .start_container(&id, None::<StartContainerOptions>)
                        .await
                })
                .await;
            if let Err(e) = started {
                self.discard(&id).await;
                return Err(start_error(e, &spec.name));
            }
            Ok(id)
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| record_error(&span, e))
    }

    async fn confirm_start(&self, id: &str) -> RuntimeResult<()> {
        let span = op_span("confirm_start", id);
        async {
            if let Err(message) = self.check_survives_start(id).await {
                self.discard(id).await;
                return Err(RuntimeError::Api {
                    op: "start_container",
                    status: 500,
                    message,
                });
            }
            Ok(())
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| record_error(&span, e))
    }

    async fn stop(&self, id: &str, timeout: Duration) -> RuntimeResult<()> {
        let span = op_span("stop_container", id);
        let grace = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(grace).build();
        self.timed(
            self.call_timeout + timeout,
            self.docker.stop_container(id, Some(options)),
        )
        .instrument(span.clone())
        .await
        .map_err(|e| e.into_runtime("stop_container", id))
        .inspect_err(|e| record_error(&span, e))
    }

    async fn rename(&self, id: &str, new_name: &str) -> RuntimeResult<()> {
        let span = op_span("rename_container", id);
        let options = RenameContainerOptionsBuilder::new().name(new_name).build();
        self.timed(self.call_timeout, self.docker.rename_container(id, options))
            .instrument(span.clone())
            .await
            .map_err(|e| e.into_runtime("rename_container", new_name))
            .inspect_err(|e| record_error(&span, e))
    }

    async fn remove(&self, id: &str) -> RuntimeResult<()> {
        let span = op_span("remove_container", id);
        async {
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            let result = self
                .timed(
                    self.call_timeout,
                    self.docker.remove_container(id, Some(options)),
                )
                .await;
            match result {
                Ok(()) => Ok(()),
                Err(BollardCall::Docker(BollardError::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) => Ok(()),
                Err(BollardCall::Docker(BollardError::DockerResponseServerError {
                    status_code: 409,
                    message,
                })) if message.contains("already in progress") => {
                    // Someone else is removing it: `Ok` must still mean "gone", so wait.
                    self.wait_gone(id, &message).await
                }
                Err(e) => Err(e.into_runtime("remove_container", id)),
            }
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| record_error(&span, e))
    }

    async fn restart(&self, id: &str) -> RuntimeResult<()> {
        let span = op_span("restart_container", id);
        let options = RestartContainerOptionsBuilder::new().build();
        self.timed(
            self.call_timeout + DOCKER_DEFAULT_STOP_GRACE,
            self.docker.restart_container(id, Some(options)),
        )
        .instrument(span.clone())
        .await
        .map_err(|e| e.into_runtime("restart_container", id))
        .inspect_err(|e| record_error(&span, e))
    }

    async fn events(&self) -> RuntimeResult<EventStream> {
        let span = op_span("events", "");
        // Fix the replay point before anything else, then make sure the daemon is there so an
        // unreachable daemon is an `Err` of this call rather than of the first item.
        let since = SystemTime::now()
            .checked_sub(EVENTS_REPLAY_MARGIN)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.timed(self.call_timeout, self.docker.ping())
            .instrument(span.clone())
            .await
            .map_err(|e| e.into_runtime("events", ""))
            .inspect_err(|e| record_error(&span, e))?;
        let filters: HashMap<String, Vec<String>> = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                ["start", "die", "stop", "destroy", "health_status"]
                    .map(String::from)
                    .to_vec(),
            ),
        ]);
        let since = format!("{}.{:09}", since.as_secs(), since.subsec_nanos());
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let stream = self
            .docker
            .events(Some(options))
            .filter_map(|item| async move {
                match item {
                    Ok(message) => to_event(message).map(Ok),
                    Err(e) => Some(Err(BollardCall::Docker(e).into_runtime("events", ""))),
                }
            })
            // A stream that just ends would look like "no more events"; it means the daemon
            // closed the connection (restart, shutdown), so say so and let the caller reconnect.
            .chain(futures_util::stream::once(async {
                Err(RuntimeError::Unreachable {
                    op: "events",
                    message: "the daemon closed the event stream".into(),
                })
            }))
            .boxed();
        Ok(stream)
    }
}

/// A bollard call that failed or ran out of time.
enum BollardCall {
    Docker(BollardError),
    Elapsed(Duration),
}

impl BollardCall {
    /// The generic mapping: 404 -> NotFound, 409 -> Conflict, transport -> Unreachable.
    fn into_runtime(self, op: &'static str, target: &str) -> RuntimeError {
        match self {
            BollardCall::Elapsed(after) => RuntimeError::Timeout { op, after },
            BollardCall::Docker(e) => map_error(op, target, e),
        }
    }
}

fn map_error(op: &'static str, target: &str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeError::NotFound {
            op,
            target: target.to_string(),
        },
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => RuntimeError::Conflict {
            op,
            name: target.to_string(),
            message,
        },
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Api {
            op,
            status: status_code,
            message,
        },
        BollardError::RequestTimeoutError => RuntimeError::Timeout {
            op,
            after: Duration::from_secs(0),
        },
        e @ (BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::SocketNotFoundError(_)) => RuntimeError::Unreachable {
            op,
            message: error_chain(&e),
        },
        other => RuntimeError::Api {
            op,
            status: 0,
            message: error_chain(&other),
        },
    }
}

/// A 404 on create is a missing image or network (Docker says which), never a missing container.
fn map_create_error(e: BollardError, name: &str) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::Api {
            op: "create_container",
            status: 404,
            message,
        },
        other => map_error("create_container", name, other),
    }
}

/// Start errors are never about a missing container or a name (we just created it): a 404 is a
/// missing network ("network x not found"), a 409 e.g. "cannot join network of a non running
/// container". Both stay `Api` errors with Docker's message, so neither is mistaken for a
/// vanished container or a name race.
fn start_error(e: BollardCall, name: &str) -> RuntimeError {
    match e {
        BollardCall::Docker(BollardError::DockerResponseServerError {
            status_code: status @ (404 | 409),
            message,
        }) => RuntimeError::Api {
            op: "start_container",
            status,
            message,
        },
        other => other.into_runtime("start_container", name),
    }
}

impl DockerRuntime {
    /// Waits (within the call timeout) until `id` no longer exists.
    async fn wait_gone(&self, id: &str, message: &str) -> RuntimeResult<()> {
        let deadline = Instant::now() + self.call_timeout;
        let mut backoff = NAME_WAIT_FIRST;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self
                .inspect_raw(id, remaining.max(Duration::from_millis(1)))
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(_)) | Err(RuntimeError::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() + backoff >= deadline {
                Span::current().record("conflict", message);
                return Err(RuntimeError::Timeout {
                    op: "remove_container",
                    after: self.call_timeout,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(NAME_WAIT_MAX);
        }
    }
}

/// The full cause chain, because hyper's top-level messages ("client error (Connect)") hide
/// the useful part ("No such file or directory").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn record_error(span: &Span, e: &RuntimeError) {
    span.record("error", field::display(e));
}

fn to_hash_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The create request for a spec: acevisor is the restart policy, so Docker's is `no`.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut host_config = HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    let mut exposed_ports = None;
    match &spec.attach {
        Attach::ContainerNamespace { container_id } => {
            // The namespace owner publishes everything; a container sharing it cannot.
            host_config.network_mode = Some(format!("container:{container_id}"));
        }
        Attach::Network { network, publish } => {
            host_config.network_mode = Some(network.clone());
            let ports: Vec<String> = publish.iter().map(|p| format!("{p}/tcp")).collect();
            let bindings = publish
                .iter()
                .map(|p| {
                    let binding = PortBinding {
                        host_ip: None,
                        host_port: Some(p.to_string()),
                    };
                    (format!("{p}/tcp"), Some(vec![binding]))
                })
                .collect();
            host_config.port_bindings = Some(bindings);
            exposed_ports = Some(ports);
        }
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(to_hash_map(&spec.labels)),
        exposed_ports,
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn to_health(status: Option<HealthStatusEnum>) -> Option<DockerHealth> {
    match status? {
        HealthStatusEnum::STARTING => Some(DockerHealth::Starting),
        HealthStatusEnum::HEALTHY => Some(DockerHealth::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(DockerHealth::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

/// A list entry as a brief, when the list alone decides it: one plain name (legacy links add
/// `/other/alias` names) and a state that says whether it runs. `None`: inspect it.
fn to_brief(s: &ContainerSummary) -> Option<ContainerBrief> {
    let running = match s.state? {
        ContainerSummaryStateEnum::RUNNING => true,
        ContainerSummaryStateEnum::CREATED
        | ContainerSummaryStateEnum::EXITED
        | ContainerSummaryStateEnum::DEAD => false,
        // Paused and restarting containers count as running for inspect, a removing or stopping
        // one may be either: ask.
        _ => return None,
    };
    let name = s
        .names
        .as_ref()?
        .iter()
        .map(|n| n.trim_start_matches('/'))
        .find(|n| !n.is_empty() && !n.contains('/'))?;
    Some(ContainerBrief {
        id: s.id.clone()?,
        name: name.to_string(),
        labels: s.labels.clone().unwrap_or_default().into_iter().collect(),
        running,
    })
}

fn to_info(c: ContainerInspectResponse) -> ContainerInfo {
    let state = c.state.unwrap_or_default();
    let config = c.config.unwrap_or_default();
    // A `network_mode: container:X` container has no networks of its own: its address is X's.
    let ips = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(network, endpoint)| {
            endpoint
                .ip_address
                .filter(|ip| !ip.is_empty())
                .map(|ip| (network, ip))
        })
        .collect();
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.or(c.image).unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        running: state.running.unwrap_or(false),
        health: to_health(state.health.and_then(|h| h.status)),
        started_at: state.started_at.unwrap_or_default(),
        ips,
    }
}

/// Docker attributes that are not labels.
const NON_LABEL_ATTRIBUTES: [&str; 4] = ["name", "image", "exitCode", "signal"];

/// A Docker event as a typed container event; `None` for anything we do not follow.
fn to_event(message: EventMessage) -> Option<ContainerEvent> {
    if message
        .typ
        .is_some_and(|t| t != EventMessageTypeEnum::CONTAINER)
    {
        return None;
    }
    let action = message.action?;
    let actor = message.actor?;
    let attributes = actor.attributes.unwrap_or_default();
    let kind = match action.as_str() {
        "start" => EventKind::Start,
        "die" => EventKind::Die {
            exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        },
        "stop" => EventKind::Stop,
        "destroy" => EventKind::Destroy,
        other => match other.strip_prefix("health_status:").map(str::trim) {
            Some("healthy") => EventKind::Health(DockerHealth::Healthy),
            Some("unhealthy") => EventKind::Health(DockerHealth::Unhealthy),
            Some("starting") => EventKind::Health(DockerHealth::Starting),
            _ => return None,
        },
    };
    let name = attributes.get("name").cloned().unwrap_or_default();
    let labels = attributes
        .into_iter()
        .filter(|(k, _)| !NON_LABEL_ATTRIBUTES.contains(&k.as_str()))
        .collect();
    Some(ContainerEvent {
        id: actor.id.unwrap_or_default(),
        name,
        kind,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn die_event_carries_exit_code_name_and_only_labels() {
        let e = to_event(event(
            "die",
            &[
                ("name", "acestream-1"),
                ("image", "img"),
                ("exitCode", "137"),
                ("acevisor.role", "engine"),
            ],
        ))
        .unwrap();
        assert_eq!(e.id, "abc");
        assert_eq!(e.name, "acestream-1");
        assert_eq!(
            e.kind,
            EventKind::Die {
                exit_code: Some(137)
            }
        );
        assert_eq!(
            e.labels,
            BTreeMap::from([("acevisor.role".to_string(), "engine".to_string())])
        );
    }

    #[test]
    fn health_status_actions_are_typed_and_others_ignored() {
        let kind = |a: &str| to_event(event(a, &[])).map(|e| e.kind);
        assert_eq!(
            kind("health_status: healthy"),
            Some(EventKind::Health(DockerHealth::Healthy))
        );
        assert_eq!(
            kind("health_status: unhealthy"),
            Some(EventKind::Health(DockerHealth::Unhealthy))
        );
        assert_eq!(
            kind("health_status: starting"),
            Some(EventKind::Health(DockerHealth::Starting))
        );
        assert_eq!(kind("exec_start: /fake-gluetun healthcheck"), None);
        assert_eq!(kind("start"), Some(EventKind::Start));
        assert_eq!(kind("destroy"), Some(EventKind::Destroy));
        assert_eq!(kind("stop"), Some(EventKind::Stop));
    }

    #[test]
    fn vpn_attached_spec_shares_namespace_and_publishes_nothing() {
        let spec = ContainerSpec {
            name: "acestream-1".into(),
            image: "engine".into(),
            cmd: vec!["--http-port".into(), "6878".into()],
            env: BTreeMap::from([("P2P_PORT".into(), "40001".into())]),
            labels: BTreeMap::from([("acevisor.managed".into(), "x".into())]),
            attach: Attach::ContainerNamespace {
                container_id: "f00".into(),
            },
        };
        let body = create_body(&spec);
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:f00"));
        assert!(host.port_bindings.is_none());
        assert!(body.exposed_ports.is_none());
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(body.env.unwrap(), vec!["P2P_PORT=40001".to_string()]);
    }

    #[test]
    fn network_spec_publishes_each_port_one_to_one() {
        let spec = ContainerSpec {
            name: "acestream-1".into(),
            image: "engine".into(),
            cmd: vec![],
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            attach: Attach::Network {
                network: "acevisor".into(),
                publish: vec![6878, 6879],
            },
        };
        let body = create_body(&spec);
        assert!(body.cmd.is_none(), "an empty cmd keeps the image's own");
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("acevisor"));
        let bindings = host.port_bindings.unwrap();
        let binding = bindings["6879/tcp"].as_ref().unwrap();
        assert_eq!(binding[0].host_port.as_deref(), Some("6879"));
        assert_eq!(body.exposed_ports.unwrap().len(), 2);
    }

    #[test]
    fn transport_errors_are_unreachable_and_keep_the_cause() {
        let io = BollardError::IOError {
            err: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"),
        };
        match map_error("ping", "", io) {
            RuntimeError::Unreachable { message, .. } => assert!(message.contains("refused")),
            other => panic!("{other:?}"),
        }
        let conflict = BollardError::DockerResponseServerError {
            status_code: 409,
            message: "name in use".into(),
        };
        assert!(matches!(
            map_error("x", "n", conflict),
            RuntimeError::Conflict { .. }
        ));
        let missing_image = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "No such image: nope:dev".into(),
        };
        match map_create_error(missing_image, "n") {
            RuntimeError::Api {
                status: 404,
                message,
                ..
            } => assert!(message.contains("nope")),
            other => panic!("{other:?}"),
        }
    }

    fn summary(state: Option<ContainerSummaryStateEnum>, names: &[&str]) -> ContainerSummary {
        ContainerSummary {
            id: Some("abc".into()),
            names: Some(names.iter().map(|n| n.to_string()).collect()),
            labels: Some(HashMap::from([("acevisor.role".into(), "engine".into())])),
            state,
            ..Default::default()
        }
    }

    #[test]
    fn a_listed_container_is_decided_from_the_list_when_its_state_is_plain() {
        let brief = to_brief(&summary(
            Some(ContainerSummaryStateEnum::RUNNING),
            &["/other/alias", "/acestream-1"],
        ))
        .expect("decided");
        assert_eq!(brief.name, "acestream-1", "a link alias is not its name");
        assert!(brief.running);
        assert_eq!(brief.labels["acevisor.role"], "engine");
        for state in [
            ContainerSummaryStateEnum::EXITED,
            ContainerSummaryStateEnum::CREATED,
            ContainerSummaryStateEnum::DEAD,
        ] {
            let brief = to_brief(&summary(Some(state), &["/acestream-1"])).expect("decided");
            assert!(!brief.running, "{state}");
        }
    }

    #[test]
    fn an_ambiguous_listed_container_is_left_to_an_inspect() {
        for state in [
            ContainerSummaryStateEnum::PAUSED,
            ContainerSummaryStateEnum::RESTARTING,
            ContainerSummaryStateEnum::REMOVING,
            ContainerSummaryStateEnum::STOPPING,
            ContainerSummaryStateEnum::EMPTY,
        ] {
            assert_eq!(
                to_brief(&summary(Some(state), &["/acestream-1"])),
                None,
                "{state}"
            );
        }
        assert_eq!(to_brief(&summary(None, &["/acestream-1"])), None);
        assert_eq!(
            to_brief(&summary(
                Some(ContainerSummaryStateEnum::RUNNING),
                &["/a/b"]
            )),
            None,
            "no plain name"
        );
    }

    #[test]
    fn unsupported_host_scheme_is_refused_with_a_reason() {
        let err = DockerRuntime::connect(Some("ssh://host"), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("unsupported Docker host"), "{err}");
    }
}
