//! The fake engine's settings from AceStream-style command line flags, the krinkuto11-style env
//! (`HTTP_PORT`, `HTTPS_PORT`, `P2P_PORT`, `BIND_ALL`, `CONF`) and `FAKE_STARTUP_MS`.
//! Precedence, lowest first: defaults, `CONF` lines, the single-value env vars, command line flags.

use std::time::Duration;

pub const DEFAULT_HTTP_PORT: u16 = 6878;
pub const DEFAULT_HTTPS_PORT: u16 = 6879;
pub const DEFAULT_API_PORT: u16 = 62062;
pub const DEFAULT_P2P_PORT: u16 = 8621;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub http_port: u16,
    pub https_port: u16,
    pub api_port: u16,
    pub p2p_port: u16,
    pub bind_all: bool,
    pub client_console: bool,
    /// Delay before the HTTP port is bound (the P2P port is bound at once).
    pub startup: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            http_port: DEFAULT_HTTP_PORT,
            https_port: DEFAULT_HTTPS_PORT,
            api_port: DEFAULT_API_PORT,
            p2p_port: DEFAULT_P2P_PORT,
            bind_all: false,
            client_console: false,
            startup: Duration::ZERO,
        }
    }
}

impl Config {
    /// Builds the config from `args` (without the program name) and `env`.
    pub fn from_args_env(
        args: &[String],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let mut c = Config::default();
        if let Some(conf) = env("CONF") {
            let tokens: Vec<String> = conf.split_whitespace().map(str::to_string).collect();
            c.apply_flags(&tokens).map_err(|e| format!("CONF: {e}"))?;
        }
        for (var, slot) in [
            ("HTTP_PORT", &mut c.http_port),
            ("HTTPS_PORT", &mut c.https_port),
            ("API_PORT", &mut c.api_port),
            ("P2P_PORT", &mut c.p2p_port),
        ] {
            if let Some(v) = env(var).filter(|v| !v.trim().is_empty()) {
                *slot = port(&v).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        if let Some(v) = env("BIND_ALL").filter(|v| !v.trim().is_empty()) {
            c.bind_all = boolean(&v).map_err(|e| format!("BIND_ALL: {e}"))?;
        }
        c.apply_flags(args)?;
        c.startup = crate::parse_ms(env("FAKE_STARTUP_MS"))
            .map_err(|e| format!("FAKE_STARTUP_MS: {e}"))?
            .map(Duration::from_millis)
            .unwrap_or_default();
        Ok(c)
    }

    /// Applies `--flag value` / `--flag=value` tokens; unknown flags (and their value) are ignored.
    pub fn apply_flags(&mut self, tokens: &[String]) -> Result<(), String> {
        let mut i = 0;
        while i < tokens.len() {
            let tok = &tokens[i];
            i += 1;
            let Some(flag) = tok.strip_prefix("--") else {
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let next_is_value = tokens.get(i).is_some_and(|t| !t.starts_with("--"));
            match name {
                "http-port" | "https-port" | "api-port" | "port" => {
                    let value = match inline {
                        Some(v) => v,
                        None if next_is_value => {
                            i += 1;
                            tokens[i - 1].clone()
                        }
                        None => return Err(format!("--{name} needs a value")),
                    };
                    let p = port(&value).map_err(|e| format!("--{name}: {e}"))?;
                    match name {
                        "http-port" => self.http_port = p,
                        "https-port" => self.https_port = p,
                        "api-port" => self.api_port = p,
                        _ => self.p2p_port = p,
                    }
                }
                "bind-all" | "client-console" => {
                    let on = match inline {
                        Some(v) => boolean(&v).map_err(|e| format!("--{name}: {e}"))?,
                        None => true,
                    };
                    if name == "bind-all" {
                        self.bind_all = on;
                    } else {
                        self.client_console = on;
                    }
                }
                _ if inline.is_none() && next_is_value => i += 1,
                _ => {}
            }
        }
        Ok(())
    }
}

fn port(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("not a port: {v:?}")),
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("not a boolean: {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults() {
        let c = Config::from_args_env(&[], no_env).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!((c.http_port, c.p2p_port), (6878, 8621));
    }

    #[test]
    fn acestream_flags_both_spellings_and_unknown_ignored() {
        let a = args(
            "--client-console --http-port 6881 --https-port=6882 --cache-dir /x --api-port 62063 \
             --live-cache-type memory --port=34817 --bind-all --log-stdout",
        );
        let c = Config::from_args_env(&a, no_env).unwrap();
        assert_eq!(
            (c.http_port, c.https_port, c.api_port, c.p2p_port),
            (6881, 6882, 62063, 34817)
        );
        assert!(c.bind_all && c.client_console);
    }

    #[test]
    fn env_and_conf() {
        let env = |k: &str| match k {
            "CONF" => {
                Some("--http-port=7001\n--port 30000\n--https-port 7002\n--bind-all\n".into())
            }
            "P2P_PORT" => Some("30001".into()),
            "FAKE_STARTUP_MS" => Some("1500".into()),
            _ => None,
        };
        let c = Config::from_args_env(&[], env).unwrap();
        assert_eq!((c.http_port, c.https_port, c.p2p_port), (7001, 7002, 30001));
        assert!(c.bind_all);
        assert_eq!(c.startup, Duration::from_millis(1500));
    }

    #[test]
    fn flags_win_over_env() {
        let env = |k: &str| match k {
            "HTTP_PORT" => Some("7000".into()),
            "HTTPS_PORT" => Some("7003".into()),
            "BIND_ALL" => Some("true".into()),
            _ => None,
        };
        let c = Config::from_args_env(&args("--http-port 6990 --bind-all=false"), env).unwrap();
        assert_eq!((c.http_port, c.https_port), (6990, 7003));
        assert!(!c.bind_all);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::from_args_env(&args("--http-port"), no_env).is_err());
        assert!(Config::from_args_env(&args("--port 0"), no_env).is_err());
        assert!(Config::from_args_env(&args("--port=99999"), no_env).is_err());
        assert!(Config::from_args_env(&args("--bind-all=maybe"), no_env).is_err());
        let env = |k: &str| (k == "P2P_PORT").then(|| "x".to_string());
        assert!(
            Config::from_args_env(&[], env)
                .unwrap_err()
                .contains("P2P_PORT")
        );
        let env = |k: &str| (k == "CONF").then(|| "--http-port=abc".to_string());
        assert!(
            Config::from_args_env(&[], env)
                .unwrap_err()
                .contains("CONF")
        );
    }
}
