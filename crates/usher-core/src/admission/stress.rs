//! Stress mode per frontend, Postfix style: a frontend enters stress when it
//! hits a limit (reaching it counts, as does a resource shortage) and stays in
//! it until it has gone `cooldown` without hitting one. Sessions accepted
//! while in stress get the frontend's stress overrides; earlier ones keep
//! theirs.

use std::time::Duration;

use tokio::time::Instant;

use crate::ids::FrontendId;

/// A change of stress state, to be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StressChange {
    Entered(FrontendId),
    Left(FrontendId),
}

#[derive(Debug)]
pub struct StressState {
    /// Per frontend: its cooldown (`None` = stress mode disabled) and, while
    /// in stress, the last hit.
    frontends: Vec<(Option<Duration>, Option<Instant>)>,
}

impl StressState {
    pub fn new(cooldowns: &[Option<Duration>]) -> StressState {
        StressState { frontends: cooldowns.iter().map(|c| (*c, None)).collect() }
    }

    /// A reload: cooldowns by frontend id (new frontends come after).
    pub fn reconfigure(&mut self, cooldowns: &[Option<Duration>]) {
        for (i, c) in cooldowns.iter().enumerate() {
            match self.frontends.get_mut(i) {
                Some((cooldown, last)) => {
                    *cooldown = *c;
                    if c.is_none() {
                        *last = None;
                    }
                }
                None => self.frontends.push((*c, None)),
            }
        }
    }

    /// A limit was hit on `frontend`.
    pub fn hit(&mut self, frontend: FrontendId, now: Instant) -> Option<StressChange> {
        let (cooldown, last) = &mut self.frontends[frontend.0];
        if cooldown.is_none() {
            return None;
        }
        let entered = last.is_none();
        *last = Some(now);
        entered.then_some(StressChange::Entered(frontend))
    }

    /// Ends stress for frontends whose cooldown passed without a hit.
    pub fn expire(&mut self, now: Instant) -> Vec<StressChange> {
        let mut left = Vec::new();
        for (i, (cooldown, last)) in self.frontends.iter_mut().enumerate() {
            if last.zip(*cooldown).is_some_and(|(at, cooldown)| now.saturating_duration_since(at) >= cooldown) {
                *last = None;
                left.push(StressChange::Left(FrontendId(i)));
            }
        }
        left
    }

    pub fn in_stress(&self, frontend: FrontendId) -> bool {
        self.frontends[frontend.0].1.is_some()
    }

    /// When the earliest stress period may end (for the actor's timer). A
    /// cooldown that ends past what the clock can hold sets no timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.frontends.iter().filter_map(|(cooldown, last)| (*last)?.checked_add((*cooldown)?)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_until_a_full_cooldown_without_hits() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut st = StressState::new(&[Some(s), None]);
        assert_eq!(st.hit(FrontendId(0), t), Some(StressChange::Entered(FrontendId(0))));
        assert_eq!(st.hit(FrontendId(0), t + s / 2), None, "already in stress");
        assert!(st.expire(t + s).is_empty(), "the second hit restarted the cooldown");
        assert!(st.in_stress(FrontendId(0)));
        assert_eq!(st.next_expiry(), Some(t + s / 2 + s));
        assert_eq!(st.expire(t + s / 2 + s), vec![StressChange::Left(FrontendId(0))]);
        assert!(!st.in_stress(FrontendId(0)));
        assert_eq!(st.hit(FrontendId(1), t), None, "stress disabled there");
    }

    #[test]
    fn a_cooldown_the_clock_cannot_hold_sets_no_timer() {
        let t = Instant::now();
        let mut st = StressState::new(&[Some(Duration::MAX), Some(Duration::from_secs(1))]);
        assert_eq!(st.hit(FrontendId(0), t), Some(StressChange::Entered(FrontendId(0))));
        assert_eq!(st.next_expiry(), None);
        assert!(st.expire(t + Duration::from_secs(100 * 365 * 24 * 3600)).is_empty());
        st.hit(FrontendId(1), t);
        assert_eq!(st.next_expiry(), Some(t + Duration::from_secs(1)), "the other frontend still expires");
    }
}
