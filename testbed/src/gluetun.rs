//! The fake Gluetun control server: its state (VPN status, forwarded port, health), the version
//! profile it plays (`FAKE_GLUETUN_VERSION`: routes, status codes, answer shapes, see
//! [`version`]), the roles that guard its routes ([`roles`]) and the routing of every `/v1/`
//! route plus the test-only `/testbed/` routes. Timed transitions (startup, the delay before a
//! port is forwarded, reconnect) are stored as deadlines and settled lazily against a given
//! `Instant`, so the logic is tested without threads or sleeps.

pub mod port_hook;
pub mod role_file;
pub mod roles;
pub mod version;

use crate::http::{Reply, Request, Response};
use crate::json;
use roles::{Access, Roles};
use std::sync::Mutex;
use std::time::{Duration, Instant};
pub use version::Version;

/// Address the control server listens on, as in the real image.
pub const LISTEN: &str = "0.0.0.0:8000";
/// What the healthcheck subcommand asks.
pub const HEALTHZ_ADDR: &str = "127.0.0.1:8000";
pub const HEALTHZ_PATH: &str = "/testbed/healthz";
pub const PUBLIC_IP: &str = "203.0.113.7";

/// Settings read from the environment at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `FAKE_GLUETUN_VERSION`: the Gluetun version to play (default 3.41).
    pub version: Version,
    /// `FAKE_API_KEY`: adds a role `fake_api_key` (auth `apikey`) listing acevisor's routes the
    /// version knows; no effect on 3.38, which has no authentication.
    pub api_key: Option<String>,
    /// `FAKE_FORWARDED_PORT`: port forwarded from the start (0 = none); the first of a
    /// comma-separated list (`40001,40002`: some providers forward several).
    pub forwarded_port: u16,
    /// The rest of that list: more ports forwarded from the start.
    pub more_ports: Vec<u16>,
    /// `FAKE_STARTUP_MS`: how long the status reads `starting`.
    pub startup: Duration,
    /// `FAKE_PORT_DELAY_MS`: how long the port reads 0 after the tunnel comes up (at start, after
    /// `PUT /v1/vpn/status` running and after a reconnect).
    pub port_delay: Duration,
    /// `HTTP_CONTROL_SERVER_AUTH_CONFIG_FILEPATH`: the role file (default as Gluetun's).
    pub auth_file: String,
    /// `HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE` (v3.41+): JSON role for routes no role lists.
    pub default_role: Option<String>,
    /// `FAKE_PUBLIC_IP`: the tunnel's exit address (default `PUBLIC_IP`).
    pub public_ip: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            version: Version::default(),
            api_key: None,
            forwarded_port: 0,
            more_ports: Vec::new(),
            startup: Duration::ZERO,
            port_delay: Duration::ZERO,
            auth_file: roles::DEFAULT_PATH.to_string(),
            default_role: None,
            public_ip: PUBLIC_IP.to_string(),
        }
    }
}

impl Config {
    /// Reads the config through `env` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let version = match set("FAKE_GLUETUN_VERSION") {
            None => Version::default(),
            Some(v) => Version::parse(&v)?,
        };
        let ports: Vec<u16> = match set("FAKE_FORWARDED_PORT") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .map(|p| {
                    p.parse()
                        .map_err(|_| format!("FAKE_FORWARDED_PORT is not a port list: {p:?}"))
                })
                .collect::<Result<_, _>>()?,
        };
        let forwarded_port = ports.first().copied().unwrap_or(0);
        let more_ports = ports.iter().skip(1).copied().collect();
        let ms = |k: &str| {
            crate::parse_ms(env(k))
                .map_err(|e| format!("{k}: {e}"))
                .map(|v| v.map(Duration::from_millis).unwrap_or_default())
        };
        Ok(Config {
            version,
            api_key: env("FAKE_API_KEY").filter(|k| !k.is_empty()),
            forwarded_port,
            more_ports,
            startup: ms("FAKE_STARTUP_MS")?,
            port_delay: ms("FAKE_PORT_DELAY_MS")?,
            auth_file: set(roles::PATH_ENV).unwrap_or_else(|| roles::DEFAULT_PATH.to_string()),
            default_role: set(roles::DEFAULT_ROLE_ENV),
            public_ip: set("FAKE_PUBLIC_IP").unwrap_or_else(|| PUBLIC_IP.to_string()),
        })
    }
}

#[derive(Debug)]
struct State {
    /// Status once startup is over; `Running` or `Stopped` here.
    running: bool,
    /// Port forwarded while running.
    port: u16,
    /// More ports forwarded with it (`PUT /testbed/ports`; some providers forward several).
    more_ports: Vec<u16>,
    healthy: bool,
    starting_until: Option<Instant>,
    /// While running, the port reads 0 until then.
    port_from: Option<Instant>,
    /// Pending end of an internal reconnect: when, and the port it brings.
    reconnect: Option<(Instant, u16)>,
}

impl State {
    fn settle(&mut self, now: Instant, port_delay: Duration) {
        if self.starting_until.is_some_and(|t| now >= t) {
            self.starting_until = None;
        }
        if let Some((at, port)) = self.reconnect
            && now >= at
        {
            self.reconnect = None;
            self.running = true;
            self.port = port;
            self.port_from = Some(at + port_delay);
        }
        if self.port_from.is_some_and(|t| now >= t) {
            self.port_from = None;
        }
    }

    fn starting(&self) -> bool {
        self.starting_until.is_some()
    }

    fn status(&self) -> &'static str {
        match (self.starting(), self.running) {
            (true, _) => "starting",
            (false, true) => "running",
            (false, false) => "stopped",
        }
    }

    fn forwarded(&self) -> u16 {
        if self.status() == "running" && self.port_from.is_none() {
            self.port
        } else {
            0
        }
    }

    /// Every forwarded port (empty when none).
    fn forwarded_all(&self) -> Vec<u16> {
        match self.forwarded() {
            0 => Vec::new(),
            p => std::iter::once(p)
                .chain(self.more_ports.iter().copied())
                .collect(),
        }
    }
}

/// The fake control server.
#[derive(Debug)]
pub struct Gluetun {
    version: Version,
    roles: Roles,
    port_delay: Duration,
    public_ip: String,
    state: Mutex<State>,
}

impl Gluetun {
    /// A server that started at `now`, with the role file's text (`None` = no file). The error
    /// is the line the real Gluetun logs before it exits 1.
    pub fn new(config: Config, role_file: Option<&str>, now: Instant) -> Result<Gluetun, String> {
        let roles = Roles::build(
            config.version,
            role_file,
            config.api_key.as_deref(),
            config.default_role.as_deref(),
        )?;
        let starting_until = (!config.startup.is_zero()).then(|| now + config.startup);
        let port_from =
            (!config.port_delay.is_zero()).then(|| now + config.startup + config.port_delay);
        Ok(Gluetun {
            version: config.version,
            roles,
            port_delay: config.port_delay,
            public_ip: config.public_ip.clone(),
            state: Mutex::new(State {
                running: true,
                port: config.forwarded_port,
                more_ports: config.more_ports.clone(),
                healthy: true,
                starting_until,
                port_from,
                reconnect: None,
            }),
        })
    }

    /// The forwarded ports the control server answers at `now` (empty when none).
    pub fn forwarded_ports(&self, now: Instant) -> Vec<u16> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.settle(now, self.port_delay);
        st.forwarded_all()
    }

    /// The version played.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The roles in force, in one line (for the start-up log).
    pub fn describe_auth(&self) -> String {
        self.roles.describe()
    }

    /// Answers one request as of `now`.
    pub fn handle(&self, req: &Request, now: Instant) -> Reply {
        Reply::Send(self.respond(req, now))
    }

    fn respond(&self, req: &Request, now: Instant) -> Response {
        if req.path.starts_with("/testbed/") {
            return self.testbed(req, now);
        }
        let v = self.version;
        let (method, path) = (req.method.as_str(), req.path.as_str());
        if v.not_found_before_auth() {
            if !v.is_valid_path(path) {
                return Response::text(404, "Not Found");
            }
            if !v.is_valid_route(&format!("{method} {path}")) {
                return Response::text(405, "Method Not Allowed");
            }
        }
        match self.roles.check(method, path, req) {
            Access::Allowed => self.control(req, now),
            Access::NoRole | Access::Refused { basic: false } => {
                Response::text(401, "Unauthorized")
            }
            Access::Refused { basic: true } => Response::text(401, "Unauthorized").with_header(
                "WWW-Authenticate",
                r#"Basic realm="restricted", charset="UTF-8""#,
            ),
        }
    }

    /// The control server's handler, once auth let the request through.
    fn control(&self, req: &Request, now: Instant) -> Response {
        let v = self.version;
        let (method, path) = (req.method.as_str(), req.path.as_str());
        let Some(sub) = path.strip_prefix("/v1") else {
            return Response::text(404, "404 page not found");
        };
        let methods: &[&str] = match path {
            "/v1/vpn/status" => &["GET", "PUT"],
            "/v1/portforward" if v.has_portforward_route() => &["GET"],
            "/v1/openvpn/portforwarded" | "/v1/publicip/ip" | "/v1/version" => &["GET"],
            _ if v.is_valid_path(path) => {
                return Response::text(501, &format!("{method} {path} is not faked"));
            }
            // Gluetun's v1 handler: an unknown route is a bad request.
            _ => return Response::text(400, &format!("{method} {sub} not found")),
        };
        if !methods.contains(&method) {
            return Response::text(400, &format!("method {method} not supported"));
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.settle(now, self.port_delay);
        match (method, path) {
            ("GET", "/v1/vpn/status") => {
                Response::json(200, format!("{{\"status\":{}}}", json::string(st.status())))
            }
            ("PUT", "/v1/vpn/status") => match json::get_str(&req.body_text(), "status").as_deref()
            {
                Some("stopped") => {
                    st.running = false;
                    st.reconnect = None;
                    Response::json(200, r#"{"outcome":"stopped"}"#)
                }
                Some("running") => {
                    st.running = true;
                    st.reconnect = None;
                    st.port_from = (!self.port_delay.is_zero()).then(|| now + self.port_delay);
                    Response::json(200, r#"{"outcome":"running"}"#)
                }
                _ => Response::text(400, "status must be \"stopped\" or \"running\""),
            },
            ("GET", "/v1/portforward") => Response::json(200, port_body(v, &st.forwarded_all())),
            ("GET", "/v1/openvpn/portforwarded") if v.has_portforward_route() => Response::new(
                301,
                "text/html; charset=utf-8",
                "<a href=\"/v1/portforward\">Moved Permanently</a>.\n\n",
            )
            .with_header("Location", "/v1/portforward"),
            ("GET", "/v1/openvpn/portforwarded") => {
                Response::json(200, port_body(v, &st.forwarded_all()))
            }
            ("GET", "/v1/publicip/ip") => {
                // Gluetun looks its exit address up once the tunnel is up; none before.
                let ip = if st.starting() || !st.running {
                    ""
                } else {
                    self.public_ip.as_str()
                };
                Response::json(
                    200,
                    format!(
                        "{{\"public_ip\":{},\"country\":\"Testland\"}}",
                        json::string(ip)
                    ),
                )
            }
            _ => Response::json(
                200,
                format!(
                    "{{\"version\":{},\"commit\":\"testbed\",\"created\":\"2026-01-01T00:00:00Z\"}}",
                    json::string(v.reported())
                ),
            ),
        }
    }

    /// The test-only routes (never guarded).
    fn testbed(&self, req: &Request, now: Instant) -> Response {
        let allowed: &[&str] = match req.path.as_str() {
            "/testbed/healthz" => &["GET"],
            "/testbed/port" | "/testbed/ports" | "/testbed/health" => &["PUT"],
            "/testbed/reconnect" => &["POST"],
            _ => return Response::text(404, "404 page not found"),
        };
        if !allowed.contains(&req.method.as_str()) {
            return Response::text(405, "Method Not Allowed")
                .with_header("Allow", &allowed.join(", "));
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.settle(now, self.port_delay);
        let body = req.body_text();
        match req.path.as_str() {
            "/testbed/port" => match json::get_uint::<u16>(&body, "port") {
                Some(p) => {
                    st.port = p;
                    st.more_ports.clear();
                    Response::json(200, format!("{{\"port\":{p}}}"))
                }
                None => Response::text(400, "body must be {\"port\": <0-65535>}"),
            },
            "/testbed/ports" => match parse_ports(&body) {
                Some(ports) => {
                    st.port = ports.first().copied().unwrap_or(0);
                    st.more_ports = ports.iter().skip(1).copied().collect();
                    Response::json(200, format!("{{\"ports\":{ports:?}}}"))
                }
                None => Response::text(400, "body must be {\"ports\": [<1-65535>, ...]}"),
            },
            "/testbed/health" => match json::get_bool(&body, "healthy") {
                Some(h) => {
                    st.healthy = h;
                    Response::json(200, format!("{{\"healthy\":{h}}}"))
                }
                None => Response::text(400, "body must be {\"healthy\": true|false}"),
            },
            "/testbed/reconnect" => {
                let port = json::get_uint::<u16>(&body, "port");
                let after = json::get_uint::<u64>(&body, "after_ms").unwrap_or(0);
                match port {
                    Some(p) => {
                        st.running = false;
                        st.reconnect = Some((now + Duration::from_millis(after), p));
                        Response::json(200, format!("{{\"port\":{p},\"after_ms\":{after}}}"))
                    }
                    None => Response::text(400, "body must be {\"port\": N, \"after_ms\": M}"),
                }
            }
            _ => {
                if st.healthy && !st.starting() {
                    Response::text(200, "healthy")
                } else {
                    Response::text(503, "unhealthy")
                }
            }
        }
    }
}

/// `{"ports":[a,b,...]}` -> the ports (non-zero, in order); `None` when malformed.
fn parse_ports(body: &str) -> Option<Vec<u16>> {
    let after = &body[body.find("\"ports\"")? + 7..];
    let open = after.find('[')?;
    if !after[..open]
        .trim()
        .trim_start_matches(':')
        .trim()
        .is_empty()
    {
        return None;
    }
    let list = &after[open + 1..open + after[open..].find(']')?];
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u16>().ok().filter(|&p| p != 0))
        .collect()
}

/// The port answer: HEAD sends `port` and `ports` (`null` when none); earlier versions send
/// `{"port":N}` for zero or one forwarded port and `{"ports":[...]}` for several.
fn port_body(version: Version, ports: &[u16]) -> String {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match (version.port_and_ports(), ports) {
        (true, []) => r#"{"port":0,"ports":null}"#.to_string(),
        (true, [first, ..]) => format!("{{\"port\":{first},\"ports\":[{list}]}}"),
        (false, []) => r#"{"port":0}"#.to_string(),
        (false, [p]) => format!("{{\"port\":{p}}}"),
        (false, _) => format!("{{\"ports\":[{list}]}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(g: &Gluetun, req: Request, now: Instant) -> Response {
        match g.handle(&req, now) {
            Reply::Send(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn get(g: &Gluetun, path: &str, now: Instant) -> (u16, String) {
        let r = send(g, Request::new("GET", path), now);
        (r.status, String::from_utf8(r.body).unwrap())
    }

    fn call(g: &Gluetun, method: &str, path: &str, body: &str, now: Instant) -> (u16, String) {
        let r = send(g, Request::new(method, path).with_body(body), now);
        (r.status, String::from_utf8(r.body).unwrap())
    }

    fn cfg(port: u16) -> Config {
        Config {
            forwarded_port: port,
            ..Config::default()
        }
    }

    fn at(version: Version, port: u16) -> Config {
        Config {
            version,
            ..cfg(port)
        }
    }

    fn fake(config: Config, now: Instant) -> Gluetun {
        Gluetun::new(config, None, now).unwrap()
    }

    #[test]
    fn config_from_env() {
        let env = |k: &str| match k {
            "FAKE_GLUETUN_VERSION" => Some("3.40".to_string()),
            "FAKE_API_KEY" => Some("s3cret".to_string()),
            "FAKE_FORWARDED_PORT" => Some("40001".to_string()),
            "FAKE_STARTUP_MS" => Some("250".to_string()),
            "FAKE_PORT_DELAY_MS" => Some("750".to_string()),
            "HTTP_CONTROL_SERVER_AUTH_CONFIG_FILEPATH" => Some("/etc/roles.toml".to_string()),
            _ => None,
        };
        let c = Config::from_env(env).unwrap();
        assert_eq!(c.version, Version::V3_40);
        assert_eq!(c.api_key.as_deref(), Some("s3cret"));
        assert_eq!(c.forwarded_port, 40001);
        let several =
            Config::from_env(|k| (k == "FAKE_FORWARDED_PORT").then(|| "40001, 40002".to_string()))
                .unwrap();
        assert_eq!(
            (several.forwarded_port, several.more_ports),
            (40001, vec![40002])
        );
        let now = Instant::now();
        let g = fake(
            Config::from_env(|k| (k == "FAKE_FORWARDED_PORT").then(|| "40001,40002".into()))
                .unwrap(),
            now,
        );
        assert_eq!(g.forwarded_ports(now), vec![40001, 40002]);
        assert!(Config::from_env(|k| (k == "FAKE_FORWARDED_PORT").then(|| "1,x".into())).is_err());
        assert_eq!(c.startup, Duration::from_millis(250));
        assert_eq!(c.port_delay, Duration::from_millis(750));
        assert_eq!(c.auth_file, "/etc/roles.toml");
        let d = Config::from_env(|_| None).unwrap();
        assert_eq!(d, Config::default());
        assert_eq!(d.version, Version::V3_41);
        assert_eq!(d.auth_file, "/gluetun/auth/config.toml");
        assert!(Config::from_env(|k| (k == "FAKE_FORWARDED_PORT").then(|| "x".into())).is_err());
        assert!(Config::from_env(|k| (k == "FAKE_STARTUP_MS").then(|| "-1".into())).is_err());
        assert!(Config::from_env(|k| (k == "FAKE_PORT_DELAY_MS").then(|| "soon".into())).is_err());
        let bad = Config::from_env(|k| (k == "FAKE_GLUETUN_VERSION").then(|| "4".into()));
        assert!(bad.unwrap_err().contains("FAKE_GLUETUN_VERSION"));
    }

    #[test]
    fn status_port_and_static_routes_of_3_41() {
        let now = Instant::now();
        let g = fake(cfg(40000), now);
        assert_eq!(
            get(&g, "/v1/vpn/status", now),
            (200, r#"{"status":"running"}"#.into())
        );
        assert_eq!(
            get(&g, "/v1/portforward", now),
            (200, r#"{"port":40000}"#.into())
        );
        let (code, body) = get(&g, "/v1/publicip/ip", now);
        assert_eq!(
            (code, body.as_str()),
            (200, r#"{"public_ip":"203.0.113.7","country":"Testland"}"#)
        );
        let (code, body) = get(&g, "/v1/version", now);
        assert_eq!(code, 200);
        assert!(body.starts_with(r#"{"version":"v3.41.1","commit":"testbed","created":""#));
        let legacy = send(&g, Request::new("GET", "/v1/openvpn/portforwarded"), now);
        assert_eq!(legacy.status, 301);
        assert!(
            legacy
                .headers
                .contains(&("Location".into(), "/v1/portforward".into()))
        );
        // The built-in public role lists neither: auth answers before the handler.
        assert_eq!(get(&g, "/v1/nope", now).0, 401);
        assert_eq!(call(&g, "POST", "/v1/portforward", "", now).0, 401);
        assert_eq!(call(&g, "GET", "/testbed/port", "", now).0, 405);
        assert_eq!(get(&g, "/testbed/nope", now).0, 404);
    }

    /// One row of the matrix per version: status route, both port routes, an unknown route.
    #[test]
    fn version_matrix_without_a_role_file() {
        let now = Instant::now();
        let rows: [(Version, u16, &str, u16, &str, u16); 5] = [
            (
                Version::V3_38,
                400,
                "GET /portforward not found\n",
                200,
                r#"{"port":40000}"#,
                400,
            ),
            (
                Version::V3_39,
                401,
                "Unauthorized\n",
                200,
                r#"{"port":40000}"#,
                401,
            ),
            (
                Version::V3_40,
                401,
                "Unauthorized\n",
                200,
                r#"{"port":40000}"#,
                401,
            ),
            (Version::V3_41, 200, r#"{"port":40000}"#, 301, "", 401),
            // HEAD denies by default: even the status route.
            (
                Version::Head,
                401,
                "Unauthorized\n",
                401,
                "Unauthorized\n",
                404,
            ),
        ];
        for (v, pf_code, pf_body, legacy_code, legacy_body, unknown) in rows {
            let g = fake(at(v, 40000), now);
            let status = if v == Version::Head { 401 } else { 200 };
            assert_eq!(get(&g, "/v1/vpn/status", now).0, status, "{v:?}");
            assert_eq!(
                get(&g, "/v1/portforward", now),
                (pf_code, pf_body.into()),
                "{v:?}"
            );
            let (code, body) = get(&g, "/v1/openvpn/portforwarded", now);
            assert_eq!(code, legacy_code, "{v:?}");
            if legacy_code == 200 {
                assert_eq!(body, legacy_body, "{v:?}");
            }
            assert_eq!(get(&g, "/v1/nope", now).0, unknown, "{v:?}");
        }
    }

    #[test]
    fn version_route_reports_the_profile() {
        let now = Instant::now();
        for (v, want) in [
            (Version::V3_38, "v3.38.1"),
            (Version::V3_39, "v3.39.1"),
            (Version::V3_40, "v3.40.4"),
            (Version::V3_41, "v3.41.1"),
            (Version::Head, "latest"),
        ] {
            let c = Config {
                api_key: Some("k".into()),
                ..at(v, 0)
            };
            let g = fake(c, now);
            let r = send(
                &g,
                Request::new("GET", "/v1/version").with_header("X-API-Key", "k"),
                now,
            );
            let body = String::from_utf8(r.body).unwrap();
            assert!(body.contains(&format!(r#""version":"{want}""#)), "{body}");
        }
    }

    #[test]
    fn head_answers_404_and_405_before_auth_and_both_port_fields() {
        let now = Instant::now();
        let c = Config {
            api_key: Some("k".into()),
            ..at(Version::Head, 40000)
        };
        let g = fake(c, now);
        assert_eq!(get(&g, "/v1/nope", now), (404, "Not Found\n".into()));
        assert_eq!(call(&g, "POST", "/v1/portforward", "", now).0, 405);
        let key = |path: &str| Request::new("GET", path).with_header("X-API-Key", "k");
        let r = send(&g, key("/v1/portforward"), now);
        assert_eq!(r.body, br#"{"port":40000,"ports":[40000]}"#);
        assert_eq!(send(&g, key("/v1/openvpn/portforwarded"), now).status, 301);
        let c = Config {
            api_key: Some("k".into()),
            ..at(Version::Head, 0)
        };
        let g = fake(c, now);
        let r = send(&g, key("/v1/portforward"), now);
        assert_eq!(r.body, br#"{"port":0,"ports":null}"#);
    }

    #[test]
    fn v3_38_ignores_keys_and_answers_400_for_wrong_methods() {
        let now = Instant::now();
        let c = Config {
            api_key: Some("k".into()),
            ..at(Version::V3_38, 40000)
        };
        let g = fake(c, now);
        assert_eq!(get(&g, "/v1/vpn/status", now).0, 200, "no auth at all");
        assert_eq!(
            call(&g, "POST", "/v1/openvpn/portforwarded", "", now),
            (400, "method POST not supported\n".into())
        );
    }

    #[test]
    fn role_file_guards_routes_and_bad_files_fail_start() {
        let now = Instant::now();
        let file = "[[roles]]\nname = \"acevisor\"\nauth = \"apikey\"\napikey = \"k\"\n\
                    routes = [\"GET /v1/vpn/status\", \"GET /v1/openvpn/portforwarded\"]\n";
        let g = Gluetun::new(at(Version::V3_40, 41000), Some(file), now).unwrap();
        let key = |path: &str| Request::new("GET", path).with_header("X-API-Key", "k");
        assert_eq!(send(&g, key("/v1/vpn/status"), now).status, 200);
        assert_eq!(
            send(&g, key("/v1/openvpn/portforwarded"), now).body,
            br#"{"port":41000}"#
        );
        assert_eq!(send(&g, key("/v1/portforward"), now).status, 401);
        assert_eq!(
            send(&g, key("/v1/publicip/ip"), now).status,
            401,
            "not listed"
        );
        let listed = file.replace("/v1/openvpn/portforwarded", "/v1/portforward");
        let err = Gluetun::new(at(Version::V3_39, 0), Some(&listed), now).unwrap_err();
        assert!(
            err.ends_with("route not supported by the control server: GET /v1/portforward"),
            "{err}"
        );
        assert!(Gluetun::new(at(Version::V3_41, 0), Some(&listed), now).is_ok());
        assert!(Gluetun::new(at(Version::V3_41, 0), Some("[[roles]\n"), now).is_err());
    }

    #[test]
    fn no_port_reads_zero() {
        let now = Instant::now();
        let g = fake(cfg(0), now);
        assert_eq!(get(&g, "/v1/portforward", now).1, r#"{"port":0}"#);
        assert_eq!(
            call(&g, "PUT", "/testbed/port", r#"{"port": 41234}"#, now).0,
            200
        );
        assert_eq!(get(&g, "/v1/portforward", now).1, r#"{"port":41234}"#);
        assert_eq!(
            call(&g, "PUT", "/testbed/port", r#"{"port": 70000}"#, now).0,
            400
        );
    }

    #[test]
    fn put_status_stops_and_starts_the_tunnel() {
        let now = Instant::now();
        let g = fake(cfg(40000), now);
        let stop = call(&g, "PUT", "/v1/vpn/status", r#"{"status":"stopped"}"#, now);
        assert_eq!(stop, (200, r#"{"outcome":"stopped"}"#.into()));
        assert_eq!(get(&g, "/v1/vpn/status", now).1, r#"{"status":"stopped"}"#);
        assert_eq!(get(&g, "/v1/portforward", now).1, r#"{"port":0}"#);
        let start = call(&g, "PUT", "/v1/vpn/status", r#"{"status":"running"}"#, now);
        assert_eq!(start, (200, r#"{"outcome":"running"}"#.into()));
        assert_eq!(get(&g, "/v1/portforward", now).1, r#"{"port":40000}"#);
        let bad = call(&g, "PUT", "/v1/vpn/status", r#"{"status":"paused"}"#, now);
        assert_eq!(bad.0, 400);
        assert!(!bad.1.starts_with('{'), "400 is plain text");
    }

    #[test]
    fn public_ip_is_the_configured_one_and_none_while_stopped() {
        let now = Instant::now();
        let c = Config::from_env(|k| (k == "FAKE_PUBLIC_IP").then(|| "198.51.100.9".into()));
        let g = fake(
            Config {
                forwarded_port: 40000,
                ..c.unwrap()
            },
            now,
        );
        let ip = |g: &Gluetun| get(g, "/v1/publicip/ip", now).1;
        assert!(
            ip(&g).contains(r#""public_ip":"198.51.100.9""#),
            "{}",
            ip(&g)
        );
        call(&g, "PUT", "/v1/vpn/status", r#"{"status":"stopped"}"#, now);
        assert!(ip(&g).contains(r#""public_ip":"""#), "{}", ip(&g));
        assert_eq!(Config::default().public_ip, PUBLIC_IP);
    }

    #[test]
    fn reconnect_drops_then_restores_a_new_port() {
        let t0 = Instant::now();
        let g = fake(cfg(40000), t0);
        let r = call(
            &g,
            "POST",
            "/testbed/reconnect",
            r#"{"port":40100,"after_ms":500}"#,
            t0,
        );
        assert_eq!(r.0, 200);
        assert_eq!(get(&g, "/v1/vpn/status", t0).1, r#"{"status":"stopped"}"#);
        assert_eq!(get(&g, "/v1/portforward", t0).1, r#"{"port":0}"#);
        let t1 = t0 + Duration::from_millis(499);
        assert_eq!(get(&g, "/v1/vpn/status", t1).1, r#"{"status":"stopped"}"#);
        let t2 = t0 + Duration::from_millis(500);
        assert_eq!(get(&g, "/v1/vpn/status", t2).1, r#"{"status":"running"}"#);
        assert_eq!(get(&g, "/v1/portforward", t2).1, r#"{"port":40100}"#);
        assert_eq!(call(&g, "POST", "/testbed/reconnect", "{}", t2).0, 400);
    }

    #[test]
    fn startup_window_reads_starting_and_unhealthy() {
        let t0 = Instant::now();
        let c = Config {
            startup: Duration::from_millis(300),
            ..cfg(40000)
        };
        let g = fake(c, t0);
        assert_eq!(get(&g, "/v1/vpn/status", t0).1, r#"{"status":"starting"}"#);
        assert_eq!(get(&g, "/v1/portforward", t0).1, r#"{"port":0}"#);
        assert!(
            get(&g, "/v1/publicip/ip", t0)
                .1
                .contains(r#""public_ip":"""#)
        );
        assert_eq!(get(&g, "/testbed/healthz", t0).0, 503);
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(get(&g, "/v1/vpn/status", t1).1, r#"{"status":"running"}"#);
        assert_eq!(get(&g, "/testbed/healthz", t1).0, 200);
    }

    #[test]
    fn port_delay_follows_every_tunnel_start() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let c = Config {
            startup: ms(300),
            port_delay: ms(1000),
            ..cfg(40000)
        };
        let g = fake(c, t0);
        let pf = |t| get(&g, "/v1/portforward", t).1;
        assert_eq!(
            get(&g, "/v1/vpn/status", t0 + ms(300)).1,
            r#"{"status":"running"}"#
        );
        assert_eq!(pf(t0 + ms(1299)), r#"{"port":0}"#, "running, no port yet");
        assert_eq!(pf(t0 + ms(1300)), r#"{"port":40000}"#);

        let t1 = t0 + ms(2000);
        call(&g, "PUT", "/v1/vpn/status", r#"{"status":"running"}"#, t1);
        assert_eq!(pf(t1 + ms(999)), r#"{"port":0}"#);
        assert_eq!(pf(t1 + ms(1000)), r#"{"port":40000}"#);

        let t2 = t0 + ms(5000);
        let body = r#"{"port":40100,"after_ms":200}"#;
        call(&g, "POST", "/testbed/reconnect", body, t2);
        // Settled late: the port still appears `port_delay` after the tunnel came back.
        assert_eq!(pf(t2 + ms(1199)), r#"{"port":0}"#);
        assert_eq!(pf(t2 + ms(1200)), r#"{"port":40100}"#);
    }

    #[test]
    fn health_toggle() {
        let now = Instant::now();
        let g = fake(cfg(0), now);
        assert_eq!(get(&g, "/testbed/healthz", now).0, 200);
        assert_eq!(
            call(&g, "PUT", "/testbed/health", r#"{"healthy":false}"#, now).0,
            200
        );
        assert_eq!(get(&g, "/testbed/healthz", now).0, 503);
        assert_eq!(
            call(&g, "PUT", "/testbed/health", r#"{"healthy":"no"}"#, now).0,
            400
        );
    }

    #[test]
    fn api_key_guards_v1_only() {
        let now = Instant::now();
        let c = Config {
            api_key: Some("k3y".into()),
            ..cfg(40000)
        };
        let g = fake(c, now);
        assert_eq!(get(&g, "/v1/vpn/status", now).0, 401);
        assert_eq!(get(&g, "/v1/vpn/status?api_key=wrong", now).0, 401);
        assert_eq!(get(&g, "/v1/vpn/status?api_key=k3y", now).0, 200);
        let with = Request::new("GET", "/v1/portforward").with_header("X-API-Key", "k3y");
        assert_eq!(send(&g, with, now).status, 200);
        let wrong = Request::new("GET", "/v1/portforward").with_header("X-API-Key", "nope");
        assert_eq!(send(&g, wrong, now).status, 401);
        assert_eq!(get(&g, "/testbed/healthz", now).0, 200);
        assert_eq!(
            call(&g, "PUT", "/testbed/port", r#"{"port":1}"#, now).0,
            200
        );
    }

    #[test]
    fn several_forwarded_ports() {
        let now = Instant::now();
        let g = fake(cfg(40000), now);
        let (code, _) = call(
            &g,
            "PUT",
            "/testbed/ports",
            r#"{"ports": [40001, 40002]}"#,
            now,
        );
        assert_eq!(code, 200);
        assert_eq!(
            get(&g, "/v1/portforward", now),
            (200, r#"{"ports":[40001,40002]}"#.to_string())
        );
        assert_eq!(g.forwarded_ports(now), vec![40001, 40002]);
        let head = fake(
            Config {
                api_key: Some("k".into()),
                ..at(Version::Head, 0)
            },
            now,
        );
        call(&head, "PUT", "/testbed/ports", r#"{"ports":[1,2]}"#, now);
        let r = send(
            &head,
            Request::new("GET", "/v1/portforward").with_header("X-API-Key", "k"),
            now,
        );
        assert_eq!(r.body, br#"{"port":1,"ports":[1,2]}"#);
        assert_eq!(
            call(&g, "PUT", "/testbed/ports", r#"{"ports":[0]}"#, now).0,
            400
        );
        assert_eq!(
            call(&g, "PUT", "/testbed/ports", r#"{"ports":"x"}"#, now).0,
            400
        );
        // PUT /testbed/port goes back to one port; an empty list to none.
        call(&g, "PUT", "/testbed/port", r#"{"port": 40003}"#, now);
        assert_eq!(get(&g, "/v1/portforward", now).1, r#"{"port":40003}"#);
        call(&g, "PUT", "/testbed/ports", r#"{"ports": []}"#, now);
        assert_eq!(get(&g, "/v1/portforward", now).1, r#"{"port":0}"#);
    }
}
