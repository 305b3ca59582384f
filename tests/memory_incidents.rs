//! The reference incidents of docs/behavior.md replayed on the whole actor tree over the in-memory runtime,
//! with tokio's paused clock as the hand-driven clock (a 76 s outage takes milliseconds).

mod tree;

use std::time::Duration;

use acevisor::clients::TunnelStatus;
use acevisor::core::emergency::EmergencyState;
use acevisor::core::model::EnginePhase;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use tree::{Tree, VPN1, VPN2, config, full, ready_on, two_vpns};

const SEC: Duration = Duration::from_secs(1);

async fn ten_engines_five_per_vpn() -> Tree {
    let m = MemoryRuntime::new();
    two_vpns(&m, 55747, 40000);
    let tree = Tree::start(&m, config("redundant", 10, "")).await;
    tree.wait("10 engines 5/5", 30 * SEC, |s| {
        full(s, VPN1, 5, 55747) && full(s, VPN2, 5, 40000)
    })
    .await;
    tree
}

#[tokio::test(start_paused = true)]
async fn incident_a_recovered_vpn_keeps_its_new_forwarded_engine() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    let before = tree.snap().await;
    let vpn2_ids: Vec<_> = before
        .engines_on(VPN2)
        .iter()
        .map(|e| e.container_id.clone())
        .collect();

    m.kill(VPN1);
    let s = tree
        .wait("emergency with VPN1's engines gone", SEC, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. }) && s.engines_on(VPN1).is_empty()
        })
        .await;
    assert_eq!(s.counters.emergency_entered, 1);
    assert_eq!(s.counters.engines_removed.get("vpn_failed"), Some(&5));
    let now_ids: Vec<_> = s
        .engines_on(VPN2)
        .iter()
        .map(|e| e.container_id.clone())
        .collect();
    assert_eq!(now_ids, vpn2_ids, "VPN2 and its forwarded engine untouched");

    tokio::time::sleep(76 * SEC).await;
    m.start(VPN1);
    tree.hold(
        2 * SEC,
        |s| s.engines_on(VPN1).is_empty(),
        "nothing on VPN1 while Docker health is starting",
    )
    .await;
    m.set_health(VPN1, DockerHealth::Healthy);
    tree.hold(
        10 * SEC,
        |s| s.engines_on(VPN1).is_empty(),
        "nothing on VPN1 before its port is known",
    )
    .await;
    m.set_port(VPN1, 34817);
    let s = tree
        .wait("VPN1 full again", 10 * SEC, |s| full(s, VPN1, 5, 34817))
        .await;
    let fw = s.forwarded_on(VPN1)[0].clone();
    assert_eq!(
        m.p2p_port_of(&fw.name),
        Some(34817),
        "the engine itself holds the new port"
    );
    let lowest_new = s.engines_on(VPN1).iter().map(|e| e.ordinal).min();
    assert_eq!(
        Some(fw.ordinal),
        lowest_new,
        "the forwarded engine was created first"
    );
    let removed = s.counters.removed_total();

    let s = tree
        .hold(
            30 * SEC,
            |s| full(s, VPN1, 5, 34817) && full(s, VPN2, 5, 40000),
            "10 engines 5/5 with one forwarded per VPN",
        )
        .await;
    assert_eq!(
        s.counters.removed_total(),
        removed,
        "no engine removed after recovery"
    );
    assert_eq!(s.counters.port_changed, 0);
    assert_eq!(s.counters.emergency_entered, 1);
    assert_eq!(s.counters.emergency_exited, 1);
    assert_eq!(s.emergency, EmergencyState::Normal);
    assert!(
        s.engines.iter().all(|e| e.ordinal <= 10),
        "names within [1, 10]"
    );
    assert_eq!(
        s.forwarded_on(VPN1)[0].name,
        fw.name,
        "the new forwarded engine was kept"
    );
}

#[tokio::test(start_paused = true)]
async fn incident_b_nothing_is_created_before_the_port_is_known() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    m.kill(VPN1);
    tree.wait("VPN1 emptied", SEC, |s| s.engines_on(VPN1).is_empty())
        .await;
    m.start(VPN1);
    m.set_health(VPN1, DockerHealth::Healthy);
    tree.hold(
        13 * SEC,
        |s| s.engines_on(VPN1).is_empty(),
        "no engine on VPN1 while its port is unknown",
    )
    .await;
    m.set_port(VPN1, 34817);
    let s = tree
        .wait("VPN1 full", 10 * SEC, |s| full(s, VPN1, 5, 34817))
        .await;
    assert_eq!(s.counters.port_changed, 0);
}

#[tokio::test(start_paused = true)]
async fn port_wait_lets_ordinary_engines_in_then_the_forwarded_one_when_the_port_appears() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 0, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 3, "port_wait = \"10s\"")).await;
    tree.hold(
        9 * SEC,
        |s| s.engines.is_empty(),
        "nothing before port_wait",
    )
    .await;
    tree.wait("ordinary engines after port_wait", 5 * SEC, |s| {
        ready_on(s, VPN1) == 3 && s.forwarded_on(VPN1).is_empty()
    })
    .await;
    m.set_port(VPN1, 31000);
    let s = tree
        .wait("a forwarded engine once the port is known", 10 * SEC, |s| {
            s.forwarded_on(VPN1).len() == 1
        })
        .await;
    assert_eq!(s.forwarded_on(VPN1)[0].p2p_port, 31000);
}

#[tokio::test(start_paused = true)]
async fn genuine_port_change_replaces_only_the_forwarded_engine() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 4, "")).await;
    let s = tree
        .wait("4 engines", 10 * SEC, |s| full(s, VPN1, 4, 30001))
        .await;
    let ordinary: Vec<_> = s
        .engines
        .iter()
        .filter(|e| !e.forwarded)
        .map(|e| e.container_id.clone())
        .collect();
    let old_fw = s.forwarded_on(VPN1)[0].name.clone();

    m.set_port(VPN1, 30002);
    let s = tree
        .wait("forwarded engine on the new port", 15 * SEC, |s| {
            full(s, VPN1, 4, 30002)
        })
        .await;
    assert_eq!(s.counters.port_changed, 1);
    assert_eq!(s.counters.engines_removed.get("port_mismatch"), Some(&1));
    assert_eq!(s.counters.removed_total(), 1, "no other engine touched");
    let still: Vec<_> = s
        .engines
        .iter()
        .filter(|e| !e.forwarded)
        .map(|e| e.container_id.clone())
        .collect();
    assert_eq!(still, ordinary);
    assert!(
        s.engines
            .iter()
            .all(|e| e.name != old_fw || !e.forwarded || e.p2p_port == 30002)
    );
    let fw = &s.forwarded_on(VPN1)[0];
    assert_eq!(m.p2p_port_of(&fw.name), Some(30002));
    let s = tree
        .hold(
            20 * SEC,
            |s| full(s, VPN1, 4, 30002),
            "stable after the change",
        )
        .await;
    assert_eq!(s.counters.port_changed, 1);
}

#[tokio::test(start_paused = true)]
async fn tunnel_reconnect_with_the_same_port_changes_nothing() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 3, "")).await;
    let before = tree
        .wait("3 engines", 10 * SEC, |s| full(s, VPN1, 3, 30001))
        .await;
    m.set_tunnel(VPN1, TunnelStatus::Stopped);
    m.set_port(VPN1, 0);
    tree.wait("degraded", 10 * SEC, |s| {
        s.vpns.iter().any(|v| v.status == "degraded")
    })
    .await;
    m.set_tunnel(VPN1, TunnelStatus::Running);
    m.set_port(VPN1, 30001);
    let s = tree
        .hold(
            20 * SEC,
            |s| s.engines.len() == 3,
            "engines kept through the reconnect",
        )
        .await;
    assert_eq!(s.counters.removed_total(), 0);
    assert_eq!(s.counters.port_changed, 0);
    assert_eq!(s.counters.vpn_failed, 0);
    let ids = |s: &acevisor::actors::messages::SupervisorSnapshot| {
        s.engines
            .iter()
            .map(|e| e.container_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&s), ids(&before));
}

#[tokio::test(start_paused = true)]
async fn tunnel_reconnect_with_a_new_port_replaces_only_the_forwarded_engine() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 3, "")).await;
    tree.wait("3 engines", 10 * SEC, |s| full(s, VPN1, 3, 30001))
        .await;
    m.set_tunnel(VPN1, TunnelStatus::Stopped);
    m.set_port(VPN1, 0);
    tree.wait("degraded", 10 * SEC, |s| {
        s.vpns.iter().any(|v| v.status == "degraded")
    })
    .await;
    m.set_tunnel(VPN1, TunnelStatus::Running);
    m.set_port(VPN1, 30009);
    let s = tree
        .wait("forwarded engine on the new port", 20 * SEC, |s| {
            full(s, VPN1, 3, 30009)
        })
        .await;
    assert_eq!(s.counters.port_changed, 1);
    assert_eq!(s.counters.removed_total(), 1);
    assert_eq!(s.counters.vpn_failed, 0);
}

#[tokio::test(start_paused = true)]
async fn recreated_vpn_gets_all_its_engines_recreated_against_the_new_id() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    let new_id = m.recreate_vpn(VPN1, 34817, Some(DockerHealth::Healthy));
    let s = tree
        .wait("VPN1 engines on the new ID", 20 * SEC, |s| {
            full(s, VPN1, 5, 34817)
                && s.engines_on(VPN1)
                    .iter()
                    .all(|e| e.vpn_id.as_deref() == Some(new_id.as_str()))
        })
        .await;
    assert_eq!(s.counters.vpn_failed, 1);
    assert_eq!(s.counters.vpn_recovered, 1);
    assert!(full(&s, VPN2, 5, 40000));
}

#[tokio::test(start_paused = true)]
async fn vpn_restarted_in_place_gets_its_engines_recreated() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    let old: Vec<_> = tree
        .snap()
        .await
        .engines_on(VPN1)
        .iter()
        .map(|e| e.container_id.clone())
        .collect();
    m.restart_in_place(VPN1);
    m.set_health(VPN1, DockerHealth::Healthy);
    m.set_port(VPN1, 55747);
    let s = tree
        .wait("VPN1 engines replaced", 20 * SEC, |s| {
            full(s, VPN1, 5, 55747)
                && s.engines_on(VPN1)
                    .iter()
                    .all(|e| !old.contains(&e.container_id))
        })
        .await;
    assert_eq!(s.counters.vpn_failed, 1);
    assert_eq!(
        s.counters
            .engines_removed
            .get("vpn_failed")
            .copied()
            .unwrap_or(0)
            + s.counters
                .engines_removed
                .get("stale")
                .copied()
                .unwrap_or(0),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn both_vpns_down_is_an_outage_and_one_back_serves_with_a_forwarded_engine() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    m.kill(VPN1);
    m.kill(VPN2);
    let s = tree
        .wait("outage", 5 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Outage { .. }) && s.engines.is_empty()
        })
        .await;
    assert_eq!(s.counters.outage_entered, 1);
    m.start(VPN2);
    m.set_health(VPN2, DockerHealth::Healthy);
    m.set_port(VPN2, 41000);
    let s = tree
        .wait("service on VPN2", 20 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. }) && full(s, VPN2, 5, 41000)
        })
        .await;
    assert!(s.engines_on(VPN1).is_empty());
}

#[tokio::test(start_paused = true)]
async fn healthy_vpn_failing_during_an_emergency_is_an_outage_not_a_stale_emergency() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    m.kill(VPN1);
    tree.wait("emergency", 5 * SEC, |s| {
        matches!(s.emergency, EmergencyState::Emergency { .. })
    })
    .await;
    m.kill(VPN2);
    let s = tree
        .wait("outage", 5 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Outage { .. })
        })
        .await;
    tree.wait("nothing left", 5 * SEC, |s| s.engines.is_empty())
        .await;
    assert_eq!(s.counters.emergency_entered, 1);
}

#[tokio::test(start_paused = true)]
async fn unauthorized_vpn_is_misconfigured_and_its_engines_are_left_alone() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    m.set_api_key(VPN1, Some("the-right-key"));
    let s = tree
        .wait("misconfigured", 15 * SEC, |s| {
            s.vpns.iter().any(|v| v.status == "misconfigured")
        })
        .await;
    assert!(
        s.vpns
            .iter()
            .any(|v| v.last_error.as_deref().is_some_and(|e| e.contains("401")))
    );
    let s = tree
        .hold(
            30 * SEC,
            |s| s.engines_on(VPN1).len() == 5,
            "engines of the misconfigured VPN kept",
        )
        .await;
    assert_eq!(s.counters.removed_total(), 0);
    assert_eq!(s.counters.vpn_failed, 0);
}

#[tokio::test(start_paused = true)]
async fn shift_capacity_tops_the_healthy_vpn_up_during_an_emergency() {
    let m = MemoryRuntime::new();
    two_vpns(&m, 55747, 40000);
    let tree = Tree::start(
        &m,
        config("redundant", 10, "emergency_capacity = \"shift\""),
    )
    .await;
    tree.wait("5/5", 20 * SEC, |s| {
        full(s, VPN1, 5, 55747) && full(s, VPN2, 5, 40000)
    })
    .await;
    m.kill(VPN1);
    tree.wait("10 on VPN2", 20 * SEC, |s| full(s, VPN2, 10, 40000))
        .await;
}

#[tokio::test(start_paused = true)]
async fn engine_removed_out_of_band_is_replaced_with_the_freed_lowest_number() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    let old = tree
        .snap()
        .await
        .engines
        .iter()
        .find(|e| e.name == "acestream-3")
        .unwrap()
        .container_id
        .clone();
    m.remove_out_of_band("acestream-3");
    let s = tree
        .wait("acestream-3 replaced", 10 * SEC, |s| {
            s.engines.iter().any(|e| {
                e.name == "acestream-3" && e.phase == EnginePhase::Ready && e.container_id != old
            })
        })
        .await;
    assert_eq!(s.engines.len(), 10);
    assert_eq!(s.counters.engines_lost, 1);
}

#[tokio::test(start_paused = true)]
async fn restarted_acevisor_adopts_running_engines_without_duplicates_or_removals() {
    let tree = ten_engines_five_per_vpn().await;
    let m = tree.mem.clone();
    let before: Vec<_> = tree
        .snap()
        .await
        .engines
        .iter()
        .map(|e| (e.name.clone(), e.container_id.clone()))
        .collect();
    let creates = m.calls("create");
    tree.stop().await;
    assert_eq!(
        m.containers().len(),
        12,
        "engines keep running while acevisor is down"
    );
    let tree = Tree::start(&m, config("redundant", 10, "")).await;
    let s = tree
        .wait("adopted", 20 * SEC, |s| {
            full(s, VPN1, 5, 55747) && full(s, VPN2, 5, 40000)
        })
        .await;
    let after: Vec<_> = s
        .engines
        .iter()
        .map(|e| (e.name.clone(), e.container_id.clone()))
        .collect();
    assert_eq!(after, before);
    assert_eq!(m.calls("create"), creates, "no duplicates created");
    assert_eq!(s.counters.removed_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn restarted_acevisor_removes_engines_of_a_vpn_recreated_while_it_was_down() {
    let tree = ten_engines_five_per_vpn().await;
    let m = tree.mem.clone();
    tree.stop().await;
    let new_id = m.recreate_vpn(VPN1, 55747, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("redundant", 10, "")).await;
    let s = tree
        .wait("VPN1 engines recreated", 20 * SEC, |s| {
            full(s, VPN1, 5, 55747)
                && s.engines_on(VPN1)
                    .iter()
                    .all(|e| e.vpn_id.as_deref() == Some(new_id.as_str()))
        })
        .await;
    assert_eq!(s.counters.engines_removed.get("stale"), Some(&5));
}

#[tokio::test(start_paused = true)]
async fn panicking_engine_actor_is_restarted_within_intensity_then_backs_off() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 2, "")).await;
    let s = tree
        .wait("2 engines", 10 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    let victim = s.engines[0].name.clone();
    let container = s.engines[0].container_id.clone();
    for n in 1..=3u64 {
        m.crash_probes_of(&victim, 1);
        tree.wait("actor restarted", 5 * SEC, |s| {
            s.counters.actor_restarts == n
        })
        .await;
        tree.wait("ready again", 5 * SEC, |s| {
            s.engines
                .iter()
                .any(|e| e.name == victim && e.phase == EnginePhase::Ready)
        })
        .await;
    }
    m.crash_probes_of(&victim, 1);
    let s = tree
        .wait("backing off", 5 * SEC, |s| {
            s.counters.restarts_suppressed == 1
        })
        .await;
    assert_eq!(s.counters.actor_restarts, 3);
    let slot = s
        .intensity
        .iter()
        .find(|r| r.slot.contains(&victim))
        .expect("slot reported");
    assert!(slot.backing_off_until.is_some(), "{slot:?}");
    // The daemon is alive and its engines keep serving.
    assert_eq!(s.engines.len(), 2);
    let s = tree
        .wait("restarted after the backoff", 10 * 60 * SEC, |s| {
            s.counters.actor_restarts == 4
        })
        .await;
    let e = s.engines.iter().find(|e| e.name == victim).unwrap();
    assert_eq!(
        e.container_id, container,
        "the same container was adopted, not recreated"
    );
}

#[tokio::test(start_paused = true)]
async fn force_restart_after_restarts_a_down_vpn_once_per_outage() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 2, "force_restart_after = \"30s\"")).await;
    tree.wait("2 engines", std::time::Duration::from_secs(20), |s| {
        full(s, VPN1, 2, 30001)
    })
    .await;
    m.kill(VPN1);
    tree.hold(std::time::Duration::from_secs(25), |_| true, "invariants")
        .await;
    assert_eq!(m.calls("restart"), 0, "not before force_restart_after");
    // The restarted container comes back with Docker health `starting` and stays there: the
    // outage goes on, and acevisor must not restart it again.
    tree.hold(std::time::Duration::from_secs(300), |_| true, "invariants")
        .await;
    assert_eq!(
        m.calls("restart"),
        1,
        "restarted exactly once in this outage"
    );
    m.set_health(VPN1, DockerHealth::Healthy);
    m.set_port(VPN1, 30001);
    tree.wait("recovered", std::time::Duration::from_secs(20), |s| {
        full(s, VPN1, 2, 30001)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn no_force_restart_by_default() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 1, "")).await;
    tree.wait("1 engine", std::time::Duration::from_secs(20), |s| {
        full(s, VPN1, 1, 30001)
    })
    .await;
    m.kill(VPN1);
    tree.hold(std::time::Duration::from_secs(600), |_| true, "invariants")
        .await;
    assert_eq!(
        m.calls("restart"),
        0,
        "Gluetun is never restarted unless asked"
    );
}

/// The public IP of each VPN: asked once it is up, forgotten while it is down, asked anew after
/// the recovery (a reconnect usually exits elsewhere).
#[tokio::test(start_paused = true)]
async fn each_vpn_shows_its_public_ip_only_while_up() {
    let tree = ten_engines_five_per_vpn().await;
    let m = &tree.mem;
    let public_ip = |s: &acevisor::actors::messages::SupervisorSnapshot, vpn: &str| {
        s.vpns
            .iter()
            .find(|v| v.name() == vpn)
            .and_then(|v| v.public_ip.clone())
    };
    tree.wait("both public IPs known", 10 * SEC, |s| {
        public_ip(s, VPN1).as_deref() == Some("203.0.113.7")
            && public_ip(s, VPN2).as_deref() == Some("203.0.113.7")
    })
    .await;

    m.set_public_ip(VPN1, "198.51.100.9");
    m.kill(VPN1);
    let s = tree
        .wait("VPN1 failed", 10 * SEC, |s| s.engines_on(VPN1).is_empty())
        .await;
    assert_eq!(
        public_ip(&s, VPN1),
        None,
        "a failed VPN has no exit address"
    );
    assert_eq!(public_ip(&s, VPN2).as_deref(), Some("203.0.113.7"));

    m.start(VPN1);
    m.set_health(VPN1, DockerHealth::Healthy);
    tree.wait("VPN1's new public IP", 60 * SEC, |s| {
        public_ip(s, VPN1).as_deref() == Some("198.51.100.9")
    })
    .await;
    tree.stop().await;
}
