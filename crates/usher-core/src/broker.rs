//! The broker: starts the actors a configuration describes, hands out a
//! [`BrokerHandle`] to control them, and drains them at shutdown.
//!
//! The caller binds the listening sockets (the daemon with [`bind_all`],
//! tests on `127.0.0.1:0`) and decides what shutdown means (`crate::run`).
//! [`start`] must be called inside an actix `System`: the actors run on the
//! System arbiter (control plane) and sessions on `global.workers`
//! data-plane threads, the System thread among them (with one worker, only
//! it). Which
//! actors exist is the Topology actor's business (`broker/topology.rs`), at
//! start and on every reload.

mod backend_reports;
mod bind;
mod commit;
mod extensions;
mod handle;
mod huge_pages;
mod plan_thread;
mod queue_control;
mod runtime_topology;
mod staged_reload;
pub mod planner;
pub mod reload_plan;
pub mod topology;
pub mod wiring;

pub use extensions::{Extensions, OnReady, OnStart};
pub use handle::{
    BackendReport, BrokerHandle, BrokerReport, ControlError, ServerChange, ServerStatus, MAX_MAXCONN,
};
// The actors behind the handle, for white-box tests.
#[cfg(feature = "internals")]
pub use handle::{Actors, BackendControl};
pub use queue_control::{IdleWait, PauseStatus, MAX_IDLE_WAIT};
pub use crate::config::{ReloadChange, ReloadError, ReloadSummary, RestartKey};
pub use topology::ConfigLoader;
// What `/stats` shows of each session hook.
pub use crate::extension::HookCountersReport;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use slog::{info, o, warn, Logger};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::fd_budget::FdBudget;
use crate::admission::watchdog::WatchdogConfig;
use crate::admission::{AdmissionConfig, AdmissionEvent, ResourceWatchdog, SessionGauge, StopAccepting};
use crate::backend::balance::BalancerRegistry;
use crate::config::Settings;
use crate::extension::PluggedHooks;
use crate::notify::Notify;
use crate::observe::stats::Gauges;
use crate::observe::stats_book::StatsBook;
use crate::observe::Stats;
use crate::session::SessionThreads;
use topology::{BeginShutdown, GetHandle, Shared, Stopping, Topology};

/// Where sessions run. With one worker they share the actix System thread
/// with the actors (like HAProxy with `nbthread 1`): every Reserve, grant,
/// Release and admission message is then a same-thread wake-up instead of a
/// cross-thread hop with a context switch, which measured ~7 switches per
/// new session with two threads on one core. With N ≥ 2 workers, a pool of
/// N − 1 threads runs the accept loops and most sessions, and the System
/// thread is the N-th: it keeps the actors and takes its share of the
/// sessions (`SessionThreads`), so N workers are N busy threads.
enum DataPlane {
    /// The System thread's runtime.
    Shared(tokio::runtime::Handle),
    /// A pool of `workers − 1` threads; the System thread is the last
    /// worker (it takes its share of the sessions: `SessionThreads`).
    /// `run` is async, and a tokio runtime dropped in an async context
    /// panics, so every exit path shuts it down in the background instead.
    Own(Option<tokio::runtime::Runtime>),
}

impl DataPlane {
    fn start(workers: usize) -> anyhow::Result<DataPlane> {
        if workers <= 1 {
            return Ok(DataPlane::Shared(tokio::runtime::Handle::current()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers - 1)
            .thread_name("usher-data")
            .enable_all()
            .build()
            .context("cannot start the data-plane threads")?;
        Ok(DataPlane::Own(Some(runtime)))
    }

    /// The pool: where accept loops run.
    fn handle(&self) -> tokio::runtime::Handle {
        match self {
            DataPlane::Shared(handle) => handle.clone(),
            DataPlane::Own(runtime) => runtime.as_ref().expect("running").handle().clone(),
        }
    }

    /// Where sessions run: the pool, and with a pool of its own, the
    /// System thread too (one thread's share).
    fn session_threads(&self, tracker: TaskTracker, workers: usize, process: Arc<SessionGauge>) -> SessionThreads {
        let pool = SessionThreads::on(tracker, self.handle());
        match self {
            DataPlane::Shared(_) => pool,
            DataPlane::Own(_) => pool.shared_with_actors(tokio::runtime::Handle::current(), workers, process),
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let DataPlane::Own(runtime) = self {
            if let Some(runtime) = runtime.take() {
                runtime.shutdown_background();
            }
        }
    }
}

/// How long killed sessions get to write their records after the grace
/// (and the close spread).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Bound listening sockets, by frontend name, and the admin API's, if any.
#[derive(Debug, Default)]
pub struct BoundListeners(pub HashMap<String, Vec<TcpListener>>, Option<TcpListener>);

impl BoundListeners {
    pub fn insert(&mut self, frontend: &str, listener: TcpListener) {
        self.0.entry(frontend.to_owned()).or_default().push(listener);
    }

    /// The admin API serves on `listener` (without one, there is no API).
    pub fn set_admin(&mut self, listener: TcpListener) {
        self.1 = Some(listener);
    }

    pub fn admin(&self) -> Option<&TcpListener> {
        self.1.as_ref()
    }

    /// The frontends' sockets and the admin API's.
    pub fn into_parts(self) -> (HashMap<String, Vec<TcpListener>>, Option<TcpListener>) {
        (self.0, self.1)
    }
}

/// listen() backlog of the admin API's socket.
const ADMIN_BACKLOG: u32 = 128;

/// Binds every frontend address of `settings`.
pub fn bind_all(settings: &Settings) -> anyhow::Result<BoundListeners> {
    let mut bound = BoundListeners::default();
    for f in &settings.frontends {
        for addr in &f.bind {
            let listener = crate::net::bind_listener(*addr, f.backlog)
                .with_context(|| format!("frontends.{}.bind: cannot listen on {addr}", f.name))?;
            bound.insert(&f.name, listener);
        }
    }
    if let Some(addr) = settings.admin.bind {
        let listener = crate::net::bind_listener(addr, ADMIN_BACKLOG)
            .with_context(|| format!("admin.bind: cannot listen on {addr}"))?;
        bound.set_admin(listener);
    }
    Ok(bound)
}


/// A started broker: its actors run and its listeners accept.
pub struct Broker {
    handle: BrokerHandle,
    topology: Addr<Topology>,
    /// Dropped with the broker, which stops the data-plane threads.
    _data_plane: DataPlane,
    kill: CancellationToken,
    tracker: TaskTracker,
    facts: StartFacts,
    log: Logger,
}

/// What the `started` record tells.
struct StartFacts {
    frontends: usize,
    backends: usize,
    listeners: usize,
    workers: usize,
    maxconn: u32,
}

/// Starts everything `settings` describes on the sockets in `listeners`
/// (by frontend; addresses without one are bound here). `admission` is
/// run by the frontends (admission actors, session hooks), `balancers` build the backends'
/// balancing, `loader` re-reads the configuration on a reload.
pub async fn start(
    settings: Settings,
    listeners: HashMap<String, Vec<TcpListener>>,
    log: Logger,
    hooks: PluggedHooks,
    balancers: BalancerRegistry,
    loader: Option<ConfigLoader>,
) -> anyhow::Result<Broker> {
    let workers = settings.global.worker_threads();
    let data_plane = DataPlane::start(workers)?;

    // The watchdog and the Stats actor start empty: the Topology tells them
    // every frontend and listener before the first accept.
    let fd_budget = FdBudget::measure().context("cannot read the fd limit")?;
    let maxconn = fd_budget.effective_maxconn(settings.global.maxconn)?;
    info!(log, "fd budget";
        "nofile" => fd_budget.nofile, "hard" => fd_budget.hard, "in_use" => fd_budget.in_use,
        "spare" => fd_budget.spare, "sessions" => fd_budget.sessions, "maxconn" => maxconn,
        "maxconn_source" => if settings.global.maxconn.is_none() { "fd budget" } else { "global.maxconn" });
    huge_pages::turn_off(&log);
    let watchdog = start_watchdog(&settings, fd_budget, maxconn, hooks.observers().admission_events(), &log);
    let global_gauge = Arc::new(SessionGauge::default());
    let gauges = Gauges { global: global_gauge.clone(), ..Gauges::default() };
    let stats = Stats::new(StatsBook::new(0, &[]), gauges).start();

    let kill = CancellationToken::new();
    let tracker = TaskTracker::new();
    let session_threads = data_plane.session_threads(tracker.clone(), workers, global_gauge.clone());
    let shared = Shared {
        data_plane: data_plane.handle(),
        watchdog,
        stats,
        global_gauge,
        hooks,
        balancers: Arc::new(balancers),
        kill: kill.clone(),
        session_threads,
        session_ids: Arc::new(AtomicU64::new(1)),
        clustered: settings.cluster.is_some(),
        epoch: tokio::time::Instant::now(),
        log: log.clone(),
    };
    let facts = StartFacts {
        frontends: settings.frontends.len(),
        backends: settings.backends.len(),
        listeners: settings.frontends.iter().map(|f| f.bind.len()).sum(),
        workers,
        maxconn,
    };
    let topology = Topology::start(settings, listeners, loader, shared)?;
    let handle = topology.send(GetHandle).await.context("topology stopped")?;
    Ok(Broker { handle, topology, _data_plane: data_plane, kill, tracker, facts, log })
}

fn start_watchdog(
    settings: &Settings,
    fd_budget: FdBudget,
    maxconn: u32,
    events: Notify<AdmissionEvent>,
    log: &Logger,
) -> Addr<ResourceWatchdog> {
    ResourceWatchdog::new(
        WatchdogConfig {
            admission: AdmissionConfig { global_maxconn: maxconn, ..AdmissionConfig::default() },
            listeners: Vec::new(),
            frontend_names: Vec::new(),
            stress_cooldowns: Vec::new(),
            maxconn_recheck: settings.watchdog.maxconn_recheck,
            shortage_recheck: settings.watchdog.shortage_recheck,
            warn_interval: settings.watchdog.warn_interval,
            fd_budget: Some(fd_budget),
            maxconn_from_fd_budget: settings.global.maxconn.is_none(),
        },
        log.new(o!("actor" => "watchdog")),
    )
    .with_events(events)
    .start()
}

impl Broker {
    pub fn handle(&self) -> &BrokerHandle {
        &self.handle
    }

    /// The `started` record (and a warning when nothing can be accepted).
    pub fn announce(&self) {
        let f = &self.facts;
        info!(self.log, "started";
            "frontends" => f.frontends, "backends" => f.backends,
            "listeners" => f.listeners, "workers" => f.workers, "maxconn" => f.maxconn);
        if f.frontends == 0 {
            warn!(self.log, "no frontends configured: nothing to accept");
        }
    }

    /// Stops accepting, lets sessions finish for up to `global.grace` and
    /// closes the rest. Dropping the broker then stops the data-plane
    /// threads.
    pub async fn drain(&self) -> anyhow::Result<()> {
        let log = &self.log;
        let Stopping { listeners, grace, close_spread } =
            self.topology.send(BeginShutdown).await.context("topology stopped")?;
        info!(log, "shutting down"; "grace" => %humantime::format_duration(grace), "sessions" => self.tracker.len());
        for listener in &listeners {
            let _ = listener.send(StopAccepting).await;
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            // Relaying sessions close over the close spread (each takes
            // its spread from the configuration it was accepted under; the
            // current one bounds the wait).
            let spread = close_spread.unwrap_or_default();
            warn!(log, "grace expired, closing sessions"; "sessions" => self.tracker.len(),
                "close_spread" => %humantime::format_duration(spread));
            self.kill.cancel();
            if tokio::time::timeout(spread + KILL_WAIT, self.tracker.wait()).await.is_err() {
                warn!(log, "sessions still open after kill"; "sessions" => self.tracker.len());
            }
        }
        Ok(())
    }
}
