//! How long a backend's sessions waited for their first slot: since start
//! (for `/metrics`, whose histograms are cumulative) and over the last
//! minute (for `/stats`, which people read to see what is happening now).

use std::time::{Duration, Instant};

use super::recent::Recent;
use super::wait_histogram::WaitHistogram;

/// The recent window: the current 10 s and the five before, so a reading
/// covers the last 50 to 60 s.
pub const RECENT_PERIOD: Duration = Duration::from_secs(10);
pub const RECENT_PERIODS: usize = 6;

/// One backend's queue waits.
#[derive(Debug, Clone)]
pub struct QueueWaits {
    pub since_start: WaitHistogram,
    recent: Recent<WaitHistogram>,
}

impl QueueWaits {
    pub fn new(origin: Instant) -> QueueWaits {
        QueueWaits { since_start: WaitHistogram::default(), recent: Recent::new(origin, RECENT_PERIOD, RECENT_PERIODS) }
    }

    pub fn record(&mut self, wait: Duration, now: Instant) {
        self.since_start.record(wait);
        self.recent.current(now).record(wait);
    }

    /// The waits recorded in the last minute.
    pub fn recent(&self, now: Instant) -> WaitHistogram {
        let mut all = WaitHistogram::default();
        for period in self.recent.window(now) {
            all.merge(period);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_waits_are_those_of_the_last_minute_and_the_total_keeps_all() {
        let t0 = Instant::now();
        let mut w = QueueWaits::new(t0);
        w.record(Duration::from_millis(4000), t0);
        w.record(Duration::from_millis(20), t0 + Duration::from_secs(30));
        let at_50s = t0 + Duration::from_secs(50);
        assert_eq!(w.recent(at_50s).count(), 2);
        let at_65s = t0 + Duration::from_secs(65);
        assert_eq!(w.recent(at_65s).summary().max, 20, "the 4 s wait is over a minute old");
        assert_eq!(w.since_start.count(), 2);
    }
}
