//! Docker faults injected into the in-memory runtime under the whole actor tree (paused clock):
//! failed and slow calls, dropped and reordered events, creates whose reply is lost after Docker
//! did the work, and VPNs flapping faster than `port_settle`, in 1,200 random schedules.
//!
//! What must hold, whatever the schedule:
//! - never two containers with one name, never two forwarded engines on one VPN (checked at every
//!   look, together with the tree harness's invariants);
//! - once the faults stop, a final reconcile converges: every running managed container is known
//!   to acevisor and vice versa (the orphan of a lost create reply is adopted or removed);
//! - Docker trouble alone never removes an engine: with only Docker faults in a schedule, the only
//!   containers acevisor may remove are the orphans of lost create replies.

mod tree;

use std::collections::BTreeMap;
use std::time::Duration;

use acevisor::actors::messages::SupervisorSnapshot;
use acevisor::clients::TunnelStatus;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use proptest::prelude::*;
use tree::{Tree, VPN1, VPN2, config, full};

const NAMES: [&str; 2] = [VPN1, VPN2];
const OPS: [&str; 8] = [
    "create", "remove", "inspect", "list", "events", "stop", "restart", "ping",
];

#[derive(Clone, Debug)]
enum Step {
    // VPN and engine incidents.
    Kill(usize),
    Start(usize),
    Recreate(usize, u16),
    SetPort(usize, u16),
    /// The port drops to 0 and comes back within `ms` (< port_settle = 3 s): no change at all.
    Flap(usize, u64),
    KillEngine(u32),
    // Docker faults.
    FailDocker(&'static str, u32),
    SlowDocker(u64),
    DropEvents(bool),
    ReorderEvents(bool),
    LoseCreateReply(u32),
    Wait(u64),
}

impl Step {
    fn is_docker_fault(&self) -> bool {
        matches!(
            self,
            Step::FailDocker(..)
                | Step::SlowDocker(_)
                | Step::DropEvents(_)
                | Step::ReorderEvents(_)
                | Step::LoseCreateReply(_)
                | Step::Wait(_)
        )
    }
}

fn docker_fault() -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        Just("create"),
        Just("remove"),
        Just("inspect"),
        Just("list"),
        Just("events")
    ];
    prop_oneof![
        (op, 1..4u32).prop_map(|(o, n)| Step::FailDocker(o, n)),
        (0..3u64).prop_map(Step::SlowDocker),
        any::<bool>().prop_map(Step::DropEvents),
        any::<bool>().prop_map(Step::ReorderEvents),
        (0..20_000u64).prop_map(Step::Wait),
        (1..3u32).prop_map(Step::LoseCreateReply),
    ]
}

fn any_step() -> impl Strategy<Value = Step> {
    let vpn = 0..2usize;
    let port = prop_oneof![Just(0u16), Just(30001), Just(30002), Just(30003)];
    prop_oneof![
        vpn.clone().prop_map(Step::Kill),
        vpn.clone().prop_map(Step::Start),
        (vpn.clone(), port.clone()).prop_map(|(v, p)| Step::Recreate(v, p)),
        (vpn.clone(), port).prop_map(|(v, p)| Step::SetPort(v, p)),
        (vpn, 100..2_500u64).prop_map(|(v, ms)| Step::Flap(v, ms)),
        (1..8u32).prop_map(Step::KillEngine),
        docker_fault(),
        docker_fault(),
    ]
}

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
        Step::Flap(v, ms) => {
            let vpn = NAMES[*v];
            let Some(port) = control_port(m, vpn) else {
                return;
            };
            m.set_port(vpn, 0);
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            m.set_port(vpn, port);
        }
        Step::KillEngine(n) => m.exit(&format!("acestream-{n}"), 137),
        Step::FailDocker(op, n) => m.fail_next(op, *n),
        Step::SlowDocker(secs) => m.set_delay(Duration::from_secs(*secs)),
        Step::DropEvents(d) => m.drop_events(*d),
        Step::ReorderEvents(r) => m.reorder_events(*r),
        Step::LoseCreateReply(n) => m.lose_create_replies(*n),
        Step::Wait(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
    }
}

/// The port the VPN's control server reports now (the runtime is its own Gluetun).
fn control_port(m: &MemoryRuntime, vpn: &str) -> Option<u16> {
    use acevisor::clients::{ControlTarget, VpnControl};
    let target = ControlTarget {
        vpn: vpn.to_string(),
        base_url: format!("http://mem-{vpn}:8000"),
        api_key: None,
    };
    let answer = futures_now(m.probe(&target))?.ok()?;
    answer.forwarded_ports.first()
}

/// Polls a future that never waits (the in-memory control server answers at once).
fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Never two containers with one name; never two running forwarded engines on one port of a VPN's
/// current container (the only pair allowed is a port change's replacement and the engine it
/// replaces). Convergence then requires exactly one.
fn check_docker_side(m: &MemoryRuntime) {
    let all = m.containers();
    let mut names = BTreeMap::new();
    for c in &all {
        *names.entry(c.name.clone()).or_insert(0) += 1;
    }
    assert!(
        names.values().all(|n| *n == 1),
        "two containers with one name: {names:?}"
    );
    for vpn in NAMES {
        // Engines attached to an earlier container of the VPN (recreated) sit in a dead
        // namespace whatever Docker says of them; only the current container's engines count.
        let Some(current) = all.iter().find(|c| c.name == vpn).map(|c| c.id.clone()) else {
            continue;
        };
        let mut ports: Vec<&str> = all
            .iter()
            .filter(|c| c.running)
            .filter(|c| c.labels.get("acevisor.vpn").map(String::as_str) == Some(vpn))
            .filter(|c| c.labels.get("acevisor.vpn_id") == Some(&current))
            .filter(|c| c.labels.get("acevisor.forwarded").map(String::as_str) == Some("true"))
            .filter_map(|c| c.labels.get("acevisor.p2p_port").map(String::as_str))
            .collect();
        // A port change is the one moment two exist: the replacement (new port) is created
        // before the old one is removed. Never two on one port, never more than that pair.
        ports.sort_unstable();
        let n = ports.len();
        ports.dedup();
        assert!(
            n == ports.len() && n <= 2,
            "{n} running forwarded engines on {vpn}: ports {ports:?}"
        );
    }
}

/// Every running managed container is known to acevisor, and every engine it knows runs.
fn check_no_orphans(m: &MemoryRuntime, s: &SupervisorSnapshot) {
    let mut running: Vec<String> = m
        .containers()
        .into_iter()
        .filter(|c| c.running && c.labels.contains_key("acevisor.managed"))
        .map(|c| c.id)
        .collect();
    running.sort();
    let mut known: Vec<String> = s
        .engines
        .iter()
        .filter_map(|e| e.container_id.clone())
        .collect();
    known.sort();
    if running != known {
        let docker: Vec<String> = m
            .containers()
            .iter()
            .map(|c| format!("{} {} running={} {:?}", c.id, c.name, c.running, c.labels))
            .collect();
        panic!(
            "running managed containers {running:?} != acevisor's engines {known:?}\n\
             lost-reply orphans: {:?}\ndocker: {docker:#?}\nacevisor: {:#?}",
            m.lost_reply_ids(),
            s.engines
        );
    }
}

/// Ends every fault and brings both VPNs back healthy with known ports.
fn faults_stop(m: &MemoryRuntime) {
    m.drop_events(false);
    m.reorder_events(false);
    m.lose_create_replies(0);
    m.set_delay(Duration::ZERO);
    for op in OPS {
        m.fail_next(op, 0);
    }
}

/// Runs `steps`, stops the faults, waits for convergence, then lets `settle` pass before looking
/// for orphans.
async fn run_schedule(steps: Vec<Step>, settle: Duration) {
    let docker_only = steps.iter().all(Step::is_docker_fault);
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    m.add_vpn(VPN2, 30002, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("redundant", 6, "")).await;
    for s in &steps {
        apply(&m, s).await;
        tree.hold(Duration::from_millis(500), |_| true, "invariants")
            .await;
        check_docker_side(&m);
    }

    faults_stop(&m);
    let ports = [30011u16, 30012];
    if docker_only {
        // The VPNs never moved: their ports stay what they were.
        tree.wait("converged", Duration::from_secs(600), |s| {
            full(s, VPN1, 3, 30001) && full(s, VPN2, 3, 30002)
        })
        .await;
    } else {
        for (v, port) in NAMES.iter().zip(ports) {
            if !m.containers().iter().any(|c| c.name == *v && c.running) {
                m.start(v);
            }
            m.set_health(v, DockerHealth::Healthy);
            m.set_tunnel(v, TunnelStatus::Running);
            m.set_port(v, port);
        }
        tree.wait("converged", Duration::from_secs(600), |s| {
            full(s, VPN1, 3, ports[0]) && full(s, VPN2, 3, ports[1])
        })
        .await;
    }
    // Give a late orphan time to be found, then look again.
    let s = tree.hold(settle, |_| true, "invariants after faults").await;
    check_docker_side(&m);
    check_no_orphans(&m, &s);
    assert_eq!(s.counters.names_above_bound, 0);

    if docker_only {
        // Docker trouble alone removes nothing but the orphans of lost replies.
        let orphans = m.lost_reply_ids();
        let removed = m.removed_ids();
        assert!(
            removed.iter().all(|id| orphans.contains(id)),
            "removed {removed:?}, but only lost-reply orphans {orphans:?} may go; reasons: {:?}",
            s.counters.engines_removed
        );
        assert!(
            s.counters.removed_total() as usize <= orphans.len(),
            "removals {:?} with only {} orphans",
            s.counters.engines_removed,
            orphans.len()
        );
        assert_eq!(s.counters.engines_lost, 0, "no engine was lost");
    }
    tree.stop().await;
}

/// How long after convergence an orphan may still exist in the random schedules: acevisor
/// re-lists Docker every minute, which adopts or removes whatever a lost event left behind.
const SETTLE: Duration = Duration::from_secs(70);

fn run_paused(steps: Vec<Step>, settle: Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run_schedule(steps, settle));
}

/// How many schedules each property runs (`ACEVISOR_FAULT_CASES` overrides).
fn cases(default: u32) -> u32 {
    std::env::var("ACEVISOR_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(700), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn docker_faults_alone_never_remove_and_always_converge(steps in proptest::collection::vec(docker_fault(), 1..10)) {
        run_paused(steps, SETTLE);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(500), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn incidents_with_docker_faults_keep_names_and_forwarding_unique_and_converge(steps in proptest::collection::vec(any_step(), 1..12)) {
        run_paused(steps, SETTLE);
    }
}

/// The create reaches Docker, the reply does not: the container exists under acevisor's name and
/// labels, created but never started, while acevisor believes the create failed. It must be
/// removed before the name is used again (no 409 on the retry), and the pool must still fill.
#[tokio::test(start_paused = true)]
async fn a_lost_create_reply_leaves_no_orphan_and_the_pool_fills() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    m.lose_create_replies(1);
    let tree = Tree::start(&m, config("single", 3, "")).await;
    let s = tree
        .wait("3 engines", Duration::from_secs(120), |s| {
            full(s, VPN1, 3, 30001)
        })
        .await;
    assert_eq!(m.lost_reply_ids().len(), 1, "one reply was lost");
    assert!(
        m.removed_ids().contains(&m.lost_reply_ids()[0]),
        "the unstarted container was removed"
    );
    assert_eq!(
        s.counters.engines_removed.get("exited"),
        None,
        "removed by the failed creation itself, not left for a later listing to find"
    );
    check_docker_side(&m);
    check_no_orphans(&m, &s);
    tree.stop().await;
}

/// Reordered events around a VPN failure and out-of-band engine deaths: same outcome.
#[tokio::test(start_paused = true)]
async fn reordered_events_still_converge() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    m.add_vpn(VPN2, 30002, Some(DockerHealth::Healthy));
    m.reorder_events(true);
    let tree = Tree::start(&m, config("redundant", 6, "")).await;
    tree.wait("6 engines", Duration::from_secs(120), |s| {
        full(s, VPN1, 3, 30001) && full(s, VPN2, 3, 30002)
    })
    .await;
    m.exit("acestream-2", 137);
    m.remove_out_of_band("acestream-3");
    m.kill(VPN2);
    tree.wait("VPN2 emptied", Duration::from_secs(60), |s| {
        s.engines_on(VPN2).is_empty()
    })
    .await;
    m.start(VPN2);
    m.set_health(VPN2, DockerHealth::Healthy);
    m.set_port(VPN2, 30002);
    m.reorder_events(false);
    let s = tree
        .wait("6 engines again", Duration::from_secs(300), |s| {
            full(s, VPN1, 3, 30001) && full(s, VPN2, 3, 30002)
        })
        .await;
    check_docker_side(&m);
    check_no_orphans(&m, &s);
    tree.stop().await;
}

const LATE_DESTROY: [Step; 3] = [
    Step::Kill(0),
    Step::ReorderEvents(true),
    Step::KillEngine(1),
];

const STALE_DIE: [Step; 4] = [
    Step::Recreate(0, 30001),
    Step::FailDocker("create", 1),
    Step::Recreate(1, 30002),
    Step::KillEngine(3),
];

/// An old container's `destroy` delivered late (after its name was reused, with events
/// reordered), and an old container's `die` around two VPN recreations: whatever acevisor
/// believed for a moment, no orphan is left 5 s after the faults stop. (The Supervisor routes an
/// event by name to an engine whose container ID is not known yet; the 409 of the next create of
/// that name triggers a re-list that adopts the container, so the window is short.)
#[test]
fn a_late_event_of_a_reused_name_leaves_no_orphan() {
    run_paused(LATE_DESTROY.to_vec(), Duration::from_secs(5));
    run_paused(STALE_DIE.to_vec(), Duration::from_secs(5));
}

/// A lost create reply leaves an orphan holding a low name that a rename then runs into: the
/// rename fails with a 409 and waits for the listing that finds the orphan; no name is handed
/// out above live+1.
#[test]
fn a_rename_into_an_orphans_name_waits_for_the_listing() {
    run_paused(
        vec![
            Step::SlowDocker(1),
            Step::LoseCreateReply(1),
            Step::FailDocker("inspect", 1),
            Step::Wait(1000),
        ],
        SETTLE,
    );
}

/// An engine that dies while its rename is under way: the number reserved for the rename is
/// released, never leaked (it would push new names above live+1).
#[test]
fn an_engine_dying_during_its_rename_leaks_no_number() {
    run_paused(
        vec![
            Step::Recreate(0, 30001),
            Step::SlowDocker(1),
            Step::KillEngine(1),
            Step::Start(1),
            Step::Flap(0, 2000),
            Step::KillEngine(4),
            Step::Recreate(1, 0),
        ],
        SETTLE,
    );
}
