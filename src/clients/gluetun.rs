//! `GluetunClient`: the real Gluetun control server over HTTP (docs/protocols.md section 1).
//!
//! One probe is `GET /v1/vpn/status` and, when the tunnel is running, the forwarded ports (some
//! providers forward several: `{"ports":[...]}`; one: `{"port":N}`). The ports live at `/v1/portforward` since v3.41 and at `/v1/openvpn/portforwarded` before; the client
//! tries the current route first, falls back to the legacy one when the current route is missing
//! (404 on HEAD, 400 up to v3.38, 401 on v3.39 / v3.40 whose roles cannot list it) and remembers
//! per control server (per `base_url`) which route answered, so a steady state costs two requests
//! per probe. A 401 on the status route, or on both port routes, is `Unauthorized` (the VPN is
//! misconfigured), never "down" and never "up".
//!
//! The HTTP client keeps no idle connections (after a VPN reconnect, pooled half-open sockets made
//! probes hang until the timeout), follows no redirects (redirected requests may lose the API key
//! header; the one redirect Gluetun sends is handled by hand) and bypasses any proxy from the
//! environment (control servers sit on internal Docker networks).
//!
//! Nothing here logs per poll: callers log state changes. The one exception is a 401, logged once
//! per VPN at error level with the fix, because it is a configuration error that no state change
//! will explain by itself.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;

use super::{ControlAnswer, ControlError, ControlTarget, TunnelStatus, VpnControl};
use crate::core::port_set::PortSet;

/// The v3.41+ port route.
pub const PORT_ROUTE: &str = "/v1/portforward";
/// The port route before v3.41 (v3.41+ answers it with a 301 to [`PORT_ROUTE`]).
pub const LEGACY_PORT_ROUTE: &str = "/v1/openvpn/portforwarded";
/// The tunnel status route.
pub const STATUS_ROUTE: &str = "/v1/vpn/status";
/// The public IP route.
pub const PUBLIC_IP_ROUTE: &str = "/v1/publicip/ip";
/// The version route.
pub const VERSION_ROUTE: &str = "/v1/version";

/// How many bytes of an unexpected body are quoted in a `Protocol` error.
const SNIPPET_LEN: usize = 200;

/// Which port route a control server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRoute {
    /// `/v1/portforward` (v3.41+).
    Current,
    /// `/v1/openvpn/portforwarded` (before v3.41).
    Legacy,
}

impl PortRoute {
    fn path(self) -> &'static str {
        match self {
            PortRoute::Current => PORT_ROUTE,
            PortRoute::Legacy => LEGACY_PORT_ROUTE,
        }
    }

    fn other(self) -> PortRoute {
        match self {
            PortRoute::Current => PortRoute::Legacy,
            PortRoute::Legacy => PortRoute::Current,
        }
    }
}

/// `GET /v1/version`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GluetunVersion {
    pub version: String,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
}

/// Client of Gluetun control servers; one instance serves every VPN.
pub struct GluetunClient {
    http: reqwest::Client,
    /// Port route each control server (keyed by `base_url`) answered last.
    routes: Mutex<HashMap<String, PortRoute>>,
    /// VPNs whose 401 has been logged since their last successful probe.
    unauthorized_logged: Mutex<HashSet<String>>,
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

#[derive(Deserialize)]
struct PortBody {
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    ports: Option<Vec<u16>>,
}

#[derive(Deserialize)]
struct PublicIpBody {
    #[serde(default)]
    public_ip: Option<String>,
}

/// The outcome of one GET, before interpretation.
struct Answer {
    status: StatusCode,
    body: String,
    url: String,
}

impl GluetunClient {
    /// A client whose every request (connect included) gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<GluetunClient, reqwest::Error> {
        let http = super::http_client(timeout)?;
        Ok(GluetunClient {
            http,
            routes: Mutex::new(HashMap::new()),
            unauthorized_logged: Mutex::new(HashSet::new()),
        })
    }

    /// The port route last seen answering on this control server, if any.
    pub fn known_port_route(&self, base_url: &str) -> Option<PortRoute> {
        lock(&self.routes).get(base_url).copied()
    }

    /// `GET /v1/vpn/status`.
    pub async fn tunnel_status(
        &self,
        target: &ControlTarget,
    ) -> Result<TunnelStatus, ControlError> {
        let answer = self.get(target, STATUS_ROUTE).await?;
        expect_ok(target, &answer, self)?;
        let body: StatusBody = parse_json(&answer)?;
        Ok(TunnelStatus::parse(&body.status))
    }

    /// The forwarded ports (empty = nothing forwarded yet), from whichever route the server
    /// speaks.
    pub async fn forwarded_ports(&self, target: &ControlTarget) -> Result<PortSet, ControlError> {
        let first = self
            .known_port_route(&target.base_url)
            .unwrap_or(PortRoute::Current);
        let answer = self.get(target, first.path()).await?;
        let (first_status, first_url) = (answer.status, answer.url.clone());
        match self.port_outcome(target, first, &answer)? {
            Some(port) => Ok(port),
            None => {
                // The first route pointed elsewhere (404, up to v3.38's 400, legacy 301, or
                // v3.39/v3.40's 401 for a route no role can list): ask the other one, once.
                let second = first.other();
                let answer = self.get(target, second.path()).await?;
                let first_refused = first_status == StatusCode::UNAUTHORIZED;
                match self.port_outcome(target, second, &answer)? {
                    Some(port) => Ok(port),
                    // One route refused the key and the other pointed back at it.
                    None if first_refused => Err(self.unauthorized(target, &first_url)),
                    None if answer.status == StatusCode::UNAUTHORIZED => {
                        Err(self.unauthorized(target, &answer.url))
                    }
                    None => Err(ControlError::Protocol(format!(
                        "neither {PORT_ROUTE} nor {LEGACY_PORT_ROUTE} answered on {}: last was {} {}",
                        target.base_url,
                        answer.status,
                        snippet(&answer.body)
                    ))),
                }
            }
        }
    }

    /// Interprets one port answer: `Ok(Some(ports))` = answered (and remembered), `Ok(None)` = try
    /// the other route.
    fn port_outcome(
        &self,
        target: &ControlTarget,
        route: PortRoute,
        answer: &Answer,
    ) -> Result<Option<PortSet>, ControlError> {
        match (route, answer.status) {
            (_, StatusCode::OK) => {
                let body: PortBody = parse_json(answer)?;
                lock(&self.routes).insert(target.base_url.clone(), route);
                Ok(Some(choose_ports(body.port, body.ports)))
            }
            (_, StatusCode::NOT_FOUND) => Ok(None),
            // Up to v3.38 an unknown route is a bad request ("GET /portforward not found").
            (PortRoute::Current, StatusCode::BAD_REQUEST) => Ok(None),
            // v3.41+ redirects the legacy route to the current one.
            (PortRoute::Legacy, s) if s.is_redirection() => Ok(None),
            // v3.39/v3.40 answer 401 for routes no role lists, and no role can list this one
            // there, so a 401 on the current route after the status route accepted the key may
            // just mean "too old": let the legacy route decide.
            (PortRoute::Current, StatusCode::UNAUTHORIZED) => Ok(None),
            (PortRoute::Legacy, StatusCode::UNAUTHORIZED) => {
                Err(self.unauthorized(target, &answer.url))
            }
            _ => Err(unexpected(answer)),
        }
    }

    /// `GET /v1/publicip/ip`: the tunnel's public IP (`None` before Gluetun's first lookup).
    pub async fn public_ip(&self, target: &ControlTarget) -> Result<Option<String>, ControlError> {
        let answer = self.get(target, PUBLIC_IP_ROUTE).await?;
        expect_ok(target, &answer, self)?;
        let body: PublicIpBody = parse_json(&answer)?;
        Ok(body.public_ip.filter(|ip| !ip.is_empty()))
    }

    /// `GET /v1/version`.
    pub async fn version(&self, target: &ControlTarget) -> Result<GluetunVersion, ControlError> {
        let answer = self.get(target, VERSION_ROUTE).await?;
        expect_ok(target, &answer, self)?;
        parse_json(&answer)
    }

    /// One GET with the key header; transport failures become `Unreachable`.
    async fn get(&self, target: &ControlTarget, path: &str) -> Result<Answer, ControlError> {
        let url = format!("{}{}", target.base_url.trim_end_matches('/'), path);
        let mut request = self.http.get(&url);
        if let Some(key) = &target.api_key {
            request = request.header("X-API-Key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ControlError::Unreachable(transport_message(&e, &url)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| ControlError::Unreachable(transport_message(&e, &url)))?;
        Ok(Answer { status, body, url })
    }

    /// Builds the `Unauthorized` error, logging it the first time for this VPN.
    fn unauthorized(&self, target: &ControlTarget, url: &str) -> ControlError {
        if lock(&self.unauthorized_logged).insert(target.vpn.clone()) {
            let key_state = if target.api_key.is_some() {
                "the configured API key was refused"
            } else {
                "no API key is configured for it"
            };
            tracing::error!(
                vpn = %target.vpn,
                url = %url,
                "Gluetun control server answered 401: {key_state}. Set the VPN's API key to one \
                 Gluetun knows, and give its role in /gluetun/auth/config.toml the routes \
                 \"GET {STATUS_ROUTE}\", \"GET {PORT_ROUTE}\", \"GET {LEGACY_PORT_ROUTE}\", \
                 \"GET {PUBLIC_IP_ROUTE}\" with auth = \"apikey\" (on Gluetun v3.39 and v3.40 leave \
                 out \"GET {PORT_ROUTE}\": they refuse to start with it). The VPN counts as \
                 misconfigured until then."
            );
        }
        ControlError::Unauthorized
    }

    fn note_authorized(&self, target: &ControlTarget) {
        lock(&self.unauthorized_logged).remove(&target.vpn);
    }
}

#[async_trait]
impl VpnControl for GluetunClient {
    async fn probe(&self, target: &ControlTarget) -> Result<ControlAnswer, ControlError> {
        let status = self.tunnel_status(target).await?;
        // Gluetun reports port 0 while the tunnel is not running; skip the second request.
        let forwarded_ports = if status == TunnelStatus::Running {
            self.forwarded_ports(target).await?
        } else {
            PortSet::EMPTY
        };
        self.note_authorized(target);
        Ok(ControlAnswer {
            status,
            forwarded_ports,
        })
    }

    async fn public_ip(&self, target: &ControlTarget) -> Result<Option<String>, ControlError> {
        GluetunClient::public_ip(self, target).await
    }
}

/// The non-zero ports of `ports` if there is one, else `port` if non-zero, else none. (v3.41 and
/// before answer `{"port":N}` for one port and `{"ports":[...]}` for several; HEAD sends both,
/// `port` being `ports[0]`.)
pub fn choose_ports(port: Option<u16>, ports: Option<Vec<u16>>) -> PortSet {
    let list = PortSet::new(ports.unwrap_or_default());
    if list.is_empty() {
        PortSet::from(port)
    } else {
        list
    }
}

/// 200 passes; 401 is `Unauthorized`; anything else is `Protocol`.
fn expect_ok(
    target: &ControlTarget,
    answer: &Answer,
    client: &GluetunClient,
) -> Result<(), ControlError> {
    match answer.status {
        StatusCode::OK => Ok(()),
        StatusCode::UNAUTHORIZED => Err(client.unauthorized(target, &answer.url)),
        _ => Err(unexpected(answer)),
    }
}

fn unexpected(answer: &Answer) -> ControlError {
    ControlError::Protocol(format!(
        "GET {} answered {}: {}",
        answer.url,
        answer.status,
        snippet(&answer.body)
    ))
}

fn parse_json<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, ControlError> {
    serde_json::from_str(&answer.body).map_err(|e| {
        ControlError::Protocol(format!(
            "GET {} answered {} with a body that does not parse ({e}): {}",
            answer.url,
            answer.status,
            snippet(&answer.body)
        ))
    })
}

/// reqwest's message with its causes (the top level alone says only "error sending request"),
/// and the URL when reqwest did not name it.
pub(crate) fn transport_message(error: &reqwest::Error, url: &str) -> String {
    let mut message = error.to_string();
    if error.url().is_none() {
        message.push_str(&format!(" for url ({url})"));
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The start of a body, trimmed, cut on a character boundary.
pub(crate) fn snippet(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "(empty body)".to_string();
    }
    if body.len() <= SNIPPET_LEN {
        return body.to_string();
    }
    let mut end = SNIPPET_LEN;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &body[..end])
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked: each update is one insert.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_list_wins_over_port_and_keeps_every_port() {
        assert_eq!(
            choose_ports(Some(1000), Some(vec![3000, 2000])),
            PortSet::new([2000, 3000])
        );
        assert_eq!(
            choose_ports(None, Some(vec![5678, 9876])).to_vec(),
            vec![5678, 9876]
        );
    }

    #[test]
    fn zero_null_and_empty_mean_no_port() {
        assert!(choose_ports(Some(0), None).is_empty());
        assert!(choose_ports(None, Some(vec![])).is_empty());
        assert!(choose_ports(None, None).is_empty());
        assert!(choose_ports(Some(0), Some(vec![0])).is_empty());
    }

    #[test]
    fn falls_back_to_port_when_list_is_empty_or_zero() {
        assert_eq!(choose_ports(Some(4242), Some(vec![])), PortSet::one(4242));
        assert_eq!(choose_ports(Some(4242), Some(vec![0])), PortSet::one(4242));
        assert_eq!(choose_ports(Some(4242), None), PortSet::one(4242));
    }

    #[test]
    fn snippet_cuts_long_bodies_on_char_boundaries() {
        let body = "é".repeat(300);
        let cut = snippet(&body);
        assert!(cut.ends_with("..."));
        assert!(cut.len() <= SNIPPET_LEN + 3);
        assert_eq!(snippet("  short \n"), "short");
    }
}
