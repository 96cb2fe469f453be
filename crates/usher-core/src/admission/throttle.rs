//! Throttled warnings, Postfix style: a cause is logged at most once per
//! interval, with the number of occurrences since it was last logged.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct WarningThrottle<C> {
    interval: Duration,
    causes: HashMap<C, (Option<Instant>, u64)>,
}

impl<C: Hash + Eq + Clone> WarningThrottle<C> {
    pub fn new(interval: Duration) -> WarningThrottle<C> {
        WarningThrottle { interval, causes: HashMap::new() }
    }

    /// Records one occurrence; returns `Some(occurrences)` when it is time
    /// to log (first time, or `interval` after the last log line).
    pub fn hit(&mut self, cause: C, now: Instant) -> Option<u64> {
        let (last, count) = self.causes.entry(cause).or_insert((None, 0));
        *count += 1;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.interval => None,
            _ => {
                *last = Some(now);
                Some(std::mem::take(count))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval_with_the_count() {
        let t = Instant::now();
        let mut w = WarningThrottle::new(Duration::from_secs(10));
        assert_eq!(w.hit("fd", t), Some(1));
        for i in 1..=5 {
            assert_eq!(w.hit("fd", t + Duration::from_secs(i)), None);
        }
        assert_eq!(w.hit("other", t), Some(1), "causes are throttled apart");
        assert_eq!(w.hit("fd", t + Duration::from_secs(10)), Some(6));
        assert_eq!(w.hit("fd", t + Duration::from_secs(11)), None);
    }
}
