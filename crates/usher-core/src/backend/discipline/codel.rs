//! CoDel's standing-queue test, adapted to sessions waiting for a slot.
//!
//! A queue that drains now and then is absorbing a burst; one whose oldest
//! waiter has been older than `target` for a whole `interval` is *standing*:
//! arrivals outpace the slots and waiting longer only makes every client
//! wait longer. The oldest waiter's age is what FIFO service would see, so
//! the test is the same whichever order the queue serves in (a LIFO queue
//! serves its newest at once and would otherwise never look overloaded).
//!
//! The test needs no timer of its own: the oldest waiter only changes when
//! a waiter joins or leaves, so it is enough to look at every such event
//! (and at the shedding timer's ticks). Between two looks the oldest waiter
//! is the same one, and it was younger than `target` until exactly
//! `joined + target`.

use std::time::{Duration, Instant};

use crate::config::CodelSettings;

#[derive(Debug, Clone)]
pub struct StandingQueue {
    target: Duration,
    interval: Duration,
    /// The last moment the queue was empty or its oldest waiter younger
    /// than `target`.
    good_at: Instant,
    /// The last look: the oldest waiter then is the oldest until now.
    last_look: Instant,
}

impl StandingQueue {
    /// Starts with an empty queue at `now`.
    pub fn new(settings: CodelSettings, now: Instant) -> StandingQueue {
        StandingQueue { target: settings.target, interval: settings.interval, good_at: now, last_look: now }
    }

    /// New figures (a reload); what was measured so far stands.
    pub fn set(&mut self, settings: CodelSettings) {
        self.target = settings.target;
        self.interval = settings.interval;
    }

    /// Looks at the queue at `now`, whose oldest waiter joined at `oldest`
    /// (`None`: nobody waits). Call it before and after every change of
    /// the oldest waiter.
    pub fn look(&mut self, now: Instant, oldest: Option<Instant>) {
        let good_until = match oldest {
            None => now,
            // Since the last look it was the oldest; it was young until
            // `joined + target` — which counts only if that is after the
            // last look (a waiter that becomes the oldest when an older one
            // leaves does not make the past good).
            Some(joined) if joined + self.target > self.last_look => now.min(joined + self.target),
            Some(_) => self.good_at,
        };
        self.good_at = self.good_at.max(good_until);
        self.last_look = self.last_look.max(now);
    }

    /// The queue stood for a whole interval up to `now` (after [`look`](Self::look) at `now`).
    pub fn overloaded(&self, now: Instant) -> bool {
        now >= self.good_at + self.interval
    }

    /// Under overload, a waiter older than this is refused: twice the
    /// target (folly's "slough timeout"). A standing queue serves its
    /// waiters after this long at most, so the sessions served during an
    /// overload waited at most about twice the target, and the queue left
    /// when the overload ends holds only that much work: it drains at once.
    /// Shedding only past the whole interval kept up to an interval's worth
    /// of waiters, served late and slow to drain.
    pub fn shed_after(&self) -> Duration {
        self.target * 2
    }

    /// When overload starts, with nothing joining or leaving meanwhile
    /// (`None`: nobody waits, or it has started).
    pub fn overload_starts(&self, now: Instant, oldest: Option<Instant>) -> Option<Instant> {
        let oldest = oldest?;
        if self.overloaded(now) {
            return None;
        }
        // The oldest waiter, still young, counts as good until it is
        // `target` old.
        let good = if oldest + self.target > now { oldest + self.target } else { self.good_at };
        Some(good + self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn codel(t0: Instant) -> StandingQueue {
        StandingQueue::new(CodelSettings { target: 50 * MS, interval: 500 * MS }, t0)
    }

    #[test]
    fn a_burst_that_drains_is_not_overload() {
        let t0 = Instant::now();
        let mut q = codel(t0);
        q.look(t0, None);
        // Someone waits 400 ms, then the queue empties: never a whole
        // interval above target.
        q.look(t0, Some(t0));
        q.look(t0 + 400 * MS, Some(t0));
        q.look(t0 + 400 * MS, None);
        assert!(!q.overloaded(t0 + 400 * MS));
        q.look(t0 + 900 * MS, None);
        assert!(!q.overloaded(t0 + 900 * MS));
    }

    #[test]
    fn a_queue_standing_for_an_interval_is_overloaded() {
        let t0 = Instant::now();
        let mut q = codel(t0);
        q.look(t0, Some(t0));
        // Good until t0 + 50 ms (target), so overloaded from t0 + 550 ms.
        assert_eq!(q.overload_starts(t0, Some(t0)), Some(t0 + 550 * MS));
        q.look(t0 + 549 * MS, Some(t0));
        assert!(!q.overloaded(t0 + 549 * MS));
        q.look(t0 + 550 * MS, Some(t0));
        assert!(q.overloaded(t0 + 550 * MS));
        assert_eq!(q.overload_starts(t0 + 550 * MS, Some(t0)), None);
        // The oldest leaves; the next one is 150 ms old already: still
        // standing (its youth before the last look does not count).
        q.look(t0 + 560 * MS, Some(t0 + 410 * MS));
        assert!(q.overloaded(t0 + 560 * MS));
        // A young oldest waiter ends the overload.
        q.look(t0 + 600 * MS, Some(t0 + 590 * MS));
        assert!(!q.overloaded(t0 + 600 * MS));
    }

    #[test]
    fn newest_first_service_still_sees_the_standing_queue() {
        // The oldest stays while newer waiters come and go: it is the
        // oldest that counts.
        let t0 = Instant::now();
        let mut q = codel(t0);
        q.look(t0, Some(t0));
        for step in 1..=12u32 {
            q.look(t0 + step * 50 * MS, Some(t0));
        }
        assert!(q.overloaded(t0 + 600 * MS));
    }
}
