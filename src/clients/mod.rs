//! What acevisor asks of the Gluetun control server and of engines, as traits, so the actors can
//! run against the real HTTP clients or the in-memory world.

pub mod engine;
pub mod gluetun;

use async_trait::async_trait;

pub use crate::core::readiness::{ControlAnswer, ControlError, TunnelStatus};

/// The HTTP client both clients use: every request (connect included) gives up after `timeout`;
/// no pooled keep-alive connections (half-open sockets after a VPN reconnect made probes hang until
/// restart); redirects not followed (some clients drop auth headers on them); no proxy from the
/// environment (this is container-to-container traffic).
pub fn http_client(timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

/// Where a VPN's control server is and how to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlTarget {
    pub vpn: String,
    /// e.g. `http://172.18.0.2:8000`
    pub base_url: String,
    pub api_key: Option<String>,
}

/// The key is a secret: `Debug` (and so every log line and error built from it) only says
/// whether one is set.
impl std::fmt::Debug for ControlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlTarget")
            .field("vpn", &self.vpn)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The Gluetun control server.
#[async_trait]
pub trait VpnControl: Send + Sync + 'static {
    async fn probe(&self, target: &ControlTarget) -> Result<ControlAnswer, ControlError>;
    /// The tunnel's public IP (`None` before the VPN looked it up).
    async fn public_ip(&self, target: &ControlTarget) -> Result<Option<String>, ControlError>;
}

/// An engine's HTTP API.
#[async_trait]
pub trait EngineApi: Send + Sync + 'static {
    /// `get_status`: Ok when the engine answers (the readiness and liveness probe).
    async fn status(&self, host: &str, port: u16) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_target_never_shows_its_key() {
        let t = ControlTarget {
            vpn: "gluetun".into(),
            base_url: "http://172.18.0.2:8000".into(),
            api_key: Some("s3cret-key".into()),
        };
        let shown = format!("{t:?} {t:#?}");
        assert!(!shown.contains("s3cret-key"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("gluetun"));
    }
}
