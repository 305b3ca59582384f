//! The container spec of a new engine: template rendered with its ports and name, labels that
//! record everything a restarted acevisor needs, and how it attaches to the network. Owns
//! `ContainerSpec` and `Attach` (plain data `runtime` re-exports and creates from).

use std::collections::BTreeMap;

use crate::core::labels::{EngineLabels, LabelKeys};
use crate::core::ports::EnginePorts;
use crate::core::template::{EngineTemplate, config_hash, render};

/// How a new container is attached to the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `network_mode: container:<id>`: share a VPN container's namespace (by ID, not name).
    ContainerNamespace { container_id: String },
    /// Join a Docker network and publish these TCP ports 1:1 on the host.
    Network { network: String, publish: Vec<u16> },
}

/// A container to create and start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub attach: Attach,
}

/// Who one engine is (name, ordinal, VPN, forwarding, ports): what its spec depends on besides
/// the template.
#[derive(Clone, Debug)]
pub struct EngineIdentity<'a> {
    pub name: &'a str,
    pub ordinal: u32,
    pub vpn: Option<&'a str>,
    pub vpn_id: Option<&'a str>,
    pub vpn_started_at: Option<&'a str>,
    pub forwarded: bool,
    pub ports: EnginePorts,
}

/// Where engines without a VPN go (mode `none`).
#[derive(Clone, Debug)]
pub struct SpecContext<'a> {
    pub instance: &'a str,
    pub keys: &'a LabelKeys,
    pub extra_labels: &'a BTreeMap<String, String>,
    pub network: &'a str,
}

pub fn engine_spec(
    template: &EngineTemplate,
    ctx: &SpecContext<'_>,
    engine: &EngineIdentity<'_>,
) -> ContainerSpec {
    let (cmd, env) = render(template, engine.name, &engine.ports);
    let mut labels = ctx.extra_labels.clone();
    labels.extend(ctx.keys.encode(&EngineLabels {
        instance: ctx.instance.to_string(),
        ordinal: engine.ordinal,
        vpn: engine.vpn.map(str::to_string),
        vpn_id: engine.vpn_id.map(str::to_string),
        vpn_started_at: engine.vpn_started_at.map(str::to_string),
        forwarded: engine.forwarded,
        p2p_port: engine.ports.p2p,
        http_port: engine.ports.http,
        config_hash: config_hash(template),
    }));
    let attach = match engine.vpn_id {
        Some(id) => Attach::ContainerNamespace {
            container_id: id.to_string(),
        },
        None => Attach::Network {
            network: ctx.network.to_string(),
            publish: vec![engine.ports.http],
        },
    };
    ContainerSpec {
        name: engine.name.to_string(),
        image: template.image.clone(),
        cmd,
        env,
        labels,
        attach,
    }
}
