//! Engine names `<prefix>-N`: the lowest free ordinal over live, reserved and dying numbers.
//!
//! A number is reusable only after Docker confirmed its container gone (`gone`), so a create never
//! races Docker's asynchronous removal with a 409.

use std::collections::BTreeMap;

/// `acestream-12` with prefix `acestream` -> `Some(12)`; anything else -> `None`.
///
/// The suffix must be a plain positive decimal without sign or leading zeros: `acestream-012` is
/// a different Docker name from `acestream-12`, so treating it as 12 would hide a free name (and
/// `engine_name` never produces it). Docker's API spells names with a leading `/`
/// (`/acestream-12`); that one slash is accepted so callers can pass names as listed.
pub fn parse_ordinal(prefix: &str, name: &str) -> Option<u32> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let digits = name.strip_prefix(prefix)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    // All digits and no leading zero: the only failure left is overflow.
    digits.parse::<u32>().ok()
}

/// `(acestream, 12)` -> `acestream-12`.
pub fn engine_name(prefix: &str, ordinal: u32) -> String {
    format!("{prefix}-{ordinal}")
}

/// Why a number is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// A container with this number exists.
    Live,
    /// Handed out by `reserve`; its create is in flight.
    Reserved,
    /// Its container is being removed; not reusable until Docker confirms it gone.
    Dying,
}

/// The ordinal book-keeping of one prefix.
///
/// Every number is in at most one state (`Hold`); a number in no state is free. Ordinal 0 is
/// never valid: it is never handed out and never free.
#[derive(Clone, Debug, Default)]
pub struct Ordinals {
    held: BTreeMap<u32, Hold>,
}

impl Ordinals {
    pub fn new() -> Self {
        Ordinals::default()
    }

    /// Marks numbers held by containers that exist (seeded from Docker at start, or adopted).
    ///
    /// A container's existence is authoritative: whatever state `n` was in, it becomes live
    /// (e.g. a removal that failed and left the container in place).
    pub fn mark_live(&mut self, n: u32) {
        if n > 0 {
            self.held.insert(n, Hold::Live);
        }
    }

    /// Reserves and returns the lowest free number (>= 1).
    ///
    /// With `k` numbers held the result is at most `k + 1`.
    pub fn reserve(&mut self) -> u32 {
        let mut lowest = 1u32;
        for &n in self.held.keys() {
            if n == lowest {
                lowest += 1;
            } else if n > lowest {
                break;
            }
        }
        self.held.insert(lowest, Hold::Reserved);
        lowest
    }

    /// A reserved number's container now exists.
    ///
    /// A free number also becomes live (the container exists whatever our books said); a dying
    /// number stays dying, since its removal is already under way.
    pub fn confirm(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        match self.held.get(&n) {
            Some(Hold::Dying) => {}
            _ => {
                self.held.insert(n, Hold::Live);
            }
        }
    }

    /// A reserved number's create failed and no container holds it: free again.
    ///
    /// Only a reserved number is freed; a late failure report never frees a number that a live
    /// or dying container holds.
    pub fn release(&mut self, n: u32) {
        if self.held.get(&n) == Some(&Hold::Reserved) {
            self.held.remove(&n);
        }
    }

    /// Removal of the container holding `n` started: not reusable until `gone`.
    ///
    /// Applies from any state (including free: some container holds the name, or we would not
    /// be removing it).
    pub fn removing(&mut self, n: u32) {
        if n > 0 {
            self.held.insert(n, Hold::Dying);
        }
    }

    /// Docker confirmed no container holds `n`: free again.
    pub fn gone(&mut self, n: u32) {
        self.held.remove(&n);
    }

    /// Numbers held (live + reserved + dying).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn is_free(&self, n: u32) -> bool {
        n > 0 && !self.held.contains_key(&n)
    }

    /// Why `n` is held, `None` when free (or 0).
    pub fn hold(&self, n: u32) -> Option<Hold> {
        self.held.get(&n).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_ordinals() {
        assert_eq!(parse_ordinal("acestream", "acestream-12"), Some(12));
        assert_eq!(parse_ordinal("acestream", "acestream-1"), Some(1));
        assert_eq!(parse_ordinal("acestream", "/acestream-3"), Some(3));
        assert_eq!(parse_ordinal("my-engines", "my-engines-7"), Some(7));
        assert_eq!(
            parse_ordinal("acestream", "acestream-4294967295"),
            Some(u32::MAX)
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "acestream-0",
            "acestream-x",
            "acestream-12a",
            "acestream-",
            "acestream",
            "acestream-+1",
            "acestream--1",
            "acestream-01",
            "acestream- 1",
            "acestream-1 ",
            "acestream-4294967296",
            "other-1",
            "xacestream-1",
            "acestream_1",
            "acestreamx-1",
            "acestream-1-2",
            "//acestream-1",
            "",
        ] {
            assert_eq!(parse_ordinal("acestream", bad), None, "{bad:?}");
        }
        // The dash belongs to the prefix, not to the number.
        assert_eq!(parse_ordinal("my-engines", "my-1"), None);
        assert_eq!(parse_ordinal("my", "my-engines-1"), None);
    }

    #[test]
    fn engine_name_round_trips() {
        assert_eq!(engine_name("acestream", 12), "acestream-12");
        assert_eq!(
            parse_ordinal("my-engines", &engine_name("my-engines", 40)),
            Some(40)
        );
    }

    #[test]
    fn reserves_lowest_free() {
        let mut o = Ordinals::new();
        assert_eq!(o.reserve(), 1);
        assert_eq!(o.reserve(), 2);
        o.mark_live(4);
        assert_eq!(o.reserve(), 3);
        assert_eq!(o.reserve(), 5);
        assert_eq!(o.held(), 5);
        assert!(!o.is_free(0));
        assert!(o.is_free(6));
    }

    #[test]
    fn lifecycle_transitions() {
        let mut o = Ordinals::new();
        let n = o.reserve();
        assert_eq!(o.hold(n), Some(Hold::Reserved));
        o.confirm(n);
        assert_eq!(o.hold(n), Some(Hold::Live));
        o.release(n); // no effect on a live number
        assert_eq!(o.hold(n), Some(Hold::Live));
        o.removing(n);
        assert_eq!(o.hold(n), Some(Hold::Dying));
        o.confirm(n); // no effect on a dying number
        o.release(n);
        assert_eq!(o.hold(n), Some(Hold::Dying));
        assert_eq!(o.reserve(), 2, "a dying number is not reused");
        o.gone(n);
        assert!(o.is_free(n));
        assert_eq!(o.reserve(), 1, "reused once gone");
    }

    #[test]
    fn release_frees_a_failed_create() {
        let mut o = Ordinals::new();
        o.mark_live(1);
        let n = o.reserve();
        assert_eq!(n, 2);
        o.release(n);
        assert!(o.is_free(2));
        assert_eq!(o.reserve(), 2);
    }

    #[test]
    fn mark_live_overrides_and_ignores_zero() {
        let mut o = Ordinals::new();
        o.mark_live(0);
        o.removing(0);
        assert_eq!(o.held(), 0);
        o.removing(3);
        o.mark_live(3);
        assert_eq!(o.hold(3), Some(Hold::Live));
    }

    #[test]
    fn seeded_with_gaps_fills_them_first() {
        let mut o = Ordinals::new();
        for n in [2, 3, 7] {
            o.mark_live(n);
        }
        assert_eq!(o.reserve(), 1);
        assert_eq!(o.reserve(), 4);
        assert_eq!(o.reserve(), 5);
        assert_eq!(o.reserve(), 6);
        assert_eq!(o.reserve(), 8);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Reserve,
        Confirm(u32),
        Release(u32),
        Removing(u32),
        Gone(u32),
        MarkLive(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Reserve),
            2 => (1u32..12).prop_map(Op::Confirm),
            1 => (1u32..12).prop_map(Op::Release),
            2 => (1u32..12).prop_map(Op::Removing),
            2 => (1u32..12).prop_map(Op::Gone),
            1 => (1u32..12).prop_map(Op::MarkLive),
        ]
    }

    proptest! {
        #[test]
        fn reserve_invariants(ops in proptest::collection::vec(op(), 0..60)) {
            let mut o = Ordinals::new();
            for op in ops {
                match op {
                    Op::Reserve => {
                        let before = o.clone();
                        let held_before = o.held();
                        let n = o.reserve();
                        prop_assert!(n >= 1);
                        prop_assert!(n as usize <= held_before + 1);
                        prop_assert!(before.is_free(n), "handed out held {n}");
                        prop_assert!(before.hold(n) != Some(Hold::Dying));
                        // It is the lowest free number.
                        for m in 1..n {
                            prop_assert!(!before.is_free(m), "{m} was free below {n}");
                        }
                        prop_assert_eq!(o.hold(n), Some(Hold::Reserved));
                    }
                    Op::Confirm(n) => o.confirm(n),
                    Op::Release(n) => o.release(n),
                    Op::Removing(n) => {
                        o.removing(n);
                        prop_assert_eq!(o.hold(n), Some(Hold::Dying));
                    }
                    Op::Gone(n) => {
                        o.gone(n);
                        prop_assert!(o.is_free(n));
                        // After `gone` the lowest free number is reused.
                        let mut probe = o.clone();
                        let lowest = (1..).find(|m| o.is_free(*m)).unwrap();
                        prop_assert!(lowest <= n);
                        prop_assert_eq!(probe.reserve(), lowest);
                    }
                    Op::MarkLive(n) => o.mark_live(n),
                }
            }
        }

        #[test]
        fn dying_is_never_handed_out_before_gone(
            live in 1u32..10,
            dying in proptest::collection::btree_set(1u32..10, 1..5),
        ) {
            let mut o = Ordinals::new();
            for n in 1..=live {
                o.mark_live(n);
            }
            for &d in &dying {
                o.removing(d);
            }
            // Reserve until every number up to the highest dying one is held.
            let highest_dying = *dying.iter().next_back().unwrap();
            loop {
                let n = o.reserve();
                prop_assert!(!dying.contains(&n));
                if n > highest_dying {
                    break;
                }
            }
            let lowest_dying = *dying.iter().next().unwrap();
            o.gone(lowest_dying);
            prop_assert_eq!(o.reserve(), lowest_dying);
        }
    }
}
