//! `WarningThrottle` and `StressState` (the ResourceWatchdog's warning
//! throttle and per-frontend stress periods) checked against small models,
//! on a fake clock: a base `tokio::time::Instant` advanced by random steps.
//!
//! proptest seeds randomly and saves failing seeds next to this file
//! (`watchdog_throttle_model.proptest-regressions`, replayed first on later
//! runs); set `PROPTEST_CASES` to run more than the 1024 cases per property.

mod common;

use std::time::Duration;

use common::{proptest_config as config, MAX_OPS};
use proptest::prelude::*;
use tokio::time::Instant;
use usher_core::admission::{PauseReason, StressChange, StressState, WarningThrottle};
use usher_core::ids::FrontendId;

/// Warning causes as the watchdog keys them: a reason and whose limit.
const CAUSES: [(PauseReason, usize); 4] =
    [(PauseReason::Global, 0), (PauseReason::Frontend, 0), (PauseReason::Frontend, 1), (PauseReason::Shortage, 2)];

proptest! {
    #![proptest_config(config())]

    /// A cause is logged at most once per interval (its first hit at once),
    /// each log line carries the occurrences since the previous one, and
    /// every occurrence is counted exactly once; causes are independent.
    #[test]
    fn warning_throttle(
        interval_ms in 0u64..=10,
        hits in prop::collection::vec((0usize..CAUSES.len(), 0u64..=6), 0..MAX_OPS),
    ) {
        let base = Instant::now();
        let mut throttle = WarningThrottle::new(Duration::from_millis(interval_ms));
        // Per cause: time of the last log line (ms), hits since, hits logged.
        let mut last_log: [Option<u64>; CAUSES.len()] = [None; CAUSES.len()];
        let mut pending = [0u64; CAUSES.len()];
        let mut logged = [0u64; CAUSES.len()];
        let mut total = [0u64; CAUSES.len()];
        let mut t = 0;
        for (c, dt) in hits {
            t += dt;
            total[c] += 1;
            pending[c] += 1;
            let got = throttle.hit(CAUSES[c], base + Duration::from_millis(t));
            let due = last_log[c].is_none_or(|at| t - at >= interval_ms);
            if due {
                prop_assert_eq!(got, Some(pending[c]), "cause {:?} at {} ms", CAUSES[c], t);
                logged[c] += pending[c];
                pending[c] = 0;
                last_log[c] = Some(t);
            } else {
                prop_assert_eq!(got, None, "cause {:?} at {} ms, last logged at {:?}", CAUSES[c], t, last_log[c]);
            }
        }
        for c in 0..CAUSES.len() {
            prop_assert_eq!(logged[c] + pending[c], total[c]);
        }
    }
}

#[derive(Debug, Clone)]
enum SOp {
    /// `dt_ms` later, a limit is hit on frontend `f`.
    Hit { f: usize, dt_ms: u64 },
    /// `dt_ms` later, the watchdog expires stress periods.
    Expire { dt_ms: u64 },
}

fn stress_op() -> impl Strategy<Value = SOp> {
    prop_oneof![
        (0usize..3, 0u64..=8).prop_map(|(f, dt_ms)| SOp::Hit { f, dt_ms }),
        (0u64..=8).prop_map(|dt_ms| SOp::Expire { dt_ms }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Per frontend: stress is entered on a hit (reported once), and left
    /// only at an `expire` a full cooldown after the last hit; a zero
    /// cooldown disables it; `next_expiry` is the earliest end.
    #[test]
    fn stress_state(
        cooldowns_ms in prop::collection::vec(prop_oneof![1 => Just(0u64), 3 => 1u64..=20], 1..=3),
        ops in prop::collection::vec(stress_op(), 0..MAX_OPS),
    ) {
        let base = Instant::now();
        let n = cooldowns_ms.len();
        // 0 ms is a frontend without stress mode, as the configuration writes it.
        let cooldowns: Vec<Option<Duration>> =
            cooldowns_ms.iter().map(|&ms| (ms > 0).then(|| Duration::from_millis(ms))).collect();
        let mut stress = StressState::new(&cooldowns);
        // Per frontend: while in stress, the time of its last hit (ms).
        let mut last_hit: Vec<Option<u64>> = vec![None; n];
        // Every hit, to check a leave against the whole history.
        let mut hits: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut t = 0;
        for op in ops {
            match op {
                SOp::Hit { f, dt_ms } => {
                    let f = f % n;
                    t += dt_ms;
                    hits[f].push(t);
                    let got = stress.hit(FrontendId(f), base + Duration::from_millis(t));
                    if cooldowns_ms[f] == 0 {
                        prop_assert_eq!(got, None, "frontend {} has stress disabled", f);
                    } else {
                        let expected = last_hit[f].is_none().then_some(StressChange::Entered(FrontendId(f)));
                        prop_assert_eq!(got, expected, "hit on frontend {} at {} ms", f, t);
                        last_hit[f] = Some(t);
                    }
                }
                SOp::Expire { dt_ms } => {
                    t += dt_ms;
                    let got = stress.expire(base + Duration::from_millis(t));
                    let mut expected = Vec::new();
                    for f in 0..n {
                        if last_hit[f].is_some_and(|h| t - h >= cooldowns_ms[f]) {
                            last_hit[f] = None;
                            expected.push(StressChange::Left(FrontendId(f)));
                        }
                    }
                    prop_assert_eq!(&got, &expected, "expire at {} ms", t);
                    for change in got {
                        let StressChange::Left(FrontendId(f)) = change else { unreachable!() };
                        // A full cooldown without a hit.
                        prop_assert!(hits[f].iter().all(|&h| t - h >= cooldowns_ms[f]), "frontend {} left early", f);
                    }
                }
            }
            for (f, last) in last_hit.iter().enumerate() {
                prop_assert_eq!(stress.in_stress(FrontendId(f)), last.is_some(), "frontend {} at {} ms", f, t);
            }
            let next = last_hit.iter().zip(&cooldowns_ms).filter_map(|(h, c)| h.map(|h| h + c)).min();
            prop_assert_eq!(stress.next_expiry(), next.map(|ms| base + Duration::from_millis(ms)));
        }
    }
}
