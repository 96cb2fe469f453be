//! `source`: consistent hashing of the client IP on a ring of virtual
//! points (weight × [`POINTS_PER_WEIGHT`] per usable server). A client always
//! maps to the same server while the set of usable servers is unchanged, and
//! adding or removing one of N servers moves only about 1/N of the clients.
//!
//! The result is *pinned*: if that server is full the session waits in its
//! own queue (HAProxy's hash balancing ignores saturation;
//! here `maxconn` still holds). With `hash_balance_factor` (percent, e.g.
//! 125), bounded-load hashing walks the ring past servers already above
//! that share of the average load, so one hot key cannot pile onto one
//! server.

use std::net::IpAddr;

use super::{Balancer, Candidate, Choice};
use crate::ids::ServerId;

/// Virtual points per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 64;

pub struct ConsistentHash {
    /// Percent of the average load a server may carry (0 = unbounded).
    balance_factor: u32,
    ring: Vec<(u64, ServerId)>,
    /// (weight, usable) per server the ring was built for.
    built_for: Vec<(u32, bool)>,
}

/// splitmix64: a fast, well-mixed 64-bit hash of a 64-bit value.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The ring position of a client address.
pub fn client_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            mix((bits >> 64) as u64 ^ mix(bits as u64))
        }
    }
}

impl ConsistentHash {
    pub fn new(balance_factor: u32) -> ConsistentHash {
        ConsistentHash { balance_factor, ring: Vec::new(), built_for: Vec::new() }
    }

    fn rebuild_if_changed(&mut self, candidates: &[Candidate]) {
        let shape: Vec<(u32, bool)> = candidates.iter().map(|c| (c.weight, c.usable)).collect();
        if shape == self.built_for {
            return;
        }
        self.ring.clear();
        for c in candidates.iter().filter(|c| c.usable && c.weight > 0) {
            for k in 0..c.weight.saturating_mul(POINTS_PER_WEIGHT) {
                let point = mix(((c.id.0 as u64) << 32) ^ u64::from(k));
                self.ring.push((point, c.id));
            }
        }
        self.ring.sort_unstable();
        self.built_for = shape;
    }
}

impl Balancer for ConsistentHash {
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice> {
        self.rebuild_if_changed(candidates);
        if self.ring.is_empty() {
            return None;
        }
        let h = client.map(client_hash).unwrap_or(0);
        let start = self.ring.partition_point(|(p, _)| *p < h) % self.ring.len();
        let home = self.ring[start].1;
        if self.balance_factor == 0 {
            return Some(Choice::Pinned(home));
        }
        let usable: Vec<&Candidate> = candidates.iter().filter(|c| c.usable && c.weight > 0).collect();
        let total: u64 = usable.iter().map(|c| u64::from(c.load)).sum::<u64>() + 1;
        let bound = (total * u64::from(self.balance_factor)).div_ceil(100 * usable.len() as u64).max(1);
        let ring_len = self.ring.len();
        let mut seen = vec![false; candidates.len()];
        for k in 0..ring_len {
            let id = self.ring[(start + k) % ring_len].1;
            if std::mem::replace(&mut seen[id.0], true) {
                continue;
            }
            if u64::from(candidates[id.0].load) < bound {
                return Some(Choice::Pinned(id));
            }
        }
        Some(Choice::Pinned(home))
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::*;
    use std::net::Ipv4Addr;

    fn home(b: &mut ConsistentHash, c: &[Candidate], ip: IpAddr) -> usize {
        match b.pick(c, Some(ip)) {
            Some(Choice::Pinned(id)) => id.0,
            other => panic!("{other:?}"),
        }
    }

    fn ips(n: u32) -> Vec<IpAddr> {
        (0..n).map(|i| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i * 7919))).collect()
    }

    #[test]
    fn same_client_same_server_and_removal_moves_about_one_nth() {
        let mut b = ConsistentHash::new(0);
        let mut c = candidates(&[1; 5]);
        let clients = ips(10_000);
        let before: Vec<usize> = clients.iter().map(|ip| home(&mut b, &c, *ip)).collect();
        assert_eq!(before, clients.iter().map(|ip| home(&mut b, &c, *ip)).collect::<Vec<_>>());
        for s in 0..5 {
            let share = before.iter().filter(|&&x| x == s).count();
            assert!((1_400..=2_600).contains(&share), "server {s} got {share} of 10000");
        }
        c[2].usable = false;
        let after: Vec<usize> = clients.iter().map(|ip| home(&mut b, &c, *ip)).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(before.iter().zip(&after).all(|(a, b)| a == b || *a == 2), "only clients of the removed server move");
        assert!(moved <= 2_500, "moved {moved} of 10000");
    }

    #[test]
    fn bounded_load_skips_hot_servers() {
        let mut b = ConsistentHash::new(125);
        let mut c = candidates(&[1; 4]);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let first = home(&mut b, &c, ip);
        c[first].load = 10;
        let second = home(&mut b, &c, ip);
        assert_ne!(first, second, "a server far above the average is skipped");
    }
}
