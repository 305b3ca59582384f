//! The shipped compose stacks (`config/compose/`) checked against what Gluetun accepts at start
//! and what acevisor needs, without Docker:
//!
//! - every Gluetun setting that depends on the VPN provider (provider, VPN type, credentials,
//!   port forwarding, `PORT_FORWARD_ONLY`, server filters) comes from the env file, never as a
//!   literal or a non-empty default in the stack;
//! - every provider block of `env.example`, put through each stack the way docker-compose
//!   interpolates it, is a combination the pinned Gluetun version accepts (port forwarding only
//!   for the providers that have it, WireGuard only for providers Gluetun supports it with,
//!   `PORT_FORWARD_ONLY` only for PIA and ProtonVPN), and there is one per port-forwarding
//!   provider;
//! - the control-server role file each stack mounts fits the Gluetun version it runs (v3.39 and
//!   v3.40 refuse to start on `GET /v1/portforward`; v3.41+ serve the port only there);
//! - every stack refuses to start without acevisor's API key, and its acevisor config reads it.
//!
//! The rules are Gluetun's own validation (`internal/configuration/settings/` of qdm12/gluetun at
//! v3.38.1, v3.39.1, v3.40.4, v3.41.1), summarised in docs/protocols.md. The YAML reader below
//! understands the subset the stacks are written in (block mappings, `- ` items, anchors and
//! `<<:` merges, trailing comments); `docker-compose config` (when installed) confirms the real
//! tool agrees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/compose")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(compose_dir().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The stacks that run real Gluetun, and the testbed stack (fake Gluetun, same API key rule).
const STACKS: &[&str] = &["none.yml", "single.yml", "redundant.yml", "testbed.yml"];

/// Gluetun settings whose valid values depend on the VPN provider.
const PROVIDER_KEYS: &[&str] = &[
    "VPN_SERVICE_PROVIDER",
    "VPN_TYPE",
    "VPN_PORT_FORWARDING",
    "VPN_PORT_FORWARDING_PROVIDER",
    "PORT_FORWARD_ONLY",
    "OPENVPN_USER",
    "OPENVPN_PASSWORD",
    "WIREGUARD_PRIVATE_KEY",
    "WIREGUARD_ADDRESSES",
    "SERVER_COUNTRIES",
    "SERVER_REGIONS",
    "SERVER_CITIES",
    "SERVER_HOSTNAMES",
    "SERVER_NAMES",
];

// ---------------------------------------------------------------------------------------------
// Gluetun's rules, per version.

const PIA: &str = "private internet access";
const PROTON: &str = "protonvpn";
const PERFECT: &str = "perfect privacy";
const PRIVATEVPN: &str = "privatevpn";

/// The four providers Gluetun forwards a port with (v3.40+).
const PORT_FORWARDING_PROVIDERS: &[&str] = &[PIA, PERFECT, PRIVATEVPN, PROTON];

/// Gluetun's provider names (v3.41), plus `custom`.
const GLUETUN_PROVIDERS: &[&str] = &[
    "airvpn",
    "custom",
    "cyberghost",
    "expressvpn",
    "fastestvpn",
    "giganews",
    "hidemyass",
    "ipvanish",
    "ivpn",
    "mullvad",
    "nordvpn",
    PERFECT,
    "privado",
    PIA,
    PRIVATEVPN,
    PROTON,
    "purevpn",
    "slickvpn",
    "surfshark",
    "torguard",
    "vpnsecure",
    "vpn unlimited",
    "vyprvpn",
    "windscribe",
];

/// A Gluetun release as (major, minor); unreleased HEAD behaves as the newest release.
type Version = (u32, u32);

fn port_forwarding_providers(v: Version) -> Vec<&'static str> {
    let mut p = vec![PIA, PROTON];
    if v >= (3, 39) {
        p.push(PERFECT);
    }
    if v >= (3, 40) {
        p.push(PRIVATEVPN);
    }
    p
}

fn wireguard_providers(v: Version) -> Vec<&'static str> {
    let mut p = vec![
        "airvpn",
        "custom",
        "ivpn",
        "mullvad",
        "nordvpn",
        "surfshark",
        "windscribe",
    ];
    if v >= (3, 39) {
        p.extend(["fastestvpn", PROTON]);
    }
    p
}

fn port_forward_only_providers(v: Version) -> Vec<&'static str> {
    if v >= (3, 39) {
        vec![PIA, PROTON]
    } else {
        vec![PIA]
    }
}

/// Gluetun's reading of a boolean setting (`on`/`off`, `yes`/`no`, `true`/`false`).
fn is_on(env: &BTreeMap<String, String>, key: &str) -> bool {
    env.get(key)
        .is_some_and(|v| matches!(v.to_lowercase().as_str(), "on" | "yes" | "true"))
}

/// What Gluetun `v` would refuse at start in this environment (as the container sees it, empty
/// values already dropped: Gluetun reads an empty variable as unset). Empty = accepted.
fn gluetun_refusals(v: Version, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut refusals = Vec::new();
    let provider = env
        .get("VPN_SERVICE_PROVIDER")
        .map(|p| p.to_lowercase())
        .unwrap_or_default();
    if !GLUETUN_PROVIDERS.contains(&provider.as_str()) {
        refusals.push(format!(
            "VPN_SERVICE_PROVIDER={provider:?} is no Gluetun provider"
        ));
        return refusals;
    }
    let vpn_type = env
        .get("VPN_TYPE")
        .map(|t| t.to_lowercase())
        .unwrap_or_else(|| "openvpn".into());
    match vpn_type.as_str() {
        "wireguard" => {
            if !wireguard_providers(v).contains(&provider.as_str()) {
                refusals.push(format!(
                    "VPN_TYPE=wireguard: Gluetun v{}.{} has no WireGuard for {provider:?}",
                    v.0, v.1
                ));
            }
            if !env.contains_key("WIREGUARD_PRIVATE_KEY") {
                refusals.push("VPN_TYPE=wireguard without WIREGUARD_PRIVATE_KEY".into());
            }
        }
        "openvpn" => {
            if provider != "custom"
                && !(env.contains_key("OPENVPN_USER") && env.contains_key("OPENVPN_PASSWORD"))
            {
                refusals.push("OpenVPN without OPENVPN_USER and OPENVPN_PASSWORD".into());
            }
        }
        other => refusals.push(format!(
            "VPN_TYPE={other:?} is neither openvpn nor wireguard"
        )),
    }
    if is_on(env, "VPN_PORT_FORWARDING") {
        let pf_provider = env
            .get("VPN_PORT_FORWARDING_PROVIDER")
            .map(|p| p.to_lowercase())
            .unwrap_or_else(|| provider.clone());
        if !port_forwarding_providers(v).contains(&pf_provider.as_str()) {
            refusals.push(format!(
                "VPN_PORT_FORWARDING=on: Gluetun v{}.{} forwards no port for {pf_provider:?}",
                v.0, v.1
            ));
        }
    }
    if is_on(env, "PORT_FORWARD_ONLY")
        && !port_forward_only_providers(v).contains(&provider.as_str())
    {
        refusals.push(format!(
            "PORT_FORWARD_ONLY=on: Gluetun v{}.{} has no such filter for {provider:?}",
            v.0, v.1
        ));
    }
    refusals
}

/// What is wrong with a role file (`/gluetun/auth/config.toml`) for acevisor on Gluetun `v`.
fn role_file_problems(v: Version, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let doc: toml::Table = match text.parse() {
        Ok(doc) => doc,
        Err(e) => return vec![format!("not TOML: {e}")],
    };
    let roles = doc
        .get("roles")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let Some(role) = roles.first().and_then(|r| r.as_table()) else {
        return vec!["no [[roles]] entry".into()];
    };
    let routes: Vec<&str> = role
        .get("routes")
        .and_then(|r| r.as_array())
        .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
        .unwrap_or_default();
    if role.get("auth").and_then(|a| a.as_str()) != Some("apikey") {
        problems.push("auth is not \"apikey\"".into());
    }
    if role
        .get("apikey")
        .and_then(|a| a.as_str())
        .is_none_or(str::is_empty)
    {
        problems.push("no apikey".into());
    }
    let mut need = vec!["GET /v1/vpn/status", "GET /v1/publicip/ip"];
    if v >= (3, 41) {
        need.push("GET /v1/portforward");
    } else {
        need.push("GET /v1/openvpn/portforwarded");
        if routes.contains(&"GET /v1/portforward") {
            problems.push(format!(
                "lists GET /v1/portforward, which makes Gluetun v{}.{} refuse to start",
                v.0, v.1
            ));
        }
    }
    for route in need {
        if !routes.contains(&route) {
            problems.push(format!(
                "lacks {route}, which acevisor reads on v{}.{}",
                v.0, v.1
            ));
        }
    }
    problems
}

/// `qmcgaw/gluetun:v3.41` (or `:v3.41.1`) -> (3, 41); a floating tag is no version.
fn gluetun_version(image: &str) -> Result<Version, String> {
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let mut parts = tag.trim_start_matches('v').split('.');
    let major = parts.next().and_then(|p| p.parse().ok());
    let minor = parts.next().and_then(|p| p.parse().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(format!(
            "image {image:?} floats: pin a minor version so the role file can fit it"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// docker-compose interpolation.

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}` and `$$`,
/// as docker-compose resolves them against `env`.
fn interpolate(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            return Err(format!("unsupported `$` in {text:?}"));
        };
        let end = body
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let (name, op, arg) = split_expression(&body[..end]);
        let value = env.get(name).map(String::as_str);
        let resolved = match op {
            "" => value.unwrap_or("").to_string(),
            ":-" => value.filter(|v| !v.is_empty()).unwrap_or(arg).to_string(),
            "-" => value.unwrap_or(arg).to_string(),
            ":?" => match value.filter(|v| !v.is_empty()) {
                Some(v) => v.to_string(),
                None => return Err(format!("{name} is required: {arg}")),
            },
            "?" => match value {
                Some(v) => v.to_string(),
                None => return Err(format!("{name} is required: {arg}")),
            },
            _ => unreachable!(),
        };
        out.push_str(&resolved);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `VAR:-x` -> ("VAR", ":-", "x").
fn split_expression(expr: &str) -> (&str, &str, &str) {
    let name_end = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, rest) = expr.split_at(name_end);
    for op in [":-", ":?", "-", "?"] {
        if let Some(arg) = rest.strip_prefix(op) {
            return (name, op, arg);
        }
    }
    (name, "", rest)
}

/// The single `${...}` a value consists of, as (variable, operator, argument).
fn sole_expression(value: &str) -> Option<(&str, &str, &str)> {
    let body = value.strip_prefix("${")?.strip_suffix('}')?;
    (!body.contains('$')).then(|| split_expression(body))
}

// ---------------------------------------------------------------------------------------------
// The YAML subset of the stacks.

#[derive(Clone, Debug, Default)]
struct Node {
    key: String,
    value: String,
    children: Vec<Node>,
}

/// A value without quotes and trailing comment.
fn clean(value: &str) -> String {
    let mut in_quote: Option<char> = None;
    let mut end = value.len();
    let mut prev = ' ';
    for (i, c) in value.char_indices() {
        match (in_quote, c) {
            (None, '"' | '\'') => in_quote = Some(c),
            (Some(q), c) if c == q => in_quote = None,
            (None, '#') if prev.is_whitespace() => {
                end = i;
                break;
            }
            _ => {}
        }
        prev = c;
    }
    let v = value[..end].trim();
    let unquoted = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    unquoted.unwrap_or(v).to_string()
}

/// Parses the block-style subset; returns the root and the anchors (`&name` -> node).
fn parse_yaml(text: &str) -> (Node, BTreeMap<String, Node>) {
    let mut stack: Vec<(usize, Node)> = vec![(0, Node::default())];
    let lines = text.lines().filter(|l| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    });
    let fold = |stack: &mut Vec<(usize, Node)>| {
        let (_, node) = stack.pop().unwrap();
        stack.last_mut().unwrap().1.children.push(node);
    };
    for line in lines {
        // Items are one level deeper than their key, whatever the indentation says.
        let indent = line.len() - line.trim_start().len() + 1;
        let content = line.trim_start();
        while stack.len() > 1 && stack.last().unwrap().0 >= indent {
            fold(&mut stack);
        }
        let node = if let Some(item) = content.strip_prefix("- ") {
            Node {
                key: "-".into(),
                value: clean(item),
                children: Vec::new(),
            }
        } else if let Some((key, value)) = content.split_once(": ") {
            Node {
                key: clean(key),
                value: clean(value),
                children: Vec::new(),
            }
        } else {
            Node {
                key: clean(content.trim_end_matches(':')),
                value: String::new(),
                children: Vec::new(),
            }
        };
        stack.push((indent, node));
    }
    while stack.len() > 1 {
        fold(&mut stack);
    }
    let root = stack.pop().unwrap().1;
    let mut anchors = BTreeMap::new();
    collect_anchors(&root, &mut anchors);
    (root, anchors)
}

fn collect_anchors(node: &Node, anchors: &mut BTreeMap<String, Node>) {
    for child in &node.children {
        if let Some(name) = child.value.strip_prefix('&') {
            anchors.insert(name.to_string(), child.clone());
        }
        collect_anchors(child, anchors);
    }
}

/// The entries of a mapping with `<<: *anchor` merged in (explicit keys win, as in YAML).
fn entries(node: &Node, anchors: &BTreeMap<String, Node>) -> Vec<Node> {
    let explicit: Vec<&Node> = node.children.iter().filter(|c| c.key != "<<").collect();
    let mut out: Vec<Node> = explicit.iter().map(|c| (*c).clone()).collect();
    for merge in node.children.iter().filter(|c| c.key == "<<") {
        let name = merge.value.trim_start_matches('*');
        let anchor = anchors
            .get(name)
            .unwrap_or_else(|| panic!("unknown anchor *{name}"));
        for entry in entries(anchor, anchors) {
            if !explicit.iter().any(|c| c.key == entry.key) {
                out.push(entry);
            }
        }
    }
    out
}

fn entry(node: &Node, anchors: &BTreeMap<String, Node>, key: &str) -> Option<Node> {
    entries(node, anchors).into_iter().find(|c| c.key == key)
}

/// One service of a stack, merges applied.
struct Service {
    name: String,
    image: String,
    /// Environment as written (values not interpolated).
    environment: Vec<(String, String)>,
    volumes: Vec<String>,
}

struct Stack {
    file: &'static str,
    services: Vec<Service>,
}

impl Stack {
    fn load(file: &'static str) -> Stack {
        let (root, anchors) = parse_yaml(&read(file));
        let services = entry(&root, &anchors, "services")
            .unwrap_or_else(|| panic!("{file}: no services"))
            .children
            .iter()
            .map(|svc| Service {
                name: svc.key.clone(),
                image: entry(svc, &anchors, "image")
                    .map(|n| n.value)
                    .unwrap_or_default(),
                environment: entry(svc, &anchors, "environment")
                    .map(|env| {
                        entries(&env, &anchors)
                            .into_iter()
                            .map(|e| (e.key, e.value))
                            .collect()
                    })
                    .unwrap_or_default(),
                volumes: entry(svc, &anchors, "volumes")
                    .map(|v| v.children.into_iter().map(|i| i.value).collect())
                    .unwrap_or_default(),
            })
            .collect();
        Stack { file, services }
    }

    /// Services that run the real Gluetun image (by the image the stack defaults to).
    fn gluetuns(&self) -> impl Iterator<Item = &Service> {
        self.services.iter().filter(|s| {
            interpolate(&s.image, &BTreeMap::new()).is_ok_and(|i| i.contains("qmcgaw/gluetun"))
        })
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{}: no service {name}", self.file))
    }
}

impl Service {
    /// The environment the container gets from `env` (empty values dropped, as Gluetun reads
    /// them), or the error docker-compose would stop with.
    fn resolved_env(
        &self,
        env: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for (key, value) in &self.environment {
            let v = interpolate(value, env)?;
            if !v.is_empty() {
                out.insert(key.clone(), v);
            }
        }
        Ok(out)
    }

    /// The host file mounted at `target`, resolved against `env`, relative to config/compose.
    fn mount_source(&self, target: &str, env: &BTreeMap<String, String>) -> Option<String> {
        self.volumes.iter().find_map(|v| {
            let v = interpolate(v, env).ok()?;
            let mut parts = v.split(':');
            let source = parts.next()?;
            (parts.next() == Some(target)).then(|| source.trim_start_matches("./").to_string())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// env.example.

/// A `## title` block of commented `#KEY=value` lines.
struct Block {
    title: String,
    settings: BTreeMap<String, String>,
}

struct EnvExample {
    /// The uncommented `KEY=value` lines.
    base: BTreeMap<String, String>,
    blocks: Vec<Block>,
}

fn setting(line: &str) -> Option<(String, String)> {
    let (key, value) = line.split_once('=')?;
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    valid.then(|| (key.to_string(), value.to_string()))
}

fn parse_env_example(text: &str) -> EnvExample {
    let mut base = BTreeMap::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("##") {
            match blocks.last_mut() {
                Some(b) if open && b.settings.is_empty() => b.title.push_str(title),
                _ => {
                    blocks.push(Block {
                        title: title.trim().to_string(),
                        settings: BTreeMap::new(),
                    });
                    open = true;
                }
            }
        } else if let Some((k, v)) = line.strip_prefix('#').and_then(setting) {
            if open {
                blocks.last_mut().unwrap().settings.insert(k, v);
            }
        } else if let Some((k, v)) = setting(line) {
            base.insert(k, v);
            open = false;
        } else {
            open = false;
        }
    }
    EnvExample { base, blocks }
}

impl EnvExample {
    fn load() -> EnvExample {
        parse_env_example(&read("env.example"))
    }

    fn provider_blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks
            .iter()
            .filter(|b| b.settings.contains_key("VPN_SERVICE_PROVIDER"))
    }

    /// The image/role-file alternatives: the default (no block) and each `GLUETUN_TAG` block.
    fn version_choices(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let mut choices = vec![("the default image".to_string(), BTreeMap::new())];
        choices.extend(
            self.blocks
                .iter()
                .filter(|b| b.settings.contains_key("GLUETUN_TAG"))
                .map(|b| (b.title.clone(), b.settings.clone())),
        );
        choices
    }

    /// `.env` as a user gets it by uncommenting `blocks`, with the required keys filled in.
    fn dot_env(&self, blocks: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
        let mut env = self.base.clone();
        for block in blocks {
            env.extend(block.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env.insert("ACEVISOR_API_KEY".into(), "a-key".into());
        env
    }
}

/// The acevisor config a stack mounts, parsed.
fn acevisor_config(stack: &Stack, env: &BTreeMap<String, String>) -> toml::Table {
    let source = stack
        .service("acevisor")
        .mount_source("/etc/acevisor/acevisor.toml", env)
        .unwrap_or_else(|| panic!("{}: acevisor mounts no config", stack.file));
    read(&source)
        .parse()
        .unwrap_or_else(|e| panic!("{source}: {e}"))
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The rules themselves can fail.

fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn gluetun_rules_refuse_the_combinations_gluetun_refuses() {
    let creds = [("OPENVPN_USER", "u"), ("OPENVPN_PASSWORD", "p")];
    let with = |extra: &[(&str, &str)]| {
        let mut e = env_of(&creds);
        e.extend(env_of(extra));
        e
    };
    let refused = [
        // The old stacks' hard-coded settings with each other port-forwarding provider.
        (
            (3, 41),
            with(&[
                ("VPN_SERVICE_PROVIDER", PIA),
                ("VPN_TYPE", "wireguard"),
                ("WIREGUARD_PRIVATE_KEY", "k"),
            ]),
        ),
        (
            (3, 41),
            with(&[
                ("VPN_SERVICE_PROVIDER", PERFECT),
                ("VPN_PORT_FORWARDING", "on"),
                ("PORT_FORWARD_ONLY", "on"),
            ]),
        ),
        (
            (3, 41),
            with(&[
                ("VPN_SERVICE_PROVIDER", "azirevpn"),
                ("VPN_PORT_FORWARDING", "on"),
            ]),
        ),
        (
            (3, 41),
            with(&[
                ("VPN_SERVICE_PROVIDER", "mullvad"),
                ("VPN_PORT_FORWARDING", "on"),
            ]),
        ),
        // Providers and filters older releases lack.
        (
            (3, 39),
            with(&[
                ("VPN_SERVICE_PROVIDER", PRIVATEVPN),
                ("VPN_PORT_FORWARDING", "on"),
            ]),
        ),
        (
            (3, 38),
            with(&[
                ("VPN_SERVICE_PROVIDER", PROTON),
                ("VPN_TYPE", "wireguard"),
                ("WIREGUARD_PRIVATE_KEY", "k"),
            ]),
        ),
        (
            (3, 38),
            with(&[
                ("VPN_SERVICE_PROVIDER", PROTON),
                ("PORT_FORWARD_ONLY", "on"),
            ]),
        ),
        // Missing credentials.
        ((3, 41), env_of(&[("VPN_SERVICE_PROVIDER", PIA)])),
    ];
    for (version, env) in refused {
        assert!(
            !gluetun_refusals(version, &env).is_empty(),
            "v{version:?} should refuse {env:?}"
        );
    }
    let accepted = [
        (
            (3, 41),
            env_of(&[
                ("VPN_SERVICE_PROVIDER", PROTON),
                ("VPN_TYPE", "wireguard"),
                ("WIREGUARD_PRIVATE_KEY", "k"),
                ("VPN_PORT_FORWARDING", "on"),
                ("PORT_FORWARD_ONLY", "on"),
            ]),
        ),
        (
            (3, 41),
            with(&[
                ("VPN_SERVICE_PROVIDER", "Private Internet Access"),
                ("VPN_PORT_FORWARDING", "on"),
                ("PORT_FORWARD_ONLY", "on"),
            ]),
        ),
        (
            (3, 40),
            with(&[
                ("VPN_SERVICE_PROVIDER", PRIVATEVPN),
                ("VPN_PORT_FORWARDING", "on"),
            ]),
        ),
        (
            (3, 41),
            with(&[
                ("VPN_SERVICE_PROVIDER", "mullvad"),
                ("VPN_PORT_FORWARDING", "off"),
            ]),
        ),
    ];
    for (version, env) in accepted {
        assert_none(gluetun_refusals(version, &env));
    }
}

#[test]
fn role_file_rules_follow_the_gluetun_version() {
    let role = |routes: &str| {
        format!("[[roles]]\nname = \"a\"\nroutes = [{routes}]\nauth = \"apikey\"\napikey = \"k\"\n")
    };
    let current = role(
        r#""GET /v1/vpn/status", "GET /v1/portforward", "GET /v1/openvpn/portforwarded", "GET /v1/publicip/ip""#,
    );
    let legacy =
        role(r#""GET /v1/vpn/status", "GET /v1/openvpn/portforwarded", "GET /v1/publicip/ip""#);
    assert_none(role_file_problems((3, 41), &current));
    assert_none(role_file_problems((3, 40), &legacy));
    assert_none(role_file_problems((3, 39), &legacy));
    assert!(!role_file_problems((3, 40), &current).is_empty());
    assert!(!role_file_problems((3, 39), &current).is_empty());
    assert!(!role_file_problems((3, 41), &legacy).is_empty());
    assert!(!role_file_problems((3, 41), &current.replace("apikey\"", "none\"")).is_empty());
    assert_eq!(gluetun_version("qmcgaw/gluetun:v3.41"), Ok((3, 41)));
    assert_eq!(gluetun_version("qmcgaw/gluetun:v3.40.4"), Ok((3, 40)));
    assert!(gluetun_version("qmcgaw/gluetun:v3").is_err());
    assert!(gluetun_version("qmcgaw/gluetun").is_err());
}

#[test]
fn interpolation_and_yaml_subset_read_the_stacks_as_compose_does() {
    let env = env_of(&[("SET", "x"), ("EMPTY", "")]);
    assert_eq!(interpolate("${SET}-${UNSET}", &env).unwrap(), "x-");
    assert_eq!(interpolate("${EMPTY:-d}/${EMPTY-d}", &env).unwrap(), "d/");
    assert_eq!(
        interpolate("${UNSET:-./a.toml}:/b:ro", &env).unwrap(),
        "./a.toml:/b:ro"
    );
    assert_eq!(interpolate("$${SET}", &env).unwrap(), "${SET}");
    assert!(interpolate("${EMPTY:?say so}", &env).is_err());
    assert!(interpolate("${EMPTY?say so}", &env).is_ok());
    let (root, anchors) = parse_yaml(
        "x-a: &a\n  K: \"1\"   # c\n  L: 2\nservices:\n  s:\n    environment:\n      <<: *a\n      L: 3\n    volumes:\n      - ./f:/g:ro\n",
    );
    let s = &entry(&root, &anchors, "services").unwrap().children[0];
    let env: BTreeMap<_, _> = entries(&entry(s, &anchors, "environment").unwrap(), &anchors)
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(env, env_of(&[("K", "1"), ("L", "3")]));
    assert_eq!(
        entry(s, &anchors, "volumes").unwrap().children[0].value,
        "./f:/g:ro"
    );
}

// ---------------------------------------------------------------------------------------------
// The shipped stacks.

#[test]
fn stacks_take_every_provider_setting_from_the_env_file() {
    let mut problems = Vec::new();
    for file in STACKS {
        let stack = Stack::load(file);
        for svc in stack.gluetuns() {
            for (key, value) in &svc.environment {
                if key == "FIREWALL_DEBUG" {
                    problems.push(format!(
                        "{file} {}: FIREWALL_DEBUG is deprecated (FIREWALL_IPTABLES_LOG_LEVEL)",
                        svc.name
                    ));
                }
                if !PROVIDER_KEYS.contains(&key.as_str()) {
                    continue;
                }
                let from_env = sole_expression(value)
                    .is_some_and(|(_, op, arg)| matches!(op, ":?" | "?") || arg.is_empty());
                if !from_env {
                    problems.push(format!(
                        "{file} {}: {key}: {value:?} is set by the stack, not by the env file",
                        svc.name
                    ));
                }
            }
        }
    }
    let example = EnvExample::load();
    for key in example.base.keys() {
        if PROVIDER_KEYS.contains(&key.as_str()) || key.starts_with("WIREGUARD_") {
            problems.push(format!(
                "env.example sets {key} outside a provider block (it would apply to every provider)"
            ));
        }
    }
    assert_none(problems);
}

#[test]
fn env_example_has_a_block_per_port_forwarding_provider() {
    let example = EnvExample::load();
    let mut problems = Vec::new();
    for provider in PORT_FORWARDING_PROVIDERS {
        let found = example.provider_blocks().any(|b| {
            b.settings["VPN_SERVICE_PROVIDER"].to_lowercase() == *provider
                && b.settings
                    .get("VPN_PORT_FORWARDING")
                    .is_some_and(|v| v == "on")
        });
        if !found {
            problems.push(format!(
                "env.example: no block for {provider:?} with port forwarding"
            ));
        }
    }
    assert_none(problems);
}

#[test]
fn every_env_example_block_is_a_combination_gluetun_accepts_in_every_stack() {
    let example = EnvExample::load();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in STACKS {
        let stack = Stack::load(file);
        if stack.gluetuns().next().is_none() {
            continue;
        }
        for block in example.provider_blocks() {
            for (choice, version_block) in example.version_choices() {
                let env = example.dot_env(&[&version_block, &block.settings]);
                let config = acevisor_config(&stack, &env);
                let forwarding = config
                    .get("vpn")
                    .and_then(|v| v.get("gluetun"))
                    .and_then(|g| g.as_array())
                    .is_some_and(|g| {
                        g.iter()
                            .any(|e| e.get("forwarding").and_then(|f| f.as_bool()) != Some(false))
                    });
                for svc in stack.gluetuns() {
                    let at = format!("{file} {} with \"{}\" on {choice}", svc.name, block.title);
                    let image = match interpolate(&svc.image, &env) {
                        Ok(image) => image,
                        Err(e) => {
                            problems.push(format!("{at}: {e}"));
                            continue;
                        }
                    };
                    let version = match gluetun_version(&image) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(format!("{at}: {e}"));
                            continue;
                        }
                    };
                    match svc.resolved_env(&env) {
                        Ok(resolved) => {
                            checked += 1;
                            for refusal in gluetun_refusals(version, &resolved) {
                                problems.push(format!("{at}: Gluetun {image} refuses {refusal}"));
                            }
                            if forwarding && !is_on(&resolved, "VPN_PORT_FORWARDING") {
                                problems.push(format!(
                                    "{at}: the stack's config expects a forwarded port, but \
                                     VPN_PORT_FORWARDING is off"
                                ));
                            }
                        }
                        Err(e) => problems.push(format!("{at}: docker-compose stops: {e}")),
                    }
                }
            }
        }
    }
    assert_none(problems);
    // single (1 Gluetun) + redundant (2), each with every block on every version choice.
    let blocks = example.provider_blocks().count() * example.version_choices().len();
    assert_eq!(checked, 3 * blocks, "every Gluetun service was checked");
    assert!(blocks >= PORT_FORWARDING_PROVIDERS.len());
}

#[test]
fn role_files_fit_the_gluetun_version_each_stack_runs() {
    let example = EnvExample::load();
    let mut problems = Vec::new();
    for file in STACKS {
        let stack = Stack::load(file);
        for (choice, version_block) in example.version_choices() {
            let env = example.dot_env(&[&version_block]);
            for svc in stack.gluetuns() {
                let at = format!("{file} {} on {choice}", svc.name);
                let version =
                    match interpolate(&svc.image, &env).and_then(|image| gluetun_version(&image)) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(format!("{at}: {e}"));
                            continue;
                        }
                    };
                let auth_path = svc
                    .environment
                    .iter()
                    .find(|(k, _)| k == "HTTP_CONTROL_SERVER_AUTH_CONFIG_FILEPATH")
                    .map(|(_, v)| v.as_str());
                if auth_path != Some("/gluetun/auth/config.toml") {
                    problems.push(format!(
                        "{at}: HTTP_CONTROL_SERVER_AUTH_CONFIG_FILEPATH is {auth_path:?}, not \
                         /gluetun/auth/config.toml"
                    ));
                }
                let Some(source) = svc.mount_source("/gluetun/auth/config.toml", &env) else {
                    problems.push(format!(
                        "{at}: mounts no role file at /gluetun/auth/config.toml"
                    ));
                    continue;
                };
                let text = match std::fs::read_to_string(compose_dir().join(&source)) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(format!("{at}: role file {source}: {e}"));
                        continue;
                    }
                };
                for p in role_file_problems(version, &text) {
                    problems.push(format!("{at}: {source}: {p}"));
                }
            }
        }
    }
    // Each shipped role file fits the versions its name says.
    for (file, version) in [
        ("gluetun-auth.toml", (3, 41)),
        ("gluetun-auth-v3.39.toml", (3, 39)),
    ] {
        match std::fs::read_to_string(compose_dir().join(file)) {
            Ok(text) => {
                for p in role_file_problems(version, &text) {
                    problems.push(format!("{file}: {p}"));
                }
            }
            Err(e) => problems.push(format!("{file}: {e}")),
        }
    }
    assert_none(problems);
}

#[test]
fn every_stack_requires_acevisors_api_key() {
    let example = EnvExample::load();
    let mut problems = Vec::new();
    for file in STACKS {
        let stack = Stack::load(file);
        let acevisor = stack.service("acevisor");
        let key = acevisor
            .environment
            .iter()
            .find(|(k, _)| k == "ACEVISOR_API_KEY")
            .map(|(_, v)| v.as_str());
        let required = key
            .and_then(sole_expression)
            .is_some_and(|(var, op, _)| var == "ACEVISOR_API_KEY" && op == ":?");
        if !required {
            problems.push(format!(
                "{file}: ACEVISOR_API_KEY is {key:?}, not required (${{ACEVISOR_API_KEY:?...}})"
            ));
        }
        let config = acevisor_config(&stack, &example.dot_env(&[]));
        let named = config
            .get("api")
            .and_then(|a| a.get("api_key_env"))
            .and_then(|k| k.as_str());
        if named != Some("ACEVISOR_API_KEY") {
            problems.push(format!(
                "{file}: its acevisor config reads the API key from {named:?}, not ACEVISOR_API_KEY"
            ));
        }
    }
    if !example.base.contains_key("ACEVISOR_API_KEY") {
        problems.push("env.example does not show ACEVISOR_API_KEY".into());
    }
    assert_none(problems);
}

/// docker-compose itself accepts every stack with every provider block of env.example (skipped
/// with a notice when docker-compose is not installed; needs no Docker daemon).
#[test]
fn docker_compose_accepts_every_stack_with_every_env_example_block() {
    let installed = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIPPED: docker-compose is not installed");
        return;
    }
    let example = EnvExample::load();
    let dir = std::env::temp_dir().join(format!("acevisor-compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut problems = Vec::new();
    for (n, block) in example.provider_blocks().enumerate() {
        for (m, (choice, version_block)) in example.version_choices().into_iter().enumerate() {
            let env = example.dot_env(&[&version_block, &block.settings]);
            let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let path = dir.join(format!("env-{n}-{m}"));
            std::fs::write(&path, text).unwrap();
            for file in STACKS {
                // Stacks without Gluetun ignore the blocks: check them once.
                if Stack::load(file).gluetuns().next().is_none() && (n, m) != (0, 0) {
                    continue;
                }
                let out = Command::new("docker-compose")
                    .current_dir(compose_dir())
                    .args(["--env-file", path.to_str().unwrap(), "-p", "acevisorstacks"])
                    .args(["-f", file, "config", "-q"])
                    .env_remove("ACEVISOR_API_KEY")
                    .env_remove("VPN_SERVICE_PROVIDER")
                    .env_remove("VPN_PORT_FORWARDING")
                    .env_remove("GLUETUN_TAG")
                    .env_remove("GLUETUN_AUTH_FILE")
                    .output()
                    .expect("run docker-compose");
                if !out.status.success() {
                    problems.push(format!(
                        "{file} with \"{}\" on {choice}: {}",
                        block.title,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_none(problems);
}
