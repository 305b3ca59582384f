//! Whether a provisioning request can be served now: the one decision behind both
//! `POST /provision/acestream` (which answers it) and `/orchestrator/status` (which predicts it as
//! `can_provision`), so the two can never disagree.

use std::time::Duration;

use tokio::time::Instant;

use crate::core::breaker::BreakerState;

/// The facts the decision needs, as the Supervisor holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProvisionFacts {
    /// The first listing and reconcile are done.
    pub ready: bool,
    /// Some lane can take a new engine now (`plan::placeable`).
    pub placeable: bool,
    pub breaker: BreakerState,
    /// Engines that count toward the pool (creating, starting or ready).
    pub counted: u32,
    /// The largest pool size a pending provisioning request already asked for.
    pub asked: u32,
    pub max_replicas: u32,
    pub now: Instant,
}

/// Why a provisioning request is refused (the 503 `detail.code`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No VPN can take engines now.
    VpnDisconnected { recovery_eta_seconds: Option<u64> },
    /// Engine creation keeps failing; creation is paused.
    CircuitBreaker { retry_after_seconds: u64 },
    /// `max_replicas` reached (counting engines other requests already asked for).
    MaxCapacity,
    /// Taken, but no new engine reached the asked stage within `answer_within`.
    TimedOut { waited_seconds: u64 },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::VpnDisconnected { .. } => "vpn_disconnected",
            Refusal::CircuitBreaker { .. } => "circuit_breaker",
            Refusal::MaxCapacity => "max_capacity",
            Refusal::TimedOut { .. } => "provisioning_timeout",
        }
    }
}

/// How long a taken request may wait for its engine before the Supervisor answers it
/// `TimedOut`: a container start (a Docker create and start, each within `call_timeout`, with
/// room for one retry), plus the engine's own start-up when the client asked to wait for its API.
/// The API waits a little longer than this, so the Supervisor's answer always comes first.
pub fn answer_within(
    wait_ready: bool,
    call_timeout: Duration,
    ready_timeout: Duration,
) -> Duration {
    let started = call_timeout * 2 + Duration::from_secs(5);
    if wait_ready {
        started + ready_timeout
    } else {
        started
    }
}

/// `Ok(floor)`: the request is taken and needs the pool at `floor` engines; `Err`: why not.
///
/// An open breaker whose cool-down has passed lets the request through: the next reconcile
/// sends the probe creation that serves it.
pub fn decide(f: &ProvisionFacts) -> Result<u32, Refusal> {
    if !f.ready || !f.placeable {
        return Err(Refusal::VpnDisconnected {
            recovery_eta_seconds: None,
        });
    }
    let breaker_blocks = match f.breaker {
        BreakerState::Closed => false,
        BreakerState::Open { until } => f.now < until,
        BreakerState::HalfOpen => true,
    };
    if breaker_blocks {
        let retry_after_seconds = match f.breaker {
            BreakerState::Open { until } => until.saturating_duration_since(f.now).as_secs().max(1),
            _ => 1,
        };
        return Err(Refusal::CircuitBreaker {
            retry_after_seconds,
        });
    }
    let floor = f.counted.max(f.asked) + 1;
    if floor > f.max_replicas {
        return Err(Refusal::MaxCapacity);
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn facts(now: Instant) -> ProvisionFacts {
        ProvisionFacts {
            ready: true,
            placeable: true,
            breaker: BreakerState::Closed,
            counted: 1,
            asked: 0,
            max_replicas: 3,
            now,
        }
    }

    #[test]
    fn takes_a_request_below_max_and_names_the_floor() {
        let now = Instant::now();
        assert_eq!(decide(&facts(now)), Ok(2));
        // A pending request already asked for 2: this one needs 3.
        assert_eq!(
            decide(&ProvisionFacts {
                asked: 2,
                ..facts(now)
            }),
            Ok(3)
        );
    }

    #[test]
    fn at_max_replicas_refuses_even_with_idle_engines() {
        let now = Instant::now();
        let f = ProvisionFacts {
            counted: 3,
            ..facts(now)
        };
        assert_eq!(decide(&f), Err(Refusal::MaxCapacity));
        let f = ProvisionFacts {
            counted: 2,
            asked: 3,
            ..facts(now)
        };
        assert_eq!(decide(&f), Err(Refusal::MaxCapacity));
    }

    #[test]
    fn no_placeable_lane_or_not_ready_is_vpn_disconnected() {
        let now = Instant::now();
        for f in [
            ProvisionFacts {
                placeable: false,
                ..facts(now)
            },
            ProvisionFacts {
                ready: false,
                ..facts(now)
            },
        ] {
            assert_eq!(decide(&f).unwrap_err().code(), "vpn_disconnected");
        }
    }

    #[test]
    fn breaker_open_refuses_until_its_cool_down_passed() {
        let now = Instant::now();
        let open = ProvisionFacts {
            breaker: BreakerState::Open {
                until: now + Duration::from_secs(42),
            },
            ..facts(now)
        };
        assert_eq!(
            decide(&open),
            Err(Refusal::CircuitBreaker {
                retry_after_seconds: 42
            })
        );
        let passed = ProvisionFacts {
            now: now + Duration::from_secs(43),
            ..open
        };
        assert_eq!(decide(&passed), Ok(2));
        let half = ProvisionFacts {
            breaker: BreakerState::HalfOpen,
            ..facts(now)
        };
        assert_eq!(decide(&half).unwrap_err().code(), "circuit_breaker");
    }

    proptest! {
        /// A taken request never pushes the pool above `max_replicas`, and the VPN check comes
        /// before the others (a proxy must wait for the VPN, not retry on capacity).
        #[test]
        fn floor_within_max_and_vpn_first(
            ready: bool, placeable: bool, counted in 0u32..8, asked in 0u32..8,
            max in 1u32..8, open: bool,
        ) {
            let now = Instant::now();
            let f = ProvisionFacts {
                ready, placeable, counted, asked, max_replicas: max, now,
                breaker: if open { BreakerState::Open { until: now + Duration::from_secs(5) } }
                         else { BreakerState::Closed },
            };
            match decide(&f) {
                Ok(floor) => {
                    prop_assert!(floor <= max);
                    prop_assert!(floor > counted && floor > asked);
                }
                Err(Refusal::VpnDisconnected { .. }) => prop_assert!(!ready || !placeable),
                Err(_) => prop_assert!(ready && placeable),
            }
        }
    }
}
