//! The `ContainerRuntime` trait: everything acevisor asks of Docker, as typed calls.
//!
//! `docker::DockerRuntime` implements it over the Docker API; `memory::MemoryRuntime` is the
//! in-memory double with fault injection for fast tests; `instrumented::Instrumented` wraps either
//! to measure (and trace) every call.

pub mod calls;
pub mod docker;
pub mod instrumented;
pub mod memory;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

pub use crate::core::engine_spec::{Attach, ContainerSpec};
pub use crate::core::readiness::DockerHealth;

/// What acevisor needs to know of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// `None` when the container has no healthcheck.
    pub health: Option<DockerHealth>,
    /// Docker's `State.StartedAt` (changes when the container restarts in place).
    pub started_at: String,
    /// IP addresses by network name.
    pub ips: BTreeMap<String, String>,
}

impl ContainerInfo {
    /// The address on `network`, else any address the container has.
    pub fn ip_on(&self, network: Option<&str>) -> Option<String> {
        network
            .and_then(|n| self.ips.get(n).cloned())
            .or_else(|| self.ips.values().find(|ip| !ip.is_empty()).cloned())
    }
}

/// What a container listing tells without an inspect per container: enough to rebuild engine
/// facts from labels (`ContainerRuntime::list_brief`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerBrief {
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
}

impl From<ContainerInfo> for ContainerBrief {
    fn from(c: ContainerInfo) -> Self {
        ContainerBrief {
            id: c.id,
            name: c.name,
            labels: c.labels,
            running: c.running,
        }
    }
}

/// Which containers to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// `key=value` label filters, all of which must match.
    pub labels: Vec<String>,
    /// Substring of the name (Docker's `name` filter).
    pub name: Option<String>,
    /// Include stopped containers.
    pub all: bool,
}

/// A container event from Docker's events stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Start,
    Die { exit_code: Option<i64> },
    Stop,
    Destroy,
    Health(DockerHealth),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    pub name: String,
    pub kind: EventKind,
    pub labels: BTreeMap<String, String>,
}

/// Why a runtime call failed. Every variant keeps the daemon's own message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("docker {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("docker {op}: no such container {target}")]
    NotFound { op: &'static str, target: String },
    #[error("docker {op}: name {name} is still in use: {message}")]
    Conflict {
        op: &'static str,
        name: String,
        message: String,
    },
    #[error("docker {op} failed ({status}): {message}")]
    Api {
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("docker {op}: daemon unreachable: {message}")]
    Unreachable { op: &'static str, message: String },
}

impl RuntimeError {
    /// True when the daemon could not be asked at all (slow or down), as opposed to answering no.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            RuntimeError::Timeout { .. } | RuntimeError::Unreachable { .. }
        )
    }
}

pub type RuntimeResult<T> = Result<T, RuntimeError>;
pub type EventStream = BoxStream<'static, RuntimeResult<ContainerEvent>>;

/// Everything acevisor asks of Docker.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Is the daemon there?
    async fn ping(&self) -> RuntimeResult<()>;
    async fn list(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerInfo>>;
    /// A cheaper `list` that tells only IDs, names, labels and whether each container runs: on
    /// Docker one list call, and an inspect only for a container whose listing is ambiguous.
    async fn list_brief(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerBrief>>;
    /// `Ok(None)` when there is no such container.
    async fn inspect(&self, id_or_name: &str) -> RuntimeResult<Option<ContainerInfo>>;
    /// Creates and starts; returns the new container's ID once it has survived its start
    /// (`start_new`, then `confirm_start`).
    async fn create_and_start(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        let id = self.start_new(spec).await?;
        self.confirm_start(&id).await?;
        Ok(id)
    }
    /// Creates and starts; returns the new container's ID as soon as Docker reports it started.
    /// A name still held by a container being removed is waited out (within the call timeout),
    /// never renamed.
    async fn start_new(&self, spec: &ContainerSpec) -> RuntimeResult<String>;
    /// Right after `start_new`: fails when the container exits within a short settle window (an
    /// engine whose P2P port is taken), with its exit code and last output, and removes it.
    async fn confirm_start(&self, id: &str) -> RuntimeResult<()>;
    /// Stops gracefully: SIGTERM, then SIGKILL after `timeout`. `Ok` when it was not running.
    async fn stop(&self, id: &str, timeout: Duration) -> RuntimeResult<()>;
    /// Renames a container; Docker renames a running one atomically. A name held by another
    /// container is a `Conflict` (409).
    async fn rename(&self, id: &str, new_name: &str) -> RuntimeResult<()>;
    /// Forced removal; `Ok` when the container is already gone.
    async fn remove(&self, id: &str) -> RuntimeResult<()>;
    async fn restart(&self, id: &str) -> RuntimeResult<()>;
    /// Container events from now on. Subscribe before listing, so nothing falls between.
    async fn events(&self) -> RuntimeResult<EventStream>;
}
