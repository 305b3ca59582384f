//! Engine names `<prefix>-N`: the lowest free ordinal over live, reserved and dying numbers.
//!
//! A number is reusable only after Docker confirmed its container gone (`gone`), so a create never
//! races Docker's asynchronous removal with a 409.
//!
//! Names close their gaps: a replacement created first takes a higher number while the engine
//! it replaces still exists; once that one is gone, `renames` picks the engines to rename to the
//! lowest free numbers (Docker renames a running container atomically), so at rest the names are
//! exactly 1..N. An engine's ordinal is always the one of its current name; the
//! `acevisor.ordinal` label only records the number it was created with.

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

    /// Reserves and returns the lowest free number below `limit`, if there is one (the target
    /// of a rename that closes a gap).
    pub fn reserve_below(&mut self, limit: u32) -> Option<u32> {
        let n = (1..limit).find(|n| !self.held.contains_key(n))?;
        self.held.insert(n, Hold::Reserved);
        Some(n)
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

/// Whether an engine's name may move to a lower number (`renames`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mobility {
    /// Holds its number and stays (being removed, or a rename of it under way).
    Stays,
    /// Will move but not yet (its container is being created or is starting): a gap it would
    /// fill is kept for it.
    Later,
    /// May be renamed now (ready).
    Now,
}

/// The engines to rename now, each with the free number it is paired with: the highest numbers
/// move to the lowest gaps below them, so with N engines at rest the names are exactly 1..N.
/// `engines` are `(name, ordinal, mobility)` of every engine known; `reserved` are numbers held
/// otherwise (targets of renames under way). The caller reserves the actual number (the lowest
/// free one below the engine's) and may get none when a container it does not know holds it.
pub fn renames(engines: &[(&str, u32, Mobility)], reserved: &[u32]) -> Vec<(String, u32)> {
    let held: std::collections::BTreeSet<u32> = engines
        .iter()
        .map(|e| e.1)
        .chain(reserved.iter().copied())
        .collect();
    let mut movers: Vec<&(&str, u32, Mobility)> =
        engines.iter().filter(|e| e.2 != Mobility::Stays).collect();
    movers.sort_by_key(|e| std::cmp::Reverse(e.1));
    let gaps = (1u32..).filter(|n| !held.contains(n));
    movers
        .into_iter()
        .zip(gaps)
        .take_while(|(e, gap)| *gap < e.1)
        .filter(|(e, _)| e.2 == Mobility::Now)
        .map(|(e, gap)| (e.0.to_string(), gap))
        .collect()
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

    #[test]
    fn reserve_below_takes_the_lowest_free_number_under_the_limit() {
        let mut o = Ordinals::new();
        for n in [2, 3, 5] {
            o.mark_live(n);
        }
        o.removing(1);
        assert_eq!(o.reserve_below(5), Some(4), "1 is dying, 2 and 3 live");
        assert_eq!(o.hold(4), Some(Hold::Reserved));
        assert_eq!(o.reserve_below(5), None, "nothing else free below 5");
        assert_eq!(o.reserve_below(1), None);
        o.gone(1);
        assert_eq!(o.reserve_below(3), Some(1));
    }

    #[test]
    fn a_replacement_moves_down_once_the_engine_it_replaced_is_gone() {
        use Mobility::*;
        // Pool of 4: the forwarded engine 1 is replaced create-first by 5.
        let pool = [
            ("a-1", 1, Stays),
            ("a-2", 2, Now),
            ("a-3", 3, Now),
            ("a-4", 4, Now),
        ];
        let with_new = [pool.as_slice(), &[("a-5", 5, Now)]].concat();
        assert!(
            renames(&with_new, &[]).is_empty(),
            "1 is still being removed"
        );
        let gone: Vec<_> = with_new[1..].to_vec();
        assert_eq!(renames(&gone, &[]), vec![("a-5".to_string(), 1)]);
        assert!(renames(&gone, &[1]).is_empty(), "its rename is under way");
    }

    #[test]
    fn a_starting_engine_keeps_the_gap_it_will_fill() {
        use Mobility::*;
        let engines = [("a-2", 2, Now), ("a-3", 3, Later)];
        assert!(
            renames(&engines, &[]).is_empty(),
            "3 takes 1 once ready; 2 stays"
        );
        let engines = [("a-2", 2, Now), ("a-3", 3, Now)];
        assert_eq!(renames(&engines, &[]), vec![("a-3".to_string(), 1)]);
    }

    proptest! {
        #[test]
        fn renames_close_every_gap(ordinals in proptest::collection::btree_set(1u32..40, 0..12)) {
            let mut names: Vec<u32> = ordinals.into_iter().collect();
            let count = names.len() as u32;
            for _ in 0..3 {
                let engines: Vec<(String, u32, Mobility)> = names
                    .iter()
                    .map(|n| (format!("a-{n}"), *n, Mobility::Now))
                    .collect();
                let view: Vec<(&str, u32, Mobility)> =
                    engines.iter().map(|(s, n, m)| (s.as_str(), *n, *m)).collect();
                let moves = renames(&view, &[]);
                let mut targets = std::collections::BTreeSet::new();
                for (name, to) in &moves {
                    let from: u32 = name[2..].parse().unwrap();
                    prop_assert!(*to < from, "{name} moves up to {to}");
                    prop_assert!(!names.contains(to), "{to} is held");
                    prop_assert!(targets.insert(*to), "{to} given twice");
                    let i = names.iter().position(|n| *n == from).unwrap();
                    names[i] = *to;
                }
            }
            names.sort();
            prop_assert_eq!(names, (1..=count).collect::<Vec<_>>());
        }
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
