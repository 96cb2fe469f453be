//! The core's own order of servers by load relative to weight, for the
//! paths that choose a server without the balancer: a retry leaving a
//! server while every other one is busy (it waits in the least loaded
//! other server's queue) and a hashed session whose server's queue is full
//! (redispatched to the least loaded other available server). A backend
//! may have thousands of servers, so these answer in O(log n) instead of
//! looking at every server.
//!
//! The rule is the one HAProxy's redispatch follows and the model tests
//! check against a scan of every candidate: the least (load + 1) / weight,
//! ties to the lowest id. Per group (actives, backups), two orders are
//! kept from each server's standing (`BackendState::touch`): the eligible
//! servers (usable whenever their group is in use) and the ready ones (a
//! free slot, nobody queued for them). Re-placing a server costs
//! O(log n) and allocates nothing once the heaps have grown to the number
//! of servers.

use std::cmp::Ordering;

use super::heap::IndexedHeap;
use super::servers::{BackendWide, ServerFacts, Standing};
use crate::ids::ServerId;

/// A server's place: (load + 1) / weight, compared without division.
#[derive(Debug, Clone, Copy)]
struct Share {
    load: u32,
    /// > 0: only eligible servers are placed.
    weight: u32,
}

impl Ord for Share {
    fn cmp(&self, other: &Share) -> Ordering {
        let lhs = (u64::from(self.load) + 1) * u64::from(other.weight);
        let rhs = (u64::from(other.load) + 1) * u64::from(self.weight);
        lhs.cmp(&rhs)
    }
}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Share) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// Equal shares are equal places (the heap breaks ties by id), so equality
// follows the order rather than the fields.
impl PartialEq for Share {
    fn eq(&self, other: &Share) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Share {}

/// Servers by load relative to weight, per group (0 actives, 1 backups).
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadOrder {
    eligible: [IndexedHeap<Share>; 2],
    ready: [IndexedHeap<Share>; 2],
}

impl LoadOrder {
    /// Server `id` now stands as `standing`.
    pub fn place(&mut self, id: usize, standing: &Standing) {
        for heap in self.eligible.iter_mut().chain(self.ready.iter_mut()) {
            heap.remove(id);
        }
        if !standing.eligible {
            return;
        }
        let share = Share { load: standing.load, weight: standing.weight };
        self.eligible[standing.group()].set(id, share);
        if standing.ready {
            self.ready[standing.group()].set(id, share);
        }
    }

    /// The usable server not in `not` with the least load relative to its
    /// weight, ties to the lowest id. O(log n): `not` skips at most two.
    pub fn least_usable(&mut self, wide: &BackendWide, not: [Option<ServerId>; 2]) -> Option<ServerId> {
        // The eligible servers of the group in use are the usable ones.
        let group = usize::from(!wide.any_active);
        self.eligible[group].first_that(|i| !not.contains(&Some(ServerId(i)))).map(|(_, i)| ServerId(i))
    }

    /// The same among the servers that can take a session now. O(log n),
    /// plus O(log n) per less loaded ready server that dynamic maxconn
    /// holds below its maxconn (each is walked past, as a pick does).
    pub fn least_available(
        &mut self,
        servers: &[ServerFacts],
        wide: &BackendWide,
        not: [Option<ServerId>; 2],
    ) -> Option<ServerId> {
        if wide.blocked() {
            return None;
        }
        let group = usize::from(!wide.any_active);
        let fits = |i: usize| !not.contains(&Some(ServerId(i))) && wide.has_room(&servers[i]);
        self.ready[group].first_that(fits).map(|(_, i)| ServerId(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::unlimited;
    use super::*;
    use crate::backend::limit::Limit;


    fn standing(load: u32, weight: u32, ready: bool) -> Standing {
        Standing { eligible: weight > 0, weight, load, ready, ..Standing::default() }
    }

    fn wide(any_active: bool) -> BackendWide {
        BackendWide {
            paused: false,
            fullconn: Limit::default(),
            maxconn: Limit::default(),
            served: 0,
            load: 0,
            any_active,
        }
    }

    #[test]
    fn least_share_first_ties_to_the_lowest_id() {
        let mut order = LoadOrder::default();
        let servers = vec![unlimited(1); 4];
        let none = [None, None];
        // (load + 1) / weight: 2/1, 4/2 (a tie with 0), 2/3, 1/1.
        order.place(0, &standing(1, 1, true));
        order.place(1, &standing(3, 2, true));
        order.place(2, &standing(1, 3, false));
        order.place(3, &standing(0, 1, true));
        assert_eq!(order.least_usable(&wide(true), none), Some(ServerId(2)));
        assert_eq!(order.least_available(&servers, &wide(true), none), Some(ServerId(3)), "2 is not ready");
        let not_3 = [Some(ServerId(3)), None];
        assert_eq!(order.least_available(&servers, &wide(true), not_3), Some(ServerId(0)), "ties: lowest id");
        let not_3_0 = [Some(ServerId(3)), Some(ServerId(0))];
        assert_eq!(order.least_available(&servers, &wide(true), not_3_0), Some(ServerId(1)));
        order.place(2, &standing(1, 0, false));
        assert_eq!(order.least_usable(&wide(true), none), Some(ServerId(3)), "weight 0 is not eligible");
        let backup = Standing { backup: true, ..standing(5, 1, true) };
        order.place(3, &backup);
        assert_eq!(order.least_usable(&wide(true), none), Some(ServerId(0)), "3 moved to the backups");
        assert_eq!(order.least_usable(&wide(false), none), Some(ServerId(3)), "backups in use");
    }
}
