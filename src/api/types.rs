//! The JSON shapes of the API. Field names are the earlier orchestrator's (docs/api.md), which
//! existing proxies decode; acevisor's own fields are added, none renamed.
//! Times are RFC 3339 UTC strings.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::auth::Reader;
use crate::core::streams::{KeyType, StatSample, StreamRecord, StreamStatus};

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-27T03:00:04.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The wall-clock time of a monotonic instant, relative to a pair of "now"s taken together.
pub fn wall_clock(at: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    if at <= now {
        wall_now
            .checked_sub(now - at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        wall_now + (at - now)
    }
}

/// Parses an RFC 3339 time as clients send it: `Z`, a numeric offset (`+02:00`, also with the `+`
/// turned into a space by form decoding) or no zone at all (taken as UTC).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim_start();
    let b = s.as_bytes();
    let n = b.len();
    let has_offset = n > 6
        && matches!(b[n - 6], b'+' | b'-' | b' ')
        && b[n - 3] == b':'
        && b[n - 5..n - 3].iter().all(u8::is_ascii_digit)
        && b[n - 2..].iter().all(u8::is_ascii_digit)
        && b.get(10)
            .is_some_and(|c| *c == b'T' || *c == b't' || *c == b' ');
    if !has_offset {
        return humantime::parse_rfc3339_weak(s.trim_end_matches(['Z', 'z'])).ok();
    }
    let hours: u64 = s[n - 5..n - 3].parse().ok()?;
    let minutes: u64 = s[n - 2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let offset = Duration::from_secs(hours * 3600 + minutes * 60);
    let local = humantime::parse_rfc3339_weak(&s[..n - 6]).ok()?;
    // `local` is the wall time in the zone; UTC = local - offset for `+`, + offset for `-`.
    if b[n - 6] == b'-' {
        local.checked_add(offset)
    } else {
        local.checked_sub(offset)
    }
}

/// One engine, as `/engines` lists it (upstream `EngineState` plus acevisor fields).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EngineState {
    pub container_id: String,
    pub container_name: String,
    /// The address a proxy on the Docker network reaches the engine at.
    pub host: String,
    /// The engine's HTTP port at `host`.
    pub port: u16,
    pub api_port: u16,
    pub labels: BTreeMap<String, String>,
    pub forwarded: bool,
    pub first_seen: String,
    pub last_seen: String,
    /// Ids of the active streams (upstream: a list, which Go clients decode as `[]string`).
    pub streams: Vec<String>,
    /// `healthy` / `unhealthy` / `unknown`.
    pub health_status: String,
    pub last_health_check: Option<String>,
    pub last_stream_usage: Option<String>,
    pub vpn_container: Option<String>,
    /// The forwarded P2P port, for the forwarded engine only (upstream field).
    pub forwarded_port: Option<u16>,
    // acevisor's own fields
    pub p2p_port: u16,
    pub https_port: u16,
    pub ordinal: u32,
    /// Engine phase: `creating` / `starting` / `ready` / `unhealthy` / `removing`.
    pub state: String,
    /// `streams.len()`, for clients that want a number.
    pub active_streams: u32,
}

/// `GET /engines/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EngineDetail {
    pub engine: EngineState,
    pub streams: Vec<StreamState>,
}

/// One stream (upstream `StreamState` plus acevisor fields).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamState {
    pub id: String,
    pub key_type: KeyType,
    pub key: String,
    pub container_id: String,
    pub container_name: String,
    pub playback_session_id: String,
    pub stat_url: String,
    pub command_url: String,
    pub is_live: bool,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `started` / `ended`.
    pub status: String,
    pub peers: Option<u64>,
    pub speed_down: Option<u64>,
    pub speed_up: Option<u64>,
    pub downloaded: Option<u64>,
    pub uploaded: Option<u64>,
    // acevisor's own fields
    pub labels: BTreeMap<String, String>,
    /// Why it ended: the client's `reason`, `session_ended` or `engine_gone`.
    pub end_reason: Option<String>,
    /// A session of the built-in stream proxy: its viewers now (0 once ended), the bytes handed
    /// to them and how often it moved to another engine. `null` for streams other proxies
    /// report (acevisor does not see their viewers).
    #[serde(default)]
    pub viewers: Option<u64>,
    #[serde(default)]
    pub bytes_delivered: Option<u64>,
    #[serde(default)]
    pub failovers: Option<u32>,
}

impl StreamState {
    /// The stream as `reader` may see it: without the engine URLs (`command_url` can stop the
    /// playback) for a reader without the API key.
    pub fn for_reader(mut self, reader: Reader) -> StreamState {
        if !reader.trusted {
            self.command_url.clear();
            self.stat_url.clear();
        }
        self
    }
}

impl From<&StreamRecord> for StreamState {
    fn from(s: &StreamRecord) -> StreamState {
        let latest = s.latest.as_ref();
        StreamState {
            id: s.id.clone(),
            key_type: s.key_type,
            key: s.key.clone(),
            container_id: s.container_id.clone(),
            container_name: s.container_name.clone(),
            playback_session_id: s.playback_session_id.clone(),
            stat_url: s.stat_url.clone().unwrap_or_default(),
            command_url: s.command_url.clone().unwrap_or_default(),
            is_live: s.is_live,
            started_at: rfc3339(s.started_at),
            ended_at: s.ended_at.map(rfc3339),
            status: match s.status {
                StreamStatus::Started => "started".into(),
                StreamStatus::Ended => "ended".into(),
            },
            peers: latest.and_then(|l| l.peers),
            speed_down: latest.and_then(|l| l.speed_down),
            speed_up: latest.and_then(|l| l.speed_up),
            downloaded: latest.and_then(|l| l.downloaded),
            uploaded: latest.and_then(|l| l.uploaded),
            labels: s.labels.clone(),
            end_reason: s.end_reason.clone(),
            viewers: None,
            bytes_delivered: None,
            failovers: None,
        }
    }
}

/// One sample of `/streams/{id}/stats`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatSnapshot {
    pub ts: String,
    pub peers: Option<u64>,
    pub speed_down: Option<u64>,
    pub speed_up: Option<u64>,
    pub downloaded: Option<u64>,
    pub uploaded: Option<u64>,
    pub status: Option<String>,
}

impl From<&StatSample> for StatSnapshot {
    fn from(s: &StatSample) -> StatSnapshot {
        StatSnapshot {
            ts: rfc3339(s.ts),
            peers: s.peers,
            speed_down: s.speed_down,
            speed_up: s.speed_up,
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            status: s.status.clone(),
        }
    }
}

/// `stream_ended`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndedResponse {
    pub updated: bool,
    pub stream: Option<StreamState>,
}

/// `POST /provision/acestream` body. Upstream clients send `{"labels":{},"env":{},"host_port":null}`
/// (and sometimes `image`); acevisor creates engines from its own template, so these are accepted
/// and not applied.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ProvisionReq {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub image: Option<String>,
}

/// `POST /provision/acestream` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProvisionResponse {
    pub container_id: String,
    pub container_name: String,
    pub host_http_port: u16,
    pub container_http_port: u16,
    pub container_https_port: u16,
    // acevisor's own fields
    pub host: String,
    pub port: u16,
    pub forwarded: bool,
    pub vpn_container: Option<String>,
    pub p2p_port: u16,
    /// Engine phase when answered: `starting` (container running, API not answering yet) or
    /// `ready` (with `?wait=ready`).
    pub state: String,
}

/// `POST /provision` body (the earlier orchestrator's generic `StartRequest`); accepted, not
/// applied: acevisor runs engines from its template only.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct GenericProvisionReq {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub name_prefix: Option<String>,
}

/// `POST /provision` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GenericProvisionResponse {
    pub container_id: String,
    pub container_name: String,
    // acevisor's own fields
    pub host: String,
    pub port: u16,
    pub state: String,
}

/// The 503 `detail` of a blocked provisioning request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlockedDetail {
    pub error: String,
    pub code: String,
    pub message: String,
    /// An estimate only when acevisor has one (the breaker's cool-down); `null` otherwise (the
    /// field stays: the earlier orchestrator's clients decode it).
    pub recovery_eta_seconds: Option<u64>,
    pub can_retry: bool,
    pub should_wait: bool,
}

/// One VPN in `/vpn/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VpnEntry {
    pub container_name: String,
    /// `down` / `starting` / `degraded` / `misconfigured` / `up`.
    pub status: String,
    /// Docker health: `healthy` / `unhealthy` / `starting` / `none`.
    pub health: String,
    pub connected: bool,
    /// The forwarded port; the lowest when the VPN forwards several (upstream field).
    pub forwarded_port: Option<u16>,
    pub last_check_at: Option<String>,
    // acevisor's own fields
    /// Every forwarded port, lowest first (`[]` while none is known).
    #[serde(default)]
    pub forwarded_ports: Vec<u16>,
    /// The tunnel's exit address (asked of its control server once the VPN is up; `null` until
    /// known, and again after a failure or reconnect).
    #[serde(default)]
    pub public_ip: Option<String>,
    pub container_id: Option<String>,
    pub failed: bool,
    pub last_error: Option<String>,
}

/// `emergency_mode` of `/vpn/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EmergencyMode {
    pub active: bool,
    pub failed_vpn: Option<String>,
    pub healthy_vpn: Option<String>,
    pub duration_seconds: Option<u64>,
    pub entered_at: Option<String>,
    // acevisor's own fields
    /// `normal` / `emergency` / `outage`.
    pub state: String,
    pub failed_vpns: Vec<String>,
    pub healthy_vpns: Vec<String>,
}

/// `GET /vpn/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VpnStatusResponse {
    /// `none` / `single` / `redundant`.
    pub mode: String,
    // the earlier orchestrator's top-level summary
    /// `running` (a VPN is connected) / `unhealthy` / `disabled` (mode `none`).
    pub status: String,
    /// The first configured VPN.
    pub container_name: Option<String>,
    /// Same as `container_name` (the earlier panel read this name).
    pub container: Option<String>,
    /// `healthy` (a VPN is connected) / `unhealthy` / `unknown` (mode `none`).
    pub health: String,
    /// The latest control-server check of any VPN.
    pub last_check: Option<String>,
    pub last_check_at: Option<String>,
    pub vpns: Vec<VpnEntry>,
    pub vpn1: Option<VpnEntry>,
    pub vpn2: Option<VpnEntry>,
    pub emergency_mode: EmergencyMode,
    // single-VPN summary, as the earlier orchestrator also answered at the top level
    pub enabled: bool,
    pub connected: bool,
    /// The first VPN's forwarded port (its lowest when it forwards several).
    pub forwarded_port: Option<u16>,
    /// Every forwarded port of the first VPN, lowest first.
    #[serde(default)]
    pub forwarded_ports: Vec<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let s = rfc3339(t);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(t));
        let z = parse_rfc3339("2026-11-27T03:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-11-27T03:00:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-27T03:00:00+00:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-27T05:00:00+02:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-27T05:00:00 02:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-27T01:30:00-01:30"), Some(z));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-11-27T05:00:00+25:00"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn wall_clock_of_past_and_future_instants() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            wall_clock(now - Duration::from_secs(10), now, wall),
            SystemTime::UNIX_EPOCH + Duration::from_secs(990)
        );
        assert_eq!(
            wall_clock(now + Duration::from_secs(10), now, wall),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_010)
        );
    }
}
