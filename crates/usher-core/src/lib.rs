//! usher-core: everything of the usher broker that can be tested.
//!
//! Start with [`run`]. The folders say where things live:
//! - `config/`: layers → validation → [`Settings`];
//! - `admission/`: the Listener actors and the ResourceWatchdog (limits,
//!   rates, shortages, stress);
//! - `backend/`: the BackendQueue and Server actors over plain cores,
//!   balancing, health checks;
//! - `session/`: one client's life, its access record and termination code;
//! - `spawn/`: spawned servers, the processes usher starts for a backend;
//! - `proxy_protocol`: PROXY v1/v2 headers;
//! - `observe/`: the logger and the traffic counters;
//! - `admin/`: the HTTP API;
//! - `discovery/`: servers from DNS (resolution, stable names, schedule);
//! - `broker/`: start, the running topology, reload (plan, then commit),
//!   the [`BrokerHandle`];
//! - `run`: the process around them: broker, admin API, shutdown.
//!
//! Dependencies run one way: `session` uses the protocols of `admission`
//! and `backend`; `broker` uses everything but `admin`; nothing uses
//! `broker` but `admin`, through the public [`BrokerHandle`], and `run`
//! (`tests/module_deps.rs` keeps it so).
//!
//! The public surface is what this page lists. The modules behind it, and
//! with them the protocol messages (`Reserve`, `Release`, `Dequeue`, the
//! `Slot` a grant hands out), are private: code outside this crate cannot
//! take or give back a slot, so "released exactly once" and "never over
//! maxconn" hold by construction. White-box tests and the benchmark turn
//! on the `internals` feature, which makes those modules public.

// Denied everywhere but in `spawn/hygiene.rs`, which makes the few system
// calls a process supervisor needs between fork and exec (std offers no safe
// parent-death signal).
#![deny(unsafe_code)]
// Every type the public API hands out can be named by its users.
#![warn(unnameable_types)]

/// Declares modules that are private unless the `internals` feature is on
/// (tests, usher-bench): then they are public, hidden from the docs.
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal_modules!(admin, admission, backend, broker, cluster, discovery, observe, proxy_protocol, session, spawn);

mod run;

pub mod config;
pub mod extension;
pub mod ids;
pub mod net;
pub mod notify;
pub mod routing;

pub use backend::{AdminState, OpState};
pub use broker::{
    bind_all, BoundListeners, BrokerHandle, ConfigLoader, ControlError, Extensions, IdleWait, OnReady, OnStart,
    PauseStatus, ReloadChange, ReloadError, ReloadSummary, RestartKey, ServerChange, ServerStatus,
};
pub use config::Settings;
pub use extension::{CheckClient, HookRegistry, SessionHook, Verdict};
pub use observe::{logger, LogGuard};
pub use run::run;
pub use session::Termination;

/// What a running broker reports about itself: [`BrokerHandle::stats`] and
/// the admin API's `/stats` and `/metrics` are made of these.
pub mod report {
    pub use crate::admission::fd_budget::{FdBudget, FdBudgetError};
    pub use crate::admission::watchdog::{FrontendStatus, ListenerStatus, WatchdogCounters, WatchdogStatus};
    pub use crate::admission::{ListenerState, PauseReason};
    pub use crate::backend::backend_queue::{QueueReport, ServerQueueReport};
    pub use crate::backend::server::ServerReport;
    pub use crate::backend::spawn_gate::{ProcessReport, SpawnReport};
    pub use crate::backend::CheckResult;
    pub use crate::broker::{BackendReport, BrokerReport};
    pub use crate::discovery::{SourceReport, SourceState};
    pub use crate::observe::chunked_table::ChunkedTable;
    pub use crate::observe::stats::{GaugeReading, ProcessFacts, QueueWaitReport, StatsReport};
    pub use crate::observe::stats_book::{Counters, RouteCounters};
    pub use crate::observe::wait_histogram::{WaitHistogram, WaitSummary};
}

/// Mailbox capacity set on every actor. actix only enforces it for
/// `try_send`; the real bound is by construction (see the protocol modules).
pub(crate) const MAILBOX_CAPACITY: usize = 1024;
