//! Weighted round robin by virtual-time deadlines (see `vtime`): over any
//! window, each server gets picks in proportion to its weight, interleaved
//! rather than in bursts. Servers that cannot take a session now are
//! skipped without accumulating credit, so a full server is owed at most
//! one pick when it frees up, never a burst.
//!
//! `roundrobin` follows weight changes at run time (slowstart, the admin
//! API); `static-rr` keeps the configured weights.
//!
//! Cost per pick: O(log n) — the ready servers of each group are kept
//! ordered by (deadline, id); a pick takes the first one the backend-wide
//! bounds let through and moves it to its next deadline.

use std::net::IpAddr;

use super::heap::IndexedHeap;
use super::vtime::Deadlines;
use super::{Balancer, Choice, Servers};
use crate::ids::ServerId;

pub struct SmoothRoundRobin {
    deadlines: Deadlines,
    /// Ready servers by (deadline, id), per group (0 actives, 1 backups).
    order: [IndexedHeap<u128>; 2],
    /// `static-rr`: the configured weights, used instead of the live ones.
    fixed: Option<Vec<u32>>,
}

impl SmoothRoundRobin {
    /// For a backend of `servers` servers (more may be added later).
    pub fn new(servers: usize) -> SmoothRoundRobin {
        let mut deadlines = Deadlines::default();
        if let Some(last) = servers.checked_sub(1) {
            deadlines.of(last);
        }
        SmoothRoundRobin {
            deadlines,
            order: Default::default(),
            fixed: None,
        }
    }

    pub fn with_static_weights(weights: &[u32]) -> SmoothRoundRobin {
        SmoothRoundRobin { fixed: Some(weights.to_vec()), ..SmoothRoundRobin::new(weights.len()) }
    }

    /// The weight the round robin follows for server `i` of live weight
    /// `live`: static-rr keeps the configured weight while the live one is
    /// non-zero (0 still takes a server out); a server configured at
    /// weight 0 has nothing to keep and follows the live weight, or raising
    /// it at run time would never bring it traffic.
    pub(crate) fn weight_of(fixed: Option<&[u32]>, i: usize, live: u32) -> u32 {
        match fixed {
            Some(fixed) if live > 0 => fixed.get(i).copied().filter(|&w| w > 0).unwrap_or(live),
            _ => live,
        }
    }

}

impl Balancer for SmoothRoundRobin {
    // Picks only among available servers, never pins.
    fn only_balances(&self) -> bool {
        true
    }

    fn follows_server_changes(&self) -> bool {
        // static-rr follows the configured weights it was built with.
        self.fixed.is_none()
    }

    fn pick(&mut self, servers: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        if servers.blocked() {
            return None;
        }
        let group = servers.group_in_use();
        let (_, i) =
            self.order[group].first_that(|i| servers.get(ServerId(i)).is_some_and(|c| c.available))?;
        let live = servers.get(ServerId(i)).map_or(0, |c| c.weight);
        let weight = Self::weight_of(self.fixed.as_deref(), i, live);
        let next = self.deadlines.picked(i, weight);
        self.order[group].set(i, next);
        Some(Choice::Balanced(ServerId(i)))
    }

    fn candidate_changed(&mut self, server: ServerId, servers: &Servers<'_>) {
        let Some(standing) = servers.standing(server) else { return };
        let i = server.0;
        for order in &mut self.order {
            order.remove(i);
        }
        if standing.ready {
            let deadline = self.deadlines.of(i);
            self.order[standing.group()].set(i, deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Table;
    use super::*;

    fn pick(rr: &mut SmoothRoundRobin, t: &Table) -> Option<usize> {
        match rr.pick(&t.view(), None) {
            Some(Choice::Balanced(ServerId(i))) => Some(i),
            _ => None,
        }
    }

    #[test]
    fn follows_weights_smoothly() {
        let mut rr = SmoothRoundRobin::new(3);
        let t = Table::new(&[5, 1, 1], &mut rr);
        let picks: Vec<usize> = (0..70).map(|_| pick(&mut rr, &t).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 50);
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 10);
        // Smooth: every window of one round (7 picks) follows the weights,
        // so the heavy server never gets a burst beyond its share.
        assert!(picks.windows(7).all(|w| w.iter().filter(|&&p| p == 0).count() == 5), "{picks:?}");
    }

    #[test]
    fn skips_unavailable() {
        let mut rr = SmoothRoundRobin::new(2);
        let mut t = Table::new(&[1, 1], &mut rr);
        t.set_full(0, true, &mut rr);
        for _ in 0..4 {
            assert_eq!(pick(&mut rr, &t), Some(1));
        }
        t.set_full(1, true, &mut rr);
        assert_eq!(pick(&mut rr, &t), None);
        // Back: owed at most one pick, then they alternate.
        t.set_full(0, false, &mut rr);
        t.set_full(1, false, &mut rr);
        let picks: Vec<usize> = (0..6).map(|_| pick(&mut rr, &t).unwrap()).collect();
        assert!(picks.windows(3).all(|w| w.contains(&0) && w.contains(&1)), "{picks:?}");
    }

    #[test]
    fn static_rr_ignores_weight_changes() {
        let mut rr = SmoothRoundRobin::with_static_weights(&[1, 1]);
        let mut t = Table::new(&[1, 1], &mut rr);
        t.set_weight(0, 9, &mut rr);
        let picks: Vec<usize> = (0..10).map(|_| pick(&mut rr, &t).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5);
    }

    #[test]
    fn static_rr_serves_a_server_configured_at_weight_zero_once_raised() {
        let mut rr = SmoothRoundRobin::with_static_weights(&[1, 0]);
        let mut t = Table::new(&[1, 0], &mut rr);
        assert!((0..4).all(|_| pick(&mut rr, &t) == Some(0)), "weight 0: no traffic");
        t.set_weight(1, 1, &mut rr);
        let picks: Vec<usize> = (0..10).map(|_| pick(&mut rr, &t).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 5);
        t.set_weight(0, 0, &mut rr);
        assert!((0..4).all(|_| pick(&mut rr, &t) == Some(1)), "live weight 0 still takes a server out");
    }
}
