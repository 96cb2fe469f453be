//! What a reached limit leads to: a count in the watchdog's counters, a
//! warning throttled per cause, and stress mode for its frontend. The
//! ResourceWatchdog feeds it the hits of its admission state and logs what
//! it answers.

use std::time::Duration;

use tokio::time::Instant;

use super::core::{LimitHit, PauseReason};
use super::stress::{StressChange, StressState};
use super::throttle::WarningThrottle;
use crate::ids::FrontendId;

/// Counters kept by the watchdog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WatchdogCounters {
    /// Times a count limit (global, frontend, listener) was reached.
    pub limit_reached: u64,
    /// Times a rate limit held a listener back.
    pub rate_limited: u64,
    /// Accepts that failed for lack of fds or memory.
    pub shortages: u64,
}

impl WatchdogCounters {
    fn count(&mut self, reason: PauseReason) {
        match reason {
            PauseReason::Shortage => self.shortages += 1,
            PauseReason::GlobalRate | PauseReason::FrontendRate => self.rate_limited += 1,
            PauseReason::Global | PauseReason::Frontend | PauseReason::Listener => self.limit_reached += 1,
        }
    }
}

/// What one hit leads to, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitEffects {
    /// Time to warn, with the occurrences of this cause since its last
    /// warning.
    pub warn: Option<u64>,
    /// The hit put its frontend in stress mode.
    pub stress_entered: bool,
}

#[derive(Debug)]
pub struct HitBook {
    counters: WatchdogCounters,
    /// Keyed by the reason and whose limit it is ([`LimitHit::owner`]).
    warnings: WarningThrottle<(PauseReason, usize)>,
    stress: StressState,
}

impl HitBook {
    pub fn new(warn_interval: Duration, stress_cooldowns: &[Option<Duration>]) -> HitBook {
        HitBook {
            counters: WatchdogCounters::default(),
            warnings: WarningThrottle::new(warn_interval),
            stress: StressState::new(stress_cooldowns),
        }
    }

    /// Records one hit: counted, throttled, and a hit for stress mode.
    pub fn hit(&mut self, hit: LimitHit, now: Instant) -> HitEffects {
        self.counters.count(hit.reason);
        let warn = self.warnings.hit((hit.reason, hit.owner()), now);
        let stress_entered = matches!(self.stress.hit(hit.frontend, now), Some(StressChange::Entered(_)));
        HitEffects { warn, stress_entered }
    }

    /// Frontends whose stress cooldown passed without a hit leave stress.
    pub fn expire_stress(&mut self, now: Instant) -> Vec<FrontendId> {
        let left = self.stress.expire(now).into_iter();
        left.filter_map(|change| match change {
            StressChange::Left(f) => Some(f),
            StressChange::Entered(_) => None,
        })
        .collect()
    }

    /// A reload: stress cooldowns by frontend id.
    pub fn reconfigure_stress(&mut self, cooldowns: &[Option<Duration>]) {
        self.stress.reconfigure(cooldowns);
    }

    pub fn in_stress(&self, frontend: FrontendId) -> bool {
        self.stress.in_stress(frontend)
    }

    /// When the earliest stress period may end (for the actor's timer).
    pub fn next_stress_expiry(&self) -> Option<Instant> {
        self.stress.next_expiry()
    }

    pub fn counters(&self) -> WatchdogCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ListenerId;

    fn hit(frontend: usize, listener: usize, reason: PauseReason) -> LimitHit {
        LimitHit { frontend: FrontendId(frontend), listener: ListenerId(listener), reason }
    }

    #[test]
    fn hits_are_counted_throttled_per_owner_and_enter_stress() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut book = HitBook::new(Duration::from_secs(10), &[Some(s), None]);
        let first = book.hit(hit(0, 0, PauseReason::Frontend), t);
        assert_eq!(first, HitEffects { warn: Some(1), stress_entered: true });
        let again = book.hit(hit(0, 1, PauseReason::Frontend), t);
        assert_eq!(again, HitEffects { warn: None, stress_entered: false }, "same frontend: throttled");
        let other = book.hit(hit(1, 2, PauseReason::Frontend), t);
        assert_eq!(other, HitEffects { warn: Some(1), stress_entered: false }, "another owner; no stress there");
        book.hit(hit(1, 2, PauseReason::FrontendRate), t);
        book.hit(hit(1, 2, PauseReason::Shortage), t);
        assert_eq!(book.counters(), WatchdogCounters { limit_reached: 3, rate_limited: 1, shortages: 1 });
        assert!(book.in_stress(FrontendId(0)));
        assert_eq!(book.next_stress_expiry(), Some(t + s));
        assert_eq!(book.expire_stress(t + s), vec![FrontendId(0)]);
        assert!(!book.in_stress(FrontendId(0)));
    }

    #[test]
    fn the_owner_is_whose_limit_it_is() {
        assert_eq!(hit(1, 2, PauseReason::Global).owner(), 0);
        assert_eq!(hit(1, 2, PauseReason::GlobalRate).owner(), 0);
        assert_eq!(hit(1, 2, PauseReason::Frontend).owner(), 1);
        assert_eq!(hit(1, 2, PauseReason::FrontendRate).owner(), 1);
        assert_eq!(hit(1, 2, PauseReason::Listener).owner(), 2);
        assert_eq!(hit(1, 2, PauseReason::Shortage).owner(), 2);
    }
}
