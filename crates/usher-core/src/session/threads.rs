//! Which data-plane thread a new session runs on.
//!
//! With `global.workers = N ≥ 2` the data plane is N threads: the actors'
//! thread and a pool of N − 1 (`DataPlane`, `broker.rs`). A session on the
//! actors' thread reaches its BackendQueue, Server, watchdog and Stats
//! with same-thread wake-ups. One on the pool wakes the actors' thread for
//! its `Reserve` and for its end, and on shared cores that thread then
//! preempts a pool thread. When the pool alone ran sessions, N workers
//! were N + 1 busy threads on N cores: on 2 cores (the `scale` case,
//! `first`, 2 servers) 2.4 context switches per session against 0.3 with
//! the share, and 82–97 µs of CPU per session against 68 (HAProxy's 67–69
//! with `nbthread 2`).
//!
//! A new session goes to the actors' thread while that thread holds less
//! than one thread's share of the process's live sessions, else to the
//! pool, whose threads share theirs by work stealing. Counting live
//! sessions rather than taking turns keeps the share when sessions on one
//! side last longer — and a busy actors' thread, whose sessions then end
//! later, takes fewer new ones.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

use crate::admission::{GaugeTicket, SessionGauge};

/// Spawns sessions on the data plane; every session is tracked, so that
/// shutdown waits for it wherever it runs.
#[derive(Clone)]
pub struct SessionThreads {
    tracker: TaskTracker,
    pool: Handle,
    actors: Option<ActorsShare>,
}

/// The actors' thread's part of the sessions.
#[derive(Clone)]
struct ActorsShare {
    thread: Handle,
    /// Live sessions on the actors' thread.
    live: Arc<SessionGauge>,
    /// Live sessions of the process (every thread).
    process: Arc<SessionGauge>,
    /// Data-plane threads, the actors' included.
    threads: u64,
}

impl SessionThreads {
    /// Every session on `pool` (with one worker, the actors' thread itself).
    pub fn on(tracker: TaskTracker, pool: Handle) -> SessionThreads {
        SessionThreads { tracker, pool, actors: None }
    }

    /// The actors' thread (`thread`) takes its share of the sessions of
    /// the process (`process`): one of `threads`, the pool's included.
    pub fn shared_with_actors(self, thread: Handle, threads: usize, process: Arc<SessionGauge>) -> SessionThreads {
        let share = ActorsShare { thread, live: Arc::default(), process, threads: threads.max(1) as u64 };
        SessionThreads { actors: Some(share), ..self }
    }

    /// Spawns the session `start` makes; it gets a ticket that counts it on
    /// the actors' thread when it runs there, to keep while it lives.
    pub(crate) fn spawn<F>(&self, start: impl FnOnce(Option<GaugeTicket>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.actors {
            Some(share) if share.wants_one() => {
                self.tracker.spawn_on(start(Some(share.live.enter())), &share.thread);
            }
            _ => {
                self.tracker.spawn_on(start(None), &self.pool);
            }
        }
    }
}

impl ActorsShare {
    /// Below one thread's share of the live sessions (the new session is
    /// already counted in `process`).
    fn wants_one(&self) -> bool {
        u64::from(self.live.current()) * self.threads < u64::from(self.process.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two threads: the actors' thread takes every other session while all
    /// live, and after its sessions ended, the new ones until it has its
    /// half again.
    #[test]
    fn the_actors_thread_takes_its_share_of_the_live_sessions() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let process = Arc::new(SessionGauge::default());
        let threads = SessionThreads::on(TaskTracker::new(), runtime.handle().clone()).shared_with_actors(
            runtime.handle().clone(),
            2,
            process.clone(),
        );
        let mut held = Vec::new();
        let mut placed = Vec::new();
        let admit = |held: &mut Vec<(GaugeTicket, Option<GaugeTicket>)>, placed: &mut Vec<bool>| {
            let live = process.enter();
            let mut ticket = None;
            threads.spawn(|t| {
                ticket = t;
                async {}
            });
            placed.push(ticket.is_some());
            held.push((live, ticket));
        };
        for _ in 0..6 {
            admit(&mut held, &mut placed);
        }
        assert_eq!(placed, [true, false, true, false, true, false]);
        // The actors' thread's three sessions end: it takes new ones until
        // it holds half of the live sessions again.
        held.retain(|(_, on_actors)| on_actors.is_none());
        placed.clear();
        for _ in 0..5 {
            admit(&mut held, &mut placed);
        }
        assert_eq!(placed, [true, true, true, true, false]);
    }
}
