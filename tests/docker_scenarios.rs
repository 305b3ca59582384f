//! acevisor against the real Docker engine with the testbed fakes: the pool it builds, what it does
//! when engines or VPNs die, restart or change ports (the incidents of docs/behavior.md), asserted on
//! acevisor's own state, on Docker, and on what each fake engine says of itself.
//! Timings are shrunk through config (poll 200 ms, port_settle 500 ms, tunnel_grace 5 s).

mod docker_world;
mod support;
mod tree;

use std::time::Duration;

use acevisor::core::emergency::EmergencyState;
use acevisor::core::model::EnginePhase;
use docker_world::{World, engine_p2p_port, fake_engines_confirm};
use tree::full;

const SEC: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

fn ids_on(s: &acevisor::actors::messages::SupervisorSnapshot, vpn: &str) -> Vec<Option<String>> {
    s.engines_on(vpn)
        .iter()
        .map(|e| e.container_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_across_two_vpns_with_one_forwarded_engine_each() {
    let Some(w) = World::new(&[55747, 40000], None).await else {
        return;
    };
    let tree = w
        .acevisor(w.config("redundant", 6, "", ""), vec![None, None])
        .await;
    let s = tree
        .wait("6 engines 3/3", MINUTE, |s| {
            full(s, w.vpn(0), 3, 55747) && full(s, w.vpn(1), 3, 40000)
        })
        .await;
    let mut names: Vec<String> = s.engines.iter().map(|e| e.name.clone()).collect();
    names.sort();
    let mut expected: Vec<String> = (1..=6).map(|n| w.engine(n)).collect();
    expected.sort();
    assert_eq!(names, expected, "names are prefix-1..6");
    fake_engines_confirm(&s, w.vpn(0), 55747).await;
    fake_engines_confirm(&s, w.vpn(1), 40000).await;
    assert_eq!(w.docker_engines_on(w.vpn(0)).len(), 3);
    assert_eq!(w.docker_engines_on(w.vpn(1)).len(), 3);
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_removed_or_killed_out_of_band_is_seen_by_event_and_replaced() {
    let Some(w) = World::new(&[31001], None).await else {
        return;
    };
    // Polls and probes are an hour apart: only Docker events can explain a quick reaction.
    let cfg = w.config("single", 3, "", "");
    let mut cfg = cfg;
    cfg.vpn.poll_interval = 60 * MINUTE;
    cfg.engines.health.interval = 60 * MINUTE;
    let tree = w.acevisor(cfg, vec![None]).await;
    let s = tree
        .wait("3 engines", MINUTE, |s| full(s, w.vpn(0), 3, 31001))
        .await;

    let victim = s.engines.iter().find(|e| !e.forwarded).unwrap().clone();
    support::docker_rm_f(victim.container_id.as_deref().unwrap());
    let s = tree
        .wait("replaced with the freed lowest number", MINUTE, |s| {
            s.engines.iter().any(|e| {
                e.name == victim.name
                    && e.phase == EnginePhase::Ready
                    && e.container_id != victim.container_id
            })
        })
        .await;
    assert_eq!(s.engines.len(), 3);

    let victim = s.engines.iter().find(|e| !e.forwarded).unwrap().clone();
    support::docker_kill(victim.container_id.as_deref().unwrap());
    let s = tree
        .wait("killed engine replaced", MINUTE, |s| {
            s.engines.iter().any(|e| {
                e.name == victim.name
                    && e.phase == EnginePhase::Ready
                    && e.container_id != victim.container_id
            })
        })
        .await;
    assert_eq!(s.counters.engines_lost, 2);
    assert_eq!(
        w.docker_engines_on(w.vpn(0)).len(),
        3,
        "the killed container was removed, not left behind"
    );
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_acevisor_adopts_running_engines() {
    let Some(w) = World::new(&[55747, 40000], None).await else {
        return;
    };
    let cfg = w.config("redundant", 4, "", "");
    let tree = w.acevisor(cfg.clone(), vec![None, None]).await;
    let s = tree
        .wait("4 engines", MINUTE, |s| {
            full(s, w.vpn(0), 2, 55747) && full(s, w.vpn(1), 2, 40000)
        })
        .await;
    let before: Vec<_> = s
        .engines
        .iter()
        .map(|e| (e.name.clone(), e.container_id.clone()))
        .collect();
    tree.stop().await;
    assert_eq!(
        w.docker_engines_on(w.vpn(0)).len() + w.docker_engines_on(w.vpn(1)).len(),
        4,
        "engines outlive acevisor"
    );

    let tree = w.acevisor(cfg, vec![None, None]).await;
    tree.wait("adopted", MINUTE, |s| {
        full(s, w.vpn(0), 2, 55747) && full(s, w.vpn(1), 2, 40000)
    })
    .await;
    let s = tree
        .hold(2 * SEC, |x| x.engines.len() == 4, "no duplicates")
        .await;
    let after: Vec<_> = s
        .engines
        .iter()
        .map(|e| (e.name.clone(), e.container_id.clone()))
        .collect();
    assert_eq!(after, before, "same names and container IDs");
    assert_eq!(s.counters.engines_created, 0);
    assert_eq!(s.counters.removed_total(), 0);
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_a_and_b_recovery_with_a_late_new_port() {
    let Some(w) = World::new(&[0, 40000], None).await else {
        return;
    };
    w.set_port(0, 55747).await;
    let tree = w
        .acevisor(w.config("redundant", 10, "", ""), vec![None, None])
        .await;
    let s = tree
        .wait("10 engines 5/5", 2 * MINUTE, |s| {
            full(s, w.vpn(0), 5, 55747) && full(s, w.vpn(1), 5, 40000)
        })
        .await;
    let vpn2_before = ids_on(&s, w.vpn(1));

    support::docker_kill(w.vpn(0));
    let s = tree
        .wait("emergency, VPN1 emptied", 10 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. })
                && s.engines_on(w.vpn(0)).is_empty()
        })
        .await;
    assert_eq!(s.counters.emergency_entered, 1);
    assert_eq!(s.counters.engines_removed.get("vpn_failed"), Some(&5));
    assert_eq!(ids_on(&s, w.vpn(1)), vpn2_before, "VPN2 untouched");
    assert!(w.docker_engines_on(w.vpn(0)).is_empty(), "Docker agrees");

    // Back with no port (the fake starts with port 0): incident B's window.
    support::docker_ok(&["start", w.vpn(0)]);
    tree.hold(
        5 * SEC,
        |s| s.engines_on(w.vpn(0)).is_empty(),
        "nothing on VPN1 before its port is known",
    )
    .await;
    assert!(w.docker_engines_on(w.vpn(0)).is_empty());
    w.set_port(0, 34817).await;
    let s = tree
        .wait("VPN1 full on the new port", MINUTE, |s| {
            full(s, w.vpn(0), 5, 34817)
        })
        .await;
    fake_engines_confirm(&s, w.vpn(0), 34817).await;
    let removed = s.counters.removed_total();
    let s = tree
        .hold(
            4 * SEC,
            |s| full(s, w.vpn(0), 5, 34817) && full(s, w.vpn(1), 5, 40000),
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
    assert!(
        s.engines.iter().all(|e| e.ordinal <= 10),
        "names within [1, 10]"
    );
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_port_change_and_same_port_flap_in_single_mode() {
    let Some(w) = World::new(&[30001], None).await else {
        return;
    };
    let tree = w.acevisor(w.config("single", 3, "", ""), vec![None]).await;
    let s = tree
        .wait("3 engines", MINUTE, |s| full(s, w.vpn(0), 3, 30001))
        .await;
    let ordinary: Vec<_> = s
        .engines
        .iter()
        .filter(|e| !e.forwarded)
        .map(|e| e.container_id.clone())
        .collect();

    // Flap: p1 -> 0 -> p1.
    w.reconnect(0, 30001, 300).await;
    let s = tree
        .hold(
            3 * SEC,
            |s| full(s, w.vpn(0), 3, 30001) || s.vpns[0].status == "degraded",
            "engines kept through the flap",
        )
        .await;
    assert_eq!(s.counters.removed_total(), 0, "no replacement for a flap");
    assert_eq!(s.counters.port_changed, 0);

    // Genuine change: p1 -> 0 -> p2.
    w.reconnect(0, 30002, 300).await;
    let s = tree
        .wait("forwarded engine on the new port", MINUTE, |s| {
            full(s, w.vpn(0), 3, 30002)
        })
        .await;
    assert_eq!(s.counters.port_changed, 1);
    assert_eq!(
        s.counters.removed_total(),
        1,
        "only the forwarded engine replaced"
    );
    let still: Vec<_> = s
        .engines
        .iter()
        .filter(|e| !e.forwarded)
        .map(|e| e.container_id.clone())
        .collect();
    assert_eq!(still, ordinary, "no other engine touched");
    fake_engines_confirm(&s, w.vpn(0), 30002).await;
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_and_restarted_vpn_get_their_engines_recreated() {
    let Some(w) = World::new(&[31500], None).await else {
        return;
    };
    let tree = w.acevisor(w.config("single", 3, "", ""), vec![None]).await;
    let s = tree
        .wait("3 engines", MINUTE, |s| full(s, w.vpn(0), 3, 31500))
        .await;
    let first = ids_on(&s, w.vpn(0));

    w.recreate_vpn(0, 31500);
    let new_id = support::docker_ok(&["inspect", "-f", "{{.Id}}", w.vpn(0)]);
    let s = tree
        .wait("engines on the new container ID", MINUTE, |s| {
            full(s, w.vpn(0), 3, 31500)
                && s.engines
                    .iter()
                    .all(|e| e.vpn_id.as_deref() == Some(new_id.as_str()))
        })
        .await;
    fake_engines_confirm(&s, w.vpn(0), 31500).await;
    assert!(ids_on(&s, w.vpn(0)).iter().all(|id| !first.contains(id)));
    let second = ids_on(&s, w.vpn(0));

    support::docker_ok(&["restart", "-t", "1", w.vpn(0)]);
    let s = tree
        .wait("engines recreated after a restart in place", MINUTE, |s| {
            full(s, w.vpn(0), 3, 31500) && ids_on(s, w.vpn(0)).iter().all(|id| !second.contains(id))
        })
        .await;
    fake_engines_confirm(&s, w.vpn(0), 31500).await;
    assert_eq!(s.counters.vpn_failed, 2);
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_one_vpn_back_and_healthy_vpn_failing_during_emergency() {
    let Some(w) = World::new(&[32001, 32002], None).await else {
        return;
    };
    let tree = w
        .acevisor(w.config("redundant", 4, "", ""), vec![None, None])
        .await;
    tree.wait("4 engines", MINUTE, |s| {
        full(s, w.vpn(0), 2, 32001) && full(s, w.vpn(1), 2, 32002)
    })
    .await;

    support::docker_kill(w.vpn(0));
    tree.wait("emergency", 10 * SEC, |s| {
        matches!(s.emergency, EmergencyState::Emergency { .. })
    })
    .await;
    support::docker_kill(w.vpn(1));
    let s = tree
        .wait("outage, nothing left", 10 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Outage { .. }) && s.engines.is_empty()
        })
        .await;
    assert_eq!(s.counters.outage_entered, 1);

    support::docker_ok(&["start", w.vpn(1)]);
    let s = tree
        .wait("service on VPN2 with a forwarded engine", MINUTE, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. }) && full(s, w.vpn(1), 2, 32002)
        })
        .await;
    fake_engines_confirm(&s, w.vpn(1), 32002).await;
    assert!(s.engines_on(w.vpn(0)).is_empty());
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_is_misconfigured_and_engines_are_left_alone() {
    let Some(w) = World::new(&[33001], Some("right-key")).await else {
        return;
    };
    let cfg = w.config("single", 2, "", "");
    let tree = w
        .acevisor(cfg.clone(), vec![Some("right-key".into())])
        .await;
    let s = tree
        .wait("2 engines", MINUTE, |s| full(s, w.vpn(0), 2, 33001))
        .await;
    let before = ids_on(&s, w.vpn(0));
    tree.stop().await;

    let tree = w.acevisor(cfg, vec![Some("wrong-key".into())]).await;
    let s = tree
        .wait("adopted and misconfigured", 30 * SEC, |s| {
            s.ready && s.vpns.first().is_some_and(|v| v.status == "misconfigured")
        })
        .await;
    assert!(
        s.vpns[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("401")),
        "{:?}",
        s.vpns[0]
    );
    let s = tree
        .hold(
            3 * SEC,
            |s| s.engines_on(w.vpn(0)).len() == 2,
            "engines of a misconfigured VPN kept",
        )
        .await;
    assert_eq!(ids_on(&s, w.vpn(0)), before);
    assert_eq!(s.counters.removed_total(), 0);
    assert_eq!(w.docker_engines_on(w.vpn(0)).len(), 2);
    tree.stop().await;
}

/// `free` consecutive TCP ports free on the host, for engines that publish their HTTP port.
fn free_port_block(count: u16) -> u16 {
    for _ in 0..50 {
        let base = support::free_host_port();
        if base > u16::MAX - count {
            continue;
        }
        let all_free =
            (base..base + count).all(|p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of {count} free host ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_none_engines_join_the_network_and_publish_their_ports() {
    let Some(w) = World::new(&[], None).await else {
        return;
    };
    let network = support::create_network(&w.run, "net");
    let mut cfg = w.config("none", 2, "", "");
    let base = free_port_block(8);
    cfg.docker.network = network.clone();
    cfg.engines.max_replicas = 2;
    cfg.engines.http_ports = acevisor::config::PortRange {
        start: base,
        end: base + 7,
    };
    cfg.validate().expect("mode none config is valid");
    let tree = w.acevisor(cfg, Vec::new()).await;
    let s = tree
        .wait("2 engines ready", MINUTE, |s| {
            s.engines.len() == 2
                && s.engines
                    .iter()
                    .all(|e| e.phase == EnginePhase::Ready && !e.forwarded && e.vpn.is_none())
        })
        .await;
    for e in &s.engines {
        let id = e.container_id.as_deref().unwrap();
        assert_eq!(
            support::container_ip(id, Some(&network)),
            e.host,
            "{} is reached on the engine network",
            e.name
        );
        let host = e.host.as_deref().unwrap();
        assert_eq!(
            engine_p2p_port(host, e.http_port).await,
            Some(u64::from(e.p2p_port))
        );
        // Published 1:1 on the host, for proxies outside Docker.
        let published = support::http_get(
            "127.0.0.1",
            e.http_port,
            "/webui/api/service?method=get_version",
        )
        .await;
        assert!(
            published.is_some_and(|b| b.contains("version")),
            "{} publishes its HTTP port",
            e.name
        );
    }
    tree.stop().await;
}
