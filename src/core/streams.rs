//! Stream bookkeeping, pure: stream identity, the engine a `stream_started` belongs to, the
//! stream a `stream_ended` means, a bounded per-stream stats history, and the rules that end a
//! stream on the collector's observations. The Streams actor owns one `StreamBook` and feeds it
//! facts and times; nothing here performs I/O or reads the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::SystemTime;

use serde::{Deserialize, Deserializer};

/// Samples kept per stream (at a 5 s collect interval: one hour).
pub const HISTORY_LEN: usize = 720;
/// Ended streams kept for `/streams?status=ended`; the oldest ended go first.
pub const ENDED_KEPT: usize = 1000;

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

/// The body of `POST /events/stream_started` (PROTOCOLS.md section 3).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StreamStartedReq {
    #[serde(default)]
    pub container_id: Option<String>,
    pub engine: EngineAddress,
    pub stream: StreamKey,
    pub session: SessionInfo,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
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
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
    pub end_reason: Option<String>,
    pub status: StreamStatus,
    /// Latest collected stats.
    pub latest: Option<StatSample>,
    /// Order of starts, to find "the most recent started stream" of an engine.
    pub seq: u64,
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
    next_seq: u64,
    history_len: usize,
    ended_kept: usize,
}

impl StreamBook {
    pub fn new() -> StreamBook {
        StreamBook::with_limits(HISTORY_LEN, ENDED_KEPT)
    }

    pub fn with_limits(history_len: usize, ended_kept: usize) -> StreamBook {
        StreamBook {
            history_len: history_len.max(1),
            ended_kept,
            ..StreamBook::default()
        }
    }

    /// Records a start on `engine`. A start under an id already known replaces that stream (a
    /// client reusing its id starts a new playback); its history starts over.
    pub fn start(
        &mut self,
        req: &StreamStartedReq,
        engine: &EngineRef,
        now: SystemTime,
    ) -> StreamRecord {
        let id = stream_id(req);
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
            stat_url: req.session.stat_url.clone().filter(|u| !u.is_empty()),
            command_url: req.session.command_url.clone().filter(|u| !u.is_empty()),
            is_live: req.session.is_live,
            labels: req.labels.clone(),
            started_at: now,
            ended_at: None,
            end_reason: None,
            status: StreamStatus::Started,
            latest: None,
            seq: self.next_seq,
        };
        self.history.remove(&id);
        self.streams.insert(id, record.clone());
        record
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

    fn trim_ended(&mut self) {
        let mut ended: Vec<(u64, String)> = self
            .streams
            .values()
            .filter(|s| s.status == StreamStatus::Ended)
            .map(|s| (s.seq, s.id.clone()))
            .collect();
        if ended.len() <= self.ended_kept {
            return;
        }
        ended.sort();
        let excess = ended.len() - self.ended_kept;
        for (_, id) in ended.into_iter().take(excess) {
            self.streams.remove(&id);
            self.history.remove(&id);
        }
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
        let h = self.history.entry(id.to_string()).or_default();
        h.push_back(sample);
        while h.len() > self.history_len {
            h.pop_front();
        }
    }

    pub fn get(&self, id: &str) -> Option<&StreamRecord> {
        self.streams.get(id)
    }

    /// Streams filtered by status and engine (ID, short ID or name), oldest start first.
    pub fn list(&self, status: Option<StreamStatus>, container: Option<&str>) -> Vec<StreamRecord> {
        let mut out: Vec<StreamRecord> = self
            .streams
            .values()
            .filter(|s| status.is_none_or(|st| s.status == st))
            .filter(|s| {
                container.is_none_or(|c| {
                    s.container_id == c
                        || s.container_name == c
                        || (c.len() >= 12 && s.container_id.starts_with(c))
                })
            })
            .cloned()
            .collect();
        out.sort_by_key(|s| s.seq);
        out
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
        let mut out: Vec<_> = self
            .streams
            .values()
            .filter(|s| s.status == StreamStatus::Started)
            .map(|s| {
                (
                    s.seq,
                    s.id.clone(),
                    s.stat_url.clone(),
                    s.container_id.clone(),
                )
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, a, b, c)| (a, b, c)).collect()
    }

    /// Active stream ids per engine, by container ID (an engine renamed to close a gap in the
    /// names keeps its ID, so its streams stay attached).
    pub fn active_by_engine(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.list(Some(StreamStatus::Started), None) {
            out.entry(s.container_id.clone()).or_default().push(s.id);
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
    pub fn counts(&self) -> BTreeMap<String, u32> {
        self.active_by_engine()
            .into_iter()
            .map(|(k, v)| (k, v.len() as u32))
            .collect()
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
    fn end_by_stream_id_is_idempotent() {
        let mut book = StreamBook::new();
        let e = engine("acestream-1", "id1", "h", 1);
        book.start(&started("k", "s", Some("sid"), "h", 1), &e, t(0));
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
        book.start(&started("a", "1", None, "h", 1), &e, t(0));
        book.start(&started("b", "2", None, "h", 1), &e, t(1));
        book.start(&started("c", "3", None, "h", 1), &e, t(2));
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
        book.start(&started("k", "s", None, "h", 1), &e, t(0));
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
        book.start(&started("k", "s", Some("x"), "h", 1), &e, t(0));
        book.record_sample("x", sample(1, 1));
        book.end_id("x", "client", t(2));
        let again = book.start(&started("k2", "s2", Some("x"), "h", 1), &e, t(3));
        assert_eq!(again.status, StreamStatus::Started);
        assert_eq!(book.history("x", None).unwrap().len(), 0);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn ended_streams_are_bounded_oldest_first() {
        let mut book = StreamBook::with_limits(10, 2);
        let e = engine("acestream-1", "id1", "h", 1);
        for i in 0..4u64 {
            book.start(&started("k", &i.to_string(), None, "h", 1), &e, t(i));
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
        book.start(&started("a", "1", None, "h", 1), &e1, t(0));
        book.start(&started("b", "2", None, "h", 2), &e2, t(1));
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
        book.start(&started("k", "s", Some("sid"), "h", 1), &before, t(0));
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
}
