//! VPN readiness derived from Docker state and the control server's answer (docs/behavior.md).
//! Owns the plain facts it reads (`DockerHealth`, `TunnelStatus`, `ControlAnswer`,
//! `ControlError`); `runtime` and `clients` re-export them, so core imports neither.

use crate::core::model::Readiness;
use crate::core::port_set::PortSet;

/// Docker health of a container with a healthcheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerHealth {
    Starting,
    Healthy,
    Unhealthy,
}

/// Tunnel status as the Gluetun control server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelStatus {
    Starting,
    Running,
    Stopping,
    Stopped,
    Crashed,
    Completed,
    Other(String),
}

impl TunnelStatus {
    pub fn parse(s: &str) -> TunnelStatus {
        match s {
            "starting" => TunnelStatus::Starting,
            "running" => TunnelStatus::Running,
            "stopping" => TunnelStatus::Stopping,
            "stopped" => TunnelStatus::Stopped,
            "crashed" => TunnelStatus::Crashed,
            "completed" => TunnelStatus::Completed,
            other => TunnelStatus::Other(other.to_string()),
        }
    }
}

/// One answer of the control server: tunnel status and forwarded ports (empty = not known yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlAnswer {
    pub status: TunnelStatus,
    pub forwarded_ports: PortSet,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// 401: wrong or missing API key. A configuration error, never "VPN down".
    #[error("control server refused the API key (401): check the key and the auth role")]
    Unauthorized,
    #[error("control server unreachable: {0}")]
    Unreachable(String),
    #[error("control server answered unexpectedly: {0}")]
    Protocol(String),
}

/// What Docker says of the VPN container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerFacts {
    pub running: bool,
    /// `None` = no healthcheck.
    pub health: Option<DockerHealth>,
}

/// Derives readiness. `container` None = no such container; `control` None = not asked yet.
/// The ports in `Up` are the raw reported ports (zeros already dropped).
///
/// The rules apply in this order, the first match wins:
/// 1. no container, or not running -> `Down`;
/// 2. Docker health `starting` -> `Starting` (never healthy, whatever the control server says);
/// 3. control server answered 401 -> `Misconfigured`;
/// 4. Docker health `unhealthy` -> `Degraded`;
/// 5. control server not asked yet, unreachable or answering garbage -> `Starting`;
/// 6. control server reports a tunnel status other than `running` -> `Degraded`;
/// 7. otherwise (health `healthy` or no healthcheck, tunnel `running`) -> `Up`.
pub fn readiness(
    container: Option<&ContainerFacts>,
    control: Option<&Result<ControlAnswer, ControlError>>,
) -> Readiness {
    let Some(facts) = container.filter(|c| c.running) else {
        return Readiness::Down;
    };
    if facts.health == Some(DockerHealth::Starting) {
        return Readiness::Starting;
    }
    if let Some(Err(ControlError::Unauthorized)) = control {
        return Readiness::Misconfigured;
    }
    if facts.health == Some(DockerHealth::Unhealthy) {
        return Readiness::Degraded;
    }
    match control {
        None | Some(Err(_)) => Readiness::Starting,
        Some(Ok(answer)) if answer.status != TunnelStatus::Running => Readiness::Degraded,
        Some(Ok(answer)) => Readiness::Up {
            forwarded_ports: answer.forwarded_ports,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: TunnelStatus, port: Option<u16>) -> Result<ControlAnswer, ControlError> {
        Ok(ControlAnswer {
            status,
            forwarded_ports: PortSet::from(port),
        })
    }

    fn running(health: Option<DockerHealth>) -> ContainerFacts {
        ContainerFacts {
            running: true,
            health,
        }
    }

    /// Every combination of container facts and control answers, against the rule table.
    #[test]
    fn exhaustive_table() {
        let containers: Vec<Option<ContainerFacts>> = {
            let mut v = vec![None];
            for running in [false, true] {
                for health in [
                    None,
                    Some(DockerHealth::Starting),
                    Some(DockerHealth::Healthy),
                    Some(DockerHealth::Unhealthy),
                ] {
                    v.push(Some(ContainerFacts { running, health }));
                }
            }
            v
        };
        let statuses = [
            TunnelStatus::Starting,
            TunnelStatus::Running,
            TunnelStatus::Stopping,
            TunnelStatus::Stopped,
            TunnelStatus::Crashed,
            TunnelStatus::Completed,
            TunnelStatus::Other("weird".into()),
        ];
        let controls: Vec<Option<Result<ControlAnswer, ControlError>>> = {
            let mut v = vec![
                None,
                Some(Err(ControlError::Unauthorized)),
                Some(Err(ControlError::Unreachable("timeout".into()))),
                Some(Err(ControlError::Protocol("bad json".into()))),
            ];
            for status in &statuses {
                for port in [None, Some(0), Some(34817)] {
                    v.push(Some(ok(status.clone(), port)));
                }
            }
            v
        };

        let mut cases = 0;
        for c in &containers {
            for ctl in &controls {
                let got = readiness(c.as_ref(), ctl.as_ref());
                let want = expected(c.as_ref(), ctl.as_ref());
                assert_eq!(got, want, "container {c:?} control {ctl:?}");
                cases += 1;
            }
        }
        assert_eq!(cases, 9 * 25);
    }

    /// The table written out case by case (independently of the implementation's rule order).
    fn expected(
        c: Option<&ContainerFacts>,
        ctl: Option<&Result<ControlAnswer, ControlError>>,
    ) -> Readiness {
        use DockerHealth::*;
        let Some(c) = c else { return Readiness::Down };
        if !c.running {
            return Readiness::Down;
        }
        match (c.health, ctl) {
            (Some(Starting), _) => Readiness::Starting,
            (_, Some(Err(ControlError::Unauthorized))) => Readiness::Misconfigured,
            (Some(Unhealthy), _) => Readiness::Degraded,
            (_, None) => Readiness::Starting,
            (_, Some(Err(ControlError::Unreachable(_)))) => Readiness::Starting,
            (_, Some(Err(ControlError::Protocol(_)))) => Readiness::Starting,
            (Some(Healthy) | None, Some(Ok(a))) => match a.status {
                TunnelStatus::Running => Readiness::Up {
                    forwarded_ports: PortSet::new(a.forwarded_ports.iter().filter(|&p| p != 0)),
                },
                _ => Readiness::Degraded,
            },
        }
    }

    #[test]
    fn docker_starting_is_not_healthy() {
        // Upstream's bug: `starting` treated as healthy, VPN "recovered" before any tunnel.
        let r = readiness(
            Some(&running(Some(DockerHealth::Starting))),
            Some(&ok(TunnelStatus::Running, Some(5000))),
        );
        assert_eq!(r, Readiness::Starting);
    }

    #[test]
    fn up_with_and_without_port() {
        let healthy = running(Some(DockerHealth::Healthy));
        assert_eq!(
            readiness(
                Some(&healthy),
                Some(&ok(TunnelStatus::Running, Some(34817)))
            ),
            Readiness::up(Some(34817))
        );
        assert_eq!(
            readiness(Some(&healthy), Some(&ok(TunnelStatus::Running, Some(0)))),
            Readiness::up(None)
        );
        assert_eq!(
            readiness(Some(&running(None)), Some(&ok(TunnelStatus::Running, None))),
            Readiness::up(None)
        );
    }

    #[test]
    fn up_with_several_ports_keeps_them_all() {
        let answer = Ok(ControlAnswer {
            status: TunnelStatus::Running,
            forwarded_ports: PortSet::new([9876, 5678]),
        });
        assert_eq!(
            readiness(Some(&running(None)), Some(&answer)),
            Readiness::up(PortSet::new([5678, 9876]))
        );
    }

    #[test]
    fn unauthorized_is_misconfigured_not_down() {
        let r = readiness(Some(&running(None)), Some(&Err(ControlError::Unauthorized)));
        assert_eq!(r, Readiness::Misconfigured);
        // ...but a stopped container is Down whatever the control server says.
        let stopped = ContainerFacts {
            running: false,
            health: None,
        };
        assert_eq!(
            readiness(Some(&stopped), Some(&Err(ControlError::Unauthorized))),
            Readiness::Down
        );
    }

    #[test]
    fn tunnel_not_running_is_degraded() {
        for status in [
            TunnelStatus::Stopped,
            TunnelStatus::Crashed,
            TunnelStatus::Starting,
        ] {
            assert_eq!(
                readiness(Some(&running(None)), Some(&ok(status, Some(1)))),
                Readiness::Degraded
            );
        }
    }
}
