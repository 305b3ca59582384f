//! The set of ports a VPN forwards: Gluetun answers `{"ports":[...]}` (or the legacy
//! `{"port":N}`), and some providers forward several. Owns the canonical form every core compares:
//! non-zero, deduplicated, lowest first, at most [`MAX_PORTS`] (the lowest kept). An empty set
//! means "not known yet", never "changed to nothing".

use std::fmt;

/// The most ports one VPN is tracked with (no Gluetun provider forwards more than a handful).
pub const MAX_PORTS: usize = 8;

/// A VPN's forwarded ports in canonical form. `Copy`, so readiness stays a plain value.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PortSet {
    len: u8,
    ports: [u16; MAX_PORTS],
}

impl PortSet {
    /// No port (not known yet).
    pub const EMPTY: PortSet = PortSet {
        len: 0,
        ports: [0; MAX_PORTS],
    };

    /// The canonical set of `ports`: zeros dropped, duplicates merged, lowest first, the lowest
    /// [`MAX_PORTS`] kept.
    pub fn new(ports: impl IntoIterator<Item = u16>) -> PortSet {
        let mut all: Vec<u16> = ports.into_iter().filter(|&p| p != 0).collect();
        all.sort_unstable();
        all.dedup();
        all.truncate(MAX_PORTS);
        let mut set = PortSet::EMPTY;
        set.ports[..all.len()].copy_from_slice(&all);
        set.len = all.len() as u8;
        set
    }

    /// One port (`0` = none).
    pub fn one(port: u16) -> PortSet {
        PortSet::new([port])
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.ports[..usize::from(self.len)]
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.as_slice().iter().copied()
    }

    /// The lowest port: what the single-port fields (`forwarded_port`) show.
    pub fn first(&self) -> Option<u16> {
        self.as_slice().first().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn contains(&self, port: u16) -> bool {
        self.as_slice().contains(&port)
    }

    /// The lowest `n` ports.
    pub fn lowest(&self, n: usize) -> PortSet {
        PortSet::new(self.iter().take(n))
    }

    /// `None` for the empty set.
    pub fn known(self) -> Option<PortSet> {
        (!self.is_empty()).then_some(self)
    }

    pub fn to_vec(&self) -> Vec<u16> {
        self.as_slice().to_vec()
    }
}

impl From<Option<u16>> for PortSet {
    fn from(port: Option<u16>) -> PortSet {
        PortSet::new(port)
    }
}

impl From<u16> for PortSet {
    fn from(port: u16) -> PortSet {
        PortSet::one(port)
    }
}

impl<const N: usize> From<[u16; N]> for PortSet {
    fn from(ports: [u16; N]) -> PortSet {
        PortSet::new(ports)
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Comma-joined, as Gluetun's `{{PORTS}}`: `5678,9876`; empty for none.
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_form() {
        assert_eq!(
            PortSet::new([9876, 0, 5678, 9876]).as_slice(),
            &[5678, 9876]
        );
        assert_eq!(PortSet::new([9876, 5678]), PortSet::new([5678, 9876]));
        assert!(PortSet::one(0).is_empty());
        assert_eq!(PortSet::from(None), PortSet::EMPTY);
        assert_eq!(PortSet::from(Some(7)).first(), Some(7));
        assert_eq!(PortSet::new([3, 1, 2]).lowest(2).as_slice(), &[1, 2]);
        assert_eq!(PortSet::new([5678, 9876]).to_string(), "5678,9876");
        assert_eq!(PortSet::EMPTY.to_string(), "");
        assert_eq!(PortSet::EMPTY.known(), None);
    }

    proptest! {
        #[test]
        fn sorted_unique_nonzero_and_order_blind(mut ports in proptest::collection::vec(any::<u16>(), 0..12)) {
            let set = PortSet::new(ports.clone());
            let s = set.as_slice();
            prop_assert!(s.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(!s.contains(&0));
            prop_assert!(s.len() <= MAX_PORTS);
            let mut distinct: Vec<u16> = ports.iter().copied().filter(|&p| p != 0).collect();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(s, &distinct[..distinct.len().min(MAX_PORTS)]);
            ports.reverse();
            prop_assert_eq!(PortSet::new(ports), set);
        }
    }
}
