//! The per-VPN state machine of the VpnMonitor: turns observations over time into the typed
//! events `Failed` / `Recovered` / `PortChanged` (docs/behavior.md "Failed, Recovered, PortChanged").
//!
//! Rules, in the order `observe` applies them:
//! - Container identity: a new container ID or a new `StartedAt` (both known) for the same VPN means
//!   the namespace died: `Failed { ContainerGone }` (unless already failed), baseline forgotten.
//! - `Down` -> `Failed { ContainerGone }` at once (also on the very first observation).
//! - `Degraded` for `tunnel_grace` without interruption -> `Failed { TunnelDown }`.
//! - `Starting` / `Misconfigured` never fail a VPN (its engines are left alone).
//! - `Up` after a `Failed` -> `Recovered`; its port (or the first one seen later) is the new
//!   baseline without a `PortChanged`. A `Failed` and a `Recovered` never come from the same
//!   call: a container restarted in place (same ID) and already `Up` when we look stays failed
//!   until the next observation, so the failure is published (engines removed, emergency
//!   entered) before the recovery. Engines carry only the VPN's container ID, which a restart in
//!   place keeps, so the `failed` flag is the only thing that tells the planner they are dead.
//! - While not failed, ports feed the `PortTracker`, whose settled changes become `PortChanged`.
//!   Nothing reaches the tracker while failed, so no `PortChanged` can compare a pre-failure port
//!   with a post-recovery one.
//!
//! It also says how often the VPN should be looked at (`wants_fast_poll`): fast while it matters
//! (before the first look, starting, tunnel down (a reconnect under way), Up without its first
//! port, a port candidate settling, and for
//! `port_settle` + [`FAST_WINDOW`] after any event or a port hook's `nudge`), slow otherwise.

use std::time::Duration;
use tokio::time::Instant;

use crate::core::model::{Readiness, VpnView};
use crate::core::port_set::PortSet;
use crate::core::port_tracker::{PortChange, PortTracker};

/// How long a VPN stays on fast polls after an event or a hook, beyond `port_settle` (a
/// reconnect's port usually follows its recovery within seconds).
pub const FAST_WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailCause {
    /// die / stop / destroy / new ID / new StartedAt: the namespace died, act at once.
    ContainerGone,
    /// Tunnel down inside a running container for longer than `tunnel_grace`.
    TunnelDown,
}

impl FailCause {
    pub fn label(&self) -> &'static str {
        match self {
            FailCause::ContainerGone => "container_gone",
            FailCause::TunnelDown => "tunnel_down",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpnEvent {
    Failed {
        cause: FailCause,
    },
    /// Up again after a `Failed`; its ports (often still empty) are the new baseline.
    Recovered {
        forwarded_ports: PortSet,
    },
    PortChanged(PortChange),
}

/// One look at a VPN: its container identity and derived readiness (raw port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub container_id: Option<String>,
    pub started_at: Option<String>,
    pub readiness: Readiness,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchTimings {
    pub port_settle: Duration,
    pub tunnel_grace: Duration,
    /// `None` = wait for the port forever.
    pub port_wait: Option<Duration>,
    /// `None` = never force a restart.
    pub force_restart_after: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct VpnWatch {
    timings: WatchTimings,
    tracker: PortTracker,
    /// Last known container ID and `StartedAt` (a `None` in an observation keeps what we knew).
    container_id: Option<String>,
    started_at: Option<String>,
    /// Last observed readiness (raw port); `None` before the first observation.
    last: Option<Readiness>,
    failed: bool,
    /// Start of the current uninterrupted `Degraded` run.
    degraded_since: Option<Instant>,
    /// Start of the current uninterrupted `Up` run.
    up_since: Option<Instant>,
    /// When the current outage (the last `Failed`) began.
    outage_since: Option<Instant>,
    /// `take_force_restart` already answered true during this outage.
    force_restart_taken: bool,
    /// Fast polls until then (set by events and by `nudge`).
    fast_until: Option<Instant>,
}

impl VpnWatch {
    pub fn new(timings: WatchTimings) -> Self {
        VpnWatch {
            timings,
            tracker: PortTracker::new(timings.port_settle),
            container_id: None,
            started_at: None,
            last: None,
            failed: false,
            degraded_since: None,
            up_since: None,
            outage_since: None,
            force_restart_taken: false,
            fast_until: None,
        }
    }

    /// Starts from what was last published about this VPN (a restarted VpnMonitor resuming):
    /// its container identity, readiness with the settled port, and whether it failed. The next
    /// observation is judged against that, so a VPN that failed before the restart is not failed
    /// again, one recreated meanwhile is, and the port baseline is kept (no `PortChanged` for a
    /// port that did not change, one for a port that did).
    pub fn resume(timings: WatchTimings, lane: &VpnView, now: Instant) -> Self {
        let up = matches!(lane.readiness, Readiness::Up { .. });
        let up_since = match (up, timings.port_wait) {
            (true, Some(wait)) if lane.port_wait_expired => now.checked_sub(wait).or(Some(now)),
            (true, _) => Some(now),
            (false, _) => None,
        };
        VpnWatch {
            tracker: PortTracker::resume(timings.port_settle, lane.forwarded_ports()),
            container_id: lane.container_id.clone(),
            started_at: lane.started_at.clone(),
            last: lane.container_id.is_some().then_some(lane.readiness),
            failed: lane.failed,
            degraded_since: (lane.readiness == Readiness::Degraded).then_some(now),
            up_since,
            outage_since: lane.failed.then_some(now),
            ..VpnWatch::new(timings)
        }
    }

    /// Feeds one observation taken at `now`; returns the events it causes, in order.
    ///
    /// A VPN restarted in place (or recreated) and already `Up` by the time we look at it still
    /// lost its namespace: this call returns `[Failed]` and leaves it failed (readiness `Up`
    /// without a port); the next observation that finds it `Up` recovers it.
    pub fn observe(&mut self, now: Instant, obs: Observation) -> Vec<VpnEvent> {
        let events = self.observe_inner(now, obs);
        self.stay_fast_after(now, &events);
        events
    }

    fn observe_inner(&mut self, now: Instant, obs: Observation) -> Vec<VpnEvent> {
        let mut events = Vec::new();

        let replaced = self.identity_changed(&obs);
        // This very call emits the Failed: then it must not also recover.
        let failed_by_this_call = replaced && !self.failed;
        if replaced {
            self.fail(now, FailCause::ContainerGone, &mut events);
            // The runs of the previous container say nothing about the new one.
            self.degraded_since = None;
            self.up_since = None;
        }
        self.remember_identity(obs);
        let readiness = self.last.expect("remember_identity stores the readiness");

        match readiness {
            Readiness::Down => {
                self.degraded_since = None;
                self.up_since = None;
                self.fail(now, FailCause::ContainerGone, &mut events);
            }
            Readiness::Degraded => {
                self.up_since = None;
                self.degraded_since.get_or_insert(now);
                self.settle(now, &mut events);
            }
            Readiness::Starting | Readiness::Misconfigured => {
                self.degraded_since = None;
                self.up_since = None;
                self.settle(now, &mut events);
            }
            Readiness::Up { forwarded_ports } => {
                let port = forwarded_ports;
                self.degraded_since = None;
                self.up_since.get_or_insert(now);
                if failed_by_this_call {
                    // Published as failed first; recovered by the next Up observation.
                } else if self.failed {
                    self.failed = false;
                    self.outage_since = None;
                    self.force_restart_taken = false;
                    self.tracker.reset();
                    // With no baseline, this only sets it.
                    let change = self.tracker.observe(now, port);
                    debug_assert!(change.is_none());
                    events.push(VpnEvent::Recovered {
                        forwarded_ports: port,
                    });
                } else if let Some(change) = self.tracker.observe(now, port) {
                    events.push(VpnEvent::PortChanged(change));
                }
            }
        }
        events
    }

    /// Lets time pass (tunnel grace may expire, a port candidate may settle).
    pub fn tick(&mut self, now: Instant) -> Vec<VpnEvent> {
        let mut events = Vec::new();
        self.settle(now, &mut events);
        self.stay_fast_after(now, &events);
        events
    }

    /// A port hook fired (Gluetun's port forwarding came up or went): poll fast for a while.
    pub fn nudge(&mut self, now: Instant) {
        self.stay_fast_from(now);
    }

    /// Whether this VPN should be polled at the fast interval now. `forwarding`: the VPN is
    /// configured with a forwarded port (only then is waiting for the first port a reason).
    pub fn wants_fast_poll(&self, now: Instant, forwarding: bool) -> bool {
        let waiting_for_port = forwarding
            && matches!(self.last, Some(Readiness::Up { .. }))
            && !self.failed
            && self.tracker.baseline().is_empty()
            && !self.port_wait_expired(now);
        self.last.is_none()
            || matches!(self.last, Some(Readiness::Starting | Readiness::Degraded))
            || waiting_for_port
            || self.tracker.candidate().is_some()
            || self.fast_until.is_some_and(|t| now < t)
    }

    /// When a port candidate would settle: the moment to read the control server again, so the
    /// change is confirmed right at `port_settle` after its first sighting.
    pub fn settles_at(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        self.tracker.settles_at()
    }

    fn stay_fast_after(&mut self, now: Instant, events: &[VpnEvent]) {
        if !events.is_empty() {
            self.stay_fast_from(now);
        }
    }

    fn stay_fast_from(&mut self, now: Instant) {
        let until = now + self.timings.port_settle + FAST_WINDOW;
        self.fast_until = Some(self.fast_until.map_or(until, |t| t.max(until)));
    }

    /// Readiness as the planner sees it: for `Up`, the *settled* port.
    ///
    /// `Down` before the first observation: nothing is known, so nothing may be placed there.
    /// `Up` can be seen together with `failed()` only between a restart-in-place `Failed` and the
    /// next observation (port `None`); the planner places nothing on a failed VPN.
    pub fn readiness(&self) -> Readiness {
        match self.last {
            None => Readiness::Down,
            Some(Readiness::Up { .. }) => Readiness::Up {
                forwarded_ports: self.tracker.baseline(),
            },
            Some(r) => r,
        }
    }

    /// A `Failed` was emitted and no `Recovered` since.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Container ID last observed.
    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    /// Up without a settled port for at least `port_wait`.
    pub fn port_wait_expired(&self, now: Instant) -> bool {
        let Some(wait) = self.timings.port_wait else {
            return false;
        };
        if self.failed {
            return false;
        }
        match (self.last, self.up_since) {
            (Some(Readiness::Up { .. }), Some(since)) => {
                self.tracker.baseline().is_empty() && now.saturating_duration_since(since) >= wait
            }
            _ => false,
        }
    }

    /// True once per outage, when the VPN has been Down for `force_restart_after`.
    ///
    /// The outage runs from the `Failed` until the `Recovered`, so a `TunnelDown` outage counts
    /// from its `Failed`, not from the start of the `Degraded` run.
    pub fn take_force_restart(&mut self, now: Instant) -> bool {
        let (Some(after), Some(since)) = (self.timings.force_restart_after, self.outage_since)
        else {
            return false;
        };
        if !self.failed || self.force_restart_taken || now.saturating_duration_since(since) < after
        {
            return false;
        }
        self.force_restart_taken = true;
        true
    }

    /// A previously seen container was replaced (new ID) or restarted in place (new StartedAt).
    fn identity_changed(&self, obs: &Observation) -> bool {
        fn differs(old: &Option<String>, new: &Option<String>) -> bool {
            matches!((old, new), (Some(a), Some(b)) if a != b)
        }
        differs(&self.container_id, &obs.container_id) || differs(&self.started_at, &obs.started_at)
    }

    fn remember_identity(&mut self, obs: Observation) {
        let Observation {
            container_id,
            started_at,
            readiness,
        } = obs;
        if container_id.is_some() && container_id != self.container_id {
            // Another container: its StartedAt is the only one that applies, even if unknown.
            self.container_id = container_id;
            self.started_at = started_at;
        } else if started_at.is_some() {
            self.started_at = started_at;
        }
        self.last = Some(readiness);
    }

    fn fail(&mut self, now: Instant, cause: FailCause, events: &mut Vec<VpnEvent>) {
        if !self.failed {
            self.failed = true;
            self.outage_since = Some(now);
            self.force_restart_taken = false;
            events.push(VpnEvent::Failed { cause });
        }
        self.tracker.reset();
    }

    /// Time-driven transitions: tunnel grace expiry, then (if still not failed) port settle.
    fn settle(&mut self, now: Instant, events: &mut Vec<VpnEvent>) {
        if let Some(since) = self.degraded_since
            && !self.failed
            && now.saturating_duration_since(since) >= self.timings.tunnel_grace
        {
            self.fail(now, FailCause::TunnelDown, events);
        }
        if !self.failed
            && let Some(change) = self.tracker.tick(now)
        {
            events.push(VpnEvent::PortChanged(change));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SETTLE: Duration = Duration::from_secs(5);
    const GRACE: Duration = Duration::from_secs(60);

    fn timings() -> WatchTimings {
        WatchTimings {
            port_settle: SETTLE,
            tunnel_grace: GRACE,
            port_wait: Some(Duration::from_secs(30)),
            force_restart_after: Some(Duration::from_secs(600)),
        }
    }

    /// Drives one watch with a hand-moved clock, keeping every event for the assertions.
    struct Replay {
        t0: Instant,
        watch: VpnWatch,
        id: String,
        started_at: String,
        events: Vec<(u64, VpnEvent)>,
    }

    impl Replay {
        fn new(timings: WatchTimings) -> Self {
            Replay {
                t0: Instant::now(),
                watch: VpnWatch::new(timings),
                id: "c1".into(),
                started_at: "2026-01-01T00:00:00Z".into(),
                events: Vec::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn see(&mut self, s: f64, readiness: Readiness) -> Vec<VpnEvent> {
            let ms = (s * 1000.0) as u64;
            let obs = Observation {
                container_id: Some(self.id.clone()),
                started_at: Some(self.started_at.clone()),
                readiness,
            };
            let ev = self.watch.observe(self.at(ms), obs);
            self.events.extend(ev.iter().cloned().map(|e| (ms, e)));
            ev
        }

        fn missing(&mut self, s: f64) -> Vec<VpnEvent> {
            let ms = (s * 1000.0) as u64;
            let obs = Observation {
                container_id: None,
                started_at: None,
                readiness: Readiness::Down,
            };
            let ev = self.watch.observe(self.at(ms), obs);
            self.events.extend(ev.iter().cloned().map(|e| (ms, e)));
            ev
        }

        fn tick(&mut self, s: f64) -> Vec<VpnEvent> {
            let ms = (s * 1000.0) as u64;
            let ev = self.watch.tick(self.at(ms));
            self.events.extend(ev.iter().cloned().map(|e| (ms, e)));
            ev
        }

        fn up(&mut self, s: f64, port: Option<u16>) -> Vec<VpnEvent> {
            self.see(s, Readiness::up(port))
        }

        /// Ticks every 500 ms over `[from, to]`.
        fn ticks(&mut self, from: f64, to: f64) -> Vec<VpnEvent> {
            let mut out = Vec::new();
            let mut s = from;
            while s <= to {
                out.extend(self.tick(s));
                s += 0.5;
            }
            out
        }

        fn only_events(&self) -> Vec<VpnEvent> {
            self.events.iter().map(|(_, e)| e.clone()).collect()
        }

        fn port_changes(&self) -> usize {
            self.events
                .iter()
                .filter(|(_, e)| matches!(e, VpnEvent::PortChanged(_)))
                .count()
        }
    }

    fn resumed(lane_readiness: Readiness, failed: bool) -> Replay {
        let mut r = Replay::new(timings());
        let lane = VpnView {
            name: Some("gluetun".into()),
            container_id: Some(r.id.clone()),
            started_at: Some(r.started_at.clone()),
            readiness: lane_readiness,
            failed,
            forwarding: true,
            port_wait_expired: false,
            engine_ports: crate::core::ports::PortRange {
                start: 19000,
                end: 19099,
            },
        };
        r.watch = VpnWatch::resume(timings(), &lane, r.t0);
        r
    }

    #[test]
    fn a_resumed_watch_does_not_fail_a_failed_vpn_again_and_recovers_it() {
        let mut r = resumed(Readiness::Down, true);
        assert!(r.watch.failed());
        assert!(
            r.see(1.0, Readiness::Down).is_empty(),
            "failed once, before"
        );
        assert_eq!(
            r.see(2.0, up(Some(34817))),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(Some(34817))
            }]
        );
    }

    #[test]
    fn a_resumed_watch_keeps_the_port_baseline_and_the_container_identity() {
        let mut r = resumed(up(Some(55747)), false);
        assert_eq!(r.watch.readiness(), up(Some(55747)));
        assert!(
            r.see(1.0, up(Some(55747))).is_empty(),
            "the same port: nothing"
        );
        r.see(2.0, up(Some(34817)));
        assert_eq!(
            r.tick(8.0),
            vec![VpnEvent::PortChanged(PortChange::single(55747, 34817))]
        );
        r.id = "c2".into();
        assert_eq!(
            r.see(9.0, up(Some(34817))),
            vec![VpnEvent::Failed {
                cause: FailCause::ContainerGone
            }],
            "recreated while nobody watched"
        );
    }

    #[test]
    fn fast_polls_while_it_matters_and_slow_otherwise() {
        let mut r = Replay::new(timings());
        let fast = |r: &Replay, s: f64, forwarding: bool| {
            r.watch
                .wants_fast_poll(r.at((s * 1000.0) as u64), forwarding)
        };
        assert!(fast(&r, 0.0, true), "nothing seen yet");
        r.see(0.0, Readiness::Starting);
        assert!(fast(&r, 0.5, true), "starting");
        r.up(1.0, None);
        assert!(fast(&r, 1.5, true), "waiting for the first port");
        assert!(!fast(&r, 1.5, false), "no port expected");
        r.up(2.0, Some(1000));
        assert!(!fast(&r, 2.5, true), "the baseline needs no settle: quiet");
        r.up(3.0, Some(2000));
        assert!(fast(&r, 3.5, true), "a candidate settles");
        assert_eq!(r.tick(8.0), vec![changed(1000, 2000)]);
        assert!(
            fast(&r, 8.0 + 5.0 + 9.9, true),
            "within the window after the change"
        );
        assert!(!fast(&r, 8.0 + 5.0 + 10.0, true), "window over");
        r.watch.nudge(r.at(30_000));
        assert!(fast(&r, 30.0 + 14.9, true), "a hook opens the window");
        assert!(!fast(&r, 45.0, true));
    }

    #[test]
    fn waiting_for_the_first_port_stops_being_fast_at_port_wait() {
        let mut r = Replay::new(timings());
        r.up(0.0, None);
        assert!(r.watch.wants_fast_poll(r.at(29_000), true));
        assert!(
            !r.watch.wants_fast_poll(r.at(30_000), true),
            "port_wait = 30 s"
        );
    }

    fn up(port: Option<u16>) -> Readiness {
        Readiness::up(port)
    }

    fn gone() -> VpnEvent {
        VpnEvent::Failed {
            cause: FailCause::ContainerGone,
        }
    }

    fn changed(old: u16, new: u16) -> VpnEvent {
        VpnEvent::PortChanged(PortChange::single(old, new))
    }

    #[test]
    fn before_any_observation() {
        let w = VpnWatch::new(timings());
        assert_eq!(w.readiness(), Readiness::Down);
        assert!(!w.failed());
        assert_eq!(w.container_id(), None);
        assert!(!w.port_wait_expired(Instant::now() + Duration::from_secs(3600)));
    }

    #[test]
    fn first_observation_down_fails_once() {
        let mut r = Replay::new(timings());
        assert_eq!(r.missing(0.0), vec![gone()]);
        assert_eq!(r.missing(1.0), vec![]);
        assert_eq!(r.see(2.0, Readiness::Down), vec![]);
        assert!(r.watch.failed());
    }

    #[test]
    fn first_observation_starting_or_up_is_quiet() {
        let mut r = Replay::new(timings());
        assert_eq!(r.see(0.0, Readiness::Starting), vec![]);
        assert_eq!(r.up(1.0, Some(1000)), vec![]);
        assert_eq!(r.watch.readiness(), up(Some(1000)));
        assert_eq!(r.watch.container_id(), Some("c1"));
    }

    /// Incident A (docs/behavior.md): `gluetun` (port 55747) exits, comes back 76 s later, its new port
    /// 34817 appears ~12 s after the container starts.
    #[test]
    fn incident_a() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(55747));
        r.ticks(0.5, 30.0);
        assert_eq!(r.watch.readiness(), up(Some(55747)));

        // die event, then the container is seen stopped for 76 s.
        assert_eq!(r.see(30.0, Readiness::Down), vec![gone()]);
        assert!(r.watch.failed());
        for s in (31..106).step_by(5) {
            r.see(s as f64, Readiness::Down);
            r.tick(s as f64 + 0.5);
        }
        assert_eq!(r.watch.readiness(), Readiness::Down);

        // Restarted by its policy: same ID, new StartedAt, health starting.
        r.started_at = "2026-01-01T00:01:46Z".into();
        assert_eq!(r.see(106.0, Readiness::Starting), vec![]);
        assert_eq!(r.see(108.0, Readiness::Starting), vec![]);
        // Tunnel running, port not known yet.
        assert_eq!(
            r.up(110.0, None),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(None)
            }]
        );
        assert!(!r.watch.failed());
        assert_eq!(r.watch.readiness(), up(None), "the old port is forgotten");
        for s in 111..118 {
            assert_eq!(r.up(s as f64, Some(0)), vec![]);
        }
        // ~12 s after the container started.
        assert_eq!(r.up(118.0, Some(34817)), vec![]);
        assert_eq!(r.watch.readiness(), up(Some(34817)));
        for s in 119..300 {
            r.up(s as f64, Some(34817));
            r.tick(s as f64 + 0.5);
        }

        assert_eq!(
            r.only_events(),
            vec![
                gone(),
                VpnEvent::Recovered {
                    forwarded_ports: PortSet::from(None)
                }
            ],
            "exactly one Failed and one Recovered"
        );
        assert_eq!(r.port_changes(), 0);
        assert_eq!(r.watch.readiness(), up(Some(34817)));
    }

    /// Incident B (docs/behavior.md): after recovery the port is unknown for ~13 s. The watch says
    /// `Up { None }` (nothing to create) until the port is known or `port_wait` expires.
    #[test]
    fn incident_b() {
        // Waiting for the port forever: never expires.
        let mut forever = Replay::new(WatchTimings {
            port_wait: None,
            ..timings()
        });
        forever.up(0.0, Some(55747));
        forever.missing(10.0);
        forever.up(86.0, None);
        assert!(
            !forever
                .watch
                .port_wait_expired(forever.at(86_000 + 3_600_000))
        );

        let mut r = Replay::new(WatchTimings {
            port_wait: Some(Duration::from_secs(10)),
            ..timings()
        });
        r.up(0.0, Some(55747));
        assert!(
            !r.watch.port_wait_expired(r.at(50_000)),
            "a known port is no wait"
        );
        assert_eq!(r.missing(10.0), vec![gone()]);
        assert!(!r.watch.port_wait_expired(r.at(80_000)), "not Up, no wait");
        r.id = "c2".into();
        assert_eq!(r.see(84.0, Readiness::Starting), vec![]);
        assert_eq!(
            r.up(86.0, None),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(None)
            }]
        );
        for s in 87..99 {
            assert_eq!(r.up(s as f64, None), vec![]);
            assert_eq!(r.watch.readiness(), up(None));
            assert_eq!(r.watch.port_wait_expired(r.at(s * 1000)), s >= 96, "at {s}");
        }
        assert_eq!(r.up(99.0, Some(34817)), vec![]);
        assert!(!r.watch.port_wait_expired(r.at(99_000)));
        r.ticks(99.0, 200.0);
        assert_eq!(r.port_changes(), 0);
        assert_eq!(r.watch.container_id(), Some("c2"));
    }

    /// Genuine rotation: the VPN stays Up and the provider moves p1 -> p2.
    #[test]
    fn genuine_rotation_one_change_after_settle() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.ticks(0.0, 20.0);
        assert_eq!(r.up(20.0, Some(41000)), vec![]);
        assert_eq!(r.watch.readiness(), up(Some(40000)), "not settled yet");
        assert_eq!(r.up(22.0, Some(41000)), vec![]);
        assert_eq!(r.tick(24.9), vec![]);
        assert_eq!(r.tick(25.0), vec![changed(40000, 41000)]);
        assert_eq!(r.watch.readiness(), up(Some(41000)));
        for s in 26..120 {
            r.up(s as f64, Some(41000));
        }
        assert_eq!(r.only_events(), vec![changed(40000, 41000)]);
    }

    /// Tunnel reconnect inside Gluetun, port back the same: nothing at all.
    #[test]
    fn tunnel_reconnect_same_port_is_nothing() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.see(10.0, Readiness::Degraded);
        assert_eq!(r.watch.readiness(), Readiness::Degraded);
        r.ticks(10.0, 14.0);
        r.up(15.0, Some(0));
        r.up(16.0, None);
        r.ticks(16.0, 19.0);
        r.up(20.0, Some(40000));
        r.ticks(20.0, 120.0);
        assert_eq!(r.only_events(), vec![]);
        assert_eq!(r.watch.readiness(), up(Some(40000)));
    }

    /// Tunnel reconnect with a new port: one PortChanged, no Failed (shorter than tunnel_grace).
    #[test]
    fn tunnel_reconnect_new_port_is_one_change() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.see(10.0, Readiness::Degraded);
        r.ticks(10.0, 50.0);
        r.see(50.0, Readiness::Degraded);
        r.up(55.0, None);
        r.up(56.0, Some(42000));
        r.ticks(56.0, 200.0);
        assert_eq!(r.only_events(), vec![changed(40000, 42000)]);
        assert_eq!(r.events[0].0, 61_000);
    }

    /// A tunnel down longer than tunnel_grace is a failure; the port after it is a new baseline.
    #[test]
    fn tunnel_down_beyond_grace_fails_then_recovers() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.see(10.0, Readiness::Degraded);
        assert_eq!(r.ticks(10.0, 69.5), vec![]);
        assert_eq!(
            r.tick(70.0),
            vec![VpnEvent::Failed {
                cause: FailCause::TunnelDown
            }]
        );
        assert_eq!(r.see(80.0, Readiness::Degraded), vec![]);
        assert_eq!(
            r.up(90.0, Some(42000)),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(Some(42000))
            }]
        );
        r.ticks(90.0, 200.0);
        assert_eq!(r.port_changes(), 0);
        assert_eq!(r.watch.readiness(), up(Some(42000)));
    }

    #[test]
    fn degraded_grace_is_checked_in_observe_too_and_restarts_after_up() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.see(10.0, Readiness::Degraded);
        r.up(60.0, Some(40000)); // interrupts the Degraded run
        r.see(61.0, Readiness::Degraded);
        assert_eq!(r.see(120.0, Readiness::Degraded), vec![]);
        assert_eq!(
            r.see(121.0, Readiness::Degraded),
            vec![VpnEvent::Failed {
                cause: FailCause::TunnelDown
            }]
        );
    }

    #[test]
    fn starting_interrupts_degraded() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.see(10.0, Readiness::Degraded);
        r.see(50.0, Readiness::Starting);
        r.see(60.0, Readiness::Degraded);
        assert_eq!(r.ticks(60.0, 119.5), vec![]);
        assert_eq!(
            r.tick(120.0),
            vec![VpnEvent::Failed {
                cause: FailCause::TunnelDown
            }]
        );
    }

    /// Gluetun restarted in place: same ID, new StartedAt.
    #[test]
    fn restart_in_place_is_failed_then_recovered() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.started_at = "2026-01-01T00:05:00Z".into();
        assert_eq!(r.see(5.0, Readiness::Starting), vec![gone()]);
        assert_eq!(r.see(8.0, Readiness::Starting), vec![]);
        assert_eq!(
            r.up(12.0, Some(40000)),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(Some(40000))
            }]
        );
        r.ticks(12.0, 60.0);
        assert_eq!(r.port_changes(), 0);
    }

    /// Restarted in place and already Up when we look: failed first (published as such, so its
    /// engines are removed), recovered by the next observation.
    #[test]
    fn restart_in_place_seen_already_up() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.started_at = "2026-01-01T00:05:00Z".into();
        assert_eq!(r.up(5.0, Some(41000)), vec![gone()]);
        assert!(r.watch.failed());
        assert_eq!(r.watch.readiness(), up(None), "no port for a failed VPN");
        assert!(!r.watch.port_wait_expired(r.at(600_000)));
        assert_eq!(r.tick(6.0), vec![]);
        assert!(r.watch.failed(), "a tick does not recover");
        assert_eq!(
            r.up(7.0, Some(41000)),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(Some(41000))
            }]
        );
        assert_eq!(r.watch.readiness(), up(Some(41000)));
        r.ticks(7.0, 60.0);
        assert_eq!(r.port_changes(), 0);
    }

    /// Die event first (Down), then the restart: one Failed only.
    #[test]
    fn die_then_restart_in_place_fails_once() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        assert_eq!(r.see(5.0, Readiness::Down), vec![gone()]);
        r.started_at = "2026-01-01T00:05:00Z".into();
        assert_eq!(r.see(6.0, Readiness::Starting), vec![]);
        assert_eq!(
            r.up(9.0, None),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(None)
            }]
        );
    }

    /// Gluetun recreated: new container ID.
    #[test]
    fn recreate_is_failed_then_recovered() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.missing(5.0);
        r.id = "c2".into();
        r.started_at = "2026-01-01T00:05:00Z".into();
        r.see(7.0, Readiness::Starting);
        assert_eq!(r.watch.container_id(), Some("c2"));
        r.up(15.0, Some(43000));
        assert_eq!(
            r.only_events(),
            vec![
                gone(),
                VpnEvent::Recovered {
                    forwarded_ports: PortSet::from(Some(43000))
                }
            ]
        );

        // A new ID seen directly (no Down in between) is a failure too.
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.id = "c2".into();
        assert_eq!(r.see(1.0, Readiness::Starting), vec![gone()]);
    }

    #[test]
    fn unknown_identity_fields_are_not_a_change() {
        let t0 = Instant::now();
        let mut w = VpnWatch::new(timings());
        let obs = |id: Option<&str>, st: Option<&str>, r| Observation {
            container_id: id.map(Into::into),
            started_at: st.map(Into::into),
            readiness: r,
        };
        assert_eq!(
            w.observe(t0, obs(Some("a"), Some("s1"), up(Some(1)))),
            vec![]
        );
        assert_eq!(w.observe(t0, obs(None, None, up(Some(1)))), vec![]);
        assert_eq!(w.observe(t0, obs(Some("a"), None, up(Some(1)))), vec![]);
        assert_eq!(
            w.observe(t0, obs(Some("a"), Some("s1"), up(Some(1)))),
            vec![]
        );
        assert_eq!(w.container_id(), Some("a"));
        // New ID without StartedAt: the old StartedAt must not linger and cause a second failure.
        assert_eq!(
            w.observe(t0, obs(Some("b"), None, up(Some(1)))),
            vec![gone()]
        );
        let ev = w.observe(t0, obs(Some("b"), None, up(Some(1))));
        assert_eq!(
            ev,
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(Some(1))
            }]
        );
        assert_eq!(
            w.observe(t0, obs(Some("b"), Some("s9"), up(Some(1)))),
            vec![]
        );
    }

    #[test]
    fn misconfigured_never_fails() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        for s in 1..1000 {
            r.see(s as f64, Readiness::Misconfigured);
        }
        r.ticks(1000.0, 1100.0);
        assert_eq!(r.only_events(), vec![]);
        assert!(!r.watch.failed());
        assert_eq!(r.watch.readiness(), Readiness::Misconfigured);
        assert!(!r.watch.take_force_restart(r.at(5_000_000)));
        // Fixed key: back to Up with the same baseline, no event.
        assert_eq!(r.up(1101.0, Some(40000)), vec![]);
    }

    #[test]
    fn pending_port_change_settles_while_degraded() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.up(10.0, Some(41000));
        r.see(11.0, Readiness::Degraded);
        assert_eq!(r.tick(15.0), vec![changed(40000, 41000)]);
    }

    #[test]
    fn force_restart_once_per_outage() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        assert!(!r.watch.take_force_restart(r.at(10_000_000)), "not failed");
        r.missing(100.0);
        assert!(!r.watch.take_force_restart(r.at(699_999)));
        assert!(r.watch.take_force_restart(r.at(700_000)));
        assert!(!r.watch.take_force_restart(r.at(700_001)));
        r.see(800.0, Readiness::Starting);
        r.missing(900.0);
        assert!(!r.watch.take_force_restart(r.at(2_000_000)), "same outage");
        r.up(2000.0, Some(1));
        assert!(!r.watch.take_force_restart(r.at(3_000_000)), "recovered");
        r.missing(3000.0);
        assert!(!r.watch.take_force_restart(r.at(3_599_000)));
        assert!(
            r.watch.take_force_restart(r.at(3_600_000)),
            "re-armed by Recovered"
        );

        let mut never = Replay::new(WatchTimings {
            force_restart_after: None,
            ..timings()
        });
        never.missing(0.0);
        assert!(!never.watch.take_force_restart(never.at(u32::MAX as u64)));
    }

    #[test]
    fn force_restart_after_tunnel_down_counts_from_failed() {
        let mut r = Replay::new(timings());
        r.up(0.0, Some(40000));
        r.see(10.0, Readiness::Degraded);
        r.tick(70.0);
        assert!(r.watch.failed());
        assert!(!r.watch.take_force_restart(r.at(669_000)));
        assert!(r.watch.take_force_restart(r.at(670_000)));
    }

    #[test]
    fn defensive_zero_port_in_up() {
        let mut r = Replay::new(timings());
        r.missing(0.0);
        assert_eq!(
            r.up(1.0, Some(0)),
            vec![VpnEvent::Recovered {
                forwarded_ports: PortSet::from(None)
            }]
        );
        assert_eq!(r.watch.readiness(), up(None));
    }

    // ---- properties -------------------------------------------------------------------------

    #[derive(Clone, Debug)]
    enum Step {
        /// Time passes (ms), then an observation.
        See {
            dt: u64,
            id: u8,
            started: u8,
            readiness: Readiness,
        },
        /// Time passes (ms), then a tick.
        Tick { dt: u64 },
    }

    fn readiness_strategy() -> impl Strategy<Value = Readiness> {
        prop_oneof![
            1 => Just(Readiness::Down),
            1 => Just(Readiness::Starting),
            2 => Just(Readiness::Degraded),
            1 => Just(Readiness::Misconfigured),
            // Zero to three ports of a small alphabet (zeros included): sets that change.
            5 => proptest::collection::vec(0u16..4, 0..4).prop_map(|p| Readiness::up(PortSet::new(p))),
        ]
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u64..20_000, prop_oneof![8 => Just(0u8), 1 => 0u8..3],
                  prop_oneof![8 => Just(0u8), 1 => 0u8..3], readiness_strategy())
                .prop_map(|(dt, id, started, readiness)| Step::See { dt, id, started, readiness }),
            1 => (0u64..20_000).prop_map(|dt| Step::Tick { dt }),
        ]
    }

    proptest! {
        #[test]
        fn event_sequences_are_well_formed(steps in proptest::collection::vec(step_strategy(), 0..80)) {
            let mut now = Instant::now();
            let mut w = VpnWatch::new(timings());
            let mut failed = false;
            let mut observed = false;
            // The latest observe call (ticks aside) emitted a Failed.
            let mut last_observation_failed = false;
            // A Recovered happened and no non-zero port was observed since.
            let mut awaiting_first_port = false;
            // Non-empty sets observed since the last Failed (a PortChanged may only mention these).
            let mut ports_since_failure: Vec<PortSet> = Vec::new();
            for step in steps {
                let was_failed = w.failed();
                let is_observation = matches!(step, Step::See { .. });
                let (events, seen_port) = match step {
                    Step::See { dt, id, started, readiness } => {
                        now += Duration::from_millis(dt);
                        observed = true;
                        let obs = Observation {
                            container_id: Some(format!("c{id}")),
                            started_at: Some(format!("s{started}")),
                            readiness,
                        };
                        let port = readiness.ports().known();
                        (w.observe(now, obs), port)
                    }
                    Step::Tick { dt } => {
                        now += Duration::from_millis(dt);
                        (w.tick(now), None)
                    }
                };
                let recovered_here = events.iter().any(|e| matches!(e, VpnEvent::Recovered { .. }));
                let mut failed_here = false;
                for e in &events {
                    match e {
                        VpnEvent::Failed { .. } => {
                            prop_assert!(!failed, "two Failed without Recovered");
                            failed = true;
                            failed_here = true;
                            ports_since_failure.clear();
                        }
                        VpnEvent::Recovered { .. } => {
                            prop_assert!(failed, "Recovered without Failed");
                            failed = false;
                            awaiting_first_port = true;
                        }
                        VpnEvent::PortChanged(c) => {
                            prop_assert!(!was_failed && !failed, "PortChanged while failed");
                            prop_assert!(!recovered_here && !failed_here);
                            prop_assert_ne!(c.old, c.new);
                            prop_assert!(!c.new.is_empty());
                            prop_assert!(ports_since_failure.contains(&c.old), "stale old port");
                            prop_assert!(
                                ports_since_failure.contains(&c.new) || seen_port == Some(c.new)
                            );
                        }
                    }
                }
                if is_observation {
                    last_observation_failed = failed_here;
                }
                if let Some(p) = seen_port && !failed {
                    ports_since_failure.push(p);
                }
                if awaiting_first_port && let Some(p) = seen_port {
                    awaiting_first_port = false;
                    prop_assert!(
                        !events.iter().any(|e| matches!(e, VpnEvent::PortChanged(_))),
                        "first port {p} after Recovered yielded a PortChanged"
                    );
                }
                prop_assert_eq!(w.failed(), failed);
                match w.readiness() {
                    Readiness::Up { forwarded_ports } => {
                        prop_assert!(!forwarded_ports.contains(0));
                        if w.failed() {
                            // Only right after a restart-in-place Failed, before any port.
                            prop_assert!(last_observation_failed);
                            prop_assert!(forwarded_ports.is_empty());
                        }
                    }
                    Readiness::Down => prop_assert!(w.failed() || !observed),
                    _ => {}
                }
                prop_assert!(!(failed_here && recovered_here), "Failed and Recovered in one call");
                if w.port_wait_expired(now) {
                    prop_assert_eq!(w.readiness(), Readiness::up(None));
                }
            }
        }

        /// Up with port p, then a reconnect shorter than tunnel_grace (Degraded / Up without a
        /// port, any order, any ticks), then Up p again: no event at all.
        #[test]
        fn p_zero_p_flap_is_silent(
            p in 1u16..,
            flap in proptest::collection::vec(
                (0u64..5_000, prop_oneof![
                    Just(Some(Readiness::Degraded)),
                    Just(Some(Readiness::up(None))),
                    Just(Some(Readiness::up(Some(0)))),
                    Just(None),
                ]),
                0..20,
            ),
            after in proptest::collection::vec(0u64..10_000, 0..20),
        ) {
            let t0 = Instant::now();
            let mut w = VpnWatch::new(timings());
            let see = |r| Observation {
                container_id: Some("c1".into()),
                started_at: Some("s1".into()),
                readiness: r,
            };
            let mut events = w.observe(t0, see(Readiness::up(Some(p))));
            let mut now = t0;
            let flap_start = t0 + Duration::from_millis(1);
            for (dt, r) in flap {
                // Keep the whole flap shorter than tunnel_grace.
                let next = now + Duration::from_millis(dt);
                if next - flap_start >= GRACE - Duration::from_secs(1) {
                    break;
                }
                now = next;
                match r {
                    Some(r) => events.extend(w.observe(now, see(r))),
                    None => events.extend(w.tick(now)),
                }
            }
            now += Duration::from_millis(1);
            events.extend(w.observe(now, see(Readiness::up(Some(p)))));
            for dt in after {
                now += Duration::from_millis(dt);
                events.extend(w.tick(now));
                events.extend(w.observe(now, see(Readiness::up(Some(p)))));
            }
            prop_assert_eq!(events, vec![]);
            prop_assert_eq!(w.readiness(), Readiness::up(Some(p)));
        }
    }
}
