//! The resolution task: a thread of its own with a one-thread tokio
//! runtime, so resolutions never run on the actor threads or the data
//! plane. It resolves each name when the [`Schedule`] says, several at
//! once, each within `resolvers.timeout`, and reports every outcome; it
//! decides nothing about servers. It follows the plan it is given (the
//! names to resolve, `[resolvers]`) and ends when the plan's sender goes
//! or nobody takes its reports any more.

use std::sync::Arc;

use slog::{error, Logger};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::answer::{Answer, QueryKey};
use super::resolver::Resolver;
use super::schedule::Schedule;
use crate::config::ResolverSettings;

/// What the task resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryPlan {
    pub resolvers: ResolverSettings,
    pub queries: Vec<QueryKey>,
}

/// One resolution's outcome: an answer, or why there is none.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub key: QueryKey,
    pub outcome: Result<Answer, String>,
}

/// Takes each outcome; false when nobody listens any more.
pub type Reporter = Box<dyn Fn(Resolved) -> bool + Send>;

/// Starts the task on a thread named `usher-dns`.
pub fn start(plans: watch::Receiver<DiscoveryPlan>, report: Reporter, log: Logger) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("usher-dns".into()).spawn(move || runtime.block_on(run(plans, report, log)))?;
    Ok(())
}

async fn run(mut plans: watch::Receiver<DiscoveryPlan>, report: Reporter, log: Logger) {
    let mut built_from: Option<ResolverSettings> = None;
    let mut resolver: Result<Arc<Resolver>, String> = Err("not started".to_owned());
    let mut schedule = Schedule::new(plans.borrow().resolvers.resolve_interval);
    let mut in_flight: JoinSet<Resolved> = JoinSet::new();
    loop {
        let plan = plans.borrow_and_update().clone();
        if built_from.as_ref() != Some(&plan.resolvers) {
            resolver = Resolver::new(&plan.resolvers).map(Arc::new);
            if let Err(err) = &resolver {
                error!(log, "resolver cannot start"; "error" => %err);
            }
            built_from = Some(plan.resolvers.clone());
        }
        schedule.track(&plan.queries, plan.resolvers.resolve_interval, Instant::now());
        loop {
            for key in schedule.take_due(Instant::now()) {
                match &resolver {
                    Ok(resolver) => {
                        let resolver = resolver.clone();
                        in_flight.spawn(async move {
                            let outcome = resolver.resolve(&key).await;
                            Resolved { key, outcome }
                        });
                    }
                    Err(err) => {
                        let err = err.clone();
                        schedule.done(&key, None, Instant::now());
                        if !report(Resolved { key, outcome: Err(err) }) {
                            return;
                        }
                    }
                }
            }
            let next = schedule.next_due();
            tokio::select! {
                changed = plans.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                Some(done) = in_flight.join_next() => {
                    // A resolution task cannot panic on what it reads; a
                    // join error is a cancellation at shutdown.
                    let Ok(resolved) = done else { continue };
                    schedule.done(&resolved.key, resolved.outcome.as_ref().ok().map(|a| a.ttl), Instant::now());
                    if !report(resolved) {
                        return;
                    }
                }
                _ = sleep_until(next) => {}
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
