//! How the daemon stops. `engines.on_shutdown = "remove"`: the daemon removes exactly its own
//! engines (this instance, role `engine`) and nothing else; a Supervisor that stops on its own is
//! noticed (the daemon then exits non-zero). Over the in-memory runtime; the real-Docker side of
//! shutdown ("keep" leaves engines running and a new acevisor adopts them) is in
//! `tests/docker_deploy.rs`.

use std::collections::BTreeMap;

use acevisor::config::{Config, OnShutdown};
use acevisor::core::labels::LabelKeys;
use acevisor::daemon::remove_managed_engines;
use acevisor::runtime::memory::MemoryRuntime;
use acevisor::runtime::{Attach, ContainerRuntime, ContainerSpec};

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
    remove_managed_engines(&rt, &LabelKeys::new("acevisor"), "a").await;
    let mut left: Vec<String> = rt.containers().into_iter().map(|c| c.name).collect();
    left.sort();
    assert_eq!(left, ["acestream-9", "gluetun", "other-1"]);
    assert!(rt.inspect(&vpn).await.unwrap().is_some());
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
    remove_managed_engines(&rt, &LabelKeys::new("acevisor"), "a").await;
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

#[tokio::test]
async fn a_supervisor_that_stops_on_its_own_is_noticed_and_a_signal_is_not_mistaken_for_it() {
    use acevisor::daemon::{Stopped, until_stopped};
    let m = MemoryRuntime::new();
    m.add_vpn("gluetun", 30001, None);
    let cfg = tree::config("single", 1, "");
    let deps = || acevisor::actors::supervisor::Deps {
        runtime: std::sync::Arc::new(m.clone()),
        control: std::sync::Arc::new(m.clone()),
        engine_api: std::sync::Arc::new(m.clone()),
    };

    let (sup, mut handle) = acevisor::daemon::start(cfg.clone(), deps(), vec![None])
        .await
        .unwrap();
    assert_eq!(
        until_stopped(&mut handle, async {}).await,
        Stopped::Signal,
        "a signal while the tree runs"
    );
    sup.stop(Some("gone".into()));
    assert_eq!(
        until_stopped(&mut handle, std::future::pending()).await,
        Stopped::TreeDied
    );
}
