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

//!
//! Cost per pick: O(log n) — the ring of each group (actives, backups) is
//! a sorted set of (point, server) kept as servers come and go or change
//! weight (O(weight · log n) per such change), and a lookup is a range
//! query. Bounded load walks the ring only past servers above the bound.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Balancer, Choice, Servers};
use crate::ids::ServerId;

/// Virtual points per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 64;

pub struct ConsistentHash {
    /// Percent of the average load a server may carry (0 = unbounded).
    balance_factor: u32,
    /// The eligible servers' points, per group (0 actives, 1 backups).
    rings: [BTreeSet<(u64, usize)>; 2],
    /// Each server's points in `rings`, if it has some: (group, weight).
    placed: Vec<Option<(usize, u32)>>,
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

/// The `k`-th point of server `id` on the ring.
fn point(id: usize, k: u32) -> u64 {
    mix(((id as u64) << 32) ^ u64::from(k))
}

impl ConsistentHash {
    pub fn new(balance_factor: u32) -> ConsistentHash {
        ConsistentHash { balance_factor, rings: Default::default(), placed: Vec::new() }
    }

    /// The ring's servers from the first point at or after `h`, all the
    /// way round, leaving out `avoid`.
    fn walk(&self, group: usize, h: u64, avoid: Option<ServerId>) -> impl Iterator<Item = usize> + '_ {
        let ring = &self.rings[group];
        ring.range((h, 0)..).chain(ring.range(..(h, 0))).map(|&(_, id)| id).filter(move |&id| Some(ServerId(id)) != avoid)
    }
}

impl Balancer for ConsistentHash {
    fn follows_server_changes(&self) -> bool {
        true
    }

    fn pick(&mut self, servers: &Servers<'_>, client: Option<IpAddr>) -> Option<Choice> {
        let group = servers.group_in_use();
        let h = client.map(client_hash).unwrap_or(0);
        let avoid = servers.avoided();
        let home = self.walk(group, h, avoid).next()?;
        if self.balance_factor == 0 {
            return Some(Choice::Pinned(ServerId(home)));
        }
        let (usable, load) = servers.usable_totals();
        let total = load + 1;
        let bound = (total * u64::from(self.balance_factor)).div_ceil(100 * u64::from(usable.max(1))).max(1);
        // A server met again on the walk is above the bound again: it is
        // skipped again, so no record of the ones seen is needed.
        let fits = |id: &usize| servers.get(ServerId(*id)).is_some_and(|c| u64::from(c.load) < bound);
        let chosen = self.walk(group, h, avoid).find(fits).unwrap_or(home);
        Some(Choice::Pinned(ServerId(chosen)))
    }

    fn candidate_changed(&mut self, server: ServerId, servers: &Servers<'_>) {
        let Some(standing) = servers.standing(server) else { return };
        let i = server.0;
        if self.placed.len() <= i {
            self.placed.resize(i + 1, None);
        }
        let now = standing.eligible.then(|| (standing.group(), standing.weight));
        if self.placed[i] == now {
            return;
        }
        if let Some((group, weight)) = self.placed[i].take() {
            for k in 0..weight.saturating_mul(POINTS_PER_WEIGHT) {
                self.rings[group].remove(&(point(i, k), i));
            }
        }
        if let Some((group, weight)) = now {
            for k in 0..weight.saturating_mul(POINTS_PER_WEIGHT) {
                self.rings[group].insert((point(i, k), i));
            }
        }
        self.placed[i] = now;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Table;
    use super::*;
    use std::net::Ipv4Addr;

    fn home(b: &mut ConsistentHash, t: &Table, ip: IpAddr) -> usize {
        match b.pick(&t.view(), Some(ip)) {
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
        let mut t = Table::new(&[1; 5], &mut b);
        let clients = ips(10_000);
        let before: Vec<usize> = clients.iter().map(|ip| home(&mut b, &t, *ip)).collect();
        assert_eq!(before, clients.iter().map(|ip| home(&mut b, &t, *ip)).collect::<Vec<_>>());
        for s in 0..5 {
            let share = before.iter().filter(|&&x| x == s).count();
            assert!((1_400..=2_600).contains(&share), "server {s} got {share} of 10000");
        }
        t.set_weight(2, 0, &mut b);
        let after: Vec<usize> = clients.iter().map(|ip| home(&mut b, &t, *ip)).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(before.iter().zip(&after).all(|(a, b)| a == b || *a == 2), "only clients of the removed server move");
        assert!(moved <= 2_500, "moved {moved} of 10000");
        t.set_weight(2, 1, &mut b);
        let back: Vec<usize> = clients.iter().map(|ip| home(&mut b, &t, *ip)).collect();
        assert_eq!(before, back, "the ring is the same once the server is back");
    }

    #[test]
    fn bounded_load_skips_hot_servers() {
        let mut b = ConsistentHash::new(125);
        let mut t = Table::new(&[1; 4], &mut b);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let first = home(&mut b, &t, ip);
        t.set_load(first, 10, &mut b);
        let second = home(&mut b, &t, ip);
        assert_ne!(first, second, "a server far above the average is skipped");
    }
}
