//! Stream bookkeeping, pure: stream identity, the engine a `stream_started` belongs to, the
//! stream a `stream_ended` means, a bounded per-stream stats history, and the rules that end a
//! stream on the collector's observations, and the limits on what clients can make it hold
//! (label bytes, active streams in total and per engine, ended streams kept, streams nothing
//! confirms). The Streams actor owns one `StreamBook` and feeds it facts and times; nothing here
//! performs I/O or reads the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};

/// Samples kept per stream (at a 5 s collect interval: one hour).
pub const HISTORY_LEN: usize = 720;
/// Ended streams kept for `/streams?status=ended`; the oldest ended go first.
pub const ENDED_KEPT: usize = 1000;
/// Samples an ended stream keeps of its history (the rest is released at its end).
pub const ENDED_HISTORY_LEN: usize = 12;

/// What one client may make the book hold: active streams in total and per engine, label bytes
/// per stream, ended streams kept, samples kept, and how long an active stream may go without a
/// stats read or an event confirming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_active: usize,
    pub max_per_engine: usize,
    pub max_label_bytes: usize,
    pub ended_kept: usize,
    pub history_len: usize,
    /// `None`: streams are never ended for lack of confirmation.
    pub unconfirmed_after: Option<Duration>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_active: 1000,
            max_per_engine: 100,
            max_label_bytes: 4096,
            ended_kept: ENDED_KEPT,
            history_len: HISTORY_LEN,
            unconfirmed_after: Some(Duration::from_secs(3600)),
        }
    }
}

/// Why the book refused a start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartRefusal {
    #[error(
        "labels take {bytes} bytes; at most {limit} bytes of label keys and values are kept per stream"
    )]
    LabelsTooLarge { bytes: usize, limit: usize },
    #[error("{limit} streams are active, the most acevisor keeps (api.max_streams); end one first")]
    TooManyStreams { limit: usize },
    #[error(
        "engine {engine} carries {limit} active streams, the most per engine (api.max_streams_per_engine); end one first"
    )]
    TooManyOnEngine { engine: String, limit: usize },
}

/// The bytes a label map takes (keys plus values).
pub fn label_bytes(labels: &BTreeMap<String, String>) -> usize {
    labels.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// How a stream's content is addressed (the upstream orchestrator's set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    ContentId,
    Infohash,
    TorrentUrl,
    DirectUrl,
    RawData,
    Url,
    Magnet,
}

/// `engine` of a `stream_started`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EngineAddress {
    pub host: String,
    pub port: u16,
}

/// `stream` of a `stream_started`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StreamKey {
    pub key_type: KeyType,
    pub key: String,
}

/// `session` of a `stream_started`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    pub playback_session_id: String,
    #[serde(default)]
    pub stat_url: Option<String>,
    #[serde(default)]
    pub command_url: Option<String>,
    /// Clients send `0`/`1` (upstream) or a boolean.
    #[serde(default, deserialize_with = "int_or_bool")]
    pub is_live: bool,
}

/// The body of `POST /events/stream_started` (docs/api.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StreamStartedReq {
    #[serde(default)]
    pub container_id: Option<String>,
    pub engine: EngineAddress,
    pub stream: StreamKey,
    pub session: SessionInfo,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Recorded by acevisor's own stream proxy (never from JSON): its engine is counted busy
    /// through the proxy's reservation, so the record does not count again.
    #[serde(skip)]
    pub proxied: bool,
}

/// The body of `POST /events/stream_ended`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct StreamEndedReq {
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub stream_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn int_or_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrBool {
        Bool(bool),
        Int(i64),
    }
    Ok(match Option::<IntOrBool>::deserialize(d)? {
        None => false,
        Some(IntOrBool::Bool(b)) => b,
        Some(IntOrBool::Int(n)) => n != 0,
    })
}

/// `started` or `ended`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    Started,
    Ended,
}

impl StreamStatus {
    pub fn parse(s: &str) -> Option<StreamStatus> {
        match s {
            "started" => Some(StreamStatus::Started),
            "ended" => Some(StreamStatus::Ended),
            _ => None,
        }
    }
}

/// One reading of a stream's `stat_url`.
#[derive(Clone, Debug, PartialEq)]
pub struct StatSample {
    pub ts: SystemTime,
    pub peers: Option<u64>,
    pub speed_down: Option<u64>,
    pub speed_up: Option<u64>,
    pub downloaded: Option<u64>,
    pub uploaded: Option<u64>,
    pub status: Option<String>,
}

/// An engine as stream bookkeeping needs it (from a Supervisor snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineRef {
    pub name: String,
    pub container_id: Option<String>,
    pub host: Option<String>,
    pub http_port: u16,
}

/// A session URL a client reported, kept only when it points at the engine itself: plain HTTP
/// on the engine's host and HTTP port. acevisor fetches `stat_url` on its own, so a URL anywhere
/// else would let any client make it fetch what the client likes (SSRF).
pub fn session_url(url: Option<&str>, engine: &EngineRef) -> Option<String> {
    let url = url?.trim();
    on_engine(url, engine).then(|| url.to_string())
}

/// `url` is `http://<engine host>:<engine HTTP port>/...` (no user info).
pub fn on_engine(url: &str, engine: &EngineRef) -> bool {
    let (Some(rest), Some(host)) = (url.strip_prefix("http://"), engine.host.as_deref()) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let (url_host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().ok()),
        _ => (authority, Some(80)),
    };
    let unbracket = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_string();
    port == Some(engine.http_port) && unbracket(url_host).eq_ignore_ascii_case(&unbracket(host))
}

/// One stream, as `/streams` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub id: String,
    pub key_type: KeyType,
    pub key: String,
    pub container_id: String,
    pub container_name: String,
    pub playback_session_id: String,
    pub stat_url: Option<String>,
    pub command_url: Option<String>,
    pub is_live: bool,
    pub labels: BTreeMap<String, String>,
    /// A session of acevisor's stream proxy (see `StreamStartedReq::proxied`).
    pub proxied: bool,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
    pub end_reason: Option<String>,
    pub status: StreamStatus,
    /// Latest collected stats.
    pub latest: Option<StatSample>,
    /// Order of starts, to find "the most recent started stream" of an engine.
    pub seq: u64,
    /// Last time a start or a stats read confirmed the stream is alive.
    pub confirmed_at: SystemTime,
}

/// The stream id the upstream clients rely on: `labels.stream_id`, else `<key>|<session id>`.
pub fn stream_id(req: &StreamStartedReq) -> String {
    match req.labels.get("stream_id").map(|s| s.trim()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("{}|{}", req.stream.key, req.session.playback_session_id),
    }
}

/// Whether `given` names the engine: its full container ID, a Docker short ID (a prefix of at
/// least 12 characters), or its container name.
pub fn names_engine(given: &str, engine: &EngineRef) -> bool {
    let given = given.trim();
    if given.is_empty() {
        return false;
    }
    if given == engine.name {
        return true;
    }
    match &engine.container_id {
        Some(id) => id == given || (given.len() >= 12 && id.starts_with(given)),
        None => false,
    }
}

/// The engine of a `stream_started`: by `container_id` when it names a known engine (proxies
/// such as Acexy send their *own* container ID there, so a miss falls through), else by
/// `(host, port)` where host may be the engine's address or its container name, else by port
/// alone when exactly one engine has it (a proxy reaching the VPN under another name).
pub fn resolve_engine<'a>(
    engines: &'a [EngineRef],
    container_id: Option<&str>,
    address: &EngineAddress,
) -> Option<&'a EngineRef> {
    if let Some(cid) = container_id
        && let Some(e) = engines.iter().find(|e| names_engine(cid, e))
    {
        return Some(e);
    }
    let host = address.host.trim();
    let on_port = || engines.iter().filter(|e| e.http_port == address.port);
    if let Some(e) = on_port().find(|e| {
        e.host.as_deref() == Some(host) || e.name == host || e.container_id.as_deref() == Some(host)
    }) {
        return Some(e);
    }
    let mut candidates = on_port();
    match (candidates.next(), candidates.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// What `stream_ended` did.
#[derive(Clone, Debug, PartialEq)]
pub struct EndOutcome {
    pub updated: bool,
    pub stream: Option<StreamRecord>,
}

/// Why the collector ends a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectVerdict {
    /// Keep it; the sample (if any) was recorded.
    Keep,
    /// The engine no longer knows the session.
    SessionEnded,
    /// The engine is gone from the Supervisor's view.
    EngineGone,
}

impl CollectVerdict {
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            CollectVerdict::Keep => None,
            CollectVerdict::SessionEnded => Some("session_ended"),
            CollectVerdict::EngineGone => Some("engine_gone"),
        }
    }
}

/// What one read of a stream's `stat_url` gave.
#[derive(Clone, Debug, PartialEq)]
pub enum StatReading {
    Sample(StatSample),
    /// The engine answered `unknown playback session id`.
    SessionEnded,
    /// No usable answer this round (unreachable, protocol error): no conclusion.
    Failed,
    /// The stream has no `stat_url`.
    NotRead,
}

/// The end rule of the collector: a stream ends when its engine is no longer among the live
/// engines, or the engine says the session is gone. A failed read ends nothing (a slow engine is
/// not a finished stream).
pub fn collect_verdict(engine_present: bool, reading: &StatReading) -> CollectVerdict {
    if !engine_present {
        CollectVerdict::EngineGone
    } else if *reading == StatReading::SessionEnded {
        CollectVerdict::SessionEnded
    } else {
        CollectVerdict::Keep
    }
}

/// All streams and their histories.
#[derive(Debug, Default)]
pub struct StreamBook {
    streams: HashMap<String, StreamRecord>,
    history: HashMap<String, VecDeque<StatSample>>,
    /// Every stream by start order (`seq`), so listings need no sort.
    order: BTreeMap<u64, String>,
    /// Ended streams by start order, the oldest forgotten first.
    ended: BTreeMap<u64, String>,
    next_seq: u64,
    limits: StreamLimits,
}

impl StreamBook {
    pub fn new() -> StreamBook {
        StreamBook::with(StreamLimits::default())
    }

    pub fn with_limits(history_len: usize, ended_kept: usize) -> StreamBook {
        StreamBook::with(StreamLimits {
            history_len,
            ended_kept,
            ..StreamLimits::default()
        })
    }

    pub fn with(limits: StreamLimits) -> StreamBook {
        StreamBook {
            limits: StreamLimits {
                history_len: limits.history_len.max(1),
                ..limits
            },
            ..StreamBook::default()
        }
    }

    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// Whether a start of `req` on `engine` stays within the limits. Restarting an active id
    /// replaces that stream, so it takes no new place.
    pub fn admit(&self, req: &StreamStartedReq, engine: &EngineRef) -> Result<(), StartRefusal> {
        let bytes = label_bytes(&req.labels);
        if bytes > self.limits.max_label_bytes {
            return Err(StartRefusal::LabelsTooLarge {
                bytes,
                limit: self.limits.max_label_bytes,
            });
        }
        let id = stream_id(req);
        let replaced = self
            .streams
            .get(&id)
            .filter(|s| s.status == StreamStatus::Started);
        let active = self.streams.len() - self.ended.len() - usize::from(replaced.is_some());
        if active >= self.limits.max_active {
            return Err(StartRefusal::TooManyStreams {
                limit: self.limits.max_active,
            });
        }
        let on_engine = self
            .streams
            .values()
            .filter(|s| s.status == StreamStatus::Started && s.container_name == engine.name)
            .count()
            - usize::from(replaced.is_some_and(|s| s.container_name == engine.name));
        if on_engine >= self.limits.max_per_engine {
            return Err(StartRefusal::TooManyOnEngine {
                engine: engine.name.clone(),
                limit: self.limits.max_per_engine,
            });
        }
        Ok(())
    }

    /// Records a start on `engine` within the limits (see `admit`). A start under an id already
    /// known replaces that stream (a client reusing its id starts a new playback); its history
    /// starts over.
    pub fn start(
        &mut self,
        req: &StreamStartedReq,
        engine: &EngineRef,
        now: SystemTime,
    ) -> Result<StreamRecord, StartRefusal> {
        self.admit(req, engine)?;
        let id = stream_id(req);
        if let Some(old) = self.streams.remove(&id) {
            self.order.remove(&old.seq);
            self.ended.remove(&old.seq);
        }
        self.next_seq += 1;
        let record = StreamRecord {
            id: id.clone(),
            key_type: req.stream.key_type,
            key: req.stream.key.clone(),
            container_id: engine
                .container_id
                .clone()
                .unwrap_or_else(|| engine.name.clone()),
            container_name: engine.name.clone(),
            playback_session_id: req.session.playback_session_id.clone(),
            stat_url: session_url(req.session.stat_url.as_deref(), engine),
            command_url: session_url(req.session.command_url.as_deref(), engine),
            is_live: req.session.is_live,
            labels: req.labels.clone(),
            proxied: req.proxied,
            started_at: now,
            ended_at: None,
            end_reason: None,
            status: StreamStatus::Started,
            latest: None,
            seq: self.next_seq,
            confirmed_at: now,
        };
        self.history.remove(&id);
        self.order.insert(record.seq, id.clone());
        self.streams.insert(id, record.clone());
        Ok(record)
    }

    /// `stream_ended`: by `stream_id` when given, else the most recent started stream on the
    /// engine `container_id` names. Ending an ended or unknown stream changes nothing.
    pub fn end(&mut self, req: &StreamEndedReq, now: SystemTime) -> EndOutcome {
        let wanted = req
            .stream_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let id = match wanted {
            Some(id) => self.streams.contains_key(id).then(|| id.to_string()),
            None => req
                .container_id
                .as_deref()
                .and_then(|cid| self.latest_started_on(cid)),
        };
        let Some(id) = id else {
            return EndOutcome {
                updated: false,
                stream: None,
            };
        };
        let reason = req
            .reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "client".to_string());
        self.end_id(&id, &reason, now)
    }

    /// Ends one stream by id with `reason`.
    pub fn end_id(&mut self, id: &str, reason: &str, now: SystemTime) -> EndOutcome {
        let Some(s) = self.streams.get_mut(id) else {
            return EndOutcome {
                updated: false,
                stream: None,
            };
        };
        if s.status == StreamStatus::Ended {
            return EndOutcome {
                updated: false,
                stream: Some(s.clone()),
            };
        }
        s.status = StreamStatus::Ended;
        s.ended_at = Some(now);
        s.end_reason = Some(reason.to_string());
        let ended = s.clone();
        self.ended.insert(ended.seq, ended.id.clone());
        // An ended stream keeps only the tail of its history.
        if let Some(h) = self.history.get_mut(id) {
            let excess = h.len().saturating_sub(ENDED_HISTORY_LEN);
            h.drain(..excess);
            h.shrink_to_fit();
        }
        self.trim_ended();
        EndOutcome {
            updated: true,
            stream: Some(ended),
        }
    }

    fn latest_started_on(&self, container: &str) -> Option<String> {
        let container = container.trim();
        self.streams
            .values()
            .filter(|s| s.status == StreamStatus::Started)
            .filter(|s| {
                s.container_name == container
                    || s.container_id == container
                    || (container.len() >= 12 && s.container_id.starts_with(container))
            })
            .max_by_key(|s| s.seq)
            .map(|s| s.id.clone())
    }

    /// Forgets the oldest ended streams beyond `ended_kept`, and gives the maps' spare
    /// capacity back once they are mostly empty.
    fn trim_ended(&mut self) {
        while self.ended.len() > self.limits.ended_kept {
            let Some((seq, id)) = self.ended.pop_first() else {
                break;
            };
            self.order.remove(&seq);
            self.streams.remove(&id);
            self.history.remove(&id);
        }
        if self.streams.capacity() > 64 && self.streams.capacity() > 4 * self.streams.len() {
            self.streams.shrink_to_fit();
            self.history.shrink_to_fit();
        }
    }

    /// Ends, with reason `unconfirmed`, the active streams no start and no stats read has
    /// confirmed within `unconfirmed_after`; returns their ids.
    pub fn expire_unconfirmed(&mut self, now: SystemTime) -> Vec<String> {
        let Some(after) = self.limits.unconfirmed_after.filter(|d| !d.is_zero()) else {
            return Vec::new();
        };
        let stale: Vec<String> = self
            .streams
            .values()
            .filter(|s| s.status == StreamStatus::Started)
            .filter(|s| {
                now.duration_since(s.confirmed_at)
                    .is_ok_and(|age| age >= after)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in &stale {
            self.end_id(id, "unconfirmed", now);
        }
        stale
    }

    /// Records a collected sample of an active stream; the history keeps the newest
    /// `history_len` samples.
    pub fn record_sample(&mut self, id: &str, sample: StatSample) {
        let Some(s) = self.streams.get_mut(id) else {
            return;
        };
        if s.status != StreamStatus::Started {
            return;
        }
        s.latest = Some(sample.clone());
        s.confirmed_at = s.confirmed_at.max(sample.ts);
        let cap = self.limits.history_len;
        let h = self.history.entry(id.to_string()).or_default();
        if h.len() == h.capacity() && h.len() < cap {
            // Doubling, but never past the history length (no power-of-two slack at the top).
            h.reserve_exact(h.len().max(8).min(cap - h.len()));
        }
        h.push_back(sample);
        while h.len() > self.limits.history_len {
            h.pop_front();
        }
    }

    pub fn get(&self, id: &str) -> Option<&StreamRecord> {
        self.streams.get(id)
    }

    /// Streams filtered by status and engine (ID, short ID or name), oldest start first.
    pub fn list(&self, status: Option<StreamStatus>, container: Option<&str>) -> Vec<StreamRecord> {
        self.page(status, container, 0, None).1
    }

    /// One page of `list`: the total number of matching streams and the `limit` (all when
    /// `None`) matching streams after the first `offset`; only the page is copied.
    pub fn page(
        &self,
        status: Option<StreamStatus>,
        container: Option<&str>,
        offset: usize,
        limit: Option<usize>,
    ) -> (usize, Vec<StreamRecord>) {
        let matching = self
            .order
            .values()
            .filter_map(|id| self.streams.get(id))
            .filter(|s| status.is_none_or(|st| s.status == st))
            .filter(|s| {
                container.is_none_or(|c| {
                    s.container_id == c
                        || s.container_name == c
                        || (c.len() >= 12 && s.container_id.starts_with(c))
                })
            });
        let mut total = 0;
        let mut out = Vec::new();
        for s in matching {
            if total >= offset && limit.is_none_or(|l| out.len() < l) {
                out.push(s.clone());
            }
            total += 1;
        }
        (total, out)
    }

    /// The stats history of a stream, samples at or after `since`; `None` for an unknown id.
    pub fn history(&self, id: &str, since: Option<SystemTime>) -> Option<Vec<StatSample>> {
        self.streams.get(id)?;
        Some(
            self.history
                .get(id)
                .map(|h| {
                    h.iter()
                        .filter(|s| since.is_none_or(|t| s.ts >= t))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Active streams: `(id, stat_url, container_id)`.
    pub fn active(&self) -> Vec<(String, Option<String>, String)> {
        self.active_records()
            .map(|s| (s.id.clone(), s.stat_url.clone(), s.container_id.clone()))
            .collect()
    }

    /// Active streams, oldest start first (borrowed: nothing is copied).
    fn active_records(&self) -> impl Iterator<Item = &StreamRecord> {
        self.order
            .values()
            .filter_map(|id| self.streams.get(id))
            .filter(|s| s.status == StreamStatus::Started)
    }

    /// Active stream ids per engine, by container ID (an engine renamed to close a gap in the
    /// names keeps its ID, so its streams stay attached).
    pub fn active_by_engine(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.active_records() {
            out.entry(s.container_id.clone())
                .or_default()
                .push(s.id.clone());
        }
        out
    }

    /// Active streams show their engine's current name after a rename.
    pub fn follow_renames(&mut self, engines: &[EngineRef]) {
        for s in self
            .streams
            .values_mut()
            .filter(|s| s.status == StreamStatus::Started)
        {
            if let Some(e) = engines
                .iter()
                .find(|e| e.container_id.as_deref() == Some(s.container_id.as_str()))
                && e.name != s.container_name
            {
                s.container_name = e.name.clone();
            }
        }
    }

    /// Active stream count per engine container ID (what the Supervisor's autoscaling needs).
    /// The stream proxy's own sessions are left out: the Supervisor counts them through their
    /// reservations, once.
    pub fn counts(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for s in self.active_records().filter(|s| !s.proxied) {
            *out.entry(s.container_id.clone()).or_default() += 1;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn engine(name: &str, id: &str, host: &str, port: u16) -> EngineRef {
        EngineRef {
            name: name.into(),
            container_id: Some(id.into()),
            host: Some(host.into()),
            http_port: port,
        }
    }

    fn started(
        key: &str,
        session: &str,
        stream_id: Option<&str>,
        host: &str,
        port: u16,
    ) -> StreamStartedReq {
        let body = serde_json::json!({
            "engine": {"host": host, "port": port},
            "stream": {"key_type": "content_id", "key": key},
            "session": {"playback_session_id": session, "stat_url": "http://e/stat", "command_url": "http://e/cmd", "is_live": 1},
            "labels": stream_id.map(|id| serde_json::json!({"stream_id": id})).unwrap_or(serde_json::json!({})),
        });
        serde_json::from_value(body).unwrap()
    }

    fn sample(secs: u64, peers: u64) -> StatSample {
        StatSample {
            ts: t(secs),
            peers: Some(peers),
            speed_down: Some(10),
            speed_up: Some(1),
            downloaded: None,
            uploaded: None,
            status: Some("dl".into()),
        }
    }

    #[test]
    fn only_session_urls_on_the_engine_itself_are_kept() {
        let e = engine("acestream-1", "c1", "172.18.0.2", 19000);
        for ok in [
            "http://172.18.0.2:19000/ace/stat/abc",
            "http://172.18.0.2:19000",
            "  http://172.18.0.2:19000/ace/cmd/abc?method=stop ",
        ] {
            assert!(session_url(Some(ok), &e).is_some(), "{ok}");
        }
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "http://172.18.0.2:19001/ace/stat/abc",
            "http://172.18.0.3:19000/ace/stat/abc",
            "https://172.18.0.2:19000/ace/stat/abc",
            "http://evil@172.18.0.2:19000/",
            "http://172.18.0.2/ace/stat",
            "file:///etc/passwd",
            "",
        ] {
            assert_eq!(session_url(Some(bad), &e), None, "{bad}");
        }
        let v6 = engine("acestream-2", "c2", "fd00::2", 19004);
        assert!(on_engine("http://[fd00::2]:19004/ace/stat/x", &v6));
    }

    #[test]
    fn id_is_label_stream_id_else_key_and_session() {
        assert_eq!(
            stream_id(&started("abc", "s1", Some("acexy-7"), "h", 1)),
            "acexy-7"
        );
        assert_eq!(stream_id(&started("abc", "s1", None, "h", 1)), "abc|s1");
        assert_eq!(
            stream_id(&started("abc", "s1", Some("  "), "h", 1)),
            "abc|s1"
        );
    }

    #[test]
    fn is_live_accepts_int_and_bool() {
        let mut body = serde_json::json!({
            "engine": {"host": "h", "port": 1},
            "stream": {"key_type": "infohash", "key": "k"},
            "session": {"playback_session_id": "p", "is_live": 0},
        });
        let r: StreamStartedReq = serde_json::from_value(body.clone()).unwrap();
        assert!(!r.session.is_live);
        body["session"]["is_live"] = serde_json::json!(true);
        let r: StreamStartedReq = serde_json::from_value(body.clone()).unwrap();
        assert!(r.session.is_live);
        body["session"]["is_live"] = serde_json::json!("yes");
        assert!(serde_json::from_value::<StreamStartedReq>(body).is_err());
    }

    #[test]
    fn engine_by_container_id_then_address_then_unique_port() {
        let engines = vec![
            engine("acestream-1", "aaaaaaaaaaaa1111", "10.0.0.2", 19000),
            engine("acestream-2", "bbbbbbbbbbbb2222", "10.0.0.2", 19004),
            engine("acestream-3", "cccccccccccc3333", "10.0.0.3", 19004),
        ];
        let addr = |h: &str, p| EngineAddress {
            host: h.into(),
            port: p,
        };
        let by_id = resolve_engine(&engines, Some("bbbbbbbbbbbb"), &addr("x", 1)).unwrap();
        assert_eq!(by_id.name, "acestream-2");
        let by_name = resolve_engine(&engines, Some("acestream-3"), &addr("x", 1)).unwrap();
        assert_eq!(by_name.name, "acestream-3");
        // The proxy's own container id matches nothing: fall through to the address.
        let by_addr =
            resolve_engine(&engines, Some("proxy0000000"), &addr("10.0.0.3", 19004)).unwrap();
        assert_eq!(by_addr.name, "acestream-3");
        let by_name_host = resolve_engine(&engines, None, &addr("acestream-2", 19004)).unwrap();
        assert_eq!(by_name_host.name, "acestream-2");
        let unique_port = resolve_engine(&engines, None, &addr("gluetun", 19000)).unwrap();
        assert_eq!(unique_port.name, "acestream-1");
        // Port shared by two engines and an unknown host: ambiguous, no guess.
        assert!(resolve_engine(&engines, None, &addr("gluetun", 19004)).is_none());
        assert!(resolve_engine(&engines, None, &addr("10.0.0.2", 1)).is_none());
        // A too-short prefix is not an id.
        assert!(resolve_engine(&engines, Some("aaaa"), &addr("x", 1)).is_none());
    }

    #[test]
    fn the_proxys_own_sessions_are_not_counted_again() {
        let mut book = StreamBook::new();
        let e = engine("acestream-1", "id1", "h", 1);
        let mut req = started("k", "s", Some("proxy:id:k"), "h", 1);
        req.proxied = true;
        book.start(&req, &e, t(0)).unwrap();
        assert!(book.counts().is_empty(), "counted through its reservation");
        book.start(&started("k2", "s2", None, "h", 1), &e, t(1))
            .unwrap();
        assert_eq!(book.counts().get("id1"), Some(&1));
        // JSON can never claim to be the proxy.
        let forged: StreamStartedReq = serde_json::from_value(serde_json::json!({
            "engine": {"host": "h", "port": 1}, "stream": {"key_type": "content_id", "key": "k"},
            "session": {"playback_session_id": "s"}, "proxied": true,
        }))
        .unwrap();
        assert!(!forged.proxied);
    }

    #[test]
    fn end_by_stream_id_is_idempotent() {
        let mut book = StreamBook::new();
        let e = engine("acestream-1", "id1", "h", 1);
        book.start(&started("k", "s", Some("sid"), "h", 1), &e, t(0))
            .unwrap();
        assert_eq!(book.counts().get("id1"), Some(&1));
        let req = StreamEndedReq {
            stream_id: Some("sid".into()),
            ..Default::default()
        };
        let first = book.end(&req, t(5));
        assert!(first.updated);
        let s = first.stream.unwrap();
        assert_eq!(s.status, StreamStatus::Ended);
        assert_eq!(s.ended_at, Some(t(5)));
        assert_eq!(s.end_reason.as_deref(), Some("client"));
        let again = book.end(&req, t(6));
        assert!(!again.updated);
        assert_eq!(again.stream.unwrap().ended_at, Some(t(5)));
        assert!(book.counts().is_empty());
        let unknown = book.end(
            &StreamEndedReq {
                stream_id: Some("nope".into()),
                container_id: Some("id1".into()),
                ..Default::default()
            },
            t(7),
        );
        assert_eq!(
            unknown,
            EndOutcome {
                updated: false,
                stream: None
            }
        );
    }

    #[test]
    fn end_by_container_takes_the_most_recent_started() {
        let mut book = StreamBook::new();
        let e = engine("acestream-1", "id1", "h", 1);
        book.start(&started("a", "1", None, "h", 1), &e, t(0))
            .unwrap();
        book.start(&started("b", "2", None, "h", 1), &e, t(1))
            .unwrap();
        book.start(&started("c", "3", None, "h", 1), &e, t(2))
            .unwrap();
        book.end_id("c|3", "x", t(3));
        let out = book.end(
            &StreamEndedReq {
                container_id: Some("acestream-1".into()),
                ..Default::default()
            },
            t(4),
        );
        assert_eq!(out.stream.unwrap().id, "b|2");
        let out = book.end(
            &StreamEndedReq {
                container_id: Some("id1".into()),
                ..Default::default()
            },
            t(5),
        );
        assert_eq!(out.stream.unwrap().id, "a|1");
        let none = book.end(
            &StreamEndedReq {
                container_id: Some("id1".into()),
                ..Default::default()
            },
            t(6),
        );
        assert!(!none.updated);
        assert!(none.stream.is_none());
        assert!(!book.end(&StreamEndedReq::default(), t(7)).updated);
    }

    #[test]
    fn history_is_bounded_and_filtered_by_since() {
        let mut book = StreamBook::with_limits(3, 10);
        let e = engine("acestream-1", "id1", "h", 1);
        book.start(&started("k", "s", None, "h", 1), &e, t(0))
            .unwrap();
        for i in 1..=5 {
            book.record_sample("k|s", sample(i, i));
        }
        let all = book.history("k|s", None).unwrap();
        assert_eq!(
            all.iter().map(|s| s.peers.unwrap()).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(book.history("k|s", Some(t(4))).unwrap().len(), 2);
        assert_eq!(
            book.get("k|s").unwrap().latest.as_ref().unwrap().peers,
            Some(5)
        );
        assert!(book.history("nope", None).is_none());
        // Samples after the end are not recorded.
        book.end_id("k|s", "x", t(6));
        book.record_sample("k|s", sample(7, 7));
        assert_eq!(book.history("k|s", None).unwrap().len(), 3);
    }

    #[test]
    fn restart_under_same_id_replaces_and_clears_history() {
        let mut book = StreamBook::new();
        let e = engine("acestream-1", "id1", "h", 1);
        book.start(&started("k", "s", Some("x"), "h", 1), &e, t(0))
            .unwrap();
        book.record_sample("x", sample(1, 1));
        book.end_id("x", "client", t(2));
        let again = book
            .start(&started("k2", "s2", Some("x"), "h", 1), &e, t(3))
            .unwrap();
        assert_eq!(again.status, StreamStatus::Started);
        assert_eq!(book.history("x", None).unwrap().len(), 0);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn ended_streams_are_bounded_oldest_first() {
        let mut book = StreamBook::with_limits(10, 2);
        let e = engine("acestream-1", "id1", "h", 1);
        for i in 0..4u64 {
            book.start(&started("k", &i.to_string(), None, "h", 1), &e, t(i))
                .unwrap();
        }
        for i in 0..4u64 {
            book.end_id(&format!("k|{i}"), "x", t(10 + i));
        }
        let ended: Vec<String> = book
            .list(Some(StreamStatus::Ended), None)
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ended, vec!["k|2".to_string(), "k|3".to_string()]);
    }

    #[test]
    fn list_filters_by_status_and_engine() {
        let mut book = StreamBook::new();
        let e1 = engine("acestream-1", "aaaaaaaaaaaa1111", "h", 1);
        let e2 = engine("acestream-2", "bbbbbbbbbbbb2222", "h", 2);
        book.start(&started("a", "1", None, "h", 1), &e1, t(0))
            .unwrap();
        book.start(&started("b", "2", None, "h", 2), &e2, t(1))
            .unwrap();
        book.end_id("a|1", "x", t(2));
        assert_eq!(book.list(None, None).len(), 2);
        assert_eq!(book.list(Some(StreamStatus::Started), None)[0].id, "b|2");
        assert_eq!(book.list(None, Some("aaaaaaaaaaaa"))[0].id, "a|1");
        assert_eq!(book.list(None, Some("acestream-2"))[0].id, "b|2");
        assert!(
            book.list(Some(StreamStatus::Started), Some("acestream-1"))
                .is_empty()
        );
        assert_eq!(
            book.active_by_engine(),
            BTreeMap::from([("bbbbbbbbbbbb2222".to_string(), vec!["b|2".to_string()])])
        );
    }

    #[test]
    fn a_renamed_engine_keeps_its_streams() {
        let mut book = StreamBook::new();
        let before = engine("acestream-5", "id5", "h", 1);
        book.start(&started("k", "s", Some("sid"), "h", 1), &before, t(0))
            .unwrap();
        let after = engine("acestream-1", "id5", "h", 1);
        book.follow_renames(std::slice::from_ref(&after));
        assert_eq!(book.counts().get("id5"), Some(&1));
        assert_eq!(book.get("sid").unwrap().container_name, "acestream-1");
        assert_eq!(book.list(None, Some("acestream-1")).len(), 1);
    }

    #[test]
    fn collector_end_rules() {
        let s = StatReading::Sample(sample(1, 1));
        assert_eq!(collect_verdict(true, &s), CollectVerdict::Keep);
        assert_eq!(
            collect_verdict(true, &StatReading::Failed),
            CollectVerdict::Keep
        );
        assert_eq!(
            collect_verdict(true, &StatReading::NotRead),
            CollectVerdict::Keep
        );
        assert_eq!(
            collect_verdict(true, &StatReading::SessionEnded),
            CollectVerdict::SessionEnded
        );
        assert_eq!(collect_verdict(false, &s), CollectVerdict::EngineGone);
        assert_eq!(
            collect_verdict(false, &StatReading::Failed),
            CollectVerdict::EngineGone
        );
    }

    #[test]
    fn an_ended_stream_keeps_only_the_tail_of_its_history() {
        let mut book = StreamBook::with_limits(100, 10);
        let e = engine("acestream-1", "id1", "h", 1);
        book.start(&started("k", "s", None, "h", 1), &e, t(0))
            .unwrap();
        for i in 1..=50 {
            book.record_sample("k|s", sample(i, i));
        }
        book.end_id("k|s", "client", t(60));
        let kept = book.history("k|s", None).unwrap();
        assert_eq!(kept.len(), ENDED_HISTORY_LEN);
        assert_eq!(kept.last().unwrap().peers, Some(50));
    }

    #[test]
    fn limits_refuse_label_bytes_and_active_streams() {
        let mut book = StreamBook::with(StreamLimits {
            max_active: 2,
            max_per_engine: 1,
            max_label_bytes: 20,
            ..StreamLimits::default()
        });
        let e1 = engine("acestream-1", "id1", "h", 1);
        let e2 = engine("acestream-2", "id2", "h", 2);
        let e3 = engine("acestream-3", "id3", "h", 3);
        let mut big = started("k", "s", Some("big"), "h", 1);
        big.labels.insert("note".into(), "x".repeat(20));
        assert!(matches!(
            book.start(&big, &e1, t(0)),
            Err(StartRefusal::LabelsTooLarge { limit: 20, .. })
        ));
        book.start(&started("a", "1", Some("a"), "h", 1), &e1, t(0))
            .unwrap();
        assert!(matches!(
            book.start(&started("b", "1", Some("b"), "h", 1), &e1, t(0)),
            Err(StartRefusal::TooManyOnEngine { limit: 1, .. })
        ));
        // The same id again replaces the stream.
        book.start(&started("a", "2", Some("a"), "h", 1), &e1, t(1))
            .unwrap();
        book.start(&started("c", "1", Some("c"), "h", 2), &e2, t(2))
            .unwrap();
        assert_eq!(
            book.start(&started("d", "1", Some("d"), "h", 3), &e3, t(3)),
            Err(StartRefusal::TooManyStreams { limit: 2 })
        );
        book.end_id("c", "client", t(4));
        book.start(&started("d", "1", Some("d"), "h", 3), &e3, t(5))
            .unwrap();
        assert_eq!(book.list(None, None).len(), 3);
    }

    #[test]
    fn unconfirmed_streams_end_and_a_sample_confirms() {
        let mut book = StreamBook::with(StreamLimits {
            unconfirmed_after: Some(Duration::from_secs(60)),
            ..StreamLimits::default()
        });
        let e = engine("acestream-1", "id1", "h", 1);
        book.start(&started("a", "1", Some("a"), "h", 1), &e, t(0))
            .unwrap();
        book.start(&started("b", "1", Some("b"), "h", 1), &e, t(0))
            .unwrap();
        book.record_sample("b", sample(50, 1));
        assert!(book.expire_unconfirmed(t(59)).is_empty());
        assert_eq!(book.expire_unconfirmed(t(60)), vec!["a".to_string()]);
        assert_eq!(
            book.get("a").unwrap().end_reason.as_deref(),
            Some("unconfirmed")
        );
        assert_eq!(book.expire_unconfirmed(t(110)), vec!["b".to_string()]);
        let mut never = StreamBook::with(StreamLimits {
            unconfirmed_after: None,
            ..StreamLimits::default()
        });
        never
            .start(&started("a", "1", Some("a"), "h", 1), &e, t(0))
            .unwrap();
        assert!(never.expire_unconfirmed(t(1_000_000)).is_empty());
    }

    #[test]
    fn pages_follow_start_order() {
        let mut book = StreamBook::new();
        let e = engine("acestream-1", "id1", "h", 1);
        for i in 0..5u64 {
            book.start(&started("k", &i.to_string(), None, "h", 1), &e, t(i))
                .unwrap();
        }
        // A restart moves the stream to the end.
        book.start(&started("k", "1", None, "h", 1), &e, t(9))
            .unwrap();
        let (total, page) = book.page(None, None, 1, Some(3));
        assert_eq!(total, 5);
        let ids: Vec<_> = page.into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["k|2", "k|3", "k|4"]);
        let (_, tail) = book.page(None, None, 4, Some(3));
        assert_eq!(tail[0].id, "k|1");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Start { id: u8, engine: u8, label_bytes: u8 },
        End { id: u8 },
        Sample { id: u8 },
        Expire,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0u8..24, 0u8..3, any::<u8>()).prop_map(|(id, engine, label_bytes)| Op::Start { id, engine, label_bytes }),
            2 => (0u8..24).prop_map(|id| Op::End { id }),
            2 => (0u8..24).prop_map(|id| Op::Sample { id }),
            1 => Just(Op::Expire),
        ]
    }

    proptest::proptest! {
        /// Whatever clients send, the book stays within its limits and its indexes agree.
        #[test]
        fn the_book_stays_within_its_limits(ops in proptest::collection::vec(op(), 0..200)) {
            let limits = StreamLimits {
                max_active: 6,
                max_per_engine: 3,
                max_label_bytes: 200,
                ended_kept: 4,
                history_len: 20,
                unconfirmed_after: Some(Duration::from_secs(30)),
            };
            let mut book = StreamBook::with(limits.clone());
            let engines: Vec<EngineRef> = (0..3)
                .map(|n| engine(&format!("acestream-{n}"), &format!("id{n}"), "h", 19000 + n))
                .collect();
            for (step, op) in ops.into_iter().enumerate() {
                let now = t(step as u64);
                match op {
                    Op::Start { id, engine, label_bytes } => {
                        let mut req = started("k", "s", Some(&format!("s{id}")), "h", 1);
                        req.labels.insert("x".into(), "y".repeat(label_bytes as usize));
                        let _ = book.start(&req, &engines[engine as usize], now);
                    }
                    Op::End { id } => {
                        book.end_id(&format!("s{id}"), "client", now);
                    }
                    Op::Sample { id } => book.record_sample(&format!("s{id}"), sample(step as u64, 1)),
                    Op::Expire => {
                        book.expire_unconfirmed(now);
                    }
                }
                let active = book.list(Some(StreamStatus::Started), None);
                let ended = book.list(Some(StreamStatus::Ended), None);
                proptest::prop_assert!(active.len() <= limits.max_active);
                proptest::prop_assert!(ended.len() <= limits.ended_kept);
                proptest::prop_assert_eq!(active.len() + ended.len(), book.len());
                proptest::prop_assert!(book.counts().values().all(|&c| c as usize <= limits.max_per_engine));
                for s in active.iter().chain(&ended) {
                    proptest::prop_assert!(label_bytes(&s.labels) <= limits.max_label_bytes);
                    let kept = book.history(&s.id, None).unwrap().len();
                    let bound = if s.status == StreamStatus::Ended { ENDED_HISTORY_LEN } else { limits.history_len };
                    proptest::prop_assert!(kept <= bound);
                }
                proptest::prop_assert_eq!(book.page(None, None, 0, None).0, book.len());
            }
        }
    }
}
