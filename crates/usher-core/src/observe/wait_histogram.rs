//! A distribution of waits in whole milliseconds (the access record's
//! `queue_ms`): a fixed array of counters over log-linear buckets, like
//! HdrHistogram with two bits of precision. Each power of two is cut into
//! four buckets of equal width, so a percentile read back is at most a
//! quarter above the true value; 0 to 4 ms are exact.
//!
//! It is a plain value with one owner (the Stats actor's book): recording is
//! a binary search over [`EDGES_MS`] and one increment, merging is adding
//! arrays. Nothing in it is about queues, so any other wait (a later queue
//! discipline's per-class waits, say) can use it as it is.

use std::time::Duration;

use serde::Serialize;

/// Powers of two the buckets go up to: 2^32 ms is 49.7 days, above the
/// longest `timeout.queue` (30 days). Longer waits count in the last bucket.
const OCTAVES: u32 = 32;
/// Buckets per power of two from 4 ms on.
const SUB_BUCKETS: u64 = 4;
/// 0, 1, 2, 3 and 4 ms, then four per power of two from 2^2 to 2^32.
pub const BUCKETS: usize = 5 + (OCTAVES as usize - 2) * SUB_BUCKETS as usize;

/// The inclusive upper edge of every bucket, in ms: bucket `i` holds the
/// waits in `(EDGES_MS[i - 1], EDGES_MS[i]]` (bucket 0 holds 0 ms). Every
/// power of two is an edge, so cumulative counts at powers of two (the
/// `/metrics` buckets) are exact.
pub const EDGES_MS: [u64; BUCKETS] = edges();

const fn edges() -> [u64; BUCKETS] {
    let mut out = [0; BUCKETS];
    let mut i = 0;
    while i < 5 {
        out[i] = i as u64;
        i += 1;
    }
    let mut octave = 2;
    while octave < OCTAVES {
        let low = 1u64 << octave;
        let step = low / SUB_BUCKETS;
        let mut j = 1;
        while j <= SUB_BUCKETS {
            out[i] = low + j * step;
            i += 1;
            j += 1;
        }
        octave += 1;
    }
    out
}

/// Counts of waits per bucket, with their number, sum and maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitHistogram {
    counts: [u64; BUCKETS],
    count: u64,
    sum_ms: u64,
    max_ms: u64,
}

impl Default for WaitHistogram {
    fn default() -> WaitHistogram {
        WaitHistogram { counts: [0; BUCKETS], count: 0, sum_ms: 0, max_ms: 0 }
    }
}

/// What `/stats` shows of a distribution: percentiles in ms (each the upper
/// edge of its bucket, never above `max`), all 0 when `count` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaitSummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub count: u64,
}

impl WaitHistogram {
    /// Counts one wait, truncated to whole milliseconds as in the access
    /// record.
    pub fn record(&mut self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let bucket = EDGES_MS.partition_point(|&edge| edge < ms).min(BUCKETS - 1);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.max_ms = self.max_ms.max(ms);
    }

    /// Adds the waits of `other`.
    pub fn merge(&mut self, other: &WaitHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// Waits of at most `ms`; exact when `ms` is an edge (any power of two
    /// is), otherwise counted up to the edge below.
    pub fn count_at_most(&self, ms: u64) -> u64 {
        let buckets = EDGES_MS.partition_point(|&edge| edge <= ms);
        self.counts[..buckets].iter().sum()
    }

    /// The wait `q` (0 to 1) of the waits are at most: the upper edge of the
    /// bucket holding the waiter of rank ⌈q·count⌉, capped by the maximum
    /// seen. `None` with no wait counted.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(EDGES_MS[bucket].min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }

    pub fn summary(&self) -> WaitSummary {
        let at = |q| self.percentile(q).unwrap_or(0);
        WaitSummary { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: self.max_ms, count: self.count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(waits_ms: impl IntoIterator<Item = u64>) -> WaitHistogram {
        let mut h = WaitHistogram::default();
        for ms in waits_ms {
            h.record(Duration::from_millis(ms));
        }
        h
    }

    #[test]
    fn edges_rise_by_a_quarter_of_each_power_of_two() {
        assert_eq!(EDGES_MS[..14], [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20]);
        assert!(EDGES_MS.windows(2).all(|w| w[0] < w[1]), "edges strictly rise");
        assert_eq!(EDGES_MS[BUCKETS - 1], 1 << 32);
        for power in 0..=32 {
            assert!(EDGES_MS.contains(&(1 << power)), "2^{power} ms is an edge");
        }
        let thirty_days = 30 * 24 * 3600 * 1000;
        assert!(EDGES_MS[BUCKETS - 1] > thirty_days);
    }

    #[test]
    fn a_wait_counts_in_the_bucket_whose_upper_edge_holds_it() {
        // 16 is the upper edge of (14, 16]; 17 starts (16, 20].
        let h = of([0, 16, 17, 20, 21]);
        assert_eq!(h.count_at_most(0), 1);
        assert_eq!(h.count_at_most(16), 2);
        assert_eq!(h.count_at_most(20), 4);
        assert_eq!(h.count_at_most(u64::MAX), 5);
        assert_eq!((h.count(), h.sum_ms()), (5, 74));
        // Sub-millisecond waits are 0 ms, as in the access record.
        assert_eq!(of([]).count_at_most(0), 0);
        let mut fast = WaitHistogram::default();
        fast.record(Duration::from_micros(900));
        assert_eq!(fast.count_at_most(0), 1);
    }

    #[test]
    fn waits_beyond_the_last_edge_count_in_the_last_bucket() {
        let mut h = WaitHistogram::default();
        h.record(Duration::from_secs(60 * 24 * 3600));
        assert_eq!(h.count_at_most(1 << 32), 1);
        assert_eq!(h.summary().max, 60 * 24 * 3600 * 1000);
    }

    #[test]
    fn percentiles_are_within_a_quarter_above_the_true_value() {
        // 1..=1000 ms: the true p50, p90 and p99 are 500, 900 and 990.
        let h = of(1..=1000);
        let s = h.summary();
        for (got, truth) in [(s.p50, 500), (s.p90, 900), (s.p99, 990)] {
            assert!(got >= truth && got <= truth * 5 / 4, "{got} for {truth}");
        }
        assert_eq!((s.max, s.count), (1000, 1000));
        // The last percentile is never above the largest wait.
        assert_eq!(of([1000]).summary().p99, 1000);
        // Small waits are exact.
        assert_eq!(of([0, 0, 3]).summary(), WaitSummary { p50: 0, p90: 3, p99: 3, max: 3, count: 3 });
        assert_eq!(WaitHistogram::default().summary(), WaitSummary::default());
    }

    #[test]
    fn merging_adds_the_waits_of_both() {
        let mut a = of([1, 2, 300]);
        a.merge(&of([5000]));
        assert_eq!(a, of([1, 2, 300, 5000]));
    }
}
