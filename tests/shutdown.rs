//! How the daemon stops. `engines.on_shutdown = "remove"`: the daemon removes exactly its own
//! engines (this instance, role `engine`) and nothing else; a Supervisor that stops on its own is
//! noticed (the daemon then exits non-zero). Over the in-memory runtime; the real-Docker side of
//! shutdown ("keep" leaves engines running and a new acevisor adopts them) is in
//! `tests/docker_deploy.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use acevisor::config::{Config, OnShutdown};
use acevisor::core::labels::LabelKeys;
use acevisor::daemon::remove_managed_engines;
use acevisor::runtime::memory::MemoryRuntime;
use acevisor::runtime::{Attach, ContainerRuntime, ContainerSpec};

const GRACE: Duration = Duration::from_secs(7);

fn spec(name: &str, labels: &[(&str, &str)]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "acevisor-testbed/engine:dev".into(),
        cmd: Vec::new(),
        env: BTreeMap::new(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        attach: Attach::Network {
            network: "acevisor".into(),
            publish: Vec::new(),
        },
    }
}

#[tokio::test]
async fn remove_takes_only_this_instances_engines() {
    let rt = MemoryRuntime::new();
    let vpn = rt.add_vpn("gluetun", 40000, None);
    for (name, labels) in [
        (
            "acestream-1",
            vec![("acevisor.managed", "a"), ("acevisor.role", "engine")],
        ),
        (
            "acestream-2",
            vec![("acevisor.managed", "a"), ("acevisor.role", "engine")],
        ),
        (
            "other-1",
            vec![("acevisor.managed", "b"), ("acevisor.role", "engine")],
        ),
        ("acestream-9", vec![]),
    ] {
        rt.create_and_start(&spec(name, &labels)).await.unwrap();
    }
    remove_managed_engines(&rt, &LabelKeys::new("acevisor"), "a", GRACE).await;
    let mut left: Vec<String> = rt.containers().into_iter().map(|c| c.name).collect();
    left.sort();
    assert_eq!(left, ["acestream-9", "gluetun", "other-1"]);
    assert!(rt.inspect(&vpn).await.unwrap().is_some());
}

/// As an ordinary removal: each engine is stopped with `docker.stop_timeout` (SIGTERM, so a real
/// engine flushes its state) before it is removed, and a failed stop still removes it. Before
/// this, the engines were removed at once (SIGKILL). Seen failing without the stop.
#[tokio::test]
async fn remove_stops_each_engine_gracefully_first() {
    let rt = MemoryRuntime::new();
    let mut ids = Vec::new();
    for name in ["acestream-1", "acestream-2", "acestream-3"] {
        let labels = [("acevisor.managed", "a"), ("acevisor.role", "engine")];
        ids.push(rt.create_and_start(&spec(name, &labels)).await.unwrap());
    }
    rt.fail_next("stop", 1);
    remove_managed_engines(&rt, &LabelKeys::new("acevisor"), "a", GRACE).await;
    assert!(rt.containers().is_empty(), "every engine removed");
    let mut stopped: Vec<(String, Duration)> = rt.stops();
    stopped.sort();
    let mut want: Vec<(String, Duration)> = ids.iter().map(|id| (id.clone(), GRACE)).collect();
    want.sort();
    // One stop failed (injected before it was recorded): that engine was removed by force.
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    assert!(stopped.iter().all(|s| want.contains(s)), "{stopped:?}");
    let mut removed = rt.removed_ids();
    removed.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(removed, all);
}

#[tokio::test]
async fn a_failing_list_leaves_everything_running() {
    let rt = MemoryRuntime::new();
    rt.create_and_start(&spec(
        "acestream-1",
        &[("acevisor.managed", "a"), ("acevisor.role", "engine")],
    ))
    .await
    .unwrap();
    rt.fail_next("list", 1);
    remove_managed_engines(&rt, &LabelKeys::new("acevisor"), "a", GRACE).await;
    assert_eq!(rt.containers().len(), 1);
}

#[test]
fn on_shutdown_defaults_to_keep_and_parses_remove() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.engines.on_shutdown, OnShutdown::Keep);
    let c = Config::parse("[engines]\non_shutdown = \"remove\"\n").unwrap();
    assert_eq!(c.engines.on_shutdown, OnShutdown::Remove);
    let e = Config::parse("[engines]\non_shutdown = \"delete\"\n").unwrap_err();
    assert!(e.contains("engines.on_shutdown"), "{e}");
}

mod tree;

/// `until_stopped` tells a requested shutdown from a tree that died: a signal while the tree runs
/// is `Signal` and leaves the tree running; with no signal it waits as long as the tree runs;
/// and a Supervisor that escalates on its own (a child crashing past the restart intensity, no
/// one stopping it from outside) is `TreeDied`, which `daemon::run` turns into a non-zero exit.
#[tokio::test(start_paused = true)]
async fn a_supervisor_that_stops_on_its_own_is_noticed_and_a_signal_is_not_mistaken_for_it() {
    use acevisor::actors::messages::{MonitorMsg, SupervisorMsg};
    use acevisor::daemon::{Stopped, until_stopped};
    let m = MemoryRuntime::new();
    m.add_vpn("gluetun", 30001, None);
    let cfg = tree::config("single", 1, "");
    let deps = acevisor::actors::supervisor::Deps {
        runtime: std::sync::Arc::new(m.clone()),
        control: std::sync::Arc::new(m.clone()),
        engine_api: std::sync::Arc::new(m.clone()),
        name_registry: None,
    };
    let (sup, mut handle) = acevisor::daemon::start(cfg.clone(), deps, vec![None])
        .await
        .unwrap();
    assert_eq!(
        until_stopped(&mut handle, async {}).await,
        Stopped::Signal,
        "a signal while the tree runs"
    );
    assert!(!handle.is_finished(), "a signal is not the tree's death");
    assert!(
        tokio::time::timeout(
            Duration::from_secs(600),
            until_stopped(&mut handle, std::future::pending())
        )
        .await
        .is_err(),
        "no signal and a running tree: it keeps waiting"
    );

    // max_restarts = 3 within the window: the fourth crash of the VpnMonitor escalates.
    let restarts = || async {
        ractor::call_t!(sup, SupervisorMsg::Snapshot, 10_000)
            .map(|s| s.counters.actor_restarts)
            .unwrap_or(u64::MAX)
    };
    for n in 1..=4u64 {
        let monitor = sup
            .get_cell()
            .get_children()
            .into_iter()
            .find(|c| c.is_message_type_of::<MonitorMsg>() == Some(true))
            .expect("the VpnMonitor runs");
        monitor.kill();
        if n < 4 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while restarts().await < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "restart {n} never came"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        tokio::time::timeout(
            Duration::from_secs(60),
            until_stopped(&mut handle, std::future::pending())
        )
        .await,
        Ok(Stopped::TreeDied),
        "the escalation is noticed without any signal"
    );
}
