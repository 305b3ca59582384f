//! VPN readiness derived from Docker state and the control server's answer (BEHAVIOR.md).

use crate::clients::{ControlAnswer, ControlError};
use crate::core::model::Readiness;
use crate::runtime::DockerHealth;

/// What Docker says of the VPN container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerFacts {
    pub running: bool,
    /// `None` = no healthcheck.
    pub health: Option<DockerHealth>,
}

/// Derives readiness. `container` None = no such container; `control` None = not asked yet.
/// The port in `Up` is the raw reported port (0 already mapped to `None`).
pub fn readiness(
    container: Option<&ContainerFacts>,
    control: Option<&Result<ControlAnswer, ControlError>>,
) -> Readiness {
    let _ = (container, control);
    todo!("cores helper")
}
