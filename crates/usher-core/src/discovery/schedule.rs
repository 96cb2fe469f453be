//! When each name is resolved next. A plain struct on an injected clock.
//!
//! A new name is due at once. After a resolution that worked, the next is
//! due after `resolve_interval`, or after the records' TTL when that is
//! shorter — never sooner than [`TTL_FLOOR`], so a TTL of 0 cannot make the
//! broker hammer its DNS server. After a failure, the next try comes after
//! `resolve_interval` (the last servers stay meanwhile).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::answer::QueryKey;

/// Shortest time between two resolutions of a name that worked.
pub const TTL_FLOOR: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    due: BTreeMap<QueryKey, Instant>,
}

impl Schedule {
    pub fn new(interval: Duration) -> Schedule {
        Schedule { interval, due: BTreeMap::new() }
    }

    /// The names to resolve from now on: new ones are due at once, the ones
    /// no longer asked for are dropped, the others keep their time.
    pub fn track(&mut self, queries: &[QueryKey], interval: Duration, now: Instant) {
        self.interval = interval;
        self.due.retain(|key, _| queries.contains(key));
        for key in queries {
            self.due.entry(key.clone()).or_insert(now);
        }
    }

    /// The earliest time a name is due; `None` when there is none.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The names due at `now`, each taken off until [`Schedule::done`]
    /// puts it back.
    pub fn take_due(&mut self, now: Instant) -> Vec<QueryKey> {
        let due: Vec<QueryKey> = self.due.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        for key in &due {
            // In flight: far away until its outcome reschedules it.
            self.due.insert(key.clone(), now + Duration::from_secs(365 * 24 * 3600));
        }
        due
    }

    /// `key` was resolved at `now`: `ttl` for a resolution that worked,
    /// `None` for a failure. A name dropped meanwhile stays dropped.
    pub fn done(&mut self, key: &QueryKey, ttl: Option<Duration>, now: Instant) {
        let wait = match ttl {
            Some(ttl) => self.interval.min(ttl.max(TTL_FLOOR)),
            None => self.interval,
        };
        if let Some(at) = self.due.get_mut(key) {
            *at = now + wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecordKind;

    fn key(q: &str) -> QueryKey {
        QueryKey { query: q.into(), kind: RecordKind::A }
    }

    #[test]
    fn new_names_are_due_at_once_then_by_interval_or_ttl_with_a_floor() {
        let now = Instant::now();
        let interval = Duration::from_secs(10);
        let mut s = Schedule::new(interval);
        s.track(&[key("a"), key("b")], interval, now);
        assert_eq!(s.next_due(), Some(now));
        assert_eq!(s.take_due(now), vec![key("a"), key("b")]);
        assert!(s.take_due(now).is_empty(), "in flight, not due twice");
        s.done(&key("a"), Some(Duration::from_secs(3)), now);
        s.done(&key("b"), Some(Duration::ZERO), now);
        assert_eq!(s.next_due(), Some(now + TTL_FLOOR), "a TTL of 0 waits the floor");
        s.done(&key("b"), Some(Duration::from_secs(3600)), now);
        assert_eq!(s.next_due(), Some(now + Duration::from_secs(3)), "a shorter TTL comes first");
        s.done(&key("a"), None, now);
        assert_eq!(s.next_due(), Some(now + interval), "a failure waits the interval");
        s.track(&[key("b")], interval, now);
        s.done(&key("a"), None, now);
        assert_eq!(s.take_due(now + interval), vec![key("b")], "a dropped name is not resolved again");
    }
}
