//! Spill-over: a rule's backend is too busy, so the session goes to the
//! rule's `overflow` backend instead.
//!
//! The decision reads a [`QueueSnapshot`] of the rule's backend — what its
//! BackendQueue last published, read without asking it (a round trip per
//! session would put every routed session behind the very mailbox that is
//! busy) — and compares it with the rule's `spill_when` limits. The expected
//! wait is Little's law: a newcomer waits about as long as it takes the
//! backend to serve everyone ahead of it, `queued / service rate`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// `spill_when`: a rule's limits; reaching either one spills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SpillWhen {
    /// Spill when at least this many sessions wait in the backend's queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<u32>,
    /// Spill when a newcomer would wait at least this long.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub expected_wait: Option<Duration>,
}

/// A backend's load as its BackendQueue last published it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSnapshot {
    /// Sessions waiting in its queues (backend queue and servers' own).
    pub queued: u32,
    /// Slots given back per second, recently: how fast it serves.
    pub served_per_second: f64,
}

impl QueueSnapshot {
    /// Little's law: the time to serve the sessions ahead of a newcomer.
    /// `None` when some wait but none was served lately: no estimate, and
    /// certainly not a short wait.
    pub fn expected_wait(&self) -> Option<Duration> {
        if self.queued == 0 {
            return Some(Duration::ZERO);
        }
        let seconds = f64::from(self.queued) / self.served_per_second;
        (seconds.is_finite() && seconds >= 0.0).then(|| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
    }
}

/// Why a session spilled, for its access record and the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillReason {
    QueueLength,
    ExpectedWait,
}

impl SpillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SpillReason::QueueLength => "queue_length",
            SpillReason::ExpectedWait => "expected_wait",
        }
    }
}

impl fmt::Display for SpillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SpillWhen {
    /// Whether a session should spill from a backend in this state, and why.
    pub fn reason(&self, load: &QueueSnapshot) -> Option<SpillReason> {
        if self.queue_length.is_some_and(|limit| load.queued >= limit) {
            return Some(SpillReason::QueueLength);
        }
        let limit = self.expected_wait?;
        match load.expected_wait() {
            Some(wait) if wait < limit => None,
            _ => Some(SpillReason::ExpectedWait),
        }
    }

    /// True when no limit is set (such a rule never spills).
    pub fn is_empty(&self) -> bool {
        self.queue_length.is_none() && self.expected_wait.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(queued: u32, served_per_second: f64) -> QueueSnapshot {
        QueueSnapshot { queued, served_per_second }
    }

    #[test]
    fn queue_length_spills_at_the_limit() {
        let when = SpillWhen { queue_length: Some(3), expected_wait: None };
        assert_eq!(when.reason(&load(2, 0.0)), None);
        assert_eq!(when.reason(&load(3, 100.0)), Some(SpillReason::QueueLength));
    }

    #[test]
    fn expected_wait_is_queue_over_service_rate() {
        let when = SpillWhen { queue_length: None, expected_wait: Some(Duration::from_millis(200)) };
        // 10 waiting, 100 served a second: 100 ms.
        assert_eq!(load(10, 100.0).expected_wait(), Some(Duration::from_millis(100)));
        assert_eq!(when.reason(&load(10, 100.0)), None);
        // 30 waiting: 300 ms.
        assert_eq!(when.reason(&load(30, 100.0)), Some(SpillReason::ExpectedWait));
        // Some wait, nothing served lately: unknown, so not short.
        assert_eq!(when.reason(&load(1, 0.0)), Some(SpillReason::ExpectedWait));
        // Nobody waits: no wait, whatever the rate.
        assert_eq!(when.reason(&load(0, 0.0)), None);
    }

    #[test]
    fn no_limit_never_spills() {
        assert_eq!(SpillWhen::default().reason(&load(u32::MAX, 0.0)), None);
        assert!(SpillWhen::default().is_empty());
    }
}
