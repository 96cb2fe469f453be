//! Running a frontend's session hooks: every hook's `on_accept`, in order,
//! before the session takes a place in a queue; `after_connect` once it
//! holds a server connection; `on_end` with its finished record, just
//! before the record is written.
//!
//! A frontend without hooks skips all of it (`FrontendContext::hooks` is
//! `None`): its sessions pay one branch per phase and allocate nothing.
//! A hook that panics or fails ends its session (`IR` before a slot, `IC`
//! after connecting) with an error record; the broker goes on. Whatever a
//! hook answers, slots are still granted by the backend's queue only.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use slog::{debug, error, warn};
use tokio::time::timeout;

use super::access::AccessRecord;
use super::frontend::FrontendContext;
use super::hook::{Answer, ConfiguredHook, Decision, HookContext, HookCounters, PendingDecision, RouteTo};
use super::{Session, Termination};
use crate::config::OnHookTimeout;

/// The hooks' side of one session: each hook's context, by hook.
pub(super) struct HookedSession {
    contexts: Vec<HookContext>,
    /// A hook chose the backend: routing rules do not run.
    pub(super) routed: bool,
    /// A hook named the address to hash and cap the session under.
    pub(super) pin: Option<IpAddr>,
}

impl Session<'_> {
    /// Asks every hook of the frontend about the client. Ends the session
    /// with `PR` at the first denial, with `IR` at the first failure.
    pub(super) async fn admission_hooks(&mut self) -> Result<(), Termination> {
        let front: &FrontendContext = self.front;
        let Some(hooks) = front.hooks.as_deref() else { return Ok(()) };
        let mut hooked = Box::new(HookedSession { contexts: Vec::with_capacity(hooks.hooks.len()), routed: false, pin: None });
        for hook in &hooks.hooks {
            let mut context = HookContext {
                session: self.id.0,
                client: self.record.client,
                frontend: front.settings.frontend_name.clone(),
                server: None,
                state: None,
            };
            let decision = self.decide(hook, &mut context).await;
            hooked.contexts.push(context);
            match decision? {
                Decision::Pass => {}
                Decision::Deny { reason } => {
                    HookCounters::count(&hook.counters.denied);
                    debug!(front.handles.log, "client denied"; "client" => %self.record.client, "hook" => &*hook.name, "reason" => &*reason);
                    self.hooked = Some(hooked);
                    return Err(Termination::DeniedByPolicy);
                }
                Decision::Route(route) => {
                    HookCounters::count(&hook.counters.routed);
                    if let Err(end) = self.apply(hook, route, &mut hooked) {
                        self.hooked = Some(hooked);
                        return Err(end);
                    }
                }
            }
        }
        self.hooked = Some(hooked);
        Ok(())
    }

    /// One hook's decision: now, or within its timeout.
    async fn decide(&self, hook: &ConfiguredHook, context: &mut HookContext) -> Result<Decision, Termination> {
        let log = &self.front.handles.log;
        let pending: PendingDecision = match catch_unwind(AssertUnwindSafe(|| hook.hook.on_accept(context))) {
            Ok(Answer::Now(decision)) => return Ok(decision),
            Ok(Answer::Later(pending)) => pending,
            Err(_) => return Err(self.hook_failed(hook, "on_accept panicked")),
        };
        // The future runs as its own task so that a panic in it ends this
        // session only; a timeout aborts it.
        let mut task = tokio::spawn(pending);
        let kill = &self.front.handles.kill;
        let answered = tokio::select! {
            answered = timeout(hook.timeout, &mut task) => answered,
            _ = kill.cancelled() => {
                task.abort();
                return Err(Termination::KilledInInspect);
            }
        };
        match answered {
            Ok(Ok(Ok(decision))) => Ok(decision),
            Ok(Ok(Err(failure))) => Err(self.hook_failed(hook, &failure.0)),
            Ok(Err(_)) => Err(self.hook_failed(hook, "on_accept panicked")),
            Err(_) => {
                task.abort();
                HookCounters::count(&hook.counters.timeouts);
                warn!(log, "hook timed out"; "hook" => &*hook.name, "session" => self.id.0,
                    "timeout_ms" => hook.timeout.as_millis() as u64);
                match hook.on_timeout {
                    OnHookTimeout::Pass => Ok(Decision::Pass),
                    OnHookTimeout::Refuse => Err(Termination::DeniedByPolicy),
                }
            }
        }
    }

    /// Seats the session as the hook chose.
    fn apply(&mut self, hook: &ConfiguredHook, route: RouteTo, hooked: &mut HookedSession) -> Result<(), Termination> {
        let front = self.front;
        if let Some(name) = &route.backend {
            let Some(hooks) = front.hooks.as_deref() else { return Ok(()) };
            let Some(target) = hooks.backend(name) else {
                HookCounters::count(&hook.counters.failures);
                error!(front.handles.log, "hook routed to an unknown backend"; "hook" => &*hook.name, "backend" => &**name);
                return Err(Termination::HookFailed);
            };
            self.seat_on(target);
            hooked.routed = true;
        }
        if let Some(priority) = route.priority {
            self.priority = priority;
        }
        if route.pin.is_some() {
            hooked.pin = route.pin;
        }
        Ok(())
    }

    fn hook_failed(&self, hook: &ConfiguredHook, why: &str) -> Termination {
        HookCounters::count(&hook.counters.failures);
        error!(self.front.handles.log, "hook failed"; "hook" => &*hook.name, "phase" => "on_accept",
            "session" => self.id.0, "error" => why);
        Termination::HookFailed
    }

    /// Every hook's `after_connect`; the first that panics ends the session.
    pub(super) fn after_connect_hooks(&mut self) -> Result<(), Termination> {
        let (Some(hooks), Some(hooked)) = (self.front.hooks.as_deref(), self.hooked.as_deref_mut()) else { return Ok(()) };
        for (hook, context) in hooks.hooks.iter().zip(&mut hooked.contexts) {
            context.server = self.record.server.clone();
            if catch_unwind(AssertUnwindSafe(|| hook.hook.after_connect(context))).is_err() {
                HookCounters::count(&hook.counters.failures);
                error!(self.front.handles.log, "hook failed"; "hook" => &*hook.name, "phase" => "after_connect",
                    "session" => self.id.0, "error" => "after_connect panicked");
                return Err(Termination::HookFailedAfterConnect);
            }
        }
        Ok(())
    }
}

/// Every hook's `on_end` with the finished record; a panic is logged.
pub(super) fn end_hooks(front: &FrontendContext, hooked: Option<Box<HookedSession>>, record: &AccessRecord, end: Termination) {
    let (Some(hooks), Some(mut hooked)) = (front.hooks.as_deref(), hooked) else { return };
    for (hook, context) in hooks.hooks.iter().zip(&mut hooked.contexts) {
        if catch_unwind(AssertUnwindSafe(|| hook.hook.on_end(context, record, end))).is_err() {
            HookCounters::count(&hook.counters.failures);
            error!(front.handles.log, "hook failed"; "hook" => &*hook.name, "phase" => "on_end",
                "session" => record.session, "error" => "on_end panicked");
        }
    }
}
