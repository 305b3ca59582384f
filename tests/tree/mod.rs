//! Harness for actor-tree tests: a config builder, a running tree, the invariants every snapshot
//! must satisfy, and waits on conditions with a deadline. On the in-memory runtime, tests run with
//! tokio's paused clock, so realistic timings (5 s polls, 76 s outages) take milliseconds; on real
//! Docker the same harness runs in real time with shrunk timings.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use acevisor::actors::messages::{SupervisorMsg, SupervisorSnapshot};
use acevisor::actors::supervisor::Deps;
use acevisor::config::Config;
use acevisor::core::model::EnginePhase;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use ractor::ActorRef;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const VPN1: &str = "gluetun";
pub const VPN2: &str = "gluetun_2";

/// A redundant (two VPNs) or single config with the default timings of docs/configuration.md.
pub fn config(mode: &str, min: u32, extra: &str) -> Config {
    let second = if mode == "redundant" {
        format!("[[vpn.gluetun]]\ncontainer = \"{VPN2}\"\nengine_ports = \"19500-19999\"\n")
    } else {
        String::new()
    };
    let text = format!(
        r#"
instance = "memtest"
[engines]
min_replicas = {min}
max_replicas = 20
min_free = 0
variant = "custom"
image = "acevisor-testbed/engine:dev"
command = ["--http-port", "{{http_port}}", "--https-port", "{{https_port}}", "--port", "{{p2p_port}}"]
ready_timeout = "30s"
[engines.health]
interval = "2s"
failure_threshold = 2
unhealthy_grace = "10s"
max_restarts = 3
restart_window = "5m"
[vpn]
mode = "{mode}"
poll_interval = "5s"
port_settle = "3s"
tunnel_grace = "60s"
{extra}
[[vpn.gluetun]]
container = "{VPN1}"
engine_ports = "19000-19499"
{second}
"#
    );
    let cfg = Config::parse(&text).expect("test config parses");
    cfg.validate().expect("test config is valid");
    cfg
}

pub struct Tree {
    pub mem: MemoryRuntime,
    pub sup: ActorRef<SupervisorMsg>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        // A failed test must not leave acevisor creating containers behind the cleanup's back.
        if self.handle.is_some() {
            self.sup.kill();
        }
    }
}

impl Tree {
    /// A tree over the in-memory world.
    pub async fn start(mem: &MemoryRuntime, cfg: Config) -> Tree {
        let deps = Deps {
            runtime: Arc::new(mem.clone()),
            control: Arc::new(mem.clone()),
            engine_api: Arc::new(mem.clone()),
            name_registry: None,
        };
        let keys = vec![None; cfg.vpn.gluetun.len()];
        let mut tree = Tree::start_with(deps, cfg, keys).await;
        tree.mem = mem.clone();
        tree
    }

    /// A tree over any effects (the real Docker runtime and HTTP clients, for instance).
    pub async fn start_with(deps: Deps, cfg: Config, keys: Vec<Option<String>>) -> Tree {
        let (sup, handle) = acevisor::daemon::start(cfg, deps, keys)
            .await
            .expect("tree starts");
        Tree {
            mem: MemoryRuntime::new(),
            sup,
            handle: Some(handle),
        }
    }

    /// Stops the tree (engines keep running, as on SIGTERM).
    pub async fn stop(mut self) {
        self.sup.stop(None);
        if let Some(h) = self.handle.take() {
            h.await.expect("supervisor stops cleanly");
        }
    }

    /// Waits up to `within` for the Supervisor to stop on its own (an escalation).
    pub async fn stops_on_its_own(&mut self, within: Duration) -> bool {
        let Some(handle) = self.handle.as_mut() else {
            return true;
        };
        let stopped = tokio::time::timeout(within, handle).await.is_ok();
        if stopped {
            self.handle = None;
        }
        stopped
    }

    /// The Supervisor's child whose messages are `M` (the VpnMonitor, the NameRegistry).
    pub fn child<M: ractor::Message>(&self) -> ractor::ActorCell {
        self.sup
            .get_cell()
            .get_children()
            .into_iter()
            .find(|c| c.is_message_type_of::<M>() == Some(true))
            .expect("the supervisor has that child")
    }

    pub async fn snap(&self) -> SupervisorSnapshot {
        ractor::call_t!(self.sup, SupervisorMsg::Snapshot, 10_000).expect("supervisor answers")
    }

    /// Waits (virtual time) until `pred` holds, checking the invariants on every look.
    pub async fn wait(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&SupervisorSnapshot) -> bool,
    ) -> SupervisorSnapshot {
        let deadline = Instant::now() + within;
        loop {
            let s = self.snap().await;
            check_invariants(&s);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lets `d` of virtual time pass while checking the invariants and `always` on every look.
    pub async fn hold(
        &self,
        d: Duration,
        always: impl Fn(&SupervisorSnapshot) -> bool,
        what: &str,
    ) -> SupervisorSnapshot {
        let until = Instant::now() + d;
        loop {
            let s = self.snap().await;
            check_invariants(&s);
            assert!(always(&s), "{what} broken: {s:#?}");
            if Instant::now() >= until {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Adds two healthy VPNs with forwarded ports.
pub fn two_vpns(mem: &MemoryRuntime, p1: u16, p2: u16) {
    mem.add_vpn(VPN1, p1, Some(DockerHealth::Healthy));
    mem.add_vpn(VPN2, p2, Some(DockerHealth::Healthy));
}

/// The invariants of docs/behavior.md that must hold at every instant.
/// One look at a rolling update of the engines `old` (container IDs): the invariants hold, once
/// `min_ready` engines were ready never fewer are (`reached` remembers), and never two old engines
/// go at once. Returns how many old engines are left.
pub fn check_roll(
    s: &SupervisorSnapshot,
    old: &std::collections::BTreeSet<String>,
    min_ready: usize,
    reached: &mut bool,
) -> usize {
    check_invariants(s);
    let ready = s
        .engines
        .iter()
        .filter(|e| e.phase == EnginePhase::Ready)
        .count();
    *reached |= ready >= min_ready;
    assert!(
        !*reached || ready >= min_ready,
        "fewer than {min_ready} ready engines: {s:#?}"
    );
    let is_old = |e: &&acevisor::actors::messages::EngineView| {
        e.container_id.as_ref().is_some_and(|id| old.contains(id))
    };
    let going = s
        .engines
        .iter()
        .filter(|e| e.phase == EnginePhase::Removing)
        .filter(is_old)
        .count();
    assert!(going <= 1, "two old engines going at once: {s:#?}");
    s.engines.iter().filter(is_old).count()
}

pub fn check_invariants(s: &SupervisorSnapshot) {
    for lane in &s.lanes {
        let vpn = lane.key();
        let live: Vec<_> = s
            .engines_on(vpn)
            .into_iter()
            .filter(|e| e.phase != EnginePhase::Removing)
            .collect();
        let mut p2p: Vec<u16> = live.iter().map(|e| e.p2p_port).collect();
        p2p.sort_unstable();
        let n = p2p.len();
        p2p.dedup();
        assert_eq!(
            n,
            p2p.len(),
            "two engines share a P2P port on {vpn}: {s:#?}"
        );
        assert_eq!(
            s.counters.names_above_bound, 0,
            "a name above live+1 was handed out"
        );
        if lane.failed {
            assert!(
                live.iter().all(|e| e.phase == EnginePhase::Creating),
                "engines kept on failed VPN {vpn}: {s:#?}"
            );
        }
    }
}

/// Engines ready on `vpn`, and the forwarded ones among them.
pub fn ready_on(s: &SupervisorSnapshot, vpn: &str) -> usize {
    s.engines_on(vpn)
        .iter()
        .filter(|e| e.phase == EnginePhase::Ready)
        .count()
}

/// `n` ready engines on `vpn`, exactly one of them forwarded, holding `port`.
pub fn full(s: &SupervisorSnapshot, vpn: &str, n: usize, port: u16) -> bool {
    let fw = s.forwarded_on(vpn);
    s.engines_on(vpn).len() == n && ready_on(s, vpn) == n && fw.len() == 1 && fw[0].p2p_port == port
}
