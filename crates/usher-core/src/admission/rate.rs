//! A token bucket for connection rates (`global.maxconnrate`,
//! `frontends.X.rate_limit`): `rate` new sessions per second, with a burst of
//! one second's worth. Time is passed in.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Sessions per second; 0 = unlimited.
    rate: u32,
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(rate: u32, now: Instant) -> RateLimiter {
        RateLimiter { rate, tokens: f64::from(rate), updated: now }
    }

    /// A reload: a changed rate starts a fresh bucket; the same rate keeps it.
    pub fn reconfigure(&mut self, rate: u32, now: Instant) {
        if rate != self.rate {
            *self = RateLimiter::new(rate, now);
        }
    }

    /// Sessions per second; 0 = unlimited.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        if self.rate == 0 {
            return;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.rate));
        self.updated = now;
    }

    /// Whole sessions allowed now (`u32::MAX` when unlimited).
    pub fn available(&mut self, now: Instant) -> u32 {
        if self.rate == 0 {
            return u32::MAX;
        }
        self.refill(now);
        self.tokens.floor() as u32
    }

    pub fn take(&mut self, n: u32, now: Instant) {
        if self.rate > 0 {
            self.refill(now);
            self.tokens -= f64::from(n);
        }
    }

    /// Unused grants: the sessions never happened.
    pub fn give_back(&mut self, n: u32, now: Instant) {
        if self.rate > 0 {
            self.refill(now);
            self.tokens = (self.tokens + f64::from(n)).min(f64::from(self.rate));
        }
    }

    /// When the next whole token is there.
    pub fn next_token(&self, now: Instant) -> Instant {
        if self.rate == 0 {
            return now;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let tokens = self.tokens + elapsed * f64::from(self.rate);
        if tokens >= 1.0 {
            return now;
        }
        let missing = 1.0 - tokens;
        // Round up to the next millisecond so the wake-up never comes early.
        let wait = Duration::from_secs_f64(missing / f64::from(self.rate));
        now + Duration::from_millis(wait.as_millis() as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_after_the_burst() {
        let t = Instant::now();
        let mut r = RateLimiter::new(50, t);
        assert_eq!(r.available(t), 50);
        r.take(50, t);
        assert_eq!(r.available(t), 0);
        let next = r.next_token(t);
        assert!(next > t && next <= t + Duration::from_millis(21));
        assert_eq!(r.available(t + Duration::from_millis(100)), 5);
        assert_eq!(r.available(t + Duration::from_secs(10)), 50, "burst is capped at one second");
    }
}
