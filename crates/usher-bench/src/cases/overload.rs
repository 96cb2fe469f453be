//! `overload`: open-loop arrivals at 0.8× the servers' capacity, then 1.5×
//! for a while, then 0.8× again, through usher with each queue discipline
//! (`fifo`, `codel`, `adaptive_lifo`) and through HAProxy (FIFO), with the
//! same maxconn and queue timeout. Clients stay connected however long
//! they wait; each has a patience, and a session seated after it counts as
//! served too late (work the server did for nobody). Per proxy: goodput
//! (sessions of the overload phase served within their patience, per
//! second), the share of served sessions that were late, p50/p99 wait of
//! the sessions served during the overload, the share refused, and the
//! time after the overload ends until every arrival waits less than twice
//! CoDel's target again. Not part of `all`: one run lasts a minute.

use std::time::Duration;

use super::{Harness, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::load::{self, Arrival, ArrivalEnd, Payload, Phase};
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

/// Each server session takes this long, so capacity is maxconn / SERVICE.
const SERVICE: Duration = Duration::from_millis(50);
const SERVER_MAXCONN: u32 = 10;
/// The clients' patience: a session seated later is served too late.
const PATIENCE: Duration = Duration::from_secs(2);
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// usher's `queue.codel.target` default: recovered once waits are under twice it.
const CODEL_TARGET: Duration = Duration::from_millis(50);
/// usher's `queue.codel.interval` default: the overload's onset, before a
/// standing queue can be told from a burst; the steady p99 leaves it out.
const CODEL_INTERVAL: Duration = Duration::from_millis(500);
const REQUEST: usize = 64;
const REPLY: usize = 64;

/// The three phases: (share of capacity, seconds, quick seconds).
const PHASES: [(f64, u64, u64); 3] = [(0.8, 10, 1), (1.5, 30, 3), (0.8, 20, 2)];

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    let capacity = f64::from(SERVER_MAXCONN) / SERVICE.as_secs_f64();
    let phases: Vec<Phase> = PHASES
        .iter()
        .map(|&(share, secs, quick)| Phase {
            rate: capacity * share,
            duration: Duration::from_secs(if h.opts.quick { quick } else { secs }),
        })
        .collect();
    let title = format!(
        "overload: 1 server, maxconn {SERVER_MAXCONN}, {} ms per session ({capacity:.0}/s); open-loop arrivals at \
         0.8× for {:?}, 1.5× for {:?}, 0.8× for {:?}; patience {PATIENCE:?}, queue timeout {QUEUE_TIMEOUT:?}; {}",
        SERVICE.as_millis(),
        phases[0].duration,
        phases[1].duration,
        phases[2].duration,
        h.describe(&p)
    );
    let metrics = vec![
        Metric::higher("goodput/s", 1),
        Metric::lower("late %", 1),
        Metric::lower("p50 wait ms", 1),
        Metric::lower("p99 wait ms", 1),
        Metric::lower("p99 steady ms", 1),
        Metric::lower("refused %", 1),
        Metric::lower("recovery s", 2),
        Metric::zero("failed"),
        Metric::lower("peak/server", 0),
    ];
    let mut proxies = vec![ProxyKind::Usher, ProxyKind::UsherCodel, ProxyKind::UsherLifo];
    proxies.extend(h.only(&[ProxyKind::Haproxy]));
    let result = h.alternate("overload", title, metrics, proxies, |kind| {
        let rt = h.load_runtime(&p)?;
        let behavior = Behavior::Slow { request: REQUEST, reply: REPLY, service: SERVICE };
        let backend = Backend::start(rt.handle(), behavior)?;
        let proxy = h.start_proxy(kind, &[backend.addr], &h.tune(&p, SERVER_MAXCONN, QUEUE_TIMEOUT))?;
        let limit = QUEUE_TIMEOUT * 2;
        let arrivals = rt.block_on(load::open_loop(proxy.addr, &phases, Payload::Filler.bytes(REQUEST), REPLY, limit));
        let figures = Figures::of(&arrivals, phases[0].duration, phases[1].duration);
        Ok(figures.values(backend.peak()))
    });
    vec![result]
}

/// What one run's arrivals come to.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    goodput: f64,
    late_share: f64,
    p50_wait_ms: f64,
    p99_wait_ms: f64,
    /// The p99 of sessions that arrived once the overload had lasted one
    /// CoDel interval.
    p99_steady_ms: f64,
    refused_share: f64,
    recovery_s: f64,
    failed: u64,
}

impl Figures {
    /// `calm` is the first phase's length, `overload` the second's.
    fn of(arrivals: &[Arrival], calm: Duration, overload: Duration) -> Figures {
        let wait = |took: Duration| took.saturating_sub(SERVICE);
        // The waits of the served sessions that arrived from `from` until
        // `until`, sorted.
        let waits = |from: Duration, until: Duration| {
            let mut waits: Vec<Duration> = arrivals
                .iter()
                .filter(|a| a.at >= from && a.at < until)
                .filter_map(|a| if let ArrivalEnd::Served { took } = a.end { Some(wait(took)) } else { None })
                .collect();
            waits.sort();
            waits
        };
        let served = waits(Duration::ZERO, Duration::MAX);
        let late = served.iter().filter(|w| **w > PATIENCE).count();
        let overload_waits = waits(calm, calm + overload);
        let steady_waits = waits(calm + CODEL_INTERVAL, calm + overload);
        let good = overload_waits.iter().filter(|w| **w <= PATIENCE).count();
        let refused = arrivals.iter().filter(|a| matches!(a.end, ArrivalEnd::Refused { .. })).count();
        let failed = arrivals.iter().filter(|a| a.end == ArrivalEnd::Failed).count() as u64;
        // Recovered from the first arrival after the overload from which on
        // every arrival was served within twice CoDel's target.
        let end = calm + overload;
        let slow_after = arrivals
            .iter()
            .filter(|a| a.at >= end)
            .filter(|a| !matches!(a.end, ArrivalEnd::Served { took } if wait(took) < CODEL_TARGET * 2))
            .map(|a| a.at)
            .max();
        let recovery_s = slow_after.map_or(0.0, |at| (at - end).as_secs_f64());
        let share = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 * 100.0 / of as f64 };
        Figures {
            goodput: good as f64 / overload.as_secs_f64(),
            late_share: share(late, served.len()),
            p50_wait_ms: quantile_ms(&overload_waits, 0.5),
            p99_wait_ms: quantile_ms(&overload_waits, 0.99),
            p99_steady_ms: quantile_ms(&steady_waits, 0.99),
            refused_share: share(refused, arrivals.len()),
            recovery_s,
            failed,
        }
    }

    fn values(&self, peak: u64) -> Vec<f64> {
        vec![
            self.goodput,
            self.late_share,
            self.p50_wait_ms,
            self.p99_wait_ms,
            self.p99_steady_ms,
            self.refused_share,
            self.recovery_s,
            self.failed as f64,
            peak as f64,
        ]
    }
}

/// The `q` quantile of sorted waits, in ms (0 when there are none).
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(at_ms: u64, wait_ms: u64) -> Arrival {
        Arrival {
            at: Duration::from_millis(at_ms),
            end: ArrivalEnd::Served { took: SERVICE + Duration::from_millis(wait_ms) },
        }
    }

    #[test]
    fn figures_count_goodput_lateness_refusals_and_recovery() {
        let (calm, overload) = (Duration::from_secs(1), Duration::from_secs(2));
        let arrivals = vec![
            served(500, 0),
            served(1_000, 10),    // overload, in time
            served(1_500, 3_000), // overload, late
            Arrival { at: Duration::from_millis(2_000), end: ArrivalEnd::Refused { took: Duration::from_millis(600) } },
            served(3_100, 400), // after: still slow
            served(3_400, 20),  // recovered from here on
            served(3_900, 5),
        ];
        let f = Figures::of(&arrivals, calm, overload);
        assert_eq!(f.goodput, 0.5, "one in-time session over two seconds");
        assert_eq!(f.late_share, 100.0 / 6.0);
        assert_eq!((f.p50_wait_ms, f.p99_wait_ms), (10.0, 3000.0));
        // The arrival at 1 000 ms came within the first interval.
        assert_eq!(f.p99_steady_ms, 3000.0);
        assert_eq!(f.refused_share, 100.0 / 7.0);
        assert!((f.recovery_s - 0.1).abs() < 1e-9, "{}", f.recovery_s);
        assert_eq!(f.failed, 0);
    }
}
