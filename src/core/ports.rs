//! Engine port blocks: every engine behind one VPN shares its network namespace, so each takes
//! its own block of four ports (HTTP, HTTPS, API, P2P) from the lane's range.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Ports in one engine's block.
pub const BLOCK: u16 = 4;

/// The ports one engine listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnginePorts {
    pub http: u16,
    pub https: u16,
    pub api: u16,
    /// P2P port; for the forwarded engine this is the VPN's forwarded port instead.
    pub p2p: u16,
}

/// An inclusive port range written `"19000-19499"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn len(&self) -> u32 {
        if self.end < self.start {
            0
        } else {
            u32::from(self.end) - u32::from(self.start) + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not a port range like \"19000-19499\""))?;
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{}` in `{s}` is not a port (1-65535)", p.trim()))
                .and_then(|n| {
                    if n == 0 {
                        Err(format!("port 0 in `{s}` is not a usable port"))
                    } else {
                        Ok(n)
                    }
                })
        };
        Ok(PortRange {
            start: parse(a)?,
            end: parse(b)?,
        })
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How many engine blocks fit in a range.
pub fn block_count(range: &PortRange) -> u32 {
    range.len() / u32::from(BLOCK)
}

/// The block whose HTTP port is `http`.
pub fn block_at(http: u16) -> EnginePorts {
    EnginePorts {
        http,
        https: http + 1,
        api: http + 2,
        p2p: http + 3,
    }
}

/// The ports an engine holds in its namespace: its block's HTTP, HTTPS and API ports and its
/// P2P port (the block's fourth port for an ordinary engine, the VPN's port for a forwarded one).
pub fn held_ports(http: u16, p2p: u16) -> [u16; 4] {
    [http, http.saturating_add(1), http.saturating_add(2), p2p]
}

/// HTTP port of the block of `range` that contains `port`, if any.
pub fn block_containing(range: &PortRange, port: u16) -> Option<u16> {
    if !range.contains(port) {
        return None;
    }
    let k = (port - range.start) / BLOCK;
    (u32::from(k) < block_count(range)).then(|| range.start + k * BLOCK)
}

/// The free blocks of one lane during one plan: lowest first, each handed out once.
///
/// Blocks only ever become used while a plan runs, so the lowest free block never moves down and
/// a cursor finds each next one without rescanning (a cold plan of thousands of engines stays
/// linear).
#[derive(Debug)]
pub struct FreeBlocks {
    range: PortRange,
    used_http: std::collections::HashSet<u16>,
    cursor: u32,
}

impl FreeBlocks {
    /// `used_http`: HTTP ports of the blocks already held on the lane.
    pub fn new(range: &PortRange, used_http: impl IntoIterator<Item = u16>) -> FreeBlocks {
        FreeBlocks {
            range: *range,
            used_http: used_http.into_iter().collect(),
            cursor: 0,
        }
    }

    /// Marks the block whose HTTP port is `http` as used.
    pub fn reserve(&mut self, http: u16) {
        self.used_http.insert(http);
    }

    /// The lowest free block, without taking it.
    pub fn peek(&mut self) -> Option<EnginePorts> {
        while self.cursor < block_count(&self.range) {
            let http = self.range.start + (self.cursor as u16) * BLOCK;
            if !self.used_http.contains(&http) {
                return Some(block_at(http));
            }
            self.cursor += 1;
        }
        None
    }

    /// The lowest free block, taken.
    pub fn take(&mut self) -> Option<EnginePorts> {
        let block = self.peek()?;
        self.reserve(block.http);
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_block(range: &PortRange, used_http: &[u16]) -> Option<EnginePorts> {
        FreeBlocks::new(range, used_http.iter().copied()).take()
    }

    #[test]
    fn blocks_are_disjoint_and_lowest_first() {
        let r = PortRange {
            start: 19000,
            end: 19011,
        };
        assert_eq!(block_count(&r), 3);
        assert_eq!(free_block(&r, &[]).unwrap().http, 19000);
        assert_eq!(free_block(&r, &[19000]).unwrap(), block_at(19004));
        assert_eq!(free_block(&r, &[19000, 19004, 19008]), None);
        assert_eq!(block_at(19004).p2p, 19007);
    }

    #[test]
    fn partial_block_at_end_is_not_used() {
        let r = PortRange {
            start: 100,
            end: 106,
        };
        assert_eq!(block_count(&r), 1);
        assert_eq!(free_block(&r, &[100]), None);
        assert_eq!(
            block_containing(&r, 105),
            None,
            "the partial block is no block"
        );
        assert_eq!(block_containing(&r, 103), Some(100));
    }

    #[test]
    fn free_blocks_hand_out_each_block_once_lowest_first_around_reservations() {
        let r = PortRange {
            start: 200,
            end: 219,
        };
        let mut free = FreeBlocks::new(&r, [204]);
        free.reserve(212);
        let taken: Vec<u16> = std::iter::from_fn(|| free.take()).map(|b| b.http).collect();
        assert_eq!(taken, vec![200, 208, 216]);
        assert_eq!(free.peek(), None);
    }
}
