//! Figures over a sliding window of time without a timer: a ring of slots,
//! one per period. Writing goes to the slot of the current period, after
//! emptying it if it still holds a period that has left the window; reading
//! takes the slots whose period is still in it. Nothing runs while no
//! session ends, and a reading after a quiet spell sees the stale slots as
//! gone.

use std::time::{Duration, Instant};

/// The last `slots` periods of `period` each, the current one included.
#[derive(Debug, Clone)]
pub struct Recent<T> {
    origin: Instant,
    period: Duration,
    /// Which period each slot holds (periods since `origin`), and its value.
    slots: Vec<(u64, T)>,
}

impl<T: Default + Clone> Recent<T> {
    pub fn new(origin: Instant, period: Duration, slots: usize) -> Recent<T> {
        assert!(!period.is_zero() && slots > 0, "a window needs a period and a slot");
        Recent { origin, period, slots: vec![(0, T::default()); slots] }
    }

    fn period_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        (since.as_nanos() / self.period.as_nanos()) as u64
    }

    /// The value of the period `now` is in.
    pub fn current(&mut self, now: Instant) -> &mut T {
        let period = self.period_of(now);
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(period % len) as usize];
        if slot.0 != period {
            *slot = (period, T::default());
        }
        &mut slot.1
    }

    /// The values of the periods `now - periods_back ..= now - skip_newest`
    /// (in periods) still held.
    fn held(&self, now: Instant, skip_newest: u64) -> impl Iterator<Item = &T> {
        let newest = self.period_of(now).checked_sub(skip_newest);
        let oldest = self.period_of(now).saturating_sub(self.slots.len() as u64 - 1);
        self.slots.iter().filter(move |(p, _)| newest.is_some_and(|n| *p >= oldest && *p <= n)).map(|(_, v)| v)
    }

    /// Every period of the window, the current one included.
    pub fn window(&self, now: Instant) -> impl Iterator<Item = &T> {
        self.held(now, 0)
    }

    /// The periods of the window that have ended (all but the current one).
    pub fn ended(&self, now: Instant) -> impl Iterator<Item = &T> {
        self.held(now, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_leave_the_window_when_their_period_does() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r: Recent<u64> = Recent::new(t0, Duration::from_secs(1), 3);
        *r.current(at(0)) += 1;
        *r.current(at(1)) += 10;
        *r.current(at(1)) += 10;
        assert_eq!(r.window(at(1)).sum::<u64>(), 21);
        assert_eq!(r.ended(at(1)).sum::<u64>(), 1, "the current second is not over");
        assert_eq!(r.window(at(2)).sum::<u64>(), 21);
        assert_eq!(r.window(at(3)).sum::<u64>(), 20, "second 0 left the 3-second window");
        assert_eq!(r.window(at(9)).sum::<u64>(), 0, "a quiet spell empties it");
        // Second 3 reuses second 0's slot: the old value is dropped.
        *r.current(at(3)) += 100;
        assert_eq!(r.window(at(3)).sum::<u64>(), 120);
    }

    #[test]
    fn nothing_has_ended_in_the_first_period() {
        let t0 = Instant::now();
        let mut r: Recent<u64> = Recent::new(t0, Duration::from_secs(10), 6);
        *r.current(t0) += 1;
        assert_eq!(r.ended(t0).count(), 0);
        assert_eq!(r.window(t0).sum::<u64>(), 1);
    }
}
