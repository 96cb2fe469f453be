//! The servers holding a credit, by the backend load from which they may
//! use it: what a settle walks while the backend queue waits.
//!
//! A held credit is usable now unless the server is at its slowstart cap
//! or dynamic maxconn (`minconn` under the backend's `fullconn`, HAProxy's
//! `srv_dynamic_maxconn`) holds it below its maxconn. Dynamic maxconn
//! grows with the backend's load (served + queued), so each holding server
//! has a load from which it has room, computed from its own state alone
//! (`ServerFacts::room_from_load`). A settle must visit only the servers
//! whose threshold the load has reached: visiting every holding server
//! made each message of a backend of thousands of servers O(n) while its
//! queue waited and dynamic maxconn held them back.
//!
//! So the servers are split by the load they were last sorted for:
//! `ripe` (threshold reached: walked in id order, as a settle offers
//! them; `ripe_own` those of them with waiters of their own, the only
//! ones a settle visits while the backend queue is empty) and `later`
//! (not yet, least threshold first). When the load
//! rises, the least thresholds of `later` ripen; when it falls, the
//! highest thresholds of `lifted` (the ripe ones with a threshold above 0)
//! go back. Each move is O(log n), and a server moves only when the load
//! crosses its threshold; nothing allocates once the sets have grown.

use std::cmp::Reverse;

use super::heap::IndexedHeap;
use super::id_set::IdSet;
use crate::backend::limit::Limit;

#[derive(Debug, Clone, Default)]
pub(crate) struct RoomByLoad {
    /// Per server: `Some(t)` holds a credit it may use once the backend's
    /// load is at least `t`; `None`: it holds none, or cannot use one at
    /// any load until its own state changes.
    from: Vec<Option<u64>>,
    /// Per server: sessions wait in its own queue.
    own: Vec<bool>,
    /// Threshold reached, by id.
    ripe: IdSet,
    /// Those of them with waiters of their own.
    ripe_own: IdSet,
    /// Threshold not reached, least first.
    later: IndexedHeap<u64>,
    /// The ripe ones with a threshold above 0, highest first: the first to
    /// lose their room when the load falls.
    lifted: IndexedHeap<Reverse<u64>>,
    /// The load the servers are sorted for.
    load: u64,
    /// The backend's `fullconn` the thresholds were computed with.
    fullconn: Limit,
}

impl RoomByLoad {
    pub fn new(fullconn: Limit) -> RoomByLoad {
        RoomByLoad { fullconn, ..RoomByLoad::default() }
    }

    /// The `fullconn` the thresholds follow.
    pub fn fullconn(&self) -> Limit {
        self.fullconn
    }

    /// The thresholds are about to be recomputed for another `fullconn`.
    pub fn set_fullconn(&mut self, fullconn: Limit) {
        self.fullconn = fullconn;
    }

    /// Server `id` may use a held credit from load `from` on (`None`: it
    /// cannot); `own`: sessions wait in its own queue. O(1) when that did
    /// not change, O(log n) when it did.
    pub fn set(&mut self, id: usize, from: Option<u64>, own: bool) {
        if self.from.len() <= id {
            self.from.resize(id + 1, None);
            self.own.resize(id + 1, false);
        }
        if self.from[id] == from && self.own[id] == own {
            return;
        }
        self.from[id] = from;
        self.own[id] = own;
        self.ripe.remove(id);
        self.ripe_own.remove(id);
        self.later.remove(id);
        self.lifted.remove(id);
        if let Some(t) = from {
            self.sort(id, t);
        }
    }

    fn sort(&mut self, id: usize, threshold: u64) {
        if threshold > self.load {
            self.later.set(id, threshold);
            return;
        }
        self.ripe.insert(id);
        if self.own[id] {
            self.ripe_own.insert(id);
        }
        if threshold > 0 {
            self.lifted.set(id, Reverse(threshold));
        }
    }

    /// The backend's load is `load` now: the servers whose threshold it
    /// crossed move. O(log n) per server that moves.
    pub fn follow(&mut self, load: u64) {
        self.load = load;
        while let Some((threshold, id)) = self.later.first().filter(|&(t, _)| t <= load) {
            self.later.remove(id);
            self.sort(id, threshold);
        }
        while let Some((Reverse(threshold), id)) = self.lifted.first().filter(|&(Reverse(t), _)| t > load) {
            self.lifted.remove(id);
            self.ripe.remove(id);
            self.ripe_own.remove(id);
            self.later.set(id, threshold);
        }
    }

    /// The first server at or after `id` with room at the sorted load
    /// (with `own_waiters`, among those with waiters of their own).
    pub fn next_ripe_from(&self, id: usize, own_waiters: bool) -> Option<usize> {
        if own_waiters {
            self.ripe_own.next_from(id)
        } else {
            self.ripe.next_from(id)
        }
    }

    /// What is kept for `id`, for `BackendState::check`: its threshold,
    /// and whether it is sorted as its threshold, its own waiters and the
    /// load say.
    pub fn of(&self, id: usize) -> (Option<u64>, bool) {
        let from = self.from.get(id).copied().flatten();
        let ripe = from.is_some_and(|t| t <= self.load);
        let own = self.own.get(id).copied().unwrap_or(false);
        let sorted = self.ripe.contains(id) == ripe
            && self.ripe_own.contains(id) == (ripe && own)
            && self.later.contains(id) == (from.is_some() && !ripe)
            && self.lifted.contains(id) == (ripe && from.is_some_and(|t| t > 0));
        (from, sorted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ripe(r: &RoomByLoad, own_waiters: bool) -> Vec<usize> {
        std::iter::successors(r.next_ripe_from(0, own_waiters), |&id| r.next_ripe_from(id + 1, own_waiters)).collect()
    }

    #[test]
    fn servers_ripen_and_fall_back_as_the_load_crosses_their_thresholds() {
        let mut r = RoomByLoad::new(Limit::from_config(10));
        r.set(0, Some(0), false);
        r.set(1, Some(4), true);
        r.set(2, Some(7), false);
        r.set(3, None, true);
        r.set(4, Some(4), false);
        assert_eq!(ripe(&r, false), vec![0]);
        r.follow(5);
        assert_eq!(ripe(&r, false), vec![0, 1, 4]);
        assert_eq!(ripe(&r, true), vec![1], "3 has waiters but no room");
        r.follow(9);
        assert_eq!(ripe(&r, false), vec![0, 1, 2, 4]);
        r.follow(4);
        assert_eq!(ripe(&r, false), vec![0, 1, 4], "2 has no room below 7");
        r.set(1, Some(6), true);
        assert_eq!(ripe(&r, false), vec![0, 4], "a new threshold is sorted at once");
        assert_eq!(ripe(&r, true), Vec::<usize>::new());
        r.set(0, Some(0), true);
        assert_eq!(ripe(&r, true), vec![0], "waiters of its own, noted at once");
        r.follow(0);
        assert_eq!(ripe(&r, false), vec![0]);
        r.set(0, None, true);
        assert_eq!(ripe(&r, false), Vec::<usize>::new());
        assert_eq!(ripe(&r, true), Vec::<usize>::new());
        for id in 0..5 {
            assert!(r.of(id).1, "server {id} sorted as its threshold says");
        }
        assert_eq!(r.of(2).0, Some(7));
    }
}
