//! Session hooks: how an extension takes part in a session's life.
//!
//! A [`SessionHook`] has three methods, each with a default body that does
//! nothing, so a hook writes only the ones it needs:
//! - [`SessionHook::on_accept`]: the client and its frontend are known and
//!   no slot is taken yet: pass, deny (`PR`), or route (backend, queue
//!   priority, hashing key). It answers at once (plain code run in the
//!   session task) or later (a future, e.g. a message to an actor), which
//!   the session bounds by the hook's `timeout`;
//! - [`SessionHook::after_connect`]: the session holds a server connection;
//! - [`SessionHook::on_end`]: the session ended, with its access record.
//!
//! Each hook gets its own [`HookContext`] per session, which carries the
//! hook's per-session state from one call to the next. A hook never sees a
//! slot: whatever it answers, the backend's queue grants slots, so it
//! cannot skip admission, exceed maxconn or release anything.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::access::AccessRecord;
use super::frontend::{BackendTarget, QueuePriority};
use super::termination::Termination;
use crate::config::OnHookTimeout;

/// Code that runs at points of every session of the frontends naming it.
pub trait SessionHook: Send + Sync + 'static {
    /// Before the session takes any slot. The default passes.
    fn on_accept(&self, _session: &mut HookContext) -> Answer {
        Answer::Now(Decision::Pass)
    }

    /// Once connected to its server, before any byte is relayed.
    fn after_connect(&self, _session: &mut HookContext) {}

    /// Once the session ended (`end`) and its access record was written.
    fn on_end(&self, _session: &mut HookContext, _record: &AccessRecord, _end: Termination) {}
}

/// One hook's view of one session.
pub struct HookContext {
    pub session: u64,
    pub client: SocketAddr,
    pub frontend: Arc<str>,
    /// The server it is connected to (from `after_connect` on).
    pub server: Option<Arc<str>>,
    /// The hook's own per-session state: set it in one call, read it in
    /// the next. Boxing a zero-sized value allocates nothing.
    pub state: Option<Box<dyn Any + Send + Sync>>,
}

/// What `on_accept` answers: now, or once its future resolves.
pub enum Answer {
    Now(Decision),
    Later(PendingDecision),
}

/// A decision still to come, bounded by the hook's `timeout`.
pub type PendingDecision = Pin<Box<dyn Future<Output = Result<Decision, HookFailure>> + Send>>;

/// What a hook decides about a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on as configured.
    Pass,
    /// End the session now (`PR`); the reason goes to the debug log.
    Deny { reason: Cow<'static, str> },
    /// Go on with these choices.
    Route(RouteTo),
}

/// What a routing hook chooses; anything left `None` stays as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTo {
    /// A backend by name (any backend of the running configuration).
    pub backend: Option<Arc<str>>,
    /// Queue priority class and offset (lower class first).
    pub priority: Option<QueuePriority>,
    /// The address that hashing balancers (`source`) and per-source queue
    /// caps count the session under, instead of the client's.
    pub pin: Option<IpAddr>,
}

/// A hook could not decide (its actor is gone, it failed): the session
/// ends with `IR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure(pub String);

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HookFailure {}

/// One hook as a frontend runs it: the hook and its `[hooks.NAME]` terms.
#[derive(Clone)]
pub struct ConfiguredHook {
    pub name: Arc<str>,
    pub hook: Arc<dyn SessionHook>,
    pub timeout: Duration,
    pub on_timeout: OnHookTimeout,
    /// Shared by every frontend running this hook, and kept across reloads.
    pub counters: Arc<HookCounters>,
}

/// The hooks one frontend runs, in order, and the backends they may route to.
pub struct FrontendHooks {
    pub hooks: Vec<ConfiguredHook>,
    pub backends: Vec<BackendTarget>,
}

impl FrontendHooks {
    pub(super) fn backend(&self, name: &str) -> Option<&BackendTarget> {
        self.backends.iter().find(|b| &*b.name == name)
    }
}

/// What one hook did, reported in `/stats`.
#[derive(Debug, Default)]
pub struct HookCounters {
    pub timeouts: AtomicU64,
    pub failures: AtomicU64,
    pub denied: AtomicU64,
    pub routed: AtomicU64,
    /// Events an observer's full mailbox could not take.
    pub lost: AtomicU64,
}

/// A reading of [`HookCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HookCountersReport {
    /// Answers that did not come within the hook's `timeout`.
    pub timeouts: u64,
    /// Panics and failed answers: those sessions ended `IR` (or `IC`).
    pub failures: u64,
    pub denied: u64,
    pub routed: u64,
    /// Observers only: events lost to a full mailbox.
    pub lost: u64,
}

impl HookCounters {
    pub fn read(&self) -> HookCountersReport {
        HookCountersReport {
            timeouts: self.timeouts.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            routed: self.routed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
