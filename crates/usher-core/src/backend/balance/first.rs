//! `first`: the first server in declaration order with a free slot. Weights
//! are ignored; servers fill one after the other, which lets idle ones be
//! powered down (use it with `maxconn`).
//!
//! Cost per pick: O(log n) — the ready servers of each group (actives,
//! backups) are kept in id order, and the first one the backend-wide bounds
//! let through is taken (dynamic maxconn can make it walk past some).

use std::net::IpAddr;

use super::heap::IndexedHeap;
use super::{Balancer, Choice, Servers};
use crate::ids::ServerId;

#[derive(Default)]
pub struct First {
    /// Ready servers by id, per group (0 actives, 1 backups).
    ready: [IndexedHeap<()>; 2],
}

impl Balancer for First {
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
        let group = &mut self.ready[servers.group_in_use()];
        let (_, i) = group.first_that(|i| servers.get(ServerId(i)).is_some_and(|c| c.available))?;
        Some(Choice::Balanced(ServerId(i)))
    }

    fn candidate_changed(&mut self, server: ServerId, servers: &Servers<'_>) {
        let Some(standing) = servers.standing(server) else { return };
        for set in &mut self.ready {
            set.remove(server.0);
        }
        if standing.ready {
            self.ready[standing.group()].set(server.0, ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Table;
    use super::*;

    #[test]
    fn fills_in_order() {
        let mut b = First::default();
        let mut t = Table::new(&[1, 5, 1], &mut b);
        assert_eq!(b.pick(&t.view(), None), Some(Choice::Balanced(ServerId(0))));
        t.set_full(0, true, &mut b);
        assert_eq!(b.pick(&t.view(), None), Some(Choice::Balanced(ServerId(1))));
        t.set_full(0, false, &mut b);
        assert_eq!(b.pick(&t.view(), None), Some(Choice::Balanced(ServerId(0))));
    }
}
