//! Real-Docker scenario harness: fake Gluetun VPNs of one test run, a config with shrunk timings,
//! the acevisor actor tree over the real Docker runtime and HTTP clients, and the test-only
//! routes of the fake Gluetun to script the VPN. Everything carries the run's labels and is
//! removed when the `World` drops, also when the test fails.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use acevisor::actors::supervisor::Deps;
use acevisor::clients::engine::EngineClient;
use acevisor::clients::gluetun::GluetunClient;
use acevisor::config::Config;
use acevisor::runtime::docker::DockerRuntime;

use crate::support::{self, Cleanup, GluetunOptions, RunId};
use crate::tree::Tree;

pub struct World {
    pub run: RunId,
    /// VPN container names, in config order.
    pub vpns: Vec<String>,
    /// How the VPNs were started (their forwarded port aside); `recreate_vpn` reuses it.
    options: GluetunOptions,
    _cleanup: Cleanup,
}

/// VPN `i` (0-based) of a world: name suffix and engine port range.
fn vpn_suffix(i: usize) -> String {
    format!("vpn{}", i + 1)
}

impl World {
    /// Starts `ports.len()` fake Gluetuns with these forwarded ports (0 = none yet). `None` when
    /// Docker is unreachable and not required (the test should return).
    pub async fn new(ports: &[u16], api_key: Option<&str>) -> Option<World> {
        let options = GluetunOptions {
            api_key: api_key.map(str::to_string),
            ..GluetunOptions::default()
        };
        World::with_options(ports, options).await
    }

    /// Like [`World::new`] with every VPN started from `options` (version, role file, key, env);
    /// the forwarded port comes from `ports` and the health interval is shrunk to 500 ms.
    pub async fn with_options(ports: &[u16], options: GluetunOptions) -> Option<World> {
        support::require_docker().await?;
        support::ensure_testbed_images();
        let run = RunId::new();
        let cleanup = run.cleanup();
        let options = GluetunOptions {
            health_interval: Some(Duration::from_millis(500)),
            ..options
        };
        let mut vpns = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let options = GluetunOptions {
                forwarded_port: Some(*port),
                ..options.clone()
            };
            support::start_fake_gluetun(&run, &vpn_suffix(i), &options);
            vpns.push(run.name(&vpn_suffix(i)));
        }
        Some(World {
            run,
            vpns,
            options,
            _cleanup: cleanup,
        })
    }

    pub fn vpn(&self, i: usize) -> &str {
        &self.vpns[i]
    }

    /// The engine name prefix of this run (names must not collide with parallel tests).
    pub fn prefix(&self) -> String {
        format!("avt-{}-ace", self.run)
    }

    pub fn engine(&self, n: u32) -> String {
        format!("{}-{n}", self.prefix())
    }

    /// A config over this world's VPNs: `mode` single or redundant, shrunk timings, `extra` TOML
    /// lines appended to `[vpn]`.
    pub fn config(&self, mode: &str, min: u32, extra_vpn: &str, extra_health: &str) -> Config {
        let mut vpns = String::new();
        for (i, name) in self.vpns.iter().enumerate() {
            let start = 19000 + 100 * i;
            vpns.push_str(&format!(
                "[[vpn.gluetun]]\ncontainer = \"{name}\"\nengine_ports = \"{start}-{}\"\n",
                start + 99
            ));
        }
        let run = &self.run;
        let prefix = self.prefix();
        let engine_image = support::engine_image();
        let startup = support::FAKE_ENGINE_STARTUP_MS;
        let text = format!(
            r#"
instance = "{run}"
[docker]
call_timeout = "20s"
stop_timeout = "1s"
labels = {{ "acevisor-test.run" = "{run}" }}
[engines]
prefix = "{prefix}"
min_replicas = {min}
max_replicas = 20
min_free = 0
variant = "custom"
image = "{engine_image}"
command = ["--http-port", "{{http_port}}", "--https-port", "{{https_port}}", "--api-port", "{{api_port}}", "--port", "{{p2p_port}}", "--bind-all"]
env = {{ FAKE_STARTUP_MS = "{startup}" }}
ready_timeout = "20s"
create_concurrency = 8
[engines.health]
interval = "500ms"
timeout = "1s"
failure_threshold = 3
unhealthy_grace = "3s"
{extra_health}
[vpn]
mode = "{mode}"
poll_interval = "200ms"
port_settle = "500ms"
tunnel_grace = "5s"
control_timeout = "1s"
{extra_vpn}
{vpns}
"#
        );
        let cfg = Config::parse(&text).expect("docker test config parses");
        cfg.validate().expect("docker test config is valid");
        cfg
    }

    /// Starts acevisor's actor tree over the real Docker runtime and HTTP clients.
    pub async fn acevisor(&self, cfg: Config, keys: Vec<Option<String>>) -> Tree {
        let deps = Deps {
            runtime: Arc::new(
                DockerRuntime::connect(None, Duration::from_secs(20)).expect("docker client"),
            ),
            control: Arc::new(GluetunClient::new(Duration::from_secs(1)).expect("gluetun client")),
            engine_api: Arc::new(EngineClient::new(Duration::from_secs(1)).expect("engine client")),
            name_registry: None,
        };
        Tree::start_with(deps, cfg, keys).await
    }

    /// The VPN container's current IP (it may change when the container restarts).
    pub fn vpn_ip(&self, i: usize) -> String {
        support::container_ip(self.vpn(i), None)
            .unwrap_or_else(|| panic!("{} has no IP", self.vpn(i)))
    }

    /// A test-only route of the fake Gluetun (never needs the API key).
    pub async fn script(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) {
        let url = format!("http://{}:8000{path}", self.vpn_ip(i));
        let response = reqwest::Client::new()
            .request(method, &url)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
    }

    pub async fn set_port(&self, i: usize, port: u16) {
        self.script(
            i,
            reqwest::Method::PUT,
            "/testbed/port",
            serde_json::json!({ "port": port }),
        )
        .await;
    }

    /// VPN `i` forwards these ports from now on (`PUT /testbed/ports`; `[]` = none).
    pub async fn set_ports(&self, i: usize, ports: &[u16]) {
        self.script(
            i,
            reqwest::Method::PUT,
            "/testbed/ports",
            serde_json::json!({ "ports": ports }),
        )
        .await;
    }

    /// An internal tunnel restart: stopped + port 0 now, running with `port` after `after_ms`.
    pub async fn reconnect(&self, i: usize, port: u16, after_ms: u64) {
        let body = serde_json::json!({ "port": port, "after_ms": after_ms });
        self.script(i, reqwest::Method::POST, "/testbed/reconnect", body)
            .await;
    }

    /// Engine containers of this run on VPN `vpn`, as Docker lists them (running only).
    pub fn docker_engines_on(&self, vpn: &str) -> Vec<String> {
        let out = support::docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label={}", self.run.managed_label()),
            "--filter",
            &format!("label=acevisor.vpn={vpn}"),
        ]);
        out.lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Starts a fake Gluetun again under the same name (a new container ID), with the world's
    /// options.
    pub fn recreate_vpn(&self, i: usize, port: u16) {
        support::docker_rm_f(self.vpn(i));
        let options = GluetunOptions {
            forwarded_port: Some(port),
            ..self.options.clone()
        };
        support::start_fake_gluetun(&self.run, &vpn_suffix(i), &options);
    }
}

/// The P2P port the fake engine at `host:port` really bound (its testbed-only `/testbed/ports`).
pub async fn engine_p2p_port(host: &str, http_port: u16) -> Option<u64> {
    let ports = support::fake_engine_ports(host, http_port).await?;
    Some(u64::from(ports.p2p_port))
}

/// Every engine on `vpn` answers at the VPN's address with the P2P port acevisor planned for it,
/// and the forwarded one holds `port` (asked on the fake's `/testbed/ports`).
pub async fn fake_engines_confirm(
    s: &acevisor::actors::messages::SupervisorSnapshot,
    vpn: &str,
    port: u16,
) {
    for e in s.engines_on(vpn) {
        let host = e.host.as_deref().expect("engine has an address");
        let reported = engine_p2p_port(host, e.http_port).await;
        assert_eq!(
            reported,
            Some(u64::from(e.p2p_port)),
            "{} answers with its own P2P port",
            e.name
        );
        if e.forwarded {
            assert_eq!(
                reported,
                Some(u64::from(port)),
                "the forwarded engine holds the VPN's port"
            );
        }
    }
}
