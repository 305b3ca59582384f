//! Forwarded-port changes on the whole actor tree over the in-memory runtime (paused clock):
//! fast polls while a port matters, and the port hook as a trigger, with the slow poll turned to
//! ten minutes so that neither can be mistaken for the safety net.

mod tree;

use std::time::Duration;

use acevisor::actors::messages::SupervisorMsg;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use tree::{Tree, VPN1, config, full};

const SEC: Duration = Duration::from_secs(1);

/// A single-VPN tree of `n` engines whose slow poll is ten minutes.
async fn slow_polled(m: &MemoryRuntime, n: u32) -> Tree {
    let mut cfg = config("single", n, "");
    cfg.vpn.poll_interval = 600 * SEC;
    Tree::start(m, cfg).await
}

async fn hook(tree: &Tree, vpn: &str) -> bool {
    let vpn = vpn.to_string();
    match tree
        .sup
        .call(
            |reply| SupervisorMsg::PortHook { vpn, reply },
            Some(5 * SEC),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(known)) => known,
        other => panic!("supervisor did not answer the hook: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_port_of_a_vpn_is_seen_by_fast_polls() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 0, Some(DockerHealth::Healthy));
    let tree = slow_polled(&m, 3).await;
    tree.hold(
        30 * SEC,
        |s| s.forwarded_on(VPN1).is_empty(),
        "no forwarded engine before the port",
    )
    .await;
    m.set_port(VPN1, 31000);
    // The slow poll would come after ten minutes; the VPN waiting for its port is polled fast.
    let s = tree
        .wait("the forwarded engine on the first port", 5 * SEC, |s| {
            full(s, VPN1, 3, 31000)
        })
        .await;
    assert_eq!(s.counters.port_changed, 0, "the first port is the baseline");
}

#[tokio::test(start_paused = true)]
async fn a_port_hook_brings_a_port_change_to_the_forwarded_engine() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = slow_polled(&m, 3).await;
    tree.wait("3 engines", 10 * SEC, |s| full(s, VPN1, 3, 30001))
        .await;
    m.set_port(VPN1, 30002);
    // Without the hook, nothing looks at the VPN for ten minutes.
    tree.hold(
        60 * SEC,
        |s| full(s, VPN1, 3, 30001),
        "the old port while nobody looks",
    )
    .await;
    assert!(hook(&tree, VPN1).await, "a configured VPN");
    let s = tree
        .wait("the forwarded engine on the new port", 6 * SEC, |s| {
            full(s, VPN1, 3, 30002)
        })
        .await;
    assert_eq!(s.counters.port_changed, 1);
    assert_eq!(s.counters.engines_removed.get("port_mismatch"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn a_hook_is_only_a_trigger_and_a_flap_it_reports_changes_nothing() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = slow_polled(&m, 2).await;
    tree.wait("2 engines", 10 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    assert!(!hook(&tree, "not-a-vpn").await, "an unknown container");
    // Gluetun's down hook (port gone), then its up hook with the same port: no change.
    m.set_port(VPN1, 0);
    assert!(hook(&tree, VPN1).await);
    tree.hold(SEC, |s| full(s, VPN1, 2, 30001), "port 0 is no change")
        .await;
    m.set_port(VPN1, 30001);
    assert!(hook(&tree, VPN1).await);
    let s = tree
        .hold(
            20 * SEC,
            |s| full(s, VPN1, 2, 30001),
            "p -> 0 -> p is nothing",
        )
        .await;
    assert_eq!(s.counters.port_changed, 0);
    assert_eq!(s.counters.removed_total(), 0);
}
