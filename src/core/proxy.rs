//! The built-in stream proxy's decisions: which content a viewer asks for, which engine plays a
//! content (a healthy VPN first, an idle engine before a new one, the forwarded engine preferred),
//! the reservation book (engine -> contents, at most `max_streams_per_engine` each), and when a
//! playing session must move to another engine. Pure: the Supervisor and the StreamSession actor
//! call these.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A content key as the engine takes it: 40 lowercase hex chars, with the parameter it came in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Content {
    /// `id` (a content id) or `infohash`.
    pub kind: ContentKind,
    pub key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContentKind {
    Id,
    Infohash,
}

impl ContentKind {
    pub fn param(self) -> &'static str {
        match self {
            ContentKind::Id => "id",
            ContentKind::Infohash => "infohash",
        }
    }
}

impl Content {
    /// How sessions and records name it: `id:<hex>` / `infohash:<hex>`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind.param(), self.key)
    }
}

/// Parses the `id` / `infohash` query parameters (exactly one, 40 hex chars).
pub fn parse_content(id: Option<&str>, infohash: Option<&str>) -> Result<Content, String> {
    let (kind, raw) = match (
        id.filter(|s| !s.is_empty()),
        infohash.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => return Err("give either id or infohash, not both".into()),
        (Some(v), None) => (ContentKind::Id, v),
        (None, Some(v)) => (ContentKind::Infohash, v),
        (None, None) => return Err("a content id is required: ?id=<40 hex chars>".into()),
    };
    if raw.len() != 40 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{} must be 40 hexadecimal characters, not {:?}",
            kind.param(),
            raw.chars().take(64).collect::<String>()
        ));
    }
    Ok(Content {
        kind,
        key: raw.to_ascii_lowercase(),
    })
}

/// An engine as the choice sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Ready (not starting, unhealthy or being removed).
    pub ready: bool,
    /// Its VPN is up and not failed (always true without a VPN).
    pub vpn_healthy: bool,
    pub forwarded: bool,
    /// Streams reported by external proxies on it.
    pub external_streams: u32,
}

/// What to do for a content that needs an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Reserve this engine.
    Engine(String),
    /// No engine can take it now: provision one (if the pool may grow) and ask again.
    Provision,
}

/// The reservations: which contents the proxy plays on which engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservations {
    by_engine: BTreeMap<String, BTreeSet<String>>,
}

impl Reservations {
    pub fn count(&self, engine: &str) -> usize {
        self.by_engine.get(engine).map_or(0, BTreeSet::len)
    }

    /// The engine a content is reserved on.
    pub fn engine_of(&self, content: &str) -> Option<&str> {
        self.by_engine
            .iter()
            .find(|(_, cs)| cs.contains(content))
            .map(|(e, _)| e.as_str())
    }

    pub fn is_reserved(&self, engine: &str) -> bool {
        self.count(engine) > 0
    }

    /// Reserves `engine` for `content` (a content holds one engine at a time: a previous one is
    /// released). False when the engine is full.
    pub fn reserve(&mut self, engine: &str, content: &str, max_per_engine: usize) -> bool {
        if self.engine_of(content) == Some(engine) {
            return true;
        }
        if self.count(engine) >= max_per_engine {
            return false;
        }
        self.release(content);
        self.by_engine
            .entry(engine.to_string())
            .or_default()
            .insert(content.to_string());
        true
    }

    /// Releases the content's engine; returns it.
    pub fn release(&mut self, content: &str) -> Option<String> {
        let engine = self.engine_of(content)?.to_string();
        if let Some(cs) = self.by_engine.get_mut(&engine) {
            cs.remove(content);
            if cs.is_empty() {
                self.by_engine.remove(&engine);
            }
        }
        Some(engine)
    }

    /// Forgets an engine (removed or dead); returns the contents that were on it.
    pub fn drop_engine(&mut self, engine: &str) -> Vec<String> {
        self.by_engine
            .remove(engine)
            .map(|cs| cs.into_iter().collect())
            .unwrap_or_default()
    }

    /// The engine was renamed: its reservations follow the name.
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(cs) = self.by_engine.remove(from) {
            self.by_engine.insert(to.to_string(), cs);
        }
    }

    pub fn engines(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_engine.iter().map(|(e, cs)| (e.as_str(), cs.len()))
    }
}

/// The engine to play a content on: among ready engines not excluded (the ones it just failed
/// on) with room below `max_per_engine`, a healthy VPN first, then idle (no stream of anyone),
/// then forwarded, then the fewest reservations, then the name. None fits: provision.
pub fn choose_engine(
    candidates: &[Candidate],
    reservations: &Reservations,
    exclude: &[String],
    max_per_engine: usize,
) -> Choice {
    candidates
        .iter()
        .filter(|c| c.ready && !exclude.contains(&c.name))
        .filter(|c| reservations.count(&c.name) < max_per_engine)
        .min_by_key(|c| {
            let reserved = reservations.count(&c.name);
            let busy = reserved as u32 + c.external_streams;
            (!c.vpn_healthy, busy > 0, !c.forwarded, busy, c.name.clone())
        })
        .map_or(Choice::Provision, |c| Choice::Engine(c.name.clone()))
}

/// Why a playing session leaves its engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailoverCause {
    /// The engine was removed or died (the Supervisor told).
    EngineGone,
    /// The engine turned unhealthy or its VPN failed.
    EngineUnhealthy,
    /// No bytes for `proxy.stall_timeout`.
    Stalled,
    /// The playback connection ended or failed.
    PlaybackEnded(String),
}

impl FailoverCause {
    pub fn label(&self) -> &'static str {
        match self {
            FailoverCause::EngineGone => "engine_gone",
            FailoverCause::EngineUnhealthy => "engine_unhealthy",
            FailoverCause::Stalled => "stalled",
            FailoverCause::PlaybackEnded(_) => "playback_ended",
        }
    }
}

/// What a session does after a failover cause: move on (excluding the engine it left) while the
/// failover window is open, or end its viewers' responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterLoss {
    Failover,
    GiveUp,
}

/// A session keeps looking for an engine while `since_loss < failover_timeout` and it has viewers.
pub fn after_loss(since_loss: Duration, failover_timeout: Duration, viewers: usize) -> AfterLoss {
    if viewers > 0 && since_loss < failover_timeout {
        AfterLoss::Failover
    } else {
        AfterLoss::GiveUp
    }
}

/// A reserved engine as the trouble check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedEngine {
    pub name: String,
    pub unhealthy: bool,
    /// Its VPN has failed.
    pub vpn_failed: bool,
}

/// The reserved engines in trouble now (unhealthy, or on a failed VPN), and of those the ones to
/// tell the sessions about: new since `before`, the set of the previous check. An engine stays
/// told until its trouble is over (its spell ends), so a session hears of each spell once.
pub fn trouble(
    reserved: impl IntoIterator<Item = ReservedEngine>,
    before: &BTreeSet<String>,
) -> (BTreeSet<String>, Vec<String>) {
    let now: BTreeSet<String> = reserved
        .into_iter()
        .filter(|e| e.unhealthy || e.vpn_failed)
        .map(|e| e.name)
        .collect();
    let tell = now.difference(before).cloned().collect();
    (now, tell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn engine(name: &str, unhealthy: bool, vpn_failed: bool) -> ReservedEngine {
        ReservedEngine {
            name: name.into(),
            unhealthy,
            vpn_failed,
        }
    }

    #[test]
    fn trouble_is_told_once_per_spell() {
        let none = BTreeSet::new();
        let (now, tell) = trouble(
            [
                engine("a", true, false),
                engine("b", false, true),
                engine("c", false, false),
            ],
            &none,
        );
        assert_eq!(tell, ["a", "b"]);
        // Still in trouble: not told again; c joins.
        let (now, tell) = trouble(
            [
                engine("a", true, false),
                engine("b", false, true),
                engine("c", true, false),
            ],
            &now,
        );
        assert_eq!(tell, ["c"]);
        // a recovers, then falls again: a new spell, told again.
        let (now, tell) = trouble([engine("a", false, false), engine("c", true, false)], &now);
        assert!(tell.is_empty());
        let (_, tell) = trouble([engine("a", true, false), engine("c", true, false)], &now);
        assert_eq!(tell, ["a"]);
    }

    fn cand(name: &str, vpn_healthy: bool, forwarded: bool, external: u32) -> Candidate {
        Candidate {
            name: name.into(),
            ready: true,
            vpn_healthy,
            forwarded,
            external_streams: external,
        }
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn content_ids_are_40_hex_chars() {
        let c = parse_content(Some(&HEX.to_uppercase()), None).unwrap();
        assert_eq!(c.key, HEX);
        assert_eq!(c.kind, ContentKind::Id);
        assert_eq!(
            parse_content(None, Some(HEX)).unwrap().kind,
            ContentKind::Infohash
        );
        assert!(parse_content(None, None).unwrap_err().contains("required"));
        assert!(parse_content(Some("abc"), None).unwrap_err().contains("40"));
        assert!(
            parse_content(Some(&"g".repeat(40)), None)
                .unwrap_err()
                .contains("hexadecimal")
        );
        assert!(parse_content(Some(HEX), Some(HEX)).is_err());
    }

    #[test]
    fn healthy_vpn_first_then_idle_then_forwarded() {
        let r = Reservations::default();
        let cs = vec![
            cand("a", false, true, 0),
            cand("b", true, false, 1),
            cand("c", true, false, 0),
            cand("d", true, true, 0),
        ];
        assert_eq!(choose_engine(&cs, &r, &[], 1), Choice::Engine("d".into()));
        assert_eq!(
            choose_engine(&cs[..3], &r, &[], 1),
            Choice::Engine("c".into())
        );
        assert_eq!(
            choose_engine(&cs[..2], &r, &[], 1),
            Choice::Engine("b".into())
        );
        assert_eq!(
            choose_engine(&cs[..1], &r, &[], 1),
            Choice::Engine("a".into())
        );
        assert_eq!(
            choose_engine(
                &cs,
                &r,
                &["d".into(), "c".into(), "b".into(), "a".into()],
                1
            ),
            Choice::Provision
        );
    }

    #[test]
    fn a_full_engine_is_not_chosen_and_unready_never() {
        let mut r = Reservations::default();
        assert!(r.reserve("a", "x", 1));
        assert!(!r.reserve("a", "y", 1));
        let mut cs = vec![cand("a", true, true, 0)];
        assert_eq!(choose_engine(&cs, &r, &[], 1), Choice::Provision);
        assert_eq!(choose_engine(&cs, &r, &[], 2), Choice::Engine("a".into()));
        cs[0].ready = false;
        assert_eq!(choose_engine(&cs, &r, &[], 2), Choice::Provision);
    }

    #[test]
    fn releasing_and_dropping_engines() {
        let mut r = Reservations::default();
        assert!(r.reserve("a", "x", 2));
        assert!(r.reserve("a", "y", 2));
        // A content moves: its old engine is released.
        assert!(r.reserve("b", "x", 2));
        assert_eq!(r.engine_of("x"), Some("b"));
        assert_eq!(r.count("a"), 1);
        r.rename("a", "c");
        assert_eq!(r.count("c"), 1);
        assert_eq!(r.drop_engine("c"), vec!["y".to_string()]);
        assert_eq!(r.release("x"), Some("b".into()));
        assert!(!r.is_reserved("b"));
        assert_eq!(r.release("x"), None);
    }

    #[test]
    fn failover_while_viewers_and_time_remain() {
        let t = Duration::from_secs(30);
        assert_eq!(
            after_loss(Duration::from_secs(1), t, 1),
            AfterLoss::Failover
        );
        assert_eq!(after_loss(Duration::from_secs(30), t, 1), AfterLoss::GiveUp);
        assert_eq!(after_loss(Duration::ZERO, t, 0), AfterLoss::GiveUp);
    }

    proptest! {
        /// Whatever the sequence of reservations and releases, no engine holds more contents
        /// than the limit and a content is on at most one engine.
        #[test]
        fn never_beyond_the_limit(ops in proptest::collection::vec((0u8..4, 0u8..6, any::<bool>()), 0..60), max in 1usize..3) {
            let mut r = Reservations::default();
            for (e, c, reserve) in ops {
                let (e, c) = (format!("e{e}"), format!("c{c}"));
                if reserve { r.reserve(&e, &c, max); } else { r.release(&c); }
                for (_, n) in r.engines() { prop_assert!(n <= max && n > 0); }
                let total: usize = r.engines().map(|(_, n)| n).sum();
                let distinct = (0..6).filter(|i| r.engine_of(&format!("c{i}")).is_some()).count();
                prop_assert_eq!(total, distinct);
            }
        }

        /// The choice is always a ready, non-excluded engine with room, and a healthy-VPN one
        /// whenever such exists.
        #[test]
        fn the_choice_is_admissible(specs in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), 0u32..3), 0..8), excl in 0usize..8) {
            let cs: Vec<Candidate> = specs.iter().enumerate().map(|(i, (ready, h, f, x))| Candidate {
                name: format!("e{i}"), ready: *ready, vpn_healthy: *h, forwarded: *f, external_streams: *x,
            }).collect();
            let exclude = vec![format!("e{excl}")];
            let r = Reservations::default();
            match choose_engine(&cs, &r, &exclude, 1) {
                Choice::Engine(n) => {
                    let c = cs.iter().find(|c| c.name == n).unwrap();
                    prop_assert!(c.ready && !exclude.contains(&n));
                    let healthy_exists = cs.iter().any(|c| c.ready && c.vpn_healthy && !exclude.contains(&c.name));
                    prop_assert!(!healthy_exists || c.vpn_healthy);
                }
                Choice::Provision => prop_assert!(!cs.iter().any(|c| c.ready && !exclude.contains(&c.name))),
            }
        }
    }
}
