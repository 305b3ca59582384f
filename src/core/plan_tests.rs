//! Tests of `plan::reconcile`: unit cases for each rule and a property test that drives random
//! VPN events, port reports, engine deaths and sickness through it on a clock that moves, with
//! engines that take time to start and to go, checking the contract's invariants at every step.

use super::*;
use crate::core::model::Readiness;
use crate::core::port_set::PortSet;
use crate::core::ports::PortRange;
use proptest::prelude::*;

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

fn up(p: impl Into<PortSet>) -> Readiness {
    Readiness::up(p)
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

/// A pool of engines that plans are applied to.
struct World {
    engines: Vec<EngineFact>,
}

impl World {
    fn new() -> Self {
        World {
            engines: Vec::new(),
        }
    }

    fn lowest_free(&self) -> u32 {
        (1..)
            .find(|n| !self.engines.iter().any(|e| e.ordinal == *n))
            .unwrap()
    }

    /// The engine a `Create` makes, named with the lowest free number, in `phase`.
    fn created(
        &self,
        action: &Action,
        phase: EnginePhase,
        idle_since: Option<Instant>,
    ) -> EngineFact {
        let Action::Create {
            vpn,
            vpn_id,
            vpn_started_at,
            forwarded,
            ports,
        } = action
        else {
            unreachable!("only a Create makes an engine")
        };
        let n = self.lowest_free();
        EngineFact {
            name: format!("acestream-{n}"),
            ordinal: n,
            vpn: vpn.clone(),
            vpn_id: vpn_id.clone(),
            vpn_started_at: vpn_started_at.clone(),
            forwarded: *forwarded,
            p2p_port: ports.p2p,
            http_port: ports.http,
            phase,
            streams: 0,
            idle_since,
            outdated: false,
        }
    }

    /// Applies actions as if Docker did them instantly and every engine became ready.
    fn apply(&mut self, actions: &[Action], now: Instant) {
        for a in actions {
            match a {
                Action::Create { .. } => {
                    let e = self.created(a, EnginePhase::Ready, Some(now));
                    self.engines.push(e);
                }
                Action::Remove { name, .. } => self.engines.retain(|e| &e.name != name),
            }
        }
    }

    /// Applies actions as Docker would over time: a creation starts in `Creating`, a removal
    /// leaves the engine `Removing` (its ports still held); `settle` moves them on.
    fn apply_staged(&mut self, actions: &[Action]) -> Result<(), String> {
        for a in actions {
            match a {
                Action::Create { .. } => {
                    let e = self.created(a, EnginePhase::Creating, None);
                    self.engines.push(e);
                }
                Action::Remove { name, reason } => {
                    let e = self
                        .engines
                        .iter_mut()
                        .find(|e| &e.name == name)
                        .ok_or_else(|| format!("removal of unknown {name}"))?;
                    if matches!(e.phase, EnginePhase::Removing | EnginePhase::Creating) {
                        return Err(format!("{reason:?} removal of {name} in {:?}", e.phase));
                    }
                    e.phase = EnginePhase::Removing;
                }
            }
        }
        Ok(())
    }

    /// One step of Docker and the engines: removals finish, creations start, started engines
    /// answer.
    fn settle(&mut self, now: Instant) {
        self.engines.retain(|e| e.phase != EnginePhase::Removing);
        for e in &mut self.engines {
            e.phase = match e.phase {
                EnginePhase::Creating => EnginePhase::Starting,
                EnginePhase::Starting => {
                    e.idle_since = Some(now);
                    EnginePhase::Ready
                }
                other => other,
            };
        }
    }

    /// Two engines of one lane holding one port (any of HTTP, HTTPS, API, P2P), in any phase.
    fn port_clash(&self) -> Option<String> {
        let mut held: std::collections::BTreeMap<(&str, u16), &str> = Default::default();
        for e in &self.engines {
            for port in crate::core::ports::held_ports(e.http_port, e.p2p_port) {
                if let Some(other) = held.insert((e.vpn_key(), port), &e.name) {
                    return Some(format!("{other} and {} both hold {port}", e.name));
                }
            }
        }
        None
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
        outdated: false,
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

#[test]
fn a_port_change_does_not_make_an_idle_engine_look_surplus() {
    let start = Instant::now();
    let mut lanes = [lane("g1", "id1", up(Some(1111)), (19000, 19499))];
    let mut w = World::new();
    converge(&mut w, &lanes, 3, start);
    let later = start + Duration::from_secs(600);
    lanes[0].readiness = up(Some(2222));
    let actions = reconcile(&input(later, &lanes, &w.engines, 3));
    assert!(
        matches!(actions.as_slice(), [Action::Create { forwarded: true, ports, .. }] if ports.p2p == 2222),
        "only the new forwarded engine, no surplus removal: {actions:?}"
    );
}

/// Runs plans through the staged world until nothing is left to do; returns every action.
fn converge_staged(w: &mut World, lanes: &[VpnView], min: u32, now: Instant) -> Vec<Action> {
    let mut all = Vec::new();
    for _ in 0..12 {
        let actions = reconcile(&input(now, lanes, &w.engines, min));
        if actions.is_empty() && w.engines.iter().all(|e| e.phase == EnginePhase::Ready) {
            break;
        }
        w.apply_staged(&actions).unwrap();
        assert_eq!(w.port_clash(), None, "after {actions:?}");
        w.settle(now);
        all.extend(actions);
    }
    all
}

#[test]
fn a_new_port_that_is_an_ordinary_engines_p2p_port_moves_that_engine_then_is_forwarded() {
    let now = Instant::now();
    let mut lanes = [lane("g1", "id1", up(Some(30001)), (19000, 19099))];
    let mut w = World::new();
    converge_staged(&mut w, &lanes, 3, now);
    let holder = w
        .engines
        .iter()
        .find(|e| !e.forwarded && e.p2p_port == 19007)
        .expect("an ordinary engine on block 19004")
        .name
        .clone();
    lanes[0].readiness = up(Some(19007));
    let first = reconcile(&input(now, &lanes, &w.engines, 3));
    assert!(
        matches!(first.as_slice(), [Action::Create { forwarded: false, ports, .. }] if ports.http != 19004),
        "the holder's replacement comes first, on a free block: {first:?}"
    );
    let actions = [first, converge_staged(&mut w, &lanes, 3, now)].concat();
    assert!(actions.contains(&Action::Remove {
        name: holder,
        reason: RemoveReason::PortClash
    }));
    let fw: Vec<_> = w.engines.iter().filter(|e| e.forwarded).collect();
    assert_eq!(fw.len(), 1, "{:?}", w.engines);
    assert_eq!(fw[0].p2p_port, 19007);
    assert_eq!(
        w.engines.len(),
        3,
        "the pool is whole again: {:?}",
        w.engines
    );
}

#[test]
fn a_new_port_that_is_another_engines_http_port_is_never_given_to_a_second_holder() {
    let now = Instant::now();
    let mut lanes = [lane("g1", "id1", up(Some(30001)), (19000, 19099))];
    let mut w = World::new();
    converge_staged(&mut w, &lanes, 3, now);
    for role in 0..3u16 {
        let port = 19004 + role;
        lanes[0].readiness = up(Some(port));
        let actions = reconcile(&input(now, &lanes, &w.engines, 3));
        assert!(
            !actions.iter().any(|a| matches!(
                a,
                Action::Create {
                    forwarded: true,
                    ..
                }
            )),
            "port {port} is still held by an engine's block: {actions:?}"
        );
    }
    converge_staged(&mut w, &lanes, 3, now);
    let fw: Vec<_> = w.engines.iter().filter(|e| e.forwarded).collect();
    assert_eq!((fw.len(), fw[0].p2p_port), (1, 19006));
}

#[test]
fn an_old_forwarded_engine_holding_the_new_port_goes_before_its_successor() {
    let now = Instant::now();
    let mut lanes = [lane("g1", "id1", up(Some(30001)), (19000, 19099))];
    let mut w = World::new();
    converge_staged(&mut w, &lanes, 2, now);
    let old = w.engines.iter().find(|e| e.forwarded).unwrap().clone();
    lanes[0].readiness = up(Some(old.http_port + 1));
    let first = reconcile(&input(now, &lanes, &w.engines, 2));
    assert_eq!(
        first,
        vec![Action::Remove {
            name: old.name,
            reason: RemoveReason::PortMismatch
        }],
        "its successor needs its HTTPS port"
    );
    converge_staged(&mut w, &lanes, 2, now);
    let fw: Vec<_> = w.engines.iter().filter(|e| e.forwarded).collect();
    assert_eq!((fw.len(), fw[0].p2p_port), (1, old.http_port + 1));
}

#[test]
fn a_template_change_is_rolled_one_engine_at_a_time_idle_first_forwarded_last() {
    let mut now = Instant::now();
    let lanes = [lane("g1", "id1", up(Some(30001)), (19000, 19099))];
    let mut w = World::new();
    converge_staged(&mut w, &lanes, 4, now);
    let busy = w
        .engines
        .iter()
        .find(|e| !e.forwarded)
        .unwrap()
        .name
        .clone();
    for e in &mut w.engines {
        e.outdated = true;
        if e.name == busy {
            e.streams = 1;
            e.idle_since = None;
        }
    }
    let forwarded = w.engines.iter().find(|e| e.forwarded).unwrap().name.clone();
    let mut rolled = Vec::new();
    for _ in 0..80 {
        let actions = reconcile(&input(now, &lanes, &w.engines, 4));
        let settled = w.engines.iter().all(|e| e.phase == EnginePhase::Ready);
        if actions.is_empty() && settled {
            break;
        }
        let outdated_removals: Vec<&String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove {
                    name,
                    reason: RemoveReason::Outdated,
                } => Some(name),
                _ => None,
            })
            .collect();
        assert!(outdated_removals.len() <= 1, "one at a time: {actions:?}");
        if !outdated_removals.is_empty() {
            assert!(
                !w.engines
                    .iter()
                    .any(|e| e.outdated && e.phase == EnginePhase::Removing),
                "the previous roll is finished first"
            );
        }
        rolled.extend(outdated_removals.into_iter().cloned());
        w.apply_staged(&actions).unwrap();
        assert_eq!(w.port_clash(), None);
        let ready = w
            .engines
            .iter()
            .filter(|e| e.phase == EnginePhase::Ready)
            .count();
        assert!(
            ready >= 4,
            "never below min_replicas ready: {:?}",
            w.engines
        );
        w.settle(now);
        now += Duration::from_secs(10);
    }
    assert_eq!(rolled.len(), 4, "{rolled:?}");
    assert_eq!(rolled[2], busy, "the busy engine after the idle ones");
    assert_eq!(rolled[3], forwarded, "the forwarded engine last");
    assert_eq!(w.engines.len(), 4, "the surge is trimmed: {:?}", w.engines);
    assert!(w.engines.iter().all(|e| !e.outdated));
    let fw: Vec<_> = w.engines.iter().filter(|e| e.forwarded).collect();
    assert_eq!((fw.len(), fw[0].p2p_port), (1, 30001));
}

#[test]
fn no_roll_while_a_vpn_cannot_take_engines() {
    let now = Instant::now();
    let mut lanes = [
        lane("g1", "id1", up(Some(30001)), (19000, 19099)),
        lane("g2", "id2", up(Some(30002)), (19500, 19599)),
    ];
    let mut w = World::new();
    converge_staged(&mut w, &lanes, 4, now);
    w.engines.iter_mut().for_each(|e| e.outdated = true);
    lanes[1].readiness = Readiness::Degraded;
    assert!(reconcile(&input(now, &lanes, &w.engines, 4)).is_empty());
}

#[derive(Clone, Debug)]
enum Step {
    Fail(usize),
    Recover(usize, PortSet),
    /// The control server reports these ports (empty: no reading, the settled set stays).
    Port(usize, PortSet),
    Degrade(usize),
    Recreate(usize),
    RestartInPlace(usize),
    KillEngine(usize),
    Sicken(usize),
    Stream(usize, bool),
    Tick(u64),
    WaitExpired(usize),
    /// The engine template changed: every engine there is now is outdated.
    NewTemplate,
}

/// Zero to three forwarded ports, many of them inside the lanes' engine ranges, in every role of
/// a block (HTTP, HTTPS, API, P2P) of either lane; consecutive draws grow, shrink and move the set.
fn forwarded_ports() -> impl Strategy<Value = PortSet> {
    proptest::collection::vec(
        prop_oneof![
            Just(30001u16),
            Just(30002),
            Just(30003),
            19000u16..19012,
            19500u16..19512,
        ],
        0..4,
    )
    .prop_map(PortSet::new)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2usize).prop_map(Step::Fail),
        (0..2usize, forwarded_ports()).prop_map(|(v, p)| Step::Recover(v, p)),
        (0..2usize, forwarded_ports()).prop_map(|(v, p)| Step::Port(v, p)),
        (0..2usize).prop_map(Step::Degrade),
        (0..2usize).prop_map(Step::Recreate),
        (0..2usize).prop_map(Step::RestartInPlace),
        (0..20usize).prop_map(Step::KillEngine),
        (0..20usize).prop_map(Step::Sicken),
        (0..20usize, any::<bool>()).prop_map(|(i, on)| Step::Stream(i, on)),
        (0..90u64).prop_map(Step::Tick),
        (0..2usize).prop_map(Step::WaitExpired),
        Just(Step::NewTemplate),
    ]
}

/// Checks one plan against the lanes and the engines it was made from.
fn check_plan(
    actions: &[Action],
    lanes: &[VpnView],
    engines: &[EngineFact],
    min: u32,
    cap: usize,
) -> Result<(), TestCaseError> {
    let rolled = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Remove {
                    reason: RemoveReason::Outdated,
                    ..
                }
            )
        })
        .count();
    if rolled > 0 {
        prop_assert_eq!(rolled, 1, "one engine rolled at a time: {:?}", actions);
        let ready = engines
            .iter()
            .filter(|e| e.phase == EnginePhase::Ready)
            .count() as u32;
        prop_assert!(ready > min, "a roll below min_replicas ready engines");
        prop_assert!(
            !engines
                .iter()
                .any(|e| e.outdated && e.phase == EnginePhase::Removing),
            "a roll while the previous one is finishing"
        );
    }
    for a in actions {
        match a {
            Action::Create {
                vpn,
                vpn_id,
                vpn_started_at,
                forwarded,
                ports,
            } => {
                let l = lanes.iter().find(|l| l.name == *vpn).unwrap();
                prop_assert_eq!(
                    vpn_started_at,
                    &l.started_at,
                    "create against the current container start"
                );
                prop_assert!(
                    l.readiness.is_up() && !l.failed,
                    "create on a lane that is not up: {:?}",
                    l
                );
                prop_assert_eq!(
                    vpn_id,
                    &l.container_id,
                    "create against the current container id"
                );
                if *forwarded {
                    prop_assert!(
                        invariant_ports(l, cap).contains(ports.p2p),
                        "forwarded engine on {} which {:?} does not serve",
                        ports.p2p,
                        l
                    );
                } else {
                    prop_assert!(
                        l.forwarded_port().is_some() || l.port_wait_expired,
                        "ordinary engine before the port is known"
                    );
                }
            }
            Action::Remove { name, reason } => {
                let e = engines.iter().find(|e| &e.name == name).unwrap();
                let l = lanes.iter().find(|l| l.name == e.vpn).unwrap();
                let current = e.forwarded
                    && invariant_ports(l, cap).contains(e.p2p_port)
                    && e.vpn_id == l.container_id
                    && e.vpn_started_at == l.started_at
                    && !l.failed;
                // Its block may hold another port the VPN serves: then it must make way.
                let holds_another = invariant_ports(l, cap).iter().any(|q| {
                    q != e.p2p_port
                        && crate::core::ports::held_ports(e.http_port, e.p2p_port).contains(&q)
                });
                prop_assert!(
                    !current
                        || matches!(
                            reason,
                            RemoveReason::Duplicate
                                | RemoveReason::Unhealthy
                                | RemoveReason::Outdated
                        )
                        || (*reason == RemoveReason::PortClash && holds_another),
                    "removed the forwarded engine holding the current port: {:?}",
                    reason
                );
                if *reason == RemoveReason::Outdated && e.forwarded {
                    prop_assert!(
                        !engines
                            .iter()
                            .any(|o| o.outdated && !o.forwarded && o.phase == EnginePhase::Ready),
                        "the forwarded engine rolled before an ordinary one"
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// `small`: `max_replicas` 3 over two VPNs, so each serves only its lowest forwarded port.
    #[test]
    fn invariants_hold_over_random_event_sequences(
        steps in proptest::collection::vec(step(), 1..40),
        shift: bool,
        small: bool,
    ) {
        run_steps(steps, shift, small)?;
    }
}

/// Drives `steps` through the plan and the staged world, checking the invariants at every step.
fn run_steps(steps: Vec<Step>, shift: bool, small: bool) -> Result<(), TestCaseError> {
    {
        let mut now = Instant::now();
        let mut lanes = vec![
            lane("g1", "id1-0", up(Some(30001)), (19000, 19099)),
            lane("g2", "id2-0", up(Some(30002)), (19500, 19599)),
        ];
        let mut generation = [0u32; 2];
        let mut w = World::new();
        // (A roll of a forwarded engine needs one engine of headroom under `max_replicas`.)
        let (min, max) = if small { (2, 3) } else { (6, 20) };
        let cap = if small { 1 } else { 10 };
        let plan = |lanes: &[VpnView], engines: &[EngineFact], now: Instant| {
            let mut inp = input(now, lanes, engines, min);
            inp.max_replicas = max;
            assert_eq!(forwarded_cap(&inp), cap);
            if shift {
                inp.emergency_capacity = EmergencyCapacity::Shift;
            }
            reconcile(&inp)
        };
        for s in steps {
            let pick = |i: usize, w: &World| (!w.engines.is_empty()).then(|| i % w.engines.len());
            match s {
                Step::Fail(v) => {
                    lanes[v].failed = true;
                    lanes[v].readiness = Readiness::Down;
                }
                Step::Recover(v, p) => {
                    lanes[v].failed = false;
                    lanes[v].readiness = up(p);
                    lanes[v].port_wait_expired = false;
                }
                Step::Port(v, p) => {
                    if lanes[v].readiness.is_up() && !p.is_empty() {
                        lanes[v].readiness = up(p);
                    }
                }
                Step::Degrade(v) => {
                    if !lanes[v].failed {
                        lanes[v].readiness = Readiness::Degraded;
                    }
                }
                Step::RestartInPlace(v) => {
                    generation[v] += 1;
                    lanes[v].started_at = Some(format!("t{}", generation[v]));
                }
                Step::Recreate(v) => {
                    generation[v] += 1;
                    lanes[v].container_id = Some(format!("id{}-{}", v + 1, generation[v]));
                }
                Step::KillEngine(i) => {
                    if let Some(i) = pick(i, &w) {
                        w.engines.remove(i);
                    }
                }
                Step::Sicken(i) => {
                    if let Some(i) = pick(i, &w)
                        && w.engines[i].phase == EnginePhase::Ready
                    {
                        w.engines[i].phase = EnginePhase::Unhealthy { since: now };
                    }
                }
                Step::Stream(i, on) => {
                    if let Some(i) = pick(i, &w) {
                        let e = &mut w.engines[i];
                        e.streams = u32::from(on);
                        e.idle_since = (!on).then_some(now);
                    }
                }
                Step::Tick(secs) => now += Duration::from_secs(secs),
                Step::WaitExpired(v) => lanes[v].port_wait_expired = true,
                Step::NewTemplate => w.engines.iter_mut().for_each(|e| e.outdated = true),
            }
            // One plan at the step's facts, then Docker and the engines catch up over a few
            // passes; no two engines of a lane ever hold one port, whatever the phases.
            for _ in 0..60 {
                let actions = plan(&lanes, &w.engines, now);
                let in_flight = w.engines.iter().any(|e| {
                    !matches!(e.phase, EnginePhase::Ready | EnginePhase::Unhealthy { .. })
                });
                if actions.is_empty() && !in_flight {
                    break;
                }
                check_plan(&actions, &lanes, &w.engines, min, cap)?;
                w.apply_staged(&actions).map_err(TestCaseError::fail)?;
                if let Some(clash) = w.port_clash() {
                    prop_assert!(false, "port clash after {:?}: {}", actions, clash);
                }
                w.settle(now);
            }
            for l in &lanes {
                let on: Vec<_> = w.on(l.key());
                let served = invariant_ports(l, cap);
                if l.readiness.is_up() && !l.failed && !served.is_empty() {
                    prop_assert_eq!(served.len(), l.forwarded_ports().len().min(cap));
                    let mut fw: Vec<u16> = on
                        .iter()
                        .filter(|e| e.forwarded)
                        .map(|e| e.p2p_port)
                        .collect();
                    fw.sort_unstable();
                    prop_assert_eq!(
                        &fw[..],
                        served.as_slice(),
                        "exactly one forwarded engine per served port on {:?}: {:?}",
                        l.name,
                        on
                    );
                    for p in served.iter() {
                        prop_assert!(
                            !on.iter().any(|e| !(e.forwarded && e.p2p_port == p)
                                && crate::core::ports::held_ports(e.http_port, e.p2p_port)
                                    .contains(&p)),
                            "another engine still holds the forwarded port {}: {:?}",
                            p,
                            on
                        );
                    }
                }
                if l.failed {
                    prop_assert!(on.is_empty(), "engines left on a failed VPN");
                }
                prop_assert!(
                    on.iter()
                        .all(|e| e.vpn_id == l.container_id && e.vpn_started_at == l.started_at),
                    "stale engine left"
                );
            }
            // At rest with every lane able to take engines, the template is rolled out.
            if lanes.iter().all(rollable) {
                prop_assert!(
                    !w.engines
                        .iter()
                        .any(|e| e.outdated && e.phase == EnginePhase::Ready),
                    "an outdated engine left at rest: {:?}",
                    w.engines
                );
            }
        }
    }
    Ok(())
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

fn forwarded_ports_on(w: &World, vpn: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = w
        .on(vpn)
        .iter()
        .filter(|e| e.forwarded)
        .map(|e| e.p2p_port)
        .collect();
    ports.sort_unstable();
    ports
}

#[test]
fn every_forwarded_port_gets_its_own_engine_first() {
    let now = Instant::now();
    let lanes = [lane("g1", "id1", up([40002, 40001]), (19000, 19099))];
    let mut w = World::new();
    let rounds = converge(&mut w, &lanes, 3, now);
    let first: Vec<(bool, u16)> = rounds[0]
        .iter()
        .filter_map(|a| match a {
            Action::Create {
                forwarded, ports, ..
            } => Some((*forwarded, ports.p2p)),
            _ => None,
        })
        .collect();
    assert_eq!(
        &first[..2],
        &[(true, 40001), (true, 40002)],
        "both forwarded engines before any ordinary one, lowest port first: {first:?}"
    );
    assert_eq!(forwarded_ports_on(&w, "g1"), vec![40001, 40002]);
    assert_eq!(w.engines.len(), 3, "two forwarded and one ordinary");
}

#[test]
fn a_port_that_goes_away_loses_its_engine_and_the_others_are_untouched() {
    let now = Instant::now();
    let two = [lane("g1", "id1", up([40001, 40002]), (19000, 19099))];
    let mut w = World::new();
    converge(&mut w, &two, 3, now);
    let keep = w
        .engines
        .iter()
        .find(|e| e.forwarded && e.p2p_port == 40001)
        .unwrap()
        .clone();
    let one = [lane("g1", "id1", up(Some(40001)), (19000, 19099))];
    let actions = reconcile(&input(now, &one, &w.engines, 3));
    let gone = w
        .engines
        .iter()
        .find(|e| e.p2p_port == 40002)
        .unwrap()
        .name
        .clone();
    assert_eq!(
        actions,
        vec![Action::Remove {
            name: gone,
            reason: RemoveReason::PortMismatch
        }]
    );
    w.apply(&actions, now);
    converge(&mut w, &one, 3, now);
    assert_eq!(forwarded_ports_on(&w, "g1"), vec![40001]);
    assert!(
        w.engines.contains(&keep),
        "the kept port's engine untouched"
    );
    assert_eq!(
        w.engines.len(),
        3,
        "the pool refilled with an ordinary engine"
    );
}

#[test]
fn an_unchanged_set_in_another_order_is_no_change_and_a_new_port_adds_one_engine() {
    let now = Instant::now();
    let mut w = World::new();
    converge(
        &mut w,
        &[lane("g1", "id1", up([40001, 40002]), (19000, 19099))],
        2,
        now,
    );
    let before = w.engines.clone();
    let same = [lane("g1", "id1", up([40002, 40001]), (19000, 19099))];
    assert!(reconcile(&input(now, &same, &w.engines, 2)).is_empty());
    let three = [lane("g1", "id1", up([40001, 40002, 40003]), (19000, 19099))];
    converge(&mut w, &three, 2, now);
    assert_eq!(forwarded_ports_on(&w, "g1"), vec![40001, 40002, 40003]);
    assert!(before.iter().all(|e| w.engines.contains(e)));
}

#[test]
fn max_replicas_smaller_than_the_ports_serves_the_lowest_ports() {
    let now = Instant::now();
    let lanes = [
        lane("g1", "id1", up([40003, 40001, 40002]), (19000, 19099)),
        lane("g2", "id2", up([50002, 50001]), (19500, 19599)),
    ];
    let mut w = World::new();
    for _ in 0..6 {
        let mut inp = input(now, &lanes, &w.engines, 2);
        inp.max_replicas = 4;
        assert_eq!(forwarded_cap(&inp), 2);
        let actions = reconcile(&inp);
        if actions.is_empty() {
            break;
        }
        w.apply(&actions, now);
    }
    assert_eq!(forwarded_ports_on(&w, "g1"), vec![40001, 40002]);
    assert_eq!(forwarded_ports_on(&w, "g2"), vec![50001, 50002]);
    assert_eq!(w.engines.len(), 4, "within max_replicas");
}

#[test]
fn a_forwarded_engine_whose_block_holds_another_forwarded_port_makes_way() {
    let now = Instant::now();
    let mut w = World::new();
    converge(
        &mut w,
        &[lane("g1", "id1", up(Some(40001)), (19000, 19099))],
        1,
        now,
    );
    let fw = w.engines[0].clone();
    assert_eq!((fw.http_port, fw.p2p_port), (19000, 40001));
    // The provider adds 19001: the forwarded engine's HTTPS port.
    let lanes = [lane("g1", "id1", up([40001, 19001]), (19000, 19099))];
    let actions = reconcile(&input(now, &lanes, &w.engines, 1));
    assert!(
        actions.contains(&Action::Remove {
            name: fw.name.clone(),
            reason: RemoveReason::PortClash
        }),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Create { ports, .. } if ports.p2p == 40001 || ports.p2p == 19001)),
        "nothing takes either port while the old engine holds both: {actions:?}"
    );
    w.apply(&actions, now);
    converge(&mut w, &lanes, 1, now);
    assert_eq!(forwarded_ports_on(&w, "g1"), vec![19001, 40001]);
    assert!(w.port_clash().is_none());
}
