//! Random schedules of VPN incidents and Docker faults driven through the whole actor tree on the
//! in-memory runtime (paused clock), far more orders than real Docker can run. At every look the
//! invariants hold; once the faults stop, acevisor converges to exactly the desired pool.

mod tree;

use std::collections::BTreeMap;
use std::time::Duration;

use acevisor::clients::TunnelStatus;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use proptest::prelude::*;
use tree::{Tree, VPN1, VPN2, config, full};

#[derive(Clone, Debug)]
enum Step {
    Kill(usize),
    Start(usize),
    Recreate(usize, u16),
    SetPort(usize, u16),
    Reconnect(usize, u16),
    KillEngine(u32),
    RemoveEngine(u32),
    FailDocker(&'static str, u32),
    DropEvents(bool),
    SlowDocker(u64),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let vpn = 0..2usize;
    let port = prop_oneof![Just(0u16), Just(30001), Just(30002), Just(30003)];
    let op = prop_oneof![
        Just("create"),
        Just("remove"),
        Just("inspect"),
        Just("list"),
        Just("events")
    ];
    prop_oneof![
        vpn.clone().prop_map(Step::Kill),
        vpn.clone().prop_map(Step::Start),
        (vpn.clone(), port.clone()).prop_map(|(v, p)| Step::Recreate(v, p)),
        (vpn.clone(), port.clone()).prop_map(|(v, p)| Step::SetPort(v, p)),
        (vpn, port).prop_map(|(v, p)| Step::Reconnect(v, p)),
        (1..8u32).prop_map(Step::KillEngine),
        (1..8u32).prop_map(Step::RemoveEngine),
        (op, 1..4u32).prop_map(|(o, n)| Step::FailDocker(o, n)),
        any::<bool>().prop_map(Step::DropEvents),
        (0..3u64).prop_map(Step::SlowDocker),
        (0..20_000u64).prop_map(Step::Wait),
    ]
}

const NAMES: [&str; 2] = [VPN1, VPN2];

async fn apply(m: &MemoryRuntime, s: &Step) {
    match s {
        Step::Kill(v) => m.kill(NAMES[*v]),
        Step::Start(v) => {
            m.start(NAMES[*v]);
            m.set_health(NAMES[*v], DockerHealth::Healthy);
        }
        Step::Recreate(v, p) => {
            m.recreate_vpn(NAMES[*v], *p, Some(DockerHealth::Healthy));
        }
        Step::SetPort(v, p) => m.set_port(NAMES[*v], *p),
        Step::Reconnect(v, p) => {
            m.set_tunnel(NAMES[*v], TunnelStatus::Stopped);
            m.set_port(NAMES[*v], 0);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            m.set_tunnel(NAMES[*v], TunnelStatus::Running);
            m.set_port(NAMES[*v], *p);
        }
        Step::KillEngine(n) => m.exit(&format!("acestream-{n}"), 137),
        Step::RemoveEngine(n) => m.remove_out_of_band(&format!("acestream-{n}")),
        Step::FailDocker(op, n) => m.fail_next(op, *n),
        Step::DropEvents(d) => m.drop_events(*d),
        Step::SlowDocker(secs) => m.set_delay(Duration::from_secs(*secs)),
        Step::Wait(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
    }
}

async fn run_schedule(steps: Vec<Step>) {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    m.add_vpn(VPN2, 30002, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("redundant", 6, "")).await;
    for s in &steps {
        apply(&m, s).await;
        // Looks at the tree, checking the invariants (panics on a violation).
        tree.hold(Duration::from_millis(500), |_| true, "invariants")
            .await;
    }

    // The faults stop; both VPNs come back healthy with known ports.
    m.drop_events(false);
    m.set_delay(Duration::ZERO);
    for op in [
        "create", "remove", "inspect", "list", "events", "stop", "restart", "ping",
    ] {
        m.fail_next(op, 0);
    }
    for (v, port) in NAMES.iter().zip([30011u16, 30012]) {
        if !m.containers().iter().any(|c| c.name == *v && c.running) {
            m.start(v);
        }
        m.set_health(v, DockerHealth::Healthy);
        m.set_tunnel(v, TunnelStatus::Running);
        m.set_port(v, port);
    }
    let s = tree
        .wait(
            "converged: 3/3 with one forwarded engine per VPN",
            Duration::from_secs(600),
            |s| full(s, VPN1, 3, 30011) && full(s, VPN2, 3, 30012),
        )
        .await;

    // Docker agrees with acevisor: no orphan, no duplicate, no two forwarded engines on one VPN.
    let running: Vec<_> = m
        .containers()
        .into_iter()
        .filter(|c| c.running && c.labels.contains_key("acevisor.managed"))
        .collect();
    let mut known: Vec<_> = s
        .engines
        .iter()
        .filter_map(|e| e.container_id.clone())
        .collect();
    known.sort();
    let mut ids: Vec<_> = running.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    assert_eq!(
        ids, known,
        "every running engine is known to acevisor and vice versa"
    );
    let mut names = BTreeMap::new();
    for c in &m.containers() {
        *names.entry(c.name.clone()).or_insert(0) += 1;
    }
    assert!(
        names.values().all(|n| *n == 1),
        "two containers with one name: {names:?}"
    );
    for vpn in NAMES {
        let forwarded = running
            .iter()
            .filter(|c| c.labels.get("acevisor.vpn").map(String::as_str) == Some(vpn))
            .filter(|c| c.labels.get("acevisor.forwarded").map(String::as_str) == Some("true"))
            .count();
        assert_eq!(forwarded, 1, "one forwarded engine on {vpn}");
    }
    assert_eq!(s.counters.names_above_bound, 0);
    tree.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_incidents_and_docker_faults_keep_the_invariants_and_converge(steps in proptest::collection::vec(step(), 1..14)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(run_schedule(steps));
    }
}

#[tokio::test(start_paused = true)]
async fn force_restart_after_restarts_a_down_vpn_once_per_outage() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 2, "force_restart_after = \"30s\"")).await;
    tree.wait("2 engines", Duration::from_secs(20), |s| {
        full(s, VPN1, 2, 30001)
    })
    .await;
    m.kill(VPN1);
    tree.hold(Duration::from_secs(25), |_| true, "invariants")
        .await;
    assert_eq!(m.calls("restart"), 0, "not before force_restart_after");
    // The restarted container comes back with Docker health `starting` and stays there: the
    // outage goes on, and acevisor must not restart it again.
    tree.hold(Duration::from_secs(300), |_| true, "invariants")
        .await;
    assert_eq!(
        m.calls("restart"),
        1,
        "restarted exactly once in this outage"
    );
    m.set_health(VPN1, DockerHealth::Healthy);
    m.set_port(VPN1, 30001);
    tree.wait("recovered", Duration::from_secs(20), |s| {
        full(s, VPN1, 2, 30001)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn no_force_restart_by_default() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 1, "")).await;
    tree.wait("1 engine", Duration::from_secs(20), |s| {
        full(s, VPN1, 1, 30001)
    })
    .await;
    m.kill(VPN1);
    tree.hold(Duration::from_secs(600), |_| true, "invariants")
        .await;
    assert_eq!(
        m.calls("restart"),
        0,
        "Gluetun is never restarted unless asked"
    );
}
