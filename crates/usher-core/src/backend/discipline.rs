//! Queue disciplines: who a backend serves next and who it refuses under
//! overload, beside the plain FIFO of [`wait_queue`](super::wait_queue).
//! Every decision is a plain struct with no actix, driven by the
//! BackendQueue's core ([`BackendState`](super::BackendState)) and by the
//! model tests alike.
//!
//! - [`codel`]: CoDel's standing-queue test ([`StandingQueue`]);
//! - [`fair`]: fair share between client sources ([`FairRounds`],
//!   [`SourceKey`]);
//! - [`Queueing`] (here): the backend's discipline as a whole — the order
//!   its queues serve in now, which waiters to shed now, and the
//!   per-source caps — over every queue of the backend at once.
//!
//! Priority classes come first in every discipline: a waiter is never
//! served while a waiter of a better (lower) class waits for the same slot,
//! and shedding starts with the worst class.

pub mod codel;
pub mod fair;

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;

pub use codel::StandingQueue;
pub use fair::{FairRounds, SourceKey};

use super::limit::Limit;
use super::wait_queue::{Joining, QueueKey, Waiting};
use crate::config::{FairShare, QueueDiscipline, QueueSettings};
use crate::ids::SessionId;

/// Which end of the best class a queue serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Arrival order (by queue key).
    Oldest,
    /// Newest first (adaptive LIFO while the queue stands).
    Newest,
}

impl Order {
    /// Compares the next waiters of two queues competing for one slot:
    /// `true` when `a` goes first (a tie goes to `a`, the server's own
    /// queue). A better class always wins.
    pub fn first(self, a: QueueKey, b: QueueKey) -> bool {
        match self {
            Order::Oldest => a <= b,
            Order::Newest => (a.class, std::cmp::Reverse((a.time_ms, a.seq))) <= (b.class, std::cmp::Reverse((b.time_ms, b.seq))),
        }
    }
}

/// A backend's discipline over all its queues.
#[derive(Debug)]
pub struct Queueing {
    settings: QueueSettings,
    max_queued_per_source: Limit,
    max_live_per_source: Limit,
    standing: StandingQueue,
    /// The time of the message being handled (set by the core; only
    /// timed disciplines read it).
    now: Instant,
    /// Waiters by age, and by worst class first then age — only with a
    /// timed discipline.
    by_age: BTreeSet<(Instant, SessionId)>,
    by_class: BTreeSet<(Reverse<i32>, Instant, SessionId)>,
    /// Waiters per source — only with a per-source cap.
    per_source: FxHashMap<SourceKey, u32>,
    /// Seated sessions per source: slots granted with a source ticket and
    /// not yet given back by it — only with `max_live`. Kept across a
    /// reload, since the tickets out there still count.
    seated: FxHashMap<SourceKey, u32>,
}

impl Queueing {
    pub fn new(settings: QueueSettings, now: Instant) -> Queueing {
        Queueing {
            settings,
            max_queued_per_source: Limit::from_config(settings.per_source.max_queued.map_or(0, |n| n.get())),
            max_live_per_source: Limit::from_config(settings.per_source.max_live.map_or(0, |n| n.get())),
            standing: StandingQueue::new(settings.codel, now),
            now,
            by_age: BTreeSet::new(),
            by_class: BTreeSet::new(),
            per_source: FxHashMap::default(),
            seated: FxHashMap::default(),
        }
    }

    /// A reload's settings. `waiting` is every waiter now queued: the
    /// indexes are built again from them, as the new settings need.
    pub fn reconfigure(&mut self, settings: QueueSettings, waiting: impl Iterator<Item = Joining>) {
        let mut standing = self.standing.clone();
        standing.set(settings.codel);
        let seated = std::mem::take(&mut self.seated);
        *self = Queueing { standing, seated, ..Queueing::new(settings, self.now) };
        for w in waiting {
            self.joined(&w);
        }
    }

    /// Reads the clock: disciplines that shed by age need it; FIFO does
    /// not (its hot path reads no clock).
    pub fn timed(&self) -> bool {
        self.settings.discipline != QueueDiscipline::Fifo
    }

    pub fn fair(&self) -> bool {
        self.settings.fair != FairShare::None
    }

    /// Sets the time of the message being handled, having looked at the
    /// queue as it stood until then.
    pub fn set_now(&mut self, now: Instant) {
        if self.timed() {
            self.look_at(now.max(self.now));
        }
        self.now = now.max(self.now);
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Looks at the queue after a change (see [`StandingQueue::look`]).
    pub fn look(&mut self) {
        if self.timed() {
            self.look_at(self.now);
        }
    }

    fn look_at(&mut self, now: Instant) {
        let oldest = self.by_age.first().map(|(joined, _)| *joined);
        self.standing.look(now, oldest);
    }

    /// The queue has stood for a whole interval (codel and adaptive LIFO).
    pub fn overloaded(&self) -> bool {
        self.timed() && self.standing.overloaded(self.now)
    }

    /// The order queues serve in now.
    pub fn order(&self) -> Order {
        if self.settings.discipline == QueueDiscipline::AdaptiveLifo && self.overloaded() {
            Order::Newest
        } else {
            Order::Oldest
        }
    }

    /// The source a client counts as, when fair share or a cap needs one.
    pub fn source_of(&self, client: Option<IpAddr>) -> Option<SourceKey> {
        let needed = self.fair() || self.counts_waiters_per_source();
        client.filter(|_| needed).map(|ip| SourceKey::of(ip, self.settings.fair))
    }

    /// A per-source cap needs each source's waiters counted.
    fn counts_waiters_per_source(&self) -> bool {
        !self.max_queued_per_source.is_unlimited() || self.caps_live()
    }

    /// `queue.per_source.max_live` is set: grants carry a source ticket.
    pub fn caps_live(&self) -> bool {
        !self.max_live_per_source.is_unlimited()
    }

    /// `source` may queue one more (`queue.per_source.max_queued`).
    pub fn admits(&self, source: Option<SourceKey>) -> bool {
        source.is_none_or(|s| !self.max_queued_per_source.reached_by(self.waiting_of(s) as usize))
    }

    /// A new session of `source` may enter the backend
    /// (`queue.per_source.max_live`): its seated and waiting sessions are
    /// below the cap. A retry is not a new session: its old ticket still
    /// counts it, so it is never asked.
    pub fn admits_live(&self, source: Option<SourceKey>) -> bool {
        source.is_none_or(|s| {
            let inside = self.waiting_of(s) + self.seated.get(&s).copied().unwrap_or(0);
            !self.max_live_per_source.reached_by(inside as usize)
        })
    }

    fn waiting_of(&self, source: SourceKey) -> u32 {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    /// A slot was delivered with a ticket for `source`.
    pub fn seat(&mut self, source: SourceKey) {
        *self.seated.entry(source).or_insert(0) += 1;
    }

    /// A ticket for `source` was dropped: its session left the backend.
    /// A ticket from before a reload that changed how sources are grouped
    /// may name a source not counted; it is ignored.
    pub fn unseat(&mut self, source: SourceKey) {
        if let Some(n) = self.seated.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.seated.remove(&source);
            }
        }
    }

    /// Seated sessions of `source` (tickets out), for tests.
    #[cfg(feature = "internals")]
    pub fn seated_of(&self, source: SourceKey) -> u32 {
        self.seated.get(&source).copied().unwrap_or(0)
    }

    /// A waiter joined one of the backend's queues.
    pub fn joined(&mut self, j: &Joining) {
        if self.timed() {
            self.by_age.insert((j.joined, j.session));
            self.by_class.insert((Reverse(j.key.class), j.joined, j.session));
        }
        if let (Some(source), true) = (j.source, self.counts_waiters_per_source()) {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
    }

    /// A waiter left the backend's queues (served, refused, shed, gone).
    pub fn left<W>(&mut self, w: &Waiting<W>) {
        if self.timed() {
            self.by_age.remove(&(w.joined, w.session));
            self.by_class.remove(&(Reverse(w.key.class), w.joined, w.session));
        }
        if let Some(source) = w.source {
            if let Some(n) = self.per_source.get_mut(&source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_source.remove(&source);
                }
            }
        }
    }

    /// The waiters to refuse now: under overload, those that waited the
    /// shed age or longer, worst class first — a class is shed only once
    /// no waiter of a worse class is left (a better class is served before
    /// them anyway, so its wait says less about overload).
    pub fn to_shed(&self) -> Vec<SessionId> {
        let Some(bound) = self.shed_bound() else { return Vec::new() };
        // Worst class first, oldest first within a class: the first waiter
        // younger than the bound keeps its class, and so every better one.
        self.by_class.iter().take_while(|(_, joined, _)| *joined <= bound).map(|(_, _, session)| *session).collect()
    }

    /// Under overload, waiters that joined at or before this are shed.
    fn shed_bound(&self) -> Option<Instant> {
        if !self.overloaded() {
            return None;
        }
        self.now.checked_sub(self.standing.shed_after())
    }

    /// Waiters indexed by age (`None` when the discipline keeps no index):
    /// every queued one.
    pub fn indexed(&self) -> Option<usize> {
        self.timed().then_some(self.by_age.len())
    }

    /// When [`to_shed`](Self::to_shed) may have someone to refuse next,
    /// with nothing joining or leaving meanwhile (the BackendQueue's
    /// timer): when overload starts, or — overloaded — when the oldest
    /// waiter of the worst class reaches the shed age (a better class is
    /// shed only after it, and it leaves through a message, which arms the
    /// timer again).
    pub fn next_look(&self) -> Option<Instant> {
        if !self.timed() {
            return None;
        }
        let oldest = self.by_age.first().map(|(joined, _)| *joined);
        match self.standing.overload_starts(self.now, oldest) {
            Some(start) => Some(start),
            None => {
                let (_, joined, _) = self.by_class.first()?;
                Some(*joined + self.standing.shed_after())
            }
        }
    }
}
