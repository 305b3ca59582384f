//! The incident log the dashboard shows: a bounded ring of the last VPN events and emergency
//! transitions, each with its time, how long the trouble it closes lasted, and the trace it ran
//! in. Pure: the Supervisor feeds it the events, the wall-clock time and the trace id.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

/// How many incidents are kept (the oldest drop out).
pub const INCIDENTS_KEPT: usize = 50;

/// One VPN event or emergency transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// Increases by one per incident since start (a stable key for the page).
    pub seq: u64,
    pub at: SystemTime,
    /// `vpn_failed`, `vpn_recovered`, `port_changed`, `emergency_entered`, `emergency_exited`,
    /// `outage_entered`, `outage_exited`.
    pub kind: &'static str,
    /// The VPN it is about (none for emergency transitions).
    pub vpn: Option<String>,
    /// A short human sentence (cause, ports, failed VPNs).
    pub detail: String,
    /// For a `*_recovered` / `*_exited` incident: how long the trouble it ends lasted.
    pub duration: Option<Duration>,
    /// The OpenTelemetry trace id (32 hex digits) of the span it ran in; none without telemetry.
    pub trace_id: Option<String>,
}

/// The ring and the troubles still open (a failed VPN, an emergency), to measure durations.
#[derive(Clone, Debug, Default)]
pub struct IncidentLog {
    ring: VecDeque<Incident>,
    open: BTreeMap<String, SystemTime>,
    next_seq: u64,
}

/// The key of the trouble an incident opens or closes, and whether it closes it.
fn trouble(kind: &str, vpn: Option<&str>) -> Option<(String, bool)> {
    let vpn_key = || format!("vpn:{}", vpn.unwrap_or_default());
    match kind {
        "vpn_failed" => Some((vpn_key(), false)),
        "vpn_recovered" => Some((vpn_key(), true)),
        "emergency_entered" => Some(("emergency".into(), false)),
        "emergency_exited" => Some(("emergency".into(), true)),
        "outage_entered" => Some(("outage".into(), false)),
        "outage_exited" => Some(("outage".into(), true)),
        _ => None,
    }
}

impl IncidentLog {
    /// Records one incident at `at`; a closing one gets the duration since its opening one.
    pub fn push(
        &mut self,
        kind: &'static str,
        vpn: Option<String>,
        detail: String,
        at: SystemTime,
        trace_id: Option<String>,
    ) {
        let mut duration = None;
        if let Some((key, closes)) = trouble(kind, vpn.as_deref()) {
            if closes {
                duration = self
                    .open
                    .remove(&key)
                    .map(|since| at.duration_since(since).unwrap_or(Duration::ZERO));
            } else {
                // A second failure without a recovery keeps the first start.
                self.open.entry(key).or_insert(at);
            }
        }
        self.next_seq += 1;
        self.ring.push_back(Incident {
            seq: self.next_seq,
            at,
            kind,
            vpn,
            detail,
            duration,
            trace_id: trace_id.filter(|t| !t.is_empty()),
        });
        while self.ring.len() > INCIDENTS_KEPT {
            self.ring.pop_front();
        }
    }

    /// The kept incidents, newest first.
    pub fn newest_first(&self) -> Vec<Incident> {
        self.ring.iter().rev().cloned().collect()
    }
}

/// The incidents of a change of emergency state, by label (`normal`, `emergency`, `outage`):
/// leaving a troubled state closes it, entering one opens it; a change of lists only is none.
pub fn transition_kinds(from: &str, to: &str) -> Vec<&'static str> {
    if from == to {
        return Vec::new();
    }
    let mut out = Vec::new();
    match from {
        "emergency" => out.push("emergency_exited"),
        "outage" => out.push("outage_exited"),
        _ => {}
    }
    match to {
        "emergency" => out.push("emergency_entered"),
        "outage" => out.push("outage_entered"),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn a_recovery_carries_the_duration_of_its_failure() {
        let mut log = IncidentLog::default();
        log.push("vpn_failed", Some("a".into()), "gone".into(), t(0), None);
        log.push("vpn_failed", Some("b".into()), "gone".into(), t(5), None);
        log.push("vpn_failed", Some("a".into()), "again".into(), t(7), None);
        log.push("vpn_recovered", Some("a".into()), "".into(), t(30), None);
        log.push("vpn_recovered", Some("a".into()), "".into(), t(40), None);
        let got = log.newest_first();
        assert_eq!(
            got[1].duration,
            Some(Duration::from_secs(30)),
            "from the first failure"
        );
        assert_eq!(got[0].duration, None, "nothing was open any more");
        assert_eq!(got[4].duration, None);
        assert_eq!(got[0].seq, 5);
    }

    #[test]
    fn emergency_exit_measures_the_emergency() {
        let mut log = IncidentLog::default();
        for k in transition_kinds("normal", "emergency") {
            log.push(k, None, String::new(), t(10), Some("ab".into()));
        }
        for k in transition_kinds("emergency", "outage") {
            log.push(k, None, String::new(), t(20), Some(String::new()));
        }
        for k in transition_kinds("outage", "normal") {
            log.push(k, None, String::new(), t(26), None);
        }
        let got = log.newest_first();
        let kinds: Vec<_> = got.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                "outage_exited",
                "outage_entered",
                "emergency_exited",
                "emergency_entered"
            ]
        );
        assert_eq!(got[0].duration, Some(Duration::from_secs(6)));
        assert_eq!(got[2].duration, Some(Duration::from_secs(10)));
        assert_eq!(got[3].trace_id.as_deref(), Some("ab"));
        assert_eq!(got[1].trace_id, None, "an empty trace id is none");
        assert!(transition_kinds("emergency", "emergency").is_empty());
    }

    #[test]
    fn only_the_last_fifty_are_kept() {
        let mut log = IncidentLog::default();
        for i in 0..120 {
            log.push("port_changed", Some("a".into()), i.to_string(), t(i), None);
        }
        let got = log.newest_first();
        assert_eq!(got.len(), INCIDENTS_KEPT);
        assert_eq!(got[0].detail, "119");
        assert_eq!(got[49].detail, "70");
    }
}
