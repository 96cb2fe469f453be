//! A reload that never holds the actor thread for long, however big the
//! configuration: every actor (and, with one worker, every session) shares
//! that thread, so a reload of 10 000 servers done in one handler stalled
//! every session in flight for as long as it took.
//!
//! The Topology applies a reload, a run-time change or a new DNS answer as
//! an *atomic* actor future: its own mailbox waits until the apply is done
//! (no other change can interleave, as before), while every other actor
//! keeps running:
//! 1. re-reading the configuration files, expanding the servers from DNS
//!    and planning run on a thread of their own at the lowest priority
//!    ([`plan_thread`]), from an owned snapshot of what runs (shared
//!    settings, taken [`SNAPSHOT_SERVERS`] servers at a time);
//! 2. the new addresses are opened on the actor thread (fallible, before
//!    anything changes: a rejected reload still changes nothing);
//! 3. the backend steps are committed in slices of about
//!    [`SLICE_SERVERS`] servers, leaving the thread free between slices
//!    for [`PAUSE_PER_HOLD`] times as long as the slice held it (new
//!    Server actors start, retired ones stop and sessions go on in
//!    between);
//! 4. frontends, listeners, the watchdog and the Stats actor take the
//!    new ids in the last slice, as one step.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use actix::fut::{self, wrap_future, ActorFuture, ActorFutureExt, LocalBoxActorFuture};
use actix::Context;

use super::bind;
use super::commit::StagedCommit;
use super::plan_thread;
use super::handle::ControlError;
use super::runtime_topology::Edit;
use super::planner;
use super::planner::RunningSnapshot;
use super::topology::{ConfigLoader, SnapshotInProgress, Topology};
use crate::config::{ReloadError, ReloadSummary, Settings};

/// Servers started, changed or retired per slice of a commit: a slice
/// (with the actors it starts and retires) takes about a millisecond.
pub(super) const SLICE_SERVERS: usize = 128;

/// After each slice, the thread is left to the sessions and the other
/// actors for this many times the slice's hold (at least [`MIN_PAUSE`]):
/// the commit takes at most about a ninth of the thread. A session needs
/// the thread several times in its life (accept, reserve, grant, connect,
/// relay, end); yielding only to the end of the scheduler's tick put one
/// slice in every tick, so each of those steps waited behind one.
///
/// Measured with `usher-bench reload` (10 000 servers reloaded under 16
/// closed-loop clients, quiet machine): p99 of the sessions during the
/// reload against before it, and the apply time, for 500 backends of 20
/// and for one backend of 10 000:
///
/// | between slices | 500 × 20 | 1 × 10 000 |
/// | --- | --- | --- |
/// | a yield only | 5.5 / 2.2 ms, 168 ms | 5.3 / 2.3 ms, 119 ms |
/// | 4 holds | 3.3 / 2.3 ms, 276 ms | 4.0 / 2.0 ms, 192 ms |
/// | 10 holds | 2.8 / 2.0 ms, 395 ms | 2.8 / 2.1 ms, 279 ms |
/// | 8 holds, at least 1 ms | 3.0 / 2.0 ms, 479 ms | 3.0 / 2.0 ms, 370 ms |
/// | 8 holds, at least 2 ms | 2.6 / 2.0 ms, 680 ms | 2.6 / 2.0 ms, 514 ms |
///
/// The fourth row keeps a reload of 10 000 servers under half a
/// second.
const PAUSE_PER_HOLD: u32 = 8;

/// The least pause between slices: a slice's work goes on after its hold
/// (the parts it sent the BackendQueues, the Server actors it started),
/// and that work is not in the hold it measured.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// What an apply in steps held the actor thread for.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ThreadHolds {
    /// The longest single hold: what a session in flight could wait.
    pub longest: Duration,
    /// Every hold together.
    pub total: Duration,
}

impl ThreadHolds {
    fn add(&mut self, hold: Duration) {
        self.longest = self.longest.max(hold);
        self.total += hold;
    }
}

pub(super) type Applied = Result<(ReloadSummary, ThreadHolds), ReloadError>;

type Applying = LocalBoxActorFuture<Topology, Applied>;

impl Topology {
    /// Re-reads the configuration with `loader` off the actor thread, then
    /// applies it in steps. The loader comes back to the Topology whatever
    /// happens (a panicking loader is a failed reload, not a lost loader).
    pub(super) fn reload_in_steps(&mut self, loader: ConfigLoader) -> Applying {
        let read = plan_thread::off_the_actors_thread(move || {
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&loader));
            (loader, read)
        });
        wrap_future(read)
            .then(|joined, topology: &mut Topology, _| {
                let (loader, read) = joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                topology.loader = Some(loader);
                match read {
                    Ok(Ok(settings)) => topology.apply_in_steps(Arc::new(settings)),
                    Ok(Err(errors)) => fut::ready(Err(ReloadError::Config(errors))).boxed_local(),
                    Err(panic) => {
                        fut::ready(Err(ReloadError::LoaderPanicked(panic_message(&panic).to_owned()))).boxed_local()
                    }
                }
            })
            .boxed_local()
    }

    /// Applies the result of `edit` (a run-time change) to the declared
    /// settings in force: the edit copies them, so it runs off the actor
    /// thread too.
    pub(super) fn amend_in_steps(&mut self, edit: Edit) -> LocalBoxActorFuture<Topology, Result<Applied, ControlError>> {
        let declared = self.declared.clone();
        wrap_future(plan_thread::off_the_actors_thread(move || edit(&declared)))
            .then(|joined, topology: &mut Topology, _| {
                match joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                    Ok(new) => topology.apply_in_steps(Arc::new(new)).map(|applied, _, _| Ok(applied)).boxed_local(),
                    Err(err) => fut::ready(Err(err)).boxed_local(),
                }
            })
            .boxed_local()
    }

    /// Takes a snapshot of what runs in parts, plans going to `declared`
    /// off the actor thread, opens its new addresses, then commits it
    /// slice by slice.
    pub(super) fn apply_in_steps(&mut self, declared: Arc<Settings>) -> Applying {
        SnapshotInParts { taking: None, holds: ThreadHolds::default(), yielding: None }
            .then(move |(snapshot, holds), topology: &mut Topology, _| topology.plan_and_commit(snapshot, holds, declared))
            .boxed_local()
    }

    fn plan_and_commit(&mut self, snapshot: RunningSnapshot, mut holds: ThreadHolds, declared: Arc<Settings>) -> Applying {
        // Taken for the plan's thread and given back before anything else
        // runs on this actor: its mailbox waits for the whole apply.
        let mut resolutions = std::mem::take(&mut self.resolutions);
        let plan = plan_thread::off_the_actors_thread(move || {
            let expanded = resolutions.expand(&declared).settings;
            let plan = planner::plan(&snapshot.view(), expanded);
            let changes = plan.changes_before_listeners();
            // The old settings are dropped here too, not on the actor thread.
            drop(snapshot);
            (resolutions, declared, plan, changes)
        });
        wrap_future(plan)
            .then(move |joined, topology: &mut Topology, _| {
                let began = Instant::now();
                // A panic while planning is a bug: it ends the actor thread
                // as it did when the plan ran on it.
                let (resolutions, declared, plan, changes) =
                    joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                topology.resolutions = resolutions;
                let opened = match bind::open_listeners(&plan.listeners.open, HashMap::new()) {
                    Ok(opened) => opened,
                    Err(err) => return fut::ready(Err(err)).boxed_local(),
                };
                let staged = StagedCommit::new(plan, opened, Some(changes));
                holds.add(began.elapsed());
                commit_in_slices(staged, declared, holds)
            })
            .boxed_local()
    }
}

/// Servers taken into the snapshot of what runs per part: about 0.1-0.2
/// ms of the actor thread when their settings are out of the cache.
const SNAPSHOT_SERVERS: usize = 1_024;

/// The snapshot of what runs, taken [`SNAPSHOT_SERVERS`] at a time with a
/// yield between parts: taken at once, 10 000 servers held the actor
/// thread 1.5-2.2 ms, and the sessions that arrived meanwhile were the
/// slowest of the whole reload.
struct SnapshotInParts {
    taking: Option<SnapshotInProgress>,
    holds: ThreadHolds,
    /// The yield after a part, while it lasts.
    yielding: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl ActorFuture<Topology> for SnapshotInParts {
    type Output = (RunningSnapshot, ThreadHolds);

    fn poll(
        self: Pin<&mut Self>,
        topology: &mut Topology,
        _: &mut Context<Topology>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(yielding) = &mut this.yielding {
                ready!(yielding.as_mut().poll(task));
                this.yielding = None;
            }
            let began = Instant::now();
            let taking = this.taking.get_or_insert_with(|| topology.begin_snapshot());
            let done = topology.continue_snapshot(taking, SNAPSHOT_SERVERS);
            this.holds.add(began.elapsed());
            if done {
                let snapshot = this.taking.take().expect("taken above").snapshot;
                return Poll::Ready((snapshot, this.holds));
            }
            this.yielding = Some(yield_to_the_sessions());
        }
    }
}

/// Commits one slice, leaves the thread free for a while, and so on until
/// the last one.
fn commit_in_slices(staged: StagedCommit, declared: Arc<Settings>, holds: ThreadHolds) -> Applying {
    SlicedCommit { staged: Some((staged, declared)), holds, pause: Pause::Yield(yield_to_the_sessions()) }.boxed_local()
}

/// The commit as one future that loops: slice, pause, slice. Chaining a
/// future per slice nested one more level each time, so every poll walked
/// all the slices before it and a configuration of a million servers
/// (8 000 slices) would overflow the actor thread's stack.
struct SlicedCommit {
    /// What is left to commit, and the settings it ends on; taken by the
    /// last slice.
    staged: Option<(StagedCommit, Arc<Settings>)>,
    holds: ThreadHolds,
    pause: Pause,
}

/// What comes before the next slice.
enum Pause {
    /// Before the first slice: the end of the plan's own hold.
    Yield(Pin<Box<dyn Future<Output = ()>>>),
    /// After a slice: a share of the thread for everything else.
    Sleep(Pin<Box<tokio::time::Sleep>>),
}

impl ActorFuture<Topology> for SlicedCommit {
    type Output = Applied;

    fn poll(
        self: Pin<&mut Self>,
        topology: &mut Topology,
        _: &mut Context<Topology>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<Applied> {
        let this = self.get_mut();
        loop {
            match &mut this.pause {
                Pause::Yield(yielding) => ready!(yielding.as_mut().poll(task)),
                Pause::Sleep(sleep) => ready!(sleep.as_mut().poll(task)),
            }
            let began = Instant::now();
            let (staged, _) = this.staged.as_mut().expect("a sliced commit polled after its end");
            if !topology.commit_slice(staged, SLICE_SERVERS) {
                let hold = began.elapsed();
                this.holds.add(hold);
                let until = tokio::time::Instant::now() + pause_after(hold);
                match &mut this.pause {
                    Pause::Sleep(sleep) => sleep.as_mut().reset(until),
                    Pause::Yield(_) => this.pause = Pause::Sleep(Box::pin(tokio::time::sleep_until(until))),
                }
                continue;
            }
            let (staged, declared) = this.staged.take().expect("checked above");
            let summary = topology.finish_commit(staged);
            topology.adopt_declared(declared);
            this.holds.add(began.elapsed());
            return Poll::Ready(Ok((summary, this.holds)));
        }
    }
}

/// A yield that lets the sessions in: tokio's `yield_now` wakes the task
/// only after the runtime has polled its I/O driver. A future that wakes
/// itself at once is polled again before that (the runtime polls the
/// driver every 61 tasks), so its parts ran back to back, 4 ms in a row
/// with 10 000 servers, while the sessions' reads waited (`perf record`).
fn yield_to_the_sessions() -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(tokio::task::yield_now())
}

/// How long the thread is left free after a slice that held it for `hold`.
fn pause_after(hold: Duration) -> Duration {
    (hold * PAUSE_PER_HOLD).max(MIN_PAUSE)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice is followed by eight times its hold, and never by less than
    /// the floor: the commit takes at most about a ninth of the thread.
    #[test]
    fn a_slice_leaves_the_thread_free_for_eight_times_its_hold() {
        assert_eq!(pause_after(Duration::from_micros(500)), Duration::from_millis(4));
        assert_eq!(pause_after(Duration::from_micros(50)), MIN_PAUSE);
        assert_eq!(pause_after(Duration::ZERO), MIN_PAUSE);
    }
}
