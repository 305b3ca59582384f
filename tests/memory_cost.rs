//! What acevisor's work costs Docker, on the in-memory runtime (paused clock): a creation frees
//! its permit once Docker reports the container started (not after the start-settle check), an
//! engine exiting within that window is still a failed creation (the breaker counts it), and the
//! safety re-list makes no inspect per engine.

mod tree;

use std::time::Duration;

use acevisor::actors::messages::SupervisorMsg;
use acevisor::core::breaker::BreakerState;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use tree::{Tree, VPN1, config, full};

const SEC: Duration = Duration::from_secs(1);

fn one_vpn() -> MemoryRuntime {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    m
}

#[tokio::test(start_paused = true)]
async fn a_creation_permit_is_free_once_the_container_started_not_after_the_settle() {
    let m = one_vpn();
    // One creation at a time, and a settle window far longer than anything else here.
    m.set_start_settle(10 * SEC);
    let mut cfg = config("single", 2, "");
    cfg.engines.create_concurrency = 1;
    let tree = Tree::start(&m, cfg).await;
    // Both containers run while the first is still in its settle window: the second creation
    // did not wait for the first one's check.
    let s = tree
        .wait("both containers started", 5 * SEC, |_| {
            m.containers().len() == 3 // the VPN and two engines
        })
        .await;
    assert_eq!(s.counters.engines_created, 0, "no creation confirmed yet");
    assert_eq!(m.calls("confirm_start"), 2);
    let s = tree
        .wait("pool", 30 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    assert_eq!(s.counters.engines_created, 2);
    assert_eq!(s.counters.create_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn an_engine_exiting_within_its_settle_window_is_a_failed_creation_retried() {
    let m = one_vpn();
    m.set_start_settle(SEC);
    m.exit_at_start(1);
    let tree = Tree::start(&m, config("single", 2, "")).await;
    let s = tree
        .wait("pool", 60 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    assert_eq!(s.counters.create_failures, 1);
    assert_eq!(s.counters.engines_lost, 0, "a failed creation, not a death");
    assert_eq!(s.breaker, BreakerState::Closed);
    // The failed container was removed, and its name came back: the pool holds 1 and 2.
    assert_eq!(m.removed_ids().len(), 1);
    let mut names: Vec<String> = s.engines.iter().map(|e| e.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["acestream-1", "acestream-2"]);
}

#[tokio::test(start_paused = true)]
async fn engines_that_keep_exiting_at_start_open_the_breaker() {
    let m = one_vpn();
    m.set_start_settle(SEC);
    m.exit_at_start(1_000);
    let tree = Tree::start(&m, config("single", 2, "")).await;
    let s = tree
        .wait("breaker open", 120 * SEC, |s| {
            matches!(s.breaker, BreakerState::Open { .. })
        })
        .await;
    assert!(s.counters.create_failures >= 5, "{:?}", s.counters);
    assert_eq!(s.counters.engines_created, 0);
    m.exit_at_start(0);
    tree.wait("recovered", 10 * 60 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_safety_relist_makes_no_inspect_per_engine() {
    let m = one_vpn();
    let n = 20;
    let tree = Tree::start(&m, config("single", n, "")).await;
    tree.wait("pool", 60 * SEC, |s| full(s, VPN1, n as usize, 30001))
        .await;
    let (lists, inspects) = (m.calls("list"), m.calls("inspect"));
    tree.sup.cast(SupervisorMsg::Relist).expect("supervisor");
    tree.wait("the listing", 10 * SEC, |_| m.calls("list") > lists)
        .await;
    let s = tree.snap().await;
    assert_eq!(s.engines.len(), n as usize, "the listing changed nothing");
    let more = m.calls("inspect") - inspects;
    // The VpnMonitor may inspect its VPN meanwhile; the engines are never inspected.
    assert!(
        more <= 2,
        "a re-list of {n} engines made {more} inspects; it needs none"
    );
}
