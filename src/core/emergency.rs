//! The emergency-mode state machine over all VPNs: Normal / Emergency / Outage, re-evaluated from
//! fresh facts every time (never from a stale cache).
//!
//! The state is a pure function of the latest facts: failed = VPNs with `failed`, healthy = VPNs
//! `up` and not failed (a VPN neither failed nor up, e.g. starting or degraded within its grace,
//! is in neither list). No failed VPN -> `Normal`; failed and healthy ones -> `Emergency`; failed
//! and no healthy one -> `Outage`. Names are sorted and deduplicated, so the lists are sets and the
//! order in which the facts arrive never looks like a change. `since` is when the current kind was
//! entered: it is kept while only the lists change and reset when the kind changes.

use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmergencyState {
    /// No VPN failed.
    Normal,
    /// Some VPNs failed while others are Up.
    Emergency {
        failed: Vec<String>,
        healthy: Vec<String>,
        since: Instant,
    },
    /// VPNs failed and none is Up: nothing can be served.
    Outage { failed: Vec<String>, since: Instant },
}

impl EmergencyState {
    pub fn label(&self) -> &'static str {
        match self {
            EmergencyState::Normal => "normal",
            EmergencyState::Emergency { .. } => "emergency",
            EmergencyState::Outage { .. } => "outage",
        }
    }
}

/// The facts of one VPN the machine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpnHealth {
    pub name: String,
    /// `Failed` emitted, no `Recovered` yet.
    pub failed: bool,
    pub up: bool,
}

/// A change of state (kind, or the set of failed or healthy VPNs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: EmergencyState,
    pub to: EmergencyState,
}

#[derive(Clone, Debug)]
pub struct Emergency {
    state: EmergencyState,
}

impl Emergency {
    pub fn new() -> Self {
        Emergency {
            state: EmergencyState::Normal,
        }
    }

    /// Starts in a state known before (a restarted owner resuming): the next `update` from the
    /// same facts is no transition, so nothing is entered or counted twice and `since` is kept.
    pub fn resume(state: EmergencyState) -> Self {
        Emergency { state }
    }

    pub fn state(&self) -> &EmergencyState {
        &self.state
    }

    /// Re-evaluates from the fresh facts of every VPN; `Some` only when the state changed.
    pub fn update(&mut self, now: Instant, vpns: &[VpnHealth]) -> Option<Transition> {
        let names = |keep: fn(&VpnHealth) -> bool| {
            let mut v: Vec<String> = vpns
                .iter()
                .filter(|h| keep(h))
                .map(|h| h.name.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let failed = names(|h| h.failed);
        let mut healthy = names(|h| h.up && !h.failed);
        // A name reported twice with conflicting facts counts as failed: never point at it.
        healthy.retain(|n| failed.binary_search(n).is_err());

        let next = if failed.is_empty() {
            EmergencyState::Normal
        } else if healthy.is_empty() {
            let since = match self.state {
                EmergencyState::Outage { since, .. } => since,
                _ => now,
            };
            EmergencyState::Outage { failed, since }
        } else {
            let since = match self.state {
                EmergencyState::Emergency { since, .. } => since,
                _ => now,
            };
            EmergencyState::Emergency {
                failed,
                healthy,
                since,
            }
        };
        if next == self.state {
            return None;
        }
        let from = std::mem::replace(&mut self.state, next);
        Some(Transition {
            from,
            to: self.state.clone(),
        })
    }
}

impl Default for Emergency {
    fn default() -> Self {
        Emergency::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn vpn(name: &str, failed: bool, up: bool) -> VpnHealth {
        VpnHealth {
            name: name.into(),
            failed,
            up,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn starts_normal_and_stays_normal_without_failures() {
        let t0 = Instant::now();
        let mut e = Emergency::new();
        assert_eq!(e.state(), &EmergencyState::Normal);
        assert_eq!(e.update(t0, &[]), None);
        assert_eq!(
            e.update(t0, &[vpn("a", false, true), vpn("b", false, true)]),
            None
        );
        // Starting / degraded within grace: neither failed nor healthy, still Normal.
        assert_eq!(
            e.update(t0, &[vpn("a", false, false), vpn("b", false, false)]),
            None
        );
    }

    /// Incident A at the emergency level, then the healthy VPN failing during the emergency.
    #[test]
    fn enter_once_escalate_and_come_back() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut e = Emergency::new();
        let both_up = [vpn("gluetun", false, true), vpn("gluetun_2", false, true)];
        assert_eq!(e.update(at(0), &both_up), None);

        let one_failed = [vpn("gluetun", true, false), vpn("gluetun_2", false, true)];
        let t = e.update(at(1), &one_failed).expect("emergency entered");
        assert_eq!(t.from, EmergencyState::Normal);
        let emergency = EmergencyState::Emergency {
            failed: names(&["gluetun"]),
            healthy: names(&["gluetun_2"]),
            since: at(1),
        };
        assert_eq!(t.to, emergency);
        // Same facts again, later: no repeat, since kept.
        for s in 2..50 {
            assert_eq!(e.update(at(s), &one_failed), None);
        }
        assert_eq!(e.state(), &emergency);

        // The healthy one fails too: Outage, re-evaluated from these facts, never a stale
        // "healthy: gluetun_2".
        let both_failed = [vpn("gluetun", true, false), vpn("gluetun_2", true, false)];
        let t = e.update(at(50), &both_failed).expect("outage");
        assert_eq!(
            t.to,
            EmergencyState::Outage {
                failed: names(&["gluetun", "gluetun_2"]),
                since: at(50)
            }
        );
        assert_eq!(e.update(at(51), &both_failed), None);

        // One comes back: Emergency again, with a fresh since.
        let back = [vpn("gluetun", false, true), vpn("gluetun_2", true, false)];
        let t = e.update(at(60), &back).expect("emergency again");
        assert_eq!(
            t.to,
            EmergencyState::Emergency {
                failed: names(&["gluetun_2"]),
                healthy: names(&["gluetun"]),
                since: at(60),
            }
        );

        // All back: Normal, once.
        let t = e.update(at(76), &both_up).expect("normal");
        assert_eq!(t.to, EmergencyState::Normal);
        assert_eq!(e.update(at(77), &both_up), None);
    }

    #[test]
    fn set_change_within_a_kind_keeps_since() {
        let t0 = Instant::now();
        let mut e = Emergency::new();
        let abc = |fa, fb, fc| [vpn("a", fa, !fa), vpn("b", fb, !fb), vpn("c", fc, !fc)];
        e.update(t0, &abc(true, false, false)).unwrap();
        let later = t0 + Duration::from_secs(10);
        let t = e
            .update(later, &abc(true, true, false))
            .expect("failed set changed");
        assert_eq!(
            t.to,
            EmergencyState::Emergency {
                failed: names(&["a", "b"]),
                healthy: names(&["c"]),
                since: t0,
            }
        );
        // A healthy VPN that is merely starting leaves the healthy list: also a transition.
        let t = e
            .update(
                later,
                &[
                    vpn("a", true, false),
                    vpn("b", true, false),
                    vpn("c", false, false),
                ],
            )
            .expect("healthy set changed");
        assert_eq!(t.to.label(), "outage");
    }

    #[test]
    fn order_and_duplicates_of_facts_do_not_matter() {
        let t0 = Instant::now();
        let mut e = Emergency::new();
        e.update(
            t0,
            &[
                vpn("b", true, false),
                vpn("a", false, true),
                vpn("c", true, false),
            ],
        );
        assert_eq!(
            e.update(
                t0,
                &[
                    vpn("c", true, false),
                    vpn("a", false, true),
                    vpn("b", true, false)
                ]
            ),
            None
        );
        assert_eq!(
            e.state(),
            &EmergencyState::Emergency {
                failed: names(&["b", "c"]),
                healthy: names(&["a"]),
                since: t0
            }
        );
    }

    #[test]
    fn failed_is_never_healthy_even_if_reported_up() {
        // Defensive: a fact with both flags (cannot come from VpnWatch) counts as failed only.
        let t0 = Instant::now();
        let mut e = Emergency::new();
        e.update(t0, &[vpn("a", true, true)]);
        assert_eq!(
            e.state(),
            &EmergencyState::Outage {
                failed: names(&["a"]),
                since: t0
            }
        );
    }

    fn facts() -> impl Strategy<Value = Vec<VpnHealth>> {
        proptest::collection::vec((0usize..4, any::<bool>(), any::<bool>()), 0..5).prop_map(|v| {
            v.into_iter()
                .map(|(i, failed, up)| vpn(["a", "b", "c", "d"][i], failed, up))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn state_always_matches_the_last_facts(
            steps in proptest::collection::vec((0u64..100, facts()), 1..40),
        ) {
            let mut now = Instant::now();
            let mut e = Emergency::new();
            let mut kind_since = now;
            for (dt, vpns) in steps {
                now += Duration::from_secs(dt);
                let before = e.state().clone();
                let t = e.update(now, &vpns);
                let state = e.state().clone();

                let mut failed: Vec<String> =
                    vpns.iter().filter(|v| v.failed).map(|v| v.name.clone()).collect();
                failed.sort();
                failed.dedup();
                let mut healthy: Vec<String> = vpns
                    .iter()
                    .filter(|v| v.up && !v.failed && !failed.contains(&v.name))
                    .map(|v| v.name.clone())
                    .collect();
                healthy.sort();
                healthy.dedup();

                if state.label() != before.label() {
                    kind_since = now;
                }
                match &state {
                    EmergencyState::Normal => prop_assert!(failed.is_empty()),
                    EmergencyState::Emergency { failed: f, healthy: h, since } => {
                        prop_assert_eq!(f, &failed);
                        prop_assert_eq!(h, &healthy);
                        prop_assert!(!f.is_empty() && !h.is_empty());
                        prop_assert!(h.iter().all(|n| !f.contains(n)));
                        prop_assert_eq!(*since, kind_since);
                    }
                    EmergencyState::Outage { failed: f, since } => {
                        prop_assert_eq!(f, &failed);
                        prop_assert!(!f.is_empty() && healthy.is_empty());
                        prop_assert_eq!(*since, kind_since);
                    }
                }
                match t {
                    Some(t) => {
                        prop_assert_ne!(&t.from, &t.to);
                        prop_assert_eq!(t.from, before);
                        prop_assert_eq!(t.to, state);
                    }
                    None => prop_assert_eq!(before, state),
                }
            }
        }
    }
}
