//! `EngineClient`: the real AceStream engine HTTP API (docs/protocols.md section 2).
//!
//! Engine answers are JSON envelopes: `{"result":...,"error":null}` for the service and server APIs,
//! `{"response":...,"error":null}` for a playback session's `stat_url` and `command_url`; a
//! non-null `error` is the engine's own failure message. `get_status` is the liveness probe (a
//! hung engine stops answering it), so the client keeps no idle connections and gives up after a
//! short timeout, like the Gluetun client.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::EngineApi;
use super::gluetun::{snippet, transport_message};

/// What an engine call can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No answer: refused, reset, timed out. Carries reqwest's message and the URL.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// The engine answered with a non-null `error`.
    #[error("engine error: {0}")]
    Api(String),
    /// An answer that is not the expected JSON envelope, or a non-200 status.
    #[error("engine answered unexpectedly: {0}")]
    Protocol(String),
}

/// Largest answer read from an engine (its JSON answers are a few hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What a playback session call (`stat_url`, `command_url`) can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    /// The engine no longer knows the session (`"unknown playback session id"`): it has ended.
    #[error("playback session ended")]
    SessionEnded,
    #[error(transparent)]
    Other(#[from] EngineError),
}

/// `get_version`'s result.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EngineVersion {
    pub version: String,
    #[serde(default)]
    pub code: Option<u64>,
    #[serde(default)]
    pub platform: Option<String>,
}

/// One reading of a playback session's `stat_url`. Fields the engine left out are `None`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct StreamStats {
    /// Engine's session state, e.g. `prebuf`, `dl`, `check`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub peers: Option<u64>,
    /// kB/s.
    #[serde(default, alias = "speedDown", deserialize_with = "lenient_u64")]
    pub speed_down: Option<u64>,
    /// kB/s.
    #[serde(default, alias = "speedUp", deserialize_with = "lenient_u64")]
    pub speed_up: Option<u64>,
    /// Bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub downloaded: Option<u64>,
    /// Bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub uploaded: Option<u64>,
    /// Live position block of live streams, kept as the engine sent it.
    #[serde(default)]
    pub livepos: Option<Value>,
}

/// A playback session the engine opened (`/ace/getstream?...&format=json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaybackStart {
    pub playback_url: String,
    pub command_url: Option<String>,
    pub stat_url: Option<String>,
    pub session_id: String,
    pub is_live: bool,
}

/// Client of engine HTTP APIs; one instance serves every engine.
#[derive(Clone)]
pub struct EngineClient {
    http: reqwest::Client,
}

/// `{"result":...,"error":...}` (service and server APIs).
#[derive(Deserialize)]
struct ResultEnvelope {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// `{"response":...,"error":...}` (session APIs).
#[derive(Deserialize)]
struct ResponseEnvelope {
    #[serde(default)]
    response: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

impl EngineClient {
    /// A client whose every request (connect included) gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<EngineClient, reqwest::Error> {
        let http = super::http_client(timeout)?;
        Ok(EngineClient { http })
    }

    /// `get_status`'s `result`, as the engine sent it.
    pub async fn status_detail(&self, host: &str, port: u16) -> Result<Value, EngineError> {
        let url = format!(
            "{}/server/api?api_version=3&method=get_status",
            base(host, port)
        );
        self.get_result(&url).await
    }

    /// `get_version`.
    pub async fn version(&self, host: &str, port: u16) -> Result<EngineVersion, EngineError> {
        let url = format!("{}/webui/api/service?method=get_version", base(host, port));
        let result = self.get_result(&url).await?;
        serde_json::from_value(result.clone()).map_err(|e| {
            EngineError::Protocol(format!(
                "GET {url}: get_version result does not parse ({e}): {}",
                snippet(&result.to_string())
            ))
        })
    }

    /// Reads a playback session's `stat_url`.
    pub async fn stream_stats(&self, stat_url: &str) -> Result<StreamStats, StatError> {
        let response = self.get_response(stat_url).await?;
        serde_json::from_value(response.clone()).map_err(|e| {
            StatError::Other(EngineError::Protocol(format!(
                "GET {stat_url}: stats do not parse ({e}): {}",
                snippet(&response.to_string())
            )))
        })
    }

    /// Starts (or joins) the engine's playback of a content:
    /// `GET /ace/getstream?<param>=<key>&format=json`.
    pub async fn start_playback(
        &self,
        host: &str,
        port: u16,
        param: &str,
        key: &str,
    ) -> Result<PlaybackStart, StatError> {
        let url = format!(
            "{}/ace/getstream?{param}={key}&format=json",
            base(host, port)
        );
        let response = self.get_response(&url).await?;
        let field = |k: &str| response.get(k).and_then(Value::as_str).map(str::to_string);
        let playback_url = field("playback_url").ok_or_else(|| {
            StatError::Other(EngineError::Protocol(format!(
                "GET {url}: no playback_url in {response}"
            )))
        })?;
        Ok(PlaybackStart {
            playback_url,
            command_url: field("command_url"),
            stat_url: field("stat_url"),
            session_id: field("playback_session_id").unwrap_or_default(),
            is_live: response
                .get("is_live")
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_i64() == Some(1)),
        })
    }

    /// Stops a playback session: `GET <command_url>?method=stop`. A session the engine no longer
    /// knows answers `SessionEnded`, which callers may take as done.
    pub async fn stop_stream(&self, command_url: &str) -> Result<(), StatError> {
        let mut url = Url::parse(command_url).map_err(|e| {
            StatError::Other(EngineError::Protocol(format!(
                "command_url {command_url:?} is not a URL: {e}"
            )))
        })?;
        url.query_pairs_mut().append_pair("method", "stop");
        self.get_response(url.as_str()).await.map(|_| ())
    }

    /// GET a `{"result","error"}` envelope and return a non-null `result`.
    async fn get_result(&self, url: &str) -> Result<Value, EngineError> {
        let body = self.get_body(url).await?;
        let envelope: ResultEnvelope = parse_envelope(url, &body)?;
        if let Some(message) = error_message(envelope.error) {
            return Err(EngineError::Api(message));
        }
        match envelope.result {
            Some(result) if !result.is_null() => Ok(result),
            _ => Err(EngineError::Protocol(format!(
                "GET {url}: neither result nor error: {}",
                snippet(&body)
            ))),
        }
    }

    /// GET a `{"response","error"}` envelope and return a non-null `response`.
    async fn get_response(&self, url: &str) -> Result<Value, StatError> {
        let body = self.get_body(url).await?;
        let envelope: ResponseEnvelope = parse_envelope(url, &body)?;
        if let Some(message) = error_message(envelope.error) {
            return Err(if is_session_gone(&message) {
                StatError::SessionEnded
            } else {
                StatError::Other(EngineError::Api(message))
            });
        }
        match envelope.response {
            Some(response) if !response.is_null() => Ok(response),
            _ => Err(StatError::Other(EngineError::Protocol(format!(
                "GET {url}: neither response nor error: {}",
                snippet(&body)
            )))),
        }
    }

    /// GET, expecting 200; returns the body.
    async fn get_body(&self, url: &str) -> Result<String, EngineError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| EngineError::Unreachable(transport_message(&e, url)))?;
        let status = response.status();
        // An engine's answers are small JSON documents: anything larger is not one, and is not
        // held in memory.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| EngineError::Unreachable(transport_message(&e, url)))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(EngineError::Protocol(format!(
                    "GET {url}: answer larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if status != StatusCode::OK {
            return Err(EngineError::Protocol(format!(
                "GET {url} answered {status}: {}",
                snippet(&body)
            )));
        }
        Ok(body)
    }
}

#[async_trait]
impl EngineApi for EngineClient {
    async fn status(&self, host: &str, port: u16) -> Result<(), String> {
        self.status_detail(host, port)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn base(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

fn parse_envelope<T: serde::de::DeserializeOwned>(url: &str, body: &str) -> Result<T, EngineError> {
    serde_json::from_str(body).map_err(|e| {
        EngineError::Protocol(format!(
            "GET {url}: not a JSON envelope ({e}): {}",
            snippet(body)
        ))
    })
}

/// A non-null, non-empty `error` as text.
fn error_message(error: Option<Value>) -> Option<String> {
    match error? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

fn is_session_gone(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .contains("unknown playback session")
}

/// Accepts a non-negative integer, a float (truncated), a numeric string, or null.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0)
            .map(|f| f as u64),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_accept_snake_and_camel_case_and_loose_numbers() {
        let snake: StreamStats = serde_json::from_str(
            r#"{"status":"dl","peers":7,"speed_down":512,"speed_up":64,"downloaded":1000,"uploaded":10}"#,
        )
        .unwrap();
        assert_eq!(snake.speed_down, Some(512));
        assert_eq!(snake.peers, Some(7));
        let camel: StreamStats =
            serde_json::from_str(r#"{"status":"dl","speedDown":"300","speedUp":2.9,"peers":null}"#)
                .unwrap();
        assert_eq!(camel.speed_down, Some(300));
        assert_eq!(camel.speed_up, Some(2));
        assert_eq!(camel.peers, None);
        assert_eq!(camel.downloaded, None);
    }

    #[test]
    fn empty_or_null_error_is_no_error() {
        assert_eq!(error_message(None), None);
        assert_eq!(error_message(Some(Value::Null)), None);
        assert_eq!(error_message(Some(Value::String(String::new()))), None);
        assert_eq!(
            error_message(Some(Value::String("boom".into()))),
            Some("boom".into())
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(base("::1", 6878), "http://[::1]:6878");
        assert_eq!(base("10.0.0.2", 6878), "http://10.0.0.2:6878");
    }
}
