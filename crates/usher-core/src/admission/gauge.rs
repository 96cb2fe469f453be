//! Live-session gauges, counted where sessions are admitted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Live sessions of a scope (the process, a frontend, a listener) and the
/// most there ever were, counted by the accept loop: a [`GaugeTicket`] per
/// accepted session, dropped when the session ends. Lock-free: the data
/// plane only does two atomic operations per session and gauge.
#[derive(Debug, Default)]
pub struct SessionGauge {
    current: AtomicU32,
    max: AtomicU32,
}

impl SessionGauge {
    /// One more live session until the ticket is dropped.
    pub fn enter(self: &Arc<Self>) -> GaugeTicket {
        let now = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        GaugeTicket(self.clone())
    }

    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }
}

/// A live session in a [`SessionGauge`].
#[derive(Debug)]
pub struct GaugeTicket(Arc<SessionGauge>);

impl Drop for GaugeTicket {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_keep_current_and_peak() {
        let g = Arc::new(SessionGauge::default());
        let a = g.enter();
        let b = g.enter();
        drop(a);
        let _c = g.enter();
        assert_eq!((g.current(), g.max()), (2, 2));
        drop(b);
        assert_eq!((g.current(), g.max()), (1, 2));
    }
}
