//! Joint properties of the cores as the VpnMonitor composes them: per-VPN `VpnWatch` machines
//! feeding one `Emergency` machine. Test-only; each core's own properties live in its module.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use crate::core::emergency::{Emergency, EmergencyState, VpnHealth};
use crate::core::model::Readiness;
use crate::core::vpn_watch::{Observation, VpnEvent, VpnWatch, WatchTimings};

const NAMES: [&str; 3] = ["gluetun", "gluetun_2", "gluetun_3"];

fn timings() -> WatchTimings {
    WatchTimings {
        port_settle: Duration::from_secs(5),
        tunnel_grace: Duration::from_secs(60),
        port_wait: Some(Duration::from_secs(30)),
        force_restart_after: None,
    }
}

/// The facts the VpnMonitor hands the emergency machine, read from the watches.
fn health(watches: &[VpnWatch]) -> Vec<VpnHealth> {
    watches
        .iter()
        .zip(NAMES)
        .map(|(w, name)| VpnHealth {
            name: name.to_string(),
            failed: w.failed(),
            up: w.readiness().is_up(),
        })
        .collect()
}

fn obs(id: &str, started_at: &str, readiness: Readiness) -> Observation {
    Observation {
        container_id: Some(id.to_string()),
        started_at: Some(started_at.to_string()),
        readiness,
    }
}

/// Incident A through both machines: one emergency entered, one exited, no port change.
#[test]
fn incident_a_through_watch_and_emergency() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut watches = vec![VpnWatch::new(timings()), VpnWatch::new(timings())];
    let mut emergency = Emergency::new();
    let mut transitions = Vec::new();
    let mut events = Vec::new();

    let mut step = |watches: &mut Vec<VpnWatch>, s: u64, which: usize, o: Option<Observation>| {
        let w = &mut watches[which];
        match o {
            Some(o) => events.extend(w.observe(at(s), o)),
            None => events.extend(w.tick(at(s))),
        }
        transitions.extend(emergency.update(at(s), &health(watches)));
    };

    step(
        &mut watches,
        0,
        0,
        Some(obs("g1", "s1", Readiness::up(Some(55747)))),
    );
    step(
        &mut watches,
        0,
        1,
        Some(obs("g2", "s1", Readiness::up(Some(40000)))),
    );
    step(&mut watches, 10, 0, Some(obs("g1", "s1", Readiness::Down)));
    for s in 11..86 {
        step(&mut watches, s, 0, Some(obs("g1", "s1", Readiness::Down)));
        step(&mut watches, s, 1, None);
    }
    step(
        &mut watches,
        86,
        0,
        Some(obs("g1", "s2", Readiness::Starting)),
    );
    step(
        &mut watches,
        88,
        0,
        Some(obs("g1", "s2", Readiness::up(None))),
    );
    for s in 89..98 {
        step(
            &mut watches,
            s,
            0,
            Some(obs("g1", "s2", Readiness::up(Some(0)))),
        );
    }
    for s in 98..200 {
        step(
            &mut watches,
            s,
            0,
            Some(obs("g1", "s2", Readiness::up(Some(34817)))),
        );
        step(&mut watches, s, 1, None);
    }

    let kinds: Vec<_> = transitions
        .iter()
        .map(|t| (t.from.label(), t.to.label()))
        .collect();
    assert_eq!(
        kinds,
        vec![("normal", "emergency"), ("emergency", "normal")]
    );
    assert_eq!(
        transitions[0].to,
        EmergencyState::Emergency {
            failed: vec!["gluetun".into()],
            healthy: vec!["gluetun_2".into()],
            since: at(10),
        }
    );
    assert_eq!(transitions[1].from.label(), "emergency");
    assert!(!events.iter().any(|e| matches!(e, VpnEvent::PortChanged(_))));
    assert_eq!(watches[0].readiness(), Readiness::up(Some(34817)));
    assert_eq!(watches[1].readiness(), Readiness::up(Some(40000)));
}

#[derive(Clone, Debug)]
enum Step {
    See {
        vpn: usize,
        dt: u64,
        id: u8,
        started: u8,
        readiness: Readiness,
    },
    Tick {
        vpn: usize,
        dt: u64,
    },
}

fn readiness_strategy() -> impl Strategy<Value = Readiness> {
    prop_oneof![
        2 => Just(Readiness::Down),
        1 => Just(Readiness::Starting),
        2 => Just(Readiness::Degraded),
        1 => Just(Readiness::Misconfigured),
        5 => prop_oneof![Just(None), (1u16..4).prop_map(Some)]
            .prop_map(Readiness::up),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..3, 0u64..30_000, prop_oneof![6 => Just(0u8), 1 => 0u8..2],
              prop_oneof![6 => Just(0u8), 1 => 0u8..2], readiness_strategy())
            .prop_map(|(vpn, dt, id, started, readiness)| Step::See { vpn, dt, id, started, readiness }),
        1 => (0usize..3, 0u64..30_000).prop_map(|(vpn, dt)| Step::Tick { vpn, dt }),
    ]
}

proptest! {
    /// After every step, the emergency state is exactly what the watches say, never points at a
    /// failed or non-Up VPN as healthy, and each Failed / Recovered moves its VPN in or out of the
    /// failed list in the same step.
    #[test]
    fn emergency_follows_the_watches(
        vpn_count in 1usize..=3,
        steps in proptest::collection::vec(step_strategy(), 0..100),
    ) {
        let mut now = Instant::now();
        let mut watches: Vec<VpnWatch> = (0..vpn_count).map(|_| VpnWatch::new(timings())).collect();
        let mut emergency = Emergency::new();
        for step in steps {
            let (vpn, events) = match step {
                Step::See { vpn, dt, id, started, readiness } => {
                    let vpn = vpn % vpn_count;
                    now += Duration::from_millis(dt);
                    let o = obs(&format!("c{vpn}-{id}"), &format!("s{started}"), readiness);
                    (vpn, watches[vpn].observe(now, o))
                }
                Step::Tick { vpn, dt } => {
                    let vpn = vpn % vpn_count;
                    now += Duration::from_millis(dt);
                    (vpn, watches[vpn].tick(now))
                }
            };
            let before = emergency.state().clone();
            let transition = emergency.update(now, &health(&watches));
            let state = emergency.state().clone();
            match &transition {
                Some(t) => {
                    prop_assert_eq!(&t.from, &before);
                    prop_assert_eq!(&t.to, &state);
                    prop_assert_ne!(&before, &state);
                }
                None => prop_assert_eq!(&before, &state),
            }

            let failed_names: Vec<String> = watches
                .iter()
                .zip(NAMES)
                .filter(|(w, _)| w.failed())
                .map(|(_, n)| n.to_string())
                .collect();
            let (failed, healthy): (Vec<String>, Vec<String>) = match &state {
                EmergencyState::Normal => (vec![], vec![]),
                EmergencyState::Emergency { failed, healthy, .. } => (failed.clone(), healthy.clone()),
                EmergencyState::Outage { failed, .. } => (failed.clone(), vec![]),
            };
            prop_assert_eq!(&failed, &failed_names);
            for name in &healthy {
                let i = NAMES.iter().position(|n| n == name).unwrap();
                prop_assert!(!watches[i].failed(), "{} failed but listed healthy", name);
                prop_assert!(watches[i].readiness().is_up(), "{} not Up but listed healthy", name);
            }
            if let EmergencyState::Outage { .. } = state {
                prop_assert!(watches.iter().all(|w| !w.readiness().is_up() || w.failed()));
            }

            // The last Failed / Recovered of this step decides where the VPN is now.
            let name = NAMES[vpn].to_string();
            match events.iter().rev().find(|e| !matches!(e, VpnEvent::PortChanged(_))) {
                Some(VpnEvent::Failed { .. }) => prop_assert!(failed.contains(&name)),
                Some(VpnEvent::Recovered { .. }) => prop_assert!(!failed.contains(&name)),
                _ => {}
            }
        }
    }
}
