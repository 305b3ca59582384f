//! What acevisor knows of one VPN's public IP (the tunnel's exit address, as its control server
//! reports it), and when to ask for it: once the VPN is up and the address is unknown, at most
//! one question at a time and one per `every`; forgotten whenever the tunnel is not up or comes
//! back (a reconnect usually changes the exit address). An answer to a question asked before the
//! address was forgotten is ignored.

use tokio::time::{Duration, Instant};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicIp {
    ip: Option<String>,
    /// Bumped at every forget: an answer carries the epoch it was asked in.
    epoch: u64,
    asked_at: Option<Instant>,
    asking: bool,
}

impl PublicIp {
    /// The known address, if any.
    pub fn get(&self) -> Option<&str> {
        self.ip.as_deref()
    }

    /// Forgets the address (the tunnel went down, failed, recovered or reconnected).
    pub fn forget(&mut self) {
        *self = PublicIp {
            epoch: self.epoch + 1,
            ..PublicIp::default()
        };
    }

    /// Whether to ask now, given whether the VPN is up; when so, the question is taken as asked
    /// and its epoch returned (to hand back with the answer).
    pub fn ask(&mut self, up: bool, now: Instant, every: Duration) -> Option<u64> {
        if !up {
            if self.ip.is_some() || self.asked_at.is_some() {
                self.forget();
            }
            return None;
        }
        let due = self.ip.is_none()
            && !self.asking
            && self
                .asked_at
                .is_none_or(|at| now.saturating_duration_since(at) >= every);
        if !due {
            return None;
        }
        self.asking = true;
        self.asked_at = Some(now);
        Some(self.epoch)
    }

    /// The answer to the question asked in `epoch`: the address, or none yet (Gluetun answers an
    /// empty address until its first lookup) or an error. Returns whether it changed the address.
    pub fn answered(&mut self, epoch: u64, ip: Option<String>) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.asking = false;
        let ip = ip.filter(|ip| !ip.is_empty());
        let changed = ip.is_some() && self.ip != ip;
        if ip.is_some() {
            self.ip = ip;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(5);

    #[test]
    fn asks_once_up_and_keeps_the_answer() {
        let t0 = Instant::now();
        let mut p = PublicIp::default();
        assert_eq!(p.ask(false, t0, EVERY), None, "not up: no question");
        let e = p.ask(true, t0, EVERY).expect("up and unknown: ask");
        assert_eq!(p.ask(true, t0 + EVERY * 2, EVERY), None, "one at a time");
        assert!(p.answered(e, Some("203.0.113.7".into())));
        assert_eq!(p.get(), Some("203.0.113.7"));
        assert_eq!(
            p.ask(true, t0 + EVERY * 3, EVERY),
            None,
            "known: no question"
        );
    }

    #[test]
    fn an_empty_answer_is_asked_again_after_every() {
        let t0 = Instant::now();
        let mut p = PublicIp::default();
        let e = p.ask(true, t0, EVERY).unwrap();
        assert!(!p.answered(e, Some(String::new())));
        assert_eq!(p.get(), None);
        assert_eq!(
            p.ask(true, t0 + EVERY / 2, EVERY),
            None,
            "not before `every`"
        );
        assert!(p.ask(true, t0 + EVERY, EVERY).is_some());
    }

    #[test]
    fn down_forgets_and_a_late_answer_is_ignored() {
        let t0 = Instant::now();
        let mut p = PublicIp::default();
        let e = p.ask(true, t0, EVERY).unwrap();
        assert!(p.answered(e, Some("198.51.100.1".into())));
        assert_eq!(p.ask(false, t0, EVERY), None);
        assert_eq!(p.get(), None, "the tunnel went down: forgotten");
        let e2 = p.ask(true, t0, EVERY).expect("up again: ask at once");
        assert!(!p.answered(e, Some("198.51.100.1".into())), "stale answer");
        assert_eq!(p.get(), None);
        p.forget();
        assert!(
            !p.answered(e2, Some("198.51.100.2".into())),
            "asked before a reconnect: ignored"
        );
        assert_eq!(p.get(), None);
    }
}
