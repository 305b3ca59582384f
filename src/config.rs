//! The typed config file (`config/acevisor.toml`): schema and defaults.
//!
//! Owns the contract operators write against. Parsing refuses unknown keys and wrong types;
//! `validate` refuses impossible combinations (both live in `config_check`, which reads this
//! schema; this module never calls it). Every error names the key path it is about, so
//! `acevisor check-config` can say exactly what to fix. The plain types the cores decide on
//! (`PortRange`, `EngineVariant`, `EmergencyCapacity`) belong to `core` and are re-exported here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::template::{EngineTemplate, preset};

pub use crate::core::plan::EmergencyCapacity;
pub use crate::core::ports::PortRange;
pub use crate::core::template::EngineVariant;

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Label value that lets several acevisors share one Docker host.
    #[serde(default = "default_instance")]
    pub instance: String,
    #[serde(default)]
    pub docker: DockerConfig,
    #[serde(default)]
    pub engines: EnginesConfig,
    #[serde(default)]
    pub vpn: VpnConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The built-in stream proxy (`GET /ace/getstream`).
    #[serde(default)]
    pub proxy: ProxyConfig,
}

/// `[proxy]`: the built-in stream proxy.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// How long a session with no viewer keeps its engine playback before stopping it.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Contents the proxy plays on one engine at most.
    pub max_streams_per_engine: u32,
    /// How long a first viewer waits for an engine (a new one is provisioned if none is free).
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// No bytes from the engine for this long: the session moves to another engine.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// How long a session looks for another engine before its viewers' responses end.
    #[serde(with = "humantime_serde")]
    pub failover_timeout: Duration,
    /// Chunks buffered per viewer; a viewer this far behind is dropped.
    pub viewer_buffer: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            linger: Duration::from_secs(10),
            max_streams_per_engine: 1,
            start_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(5),
            failover_timeout: Duration::from_secs(60),
            viewer_buffer: 256,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`; absent = `DOCKER_HOST`, else the local socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Docker network engines join in mode `none`.
    #[serde(default = "default_network")]
    pub network: String,
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How long a stopped engine gets to exit before it is killed.
    #[serde(default = "default_stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Label namespace of everything acevisor creates.
    #[serde(default = "default_label_prefix")]
    pub label_prefix: String,
    /// Extra labels put on every container acevisor creates (tests tag their run with these).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnginesConfig {
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    #[serde(default = "default_min_free")]
    pub min_free: u32,
    #[serde(default = "default_idle_grace", with = "humantime_serde")]
    pub idle_grace: Duration,
    #[serde(default = "default_variant")]
    pub variant: EngineVariant,
    /// Image; required for `custom`, overrides the preset's image otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command template (placeholders `{http_port}` `{https_port}` `{api_port}` `{p2p_port}` `{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Env template; values may use the same placeholders.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Mode `none`: ports engines listen on, published 1:1 on the host.
    #[serde(default = "default_http_ports")]
    pub http_ports: PortRange,
    /// How long to wait for a new engine's HTTP API before it counts as failed.
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// How many engine creations may be under way at once.
    #[serde(default = "default_create_concurrency")]
    pub create_concurrency: u32,
    #[serde(default)]
    pub health: HealthConfig,
    /// What acevisor does with its engines when it is stopped (SIGTERM, Ctrl-C).
    #[serde(default)]
    pub on_shutdown: OnShutdown,
}

/// What happens to the managed engines when acevisor stops.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnShutdown {
    /// Leave them running: streams continue and the next acevisor adopts them.
    #[default]
    Keep,
    /// Remove every engine of this instance before exiting.
    Remove,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "default_unhealthy_grace", with = "humantime_serde")]
    pub unhealthy_grace: Duration,
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "default_restart_window", with = "humantime_serde")]
    pub restart_window: Duration,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VpnMode {
    None,
    Single,
    Redundant,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VpnConfig {
    #[serde(default = "default_mode")]
    pub mode: VpnMode,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Poll interval of a VPN while it matters: starting, waiting for its first port, settling a
    /// new port, or shortly after a reconnect or a port hook.
    #[serde(default = "default_fast_poll_interval", with = "humantime_serde")]
    pub fast_poll_interval: Duration,
    #[serde(default = "default_port_settle", with = "humantime_serde")]
    pub port_settle: Duration,
    /// Continuous tunnel trouble inside a running Gluetun tolerated before it counts as failed.
    #[serde(default = "default_tunnel_grace", with = "humantime_serde")]
    pub tunnel_grace: Duration,
    /// After a VPN is Up, how long to wait for its forwarded port before placing ordinary engines
    /// on it anyway. Absent = wait for the port forever.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub port_wait: Option<Duration>,
    #[serde(default = "default_emergency_capacity")]
    pub emergency_capacity: EmergencyCapacity,
    /// Absent = never restart Gluetun.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub force_restart_after: Option<Duration>,
    /// Timeout of one control-server request.
    #[serde(default = "default_control_timeout", with = "humantime_serde")]
    pub control_timeout: Duration,
    #[serde(default)]
    pub gluetun: Vec<GluetunConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GluetunConfig {
    pub container: String,
    /// Default: `http://<container IP>:8000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_url: Option<String>,
    /// Name of the env var holding the control-server API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    pub engine_ports: PortRange,
    #[serde(default = "default_true")]
    pub forwarding: bool,
    /// Docker network on which acevisor reaches this VPN (its control server and its engines)
    /// when the container is on several; absent = its first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Unset env var = open API (warned at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Start even though `listen` is reachable beyond loopback and no API key is set (anyone who
    /// reaches the API may then provision and remove engines). Refused at start otherwise.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// How often each active stream's `stat_url` is read into its history.
    #[serde(default = "default_stats_interval", with = "humantime_serde")]
    pub stats_interval: Duration,
    /// A connection must send a complete request head within this time after it opens or after
    /// its previous answer (so it is also the idle timeout of kept-alive connections).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body must arrive completely within this time once its handler reads it (408).
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Active streams in total; a `stream_started` beyond it is 429.
    #[serde(default = "default_max_streams")]
    pub max_streams: u32,
    /// Active streams on one engine; a `stream_started` beyond it is 429.
    #[serde(default = "default_max_streams_per_engine")]
    pub max_streams_per_engine: u32,
    /// Bytes of stream labels (keys plus values) one `stream_started` may carry (422 above).
    #[serde(default = "default_max_label_bytes")]
    pub max_label_bytes: u32,
    /// Ended streams kept for `/streams?status=ended` (oldest forgotten first).
    #[serde(default = "default_ended_streams_kept")]
    pub ended_streams_kept: u32,
    /// An active stream that no stats read and no event confirmed for this long is ended
    /// (`unconfirmed`); `0s` never ends one this way.
    #[serde(
        default = "default_stream_unconfirmed_timeout",
        with = "humantime_serde"
    )]
    pub stream_unconfirmed_timeout: Duration,
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_streams() -> u32 {
    1000
}

fn default_max_streams_per_engine() -> u32 {
    100
}

fn default_max_label_bytes() -> u32 {
    4096
}

fn default_ended_streams_kept() -> u32 {
    1000
}

fn default_stream_unconfirmed_timeout() -> Duration {
    Duration::from_secs(3600)
}

fn default_stats_interval() -> Duration {
    Duration::from_secs(5)
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default = "default_log_format")]
    pub log_format: LogFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_protocol: Option<OtlpProtocol>,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// A trace viewer's URL with `{trace_id}` in it: the dashboard links each incident to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_ui_url: Option<String>,
}

fn default_instance() -> String {
    "default".into()
}
fn default_network() -> String {
    "acevisor".into()
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_label_prefix() -> String {
    "acevisor".into()
}
fn default_prefix() -> String {
    "acestream".into()
}
fn default_min_replicas() -> u32 {
    10
}
fn default_max_replicas() -> u32 {
    20
}
fn default_min_free() -> u32 {
    1
}
fn default_idle_grace() -> Duration {
    Duration::from_secs(30)
}
/// The image the earlier orchestrator ran by default; absent `variant` runs the real thing.
fn default_variant() -> EngineVariant {
    EngineVariant::Krinkuto11Amd64
}
fn default_http_ports() -> PortRange {
    PortRange {
        start: 40000,
        end: 44999,
    }
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_create_concurrency() -> u32 {
    8
}
fn default_health_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_unhealthy_grace() -> Duration {
    Duration::from_secs(60)
}
fn default_max_restarts() -> u32 {
    5
}
fn default_restart_window() -> Duration {
    Duration::from_secs(300)
}
fn default_mode() -> VpnMode {
    VpnMode::Redundant
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_fast_poll_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_port_settle() -> Duration {
    Duration::from_secs(3)
}
fn default_tunnel_grace() -> Duration {
    Duration::from_secs(60)
}
fn default_emergency_capacity() -> EmergencyCapacity {
    EmergencyCapacity::Reduced
}
fn default_control_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_true() -> bool {
    true
}
fn default_listen() -> String {
    "0.0.0.0:8000".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Pretty
}
fn default_service_name() -> String {
    "acevisor".into()
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            network: default_network(),
            call_timeout: default_call_timeout(),
            stop_timeout: default_stop_timeout(),
            label_prefix: default_label_prefix(),
            labels: BTreeMap::new(),
        }
    }
}

impl Default for EnginesConfig {
    fn default() -> Self {
        EnginesConfig {
            prefix: default_prefix(),
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            min_free: default_min_free(),
            idle_grace: default_idle_grace(),
            variant: default_variant(),
            image: None,
            command: None,
            env: BTreeMap::new(),
            http_ports: default_http_ports(),
            ready_timeout: default_ready_timeout(),
            create_concurrency: default_create_concurrency(),
            health: HealthConfig::default(),
            on_shutdown: OnShutdown::default(),
        }
    }
}

impl EnginesConfig {
    /// The template the config asks for (preset, with `image`/`command`/`env` overrides).
    ///
    /// For `custom` without an `image` the image is empty; validation refuses that config first.
    pub fn template(&self) -> EngineTemplate {
        let mut template = preset(self.variant).unwrap_or_else(|| EngineTemplate {
            image: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
        });
        if let Some(image) = &self.image {
            template.image = image.clone();
        }
        if let Some(command) = &self.command {
            template.command = command.clone();
        }
        template
            .env
            .extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        template
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            failure_threshold: default_failure_threshold(),
            unhealthy_grace: default_unhealthy_grace(),
            max_restarts: default_max_restarts(),
            restart_window: default_restart_window(),
        }
    }
}

impl Default for VpnConfig {
    fn default() -> Self {
        VpnConfig {
            mode: default_mode(),
            poll_interval: default_poll_interval(),
            fast_poll_interval: default_fast_poll_interval(),
            port_settle: default_port_settle(),
            tunnel_grace: default_tunnel_grace(),
            port_wait: None,
            emergency_capacity: default_emergency_capacity(),
            force_restart_after: None,
            control_timeout: default_control_timeout(),
            gluetun: Vec::new(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            api_key_env: None,
            allow_unauthenticated: false,
            stats_interval: default_stats_interval(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            max_streams: default_max_streams(),
            max_streams_per_engine: default_max_streams_per_engine(),
            max_label_bytes: default_max_label_bytes(),
            ended_streams_kept: default_ended_streams_kept(),
            stream_unconfirmed_timeout: default_stream_unconfirmed_timeout(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: default_log_format(),
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: default_service_name(),
            trace_ui_url: None,
        }
    }
}

/// One reason a config is refused, with the key path it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path} is refused:\n{}", .errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: String,
        errors: Vec<ConfigError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines(variant: EngineVariant) -> EnginesConfig {
        EnginesConfig {
            variant,
            ..EnginesConfig::default()
        }
    }

    #[test]
    fn config_overrides_the_preset() {
        let mut cfg = engines(EngineVariant::Krinkuto11Amd64);
        cfg.image = Some("mirror.local/ace:1".into());
        cfg.env.insert("BIND_ALL".into(), "".into());
        cfg.env.insert("CACHE_LIMIT".into(), "5".into());
        let t = cfg.template();
        assert_eq!(t.image, "mirror.local/ace:1");
        assert_eq!(t.env["BIND_ALL"], "");
        assert_eq!(t.env["CACHE_LIMIT"], "5");
        assert_eq!(t.env["HTTP_PORT"], "{http_port}");

        let mut cfg = engines(EngineVariant::JopsisArm64);
        cfg.command = Some(vec!["--http-port".into(), "{http_port}".into()]);
        assert_eq!(cfg.template().command, ["--http-port", "{http_port}"]);
        assert_eq!(cfg.template().image, "jopsis/acestream:arm64-v3.2.13");
    }

    #[test]
    fn custom_uses_exactly_the_config() {
        let mut cfg = engines(EngineVariant::Custom);
        cfg.image = Some("acevisor-testbed/engine:dev".into());
        cfg.env.insert("A".into(), "{name}".into());
        let t = cfg.template();
        assert_eq!(t.image, "acevisor-testbed/engine:dev");
        assert!(t.command.is_empty());
        assert_eq!(t.env.len(), 1);
    }
}
