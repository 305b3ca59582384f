//! acevisor against fake Gluetuns playing every Gluetun version it must work with (3.38, 3.39,
//! 3.40, 3.41, unreleased HEAD), each with the role file that version accepts: the redundant pool
//! comes up with one forwarded engine per VPN on the VPN's port, then incident A (a VPN dies, its
//! engines go, the other VPN is untouched; it comes back with a new port, and the pool is whole
//! again with no port change counted). The fakes start slowly on purpose (status `starting`, then
//! running with port 0 for a while) as the real Gluetun does, shrunk to fractions of a second.
//! One test per version; they run in parallel (every name carries the run id, and engine ports
//! live in each VPN's own network namespace).

mod docker_world;
mod support;
mod tree;

use std::time::Duration;

use acevisor::actors::messages::SupervisorSnapshot;
use acevisor::clients::gluetun::{GluetunClient, PortRoute};
use acevisor::clients::{ControlTarget, VpnControl};
use acevisor::core::emergency::EmergencyState;
use docker_world::{World, engine_p2p_port};
use support::GluetunOptions;
use tree::full;

const SEC: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const KEY: &str = "versions-k3y";
/// VPN1's port, VPN2's port, VPN1's port after it comes back.
const P1: u16 = 55747;
const P2: u16 = 40000;
const P3: u16 = 34817;

/// acevisor's role: status, the port routes the version knows, public IP.
fn role_file(with_current_port_route: bool) -> String {
    let port_route = if with_current_port_route {
        "\"GET /v1/portforward\", "
    } else {
        ""
    };
    format!(
        "# acevisor's role\n[[roles]]\nname = \"acevisor\"\nauth = \"apikey\"\napikey = \"{KEY}\"\n\
         routes = [\"GET /v1/vpn/status\", {port_route}\"GET /v1/openvpn/portforwarded\", \
         \"GET /v1/publicip/ip\"]\n"
    )
}

/// The fake's options for `version`: its role file (none on 3.38, which has no auth; without
/// `GET /v1/portforward` on 3.39 / 3.40, which refuse to start with it) and a slow start.
fn options(version: &str) -> GluetunOptions {
    let role_file = match version {
        "3.38" => None,
        "3.39" | "3.40" => Some(role_file(false)),
        _ => Some(role_file(true)),
    };
    GluetunOptions {
        version: Some(version.into()),
        role_file,
        env: vec![
            ("FAKE_STARTUP_MS".into(), "300".into()),
            ("FAKE_PORT_DELAY_MS".into(), "700".into()),
        ],
        ..GluetunOptions::default()
    }
}

/// The container IDs of `vpn`'s engines, as a set (names may move to fill gaps at rest; the
/// containers are what must stay).
fn ids_on(s: &SupervisorSnapshot, vpn: &str) -> Vec<Option<String>> {
    let mut ids: Vec<Option<String>> = s
        .engines_on(vpn)
        .iter()
        .map(|e| e.container_id.clone())
        .collect();
    ids.sort();
    ids
}

/// Waits until VPN `i`'s fake answers its test routes (it was just started).
async fn fake_listening(w: &World, i: usize) {
    support::wait_for(30 * SEC, "the fake Gluetun answers", || async {
        let ip = support::container_ip(w.vpn(i), None)?;
        support::http_get(&ip, 8000, "/testbed/healthz").await
    })
    .await;
}

/// The port route a fresh client settles on for VPN `i`, and the port it reads.
async fn route_spoken(w: &World, i: usize) -> (Option<PortRoute>, Option<u16>) {
    let target = ControlTarget {
        vpn: w.vpn(i).to_string(),
        base_url: format!("http://{}:8000", w.vpn_ip(i)),
        api_key: Some(KEY.into()),
    };
    let client = GluetunClient::new(5 * SEC).expect("gluetun client");
    let answer = client
        .probe(&target)
        .await
        .expect("the control server answers acevisor's key");
    (
        client.known_port_route(&target.base_url),
        answer.forwarded_ports.first(),
    )
}

/// Every engine of `vpn` answers with its own P2P port; the forwarded one holds `port`.
async fn engines_confirm(s: &SupervisorSnapshot, vpn: &str, port: u16) {
    for e in s.engines_on(vpn) {
        let host = e.host.as_deref().expect("engine has an address");
        let reported = engine_p2p_port(host, e.http_port).await;
        assert_eq!(reported, Some(u64::from(e.p2p_port)), "{}", e.name);
        if e.forwarded {
            assert_eq!(reported, Some(u64::from(port)), "{} is forwarded", e.name);
        }
    }
}

async fn pool_and_incident_a(version: &str, route: PortRoute) {
    // VPN1 starts (and restarts) with no port; the test gives it one, as Gluetun gets one later.
    let Some(w) = World::with_options(&[0, P2], options(version)).await else {
        return;
    };
    fake_listening(&w, 0).await;
    w.set_port(0, P1).await;
    let tree = w
        .acevisor(
            w.config("redundant", 4, "", ""),
            vec![Some(KEY.into()), Some(KEY.into())],
        )
        .await;
    let s = tree
        .wait("4 engines 2/2, one forwarded per VPN", 2 * MINUTE, |s| {
            full(s, w.vpn(0), 2, P1) && full(s, w.vpn(1), 2, P2)
        })
        .await;
    engines_confirm(&s, w.vpn(0), P1).await;
    engines_confirm(&s, w.vpn(1), P2).await;
    assert_eq!(route_spoken(&w, 0).await, (Some(route), Some(P1)));
    let vpn2_before = ids_on(&s, w.vpn(1));

    // Incident A: VPN1 dies.
    support::docker_kill(w.vpn(0));
    let s = tree
        .wait("emergency, VPN1 emptied", 20 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. })
                && s.engines_on(w.vpn(0)).is_empty()
        })
        .await;
    assert_eq!(s.counters.emergency_entered, 1);
    assert_eq!(s.counters.engines_removed.get("vpn_failed"), Some(&2));
    assert_eq!(ids_on(&s, w.vpn(1)), vpn2_before, "VPN2 untouched");
    assert!(w.docker_engines_on(w.vpn(0)).is_empty(), "Docker agrees");

    // It comes back (starting, then running with port 0, then a new port).
    support::docker_ok(&["start", w.vpn(0)]);
    fake_listening(&w, 0).await;
    w.set_port(0, P3).await;
    let s = tree
        .wait("back to normal, VPN1 on its new port", 2 * MINUTE, |s| {
            s.emergency == EmergencyState::Normal
                && full(s, w.vpn(0), 2, P3)
                && full(s, w.vpn(1), 2, P2)
        })
        .await;
    engines_confirm(&s, w.vpn(0), P3).await;
    let s = tree
        .hold(
            2 * SEC,
            |s| full(s, w.vpn(0), 2, P3) && full(s, w.vpn(1), 2, P2),
            "pool stays whole",
        )
        .await;
    assert_eq!(ids_on(&s, w.vpn(1)), vpn2_before, "VPN2 still untouched");
    assert_eq!(
        s.counters.port_changed, 0,
        "a new port after a death is no port change"
    );
    assert_eq!(s.counters.emergency_exited, 1);
    assert_eq!(route_spoken(&w, 0).await, (Some(route), Some(P3)));
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gluetun_3_38_no_auth_400_on_current_port_route() {
    pool_and_incident_a("3.38", PortRoute::Legacy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gluetun_3_39_role_without_current_port_route() {
    pool_and_incident_a("3.39", PortRoute::Legacy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gluetun_3_40_role_without_current_port_route() {
    pool_and_incident_a("3.40", PortRoute::Legacy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gluetun_3_41_role_with_both_port_routes() {
    pool_and_incident_a("3.41", PortRoute::Current).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gluetun_head_deny_by_default_role_with_both_port_routes() {
    pool_and_incident_a("head", PortRoute::Current).await;
}
