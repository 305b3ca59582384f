//! Engine templates: the presets for known images and the custom template, rendered with the
//! placeholders `{http_port}` `{https_port}` `{api_port}` `{p2p_port}` `{name}`.

use std::collections::BTreeMap;

use crate::config::EnginesConfig;
use crate::core::ports::EnginePorts;

pub const PLACEHOLDERS: &[&str] = &["http_port", "https_port", "api_port", "p2p_port", "name"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineTemplate {
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// The template the config asks for (preset, with `image`/`command`/`env` overrides).
pub fn template_for(cfg: &EnginesConfig) -> EngineTemplate {
    let _ = cfg;
    todo!("config helper")
}

/// Command and env with the placeholders filled in.
pub fn render(
    t: &EngineTemplate,
    name: &str,
    ports: &EnginePorts,
) -> (Vec<String>, BTreeMap<String, String>) {
    let _ = (t, name, ports);
    todo!()
}

/// A short stable hash of the template, recorded in `acevisor.config_hash`.
pub fn config_hash(t: &EngineTemplate) -> String {
    let _ = t;
    todo!()
}

/// Placeholders in `s` that are not in `PLACEHOLDERS`.
pub fn unknown_placeholders(s: &str) -> Vec<String> {
    let _ = s;
    todo!()
}
