//! An ordered queue of waiting sessions with removal by session id.
//!
//! Ordered by [`QueueKey`]: priority class first, then arrival time plus the
//! frontend's priority offset, then accept order. Without priorities every
//! key has class 0 and offset 0, so this is FIFO. With fair share between
//! sources a round number comes right after the class (see
//! [`discipline::fair`](super::discipline::fair)); a discipline may serve
//! the newest of the best class instead of the oldest ([`Order`]).
//! A client that leaves is removed at once (`remove`), so `len` is always
//! the true number of waiters and `maxqueue` counts only live ones.

use std::collections::BTreeMap;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::discipline::{FairRounds, Order, SourceKey};
use crate::ids::SessionId;

/// Position in a queue: lower keys are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    /// Priority class (`frontends.X.priority_class`); lower is served first.
    pub class: i32,
    /// Accept time in ms since the broker started, plus the frontend's
    /// `priority_offset` (negative = served as if it arrived earlier).
    pub time_ms: i64,
    /// Accept order (the session id): ties, and a redispatched session
    /// keeps its original place.
    pub seq: u64,
}

impl QueueKey {
    /// The key of a retry: ahead of every session waiting for the first
    /// time (a retry was at the head once already and must not go to the
    /// tail for a server's failure), in original order among retries.
    pub fn for_retry(self) -> QueueKey {
        QueueKey { class: i32::MIN, ..self }
    }

    /// Plain FIFO by accept order (models and the bench; sessions build
    /// their key from their frontend's priority).
    #[cfg(any(test, feature = "internals"))]
    pub fn fifo(session: SessionId) -> QueueKey {
        QueueKey { class: 0, time_ms: 0, seq: session.0 }
    }
}

/// Where a waiter comes in the queue's order: its priority class first,
/// then its fair-share round (always the round being served when fair
/// share is off), then its key's time and accept order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    class: i32,
    round: u64,
    time_ms: i64,
    seq: u64,
}

impl Place {
    fn key(&self) -> QueueKey {
        QueueKey { class: self.class, time_ms: self.time_ms, seq: self.seq }
    }
}

/// Who joins a queue, and what the disciplines need to know of it.
#[derive(Debug, Clone, Copy)]
pub struct Joining {
    pub session: SessionId,
    pub key: QueueKey,
    /// When it first joined a queue of this backend (a redispatched
    /// waiter keeps it): its sojourn, for CoDel.
    pub joined: Instant,
    /// Its client source, with fair share or per-source caps.
    pub source: Option<SourceKey>,
}

/// A waiter in a queue.
#[derive(Debug)]
pub struct Waiting<W> {
    pub session: SessionId,
    pub waiter: W,
    /// How many were waiting ahead of it when it joined.
    pub position: u32,
    pub key: QueueKey,
    pub joined: Instant,
    pub source: Option<SourceKey>,
    round: u64,
}

impl<W> Waiting<W> {
    /// It again, to join another queue.
    pub fn joining(&self) -> Joining {
        Joining { session: self.session, key: self.key, joined: self.joined, source: self.source }
    }
}

/// A waiter as its queue keeps it: its key and round are its place (the
/// map's key), not stored twice. A tree node holds eleven of these beside
/// their places, so every byte here is eleven in a node: a node of 984
/// bytes fits the allocator's 1 KiB class, where one with the key and
/// round again (1 336 bytes) took 1.5 KiB — per queued client, ~70 bytes.
#[derive(Debug)]
struct Stored<W> {
    session: SessionId,
    waiter: W,
    position: u32,
    joined: Instant,
    source: Option<SourceKey>,
}

impl<W> Stored<W> {
    fn at(self, place: Place) -> Waiting<W> {
        let Stored { session, waiter, position, joined, source } = self;
        Waiting { session, waiter, position, key: place.key(), joined, source, round: place.round }
    }
}

#[derive(Debug)]
pub struct WaitQueue<W> {
    entries: BTreeMap<Place, Stored<W>>,
    index: FxHashMap<SessionId, Place>,
    /// Fair share's rounds, when on.
    fair: Option<FairRounds>,
    /// The round newcomers join when fair share is off.
    serving: u64,
}

impl<W> Default for WaitQueue<W> {
    fn default() -> Self {
        WaitQueue { entries: BTreeMap::new(), index: FxHashMap::default(), fair: None, serving: 0 }
    }
}

impl<W> WaitQueue<W> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether it shares turns fairly between sources.
    #[cfg(test)]
    pub(crate) fn is_fair(&self) -> bool {
        self.fair.is_some()
    }

    /// Turns fair share between sources on or off for newcomers.
    pub fn set_fair(&mut self, on: bool) {
        match (on, self.fair.is_some()) {
            (true, false) => self.fair = Some(FairRounds::default()),
            (false, true) => self.fair = None,
            _ => {}
        }
    }

    /// Adds a waiter; returns how many were already waiting (its position).
    pub fn push(&mut self, joining: Joining, waiter: W) -> u32 {
        let Joining { session, key, joined, source } = joining;
        let position = self.entries.len() as u32;
        let round = match (&mut self.fair, source) {
            (Some(fair), Some(source)) => fair.join(source),
            _ => self.serving,
        };
        let place = Place { class: key.class, round, time_ms: key.time_ms, seq: key.seq };
        debug_assert!(!self.index.contains_key(&session), "session queued twice");
        self.index.insert(session, place);
        let previous = self.entries.insert(place, Stored { session, waiter, position, joined, source });
        debug_assert!(previous.is_none(), "queue key reused");
        position
    }

    /// Where the next waiter to serve in `order` is: the first of the
    /// best class (and round), or the last of them.
    fn next_place(&self, order: Order) -> Option<Place> {
        let first = *self.entries.keys().next()?;
        match order {
            Order::Oldest => Some(first),
            Order::Newest => {
                let last = Place { time_ms: i64::MAX, seq: u64::MAX, ..first };
                self.entries.range(first..=last).next_back().map(|(place, _)| *place)
            }
        }
    }

    /// The key of the waiter that `order` serves next.
    pub fn next_key(&self, order: Order) -> Option<QueueKey> {
        self.next_place(order).map(|place| place.key())
    }

    /// Serves the next waiter in `order`.
    pub fn pop_next(&mut self, order: Order) -> Option<Waiting<W>> {
        let place = self.next_place(order)?;
        let waiting = self.entries.remove(&place)?.at(place);
        self.index.remove(&waiting.session);
        self.left(&waiting, true);
        if self.fair.is_none() {
            self.serving = self.serving.max(waiting.round);
        }
        Some(waiting)
    }

    /// Takes the head out without serving it (to queue it elsewhere, or
    /// refuse it).
    pub fn pop_front(&mut self) -> Option<Waiting<W>> {
        let (place, stored) = self.entries.pop_first()?;
        let waiting = stored.at(place);
        self.index.remove(&waiting.session);
        self.left(&waiting, false);
        Some(waiting)
    }

    pub fn remove(&mut self, session: SessionId) -> Option<Waiting<W>> {
        let place = self.index.remove(&session)?;
        let waiting = self.entries.remove(&place)?.at(place);
        self.left(&waiting, false);
        Some(waiting)
    }

    fn left(&mut self, waiting: &Waiting<W>, served: bool) {
        if let (Some(fair), Some(source)) = (&mut self.fair, waiting.source) {
            fair.leave(source, waiting.round, served);
        }
    }

    /// Every waiter, as it joined, in no particular order.
    pub fn joinings(&self) -> impl Iterator<Item = Joining> + '_ {
        self.entries.iter().map(|(place, w)| Joining {
            session: w.session,
            key: place.key(),
            joined: w.joined,
            source: w.source,
        })
    }

    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn contains(&self, session: SessionId) -> bool {
        self.index.contains_key(&session)
    }

    /// Waiters in queue order (tests and stats).
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.entries.values().map(|w| w.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_removal() {
        let mut q = WaitQueue::default();
        for i in [3u64, 1, 2] {
            q.push(joining(i, 0, None), i);
        }
        let removed = q.remove(SessionId(2)).expect("queued");
        assert_eq!((removed.waiter, removed.position), (2, 2));
        assert!(q.remove(SessionId(2)).is_none());
        assert_eq!(q.pop_next(Order::Oldest).map(|w| w.session), Some(SessionId(1)));
        assert_eq!(q.pop_next(Order::Oldest).map(|w| w.session), Some(SessionId(3)));
        assert!(q.is_empty());
    }

    fn joining(i: u64, class: i32, source: Option<u8>) -> Joining {
        let session = SessionId(i);
        Joining {
            session,
            key: QueueKey { class, ..QueueKey::fifo(session) },
            joined: Instant::now(),
            source: source.map(|s| SourceKey::of(std::net::IpAddr::from([10, 0, 0, s]), crate::config::FairShare::None)),
        }
    }

    #[test]
    fn newest_first_stays_within_the_best_class() {
        let mut q = WaitQueue::default();
        for (i, class) in [(1u64, 1), (2, 0), (3, 0), (4, 1)] {
            q.push(joining(i, class, None), i);
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_next(Order::Newest)).map(|w| w.waiter).collect();
        assert_eq!(order, [3, 2, 4, 1]);
    }

    #[test]
    fn fair_share_alternates_sources() {
        let mut q = WaitQueue::default();
        q.set_fair(true);
        // Source 1 queues five, then source 2 one: 2's waiter is served second.
        for i in 1..=5 {
            q.push(joining(i, 0, Some(1)), i);
        }
        q.push(joining(6, 0, Some(2)), 6);
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_next(Order::Oldest)).map(|w| w.waiter).collect();
        assert_eq!(order, [1, 6, 2, 3, 4, 5]);
    }
}
