//! Creation on the real Docker engine through the actor tree: an engine that exits at once
//! (its P2P port taken in the VPN's namespace) is a failed creation, removed and retried, even
//! though its creation permit was freed as soon as Docker reported it started.
//!
//! Without Docker these tests print `SKIPPED` and pass, unless `ACEVISOR_REQUIRE_DOCKER=1`.

mod docker_world;
mod support;
mod tree;

use std::sync::Arc;
use std::time::Duration;

use acevisor::actors::supervisor::Deps;
use acevisor::clients::engine::EngineClient;
use acevisor::clients::gluetun::GluetunClient;
use acevisor::runtime::docker::DockerRuntime;
use docker_world::World;
use tree::Tree;

const FORWARDED: u16 = 40_123;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_exiting_at_once_is_a_failed_creation_removed_and_retried() {
    let Some(world) = World::new(&[FORWARDED], None).await else {
        return;
    };
    // Someone else's engine holds the forwarded port in the VPN's namespace: acevisor's
    // forwarded engine (P2P = that port) cannot bind it and exits at once.
    let vpn_id = support::docker_ok(&["inspect", "--format", "{{.Id}}", world.vpn(0)]);
    let blocker =
        support::start_fake_engine(&world.run, "blocker", &vpn_id, 18_000, FORWARDED, &[]);

    let cfg = world.config("single", 1, "", "");
    // A generous settle window: the behaviour is under test, not the default's length on a
    // loaded machine.
    let runtime = DockerRuntime::connect(None, Duration::from_secs(20))
        .expect("docker client")
        .with_start_settle(Duration::from_secs(1));
    let deps = Deps {
        runtime: Arc::new(runtime),
        control: Arc::new(GluetunClient::new(Duration::from_secs(1)).expect("gluetun client")),
        engine_api: Arc::new(EngineClient::new(Duration::from_secs(1)).expect("engine client")),
        name_registry: None,
    };
    let tree = Tree::start_with(deps, cfg, vec![None]).await;
    let s = tree
        .wait("a failed creation", Duration::from_secs(60), |s| {
            s.counters.create_failures >= 1
        })
        .await;
    assert_eq!(s.counters.engines_lost, 0, "a failed creation, not a death");
    assert_eq!(s.counters.engines_created, 0, "{:?}", s.counters);

    // The port comes free: the retried creation succeeds on the same name and port.
    support::docker_rm_f(&blocker);
    let s = tree
        .wait("the forwarded engine ready", Duration::from_secs(90), |s| {
            tree::full(s, world.vpn(0), 1, FORWARDED)
        })
        .await;
    assert_eq!(s.engines[0].name, world.engine(1));
    assert_eq!(s.counters.engines_lost, 0);
    // Every failed container was removed: only the ready engine is left, running or not.
    let managed = support::docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={}", world.run.managed_label()),
    ]);
    assert_eq!(managed.lines().count(), 1, "{managed}");
    tree.stop().await;
}
