//! Engine port blocks: every engine behind one VPN shares its network namespace, so each takes
//! its own block of four ports (HTTP, HTTPS, API, P2P) from the lane's range.

use crate::config::PortRange;

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

/// How many engine blocks fit in a range.
pub fn block_count(range: &PortRange) -> u32 {
    range.len() / u32::from(BLOCK)
}

/// The block whose HTTP port is `http`.
pub fn block_at(http: u16) -> EnginePorts {
    EnginePorts { http, https: http + 1, api: http + 2, p2p: http + 3 }
}

/// The lowest block of `range` whose HTTP port is not in `used_http`.
pub fn free_block(range: &PortRange, used_http: &[u16]) -> Option<EnginePorts> {
    (0..block_count(range))
        .map(|k| range.start + (k as u16) * BLOCK)
        .find(|http| !used_http.contains(http))
        .map(block_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_disjoint_and_lowest_first() {
        let r = PortRange { start: 19000, end: 19011 };
        assert_eq!(block_count(&r), 3);
        assert_eq!(free_block(&r, &[]).unwrap().http, 19000);
        assert_eq!(free_block(&r, &[19000]).unwrap(), block_at(19004));
        assert_eq!(free_block(&r, &[19000, 19004, 19008]), None);
        assert_eq!(block_at(19004).p2p, 19007);
    }

    #[test]
    fn partial_block_at_end_is_not_used() {
        let r = PortRange { start: 100, end: 106 };
        assert_eq!(block_count(&r), 1);
        assert_eq!(free_block(&r, &[100]), None);
    }
}
