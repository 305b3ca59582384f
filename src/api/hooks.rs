//! `POST /hooks/gluetun/{container}/ports`: the route Gluetun's `VPN_PORT_FORWARDING_UP_COMMAND`
//! and `VPN_PORT_FORWARDING_DOWN_COMMAND` call when its port forwarding comes up or goes (docs/api.md).
//!
//! The hook is only a trigger: its body is ignored (never trusted as the port); the VpnMonitor
//! looks at the VPN at once and reads the port from its control server, then polls it fast for a
//! while. Authenticated like the other mutating routes. 202 for a configured VPN container, 404
//! for any other name.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use crate::actors::messages::SupervisorMsg;

/// The answer of an accepted hook.
#[derive(Debug, Serialize)]
pub struct HookAccepted {
    pub vpn: String,
    /// What acevisor does now.
    pub action: &'static str,
}

/// `POST /hooks/gluetun/{container}/ports`.
pub async fn gluetun_ports(
    State(ctx): State<ApiContext>,
    ApiPath(container): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<HookAccepted>)> {
    let vpn = container.clone();
    let known = super::ask(&ctx.supervisor, ctx.call_timeout, "supervisor", |reply| {
        SupervisorMsg::PortHook { vpn, reply }
    })
    .await?;
    if !known {
        return Err(ApiError::NotFound(format!(
            "{container:?} is not a configured [[vpn.gluetun]] container"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(HookAccepted {
            vpn: container,
            action: "reading the forwarded port from the control server",
        }),
    ))
}
