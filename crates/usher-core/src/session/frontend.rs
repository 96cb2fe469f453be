//! What every session of one frontend shares: the settings it runs with
//! (plain data, taken from the configuration once per frontend and reload)
//! and the handles through which it reaches the rest of the broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Recipient};
use slog::Logger;
use tokio_util::sync::CancellationToken;

use crate::admission::SessionGauge;
use super::routes::Routes;
use super::threads::SessionThreads;
use super::Termination;
use crate::backend::{BackendLoad, BackendQueue, CancelReserve, Reserve};
use crate::config::{FrontendSettings, GlobalSettings};
use crate::ids::{BackendId, FrontendId, SessionId};
use crate::session::SessionEnded;

/// The backend settings a session needs, copied once per backend.
#[derive(Debug, Clone)]
pub struct BackendParams {
    pub name: Arc<str>,
    pub queue_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub server_timeout: Option<Duration>,
    pub session_max: Option<Duration>,
    pub retries: u32,
    pub redispatch: bool,
    pub servers: usize,
    /// A spawned backend's throttle: set while its command keeps failing
    /// to start, so a refusal then reads `ST` rather than `SC`.
    pub spawn_throttled: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The settings one frontend's sessions run with. Durations that the
/// configuration writes as zero for "none" are `None` here, as in the settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub frontend: FrontendId,
    pub frontend_name: Arc<str>,
    /// `timeout.client` of sessions accepted normally (their queue timeout
    /// is their backend's).
    pub client_idle: Option<Duration>,
    /// Timeouts of sessions accepted in stress mode.
    pub stress_timeouts: Timeouts,
    pub buffers: RelayBuffers,
    pub priority: QueuePriority,
    /// `frontends.X.accept_proxy`: clients start with a PROXY header.
    pub accept_proxy: Option<AcceptProxy>,
    /// `global.close_spread`: relaying sessions close over this at stop,
    /// after the grace (`None` = all at once). A session keeps the value of
    /// the configuration it was accepted under, as it keeps its timeouts.
    pub close_spread: Option<Duration>,
}

/// One backend a frontend's sessions may be seated on: its settings a
/// session needs and the queue it reserves slots from. A frontend has its
/// default backend and, with routing rules, one per rule (and overflow).
pub struct BackendTarget {
    /// The backend's id: its sessions count there in stats even if a
    /// reload points the frontend at another backend meanwhile.
    pub id: BackendId,
    pub name: Arc<str>,
    /// `timeout.queue` of sessions accepted normally.
    pub queue_timeout: Option<Duration>,
    pub connect: ConnectPolicy,
    /// `timeout.server`: server side idle limit while relaying.
    pub server_idle: Option<Duration>,
    /// `timeout.session_max`: longest life of a session, before jitter.
    pub session_max: Option<Duration>,
    /// The backend's queue: `Reserve` a slot, `CancelReserve` to leave.
    pub reserve: Recipient<Reserve>,
    pub cancel: Recipient<CancelReserve>,
    /// What its BackendQueue publishes of its load, for spill-over.
    pub load: Arc<BackendLoad>,
    /// A spawned backend's throttle (see [`BackendParams`]).
    pub spawn_throttled: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl BackendTarget {
    pub fn new(id: BackendId, backend: &BackendParams, queue: &Addr<BackendQueue>, load: Arc<BackendLoad>) -> BackendTarget {
        BackendTarget {
            id,
            name: backend.name.clone(),
            queue_timeout: backend.queue_timeout,
            connect: ConnectPolicy {
                timeout: backend.connect_timeout,
                retries: backend.retries,
                redispatch: backend.redispatch && backend.servers > 1,
            },
            server_idle: backend.server_timeout,
            session_max: backend.session_max,
            reserve: queue.clone().recipient(),
            cancel: queue.clone().recipient(),
            load,
            spawn_throttled: backend.spawn_throttled.clone(),
        }
    }

    /// How a refusal reads: "no server" from a spawned backend throttled
    /// after failed starts is that throttle (`ST`).
    pub fn refusal(&self, termination: Termination) -> Termination {
        let throttled = self.spawn_throttled.as_ref().is_some_and(|t| t.load(std::sync::atomic::Ordering::Acquire));
        if termination == Termination::NoServer && throttled {
            Termination::SpawnThrottled
        } else {
            termination
        }
    }
}

/// The timeouts that differ between normal and stress mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Client side idle limit while relaying.
    pub client: Option<Duration>,
    /// Longest wait for a slot.
    pub queue: Option<Duration>,
}

/// How a session reaches its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// Limit of one attempt.
    pub timeout: Option<Duration>,
    /// Attempts after the first.
    pub retries: u32,
    /// A failed attempt asks for another server (`redispatch`, and the
    /// backend has more than one).
    pub redispatch: bool,
}

/// Relay buffer sizes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayBuffers {
    /// A direction's first bulk buffer.
    pub first: usize,
    /// Most a streaming direction's buffer grows to (≥ `first`).
    pub max: usize,
}

/// Where a session's arrival falls in the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePriority {
    /// `frontends.X.priority_class`: lower classes are served first.
    pub class: i32,
    /// `frontends.X.priority_offset` in ms: added to the arrival time.
    pub offset_ms: i64,
}

/// Reading the PROXY header clients start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptProxy {
    /// `frontends.X.timeout.proxy`: time to read the header, always bounded.
    pub timeout: Duration,
}

impl SessionSettings {
    pub fn new(id: FrontendId, frontend: &FrontendSettings, global: &GlobalSettings) -> SessionSettings {
        let stress = &frontend.stress.timeout;
        SessionSettings {
            frontend: id,
            frontend_name: Arc::from(frontend.name.as_str()),
            client_idle: frontend.timeout.client,
            stress_timeouts: Timeouts { client: stress.client, queue: stress.queue },
            buffers: RelayBuffers { first: global.bufsize as usize, max: global.relay_buffer_max() },
            priority: QueuePriority { class: frontend.priority_class, offset_ms: frontend.priority_offset },
            accept_proxy: frontend.accept_proxy.then_some(AcceptProxy { timeout: frontend.timeout.proxy }),
            close_spread: global.close_spread,
        }
    }

    /// The timeouts of a session on `backend`, accepted in stress mode or not.
    pub fn timeouts(&self, stress: bool, backend: &BackendTarget) -> Timeouts {
        if stress {
            self.stress_timeouts
        } else {
            Timeouts { client: self.client_idle, queue: backend.queue_timeout }
        }
    }
}

/// The broker parts every session of one frontend talks to.
pub struct SessionHandles {
    /// The Stats actor: one `SessionEnded` per session.
    pub stats: Recipient<SessionEnded>,
    /// Live sessions of this frontend (and their peak), for stats.
    pub gauge: Arc<SessionGauge>,
    pub log: Logger,
    /// Cancelled when `global.grace` ran out: live sessions close.
    pub kill: CancellationToken,
    /// Where sessions run; every session task is tracked, so shutdown can
    /// wait for them.
    pub threads: SessionThreads,
    /// Session ids, unique in the process.
    pub session_ids: Arc<AtomicU64>,
    /// When the broker started: queue keys count time from here.
    pub epoch: tokio::time::Instant,
}

/// What every session of one frontend shares.
pub struct FrontendContext {
    pub(super) settings: SessionSettings,
    pub(super) handles: SessionHandles,
    /// `frontends.X.backend`: serves the sessions no rule routes elsewhere.
    pub(super) default: BackendTarget,
    /// Routing rules and their backends; `None` without rules, so such a
    /// frontend's sessions pay nothing for routing.
    pub(super) routes: Option<Box<Routes>>,
    /// `frontends.X.hooks`; `None` without hooks, so such a frontend's
    /// sessions pay nothing for them.
    pub(super) hooks: Option<Box<super::hook::FrontendHooks>>,
}

impl FrontendContext {
    pub fn new(
        settings: SessionSettings,
        handles: SessionHandles,
        default: BackendTarget,
        routes: Option<Routes>,
    ) -> FrontendContext {
        FrontendContext { settings, handles, default, routes: routes.map(Box::new), hooks: None }
    }

    /// Runs `hooks` on every session (none: keep the no-hook path).
    pub fn with_hooks(mut self, hooks: super::hook::FrontendHooks) -> FrontendContext {
        self.hooks = (!hooks.hooks.is_empty()).then(|| Box::new(hooks));
        self
    }

    pub fn next_session(&self) -> SessionId {
        SessionId(self.handles.session_ids.fetch_add(1, Ordering::Relaxed))
    }
}
