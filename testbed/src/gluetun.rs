//! The fake Gluetun control server: its state (VPN status, forwarded port, health) and the routing
//! of every `/v1/` route plus the test-only `/testbed/` routes. Timed transitions (startup,
//! reconnect) are stored as deadlines and settled lazily against a given `Instant`, so the logic
//! is tested without threads or sleeps.

use crate::http::{Reply, Request, Response};
use crate::json;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Address the control server listens on, as in the real image.
pub const LISTEN: &str = "0.0.0.0:8000";
/// What the healthcheck subcommand asks.
pub const HEALTHZ_ADDR: &str = "127.0.0.1:8000";
pub const HEALTHZ_PATH: &str = "/testbed/healthz";
pub const PUBLIC_IP: &str = "203.0.113.7";
pub const VERSION: &str = "fake-3.41";

/// Settings read from the environment at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `FAKE_API_KEY`: when set, `/v1/` routes need it.
    pub api_key: Option<String>,
    /// `FAKE_FORWARDED_PORT`: port forwarded from the start (0 = none).
    pub forwarded_port: u16,
    /// `FAKE_STARTUP_MS`: how long the status reads `starting`.
    pub startup: Duration,
}

impl Config {
    /// Reads the config through `env` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let api_key = env("FAKE_API_KEY").filter(|k| !k.is_empty());
        let forwarded_port = match env("FAKE_FORWARDED_PORT").as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(p) => p
                .parse()
                .map_err(|_| format!("FAKE_FORWARDED_PORT is not a port: {p:?}"))?,
        };
        let startup = crate::parse_ms(env("FAKE_STARTUP_MS"))
            .map_err(|e| format!("FAKE_STARTUP_MS: {e}"))?
            .map(Duration::from_millis)
            .unwrap_or_default();
        Ok(Config {
            api_key,
            forwarded_port,
            startup,
        })
    }
}

#[derive(Debug)]
struct State {
    /// Status once startup is over; `Running` or `Stopped` here.
    running: bool,
    /// Port forwarded while running.
    port: u16,
    healthy: bool,
    starting_until: Option<Instant>,
    /// Pending end of an internal reconnect: when, and the port it brings.
    reconnect: Option<(Instant, u16)>,
}

impl State {
    fn settle(&mut self, now: Instant) {
        if self.starting_until.is_some_and(|t| now >= t) {
            self.starting_until = None;
        }
        if let Some((at, port)) = self.reconnect
            && now >= at
        {
            self.reconnect = None;
            self.running = true;
            self.port = port;
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
        if self.status() == "running" {
            self.port
        } else {
            0
        }
    }
}

/// The fake control server.
#[derive(Debug)]
pub struct Gluetun {
    api_key: Option<String>,
    state: Mutex<State>,
}

impl Gluetun {
    /// A server that started at `now`.
    pub fn new(config: Config, now: Instant) -> Gluetun {
        let starting_until = (!config.startup.is_zero()).then(|| now + config.startup);
        Gluetun {
            api_key: config.api_key,
            state: Mutex::new(State {
                running: true,
                port: config.forwarded_port,
                healthy: true,
                starting_until,
                reconnect: None,
            }),
        }
    }

    /// Answers one request as of `now`.
    pub fn handle(&self, req: &Request, now: Instant) -> Reply {
        Reply::Send(self.respond(req, now))
    }

    fn respond(&self, req: &Request, now: Instant) -> Response {
        let allowed: &[&str] = match req.path.as_str() {
            "/v1/vpn/status" => &["GET", "PUT"],
            "/v1/portforward"
            | "/v1/openvpn/portforwarded"
            | "/v1/publicip/ip"
            | "/v1/version"
            | "/testbed/healthz" => &["GET"],
            "/testbed/port" | "/testbed/health" => &["PUT"],
            "/testbed/reconnect" => &["POST"],
            _ => return Response::text(404, "404 page not found"),
        };
        if req.path.starts_with("/v1/") && !self.authorised(req) {
            return Response::text(401, "Unauthorized");
        }
        if !allowed.contains(&req.method.as_str()) {
            return Response::text(405, "Method Not Allowed")
                .with_header("Allow", &allowed.join(", "));
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.settle(now);
        let body = req.body_text();
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/vpn/status") => {
                Response::json(200, format!("{{\"status\":{}}}", json::string(st.status())))
            }
            ("PUT", "/v1/vpn/status") => match json::get_str(&body, "status").as_deref() {
                Some("stopped") => {
                    st.running = false;
                    st.reconnect = None;
                    Response::json(200, r#"{"outcome":"stopped"}"#)
                }
                Some("running") => {
                    st.running = true;
                    st.reconnect = None;
                    Response::json(200, r#"{"outcome":"running"}"#)
                }
                _ => Response::text(400, "status must be \"stopped\" or \"running\""),
            },
            ("GET", "/v1/portforward") => match st.forwarded() {
                0 => Response::json(200, r#"{"port":0,"ports":null}"#),
                p => Response::json(200, format!("{{\"port\":{p},\"ports\":[{p}]}}")),
            },
            ("GET", "/v1/openvpn/portforwarded") => {
                Response::text(301, "Moved Permanently").with_header("Location", "/v1/portforward")
            }
            ("GET", "/v1/publicip/ip") => {
                let ip = if st.starting() { "" } else { PUBLIC_IP };
                Response::json(
                    200,
                    format!(
                        "{{\"public_ip\":{},\"country\":\"Testland\"}}",
                        json::string(ip)
                    ),
                )
            }
            ("GET", "/v1/version") => Response::json(
                200,
                format!(
                    "{{\"version\":{},\"commit\":\"testbed\",\"created\":\"2026-01-01T00:00:00Z\"}}",
                    json::string(VERSION)
                ),
            ),
            ("PUT", "/testbed/port") => match json::get_uint::<u16>(&body, "port") {
                Some(p) => {
                    st.port = p;
                    Response::json(200, format!("{{\"port\":{p}}}"))
                }
                None => Response::text(400, "body must be {\"port\": <0-65535>}"),
            },
            ("PUT", "/testbed/health") => match json::get_bool(&body, "healthy") {
                Some(h) => {
                    st.healthy = h;
                    Response::json(200, format!("{{\"healthy\":{h}}}"))
                }
                None => Response::text(400, "body must be {\"healthy\": true|false}"),
            },
            ("POST", "/testbed/reconnect") => {
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
            ("GET", "/testbed/healthz") => {
                if st.healthy && !st.starting() {
                    Response::text(200, "healthy")
                } else {
                    Response::text(503, "unhealthy")
                }
            }
            _ => Response::text(404, "404 page not found"),
        }
    }

    fn authorised(&self, req: &Request) -> bool {
        match &self.api_key {
            None => true,
            Some(key) => {
                req.header("x-api-key") == Some(key.as_str()) || req.query("api_key") == Some(key)
            }
        }
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

    #[test]
    fn config_from_env() {
        let env = |k: &str| match k {
            "FAKE_API_KEY" => Some("s3cret".to_string()),
            "FAKE_FORWARDED_PORT" => Some("40001".to_string()),
            "FAKE_STARTUP_MS" => Some("250".to_string()),
            _ => None,
        };
        let c = Config::from_env(env).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("s3cret"));
        assert_eq!(c.forwarded_port, 40001);
        assert_eq!(c.startup, Duration::from_millis(250));
        assert_eq!(Config::from_env(|_| None).unwrap(), Config::default());
        assert!(Config::from_env(|k| (k == "FAKE_FORWARDED_PORT").then(|| "x".into())).is_err());
        assert!(Config::from_env(|k| (k == "FAKE_STARTUP_MS").then(|| "-1".into())).is_err());
    }

    #[test]
    fn status_port_and_static_routes() {
        let now = Instant::now();
        let g = Gluetun::new(cfg(40000), now);
        assert_eq!(
            get(&g, "/v1/vpn/status", now),
            (200, r#"{"status":"running"}"#.into())
        );
        assert_eq!(
            get(&g, "/v1/portforward", now),
            (200, r#"{"port":40000,"ports":[40000]}"#.into())
        );
        let (code, body) = get(&g, "/v1/publicip/ip", now);
        assert_eq!(
            (code, body.as_str()),
            (200, r#"{"public_ip":"203.0.113.7","country":"Testland"}"#)
        );
        let (code, body) = get(&g, "/v1/version", now);
        assert_eq!(code, 200);
        assert!(body.starts_with(r#"{"version":"fake-3.41","commit":"testbed","created":""#));
        let legacy = send(&g, Request::new("GET", "/v1/openvpn/portforwarded"), now);
        assert_eq!(legacy.status, 301);
        assert!(
            legacy
                .headers
                .contains(&("Location".into(), "/v1/portforward".into()))
        );
        assert_eq!(get(&g, "/v1/nope", now).0, 404);
        assert_eq!(call(&g, "POST", "/v1/portforward", "", now).0, 405);
        assert_eq!(call(&g, "GET", "/testbed/port", "", now).0, 405);
    }

    #[test]
    fn no_port_reads_null_ports() {
        let now = Instant::now();
        let g = Gluetun::new(cfg(0), now);
        assert_eq!(
            get(&g, "/v1/portforward", now).1,
            r#"{"port":0,"ports":null}"#
        );
        assert_eq!(
            call(&g, "PUT", "/testbed/port", r#"{"port": 41234}"#, now).0,
            200
        );
        assert_eq!(
            get(&g, "/v1/portforward", now).1,
            r#"{"port":41234,"ports":[41234]}"#
        );
        assert_eq!(
            call(&g, "PUT", "/testbed/port", r#"{"port": 70000}"#, now).0,
            400
        );
    }

    #[test]
    fn put_status_stops_and_starts_the_tunnel() {
        let now = Instant::now();
        let g = Gluetun::new(cfg(40000), now);
        let stop = call(&g, "PUT", "/v1/vpn/status", r#"{"status":"stopped"}"#, now);
        assert_eq!(stop, (200, r#"{"outcome":"stopped"}"#.into()));
        assert_eq!(get(&g, "/v1/vpn/status", now).1, r#"{"status":"stopped"}"#);
        assert_eq!(
            get(&g, "/v1/portforward", now).1,
            r#"{"port":0,"ports":null}"#
        );
        let start = call(&g, "PUT", "/v1/vpn/status", r#"{"status":"running"}"#, now);
        assert_eq!(start, (200, r#"{"outcome":"running"}"#.into()));
        assert_eq!(
            get(&g, "/v1/portforward", now).1,
            r#"{"port":40000,"ports":[40000]}"#
        );
        let bad = call(&g, "PUT", "/v1/vpn/status", r#"{"status":"paused"}"#, now);
        assert_eq!(bad.0, 400);
        assert!(!bad.1.starts_with('{'), "400 is plain text");
    }

    #[test]
    fn reconnect_drops_then_restores_a_new_port() {
        let t0 = Instant::now();
        let g = Gluetun::new(cfg(40000), t0);
        let r = call(
            &g,
            "POST",
            "/testbed/reconnect",
            r#"{"port":40100,"after_ms":500}"#,
            t0,
        );
        assert_eq!(r.0, 200);
        assert_eq!(get(&g, "/v1/vpn/status", t0).1, r#"{"status":"stopped"}"#);
        assert_eq!(
            get(&g, "/v1/portforward", t0).1,
            r#"{"port":0,"ports":null}"#
        );
        let t1 = t0 + Duration::from_millis(499);
        assert_eq!(get(&g, "/v1/vpn/status", t1).1, r#"{"status":"stopped"}"#);
        let t2 = t0 + Duration::from_millis(500);
        assert_eq!(get(&g, "/v1/vpn/status", t2).1, r#"{"status":"running"}"#);
        assert_eq!(
            get(&g, "/v1/portforward", t2).1,
            r#"{"port":40100,"ports":[40100]}"#
        );
        assert_eq!(call(&g, "POST", "/testbed/reconnect", "{}", t2).0, 400);
    }

    #[test]
    fn startup_window_reads_starting_and_unhealthy() {
        let t0 = Instant::now();
        let c = Config {
            startup: Duration::from_millis(300),
            ..cfg(40000)
        };
        let g = Gluetun::new(c, t0);
        assert_eq!(get(&g, "/v1/vpn/status", t0).1, r#"{"status":"starting"}"#);
        assert_eq!(
            get(&g, "/v1/portforward", t0).1,
            r#"{"port":0,"ports":null}"#
        );
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
    fn health_toggle() {
        let now = Instant::now();
        let g = Gluetun::new(cfg(0), now);
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
        let g = Gluetun::new(c, now);
        assert_eq!(get(&g, "/v1/vpn/status", now).0, 401);
        assert_eq!(get(&g, "/v1/vpn/status?api_key=wrong", now).0, 401);
        assert_eq!(get(&g, "/v1/vpn/status?api_key=k3y", now).0, 200);
        let with = Request::new("GET", "/v1/portforward").with_header("X-API-Key", "k3y");
        assert_eq!(send(&g, with, now).status, 200);
        let wrong = Request::new("GET", "/v1/portforward").with_header("X-API-Key", "nope");
        assert_eq!(send(&g, wrong, now).status, 401);
        assert_eq!(
            get(&g, "/v1/unknown", now).0,
            404,
            "unknown route is 404, not 401"
        );
        assert_eq!(get(&g, "/testbed/healthz", now).0, 200);
        assert_eq!(
            call(&g, "PUT", "/testbed/port", r#"{"port":1}"#, now).0,
            200
        );
    }
}
