//! The labels on every engine acevisor creates: they are the state a restarted acevisor rebuilds
//! itself from (docs/behavior.md "acevisor restarting"). Pure encode/decode, nothing else.

use std::collections::BTreeMap;

/// Everything an engine's labels record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineLabels {
    pub instance: String,
    pub ordinal: u32,
    pub vpn: Option<String>,
    pub vpn_id: Option<String>,
    /// The VPN container's `StartedAt` when the engine joined it (a restart in place changes it).
    pub vpn_started_at: Option<String>,
    pub forwarded: bool,
    pub p2p_port: u16,
    pub http_port: u16,
    pub config_hash: String,
}

/// Label keys under one namespace (default `acevisor`).
#[derive(Clone, Debug)]
pub struct LabelKeys {
    pub prefix: String,
}

impl LabelKeys {
    pub fn new(prefix: &str) -> Self {
        LabelKeys {
            prefix: prefix.trim_end_matches('.').to_string(),
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}.{}", self.prefix, name)
    }

    /// `docker ps` filter selecting this instance's managed containers.
    pub fn managed_filter(&self, instance: &str) -> String {
        format!("{}={}", self.key("managed"), instance)
    }

    /// The labels of a new engine.
    pub fn encode(&self, l: &EngineLabels) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(self.key("managed"), l.instance.clone());
        m.insert(self.key("role"), "engine".into());
        m.insert(self.key("ordinal"), l.ordinal.to_string());
        if let Some(vpn) = &l.vpn {
            m.insert(self.key("vpn"), vpn.clone());
        }
        if let Some(id) = &l.vpn_id {
            m.insert(self.key("vpn_id"), id.clone());
        }
        if let Some(t) = &l.vpn_started_at {
            m.insert(self.key("vpn_started_at"), t.clone());
        }
        m.insert(self.key("forwarded"), l.forwarded.to_string());
        m.insert(self.key("p2p_port"), l.p2p_port.to_string());
        m.insert(self.key("http_port"), l.http_port.to_string());
        m.insert(self.key("config_hash"), l.config_hash.clone());
        m
    }

    /// Reads an engine's labels back; `None` when it is not an engine of `instance` or a label
    /// is missing or malformed.
    pub fn decode(&self, instance: &str, m: &BTreeMap<String, String>) -> Option<EngineLabels> {
        if m.get(&self.key("managed"))? != instance || m.get(&self.key("role"))? != "engine" {
            return None;
        }
        Some(EngineLabels {
            instance: instance.to_string(),
            ordinal: m.get(&self.key("ordinal"))?.parse().ok()?,
            vpn: m.get(&self.key("vpn")).cloned(),
            vpn_id: m.get(&self.key("vpn_id")).cloned(),
            vpn_started_at: m.get(&self.key("vpn_started_at")).cloned(),
            forwarded: m.get(&self.key("forwarded"))?.parse().ok()?,
            p2p_port: m.get(&self.key("p2p_port"))?.parse().ok()?,
            http_port: m.get(&self.key("http_port"))?.parse().ok()?,
            config_hash: m.get(&self.key("config_hash")).cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_decode_roundtrip(ordinal in 1u32..10_000, forwarded: bool, p2p in 1u16.., http in 1u16..,
                                   vpn in proptest::option::of("[a-z_0-9]{1,12}")) {
            let keys = LabelKeys::new("acevisor");
            let l = EngineLabels {
                instance: "default".into(), ordinal, vpn_id: vpn.as_ref().map(|v| format!("id-{v}")), vpn_started_at: vpn.as_ref().map(|_| "2026-01-01T00:00:00.5Z".to_string()), vpn,
                forwarded, p2p_port: p2p, http_port: http, config_hash: "abc".into(),
            };
            prop_assert_eq!(keys.decode("default", &keys.encode(&l)), Some(l));
        }
    }

    #[test]
    fn other_instance_is_not_ours() {
        let keys = LabelKeys::new("acevisor.");
        let l = EngineLabels {
            instance: "a".into(),
            ordinal: 1,
            vpn: None,
            vpn_id: None,
            vpn_started_at: None,
            forwarded: false,
            p2p_port: 1,
            http_port: 2,
            config_hash: String::new(),
        };
        let m = keys.encode(&l);
        assert_eq!(m.get("acevisor.managed").map(String::as_str), Some("a"));
        assert!(keys.decode("b", &m).is_none());
    }
}
