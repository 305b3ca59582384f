//! Loading a `Config` (`Config::parse`, `Config::load`, `Config::validate`): every cross-field
//! rule, each error naming its key path; and the wording of parse errors, which `toml` reports
//! with only the innermost key.
//!
//! serde already refused unknown keys and wrong types; this module refuses what parses but
//! cannot work (inverted or overlapping port ranges, ranges too small for `max_replicas`, a mode
//! that does not match the VPN list, unknown template placeholders, zero timeouts, ...). It never
//! stops at the first problem: an operator fixing a file wants the whole list at once. Keys are
//! written the way the file spells them: `vpn.gluetun[1].engine_ports`, `engines.env.FOO`.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError, EngineVariant, LoadError, PortRange, VpnMode};
use crate::core::ports::{BLOCK, block_count};
use crate::core::template::{self, PLACEHOLDERS};

impl Config {
    /// Parses TOML text (no validation beyond types and unknown keys).
    ///
    /// The error starts with the full key path (`vpn.gluetun[1].engine_ports: ...`), then the
    /// line, column and source line: `toml` alone names only the innermost key.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| describe_parse_error(text, &e))
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: shown.clone(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|message| LoadError::Parse {
            path: shown.clone(),
            message,
        })?;
        config.validate().map_err(|errors| LoadError::Invalid {
            path: shown,
            errors,
        })?;
        Ok(config)
    }

    /// Checks every combination serde cannot: returns all problems, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        validate(self)
    }
}

/// Returns every problem found, in the order the keys appear in the default file.
pub fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
    let mut p = Problems::default();
    check_top(config, &mut p);
    check_docker(config, &mut p);
    check_engines(config, &mut p);
    check_vpn(config, &mut p);
    check_api(config, &mut p);
    check_telemetry(config, &mut p);
    if p.0.is_empty() { Ok(()) } else { Err(p.0) }
}

#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn nonzero(&mut self, key: &str, d: Duration) {
        if d.is_zero() {
            self.push(
                key,
                "must be longer than zero (write e.g. \"500ms\" or \"5s\")",
            );
        }
    }

    fn not_inverted(&mut self, key: &str, range: &PortRange) -> bool {
        if range.start > range.end {
            self.push(
                key,
                format!(
                    "range {range} is inverted: start {} is above end {}",
                    range.start, range.end
                ),
            );
            false
        } else {
            true
        }
    }

    fn holds_blocks(&mut self, key: &str, range: &PortRange, max_replicas: u32) {
        let have = block_count(range);
        if have < max_replicas {
            let needed = u64::from(max_replicas) * u64::from(BLOCK);
            self.push(
                key,
                format!(
                    "range {range} has {} ports, room for {have} engines of {BLOCK} ports each; \
                     engines.max_replicas = {max_replicas} needs at least {needed} ports",
                    range.len()
                ),
            );
        }
    }

    fn env_name(&mut self, key: &str, name: &str) {
        if name.is_empty() {
            self.push(key, "names an environment variable, must not be empty");
        } else if name.contains(['=', '\0']) || name.chars().any(char::is_whitespace) {
            self.push(
                key,
                format!(
                    "`{name}` is not a usable environment variable name (no `=`, spaces or NUL)"
                ),
            );
        }
    }

    fn http_url(&mut self, key: &str, url: &str) {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => {}
            Some(_) => self.push(key, format!("`{url}` has no host")),
            None => self.push(key, format!("`{url}` must start with http:// or https://")),
        }
    }
}

/// Docker accepts container names matching `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_docker_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A map key as TOML writes it in a dotted path: bare when it can be, quoted otherwise.
fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// `key.path: message`, then where it is and the source line with the span underlined.
pub fn describe_parse_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let mut key = toml::de::DeTable::parse(text)
        .ok()
        .and_then(|root| key_path_at(root.get_ref(), &span, ""));
    // serde reports a missing field at the table that lacks it: name the field itself.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        key = Some(match key {
            Some(table) => format!("{table}.{field}"),
            None => field.to_string(),
        });
    }
    let head = match key {
        Some(key) => format!("{key}: {message}"),
        None => message.to_string(),
    };
    format!("{head}\n{}", source_excerpt(text, &span))
}

/// ` --> line L, column C` and the source line with the span underlined.
fn source_excerpt(text: &str, span: &Range<usize>) -> String {
    let start = char_boundary_at_or_before(text, span.start);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let end = char_boundary_at_or_before(text, span.end.clamp(start, line_end));
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let source_line = text[line_start..line_end].trim_end_matches('\r');
    let width = text[start..end].chars().count().max(1);
    let gutter = " ".repeat(line_no.to_string().len());
    format!(
        "{gutter}--> line {line_no}, column {column}\n{gutter} |\n{line_no} | {source_line}\n\
         {gutter} | {}{}",
        " ".repeat(column - 1),
        "^".repeat(width)
    )
}

fn char_boundary_at_or_before(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Whether a span (empty spans count as one byte) covers the start of `error`.
fn covers(span: Range<usize>, error: &Range<usize>) -> bool {
    span.start <= error.start && error.start < span.end.max(span.start + 1)
}

/// The dotted path (`vpn.gluetun[1].engine_ports`) of the innermost key or value covering `span`.
fn key_path_at(table: &toml::de::DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let segment = key_segment(key.get_ref());
        let path = if prefix.is_empty() {
            segment
        } else {
            format!("{prefix}.{segment}")
        };
        if covers(key.span(), span) {
            return Some(path);
        }
        if let Some(found) = value_path_at(value, span, &path) {
            return Some(found);
        }
    }
    None
}

fn value_path_at(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    span: &Range<usize>,
    path: &str,
) -> Option<String> {
    let inner = match value.get_ref() {
        toml::de::DeValue::Table(t) => key_path_at(t, span, path),
        toml::de::DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| value_path_at(item, span, &format!("{path}[{i}]"))),
        _ => None,
    };
    inner.or_else(|| covers(value.span(), span).then(|| path.to_string()))
}

fn check_top(config: &Config, p: &mut Problems) {
    if config.instance.trim().is_empty() {
        p.push(
            "instance",
            "must not be empty: it tells this acevisor's containers apart",
        );
    }
}

fn check_docker(config: &Config, p: &mut Problems) {
    let d = &config.docker;
    if let Some(host) = &d.host {
        let known = ["unix://", "tcp://", "http://", "https://", "npipe://"];
        if !known.iter().any(|scheme| host.starts_with(scheme)) {
            p.push(
                "docker.host",
                format!("`{host}` must start with unix:// or tcp://"),
            );
        }
    }
    if config.vpn.mode == VpnMode::None && d.network.trim().is_empty() {
        p.push(
            "docker.network",
            "must name a Docker network in vpn.mode \"none\"",
        );
    }
    p.nonzero("docker.call_timeout", d.call_timeout);
    if d.label_prefix.is_empty() {
        p.push("docker.label_prefix", "must not be empty");
    } else if !d
        .label_prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        p.push(
            "docker.label_prefix",
            format!(
                "`{}` may only hold letters, digits, `.`, `-` and `_`",
                d.label_prefix
            ),
        );
    }
    for name in d.labels.keys() {
        if name.is_empty() {
            p.push("docker.labels", "a label name must not be empty");
        }
    }
}

fn check_engines(config: &Config, p: &mut Problems) {
    let e = &config.engines;
    if e.prefix.is_empty() {
        p.push(
            "engines.prefix",
            "must not be empty: engines are named <prefix>-N",
        );
    } else if !is_docker_name(&e.prefix) {
        p.push(
            "engines.prefix",
            format!(
                "`{}` is not usable in a Docker container name: start with a letter or digit, \
                 then letters, digits, `_`, `.` or `-`",
                e.prefix
            ),
        );
    }
    if e.max_replicas == 0 {
        p.push("engines.max_replicas", "must be at least 1");
    }
    if e.min_replicas > e.max_replicas {
        p.push(
            "engines.min_replicas",
            format!(
                "{} is above engines.max_replicas = {}",
                e.min_replicas, e.max_replicas
            ),
        );
    }
    if e.min_free > e.max_replicas {
        p.push(
            "engines.min_free",
            format!(
                "{} is above engines.max_replicas = {}",
                e.min_free, e.max_replicas
            ),
        );
    }
    match (&e.image, e.variant) {
        (None, EngineVariant::Custom) => p.push(
            "engines.image",
            "is required with engines.variant = \"custom\"",
        ),
        (Some(image), _) if image.trim().is_empty() => p.push("engines.image", "must not be empty"),
        _ => {}
    }
    if let Some(command) = &e.command {
        for (i, item) in command.iter().enumerate() {
            unknown_placeholders(p, &format!("engines.command[{i}]"), item);
        }
        // Images whose own command is the only way their engine starts, or that ignore any.
        match e.variant {
            EngineVariant::Krinkuto11Amd64 => p.push(
                "engines.command",
                "is ignored by the krinkuto11-amd64 image (its entrypoint takes the engine's                  settings from env only); remove it, or use variant = \"custom\" for another image",
            ),
            EngineVariant::JopsisAmd64 => p.push(
                "engines.command",
                "replaces the jopsis-amd64 image's own command, which is what starts its engine                  (`start-engine ${ACESTREAM_ARGS}`); give engine flags in                  engines.env.ACESTREAM_ARGS, or use variant = \"custom\" for another image",
            ),
            _ => {}
        }
    }
    for (name, value) in &e.env {
        let key = format!("engines.env.{}", key_segment(name));
        p.env_name(&key, name);
        unknown_placeholders(p, &key, value);
    }
    if p.not_inverted("engines.http_ports", &e.http_ports) && config.vpn.mode == VpnMode::None {
        p.holds_blocks("engines.http_ports", &e.http_ports, e.max_replicas);
    }
    p.nonzero("engines.ready_timeout", e.ready_timeout);
    if e.create_concurrency == 0 {
        p.push(
            "engines.create_concurrency",
            "must be at least 1, or no engine is ever created",
        );
    }
    let h = &e.health;
    p.nonzero("engines.health.interval", h.interval);
    p.nonzero("engines.health.timeout", h.timeout);
    if h.failure_threshold == 0 {
        p.push("engines.health.failure_threshold", "must be at least 1");
    }
    if h.max_restarts == 0 {
        p.push("engines.health.max_restarts", "must be at least 1");
    }
    p.nonzero("engines.health.restart_window", h.restart_window);
}

fn unknown_placeholders(p: &mut Problems, key: &str, text: &str) {
    for name in template::unknown_placeholders(text) {
        p.push(
            key,
            format!("unknown placeholder {{{name}}}; known: {}", {
                let known: Vec<String> = PLACEHOLDERS.iter().map(|k| format!("{{{k}}}")).collect();
                known.join(" ")
            }),
        );
    }
}

fn check_vpn(config: &Config, p: &mut Problems) {
    let v = &config.vpn;
    let count = v.gluetun.len();
    match v.mode {
        VpnMode::None if count > 0 => p.push(
            "vpn.mode",
            format!("\"none\" takes no [[vpn.gluetun]] entries, found {count}"),
        ),
        VpnMode::Single if count != 1 => p.push(
            "vpn.mode",
            format!("\"single\" needs exactly one [[vpn.gluetun]] entry, found {count}"),
        ),
        VpnMode::Redundant if count < 2 => p.push(
            "vpn.mode",
            format!("\"redundant\" needs at least two [[vpn.gluetun]] entries, found {count}"),
        ),
        _ => {}
    }
    p.nonzero("vpn.poll_interval", v.poll_interval);
    p.nonzero("vpn.fast_poll_interval", v.fast_poll_interval);
    if v.force_restart_after.is_some_and(|d| d.is_zero()) {
        p.push(
            "vpn.force_restart_after",
            "must be longer than zero; remove the key to never restart Gluetun",
        );
    }
    p.nonzero("vpn.control_timeout", v.control_timeout);

    let mut usable_ranges: Vec<(usize, PortRange)> = Vec::new();
    for (i, g) in v.gluetun.iter().enumerate() {
        let at = |field: &str| format!("vpn.gluetun[{i}].{field}");
        if g.container.is_empty() {
            p.push(at("container"), "must name the Gluetun container");
        } else if !is_docker_name(&g.container) {
            p.push(
                at("container"),
                format!("`{}` is not a Docker container name", g.container),
            );
        } else if let Some(first) = v.gluetun[..i]
            .iter()
            .position(|o| o.container == g.container)
        {
            p.push(
                at("container"),
                format!(
                    "`{}` is already vpn.gluetun[{first}].container",
                    g.container
                ),
            );
        }
        if let Some(url) = &g.control_url {
            p.http_url(&at("control_url"), url);
        }
        if let Some(name) = &g.api_key_env {
            p.env_name(&at("api_key_env"), name);
        }
        let key = at("engine_ports");
        if p.not_inverted(&key, &g.engine_ports) {
            p.holds_blocks(&key, &g.engine_ports, config.engines.max_replicas);
            for (j, other) in &usable_ranges {
                if g.engine_ports.overlaps(other) {
                    p.push(
                        &key,
                        format!(
                            "{} overlaps vpn.gluetun[{j}].engine_ports = {other}",
                            g.engine_ports
                        ),
                    );
                }
            }
            usable_ranges.push((i, g.engine_ports));
        }
    }
}

fn check_proxy(config: &Config, p: &mut Problems) {
    let x = &config.proxy;
    p.nonzero("proxy.start_timeout", x.start_timeout);
    p.nonzero("proxy.stall_timeout", x.stall_timeout);
    p.nonzero("proxy.failover_timeout", x.failover_timeout);
    if x.max_streams_per_engine == 0 {
        p.push("proxy.max_streams_per_engine", "must be at least 1");
    }
    if x.viewer_buffer == 0 {
        p.push("proxy.viewer_buffer", "must be at least 1");
    }
}

fn check_api(config: &Config, p: &mut Problems) {
    p.nonzero("api.stats_interval", config.api.stats_interval);
    p.nonzero("api.header_read_timeout", config.api.header_read_timeout);
    p.nonzero("api.body_read_timeout", config.api.body_read_timeout);
    if config.api.max_streams == 0 {
        p.push("api.max_streams", "must be at least 1");
    }
    if config.api.max_streams_per_engine == 0 {
        p.push("api.max_streams_per_engine", "must be at least 1");
    }
    check_proxy(config, p);
    let a = &config.api;
    match a.listen.parse::<SocketAddr>() {
        Err(_) => p.push(
            "api.listen",
            format!(
                "`{}` is not a socket address like \"0.0.0.0:8000\" or \"[::]:8000\"",
                a.listen
            ),
        ),
        // In mode none engine HTTP ports are published on the host acevisor usually runs on.
        Ok(addr)
            if config.vpn.mode == VpnMode::None
                && config.engines.http_ports.contains(addr.port()) =>
        {
            p.push(
                "api.listen",
                format!(
                    "port {} lies inside engines.http_ports = {}",
                    addr.port(),
                    config.engines.http_ports
                ),
            )
        }
        Ok(_) => {}
    }
    if let Some(name) = &a.api_key_env {
        p.env_name("api.api_key_env", name);
    }
}

/// Why the daemon must not start with this config and this key: the API listens beyond loopback
/// with no key (`key_set`: the env var named by `api.api_key_env` holds a non-empty key), and the
/// operator did not say `api.allow_unauthenticated = true`. Anyone who reaches such an API may
/// provision and remove engines. `None`: start.
pub fn open_api_refusal(config: &Config, key_set: bool) -> Option<String> {
    let a = &config.api;
    let loopback = a
        .listen
        .parse::<SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback());
    if loopback || key_set || a.allow_unauthenticated {
        return None;
    }
    let key = match &a.api_key_env {
        Some(var) => format!("the env var {var} named by api.api_key_env is unset or empty"),
        None => "api.api_key_env is absent".to_string(),
    };
    Some(format!(
        "api.listen: {} is reachable from other hosts, but no API key is set ({key}), so anyone \
         who reaches it could provision and remove engines. Set the key, listen on 127.0.0.1, or \
         set api.allow_unauthenticated = true",
        a.listen
    ))
}

fn check_telemetry(config: &Config, p: &mut Problems) {
    let t = &config.telemetry;
    if let Some(endpoint) = &t.otlp_endpoint {
        p.http_url("telemetry.otlp_endpoint", endpoint);
    }
    if t.service_name.trim().is_empty() {
        p.push("telemetry.service_name", "must not be empty");
    }
    if let Some(url) = &t.trace_ui_url {
        p.http_url("telemetry.trace_ui_url", url);
        if !url.contains("{trace_id}") {
            p.push(
                "telemetry.trace_ui_url",
                format!("`{url}` must contain {{trace_id}}, where the trace id goes"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GluetunConfig;

    fn gluetun(container: &str, start: u16, end: u16) -> GluetunConfig {
        GluetunConfig {
            container: container.into(),
            control_url: None,
            api_key_env: Some("GLUETUN_API_KEY".into()),
            engine_ports: PortRange { start, end },
            forwarding: true,
            network: None,
        }
    }

    /// Redundant, two VPNs, custom image: valid.
    fn valid() -> Config {
        let mut c: Config = Config::parse("").expect("empty file parses");
        c.engines.variant = EngineVariant::Custom;
        c.engines.image = Some("acevisor-testbed/engine:dev".into());
        c.vpn.gluetun = vec![
            gluetun("gluetun", 19000, 19499),
            gluetun("gluetun_2", 19500, 19999),
        ];
        c
    }

    fn keys(c: &Config) -> Vec<String> {
        match validate(c) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.key).collect(),
        }
    }

    fn reasons(c: &Config) -> String {
        validate(c)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_baseline_is_valid() {
        assert_eq!(validate(&valid()), Ok(()));
    }

    #[test]
    fn forwarding_without_control_url_is_fine() {
        let mut c = valid();
        c.vpn.gluetun[0].control_url = None;
        c.vpn.gluetun[0].forwarding = true;
        assert_eq!(validate(&c), Ok(()));
    }

    #[test]
    fn inverted_range_names_the_vpn() {
        let mut c = valid();
        c.vpn.gluetun[1].engine_ports = PortRange {
            start: 19999,
            end: 19500,
        };
        assert_eq!(keys(&c), ["vpn.gluetun[1].engine_ports"]);
        assert!(reasons(&c).contains("inverted"));
    }

    #[test]
    fn overlapping_ranges_are_refused_on_the_later_vpn() {
        let mut c = valid();
        c.vpn.gluetun[1].engine_ports = PortRange {
            start: 19400,
            end: 19999,
        };
        assert_eq!(keys(&c), ["vpn.gluetun[1].engine_ports"]);
        assert!(reasons(&c).contains("overlaps vpn.gluetun[0].engine_ports"));
    }

    #[test]
    fn range_must_hold_max_replicas_blocks() {
        let mut c = valid();
        c.engines.max_replicas = 20;
        c.vpn.gluetun[0].engine_ports = PortRange {
            start: 19000,
            end: 19078,
        }; // 79 ports: 19 blocks
        assert_eq!(keys(&c), ["vpn.gluetun[0].engine_ports"]);
        c.vpn.gluetun[0].engine_ports = PortRange {
            start: 19000,
            end: 19079,
        }; // 80 ports: 20 blocks
        assert_eq!(validate(&c), Ok(()));
    }

    #[test]
    fn mode_none_checks_http_ports_and_not_vpns() {
        let mut c = valid();
        c.vpn.mode = VpnMode::None;
        c.vpn.gluetun.clear();
        assert_eq!(validate(&c), Ok(()));
        c.engines.http_ports = PortRange {
            start: 40000,
            end: 40010,
        };
        assert_eq!(keys(&c), ["engines.http_ports"]);
        c.engines.http_ports = PortRange {
            start: 7990,
            end: 8100,
        };
        assert_eq!(keys(&c), ["api.listen"]);
        c.vpn.gluetun.push(gluetun("gluetun", 19000, 19499));
        assert!(keys(&c).contains(&"vpn.mode".to_string()));
    }

    #[test]
    fn http_ports_size_is_ignored_behind_a_vpn_but_inversion_is_not() {
        let mut c = valid();
        c.engines.http_ports = PortRange {
            start: 40000,
            end: 40001,
        };
        assert_eq!(validate(&c), Ok(()));
        c.engines.http_ports = PortRange {
            start: 40001,
            end: 40000,
        };
        assert_eq!(keys(&c), ["engines.http_ports"]);
    }

    #[test]
    fn replica_bounds() {
        let mut c = valid();
        c.engines.min_replicas = 21;
        c.engines.min_free = 21;
        assert_eq!(keys(&c), ["engines.min_replicas", "engines.min_free"]);
        let mut c = valid();
        c.engines.max_replicas = 0;
        c.engines.min_replicas = 0;
        c.engines.min_free = 0;
        assert_eq!(keys(&c), ["engines.max_replicas"]);
    }

    #[test]
    fn mode_and_vpn_count_must_agree() {
        let mut c = valid();
        c.vpn.mode = VpnMode::Single;
        assert_eq!(keys(&c), ["vpn.mode"]);
        c.vpn.gluetun.pop();
        assert_eq!(validate(&c), Ok(()));
        c.vpn.mode = VpnMode::Redundant;
        assert_eq!(keys(&c), ["vpn.mode"]);
        assert!(reasons(&c).contains("at least two"));
    }

    #[test]
    fn duplicate_vpn_containers() {
        let mut c = valid();
        c.vpn.gluetun[1].container = "gluetun".into();
        assert_eq!(keys(&c), ["vpn.gluetun[1].container"]);
    }

    #[test]
    fn a_command_is_refused_where_the_preset_s_image_ignores_it_or_needs_its_own() {
        let mut c = valid();
        c.engines.image = None;
        c.engines.command = Some(vec!["--http-port".into(), "{http_port}".into()]);
        for (variant, refused) in [
            (EngineVariant::Krinkuto11Amd64, Some("ignored")),
            (EngineVariant::JopsisAmd64, Some("ACESTREAM_ARGS")),
            (EngineVariant::JopsisArm32, None),
            (EngineVariant::JopsisArm64, None),
        ] {
            c.engines.variant = variant;
            match refused {
                Some(word) => {
                    assert_eq!(keys(&c), ["engines.command"], "{variant:?}");
                    assert!(reasons(&c).contains(word), "{variant:?}: {}", reasons(&c));
                }
                None => assert_eq!(validate(&c), Ok(()), "{variant:?}"),
            }
        }
    }

    #[test]
    fn custom_needs_an_image_presets_do_not() {
        let mut c = valid();
        c.engines.image = None;
        assert_eq!(keys(&c), ["engines.image"]);
        c.engines.variant = EngineVariant::JopsisAmd64;
        assert_eq!(validate(&c), Ok(()));
        let mut default = Config::parse("").expect("empty file parses");
        default.vpn.gluetun = valid().vpn.gluetun;
        assert_eq!(default.engines.variant, EngineVariant::Krinkuto11Amd64);
        assert_eq!(
            validate(&default),
            Ok(()),
            "the default variant is a preset"
        );
    }

    #[test]
    fn unknown_placeholders_name_the_item() {
        let mut c = valid();
        c.engines.command = Some(vec!["--port".into(), "{p2p}".into()]);
        c.engines
            .env
            .insert("ARGS".into(), "--x {foo} {http_port}".into());
        c.engines.env.insert("".into(), "v".into());
        assert_eq!(
            keys(&c),
            ["engines.command[1]", "engines.env.\"\"", "engines.env.ARGS"]
        );
        assert!(reasons(&c).contains("{p2p}"));
    }

    #[test]
    fn zero_durations_and_counts() {
        let mut c = valid();
        c.vpn.poll_interval = Duration::ZERO;
        c.docker.call_timeout = Duration::ZERO;
        c.engines.health.interval = Duration::ZERO;
        c.engines.health.timeout = Duration::ZERO;
        c.vpn.control_timeout = Duration::ZERO;
        c.engines.health.failure_threshold = 0;
        c.engines.health.max_restarts = 0;
        assert_eq!(
            keys(&c),
            [
                "docker.call_timeout",
                "engines.health.interval",
                "engines.health.timeout",
                "engines.health.failure_threshold",
                "engines.health.max_restarts",
                "vpn.poll_interval",
                "vpn.control_timeout",
            ]
        );
    }

    #[test]
    fn names_and_addresses() {
        let mut c = valid();
        c.engines.prefix = "-ace".into();
        c.api.listen = "localhost:8000".into();
        c.telemetry.otlp_endpoint = Some("jaeger:4317".into());
        c.vpn.gluetun[0].control_url = Some("gluetun:8000".into());
        c.vpn.gluetun[1].api_key_env = Some(String::new());
        c.api.api_key_env = Some(String::new());
        assert_eq!(
            keys(&c),
            [
                "engines.prefix",
                "vpn.gluetun[0].control_url",
                "vpn.gluetun[1].api_key_env",
                "api.listen",
                "api.api_key_env",
                "telemetry.otlp_endpoint",
            ]
        );
        let mut c = valid();
        c.engines.prefix = String::new();
        assert_eq!(keys(&c), ["engines.prefix"]);
        c.engines.prefix = "ace_stream.v2-x".into();
        c.api.listen = "[::]:9000".into();
        c.telemetry.otlp_endpoint = Some("https://otel:4318".into());
        assert_eq!(validate(&c), Ok(()));
    }

    #[test]
    fn trace_ui_url_needs_a_host_and_the_trace_id() {
        let mut c = valid();
        c.telemetry.trace_ui_url = Some("http://jaeger:16686/trace/{trace_id}".into());
        assert_eq!(validate(&c), Ok(()));
        c.telemetry.trace_ui_url = Some("http://jaeger:16686/trace/".into());
        assert_eq!(keys(&c), ["telemetry.trace_ui_url"]);
        c.telemetry.trace_ui_url = Some("jaeger/{trace_id}".into());
        assert_eq!(keys(&c), ["telemetry.trace_ui_url"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = valid();
        c.engines.min_replicas = 30;
        c.vpn.gluetun[1].container = "gluetun".into();
        c.vpn.gluetun[1].engine_ports = PortRange {
            start: 19000,
            end: 19010,
        };
        c.api.listen = "nope".into();
        let found = keys(&c);
        assert_eq!(
            found,
            [
                "engines.min_replicas",
                "vpn.gluetun[1].container",
                "vpn.gluetun[1].engine_ports",
                "vpn.gluetun[1].engine_ports",
                "api.listen",
            ],
            "{}",
            reasons(&c)
        );
    }

    fn parse_error(text: &str) -> String {
        Config::parse(text).expect_err("must be refused")
    }

    #[test]
    fn parse_errors_name_the_full_key_path_and_position() {
        let e = parse_error("[engines]\nimage = \"x\"\nfoo = 1\n");
        assert!(e.starts_with("engines.foo: unknown field `foo`"), "{e}");
        assert!(e.contains("line 3, column 1"), "{e}");

        let text = "[[vpn.gluetun]]\ncontainer = \"a\"\nengine_ports = \"1-100\"\n\
                    [[vpn.gluetun]]\ncontainer = \"b\"\nengine_ports = 7\n";
        let e = parse_error(text);
        assert!(
            e.starts_with("vpn.gluetun[1].engine_ports: invalid type"),
            "{e}"
        );
        assert!(
            e.contains("6 | engine_ports = 7\n  |                ^"),
            "{e}"
        );

        let e = parse_error("[[vpn.gluetun]]\ncontainer = \"a\"\n");
        assert!(
            e.starts_with("vpn.gluetun[0].engine_ports: missing field"),
            "{e}"
        );

        let e = parse_error("vpn.gluetun = [{container = \"a\", engine_ports = \"1-9\", x = 1}]");
        assert!(e.starts_with("vpn.gluetun[0].x: unknown field"), "{e}");

        let e = parse_error("[engines]\nenv = { \"MY VAR\" = 1 }\n");
        assert!(e.starts_with("engines.env.\"MY VAR\": invalid type"), "{e}");
    }

    #[test]
    fn parse_errors_after_multibyte_text_point_at_the_right_column() {
        let e = parse_error("instance = \"é\" ; x\n");
        assert!(e.contains("line 1, column 16"), "{e}");
        let e = parse_error("[engines]\nprefix = \"ñandú\"\nmin_replicas = \"ñ\"\n");
        assert!(e.starts_with("engines.min_replicas: invalid type"), "{e}");
        assert!(e.contains("line 3, column 16"), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_position_even_without_a_key() {
        let e = parse_error("[engines\n");
        assert!(e.contains("line 1"), "{e}");
    }

    proptest::proptest! {
        /// Whatever the bytes, parsing and validating answer with errors, never a panic.
        #[test]
        fn bad_input_never_panics(
            text in "(\\[|\\]|\\{|\\}|=|\"|#|\n|[a-z_.]{1,12}| |[0-9-]{1,6}|é){0,40}",
        ) {
            if let Ok(config) = Config::parse(&text) {
                let _ = validate(&config);
            }
        }

        /// Damaging the shipped default anywhere yields an error or a config, never a panic.
        #[test]
        fn damaged_default_never_panics(at in 0usize..4000, len in 0usize..40, junk in "[\\[\\]{}=\"#\n a-z0-9é]{0,8}") {
            let text = include_str!("../config/acevisor.toml");
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) { at -= 1; }
            let mut end = (at + len).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            let damaged = format!("{}{junk}{}", &text[..at], &text[end..]);
            if let Ok(config) = Config::parse(&damaged) {
                let _ = validate(&config);
            }
        }
    }

    #[test]
    fn an_api_open_beyond_loopback_without_a_key_is_refused_unless_allowed() {
        let mut c = valid();
        c.api.listen = "0.0.0.0:8000".into();
        c.api.api_key_env = Some("ACEVISOR_API_KEY".into());
        let why = open_api_refusal(&c, false).expect("refused");
        assert!(
            why.contains("api.listen") && why.contains("ACEVISOR_API_KEY"),
            "{why}"
        );
        assert!(why.contains("allow_unauthenticated"), "{why}");
        assert_eq!(open_api_refusal(&c, true), None, "a key is set");
        c.api.allow_unauthenticated = true;
        assert_eq!(open_api_refusal(&c, false), None, "allowed");
        c.api.allow_unauthenticated = false;
        for local in ["127.0.0.1:8000", "[::1]:8000"] {
            c.api.listen = local.into();
            assert_eq!(open_api_refusal(&c, false), None, "{local}");
        }
        c.api.listen = "[::]:8000".into();
        c.api.api_key_env = None;
        assert!(open_api_refusal(&c, false).unwrap().contains("absent"));
    }

    #[test]
    fn api_client_bounds_must_not_be_zero() {
        let mut c = valid();
        c.api.header_read_timeout = Duration::ZERO;
        c.api.body_read_timeout = Duration::ZERO;
        c.api.max_streams = 0;
        c.api.max_streams_per_engine = 0;
        assert_eq!(
            keys(&c),
            [
                "api.header_read_timeout",
                "api.body_read_timeout",
                "api.max_streams",
                "api.max_streams_per_engine",
            ]
        );
    }
}
