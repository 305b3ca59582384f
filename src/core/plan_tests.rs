//! Tests of `plan::reconcile`: unit cases for each rule and a property test that drives random
//! VPN events, port reports and engine deaths through it, checking BEHAVIOR.md's invariants.

use super::*;
use crate::config::PortRange;
use crate::core::model::Readiness;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn lane(name: &str, id: &str, readiness: Readiness, range: (u16, u16)) -> VpnView {
    VpnView {
        name: Some(name.into()),
        container_id: Some(id.into()),
        started_at: Some("t0".into()),
        readiness,
        failed: false,
        forwarding: true,
        port_wait_expired: false,
        engine_ports: PortRange {
            start: range.0,
            end: range.1,
        },
    }
}

fn up(p: Option<u16>) -> Readiness {
    Readiness::Up { forwarded_port: p }
}

fn input<'a>(
    now: Instant,
    lanes: &'a [VpnView],
    engines: &'a [EngineFact],
    min: u32,
) -> PlanInput<'a> {
    PlanInput {
        now,
        min_replicas: min,
        max_replicas: 20,
        min_free: 0,
        idle_grace: Duration::from_secs(30),
        unhealthy_grace: Duration::from_secs(60),
        emergency_capacity: EmergencyCapacity::Reduced,
        lanes,
        engines,
        demand_floor: 0,
    }
}

/// Applies actions as if Docker did them instantly and every engine became ready.
struct World {
    engines: Vec<EngineFact>,
    next_names: BTreeSet<u32>,
}

impl World {
    fn new() -> Self {
        World {
            engines: Vec::new(),
            next_names: BTreeSet::new(),
        }
    }

    fn lowest_free(&self) -> u32 {
        (1..)
            .find(|n| !self.engines.iter().any(|e| e.ordinal == *n))
            .unwrap()
    }

    fn apply(&mut self, actions: &[Action], now: Instant) {
        for a in actions {
            match a {
                Action::Create {
                    vpn,
                    vpn_id,
                    vpn_started_at,
                    forwarded,
                    ports,
                } => {
                    let n = self.lowest_free();
                    self.next_names.insert(n);
                    self.engines.push(EngineFact {
                        name: format!("acestream-{n}"),
                        ordinal: n,
                        vpn: vpn.clone(),
                        vpn_id: vpn_id.clone(),
                        vpn_started_at: vpn_started_at.clone(),
                        forwarded: *forwarded,
                        p2p_port: ports.p2p,
                        http_port: ports.http,
                        phase: EnginePhase::Ready,
                        streams: 0,
                        idle_since: Some(now),
                    });
                }
                Action::Remove { name, .. } => self.engines.retain(|e| &e.name != name),
            }
        }
    }

    fn on(&self, vpn: &str) -> Vec<&EngineFact> {
        self.engines.iter().filter(|e| e.vpn_key() == vpn).collect()
    }
}

fn converge(world: &mut World, lanes: &[VpnView], min: u32, now: Instant) -> Vec<Vec<Action>> {
    let mut rounds = Vec::new();
    for _ in 0..6 {
        let actions = reconcile(&input(now, lanes, &world.engines, min));
        if actions.is_empty() {
            break;
        }
        world.apply(&actions, now);
        rounds.push(actions);
    }
    rounds
}

#[test]
fn cold_start_spreads_evenly_with_one_forwarded_engine_first() {
    let now = Instant::now();
    let lanes = [
        lane("g1", "id1", up(Some(55747)), (19000, 19499)),
        lane("g2", "id2", up(Some(40000)), (19500, 19999)),
    ];
    let actions = reconcile(&input(now, &lanes, &[], 10));
    assert_eq!(actions.len(), 10);
    assert!(
        matches!(&actions[0], Action::Create { forwarded: true, ports, vpn, .. } if ports.p2p == 55747 && vpn.as_deref() == Some("g1"))
    );
    assert!(
        matches!(&actions[1], Action::Create { forwarded: true, ports, .. } if ports.p2p == 40000)
    );
    assert!(actions[2..].iter().all(|a| matches!(
        a,
        Action::Create {
            forwarded: false,
            ..
        }
    )));
    let mut w = World::new();
    w.apply(&actions, now);
    assert_eq!(w.on("g1").len(), 5);
    assert_eq!(w.on("g2").len(), 5);
    assert!(
        reconcile(&input(now, &lanes, &w.engines, 10)).is_empty(),
        "converged in one pass"
    );
}

#[test]
fn nothing_is_placed_on_a_vpn_whose_port_is_unknown() {
    let now = Instant::now();
    let lanes = [lane("g1", "id1", up(None), (19000, 19499))];
    assert!(reconcile(&input(now, &lanes, &[], 5)).is_empty());
    let mut waited = lanes.clone();
    waited[0].port_wait_expired = true;
    let actions = reconcile(&input(now, &waited, &[], 5));
    assert_eq!(actions.len(), 5);
    assert!(actions.iter().all(|a| matches!(
        a,
        Action::Create {
            forwarded: false,
            ..
        }
    )));
}

#[test]
fn no_engine_on_a_vpn_that_is_not_up() {
    let now = Instant::now();
    for r in [
        Readiness::Down,
        Readiness::Starting,
        Readiness::Degraded,
        Readiness::Misconfigured,
    ] {
        let lanes = [lane("g1", "id1", r, (19000, 19499))];
        assert!(reconcile(&input(now, &lanes, &[], 5)).is_empty(), "{r:?}");
    }
}

#[test]
fn forwarded_engine_with_the_current_port_is_never_touched() {
    let now = Instant::now();
    let lanes = [lane("g1", "id1", up(Some(34817)), (19000, 19499))];
    let mut w = World::new();
    converge(&mut w, &lanes, 5, now);
    let fw = w.engines.iter().find(|e| e.forwarded).unwrap().clone();
    assert_eq!(fw.p2p_port, 34817);
    for _ in 0..3 {
        assert!(reconcile(&input(now, &lanes, &w.engines, 5)).is_empty());
    }
}

#[test]
fn genuine_port_change_creates_the_new_forwarded_engine_before_removing_the_old() {
    let now = Instant::now();
    let mut lanes = [lane("g1", "id1", up(Some(1111)), (19000, 19499))];
    let mut w = World::new();
    converge(&mut w, &lanes, 4, now);
    let before: Vec<String> = w.engines.iter().map(|e| e.name.clone()).collect();
    lanes[0].readiness = up(Some(2222));
    let first = reconcile(&input(now, &lanes, &w.engines, 4));
    assert_eq!(first.len(), 1, "only the new forwarded engine: {first:?}");
    assert!(
        matches!(&first[0], Action::Create { forwarded: true, ports, .. } if ports.p2p == 2222)
    );
    w.apply(&first, now);
    let second = reconcile(&input(now, &lanes, &w.engines, 4));
    let old = w
        .engines
        .iter()
        .find(|e| e.forwarded && e.p2p_port == 1111)
        .unwrap()
        .name
        .clone();
    assert_eq!(
        second,
        vec![Action::Remove {
            name: old.clone(),
            reason: RemoveReason::PortMismatch
        }]
    );
    w.apply(&second, now);
    let after: Vec<String> = w.engines.iter().map(|e| e.name.clone()).collect();
    let untouched = before
        .iter()
        .filter(|n| **n != old)
        .all(|n| after.contains(n));
    assert!(untouched, "no ordinary engine touched");
}

#[test]
fn old_forwarded_engine_stays_until_its_replacement_is_ready() {
    let now = Instant::now();
    let lanes = [lane("g1", "id1", up(Some(2222)), (19000, 19499))];
    let mut engines = vec![fact("acestream-1", 1, "g1", "id1", true, 1111, 19000)];
    engines.push(EngineFact {
        phase: EnginePhase::Starting,
        ..fact("acestream-2", 2, "g1", "id1", true, 2222, 19004)
    });
    let actions = reconcile(&input(now, &lanes, &engines, 2));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Remove { .. })),
        "{actions:?}"
    );
}

fn fact(
    name: &str,
    n: u32,
    vpn: &str,
    id: &str,
    forwarded: bool,
    p2p: u16,
    http: u16,
) -> EngineFact {
    EngineFact {
        name: name.into(),
        ordinal: n,
        vpn: Some(vpn.into()),
        vpn_id: Some(id.into()),
        vpn_started_at: Some("t0".into()),
        forwarded,
        p2p_port: p2p,
        http_port: http,
        phase: EnginePhase::Ready,
        streams: 0,
        idle_since: None,
    }
}

#[test]
fn failed_vpn_loses_its_engines_and_the_healthy_one_is_untouched() {
    let now = Instant::now();
    let mut lanes = [
        lane("g1", "id1", up(Some(55747)), (19000, 19499)),
        lane("g2", "id2", up(Some(40000)), (19500, 19999)),
    ];
    let mut w = World::new();
    converge(&mut w, &lanes, 10, now);
    lanes[0].failed = true;
    lanes[0].readiness = Readiness::Down;
    let actions = reconcile(&input(now, &lanes, &w.engines, 10));
    assert_eq!(actions.len(), 5);
    let g1: Vec<String> = w.on("g1").iter().map(|e| e.name.clone()).collect();
    for a in &actions {
        assert!(
            matches!(a, Action::Remove { name, reason: RemoveReason::VpnFailed } if g1.contains(name))
        );
    }
}

#[test]
fn shift_tops_the_healthy_vpn_up_and_reduced_does_not() {
    let now = Instant::now();
    let mut lanes = [
        lane("g1", "id1", up(Some(1)), (19000, 19499)),
        lane("g2", "id2", up(Some(2)), (19500, 19999)),
    ];
    let mut w = World::new();
    converge(&mut w, &lanes, 10, now);
    lanes[0].failed = true;
    lanes[0].readiness = Readiness::Down;
    converge(&mut w, &lanes, 10, now);
    assert_eq!(w.on("g2").len(), 5, "reduced keeps the healthy share");
    let mut shift = input(now, &lanes, &w.engines, 10);
    shift.emergency_capacity = EmergencyCapacity::Shift;
    let actions = reconcile(&shift);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(
                a,
                Action::Create {
                    forwarded: false,
                    ..
                }
            ))
            .count(),
        5
    );
}

#[test]
fn stale_engines_of_a_recreated_vpn_are_removed_and_recreated_against_the_new_id() {
    let now = Instant::now();
    let mut lanes = [lane("g1", "old", up(Some(7)), (19000, 19499))];
    let mut w = World::new();
    converge(&mut w, &lanes, 3, now);
    lanes[0].container_id = Some("new".into());
    converge(&mut w, &lanes, 3, now);
    assert_eq!(w.engines.len(), 3);
    assert!(w.engines.iter().all(|e| e.vpn_id.as_deref() == Some("new")));
}

#[test]
fn unhealthy_forwarded_engine_is_removed_before_its_successor_takes_the_port() {
    let now = Instant::now() + Duration::from_secs(1000);
    let lanes = [lane("g1", "id1", up(Some(7777)), (19000, 19499))];
    let sick = EngineFact {
        phase: EnginePhase::Unhealthy {
            since: now - Duration::from_secs(61),
        },
        ..fact("acestream-1", 1, "g1", "id1", true, 7777, 19000)
    };
    let actions = reconcile(&input(now, &lanes, std::slice::from_ref(&sick), 1));
    assert!(actions.contains(&Action::Remove {
        name: "acestream-1".into(),
        reason: RemoveReason::Unhealthy
    }));
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Create {
                forwarded: true,
                ..
            }
        )),
        "port still held: {actions:?}"
    );
}

#[test]
fn unhealthy_ordinary_engine_is_replaced_first_then_removed() {
    let now = Instant::now() + Duration::from_secs(1000);
    let lanes = [lane("g1", "id1", up(Some(7777)), (19000, 19499))];
    let mut w = World::new();
    converge(&mut w, &lanes, 3, now);
    let victim = w.engines.iter_mut().find(|e| !e.forwarded).unwrap();
    victim.phase = EnginePhase::Unhealthy {
        since: now - Duration::from_secs(61),
    };
    let victim = victim.name.clone();
    let first = reconcile(&input(now, &lanes, &w.engines, 3));
    assert!(
        matches!(
            first.as_slice(),
            [Action::Create {
                forwarded: false,
                ..
            }]
        ),
        "{first:?}"
    );
    w.apply(&first, now);
    let second = reconcile(&input(now, &lanes, &w.engines, 3));
    assert_eq!(
        second,
        vec![Action::Remove {
            name: victim,
            reason: RemoveReason::Unhealthy
        }]
    );
}

#[test]
fn surplus_idle_engines_go_highest_ordinal_first_never_the_forwarded_one() {
    let now = Instant::now() + Duration::from_secs(1000);
    let lanes = [lane("g1", "id1", up(Some(7777)), (19000, 19499))];
    let mut engines: Vec<EngineFact> = (1..=5)
        .map(|n| EngineFact {
            idle_since: Some(now - Duration::from_secs(31)),
            ..fact(
                &format!("acestream-{n}"),
                n,
                "g1",
                "id1",
                n == 5,
                if n == 5 {
                    7777
                } else {
                    19003 + 4 * (n as u16 - 1)
                },
                19000 + 4 * (n as u16 - 1),
            )
        })
        .collect();
    engines[3].streams = 1;
    let actions = reconcile(&input(now, &lanes, &engines, 2));
    assert_eq!(
        actions,
        ["acestream-3", "acestream-2", "acestream-1"]
            .map(|n| Action::Remove {
                name: n.into(),
                reason: RemoveReason::Surplus
            })
            .to_vec(),
        "floor 2: 4 is busy and 5 is forwarded, so the idle ones go, highest first"
    );
}

#[test]
fn mode_none_lane_has_no_forwarded_engine() {
    let now = Instant::now();
    let lanes = [VpnView {
        name: None,
        container_id: None,
        started_at: None,
        readiness: up(None),
        failed: false,
        forwarding: false,
        port_wait_expired: false,
        engine_ports: PortRange {
            start: 40000,
            end: 44999,
        },
    }];
    let actions = reconcile(&input(now, &lanes, &[], 3));
    assert_eq!(actions.len(), 3);
    assert!(actions.iter().all(|a| matches!(
        a,
        Action::Create {
            forwarded: false,
            vpn: None,
            ..
        }
    )));
}

#[test]
fn forwarded_port_inside_the_range_is_never_an_ordinary_block() {
    let now = Instant::now();
    let lanes = [lane("g1", "id1", up(Some(19001)), (19000, 19499))];
    let actions = reconcile(&input(now, &lanes, &[], 3));
    for a in &actions {
        if let Action::Create {
            forwarded: false,
            ports,
            ..
        } = a
        {
            assert!(
                ports.http > 19003,
                "block 19000-19003 holds the forwarded port: {ports:?}"
            );
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Fail(usize),
    Recover(usize, Option<u16>),
    Port(usize, Option<u16>),
    Degrade(usize),
    Recreate(usize),
    RestartInPlace(usize),
    KillEngine(usize),
    WaitExpired(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let port = proptest::option::of(prop_oneof![Just(30001u16), Just(30002), Just(30003)]);
    prop_oneof![
        (0..2usize).prop_map(Step::Fail),
        (0..2usize, port.clone()).prop_map(|(v, p)| Step::Recover(v, p)),
        (0..2usize, port).prop_map(|(v, p)| Step::Port(v, p)),
        (0..2usize).prop_map(Step::Degrade),
        (0..2usize).prop_map(Step::Recreate),
        (0..2usize).prop_map(Step::RestartInPlace),
        (0..20usize).prop_map(Step::KillEngine),
        (0..2usize).prop_map(Step::WaitExpired),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn invariants_hold_over_random_event_sequences(steps in proptest::collection::vec(step(), 1..40), shift: bool) {
        let now = Instant::now();
        let mut lanes = vec![lane("g1", "id1-0", up(Some(30001)), (19000, 19099)), lane("g2", "id2-0", up(Some(30002)), (19500, 19599))];
        let mut generation = [0u32; 2];
        let mut w = World::new();
        let min = 6;
        for s in steps {
            match s {
                Step::Fail(v) => { lanes[v].failed = true; lanes[v].readiness = Readiness::Down; }
                Step::Recover(v, p) => { lanes[v].failed = false; lanes[v].readiness = up(p); lanes[v].port_wait_expired = false; }
                Step::Port(v, p) => if lanes[v].readiness.is_up() { lanes[v].readiness = up(p.or(lanes[v].forwarded_port())); },
                Step::Degrade(v) => if !lanes[v].failed { lanes[v].readiness = Readiness::Degraded; },
                Step::RestartInPlace(v) => { generation[v] += 1; lanes[v].started_at = Some(format!("t{}", generation[v])); }
                Step::Recreate(v) => { generation[v] += 1; lanes[v].container_id = Some(format!("id{}-{}", v + 1, generation[v])); }
                Step::KillEngine(i) => if !w.engines.is_empty() { let i = i % w.engines.len(); w.engines.remove(i); },
                Step::WaitExpired(v) => lanes[v].port_wait_expired = true,
            }
            let mut inp = input(now, &lanes, &w.engines, min);
            if shift { inp.emergency_capacity = EmergencyCapacity::Shift; }
            let actions = reconcile(&inp);
            for a in &actions {
                match a {
                    Action::Create { vpn, vpn_id, vpn_started_at, forwarded, ports } => {
                        let l = lanes.iter().find(|l| l.name == *vpn).unwrap();
                        prop_assert_eq!(vpn_started_at, &l.started_at, "create against the current container start");
                        prop_assert!(l.readiness.is_up() && !l.failed, "create on a lane that is not up: {l:?}");
                        prop_assert_eq!(vpn_id, &l.container_id, "create against the current container id");
                        if *forwarded {
                            prop_assert_eq!(Some(ports.p2p), l.forwarded_port());
                        } else {
                            prop_assert!(l.forwarded_port().is_some() || l.port_wait_expired, "ordinary engine before the port is known");
                        }
                    }
                    Action::Remove { name, reason } => {
                        let e = w.engines.iter().find(|e| &e.name == name).unwrap();
                        let l = lanes.iter().find(|l| l.name == e.vpn).unwrap();
                        let current = e.forwarded && Some(e.p2p_port) == l.forwarded_port() && e.vpn_id == l.container_id && e.vpn_started_at == l.started_at && !l.failed;
                        prop_assert!(!current || *reason == RemoveReason::Duplicate, "removed the forwarded engine holding the current port: {reason:?}");
                    }
                }
            }
            converge(&mut w, &lanes, min, now);
            for l in &lanes {
                let on: Vec<_> = w.on(l.key());
                let mut held = BTreeSet::new();
                for e in &on {
                    prop_assert!(held.insert(e.p2p_port), "two engines share a P2P port on {:?}", l.name);
                }
                if let (true, Some(p)) = (l.readiness.is_up() && !l.failed, l.forwarded_port()) {
                    let fw: Vec<_> = on.iter().filter(|e| e.forwarded).collect();
                    prop_assert_eq!(fw.len(), 1, "exactly one forwarded engine on {:?}", l.name);
                    prop_assert_eq!(fw[0].p2p_port, p);
                }
                if l.failed {
                    prop_assert!(on.is_empty(), "engines left on a failed VPN");
                }
                prop_assert!(on.iter().all(|e| e.vpn_id == l.container_id && e.vpn_started_at == l.started_at), "stale engine left");
            }
        }
    }
}

#[test]
fn provisioning_demand_adds_engines_within_max_replicas() {
    let now = Instant::now();
    let lanes = [lane("g1", "id1", up(Some(7)), (19000, 19499))];
    let mut w = World::new();
    converge(&mut w, &lanes, 2, now);
    let mut inp = input(now, &lanes, &w.engines, 2);
    inp.demand_floor = 3;
    let actions = reconcile(&inp);
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Create {
                forwarded: false,
                ..
            }]
        ),
        "{actions:?}"
    );
    inp.demand_floor = 100;
    let actions = reconcile(&inp);
    assert_eq!(actions.len(), 18, "capped at max_replicas 20");
}
