//! `MemoryRuntime`: an in-memory Docker, Gluetun and engine world with fault injection, for fast
//! tests of the actor tree. Never the only test of a behaviour: every behaviour also has a test
//! against the real Docker engine with the testbed fakes.
//!
//! It models what matters to acevisor: containers with labels, state, health and `StartedAt`;
//! engines sharing a VPN container's namespace (joined by ID, P2P ports exclusive within one
//! namespace, stranded when the VPN restarts); the events stream; the Gluetun control server of
//! each VPN container; the engines' HTTP API. Faults: failing or slow calls, dropped or reordered
//! events, creates whose reply is lost after Docker did the work, engines that exit within their
//! start-settle window (`confirm_start` waits `set_start_settle` on the tokio clock).
//!
//! `list` counts one `inspect` per container it returns, as `DockerRuntime::list` makes one;
//! `list_brief` makes none.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::clients::{
    ControlAnswer, ControlError, ControlTarget, EngineApi, TunnelStatus, VpnControl,
};
use crate::runtime::{
    Attach, ContainerBrief, ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec,
    DockerHealth, EventKind, EventStream, ListQuery, RuntimeError, RuntimeResult,
};

/// The Gluetun control server of a fake VPN container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlState {
    pub status: TunnelStatus,
    /// The forwarded ports in the order Gluetun lists them; empty (or zeros) = nothing yet.
    pub ports: Vec<u16>,
    /// When set, probes must carry this key (401 otherwise).
    pub api_key: Option<String>,
    /// The tunnel's exit address while it runs (`203.0.113.7`, a documentation address, unless
    /// set otherwise).
    pub public_ip: String,
}

#[derive(Clone, Debug)]
struct MemContainer {
    info: ContainerInfo,
    /// For engines: the namespace holder's ID and its `StartedAt` when the engine joined it.
    joined: Option<(String, String)>,
    /// For VPNs: the control server.
    control: Option<ControlState>,
    /// For engines: HTTP and P2P ports (from the command line `--http-port`/`--port`).
    http_port: Option<u16>,
    p2p_port: Option<u16>,
    hung: bool,
}

#[derive(Default)]
struct World {
    containers: BTreeMap<String, MemContainer>,
    next_id: u64,
    clock: u64,
    failing: HashMap<&'static str, u32>,
    /// The next this-many creates make and start their container, then panic in the caller (an
    /// actor that dies before it learns its container's ID).
    panic_after_create: u32,
    /// Status probes of these engines (by container name) that panic in the prober.
    crashing_probes: HashMap<String, u32>,
    /// Inspects of these names (or IDs) that fail before the world is looked at.
    failing_inspects: HashMap<String, u32>,
    delay: Duration,
    drop_events: bool,
    calls: HashMap<&'static str, u32>,
    /// The next this-many creates succeed on the Docker side but answer with a timeout.
    lose_create_replies: u32,
    /// IDs of the containers created by such creates (orphans unless acevisor finds them).
    lost_reply_ids: Vec<String>,
    /// Deliver events with each adjacent pair swapped.
    reorder_events: bool,
    /// IDs removed through the `remove` call (acevisor's removals, not out-of-band ones).
    removed_ids: Vec<String>,
    /// New engines start hung (their API silent) until `unhang`: an engine slow to be ready.
    new_engines_hung: bool,
    /// Every `stop` call: the container ID and the grace it was given.
    stops: Vec<(String, Duration)>,
    /// Every successful `rename`: the container ID, its old and its new name.
    renames: Vec<(String, String, String)>,
    /// How long `confirm_start` watches a new container (Docker's start-settle window).
    start_settle: Duration,
    /// The next this-many engines started exit within their settle window (exit code 1).
    exit_at_start: u32,
    /// IDs of containers that will exit within their settle window.
    exiting: Vec<String>,
}

/// The in-memory world. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryRuntime {
    world: Arc<Mutex<World>>,
    events: broadcast::Sender<ContainerEvent>,
    /// An event held back while events are reordered; sent after the next one.
    held_event: Arc<Mutex<Option<ContainerEvent>>>,
}

impl Default for MemoryRuntime {
    fn default() -> Self {
        MemoryRuntime::new()
    }
}

fn arg_after(cmd: &[String], flag: &str) -> Option<u16> {
    cmd.iter()
        .position(|a| a == flag)
        .and_then(|i| cmd.get(i + 1))
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            cmd.iter()
                .find_map(|a| a.strip_prefix(&format!("{flag}="))?.parse().ok())
        })
}

impl MemoryRuntime {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        MemoryRuntime {
            world: Arc::new(Mutex::new(World::default())),
            events,
            held_event: Arc::new(Mutex::new(None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, w: &World, id: &str, kind: EventKind) {
        if w.drop_events {
            return;
        }
        let (name, labels) = w
            .containers
            .get(id)
            .map(|c| (c.info.name.clone(), c.info.labels.clone()))
            .unwrap_or_default();
        let event = ContainerEvent {
            id: id.to_string(),
            name,
            kind,
            labels,
        };
        if w.reorder_events {
            let mut held = self.held_event.lock().unwrap_or_else(|e| e.into_inner());
            match held.take() {
                None => *held = Some(event),
                Some(first) => {
                    let _ = self.events.send(event);
                    let _ = self.events.send(first);
                }
            }
            return;
        }
        let _ = self.events.send(event);
    }

    fn new_identity(w: &mut World) -> (String, String) {
        w.next_id += 1;
        w.clock += 1;
        (
            format!("mem{:012x}", w.next_id),
            format!("2026-01-01T00:00:{:09}Z", w.clock),
        )
    }

    /// Adds a running fake Gluetun container; returns its ID.
    pub fn add_vpn(&self, name: &str, port: u16, health: Option<DockerHealth>) -> String {
        let mut w = self.lock();
        let (id, started_at) = Self::new_identity(&mut w);
        let info = ContainerInfo {
            id: id.clone(),
            name: name.to_string(),
            image: "qmcgaw/gluetun".into(),
            labels: BTreeMap::new(),
            running: true,
            health,
            started_at,
            ips: BTreeMap::from([("bridge".to_string(), format!("mem-{name}"))]),
        };
        let control = ControlState {
            status: TunnelStatus::Running,
            ports: vec![port],
            api_key: None,
            public_ip: "203.0.113.7".into(),
        };
        w.containers.insert(
            id.clone(),
            MemContainer {
                info,
                joined: None,
                control: Some(control),
                http_port: None,
                p2p_port: None,
                hung: false,
            },
        );
        self.emit(&w, &id, EventKind::Start);
        id
    }

    fn id_of(w: &World, name_or_id: &str) -> Option<String> {
        if w.containers.contains_key(name_or_id) {
            return Some(name_or_id.to_string());
        }
        w.containers
            .values()
            .find(|c| c.info.name == name_or_id)
            .map(|c| c.info.id.clone())
    }

    fn with_container<R>(&self, name: &str, f: impl FnOnce(&mut MemContainer) -> R) -> Option<R> {
        let mut w = self.lock();
        let id = Self::id_of(&w, name)?;
        w.containers.get_mut(&id).map(f)
    }

    /// `docker kill`: the container stops; engines in its namespace lose their network.
    pub fn kill(&self, name: &str) {
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, name) else {
            return;
        };
        if let Some(c) = w.containers.get_mut(&id) {
            c.info.running = false;
            c.info.health = c.info.health.map(|_| DockerHealth::Unhealthy);
        }
        self.emit(
            &w,
            &id,
            EventKind::Die {
                exit_code: Some(137),
            },
        );
    }

    /// `docker start` (also the second half of `docker restart`): a new `StartedAt`, health
    /// `starting` when the container has a healthcheck, control server reporting no port yet.
    pub fn start(&self, name: &str) {
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, name) else {
            return;
        };
        w.clock += 1;
        let started_at = format!("2026-01-01T00:00:{:09}Z", w.clock);
        if let Some(c) = w.containers.get_mut(&id) {
            c.info.running = true;
            c.info.started_at = started_at;
            c.info.health = c.info.health.map(|_| DockerHealth::Starting);
            if let Some(ctl) = &mut c.control {
                ctl.ports.clear();
                ctl.status = TunnelStatus::Running;
            }
        }
        self.emit(&w, &id, EventKind::Start);
    }

    /// `docker restart`.
    pub fn restart_in_place(&self, name: &str) {
        self.kill(name);
        self.start(name);
    }

    /// `docker rm -f` then `docker run` with the same name: a new ID. Returns it.
    pub fn recreate_vpn(&self, name: &str, port: u16, health: Option<DockerHealth>) -> String {
        self.remove_out_of_band(name);
        self.add_vpn(name, port, health)
    }

    /// `docker rm -f` done by someone else.
    pub fn remove_out_of_band(&self, name: &str) {
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, name) else {
            return;
        };
        let running = w.containers.get(&id).is_some_and(|c| c.info.running);
        if running {
            self.emit(
                &w,
                &id,
                EventKind::Die {
                    exit_code: Some(137),
                },
            );
        }
        self.emit(&w, &id, EventKind::Destroy);
        w.containers.remove(&id);
    }

    pub fn set_port(&self, vpn: &str, port: u16) {
        self.set_ports(vpn, &[port]);
    }

    /// The VPN forwards several ports (some providers do); `[]` = none.
    pub fn set_ports(&self, vpn: &str, ports: &[u16]) {
        self.with_container(vpn, |c| {
            if let Some(ctl) = &mut c.control {
                ctl.ports = ports.to_vec();
            }
        });
    }

    /// The tunnel's exit address from now on (a reconnect elsewhere).
    pub fn set_public_ip(&self, vpn: &str, ip: &str) {
        self.with_container(vpn, |c| {
            if let Some(ctl) = &mut c.control {
                ctl.public_ip = ip.to_string();
            }
        });
    }

    pub fn set_tunnel(&self, vpn: &str, status: TunnelStatus) {
        self.with_container(vpn, |c| {
            if let Some(ctl) = &mut c.control {
                ctl.status = status;
            }
        });
    }

    pub fn set_api_key(&self, vpn: &str, key: Option<&str>) {
        self.with_container(vpn, |c| {
            if let Some(ctl) = &mut c.control {
                ctl.api_key = key.map(str::to_string);
            }
        });
    }

    /// Docker health changes (emits `health_status`).
    pub fn set_health(&self, name: &str, health: DockerHealth) {
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, name) else {
            return;
        };
        if let Some(c) = w.containers.get_mut(&id) {
            c.info.health = Some(health);
        }
        self.emit(&w, &id, EventKind::Health(health));
    }

    /// Engines created from now on start with a silent API (slow to become ready) until
    /// `unhang`.
    pub fn new_engines_hung(&self, hung: bool) {
        self.lock().new_engines_hung = hung;
    }

    /// The engine's API answers again.
    pub fn unhang(&self, name: &str) {
        self.with_container(name, |c| c.hung = false);
    }

    /// An engine stops answering its HTTP API.
    pub fn hang(&self, name: &str) {
        self.with_container(name, |c| c.hung = true);
    }

    /// An engine process exits (container stays, exited).
    pub fn exit(&self, name: &str, code: i64) {
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, name) else {
            return;
        };
        if let Some(c) = w.containers.get_mut(&id) {
            c.info.running = false;
        }
        self.emit(
            &w,
            &id,
            EventKind::Die {
                exit_code: Some(code),
            },
        );
    }

    /// The next `n` calls of `op` (`create`, `remove`, `list`, `inspect`, `stop`, `rename`,
    /// `restart`, `events`, `ping`) fail as if the daemon were unreachable.
    pub fn fail_next(&self, op: &'static str, n: u32) {
        self.lock().failing.insert(op, n);
    }

    /// The next `n` creates make and start their container, then panic in the calling task: the
    /// caller (an Engine actor) dies without learning the container's ID.
    pub fn panic_after_create(&self, n: u32) {
        self.lock().panic_after_create = n;
    }

    /// The next `n` status probes of the engine named `name` panic in the caller: its Engine
    /// actor crashes (the actor-restart tests).
    pub fn crash_probes_of(&self, name: &str, n: u32) {
        self.lock().crashing_probes.insert(name.to_string(), n);
    }

    /// The next `n` inspects of exactly `id_or_name` fail as if Docker were unreachable.
    pub fn fail_inspects_of(&self, id_or_name: &str, n: u32) {
        self.lock()
            .failing_inspects
            .insert(id_or_name.to_string(), n);
    }

    /// Every call waits this long first.
    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// Stop delivering events (they are lost, as on a broken stream).
    pub fn drop_events(&self, drop: bool) {
        self.lock().drop_events = drop;
    }

    /// The next `n` creates succeed on the Docker side but the caller gets a timeout, as when the
    /// create reply is lost on the way back: the container exists, created and never started.
    pub fn lose_create_replies(&self, n: u32) {
        self.lock().lose_create_replies = n;
    }

    /// IDs of the containers whose create reply was lost.
    pub fn lost_reply_ids(&self) -> Vec<String> {
        self.lock().lost_reply_ids.clone()
    }

    /// Deliver events out of order (each adjacent pair swapped); turning it off sends any event
    /// still held back.
    pub fn reorder_events(&self, reorder: bool) {
        self.lock().reorder_events = reorder;
        if !reorder {
            let held = self
                .held_event
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(event) = held {
                let _ = self.events.send(event);
            }
        }
    }

    /// `confirm_start` waits this long (on the tokio clock) before it judges a new container.
    pub fn set_start_settle(&self, settle: Duration) {
        self.lock().start_settle = settle;
    }

    /// The next `n` containers started exit with code 1 within their settle window, as an
    /// engine whose P2P port is taken does: `start_new` succeeds, `confirm_start` fails.
    pub fn exit_at_start(&self, n: u32) {
        self.lock().exit_at_start = n;
    }

    /// IDs of the containers removed through `ContainerRuntime::remove`, in order.
    pub fn removed_ids(&self) -> Vec<String> {
        self.lock().removed_ids.clone()
    }

    /// Every `stop` call (container ID, grace), in order.
    pub fn stops(&self) -> Vec<(String, Duration)> {
        self.lock().stops.clone()
    }

    /// Every successful `rename` (container ID, old name, new name), in order.
    pub fn renames(&self) -> Vec<(String, String, String)> {
        self.lock().renames.clone()
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: &'static str) -> u32 {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// Every container (for assertions).
    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect()
    }

    /// The P2P port an engine was started with (what the fake engine itself would report).
    pub fn p2p_port_of(&self, name: &str) -> Option<u16> {
        let w = self.lock();
        let id = Self::id_of(&w, name)?;
        w.containers.get(&id)?.p2p_port
    }

    async fn enter(&self, op: &'static str) -> RuntimeResult<()> {
        let delay = {
            let mut w = self.lock();
            *w.calls.entry(op).or_default() += 1;
            if let Some(n) = w.failing.get_mut(op).filter(|n| **n > 0) {
                *n -= 1;
                return Err(RuntimeError::Unreachable {
                    op,
                    message: "injected fault".into(),
                });
            }
            w.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    /// Is the engine reachable: running, and its namespace holder still the one it joined?
    fn engine_reachable(w: &World, c: &MemContainer) -> bool {
        if !c.info.running || c.hung {
            return false;
        }
        match &c.joined {
            None => true,
            Some((holder, started_at)) => w
                .containers
                .get(holder)
                .is_some_and(|h| h.info.running && &h.info.started_at == started_at),
        }
    }
}

#[async_trait]
impl ContainerRuntime for MemoryRuntime {
    async fn ping(&self) -> RuntimeResult<()> {
        self.enter("ping").await
    }

    async fn list(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerInfo>> {
        self.enter("list").await?;
        let mut w = self.lock();
        let found = Self::matching(&w, query);
        // As on Docker, whose list lacks StartedAt and health: one inspect per container.
        *w.calls.entry("inspect").or_default() += found.len() as u32;
        Ok(found)
    }

    async fn list_brief(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerBrief>> {
        self.enter("list").await?;
        let w = self.lock();
        Ok(Self::matching(&w, query)
            .into_iter()
            .map(ContainerBrief::from)
            .collect())
    }

    async fn inspect(&self, id_or_name: &str) -> RuntimeResult<Option<ContainerInfo>> {
        self.enter("inspect").await?;
        let mut w = self.lock();
        if let Some(n) = w.failing_inspects.get_mut(id_or_name).filter(|n| **n > 0) {
            *n -= 1;
            return Err(RuntimeError::Unreachable {
                op: "inspect",
                message: "injected fault".into(),
            });
        }
        Ok(Self::id_of(&w, id_or_name)
            .and_then(|id| w.containers.get(&id))
            .map(|c| c.info.clone()))
    }

    async fn start_new(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        self.enter("create").await?;
        let mut w = self.lock();
        if w.containers.values().any(|c| c.info.name == spec.name) {
            return Err(RuntimeError::Conflict {
                op: "create",
                name: spec.name.clone(),
                message: format!(
                    "Conflict. The container name \"/{}\" is already in use",
                    spec.name
                ),
            });
        }
        let id = Self::create_in(&mut w, spec)?;
        if w.lose_create_replies > 0 {
            // As on Docker: the create call made the container, its reply never came, so the
            // start that follows a create was never sent.
            w.lose_create_replies -= 1;
            w.lost_reply_ids.push(id.clone());
            if let Some(c) = w.containers.get_mut(&id) {
                c.info.running = false;
            }
            return Err(RuntimeError::Timeout {
                op: "create",
                after: Duration::from_secs(10),
            });
        }
        if w.exit_at_start > 0 {
            w.exit_at_start -= 1;
            w.exiting.push(id.clone());
        }
        self.emit(&w, &id, EventKind::Start);
        if w.panic_after_create > 0 {
            w.panic_after_create -= 1;
            drop(w);
            panic!("injected fault: the caller of create {id} crashed before reading its reply");
        }
        Ok(id)
    }

    async fn confirm_start(&self, id: &str) -> RuntimeResult<()> {
        let settle = {
            let mut w = self.lock();
            *w.calls.entry("confirm_start").or_default() += 1;
            w.start_settle
        };
        if !settle.is_zero() {
            tokio::time::sleep(settle).await;
        }
        let mut w = self.lock();
        if let Some(i) = w.exiting.iter().position(|e| e == id) {
            w.exiting.remove(i);
            if let Some(c) = w.containers.get_mut(id) {
                c.info.running = false;
            }
            self.emit(&w, id, EventKind::Die { exit_code: Some(1) });
            // As `DockerRuntime` does: the container that failed its start is removed.
            self.emit(&w, id, EventKind::Destroy);
            w.containers.remove(id);
            w.removed_ids.push(id.to_string());
            return Err(RuntimeError::Api {
                op: "start_container",
                status: 500,
                message: format!(
                    "container exited with code 1 within {settle:?} of start; last output: \
                     bind: Address in use"
                ),
            });
        }
        if !w.containers.contains_key(id) {
            return Err(RuntimeError::Api {
                op: "start_container",
                status: 500,
                message: "container vanished right after start".into(),
            });
        }
        Ok(())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> RuntimeResult<()> {
        self.enter("stop").await?;
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, id) else {
            return Err(RuntimeError::NotFound {
                op: "stop",
                target: id.to_string(),
            });
        };
        w.stops.push((id.clone(), timeout));
        // As on Docker, stopping a stopped container changes nothing (304).
        let was_running = w.containers.get(&id).is_some_and(|c| c.info.running);
        if let Some(c) = w.containers.get_mut(&id) {
            c.info.running = false;
        }
        if was_running {
            self.emit(&w, &id, EventKind::Die { exit_code: Some(0) });
        }
        Ok(())
    }

    async fn rename(&self, id: &str, new_name: &str) -> RuntimeResult<()> {
        self.enter("rename").await?;
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, id) else {
            return Err(RuntimeError::NotFound {
                op: "rename",
                target: id.to_string(),
            });
        };
        if w.containers.values().any(|c| c.info.name == new_name) {
            return Err(RuntimeError::Conflict {
                op: "rename",
                name: new_name.to_string(),
                message: format!("Conflict. The container name \"/{new_name}\" is already in use"),
            });
        }
        let Some(c) = w.containers.get_mut(&id) else {
            return Ok(());
        };
        let old = std::mem::replace(&mut c.info.name, new_name.to_string());
        w.renames.push((id, old, new_name.to_string()));
        Ok(())
    }

    async fn remove(&self, id: &str) -> RuntimeResult<()> {
        self.enter("remove").await?;
        let mut w = self.lock();
        let Some(id) = Self::id_of(&w, id) else {
            return Ok(());
        };
        if w.containers.get(&id).is_some_and(|c| c.info.running) {
            self.emit(
                &w,
                &id,
                EventKind::Die {
                    exit_code: Some(137),
                },
            );
        }
        self.emit(&w, &id, EventKind::Destroy);
        w.containers.remove(&id);
        w.removed_ids.push(id);
        Ok(())
    }

    async fn restart(&self, id: &str) -> RuntimeResult<()> {
        self.enter("restart").await?;
        let name = {
            let w = self.lock();
            Self::id_of(&w, id)
                .and_then(|id| w.containers.get(&id))
                .map(|c| c.info.name.clone())
        };
        match name {
            Some(name) => {
                self.restart_in_place(&name);
                Ok(())
            }
            None => Err(RuntimeError::NotFound {
                op: "restart",
                target: id.to_string(),
            }),
        }
    }

    async fn events(&self) -> RuntimeResult<EventStream> {
        self.enter("events").await?;
        let rx = self.events.subscribe();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

impl MemoryRuntime {
    fn matching(w: &World, query: &ListQuery) -> Vec<ContainerInfo> {
        w.containers
            .values()
            .filter(|c| query.all || c.info.running)
            .filter(|c| {
                query
                    .name
                    .as_ref()
                    .is_none_or(|n| c.info.name.contains(n.as_str()))
            })
            .filter(|c| {
                query.labels.iter().all(|f| match f.split_once('=') {
                    Some((k, v)) => c.info.labels.get(k).is_some_and(|x| x == v),
                    None => c.info.labels.contains_key(f),
                })
            })
            .map(|c| c.info.clone())
            .collect()
    }

    /// Creates the container of `spec`, running (the part of `start_new` past the name check).
    fn create_in(w: &mut World, spec: &ContainerSpec) -> RuntimeResult<String> {
        let http_port = arg_after(&spec.cmd, "--http-port");
        let p2p_port = arg_after(&spec.cmd, "--port");
        let (joined, ips) = match &spec.attach {
            Attach::ContainerNamespace { container_id } => {
                let Some(holder) = w.containers.get(container_id) else {
                    return Err(RuntimeError::Api {
                        op: "create",
                        status: 404,
                        message: format!("No such container: {container_id}"),
                    });
                };
                if !holder.info.running {
                    return Err(RuntimeError::Api {
                        op: "start",
                        status: 409,
                        message: format!(
                            "cannot join network of a non running container: {container_id}"
                        ),
                    });
                }
                let started = holder.info.started_at.clone();
                let clash = w.containers.values().any(|c| {
                    c.info.running
                        && c.joined.as_ref().is_some_and(|(h, _)| h == container_id)
                        && (c.p2p_port.is_some() && c.p2p_port == p2p_port
                            || c.http_port.is_some() && c.http_port == http_port)
                });
                if clash {
                    return Err(RuntimeError::Api {
                        op: "start",
                        status: 500,
                        message: format!("engine exited: port in use ({http_port:?}/{p2p_port:?})"),
                    });
                }
                (Some((container_id.clone(), started)), BTreeMap::new())
            }
            Attach::Network { network, .. } => (
                None,
                BTreeMap::from([(network.clone(), format!("mem-{}", spec.name))]),
            ),
        };
        let (id, started_at) = Self::new_identity(w);
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            running: true,
            health: None,
            started_at,
            ips,
        };
        w.containers.insert(
            id.clone(),
            MemContainer {
                info,
                joined,
                control: None,
                http_port,
                p2p_port,
                hung: w.new_engines_hung,
            },
        );
        Ok(id)
    }
}

#[async_trait]
impl VpnControl for MemoryRuntime {
    async fn probe(&self, target: &ControlTarget) -> Result<ControlAnswer, ControlError> {
        let w = self.lock();
        let Some(c) = w.containers.values().find(|c| c.info.name == target.vpn) else {
            return Err(ControlError::Unreachable(format!(
                "{}: no such host",
                target.base_url
            )));
        };
        let ctl = match (&c.control, c.info.running) {
            (Some(ctl), true) => ctl,
            _ => {
                return Err(ControlError::Unreachable(format!(
                    "{}: connection refused",
                    target.base_url
                )));
            }
        };
        if ctl.api_key.is_some() && ctl.api_key != target.api_key {
            return Err(ControlError::Unauthorized);
        }
        Ok(ControlAnswer {
            status: ctl.status.clone(),
            forwarded_ports: crate::core::port_set::PortSet::new(ctl.ports.iter().copied()),
        })
    }

    /// The tunnel's exit address once it runs (Gluetun answers an empty one before).
    async fn public_ip(&self, target: &ControlTarget) -> Result<Option<String>, ControlError> {
        let answer = self.probe(target).await?;
        let w = self.lock();
        let ip = w
            .containers
            .values()
            .find(|c| c.info.name == target.vpn)
            .and_then(|c| c.control.as_ref())
            .map(|ctl| ctl.public_ip.clone());
        Ok(ip.filter(|_| answer.status == TunnelStatus::Running))
    }
}

#[async_trait]
impl EngineApi for MemoryRuntime {
    async fn status(&self, host: &str, port: u16) -> Result<(), String> {
        let mut w = self.lock();
        let World {
            crashing_probes,
            containers,
            ..
        } = &mut *w;
        let crash = crashing_probes.iter_mut().find(|(name, n)| {
            **n > 0
                && containers
                    .values()
                    .any(|c| &c.info.name == *name && c.http_port == Some(port))
        });
        if let Some((name, n)) = crash {
            *n -= 1;
            let name = name.clone();
            drop(w);
            panic!("injected fault: the prober of engine {name} crashed");
        }
        // Behind a VPN the engine is reached at the VPN's address; in mode none at its own.
        let found = w.containers.values().find(|c| {
            c.http_port == Some(port)
                && match &c.joined {
                    Some((holder, _)) => w
                        .containers
                        .get(holder)
                        .is_some_and(|h| h.info.ips.values().any(|ip| ip == host)),
                    None => c.info.ips.values().any(|ip| ip == host),
                }
        });
        match found {
            Some(c) if Self::engine_reachable(&w, c) => Ok(()),
            Some(_) => Err(format!("http://{host}:{port}: operation timed out")),
            None => Err(format!("http://{host}:{port}: connection refused")),
        }
    }
}
