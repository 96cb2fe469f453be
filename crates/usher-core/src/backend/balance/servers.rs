//! The balancer's view of a backend's servers, answered per server in O(1).
//!
//! The BackendQueue keeps what it knows of each server in [`ServerFacts`]
//! (everything but its queue of waiters, so the view is not generic over
//! the waiter type) and a few running totals ([`Tally`] per group, the
//! backend's served count). [`Servers`] borrows them and computes a
//! [`Candidate`] on demand: nothing is rebuilt or allocated per pick.

use super::Candidate;
use crate::backend::core::ServerStatus;
use crate::backend::limit::Limit;
use crate::ids::ServerId;

/// What the BackendQueue knows of one server, apart from its queue.
#[derive(Debug, Clone)]
pub(crate) struct ServerFacts {
    /// `None` = unlimited server: always has room, credits do not circulate.
    pub held: Option<u32>,
    /// Sessions holding a slot of this server.
    pub served: u32,
    /// Sessions in its own queue (kept equal to the queue's length).
    pub queued: u32,
    pub maxconn: Limit,
    /// Dynamic maxconn floor, with the backend's `fullconn`.
    pub minconn: Limit,
    pub maxqueue: Limit,
    pub backup: bool,
    pub status: ServerStatus,
    /// Removed by a reload: never balanced again.
    pub removed: bool,
    /// What the tallies and the balancer last heard of it.
    pub counted: Standing,
}

impl ServerFacts {
    /// Its standing as computed from the facts now.
    pub fn standing(&self) -> Standing {
        let eligible = !self.removed && self.status.up && self.status.weight > 0;
        Standing {
            eligible,
            backup: self.backup,
            weight: self.status.weight,
            load: self.served.saturating_add(self.queued),
            ready: eligible
                && self.queued == 0
                && self.held.is_none_or(|n| n > 0)
                && self.status.cap.is_none_or(|cap| self.served < cap),
            maxqueue: self.maxqueue,
            holds: !self.removed && self.status.up && self.held.is_none_or(|n| n > 0),
        }
    }

    /// The least backend load (served + queued) at which a held credit
    /// of this server has room under its effective maxconn
    /// ([`BackendWide::effective_max`] with `fullconn`), or `None` when it
    /// has none at any load (at its slowstart cap). Room only grows with
    /// the load: dynamic maxconn is max(minconn, load × maxconn /
    /// fullconn), capped at maxconn, until the load reaches `fullconn`.
    pub fn room_from_load(&self, fullconn: Limit) -> Option<u64> {
        if self.status.cap.is_some_and(|cap| self.served >= cap) {
            return None;
        }
        let (Some(minconn), Some(maxconn), Some(fullconn)) = (self.minconn.get(), self.maxconn.get(), fullconn.get())
        else {
            return Some(0);
        };
        if self.served < minconn.min(maxconn) {
            return Some(0);
        }
        if self.served >= maxconn {
            // No room below `fullconn`, where dynamic maxconn stops.
            return Some(u64::from(fullconn));
        }
        // served < load × maxconn / fullconn (rounded down) from here.
        Some(((u64::from(self.served) + 1) * u64::from(fullconn)).div_ceil(u64::from(maxconn)))
    }
}

/// What balancing sees of one server by itself, whatever the others do.
/// The BackendQueue recomputes it after every change to the server and,
/// when it differs, updates the tallies and tells the balancer
/// (`Balancer::candidate_changed`): that is how a built-in algorithm keeps
/// its index without rebuilding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Standing {
    /// Up, not in maintenance, not removed, weight > 0: takes balanced
    /// traffic whenever its group (actives, or backups) is in use.
    pub eligible: bool,
    pub backup: bool,
    pub weight: u32,
    /// Sessions it serves plus sessions queued for it.
    pub load: u32,
    /// Eligible, nobody in its own queue, a held credit (or unlimited) and
    /// under its slowstart cap: it can take a session now unless a
    /// backend-wide bound says otherwise (pause, backend maxconn, dynamic
    /// maxconn) or its group is not in use.
    pub ready: bool,
    pub maxqueue: Limit,
    /// Up and holding a credit (or unlimited): a settle may grant from it.
    pub holds: bool,
}

impl Standing {
    /// 0 for an active server, 1 for a backup.
    pub fn group(&self) -> usize {
        usize::from(self.backup)
    }
}

/// Running totals over the eligible servers of one group (actives or
/// backups), kept as standings change, so that "is any active server
/// usable", the backend queue's bound and the hash's average load are O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tally {
    pub eligible: u32,
    pub load: u64,
    /// Eligible servers with no `maxqueue`.
    pub unbounded_queues: u32,
    /// Sum of the `maxqueue` of the others.
    pub queue_room: u64,
}

impl Tally {
    pub fn add(&mut self, s: &Standing) {
        if !s.eligible {
            return;
        }
        self.eligible += 1;
        self.load += u64::from(s.load);
        match s.maxqueue.get() {
            Some(max) => self.queue_room += u64::from(max),
            None => self.unbounded_queues += 1,
        }
    }

    pub fn remove(&mut self, s: &Standing) {
        if !s.eligible {
            return;
        }
        self.eligible -= 1;
        self.load -= u64::from(s.load);
        match s.maxqueue.get() {
            Some(max) => self.queue_room -= u64::from(max),
            None => self.unbounded_queues -= 1,
        }
    }
}

/// The backend-wide state a server's room depends on, O(1) to compute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackendWide {
    pub paused: bool,
    pub fullconn: Limit,
    pub maxconn: Limit,
    /// Sessions the servers serve, together.
    pub served: u32,
    /// Sessions served plus queued in the backend (HAProxy's beconn).
    pub load: u64,
    /// Some active server is eligible: the backups wait.
    pub any_active: bool,
}

impl BackendWide {
    /// No server can take a session now whatever its own state: paused, or
    /// the backend at its own maxconn.
    pub fn blocked(&self) -> bool {
        self.paused || self.maxconn.get().is_some_and(|m| self.served >= m)
    }

    /// The maxconn in force now for `s`: slowstart cap and dynamic maxconn
    /// (`minconn`/`fullconn`) applied.
    pub fn effective_max(&self, s: &ServerFacts) -> Option<u32> {
        let mut max = s.status.cap;
        if let (Some(minconn), Some(maxconn), Some(fullconn)) = (s.minconn.get(), s.maxconn.get(), self.fullconn.get()) {
            if self.load < u64::from(fullconn) {
                let dynamic = (self.load * u64::from(maxconn) / u64::from(fullconn)) as u32;
                let dynamic = dynamic.max(minconn).min(maxconn);
                max = Some(max.map_or(dynamic, |m| m.min(dynamic)));
            }
        }
        max
    }

    /// A held credit `s` may use now (below its effective maxconn, and the
    /// backend below its own maxconn). A pause reads as "no room"
    /// everywhere a grant is decided, so a paused backend queues exactly as
    /// a full one does.
    pub fn has_room(&self, s: &ServerFacts) -> bool {
        !self.blocked() && s.held.is_none_or(|n| n > 0) && self.effective_max(s).is_none_or(|m| s.served < m)
    }

    /// Takes balanced traffic: eligible, and a backup only while no
    /// active server is.
    pub fn usable(&self, s: &ServerFacts) -> bool {
        s.counted.eligible && (!s.backup || !self.any_active)
    }
}

/// The servers of a backend as a balancer sees them: [`Candidate`]s by
/// id, each computed in O(1) from what the BackendQueue keeps
/// incrementally. A retry's `avoid` is applied here (the server it is
/// leaving reads as unusable while another server is usable).
///
/// [`iter`](Servers::iter) walks every server (O(n)): fine for a simple
/// extension balancer, whose cost it is; the built-in algorithms keep
/// their own index instead (see [`Balancer::candidate_changed`]).
///
/// [`Balancer::candidate_changed`]: super::Balancer::candidate_changed
#[derive(Clone, Copy)]
pub struct Servers<'a> {
    facts: &'a [ServerFacts],
    tallies: &'a [Tally; 2],
    wide: BackendWide,
    /// The server a retry leaves, when another one is usable.
    avoid: Option<ServerId>,
}

impl<'a> Servers<'a> {
    pub(crate) fn new(
        facts: &'a [ServerFacts],
        tallies: &'a [Tally; 2],
        wide: BackendWide,
        avoid: Option<ServerId>,
    ) -> Servers<'a> {
        Servers { facts, tallies, wide, avoid }
    }

    /// Server ids run from 0 to `len() - 1` (removed ones included: ids
    /// never change).
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// The candidate with this id, if there is one.
    pub fn get(&self, id: ServerId) -> Option<Candidate> {
        let s = self.facts.get(id.0)?;
        let usable = self.wide.usable(s) && self.avoid != Some(id);
        Some(Candidate {
            id,
            weight: s.status.weight,
            usable,
            available: usable && s.queued == 0 && self.wide.has_room(s),
            load: s.counted.load,
        })
    }

    /// Every candidate in id order (O(n)).
    pub fn iter(&self) -> impl Iterator<Item = Candidate> + '_ {
        (0..self.facts.len()).filter_map(|i| self.get(ServerId(i)))
    }

    /// Some active (non-backup) server takes balanced traffic; when none
    /// does, the backups are the usable ones.
    pub fn any_active(&self) -> bool {
        self.wide.any_active
    }

    /// The group whose servers are usable now: 0 actives, 1 backups.
    pub(crate) fn group_in_use(&self) -> usize {
        usize::from(!self.wide.any_active)
    }

    /// No server has room now, whatever its own state.
    pub(crate) fn blocked(&self) -> bool {
        self.wide.blocked()
    }

    /// The server a retry leaves (reads as unusable), if any.
    pub(crate) fn avoided(&self) -> Option<ServerId> {
        self.avoid
    }

    /// What balancing last heard of `id` by itself.
    pub(crate) fn standing(&self, id: ServerId) -> Option<Standing> {
        self.facts.get(id.0).map(|s| s.counted)
    }

    /// How many servers are usable now, and their load together.
    pub(crate) fn usable_totals(&self) -> (u32, u64) {
        let t = &self.tallies[self.group_in_use()];
        match self.avoid.and_then(|a| self.facts.get(a.0)) {
            Some(a) => (t.eligible - 1, t.load - u64::from(a.counted.load)),
            None => (t.eligible, t.load),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `room_from_load` is the least load at which `has_room` says yes,
    /// for every small setting.
    #[test]
    fn room_from_load_is_where_dynamic_maxconn_first_gives_room() {
        for (minconn, maxconn, fullconn) in [(1, 4, 10), (2, 3, 7), (0, 5, 5), (3, 2, 6), (1, 4, 0), (2, 8, 3)] {
            for served in 0..=maxconn + 1 {
                for cap in [None, Some(2)] {
                    let s = ServerFacts {
                        held: Some(1),
                        served,
                        queued: 0,
                        maxconn: Limit::from_config(maxconn),
                        minconn: Limit::from_config(minconn),
                        maxqueue: Limit::default(),
                        backup: false,
                        status: ServerStatus { up: true, weight: 1, cap },
                        removed: false,
                        counted: Standing::default(),
                    };
                    let fullconn = Limit::from_config(fullconn);
                    let room_at = |load: u64| {
                        let wide = BackendWide {
                            paused: false,
                            fullconn,
                            maxconn: Limit::default(),
                            served: 0,
                            load,
                            any_active: true,
                        };
                        wide.has_room(&s)
                    };
                    let first = (0..=20).find(|&load| room_at(load));
                    let case = format!("minconn {minconn} maxconn {maxconn} fullconn {fullconn} served {served} cap {cap:?}");
                    assert_eq!(s.room_from_load(fullconn), first, "{case}");
                    if let Some(first) = first {
                        assert!((first..=20).all(room_at), "{case}: room only grows with the load");
                    }
                }
            }
        }
    }
}
