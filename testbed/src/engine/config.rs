//! How the fake engine takes its settings: `FAKE_ENGINE_PROFILE` picks which real image it
//! stands in for, and each profile reads exactly what that image reads, so a template written
//! for one image fails against the fake of another.
//!
//! - `krinkuto11` (`ghcr.io/krinkuto11/acestream-http-proxy`): env `HTTP_PORT`, `HTTPS_PORT`,
//!   `P2P_PORT`, `BIND_ALL` (any non-empty value), `INTERNAL_BUFFERING`, `CACHE_LIMIT` only; the
//!   image's ENTRYPOINT ignores the container command, and there is no `CONF` or API port
//!   variable (the API port is always 62062).
//! - `jopsis` (jopsis/docker-acestream-x64): no ENTRYPOINT; the image's CMD runs
//!   `/bin/sh -c "/acestream/start-engine ${ACESTREAM_ARGS}"`, so the flags come from
//!   `ACESTREAM_ARGS` (image default `--client-console --bind-all`) and a replaced command means
//!   no engine at all.
//! - `acestream` (upstream `python main.py` images, the jopsis arm images): the container command
//!   is `python main.py <flags>`; bare flags as a command are no program, so no engine.
//! - no profile: flags on the command line (a leading `python main.py` is allowed).
//!
//! The fake image's CMD is the sentinel `IMAGE_DEFAULT_CMD`, standing for "the image's own
//! command": a container created without a command gets it. Without `--bind-all` the HTTP API
//! answers on 127.0.0.1 only, as a real engine does. `FAKE_STARTUP_MS` (readiness delay) and
//! `FAKE_STREAM_KBPS` (playback rate) are the fake's own knobs, read under every profile.

use std::time::Duration;

pub const DEFAULT_HTTP_PORT: u16 = 6878;
pub const DEFAULT_HTTPS_PORT: u16 = 6879;
pub const DEFAULT_API_PORT: u16 = 62062;
pub const DEFAULT_P2P_PORT: u16 = 8621;
/// The fake image's CMD: "the image's own command" (no container command was given).
pub const IMAGE_DEFAULT_CMD: &str = "fake-engine:image-default-cmd";
/// A real engine needs seconds before its HTTP API answers; tests shorten this.
pub const DEFAULT_STARTUP: Duration = Duration::from_secs(3);
/// Playback rate in kbit/s, a typical HD live stream.
pub const DEFAULT_STREAM_KBPS: u64 = 4000;
/// `ACESTREAM_ARGS` as the jopsis x64 image sets it.
pub const JOPSIS_DEFAULT_ARGS: &str = "--client-console --bind-all ";

/// Which real image the fake stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// No `FAKE_ENGINE_PROFILE`: engine flags on the command line.
    Flags,
    Krinkuto11,
    Jopsis,
    Acestream,
}

impl Profile {
    /// `FAKE_ENGINE_PROFILE`'s value; absent or empty is `Flags`.
    pub fn parse(value: Option<&str>) -> Result<Profile, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(Profile::Flags),
            Some("krinkuto11") => Ok(Profile::Krinkuto11),
            Some("jopsis") => Ok(Profile::Jopsis),
            Some("acestream") => Ok(Profile::Acestream),
            Some(other) => Err(format!(
                "FAKE_ENGINE_PROFILE: unknown profile {other:?} (krinkuto11, jopsis, acestream)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Flags => "flags",
            Profile::Krinkuto11 => "krinkuto11",
            Profile::Jopsis => "jopsis",
            Profile::Acestream => "acestream",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub profile: Profile,
    pub http_port: u16,
    pub https_port: u16,
    pub api_port: u16,
    pub p2p_port: u16,
    /// HTTP on 0.0.0.0; otherwise on 127.0.0.1 only.
    pub bind_all: bool,
    pub client_console: bool,
    /// Delay before the HTTP port is bound (the P2P port is bound at once).
    pub startup: Duration,
    /// Playback rate in kbit/s.
    pub stream_kbps: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            profile: Profile::Flags,
            http_port: DEFAULT_HTTP_PORT,
            https_port: DEFAULT_HTTPS_PORT,
            api_port: DEFAULT_API_PORT,
            p2p_port: DEFAULT_P2P_PORT,
            bind_all: false,
            client_console: false,
            startup: DEFAULT_STARTUP,
            stream_kbps: DEFAULT_STREAM_KBPS,
        }
    }
}

/// What the container's command and env amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// An engine runs with `config`; `notes` name the inputs it ignored (told on stderr).
    Engine { config: Config, notes: Vec<String> },
    /// The command starts no engine (the process says why and exits 127, like a missing program).
    NoEngine(String),
}

/// Env vars some image reads; named in a note when the chosen profile ignores them.
const IMAGE_ENV: &[&str] = &[
    "CONF",
    "HTTP_PORT",
    "HTTPS_PORT",
    "API_PORT",
    "P2P_PORT",
    "BIND_ALL",
    "ACESTREAM_ARGS",
];

/// Decides from the container's arguments (without the program name) and env what runs.
pub fn launch(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Launch, String> {
    let profile = Profile::parse(env("FAKE_ENGINE_PROFILE").as_deref())?;
    let mut config = Config {
        profile,
        ..Config::default()
    };
    if let Some(ms) =
        crate::parse_ms(env("FAKE_STARTUP_MS")).map_err(|e| format!("FAKE_STARTUP_MS: {e}"))?
    {
        config.startup = Duration::from_millis(ms);
    }
    if let Some(v) = env("FAKE_STREAM_KBPS").filter(|v| !v.trim().is_empty()) {
        config.stream_kbps = match v.trim().parse::<u64>() {
            Ok(k) if k > 0 => k,
            _ => return Err(format!("FAKE_STREAM_KBPS: not a positive number: {v:?}")),
        };
    }
    let image_default = args.is_empty() || args == [IMAGE_DEFAULT_CMD];
    let mut notes = Vec::new();
    let ignored_env = |names: &[&str], why: &str| -> Vec<String> {
        names
            .iter()
            .filter(|name| env(name).is_some())
            .map(|name| format!("ignoring env {name} ({why})"))
            .collect()
    };
    match profile {
        Profile::Krinkuto11 => {
            if !image_default {
                notes.push(format!(
                    "ignoring the container command {args:?} (the image's ENTRYPOINT takes its \
                     settings from env only)"
                ));
            }
            notes.extend(ignored_env(
                &["CONF", "API_PORT", "ACESTREAM_ARGS"],
                "the krinkuto11 image does not read it",
            ));
            config.client_console = true;
            for (var, slot) in [
                ("HTTP_PORT", &mut config.http_port),
                ("HTTPS_PORT", &mut config.https_port),
                ("P2P_PORT", &mut config.p2p_port),
            ] {
                if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                    *slot = port(&v).map_err(|e| format!("{var}: {e}"))?;
                }
            }
            // The entrypoint's test is `[ -n "$BIND_ALL" ]`: any non-empty value, even "false".
            config.bind_all = env("BIND_ALL").is_some_and(|v| !v.is_empty());
        }
        Profile::Jopsis => {
            if !image_default {
                return Ok(Launch::NoEngine(format!(
                    "profile jopsis: the container command {args:?} replaced the image's CMD \
                     `/bin/sh -c \"/acestream/start-engine ${{ACESTREAM_ARGS}}\"` (the image has \
                     no ENTRYPOINT), so no engine starts; give engine flags in ACESTREAM_ARGS"
                )));
            }
            notes.extend(ignored_env(
                &[
                    "CONF",
                    "HTTP_PORT",
                    "HTTPS_PORT",
                    "API_PORT",
                    "P2P_PORT",
                    "BIND_ALL",
                ],
                "the jopsis image reads only ACESTREAM_ARGS",
            ));
            let flags = env("ACESTREAM_ARGS").unwrap_or_else(|| JOPSIS_DEFAULT_ARGS.to_string());
            let tokens: Vec<String> = flags.split_whitespace().map(str::to_string).collect();
            config
                .apply_flags(&tokens)
                .map_err(|e| format!("ACESTREAM_ARGS: {e}"))?;
        }
        Profile::Acestream | Profile::Flags => {
            notes.extend(ignored_env(
                IMAGE_ENV,
                "an engine takes its settings as flags",
            ));
            if !image_default {
                let flags = match args {
                    [python, main, rest @ ..] if python == "python" && main == "main.py" => rest,
                    _ if profile == Profile::Flags => args,
                    _ => {
                        return Ok(Launch::NoEngine(format!(
                            "profile acestream: the container command {args:?} is not \
                             `python main.py <flags>`; the image has no ENTRYPOINT, so Docker \
                             would run {:?} as a program and no engine starts",
                            args[0]
                        )));
                    }
                };
                config.apply_flags(flags)?;
            }
        }
    }
    Ok(Launch::Engine { config, notes })
}

impl Config {
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
                // Switches take no value: `--bind-all 1` would leave `1` as a stray word.
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

    /// The ports this engine runs with, as `GET /testbed/ports` reports them.
    pub fn ports_json(&self) -> String {
        format!(
            "{{\"p2p_port\":{},\"http_port\":{},\"https_port\":{},\"api_port\":{}}}",
            self.p2p_port, self.http_port, self.https_port, self.api_port
        )
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
#[path = "config_tests.rs"]
mod tests;
