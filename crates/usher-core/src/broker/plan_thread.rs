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
//! Why the long slice: the kernel's scheduler (EEVDF, Linux 6.6 on) lets
//! a thread it has just put on a core run on while a thread of the usual
//! priority wakes there, until a time slice is out, and with 250 ticks a
//! second it may look again only at the next tick. Even at nice 19 the
//! plan thread held the broker's thread off that way: `perf sched` showed
//! it waiting 1.6-3.9 ms behind the plan in 4 reloads of 16 (500 × 20
//! servers, open loop, the broker pinned to the plan's core), 0.03 ms in
//! the others. A thread woken with a shorter slice than the running one's
//! takes the core at once (Linux 6.12 on), so the plan asks for the
//! longest slice there is; its share of a busy core (nice 19) does not
//! change. What is left: a thread that slept just after running ahead of
//! its share wakes as not yet due, and waits for the next tick all the
//! same; the kernel's trace showed the plan keep the core 2.5-3.7 ms that
//! way in 4 reloads of 20 over 500 backends, none of 10 over one backend
//! of 10 000. Giving way from the plan's own loops
//! (`sched_yield` every 0.2 ms) was tried against it and dropped: each
//! yield pushes the yielding thread's deadline back, and with the broker
//! busy the plan then waited seconds for the core.
//!
//! Why a thread of its own, not tokio's blocking pool: an unprivileged
//! thread cannot raise its priority back, so a pool thread lowered once
//! would stay low for whatever runs on it next.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// The lowest priority of `setpriority(2)`.
const LOWEST: i32 = 19;

/// The time slice the plan thread asks for: the longest the kernel takes.
/// A long slice marks it as batch work, so that a thread woken on its core
/// with the usual slice (the broker's) takes the core at once.
const LONG_SLICE: Duration = Duration::from_millis(100);

/// Puts the calling thread at nice 19 with a long time slice, and lets
/// anything woken meanwhile run first (best effort: otherwise it runs as
/// it was).
fn lower_this_thread() {
    // First on its own: where `sched_setattr` is refused (a seccomp
    // filter), the thread still runs at nice 19.
    let _ = rustix::process::setpriority_process(None, LOWEST);
    let _ = ask_for_a_long_slice();
    std::thread::yield_now();
}

/// Nice 19 and `LONG_SLICE` through `sched_setattr(2)`, which neither std
/// nor rustix wraps. Kernels before 6.12 ignore the slice of a thread in
/// the usual class, and the call still sets nice 19.
#[allow(unsafe_code)] // the one system call; nothing else here is unsafe
fn ask_for_a_long_slice() -> std::io::Result<()> {
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: LOWEST,
        sched_priority: 0,
        sched_runtime: LONG_SLICE.as_nanos() as u64,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is a valid `sched_attr` whose `size` is its own; pid 0
    // is the calling thread; flags must be 0.
    let done = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
    run_lowered("usher-plan", move || {
        let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
    });
    async move { result.await.unwrap_or_else(|_| Err(Box::new("the plan ended without a result"))) }
}

/// Drops `value` on a new thread at the plan's priority: for what is big
/// enough that freeing it would hold the actors' thread (a whole
/// configuration's settings). Not on tokio's blocking pool, whose threads
/// run at the usual priority: the kernel's trace showed the pool thread
/// freeing 10 000 servers' settings on the broker's core for 0.3-0.6 ms
/// at the end of every reload, with the sessions waiting behind it. If
/// no thread can be started, the pool drops it.
pub(super) fn drop_off_the_actors_thread<T: Send + 'static>(value: T) {
    run_lowered("usher-drop", move || drop(value));
}

/// Runs `job` on a new thread named `name` once that thread has lowered
/// itself ([`lower_this_thread`]); on tokio's blocking pool, at the usual
/// priority, if no thread can be started. The job is handed over only
/// once the thread runs, so that a failed start keeps it.
fn run_lowered<J: FnOnce() + Send + 'static>(name: &str, job: J) {
    let (hand_over, handed) = std::sync::mpsc::channel::<J>();
    let started = std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Ok(job) = handed.recv() {
            lower_this_thread();
            job();
        }
    });
    let unsent = match started {
        Ok(_) => hand_over.send(job).err().map(|unsent| unsent.0),
        Err(_) => Some(job),
    };
    if let Some(job) = unsent {
        drop(actix_rt::task::spawn_blocking(job));
    }
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

    /// The slice as the scheduler reports it in `/proc/thread-self/sched`
    /// (kernels built with scheduler statistics), in ns.
    fn this_threads_slice() -> Option<u64> {
        let report = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = report.lines().find(|line| line.starts_with("se.slice"))?;
        line.rsplit(':').next()?.trim().parse().ok()
    }

    #[actix_rt::test]
    async fn the_work_asks_for_a_long_slice() {
        let Some(own) = this_threads_slice() else {
            eprintln!("SKIPPED: this kernel does not report a thread's slice (/proc/thread-self/sched)");
            return;
        };
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("the kernel's release");
        let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
        if (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) < (6, 12) {
            eprintln!("SKIPPED: Linux {} (before 6.12) keeps the usual slice of a thread in the usual class", release.trim());
            return;
        }
        let planned = off_the_actors_thread(this_threads_slice).await.expect("no panic");
        assert_eq!(planned, Some(LONG_SLICE.as_nanos() as u64));
        // This thread's own slice is untouched.
        assert_eq!(this_threads_slice(), Some(own));
    }

    #[actix_rt::test]
    async fn a_value_is_dropped_on_another_thread_at_the_lowest_priority() {
        struct Dropped(std::sync::mpsc::Sender<(std::thread::ThreadId, i32)>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let nice = rustix::process::getpriority_process(None).expect("getpriority");
                let _ = self.0.send((std::thread::current().id(), nice));
            }
        }
        let (tell, heard) = std::sync::mpsc::channel();
        drop_off_the_actors_thread(Dropped(tell));
        let (dropped_on, nice) =
            actix_rt::task::spawn_blocking(move || heard.recv_timeout(std::time::Duration::from_secs(30)))
                .await
                .expect("joined")
                .expect("dropped");
        assert_ne!(dropped_on, std::thread::current().id());
        // Not at the usual priority, beside the sessions.
        assert_eq!(nice, LOWEST);
    }

    #[actix_rt::test]
    async fn a_panic_comes_back_as_an_error() {
        let outcome = off_the_actors_thread(|| -> u8 { panic!("planned to fail") }).await;
        let panic = outcome.expect_err("the panic");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"planned to fail"));
    }
}
