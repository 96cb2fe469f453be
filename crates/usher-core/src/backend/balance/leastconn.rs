//! `leastconn`: the server with the fewest sessions — served plus queued —
//! relative to its weight; among equals, weighted round robin by
//! virtual-time deadlines (see `vtime`), so idle traffic (every load 0)
//! still follows the weights.
//!
//! Cost per pick: O(log n) — the ready servers of each group are kept
//! ordered by (load / weight, deadline, id) and re-placed when one's load,
//! weight or deadline changes (HAProxy's leastconn tree, with exact
//! ratios).

use std::cmp::Ordering;
use std::net::IpAddr;

use super::heap::IndexedHeap;
use super::vtime::Deadlines;
use super::{Balancer, Choice, Servers};
use crate::ids::ServerId;

/// A ready server's place in the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    load: u32,
    /// > 0: only eligible servers are placed.
    weight: u32,
    deadline: u128,
    id: usize,
}

impl Ord for Place {
    fn cmp(&self, other: &Place) -> Ordering {
        // load / weight, compared without division (exact, transitive).
        let lhs = u64::from(self.load) * u64::from(other.weight);
        let rhs = u64::from(other.load) * u64::from(self.weight);
        lhs.cmp(&rhs).then(self.deadline.cmp(&other.deadline)).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Place {
    fn partial_cmp(&self, other: &Place) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
pub struct LeastConn {
    deadlines: Deadlines,
    /// Ready servers in pick order, per group (0 actives, 1 backups).
    order: [IndexedHeap<Place>; 2],
}

impl Balancer for LeastConn {
    // Picks only among available servers, never pins.
    fn only_balances(&self) -> bool {
        true
    }

    fn follows_server_changes(&self) -> bool {
        true
    }

    fn pick(&mut self, servers: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        if servers.blocked() {
            return None;
        }
        let group = servers.group_in_use();
        let (place, i) =
            self.order[group].first_that(|i| servers.get(ServerId(i)).is_some_and(|c| c.available))?;
        let deadline = self.deadlines.picked(i, place.weight);
        self.order[group].set(i, Place { deadline, ..place });
        Some(Choice::Balanced(ServerId(i)))
    }

    fn candidate_changed(&mut self, server: ServerId, servers: &Servers<'_>) {
        let Some(standing) = servers.standing(server) else { return };
        let i = server.0;
        for order in &mut self.order {
            order.remove(i);
        }
        if standing.ready {
            let place = Place { load: standing.load, weight: standing.weight, deadline: self.deadlines.of(i), id: i };
            self.order[standing.group()].set(i, place);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Table;
    use super::*;

    #[test]
    fn follows_load_and_rotates_ties() {
        let mut lc = LeastConn::default();
        let mut t = Table::new(&[1, 1, 1], &mut lc);
        t.set_load(0, 3, &mut lc);
        t.set_load(1, 1, &mut lc);
        t.set_load(2, 1, &mut lc);
        let a = lc.pick(&t.view(), None);
        let b = lc.pick(&t.view(), None);
        assert_ne!(a, b, "ties rotate");
        assert!(matches!(a, Some(Choice::Balanced(ServerId(1 | 2)))));
        t.set_load(1, 0, &mut lc);
        assert_eq!(lc.pick(&t.view(), None), Some(Choice::Balanced(ServerId(1))));
        // Relative to weight: 4 sessions on weight 4 beat 2 on weight 1.
        let mut lc = LeastConn::default();
        let mut w = Table::new(&[4, 1], &mut lc);
        w.set_load(0, 4, &mut lc);
        w.set_load(1, 2, &mut lc);
        assert_eq!(lc.pick(&w.view(), None), Some(Choice::Balanced(ServerId(0))));
    }

    #[test]
    fn idle_traffic_follows_weights() {
        let mut lc = LeastConn::default();
        let t = Table::new(&[3, 1], &mut lc);
        let picks: Vec<Option<Choice>> = (0..40).map(|_| lc.pick(&t.view(), None)).collect();
        let heavy = picks.iter().filter(|p| **p == Some(Choice::Balanced(ServerId(0)))).count();
        assert_eq!(heavy, 30, "{picks:?}");
    }
}
