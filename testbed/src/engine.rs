//! The fake AceStream engine's HTTP API: version and status (in the real engines' shapes),
//! playback sessions (`/ace/getstream`, `/ace/stat/<sid>`, `/ace/cmd/<sid>`) with statistics that
//! grow with time, the playback itself (`/ace/r/<sid>`: MPEG-TS paced at the configured rate,
//! chunked, to every reader until the session is stopped), and the test-only `/testbed/ports`,
//! `/testbed/hang` and `/testbed/exit` routes.

pub mod config;

pub use config::{Config, Launch, Profile};

use crate::http::{ChunkSource, Reply, Request, Response};
use crate::json;
use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const VERSION_ANSWER: &str =
    r#"{"result":{"version":"3.2.11","code":3021100,"platform":"linux"},"error":null}"#;
/// `get_status` as real engines answer it: no `error` key, no ports.
pub const STATUS_ANSWER: &str = r#"{"result":{"playlist_loaded":true,"version":{"code":3021100,"platform":"linux","version":"3.2.11"}}}"#;
pub const UNKNOWN_SESSION: &str = r#"{"response":null,"error":"unknown playback session id"}"#;
/// MPEG-TS packet size.
pub const TS_PACKET: usize = 188;
/// How often a playback writes what its rate has made due.
const STREAM_TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
struct Session {
    started: Instant,
    started_unix: u64,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, Session>,
    hung: bool,
    next: u64,
}

/// The fake engine's HTTP side.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine {
            config,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Answers one request as of `now` (`unix` = the same moment in Unix seconds).
    pub fn handle(&self, req: &Request, now: Instant, unix: u64) -> Reply {
        let mut st = lock(&self.state);
        if st.hung {
            return Reply::Hang;
        }
        let path = req.path.as_str();
        let method = req.method.as_str();
        let resp = match (method, path) {
            ("PUT", "/testbed/hang") => {
                st.hung = true;
                Response::json(200, r#"{"hung":true}"#)
            }
            ("POST", "/testbed/exit") => {
                let code = json::get_int(&req.body_text(), "code").unwrap_or(0) as i32;
                let resp = Response::json(200, format!("{{\"exiting\":{code}}}"));
                return Reply::SendThenExit(resp, code);
            }
            (_, "/testbed/hang" | "/testbed/exit") => Response::text(405, "Method Not Allowed"),
            ("GET", "/testbed/ports") => Response::json(200, self.config.ports_json()),
            (_, _) if method != "GET" && method != "HEAD" => {
                Response::text(405, "Method Not Allowed")
            }
            (_, "/webui/api/service") => match req.query("method") {
                Some("get_version") => Response::json(200, VERSION_ANSWER),
                _ => Response::json(200, r#"{"result":null,"error":"unknown method"}"#),
            },
            (_, "/server/api") => match req.query("method") {
                Some("get_status") => Response::json(200, STATUS_ANSWER),
                _ => Response::json(200, r#"{"result":null,"error":"unknown method"}"#),
            },
            (_, "/ace/getstream" | "/ace/getstream/") => self.getstream(req, &mut st, now, unix),
            _ => {
                if let Some(sid) = path.strip_prefix("/ace/stat/") {
                    stat(st.sessions.get(sid), now)
                } else if let Some(sid) = path.strip_prefix("/ace/cmd/") {
                    match req.query("method") {
                        Some("stop") if st.sessions.remove(sid).is_some() => {
                            Response::json(200, r#"{"response":"ok","error":null}"#)
                        }
                        Some("stop") => Response::json(200, UNKNOWN_SESSION),
                        _ => Response::json(200, r#"{"response":null,"error":"unknown method"}"#),
                    }
                } else if let Some(sid) = path.strip_prefix("/ace/r/") {
                    if st.sessions.contains_key(sid) {
                        let head = Response::new(200, "video/mp2t", Vec::new());
                        return Reply::Stream(head, self.playback(sid));
                    }
                    Response::text(404, "unknown playback session id")
                } else {
                    Response::text(404, "Not Found")
                }
            }
        };
        Reply::Send(resp)
    }

    /// The body of `/ace/r/<sid>`: MPEG-TS packets at `stream_kbps`, written every `STREAM_TICK`
    /// (what the rate has made due since the reader connected, in whole packets), until the
    /// session is stopped. A hung engine stalls its playbacks.
    fn playback(&self, sid: &str) -> ChunkSource {
        let state = Arc::clone(&self.state);
        let sid = sid.to_string();
        let bytes_per_sec = self.config.stream_kbps * 1000 / 8;
        let started = Instant::now();
        let mut sent: u64 = 0;
        Box::new(move || {
            loop {
                {
                    let st = lock(&state);
                    if !st.sessions.contains_key(&sid) {
                        return None;
                    }
                    if !st.hung {
                        let elapsed = started.elapsed().as_micros() as u64;
                        let due = (elapsed * bytes_per_sec / 1_000_000).saturating_sub(sent);
                        // At most a second's worth at once, and at least one packet per chunk.
                        let packets =
                            (due / TS_PACKET as u64).min(bytes_per_sec / TS_PACKET as u64 + 1);
                        if packets > 0 {
                            sent += packets * TS_PACKET as u64;
                            return Some(ts_packets(packets as usize));
                        }
                    }
                }
                std::thread::sleep(STREAM_TICK);
            }
        })
    }

    fn getstream(&self, req: &Request, st: &mut State, now: Instant, unix: u64) -> Response {
        let given_infohash = req.query("infohash").filter(|s| !s.is_empty());
        let key = ["id", "content_id", "url", "magnet"]
            .iter()
            .find_map(|k| req.query(k).filter(|s| !s.is_empty()))
            .or(given_infohash);
        let Some(key) = key else {
            return Response::json(200, r#"{"response":null,"error":"missing content id"}"#);
        };
        let infohash = match given_infohash {
            Some(h) if is_hex40(h) => h.to_ascii_lowercase(),
            _ => derive_infohash(key),
        };
        st.next += 1;
        let sid = session_id(st.next);
        st.sessions.insert(
            sid.clone(),
            Session {
                started: now,
                started_unix: unix,
            },
        );
        let default_host = format!("127.0.0.1:{}", self.config.http_port);
        let host = req.header("host").unwrap_or(&default_host);
        let base = format!("http://{host}/ace");
        Response::json(
            200,
            format!(
                "{{\"response\":{{\"playback_url\":{},\"stat_url\":{},\"command_url\":{},\"playback_session_id\":\"{sid}\",\"infohash\":\"{infohash}\",\"is_live\":1}},\"error\":null}}",
                json::string(&format!("{base}/r/{sid}")),
                json::string(&format!("{base}/stat/{sid}")),
                json::string(&format!("{base}/cmd/{sid}")),
            ),
        )
    }
}

fn stat(session: Option<&Session>, now: Instant) -> Response {
    let Some(s) = session else {
        return Response::json(200, UNKNOWN_SESSION);
    };
    let ms = now.saturating_duration_since(s.started).as_millis() as u64;
    let secs = ms / 1000;
    let peers = (4 + ms / 2000).min(40);
    let speed_down = 900 + (secs % 7) * 10;
    let speed_up = 150 + (secs % 5) * 5;
    let downloaded = 262_144 + ms * 120;
    let uploaded = ms * 25;
    let pos = s.started_unix + secs;
    Response::json(
        200,
        format!(
            "{{\"response\":{{\"status\":\"dl\",\"peers\":{peers},\"speed_down\":{speed_down},\"speed_up\":{speed_up},\"downloaded\":{downloaded},\"uploaded\":{uploaded},\"livepos\":{{\"pos\":{pos},\"live_first\":{},\"live_last\":{}}}}},\"error\":null}}",
            s.started_unix.saturating_sub(600),
            pos + 2
        ),
    )
}

fn is_hex40(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A stable 40-hex "infohash" for a content key (the engine would resolve it; we hash it).
fn derive_infohash(key: &str) -> String {
    let mut out = String::new();
    for round in 0u8..3 {
        let mut h = DefaultHasher::new();
        (key, round).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(40);
    out
}

/// An unpredictable session id (std's `RandomState` is randomly keyed per instance).
fn session_id(counter: u64) -> String {
    let a = RandomState::new().hash_one(counter);
    let b = RandomState::new().hash_one(counter);
    format!("{a:016x}{b:016x}")
}

/// `n` MPEG-TS null packets: 188 bytes each, sync byte 0x47, PID 0x1FFF.
fn ts_packets(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(TS_PACKET * n);
    for _ in 0..n {
        out.extend_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
        out.extend(std::iter::repeat_n(0xFF, 184));
    }
    out
}

#[cfg(test)]
mod tests;
