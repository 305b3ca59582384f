//! Forwarded-port changes on the whole actor tree over the in-memory runtime (paused clock):
//! fast polls while a port matters, and the port hook as a trigger, with the slow poll turned to
//! ten minutes so that neither can be mistaken for the safety net; and VPNs that forward several
//! ports (one forwarded engine per port, through set changes and an emergency).

mod tree;

use std::time::Duration;

use acevisor::actors::messages::{SupervisorMsg, SupervisorSnapshot};
use acevisor::core::emergency::EmergencyState;
use acevisor::core::model::EnginePhase;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use tree::{Tree, VPN1, VPN2, check_invariants, config, full, ready_on};

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

/// `n` ready engines on `vpn`, its forwarded ones exactly on `ports` (one each).
fn full_on_ports(s: &SupervisorSnapshot, vpn: &str, n: usize, ports: &[u16]) -> bool {
    let mut fw: Vec<u16> = s.forwarded_on(vpn).iter().map(|e| e.p2p_port).collect();
    fw.sort_unstable();
    s.engines_on(vpn).len() == n && ready_on(s, vpn) == n && fw == ports
}

/// The engines' numbers are exactly 1..N.
fn names_are_dense(s: &SupervisorSnapshot) -> bool {
    let mut ordinals: Vec<String> = s.engines.iter().map(|e| e.name.clone()).collect();
    ordinals.sort();
    let mut want: Vec<String> = (1..=s.engines.len())
        .map(|n| format!("acestream-{n}"))
        .collect();
    want.sort();
    ordinals == want
}

#[tokio::test(start_paused = true)]
async fn two_forwarded_ports_get_two_engines_and_the_one_that_goes_away_loses_its_engine() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 0, Some(DockerHealth::Healthy));
    m.set_ports(VPN1, &[41002, 41001]);
    let tree = Tree::start(&m, config("single", 3, "")).await;
    let s = tree
        .wait("a forwarded engine on each port", 10 * SEC, |s| {
            full_on_ports(s, VPN1, 3, &[41001, 41002]) && names_are_dense(s)
        })
        .await;
    assert_eq!(
        s.vpns[0].lane.forwarded_ports().to_vec(),
        vec![41001, 41002]
    );
    let kept = s
        .forwarded_on(VPN1)
        .into_iter()
        .find(|e| e.p2p_port == 41001)
        .map(|e| (e.name.clone(), e.container_id.clone()))
        .unwrap();

    // The provider drops 41002.
    m.set_ports(VPN1, &[41001]);
    let s = tree
        .wait("41002's engine gone, the pool refilled", 20 * SEC, |s| {
            check_invariants(s);
            full_on_ports(s, VPN1, 3, &[41001]) && names_are_dense(s)
        })
        .await;
    let still = s
        .forwarded_on(VPN1)
        .into_iter()
        .map(|e| (e.name.clone(), e.container_id.clone()))
        .next()
        .unwrap();
    assert_eq!(still.1, kept.1, "41001's engine untouched (same container)");
    assert_eq!(s.counters.port_changed, 1, "one change of the set");
    assert_eq!(s.counters.engines_removed.get("port_mismatch"), Some(&1));
    assert_eq!(s.counters.removed_total(), 1, "nothing else removed");
    assert_eq!(s.vpns[0].lane.forwarded_ports().to_vec(), vec![41001]);
}

#[tokio::test(start_paused = true)]
async fn a_vpn_with_two_ports_fails_and_recovers_with_a_forwarded_engine_per_port() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 0, Some(DockerHealth::Healthy));
    m.set_ports(VPN1, &[41001, 41002]);
    m.add_vpn(VPN2, 42001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("redundant", 6, "")).await;
    tree.wait("both VPNs full", 10 * SEC, |s| {
        full_on_ports(s, VPN1, 3, &[41001, 41002]) && full(s, VPN2, 3, 42001)
    })
    .await;
    m.kill(VPN1);
    let s = tree
        .wait("emergency, VPN1's engines gone", 2 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. }) && s.engines_on(VPN1).is_empty()
        })
        .await;
    assert!(full(&s, VPN2, 3, 42001), "the healthy VPN untouched");
    // Back with other ports: the new set is the baseline, no change reported.
    m.start(VPN1);
    m.set_health(VPN1, DockerHealth::Healthy);
    m.set_ports(VPN1, &[43001, 43002]);
    let s = tree
        .wait(
            "recovered with a forwarded engine per new port",
            20 * SEC,
            |s| {
                check_invariants(s);
                s.emergency == EmergencyState::Normal
                    && full_on_ports(s, VPN1, 3, &[43001, 43002])
                    && full(s, VPN2, 3, 42001)
                    && s.engines.iter().all(|e| e.phase == EnginePhase::Ready)
            },
        )
        .await;
    assert_eq!(s.counters.port_changed, 0);
    assert_eq!(s.counters.emergency_entered, 1);
    assert_eq!(s.counters.emergency_exited, 1);
}
