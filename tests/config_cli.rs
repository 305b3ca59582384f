//! The config file contract, end to end through the built binary: `check-config` accepts the
//! shipped default and examples, refuses bad files with exit code 2 naming the key, and `run`
//! refuses them the same way before starting anything. Also keeps `config/acevisor.toml`,
//! the schema and `docs/configuration.md` from drifting apart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use acevisor::config::{Config, EngineVariant, EnginesConfig, OtlpProtocol};
use acevisor::core::template::preset;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with a clean environment for the config path, run from the repository root.
fn acevisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_acevisor"))
        .args(args)
        .current_dir(root())
        .env_remove("ACEVISOR_CONFIG")
        .output()
        .expect("run the acevisor binary")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A config file in the temp dir, removed when dropped.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "acevisor-config-test-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write temp config");
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const SHIPPED: &[&str] = &[
    "config/acevisor.toml",
    "config/examples/none.toml",
    "config/examples/single.toml",
    "config/examples/redundant.toml",
    "config/examples/testbed.toml",
];

#[test]
fn shipped_configs_pass_check_config() {
    for path in SHIPPED {
        let out = acevisor(&["check-config", path]);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", stderr(&out));
        // The printed effective config is itself a valid config equal to the file's.
        let printed = Config::parse(&stdout(&out)).expect("printed config parses");
        let original = Config::load(&root().join(path)).expect("shipped config loads");
        assert_eq!(printed, original, "{path}");
    }
}

#[test]
fn check_config_defaults_to_config_acevisor_toml_and_honours_the_env_var() {
    let out = acevisor(&["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("mode = \"redundant\""));

    let out = Command::new(env!("CARGO_BIN_EXE_acevisor"))
        .arg("check-config")
        .current_dir(root())
        .env("ACEVISOR_CONFIG", "config/examples/single.toml")
        .output()
        .expect("run acevisor");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("mode = \"single\""));
}

/// Valid on its own; each case below breaks exactly one thing.
const BASE: &str = r#"
instance = "test"

[engines]
variant = "custom"
image = "acevisor-testbed/engine:dev"
command = ["--http-port", "{http_port}", "--port", "{p2p_port}"]
min_replicas = 2
max_replicas = 4
min_free = 1

[engines.health]
interval = "20s"

[vpn]
mode = "redundant"

[[vpn.gluetun]]
container = "gluetun"
engine_ports = "19000-19099"

[[vpn.gluetun]]
container = "gluetun_2"
engine_ports = "19100-19199"

[api]
listen = "0.0.0.0:8000"
"#;

fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "case does not apply: {from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_of_the_invalid_cases_is_valid() {
    let file = TempConfig::new(BASE);
    let out = acevisor(&["check-config", file.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn invalid_configs_exit_2_naming_the_key() {
    let one_vpn = base_with(
        "[[vpn.gluetun]]\ncontainer = \"gluetun_2\"\nengine_ports = \"19100-19199\"\n",
        "",
    );
    // (case, file, text stderr must contain)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            base_with("min_free = 1", "min_free = 1\nmin_fre = 2"),
            "engines.min_fre",
        ),
        (
            "unknown key in a VPN",
            base_with(
                "engine_ports = \"19100-19199\"",
                "engine_ports = \"19100-19199\"\nport = 1",
            ),
            "vpn.gluetun[1].port",
        ),
        (
            "wrong type",
            base_with("min_replicas = 2", "min_replicas = \"two\""),
            "engines.min_replicas",
        ),
        (
            "bad duration",
            base_with("interval = \"20s\"", "interval = 20"),
            "engines.health.interval",
        ),
        (
            "unknown mode",
            base_with("mode = \"redundant\"", "mode = \"dual\""),
            "vpn.mode",
        ),
        (
            "missing engine_ports",
            base_with("engine_ports = \"19000-19099\"\n", ""),
            "vpn.gluetun[0].engine_ports",
        ),
        (
            "inverted range",
            base_with("\"19100-19199\"", "\"19199-19100\""),
            "vpn.gluetun[1].engine_ports",
        ),
        (
            "overlapping ranges",
            base_with("\"19100-19199\"", "\"19050-19149\""),
            "vpn.gluetun[1].engine_ports",
        ),
        (
            "range too small",
            base_with("\"19000-19099\"", "\"19000-19014\""),
            "vpn.gluetun[0].engine_ports",
        ),
        (
            "min above max",
            base_with("min_replicas = 2", "min_replicas = 5"),
            "engines.min_replicas",
        ),
        (
            "min_free above max",
            base_with("min_free = 1", "min_free = 9"),
            "engines.min_free",
        ),
        (
            "max zero",
            base_with("max_replicas = 4", "max_replicas = 0"),
            "engines.max_replicas",
        ),
        (
            "duplicate VPN",
            base_with("container = \"gluetun_2\"", "container = \"gluetun\""),
            "vpn.gluetun[1].container",
        ),
        (
            "single with two VPNs",
            base_with("mode = \"redundant\"", "mode = \"single\""),
            "vpn.mode",
        ),
        ("redundant with one VPN", one_vpn, "vpn.mode"),
        (
            "custom without image",
            base_with("image = \"acevisor-testbed/engine:dev\"\n", ""),
            "engines.image",
        ),
        (
            "unknown placeholder in command",
            base_with("\"{p2p_port}\"", "\"{p2p}\""),
            "engines.command[3]",
        ),
        (
            "unknown placeholder in env",
            base_with(
                "min_free = 1",
                "min_free = 1\nenv = { ARGS = \"--x {porty}\" }",
            ),
            "engines.env.ARGS",
        ),
        (
            "bad listen address",
            base_with("0.0.0.0:8000", "localhost:8000"),
            "api.listen",
        ),
        (
            "bad prefix",
            base_with("min_free = 1", "min_free = 1\nprefix = \"ace stream\""),
            "engines.prefix",
        ),
        (
            "zero poll interval",
            base_with(
                "mode = \"redundant\"",
                "mode = \"redundant\"\npoll_interval = \"0s\"",
            ),
            "vpn.poll_interval",
        ),
        (
            "control url without scheme",
            base_with(
                "container = \"gluetun\"",
                "container = \"gluetun\"\ncontrol_url = \"gluetun:8000\"",
            ),
            "vpn.gluetun[0].control_url",
        ),
        ("not TOML at all", base_with("[vpn]", "[vpn"), "line 15"),
    ];
    for (case, text, key) in &cases {
        let file = TempConfig::new(text);
        let out = acevisor(&["check-config", file.path()]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{case}: exit code; stderr: {err}"
        );
        assert!(
            err.contains(key),
            "{case}: stderr does not name `{key}`:\n{err}"
        );
        assert!(
            stdout(&out).is_empty(),
            "{case}: printed a config although refused"
        );
        assert!(!err.contains("panicked"), "{case}: {err}");
    }
}

#[test]
fn every_problem_is_listed() {
    let text = base_with("min_replicas = 2", "min_replicas = 5")
        .replacen("\"19100-19199\"", "\"19199-19100\"", 1)
        .replacen("0.0.0.0:8000", "nowhere", 1);
    let file = TempConfig::new(&text);
    let out = acevisor(&["check-config", file.path()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for key in [
        "engines.min_replicas",
        "vpn.gluetun[1].engine_ports",
        "api.listen",
    ] {
        assert!(err.contains(key), "missing {key}:\n{err}");
    }
    assert!(
        err.contains(file.path()),
        "the message names the file:\n{err}"
    );
}

#[test]
fn missing_file_exits_2_naming_the_path() {
    let path = "/nonexistent/acevisor/missing.toml";
    for cmd in [&["check-config", path][..], &["run", "--config", path][..]] {
        let out = acevisor(cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        assert!(stderr(&out).contains(path), "{cmd:?}: {}", stderr(&out));
    }
}

#[test]
fn run_refuses_a_bad_config_with_exit_2_before_starting() {
    let file = TempConfig::new(&base_with("min_replicas = 2", "min_replicas = 5"));
    let out = acevisor(&["run", "--config", file.path()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("engines.min_replicas"));
}

#[test]
fn run_refuses_an_api_open_beyond_loopback_without_a_key() {
    // BASE listens on 0.0.0.0 with no key: refused before anything starts.
    let file = TempConfig::new(BASE);
    let out = acevisor(&["run", "--config", file.path()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("api.listen") && stderr(&out).contains("allow_unauthenticated"),
        "{}",
        stderr(&out)
    );
    // check-config judges the file alone (the key is a runtime secret): the same file passes.
    let out = acevisor(&["check-config", file.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn help_on_every_subcommand_and_version() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check-config", "--help"],
        &["help", "run"],
    ] {
        let out = acevisor(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage"), "{args:?}");
    }
    let out = acevisor(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(env!("CARGO_PKG_VERSION")));
    let out = acevisor(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn shipped_configs_round_trip_through_serialization() {
    for path in SHIPPED {
        let parsed = Config::parse(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let text = toml::to_string(&parsed).expect("serialize");
        let again = Config::parse(&text).unwrap_or_else(|e| panic!("{path} reparsed: {e}\n{text}"));
        assert_eq!(again, parsed, "{path}");
    }
    let full = fully_populated();
    let text = toml::to_string(&full).expect("serialize");
    assert_eq!(Config::parse(&text).expect("reparse"), full, "{text}");
}

/// The default with every optional key set, so that its serialization shows every schema key.
fn fully_populated() -> Config {
    let mut c = Config::parse(&read("config/acevisor.toml")).expect("default parses");
    c.docker.host = Some("unix:///var/run/docker.sock".into());
    c.docker.labels.insert("team".into(), "media".into());
    c.engines.image = Some("img".into());
    c.engines.command = Some(vec!["--http-port".into(), "{http_port}".into()]);
    c.engines.env.insert("A".into(), "{name}".into());
    c.vpn.port_wait = Some(Duration::from_secs(120));
    c.vpn.force_restart_after = Some(Duration::from_secs(60));
    for g in &mut c.vpn.gluetun {
        g.control_url = Some("http://gluetun:8000".into());
        g.api_key_env = Some("GLUETUN_API_KEY".into());
    }
    c.api.api_key_env = Some("ACEVISOR_API_KEY".into());
    c.telemetry.otlp_endpoint = Some("http://jaeger:4317".into());
    c.telemetry.otlp_protocol = Some(OtlpProtocol::Grpc);
    c
}

/// Tables whose keys are the operator's (names of labels and env vars), not schema keys.
const FREE_FORM: &[&str] = &["docker.labels", "engines.env"];

/// Leaf keys as the docs write them: `engines.health.interval`, `vpn.gluetun[].container`.
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(t) if !FREE_FORM.contains(&path.as_str()) && !t.is_empty() => {
                leaf_keys(t, &path, out)
            }
            toml::Value::Array(items)
                if !items.is_empty() && items.iter().all(|v| v.is_table()) =>
            {
                for item in items {
                    leaf_keys(item.as_table().expect("table"), &format!("{path}[]"), out);
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

/// Keys set or commented out (`# key = ...`) in a TOML file, with their section, plus sections.
fn mentioned_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            section = format!("{}[]", name.trim());
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            section = name.trim().to_string();
            keys.insert(section.clone());
            continue;
        }
        let assignment = line.trim_start_matches('#').trim_start();
        if let Some((key, _)) = assignment.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                keys.insert(if section.is_empty() {
                    key.to_string()
                } else {
                    format!("{section}.{key}")
                });
            }
        }
    }
    keys
}

fn schema_keys() -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(&toml::to_string(&fully_populated()).unwrap()).unwrap();
    let mut keys = BTreeSet::new();
    leaf_keys(&table, "", &mut keys);
    keys
}

#[test]
fn default_config_mentions_every_schema_key() {
    let mentioned = mentioned_keys(&read("config/acevisor.toml"));
    let missing: Vec<_> = schema_keys()
        .into_iter()
        .filter(|k| !mentioned.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "config/acevisor.toml lacks (even commented out): {missing:?}"
    );
}

#[test]
fn docs_cover_every_key() {
    let doc = read("docs/configuration.md");
    let table: toml::Table = toml::from_str(&read("config/acevisor.toml")).unwrap();
    let mut keys = BTreeSet::new();
    leaf_keys(&table, "", &mut keys);
    assert!(
        keys.contains("vpn.gluetun[].engine_ports") && keys.contains("engines.health.interval")
    );
    keys.extend(schema_keys());
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document: {missing:?}"
    );
}

/// The row of `docs/configuration.md`'s presets table for `variant` (`| \`variant\` | ...`).
fn preset_row<'a>(doc: &'a str, variant: &str) -> &'a str {
    let section = &doc[doc.find("#### Presets").expect("a presets section")..];
    section
        .lines()
        .find(|l| l.starts_with(&format!("| `{variant}` |")))
        .unwrap_or_else(|| panic!("docs/configuration.md has no preset row for {variant}"))
}

fn variant_name(variant: EngineVariant) -> String {
    match toml::Value::try_from(variant).expect("a variant serializes") {
        toml::Value::String(name) => name,
        other => panic!("variant serialized as {other}"),
    }
}

/// What the docs say each preset sets is what the code sets; the documented default variant, the
/// shipped default config and the code's default are one preset, with nothing of the testbed in it.
#[test]
fn documented_presets_and_default_engine_match_the_code() {
    let doc = read("docs/configuration.md");
    for variant in [
        EngineVariant::Krinkuto11Amd64,
        EngineVariant::JopsisAmd64,
        EngineVariant::JopsisArm32,
        EngineVariant::JopsisArm64,
    ] {
        let name = variant_name(variant);
        let row = preset_row(&doc, &name);
        let t = preset(variant).expect("a preset");
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells[1], format!("`{}`", t.image), "image of {name}: {row}");
        for (key, value) in &t.env {
            assert!(
                row.contains(&format!("{key}={value}")),
                "{name}: the docs do not show env {key}={value}: {row}"
            );
        }
        if t.command.is_empty() {
            assert!(row.contains("no command"), "{name}: {row}");
        } else {
            let command = format!("command `{}`", t.command.join(" "));
            assert!(row.contains(&command), "{name}: docs lack {command}: {row}");
        }
    }
    preset_row(&doc, "custom");

    let default = EnginesConfig::default();
    let name = variant_name(default.variant);
    assert_ne!(
        default.variant,
        EngineVariant::Custom,
        "the default runs a real image"
    );
    assert!(
        doc.contains(&format!("| `engines.variant` | string | `\"{name}\"` |")),
        "docs/configuration.md does not give {name} as the default variant"
    );
    let shipped = Config::parse(&read("config/acevisor.toml"))
        .expect("default parses")
        .engines;
    assert_eq!(shipped.variant, default.variant, "config/acevisor.toml");
    assert_eq!(
        (&shipped.image, &shipped.command, &shipped.env),
        (&None, &None, &Default::default()),
        "config/acevisor.toml must use the preset as it is (no image, command or env of its own)"
    );
    let text = read("config/acevisor.toml");
    let testbed_bits = ["acevisor-testbed", "FAKE_"];
    for bit in testbed_bits {
        let live = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains(bit));
        assert!(
            !live,
            "config/acevisor.toml sets something of the testbed ({bit})"
        );
    }
}
