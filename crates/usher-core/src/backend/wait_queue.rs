//! An ordered queue of waiting sessions with removal by session id.
//!
//! Ordered by [`QueueKey`]: priority class first, then arrival time plus the
//! frontend's priority offset, then accept order. Without priorities every
//! key has class 0 and offset 0, so this is FIFO.
//! A client that leaves is removed at once (`remove`), so `len` is always
//! the true number of waiters and `maxqueue` counts only live ones.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

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

/// A waiter in a queue.
#[derive(Debug)]
pub struct Waiting<W> {
    pub session: SessionId,
    pub waiter: W,
    /// How many were waiting ahead of it when it joined.
    pub position: u32,
}

#[derive(Debug)]
pub struct WaitQueue<W> {
    entries: BTreeMap<QueueKey, Waiting<W>>,
    index: FxHashMap<SessionId, QueueKey>,
}

impl<W> Default for WaitQueue<W> {
    fn default() -> Self {
        WaitQueue { entries: BTreeMap::new(), index: FxHashMap::default() }
    }
}

impl<W> WaitQueue<W> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a waiter; returns how many were already waiting (its position).
    pub fn push(&mut self, key: QueueKey, session: SessionId, waiter: W) -> u32 {
        let position = self.entries.len() as u32;
        debug_assert!(!self.index.contains_key(&session), "session queued twice");
        self.index.insert(session, key);
        let previous = self.entries.insert(key, Waiting { session, waiter, position });
        debug_assert!(previous.is_none(), "queue key reused");
        position
    }

    pub fn head_key(&self) -> Option<QueueKey> {
        self.entries.keys().next().copied()
    }

    /// The head and its key (to queue it elsewhere in the same place).
    pub fn pop_front_keyed(&mut self) -> Option<(QueueKey, Waiting<W>)> {
        let (key, waiting) = self.entries.pop_first()?;
        self.index.remove(&waiting.session);
        Some((key, waiting))
    }

    pub fn pop_front(&mut self) -> Option<Waiting<W>> {
        let (_, waiting) = self.entries.pop_first()?;
        self.index.remove(&waiting.session);
        Some(waiting)
    }

    pub fn remove(&mut self, session: SessionId) -> Option<Waiting<W>> {
        let key = self.index.remove(&session)?;
        self.entries.remove(&key)
    }

    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn contains(&self, session: SessionId) -> bool {
        self.index.contains_key(&session)
    }

    /// Waiters in service order (tests and stats).
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
            q.push(QueueKey::fifo(SessionId(i)), SessionId(i), i);
        }
        let removed = q.remove(SessionId(2)).expect("queued");
        assert_eq!((removed.waiter, removed.position), (2, 2));
        assert!(q.remove(SessionId(2)).is_none());
        assert_eq!(q.pop_front().map(|w| w.session), Some(SessionId(1)));
        assert_eq!(q.pop_front().map(|w| w.session), Some(SessionId(3)));
        assert!(q.is_empty());
    }
}
