//! A backend's load as its BackendQueue publishes it for routing's
//! spill-over: how many sessions wait, and how fast slots come back.
//!
//! Sessions read it at their start without a message to the BackendQueue:
//! a round trip per session would put every routed session behind the
//! very mailbox that is busy. So the queue publishes, after each message
//! it handled, into atomics that readers load: one writer, many readers,
//! two words that need no agreement with each other (each is an estimate
//! on its own), so nothing needs a lock or a `watch` channel's RwLock and
//! its wake-ups — no reader waits for a change, it reads the latest.
//! The queue publishes only once some rule spills from the backend
//! ([`BackendLoad::watch`]): other backends pay one relaxed load per message.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long the service rate remembers: releases older than a few of these
/// barely count. Short enough to follow a server that slowed down, long
/// enough that one idle instant does not read as "serves nothing".
const RATE_MEMORY: Duration = Duration::from_secs(2);

/// One backend's published load. Shared between its BackendQueue (the
/// only writer) and the frontends whose rules spill from it.
#[derive(Debug)]
pub struct BackendLoad {
    /// Set once a routing rule spills from this backend.
    watched: AtomicBool,
    /// Sessions waiting in its queues (backend queue and servers' own).
    queued: AtomicU32,
    /// Decayed releases per second at `rate_at`, as `f64` bits.
    rate_bits: AtomicU64,
    /// When `rate_bits` was computed, in µs since `epoch`.
    rate_at_us: AtomicU64,
    epoch: Instant,
}

/// What a reader gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReading {
    pub queued: u32,
    pub served_per_second: f64,
}

impl Default for BackendLoad {
    fn default() -> Self {
        BackendLoad::new()
    }
}

impl BackendLoad {
    pub fn new() -> BackendLoad {
        BackendLoad {
            watched: AtomicBool::new(false),
            queued: AtomicU32::new(0),
            rate_bits: AtomicU64::new(0f64.to_bits()),
            rate_at_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A routing rule spills from this backend: the queue publishes from now on.
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Relaxed);
    }

    pub fn watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// The latest published load; the rate decayed to `now`, so a backend
    /// that stopped giving slots back reads as serving nothing.
    pub fn read(&self, now: Instant) -> LoadReading {
        let rate = f64::from_bits(self.rate_bits.load(Ordering::Relaxed));
        let at = self.rate_at_us.load(Ordering::Relaxed);
        LoadReading { queued: self.queued.load(Ordering::Relaxed), served_per_second: decayed(rate, self.since(at, now)) }
    }

    /// The queue's side: `queued` now, and `released` slots that came back
    /// at `now` (0 when the message released none).
    pub fn publish(&self, queued: u32, released: u32, now: Instant) {
        self.queued.store(queued, Ordering::Relaxed);
        if released == 0 {
            return;
        }
        let at = self.rate_at_us.load(Ordering::Relaxed);
        let rate = decayed(f64::from_bits(self.rate_bits.load(Ordering::Relaxed)), self.since(at, now));
        // Each release adds 1/τ: a steady λ per second settles at λ.
        let rate = rate + f64::from(released) / RATE_MEMORY.as_secs_f64();
        self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
        self.rate_at_us.store(now.saturating_duration_since(self.epoch).as_micros() as u64, Ordering::Relaxed);
    }

    fn since(&self, at_us: u64, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch).saturating_sub(Duration::from_micros(at_us))
    }
}

/// An exponentially decaying rate, `elapsed` after it was computed.
fn decayed(rate: f64, elapsed: Duration) -> f64 {
    rate * (-elapsed.as_secs_f64() / RATE_MEMORY.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_release_rate_reads_back_and_decays_when_it_stops() {
        let load = BackendLoad::new();
        let start = Instant::now();
        // 100 releases a second for 20 s (10 ms apart).
        for i in 1..=2000u64 {
            load.publish(7, 1, start + Duration::from_millis(10 * i));
        }
        let end = start + Duration::from_secs(20);
        let reading = load.read(end);
        assert_eq!(reading.queued, 7);
        assert!((reading.served_per_second - 100.0).abs() < 5.0, "{reading:?}");
        let later = load.read(end + Duration::from_secs(20));
        assert!(later.served_per_second < 0.1, "{later:?}");
    }

    #[test]
    fn unwatched_by_default() {
        let load = BackendLoad::default();
        assert!(!load.watched());
        load.watch();
        assert!(load.watched());
        assert_eq!(load.read(Instant::now()), LoadReading { queued: 0, served_per_second: 0.0 });
    }
}
