//! Per-session offsets that keep sessions from ending together: where in
//! `global.close_spread` a session closes at stop, and its own
//! `timeout.session_max` within ±10 %. Both come from the session id alone
//! (no shared random state to contend on, and a session's offsets can be
//! recomputed), and consecutive ids spread evenly over the range, so even a
//! handful of sessions covers it.

use std::time::Duration;

use crate::ids::SessionId;

/// Share of a session's `timeout.session_max` it may end earlier or later.
const SESSION_MAX_JITTER: f64 = 0.10;

/// Where `id` falls in [0, 1): the fractional part of `id` times the golden
/// ratio (a Weyl sequence), which places any run of consecutive ids nearly
/// evenly over the interval. `salt` decorrelates the two uses.
fn fraction(id: SessionId, salt: u64) -> f64 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let mixed = id.0.wrapping_add(salt).wrapping_mul(GOLDEN);
    // The top 53 bits fit an f64 exactly.
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// How long after the kill at stop the session `id` closes, in
/// [0, `spread`).
pub fn close_delay(id: SessionId, spread: Duration) -> Duration {
    spread.mul_f64(fraction(id, 0))
}

/// The session `id`'s own limit under `timeout.session_max = max`: within
/// ±10 % of it.
pub fn session_max(id: SessionId, max: Duration) -> Duration {
    max.mul_f64(1.0 - SESSION_MAX_JITTER + 2.0 * SESSION_MAX_JITTER * fraction(id, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_delays_of_consecutive_sessions_cover_the_spread_evenly() {
        let spread = Duration::from_secs(1);
        let mut delays: Vec<Duration> = (100..120).map(|id| close_delay(SessionId(id), spread)).collect();
        delays.sort();
        assert!(delays.iter().all(|d| *d < spread), "{delays:?}");
        // Twenty sessions: no gap between neighbours (or at the ends) above
        // a fifth of the spread, where an even spread has a twentieth.
        let mut edges = vec![Duration::ZERO];
        edges.extend(&delays);
        edges.push(spread);
        let widest = edges.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest < spread / 5, "widest gap {widest:?} in {delays:?}");
    }

    #[test]
    fn a_session_max_stays_within_ten_percent() {
        let max = Duration::from_secs(100);
        let limits: Vec<Duration> = (0..1000).map(|id| session_max(SessionId(id), max)).collect();
        assert!(limits.iter().all(|l| *l >= Duration::from_secs(90) && *l <= Duration::from_secs(110)));
        assert!(limits.iter().any(|l| *l < Duration::from_secs(92)), "uses the low end");
        assert!(limits.iter().any(|l| *l > Duration::from_secs(108)), "uses the high end");
    }

    #[test]
    fn offsets_depend_only_on_the_session_id() {
        let spread = Duration::from_millis(1500);
        assert_eq!(close_delay(SessionId(7), spread), close_delay(SessionId(7), spread));
        assert_eq!(close_delay(SessionId(0), spread), Duration::ZERO);
    }
}
