//! ResourceWatchdog: owns everything process-wide about accepting — the
//! global count (capped by the fd budget), frontend and listener limits,
//! connection rates, the listeners paused and why, the re-check schedule,
//! throttled warnings and stress mode. Its decisions live in plain structs
//! ([`AdmissionState`], [`HitBook`]); the actor adds the clock, the timers,
//! the replies and the log records.
//!
//! Listeners ask for admission before accepting (`Admit`); a listener that
//! gets nothing is paused (it stops polling its socket, clients wait in the
//! kernel backlog). Count limits resume on the release itself
//! (`SessionClosed`, `GiveBack`); rate and shortage pauses resume on a timer
//! set for exactly when they end, and a closed session also ends a shortage
//! pause (it freed fds). The `maxconn_recheck` tick is only a safety net
//! and does nothing while still at a limit.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, info, warn, Logger};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::core::{AdmissionConfig, AdmissionState, Admitted, LimitHit, ListenerState, PauseReason, Resumed};
use super::fd_budget::FdBudget;
use super::events::AdmissionEvent;
use super::hits::HitBook;
pub use super::hits::WatchdogCounters;
use super::protocol::{Admit, AdmitGrant, GiveBack, SessionClosed, Shortage};
use crate::ids::{FrontendId, ListenerId};
use crate::notify::Notify;

/// What the watchdog knows of a listener, for its log records and status.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub id: ListenerId,
    pub frontend: String,
    pub address: SocketAddr,
    /// A reload closed it (its sessions may still run).
    pub closed: bool,
}

/// How a watchdog is set up.
#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    /// Limits at start; from then on the admission state holds them.
    pub admission: AdmissionConfig,
    pub listeners: Vec<ListenerInfo>,
    pub frontend_names: Vec<String>,
    /// Stress cooldown per frontend (`None` = no stress mode there).
    pub stress_cooldowns: Vec<Option<Duration>>,
    pub maxconn_recheck: Duration,
    pub shortage_recheck: Duration,
    pub warn_interval: Duration,
    pub fd_budget: Option<FdBudget>,
    /// The global limit is the fd budget (`global.maxconn = 0`).
    pub maxconn_from_fd_budget: bool,
}

/// The watchdog's report, for the stats API.
#[derive(Debug, Clone, MessageResponse)]
pub struct WatchdogStatus {
    pub global_used: u32,
    pub global_max: u32,
    pub fd_budget: Option<FdBudget>,
    pub listeners: Vec<ListenerStatus>,
    /// Per frontend, in declaration order.
    pub frontends: Vec<FrontendStatus>,
    /// Frontend names in stress mode.
    pub stressed: Vec<String>,
    pub counters: WatchdogCounters,
}

#[derive(Debug, Clone)]
pub struct ListenerStatus {
    pub id: ListenerId,
    pub frontend: String,
    pub address: SocketAddr,
    pub state: ListenerState,
    pub sessions: u32,
}

#[derive(Debug, Clone)]
pub struct FrontendStatus {
    pub name: String,
    /// Sessions admitted (live sessions plus accept credits in flight).
    pub sessions: u32,
    /// `maxconn` in force (0 = only the global limit).
    pub maxconn: u32,
    /// New sessions per second (0 = unlimited).
    pub rate_limit: u32,
}

/// Changes a frontend's `maxconn` at run time (admin API). Raising it
/// resumes its paused listeners at once; lowering it below the current
/// count delays new accepts. Answers the previous value, or `None` for an
/// unknown frontend.
#[derive(Message, Debug)]
#[rtype(result = "Option<u32>")]
pub struct SetFrontendMaxconn {
    pub frontend: String,
    /// 0 = only the global limit.
    pub maxconn: u32,
}

/// A reload: the frontends and listeners by id, all of them (closed
/// listeners and removed frontends included, so ids stay stable), and the
/// global rate. `global.maxconn` and the watchdog's timers need a restart.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReconfigureAdmission {
    pub admission: AdmissionConfig,
    pub listeners: Vec<ListenerInfo>,
    pub frontend_names: Vec<String>,
    pub stress_cooldowns: Vec<Option<Duration>>,
}

/// Asks for a [`WatchdogStatus`].
#[derive(Message)]
#[rtype(result = "WatchdogStatus")]
pub struct GetStatus;

pub struct ResourceWatchdog {
    state: AdmissionState<oneshot::Sender<AdmitGrant>>,
    hits: HitBook,
    config: WatchdogConfig,
    /// The timer set for the next time-based resume, if any.
    timer: Option<(Instant, SpawnHandle)>,
    /// Told of pauses, resumes and stress, as the log is.
    events: Notify<AdmissionEvent>,
    log: Logger,
}

/// A listener's frontend and address, for log records.
fn names(listeners: &[ListenerInfo], id: ListenerId) -> (String, String) {
    match listeners.get(id.0) {
        Some(l) => (l.frontend.clone(), l.address.to_string()),
        None => (String::new(), String::new()),
    }
}

impl ResourceWatchdog {
    pub fn new(config: WatchdogConfig, log: Logger) -> ResourceWatchdog {
        let now = Instant::now();
        ResourceWatchdog {
            state: AdmissionState::new(&config.admission, now),
            hits: HitBook::new(config.warn_interval, &config.stress_cooldowns),
            timer: None,
            config,
            events: Notify::none(),
            log,
        }
    }

    /// Tells `events` of every pause, resume and stress change.
    pub fn with_events(mut self, events: Notify<AdmissionEvent>) -> ResourceWatchdog {
        self.events = events;
        self
    }

    /// A listener's frontend and address, for events.
    fn listener(&self, id: ListenerId) -> Option<(String, SocketAddr)> {
        self.config.listeners.get(id.0).map(|l| (l.frontend.clone(), l.address))
    }

    /// Sends credits to resumed listeners; credits of a listener that is gone
    /// come back and may resume another one.
    fn resume(&mut self, resumed: Vec<Resumed<oneshot::Sender<AdmitGrant>>>, now: Instant) {
        let (hits, listeners, events, log) = (&self.hits, &self.config.listeners, &self.events, &self.log);
        self.state.hand_out(resumed, now, |r, state| {
            let grant = AdmitGrant { credits: r.granted, stress: hits.in_stress(r.frontend) };
            let sent = r.waiter.send(grant).is_ok();
            if sent {
                let (frontend, address) = names(listeners, r.listener);
                debug!(log, "listener resumed"; "frontend" => frontend, "address" => address,
                    "global_used" => state.global_used());
                if let Some(l) = listeners.get(r.listener.0).filter(|_| events.is_set()) {
                    events.send(AdmissionEvent::ListenerResumed { frontend: l.frontend.clone(), address: l.address });
                }
            }
            sent
        });
    }

    /// Turns limit hits into throttled warnings, counters and stress.
    fn account_hits(&mut self, now: Instant) {
        for hit in self.state.take_hits() {
            let effects = self.hits.hit(hit, now);
            if let Some(occurrences) = effects.warn {
                self.warn(hit, occurrences);
            }
            if effects.stress_entered {
                let frontend = &self.config.frontend_names[hit.frontend.0];
                warn!(self.log, "stress mode entered"; "frontend" => frontend, "cause" => hit.reason.as_str());
                self.events.send(AdmissionEvent::StressEntered { frontend: frontend.clone(), cause: hit.reason });
            }
        }
        for f in self.hits.expire_stress(now) {
            let frontend = &self.config.frontend_names[f.0];
            info!(self.log, "stress mode left"; "frontend" => frontend,
                // Only a frontend with a cooldown enters stress, so it has one.
                "cooldown" => %humantime::format_duration(self.config.stress_cooldowns[f.0].unwrap_or_default()));
            self.events.send(AdmissionEvent::StressLeft { frontend: frontend.clone() });
        }
    }

    fn warn(&self, hit: LimitHit, occurrences: u64) {
        let (frontend, address) = names(&self.config.listeners, hit.listener);
        let a = &self.state;
        match hit.reason {
            PauseReason::Global if self.config.maxconn_from_fd_budget => warn!(self.log,
                "process fd limit reached; new clients wait in the kernel backlog";
                "sessions" => a.global_max(),
                "nofile" => self.config.fd_budget.map_or(0, |b| b.nofile), "occurrences" => occurrences),
            PauseReason::Global => {
                warn!(self.log, "process reached global maxconn; new clients wait in the kernel backlog";
                "limit" => a.global_max(), "occurrences" => occurrences)
            }
            PauseReason::Frontend => {
                warn!(self.log, "frontend reached its limit; new clients wait in the kernel backlog";
                "frontend" => frontend, "limit" => a.frontend_max(hit.frontend), "occurrences" => occurrences)
            }
            PauseReason::Listener => {
                warn!(self.log, "listener reached its bind_maxconn; new clients wait in the kernel backlog";
                "frontend" => frontend, "address" => address,
                "limit" => a.listener_max(hit.listener), "occurrences" => occurrences)
            }
            PauseReason::GlobalRate => {
                warn!(self.log, "process reached global maxconnrate; new clients wait in the kernel backlog";
                "rate" => a.global_rate(), "occurrences" => occurrences)
            }
            PauseReason::FrontendRate => {
                warn!(self.log, "frontend reached its rate_limit; new clients wait in the kernel backlog";
                "frontend" => frontend, "rate" => a.frontend_rate(hit.frontend), "occurrences" => occurrences)
            }
            PauseReason::Shortage => warn!(self.log, "accept failed: resource shortage; listener paused";
                "frontend" => frontend, "address" => address,
                "recheck" => %humantime::format_duration(self.config.shortage_recheck), "occurrences" => occurrences),
        }
    }

    /// Sets a timer for the next time-based resume or stress expiry, unless
    /// one is already set at or before it.
    fn schedule(&mut self, ctx: &mut Context<Self>, now: Instant) {
        let next = [self.state.next_wakeup(now), self.hits.next_stress_expiry()].into_iter().flatten().min();
        let Some(next) = next else { return };
        if let Some((at, handle)) = self.timer {
            if at <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(next.saturating_duration_since(now), |act, ctx| {
            act.timer = None;
            act.tick(ctx);
        });
        self.timer = Some((next, handle));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let resumed = self.state.recheck(now);
        self.resume(resumed, now);
        self.account_hits(now);
        self.schedule(ctx, now);
    }

    /// Before handling any message: a rate or shortage pause that ended
    /// before its timer fired is served first, so a newcomer never takes the
    /// token a parked listener was waiting for.
    fn before(&mut self, now: Instant) {
        let resumed = self.state.recheck(now);
        self.resume(resumed, now);
    }

    /// One message that may free room: recheck, apply `change` to the
    /// state, hand out what it resumed, then account and reschedule.
    fn freeing(
        &mut self,
        ctx: &mut Context<Self>,
        change: impl FnOnce(&mut AdmissionState<oneshot::Sender<AdmitGrant>>, Instant) -> Vec<Resumed<oneshot::Sender<AdmitGrant>>>,
    ) {
        let now = Instant::now();
        self.before(now);
        let resumed = change(&mut self.state, now);
        self.resume(resumed, now);
        self.after(ctx, now);
    }

    fn after(&mut self, ctx: &mut Context<Self>, now: Instant) {
        self.account_hits(now);
        self.schedule(ctx, now);
        debug_assert_eq!(self.state.check(now), Ok(()));
    }
}

impl Actor for ResourceWatchdog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        if !self.config.maxconn_recheck.is_zero() {
            // Safety net only: count limits resume on every release.
            ctx.run_interval(self.config.maxconn_recheck, |act, ctx| act.tick(ctx));
        }
    }
}

impl Handler<Admit> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: Admit, ctx: &mut Self::Context) {
        let now = Instant::now();
        self.before(now);
        let frontend = self.state.frontend_of(msg.listener);
        match self.state.admit(msg.listener, msg.want, msg.reply, now) {
            Admitted::Granted(n, reply) => {
                if reply.send(AdmitGrant { credits: n, stress: self.hits.in_stress(frontend) }).is_err() {
                    let resumed = self.state.give_back(msg.listener, n, now);
                    self.resume(resumed, now);
                }
            }
            Admitted::Parked(reason) => {
                let (frontend, address) = names(&self.config.listeners, msg.listener);
                debug!(self.log, "listener paused";
                    "frontend" => frontend, "address" => address, "reason" => reason.as_str(),
                    "global_used" => self.state.global_used());
                if let Some((frontend, address)) = self.listener(msg.listener).filter(|_| self.events.is_set()) {
                    self.events.send(AdmissionEvent::ListenerPaused { frontend, address, reason });
                }
            }
        }
        self.after(ctx, now);
    }
}

impl Handler<GiveBack> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: GiveBack, ctx: &mut Self::Context) {
        self.freeing(ctx, |state, now| state.give_back(msg.listener, msg.credits, now));
    }
}

impl Handler<SessionClosed> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, ctx: &mut Self::Context) {
        self.freeing(ctx, |state, now| state.session_closed(msg.listener, now));
    }
}

impl Handler<Shortage> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: Shortage, ctx: &mut Self::Context) {
        let now = Instant::now();
        self.before(now);
        self.state.shortage(msg.listener, now, self.config.shortage_recheck);
        debug!(self.log, "accept shortage"; "cause" => msg.cause.as_str(), "listener" => msg.listener.0);
        self.after(ctx, now);
    }
}

impl Handler<GetStatus> for ResourceWatchdog {
    type Result = WatchdogStatus;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> WatchdogStatus {
        let listeners = self
            .config
            .listeners
            .iter()
            .filter(|l| !l.closed)
            .map(|l| ListenerStatus {
                id: l.id,
                frontend: l.frontend.clone(),
                address: l.address,
                state: self.state.listener_state(l.id),
                sessions: self.state.listener_used(l.id),
            })
            .collect();
        let stressed = (0..self.config.frontend_names.len())
            .filter(|&i| self.hits.in_stress(FrontendId(i)))
            .map(|i| self.config.frontend_names[i].clone())
            .collect();
        let frontends = (0..self.config.frontend_names.len())
            .map(|i| FrontendStatus {
                name: self.config.frontend_names[i].clone(),
                sessions: self.state.frontend_used(FrontendId(i)),
                maxconn: self.state.frontend_max(FrontendId(i)),
                rate_limit: self.state.frontend_rate(FrontendId(i)),
            })
            .collect();
        WatchdogStatus {
            global_used: self.state.global_used(),
            global_max: self.state.global_max(),
            fd_budget: self.config.fd_budget,
            listeners,
            frontends,
            stressed,
            counters: self.hits.counters(),
        }
    }
}

impl Handler<ReconfigureAdmission> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: ReconfigureAdmission, ctx: &mut Self::Context) {
        let now = Instant::now();
        self.before(now);
        // The global limit stays what the fd budget allowed at start, and a
        // run-time maxconn stays where the reload left a frontend alone.
        let resumed = self.state.reload(&msg.admission, now);
        self.hits.reconfigure_stress(&msg.stress_cooldowns);
        self.config.listeners = msg.listeners;
        self.config.frontend_names = msg.frontend_names;
        self.config.stress_cooldowns = msg.stress_cooldowns;
        self.resume(resumed, now);
        self.after(ctx, now);
    }
}

impl Handler<SetFrontendMaxconn> for ResourceWatchdog {
    type Result = Option<u32>;

    fn handle(&mut self, msg: SetFrontendMaxconn, ctx: &mut Self::Context) -> Option<u32> {
        // The last frontend of that name: one removed by a reload comes before.
        let i = self.config.frontend_names.iter().rposition(|name| *name == msg.frontend)?;
        let now = Instant::now();
        self.before(now);
        let (from, resumed) = self.state.set_frontend_maxconn(FrontendId(i), msg.maxconn, now)?;
        info!(self.log, "frontend maxconn changed"; "frontend" => &msg.frontend, "from" => from, "to" => msg.maxconn);
        self.resume(resumed, now);
        self.after(ctx, now);
        Some(from)
    }
}
