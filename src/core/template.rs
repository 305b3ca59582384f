//! Engine templates: the presets for known images and the custom template, rendered with the
//! placeholders `{http_port}` `{https_port}` `{api_port}` `{p2p_port}` `{name}`.
//!
//! A template is an image, a command (empty = the image's own entrypoint and command) and an env
//! map. Presets know how each published AceStream image takes its ports; `engines.image`,
//! `engines.command` and `engines.env` override a preset (`env` per variable), and the `custom`
//! variant uses exactly what the config says. Placeholders are written `{name}`; anything in braces
//! that is not an identifier (`{"a":1}`, `{}`, `{ x }`) is literal text, so JSON in an env value
//! survives rendering. There is no escape syntax because no engine flag needs a literal `{ident}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::ports::EnginePorts;

pub const PLACEHOLDERS: &[&str] = &["http_port", "https_port", "api_port", "p2p_port", "name"];

/// The engine images acevisor has a preset for (`engines.variant`); `custom` has none.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EngineVariant {
    #[serde(rename = "krinkuto11-amd64")]
    Krinkuto11Amd64,
    #[serde(rename = "jopsis-amd64")]
    JopsisAmd64,
    #[serde(rename = "jopsis-arm32")]
    JopsisArm32,
    #[serde(rename = "jopsis-arm64")]
    JopsisArm64,
    Custom,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineTemplate {
    pub image: String,
    /// Container command; empty means "keep the image's default".
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Flags every jopsis image understands, ports included.
const JOPSIS_FLAGS: &[&str] = &[
    "--client-console",
    "--bind-all",
    "--http-port",
    "{http_port}",
    "--https-port",
    "{https_port}",
    "--api-port",
    "{api_port}",
    "--port",
    "{p2p_port}",
];

/// The built-in template of a variant; `None` for `custom`, which has no preset.
pub fn preset(variant: EngineVariant) -> Option<EngineTemplate> {
    let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    match variant {
        // Its entrypoint turns these variables into engine flags and ignores any command. It has
        // no variable for the API port, so engines sharing a namespace share the image's default.
        EngineVariant::Krinkuto11Amd64 => Some(EngineTemplate {
            image: "ghcr.io/krinkuto11/acestream-http-proxy:latest".into(),
            command: Vec::new(),
            env: env(&[
                ("HTTP_PORT", "{http_port}"),
                ("HTTPS_PORT", "{https_port}"),
                ("P2P_PORT", "{p2p_port}"),
                ("BIND_ALL", "true"),
            ]),
        }),
        // Its command is a shell that appends `ACESTREAM_ARGS` to the engine's command line.
        EngineVariant::JopsisAmd64 => Some(EngineTemplate {
            image: "jopsis/acestream:x64".into(),
            command: Vec::new(),
            env: env(&[("ACESTREAM_ARGS", &JOPSIS_FLAGS.join(" "))]),
        }),
        EngineVariant::JopsisArm32 => Some(EngineTemplate {
            image: "jopsis/acestream:arm32-v3.2.13".into(),
            command: owned(&[&["python", "main.py"], JOPSIS_FLAGS].concat()),
            env: BTreeMap::new(),
        }),
        EngineVariant::JopsisArm64 => Some(EngineTemplate {
            image: "jopsis/acestream:arm64-v3.2.13".into(),
            command: owned(&[&["python", "main.py"], JOPSIS_FLAGS].concat()),
            env: BTreeMap::new(),
        }),
        EngineVariant::Custom => None,
    }
}

/// Command and env with the placeholders filled in.
pub fn render(
    t: &EngineTemplate,
    name: &str,
    ports: &EnginePorts,
) -> (Vec<String>, BTreeMap<String, String>) {
    let values = |placeholder: &str| -> Option<String> {
        Some(match placeholder {
            "http_port" => ports.http.to_string(),
            "https_port" => ports.https.to_string(),
            "api_port" => ports.api.to_string(),
            "p2p_port" => ports.p2p.to_string(),
            "name" => name.to_string(),
            _ => return None,
        })
    };
    let command = t
        .command
        .iter()
        .map(|item| substitute(item, &values))
        .collect();
    let env = t
        .env
        .iter()
        .map(|(k, v)| (k.clone(), substitute(v, &values)))
        .collect();
    (command, env)
}

/// A short stable hash of the template, recorded in `acevisor.config_hash`.
///
/// FNV-1a 64 over image, command and env (sorted by name), each string length-prefixed so that
/// moving text between fields always changes the hash. Stable across builds and platforms.
pub fn config_hash(t: &EngineTemplate) -> String {
    let mut hash = Fnv1a::new();
    hash.field(b"image");
    hash.field(t.image.as_bytes());
    hash.field(b"command");
    hash.write(&(t.command.len() as u64).to_le_bytes());
    for item in &t.command {
        hash.field(item.as_bytes());
    }
    hash.field(b"env");
    hash.write(&(t.env.len() as u64).to_le_bytes());
    for (k, v) in &t.env {
        hash.field(k.as_bytes());
        hash.field(v.as_bytes());
    }
    format!("{:016x}", hash.0)
}

/// Placeholders in `s` that are not in `PLACEHOLDERS`, in order of appearance, without braces.
pub fn unknown_placeholders(s: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match placeholder_at(after) {
            Some(ident) => {
                if !PLACEHOLDERS.contains(&ident) {
                    unknown.push(ident.to_string());
                }
                rest = &after[ident.len() + 1..];
            }
            None => rest = after,
        }
    }
    unknown
}

/// If `s` starts with `ident}`, the identifier.
fn placeholder_at(s: &str) -> Option<&str> {
    let end = s.find('}')?;
    let ident = &s[..end];
    let mut chars = ident.chars();
    let first = chars.next()?;
    let is_ident = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    is_ident.then_some(ident)
}

/// One left-to-right pass: substituted text is never scanned again.
fn substitute(s: &str, value_of: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match placeholder_at(after).and_then(|ident| Some((ident, value_of(ident)?))) {
            Some((ident, value)) => {
                out.push_str(&value);
                rest = &after[ident.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ports::block_at;
    use proptest::prelude::*;

    #[test]
    fn every_preset_uses_only_known_placeholders_and_sets_the_ports() {
        for variant in [
            EngineVariant::Krinkuto11Amd64,
            EngineVariant::JopsisAmd64,
            EngineVariant::JopsisArm32,
            EngineVariant::JopsisArm64,
        ] {
            let t = preset(variant).expect("preset");
            assert!(!t.image.is_empty());
            let texts: Vec<&String> = t.command.iter().chain(t.env.values()).collect();
            for text in &texts {
                assert!(unknown_placeholders(text).is_empty(), "{variant:?}: {text}");
            }
            let (command, env) = render(&t, "acestream-1", &block_at(19004));
            let all = command.join(" ") + &env.values().cloned().collect::<Vec<_>>().join(" ");
            for port in ["19004", "19005", "19007"] {
                assert!(
                    all.contains(port),
                    "{variant:?} does not set port {port}: {all}"
                );
            }
        }
        assert_eq!(preset(EngineVariant::Custom), None);
    }

    #[test]
    fn render_fills_every_placeholder_and_keeps_other_braces() {
        let t = EngineTemplate {
            image: "x".into(),
            command: vec![
                "--http-port={http_port}".into(),
                "{https_port}/{api_port}/{p2p_port}".into(),
                "{name}".into(),
                "{\"json\":1} {} { name } {name".into(),
                "{{http_port}}".into(),
                "{unknown}".into(),
            ],
            env: BTreeMap::from([("N".into(), "{name}:{p2p_port}".into())]),
        };
        let ports = EnginePorts {
            http: 19000,
            https: 19001,
            api: 19002,
            p2p: 55747,
        };
        let (command, env) = render(&t, "acestream-3", &ports);
        assert_eq!(
            command,
            [
                "--http-port=19000",
                "19001/19002/55747",
                "acestream-3",
                "{\"json\":1} {} { name } {name",
                "{19000}",
                "{unknown}",
            ]
        );
        assert_eq!(env["N"], "acestream-3:55747");
    }

    #[test]
    fn unknown_placeholders_are_found_and_literals_ignored() {
        assert_eq!(
            unknown_placeholders("--p {foo} {http_port} {Bar_2}"),
            ["foo", "Bar_2"]
        );
        assert!(unknown_placeholders("{\"a\":{}} { x } {1x} {").is_empty());
        assert_eq!(unknown_placeholders("{{foo}}"), ["foo"]);
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        for (input, expected) in [
            ("", 0xcbf2_9ce4_8422_2325),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv1a::new();
            h.write(input.as_bytes());
            assert_eq!(h.0, expected, "{input:?}");
        }
    }

    #[test]
    fn config_hash_is_stable_short_and_sensitive() {
        let t = EngineTemplate {
            image: "img".into(),
            command: vec!["a".into(), "b".into()],
            env: BTreeMap::from([("K".into(), "V".into())]),
        };
        let h = config_hash(&t);
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, config_hash(&t.clone()));
        // Pinned: the hash is stored in labels, so it must not change between releases.
        assert_eq!(h, "30071c45573d0f08");

        let mut moved = t.clone();
        moved.command = vec!["ab".into()];
        assert_ne!(config_hash(&moved), h);
        let mut env = t.clone();
        env.env.insert("K".into(), "W".into());
        assert_ne!(config_hash(&env), h);
        let mut image = t.clone();
        image.image = "img2".into();
        assert_ne!(config_hash(&image), h);
    }

    fn template_text() -> impl Strategy<Value = String> {
        let known = prop::sample::select(PLACEHOLDERS).prop_map(|p| format!("{{{p}}}"));
        let noise = "[a-z{}_ =\"-]{0,6}";
        prop::collection::vec(prop_oneof![known, noise.prop_map(String::from)], 0..8)
            .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn render_leaves_no_known_placeholder_behind(
            command in prop::collection::vec(template_text(), 0..5),
            env in prop::collection::btree_map("[A-Z_]{1,8}", template_text(), 0..5),
            prefix in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,10}",
            ordinal in 1u32..1000,
            http in 1u16..65000,
            p2p in 1u16..=65535,
        ) {
            let t = EngineTemplate { image: "img".into(), command, env };
            let ports = EnginePorts { http, https: http + 1, api: http + 2, p2p };
            let name = format!("{prefix}-{ordinal}");
            let (command, env) = render(&t, &name, &ports);
            for text in command.iter().chain(env.values()) {
                for p in PLACEHOLDERS {
                    let needle = format!("{{{p}}}");
                    prop_assert!(!text.contains(&needle), "{needle} left in {text}");
                }
            }
        }
    }
}
