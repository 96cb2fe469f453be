//! Ended sessions per second over the last ten whole seconds (the second
//! under way is left out: counting it would show a dip at the start of
//! every second).

use std::time::{Duration, Instant};

use super::recent::Recent;

/// Whole seconds the rate is averaged over.
pub const RATE_SECONDS: u64 = 10;

#[derive(Debug, Clone)]
pub struct SessionRate {
    /// Sessions per second: the one under way and the ten before.
    seconds: Recent<u64>,
}

impl SessionRate {
    pub fn new(origin: Instant) -> SessionRate {
        SessionRate { seconds: Recent::new(origin, Duration::from_secs(1), RATE_SECONDS as usize + 1) }
    }

    pub fn count(&mut self, now: Instant) {
        *self.seconds.current(now) += 1;
    }

    /// Sessions per second over the ten whole seconds before `now`.
    pub fn per_second(&self, now: Instant) -> f64 {
        self.seconds.ended(now).sum::<u64>() as f64 / RATE_SECONDS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_averages_the_last_ten_whole_seconds() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = SessionRate::new(t0);
        for s in 0..10 {
            for _ in 0..5 {
                r.count(at(s * 1000 + 500));
            }
        }
        r.count(at(10_100));
        assert_eq!(r.per_second(at(10_200)), 5.0, "the second under way does not count yet");
        assert_eq!(r.per_second(at(11_000)), 4.6, "second 0 left, second 10 came in");
        assert_eq!(r.per_second(at(30_000)), 0.0);
    }
}
