//! Forwarded-port changes against the real Docker engine: the fake Gluetun calls acevisor's port
//! hook route (its stand-in for `VPN_PORT_FORWARDING_UP_COMMAND`) when its port changes, and the
//! change reaches the forwarded engine with the control-server poll an hour apart; a VPN that
//! forwards two ports runs a forwarded engine on each, and loses the one whose port goes away.

mod docker_world;
mod support;
mod tree;

use std::time::Duration;

use acevisor::actors::messages::SupervisorSnapshot;
use acevisor::core::model::EnginePhase;
use docker_world::{World, engine_p2p_port, fake_engines_confirm};
use support::GluetunOptions;
use tree::full;

const SEC: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const KEY: &str = "hook-s3cret";

/// The host's address on Docker's default bridge (where a container reaches the test process):
/// the first address of the bridge's subnet.
fn bridge_gateway() -> String {
    let subnet = support::docker_ok(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{(index .IPAM.Config 0).Subnet}}",
    ]);
    let net = subnet.trim().split('/').next().unwrap_or_default();
    let mut octets: Vec<&str> = net.split('.').collect();
    assert_eq!(octets.len(), 4, "bridge subnet {subnet:?}");
    octets[3] = "1";
    octets.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_change_reaches_the_forwarded_engine_through_the_hook() {
    let Some(mut w) = World::with_options(&[], GluetunOptions::default()).await else {
        return;
    };
    // acevisor's API on a host port the fake can reach; the fake's hook points at it.
    let api_port = support::free_host_port();
    let vpn = w.run.name("vpn1");
    let hook_url = format!(
        "http://{}:{api_port}/hooks/gluetun/{vpn}/ports",
        bridge_gateway()
    );
    support::start_fake_gluetun(
        &w.run,
        "vpn1",
        &GluetunOptions {
            forwarded_port: Some(31001),
            health_interval: Some(Duration::from_millis(500)),
            env: vec![
                ("FAKE_PORT_HOOK_URL".into(), hook_url),
                ("FAKE_PORT_HOOK_KEY".into(), KEY.into()),
            ],
            ..GluetunOptions::default()
        },
    );
    w.vpns.push(vpn.clone());

    let mut cfg = w.config("single", 3, "", "");
    // Only Docker events and the hook can explain a quick reaction: the slow poll is an hour
    // apart (fast polls still confirm a port once the hook made acevisor look).
    cfg.vpn.poll_interval = 60 * MINUTE;
    cfg.vpn.fast_poll_interval = Duration::from_millis(200);
    cfg.api.listen = format!("0.0.0.0:{api_port}");
    let tree = w.acevisor(cfg.clone(), vec![None]).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = acevisor::api::launch_with_key(&cfg, tree.sup.clone(), Some(KEY.into()), async {
        let _ = stopped.await;
    })
    .await
    .expect("the API starts");

    tree.wait("3 engines on port 31001", MINUTE, |s| {
        full(s, &vpn, 3, 31001)
    })
    .await;
    // Past the fast-poll window of the start: from here on nothing polls the VPN by itself.
    tree.hold(
        3 * SEC,
        |s| full(s, &vpn, 3, 31001),
        "steady on the first port",
    )
    .await;
    w.set_port(0, 31002).await;
    let s = tree
        .wait("the forwarded engine on the new port", MINUTE, |s| {
            full(s, &vpn, 3, 31002)
        })
        .await;
    assert_eq!(s.counters.port_changed, 1);
    fake_engines_confirm(&s, &vpn, 31002).await;

    let _ = stop.send(());
    let _ = api.server.await;
    tree.stop().await;
}

/// `n` ready engines on `vpn`, its forwarded ones exactly on `ports`, names `1..n`.
fn forwarded_on_ports(s: &SupervisorSnapshot, vpn: &str, n: usize, ports: &[u16]) -> bool {
    let mut fw: Vec<u16> = s.forwarded_on(vpn).iter().map(|e| e.p2p_port).collect();
    fw.sort_unstable();
    // The number of each name (`<prefix>-N`).
    let mut names: Vec<u32> = s
        .engines
        .iter()
        .filter_map(|e| e.name.rsplit('-').next()?.parse().ok())
        .collect();
    names.sort_unstable();
    let want: Vec<u32> = (1..=n as u32).collect();
    s.engines_on(vpn).len() == n
        && s.engines.iter().all(|e| e.phase == EnginePhase::Ready)
        && fw == ports
        && names == want
}

/// Every engine on `vpn` runs with the P2P port acevisor planned (asked of the fake engine).
async fn engines_run_their_ports(s: &SupervisorSnapshot, vpn: &str) {
    for e in s.engines_on(vpn) {
        let host = e.host.as_deref().expect("engine has an address");
        assert_eq!(
            engine_p2p_port(host, e.http_port).await,
            Some(u64::from(e.p2p_port)),
            "{} runs with its own P2P port",
            e.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwarded_port_gets_an_engine_and_a_port_that_goes_away_loses_it() {
    let options = GluetunOptions {
        more_ports: vec![31102],
        ..GluetunOptions::default()
    };
    let Some(w) = World::with_options(&[31101], options).await else {
        return;
    };
    let vpn = w.vpns[0].clone();
    let tree = w.acevisor(w.config("single", 3, "", ""), vec![None]).await;
    let s = tree
        .wait(
            "a forwarded engine on each of 31101 and 31102",
            MINUTE,
            |s| forwarded_on_ports(s, &vpn, 3, &[31101, 31102]),
        )
        .await;
    assert_eq!(
        s.vpns[0].lane.forwarded_ports().to_vec(),
        vec![31101, 31102]
    );
    engines_run_their_ports(&s, &vpn).await;
    let kept = s
        .forwarded_on(&vpn)
        .into_iter()
        .find(|e| e.p2p_port == 31101)
        .and_then(|e| e.container_id.clone())
        .expect("31101's engine has a container");

    // The provider stops forwarding 31102.
    w.set_ports(0, &[31101]).await;
    let s = tree
        .wait("31102's engine removed, names 1..3", MINUTE, |s| {
            forwarded_on_ports(s, &vpn, 3, &[31101])
        })
        .await;
    engines_run_their_ports(&s, &vpn).await;
    let still = s
        .forwarded_on(&vpn)
        .into_iter()
        .find_map(|e| e.container_id.clone());
    assert_eq!(still, Some(kept), "31101's engine untouched");
    assert_eq!(s.counters.port_changed, 1);
    assert_eq!(s.counters.engines_removed.get("port_mismatch"), Some(&1));
    assert_eq!(s.counters.removed_total(), 1, "only 31102's engine removed");
    let on_docker = w.docker_engines_on(&vpn);
    assert_eq!(
        on_docker.len(),
        3,
        "Docker runs exactly the 3 engines: {on_docker:?}"
    );
    tree.stop().await;
}
