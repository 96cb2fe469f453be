//! Where a reload's heavy steps run — reading the files, expanding DNS
//! templates, planning: a thread of their own per reload, at the lowest
//! CPU priority (nice 19), so that they take little of the CPU the
//! sessions need.
//!
//! Why the priority: with two cores, a plan of 10 000 servers took one
//! for ~10 ms, and the scheduler moved the actors' thread (which also runs
//! the sessions with one worker) next to another busy thread, where the
//! two waited for each other for the next 100 ms. Measured with
//! `usher-bench reload` (1 × 10 000 servers, open loop, 9 rounds each,
//! alternated): p99 of the sessions during the reload 3.02 ms at nice 0,
//! 1.85 at nice 19 (before the reload 1.30 / 1.33), max 4.67 / 2.86 ms;
//! the apply time did not change (~340 ms). On a saturated machine the
//! plan waits for spare CPU instead of taking it from the sessions.
//!
//! Why the yield: the thread starts at the usual priority and may run
//! before a thread woken on its core just before it (the broker's, as it
//! hands the plan over, or a client's); lowering its own priority does
//! not make it give way, so that thread waited for the next scheduler
//! tick: `perf sched timehist` showed waits of 2.9-3.2 ms while the other
//! core was idle. Once lowered, the plan thread yields. The kernel's idle
//! class (`SCHED_IDLE`) was tried too: with the proxy pinned to a core
//! that a closed loop keeps busy it starved the plan (a reload of 10 000
//! servers applied in 0.6-3.0 s against 0.67-1.18 s at nice 19), for no
//! better p99 (5 rounds each alternated, docs/benchmarks.md).
//!
//! Why a thread of its own, not tokio's blocking pool: an unprivileged
//! thread cannot raise its priority back, so a pool thread lowered once
//! would stay low for whatever runs on it next.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The lowest priority of `setpriority(2)`.
const LOWEST: i32 = 19;

/// Puts the calling thread at nice 19 and lets anything woken meanwhile
/// run first (best effort: otherwise it runs as it was).
fn lower_this_thread() {
    let _ = rustix::process::setpriority_process(None, LOWEST);
    std::thread::yield_now();
}

/// Runs `work` on a new low-priority thread: its result, or its panic.
/// If no thread can be started, `work` runs on tokio's blocking pool at
/// the usual priority instead.
pub(super) fn off_the_actors_thread<T, W>(work: W) -> impl Future<Output = std::thread::Result<T>>
where
    T: Send + 'static,
    W: FnOnce() -> T + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    // Handed over once the thread runs, so that a failed start keeps it.
    let (hand_over, handed) = std::sync::mpsc::channel::<W>();
    let started = std::thread::Builder::new().name("usher-plan".into()).spawn(move || {
        let Ok(work) = handed.recv() else { return };
        lower_this_thread();
        let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
    });
    let run_on_pool = match started {
        Ok(_) => hand_over.send(work).err().map(|unsent| unsent.0),
        Err(_) => Some(work),
    };
    async move {
        match run_on_pool {
            None => result.await.unwrap_or_else(|_| Err(Box::new("the plan thread ended without a result"))),
            Some(work) => actix_rt::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(work)))
                .await
                .unwrap_or_else(|_| Err(Box::new("the plan was cancelled"))),
        }
    }
}

/// Drops `value` on tokio's blocking pool: for what is big enough that
/// freeing it would hold the actors' thread (a whole configuration's
/// settings). Its pool threads are kept, so this costs a queue push, not
/// a thread's start.
pub(super) fn drop_off_the_actors_thread<T: Send + 'static>(value: T) {
    drop(actix_rt::task::spawn_blocking(move || drop(value)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn the_work_runs_at_the_lowest_priority_on_another_thread() {
        let caller = std::thread::current().id();
        let own = rustix::process::getpriority_process(None).expect("getpriority");
        let (thread, nice) = off_the_actors_thread(|| {
            (std::thread::current().id(), rustix::process::getpriority_process(None).expect("getpriority"))
        })
        .await
        .expect("no panic");
        assert_ne!(thread, caller);
        assert_eq!(nice, LOWEST);
        // This thread's own priority is untouched.
        assert_eq!(rustix::process::getpriority_process(None).expect("getpriority"), own);
    }

    #[actix_rt::test]
    async fn a_value_is_dropped_on_another_thread() {
        struct Dropped(std::sync::mpsc::Sender<std::thread::ThreadId>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().id());
            }
        }
        let (tell, heard) = std::sync::mpsc::channel();
        drop_off_the_actors_thread(Dropped(tell));
        let dropped_on = actix_rt::task::spawn_blocking(move || heard.recv_timeout(std::time::Duration::from_secs(30)))
            .await
            .expect("joined")
            .expect("dropped");
        assert_ne!(dropped_on, std::thread::current().id());
    }

    #[actix_rt::test]
    async fn a_panic_comes_back_as_an_error() {
        let outcome = off_the_actors_thread(|| -> u8 { panic!("planned to fail") }).await;
        let panic = outcome.expect_err("the panic");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"planned to fail"));
    }
}
