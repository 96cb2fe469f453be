//! The broker entry point: `run(settings, listeners, log, extensions, shutdown)`.
//!
//! The caller binds the listening sockets (the daemon with [`bind_all`],
//! tests on `127.0.0.1:0`) and decides what shutdown means (signals, a test's
//! oneshot). `run` must be awaited inside an actix `System`: the actors run
//! on the System arbiter (control plane) and sessions on a separate tokio
//! runtime of `global.workers` threads (data plane).

use std::collections::HashMap;
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{anyhow, Context as _};
use slog::{info, o, warn, Logger};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actors::watchdog::{ListenerInfo, WatchdogConfig};
use crate::actors::{BackendQueue, Listener, ResourceWatchdog, Server};
use crate::balance;
use crate::bookkeeping::backend_state::ServerSetup;
use crate::bookkeeping::{AdmissionConfig, FrontendLimits, ListenerLimits};
use crate::config::{BackendSettings, Settings};
use crate::data_plane::accept::AcceptLoop;
use crate::data_plane::{BackendParams, FrontendContext};
use crate::extension::Extensions;
use crate::fd_budget::FdBudget;
use crate::ids::{FrontendId, ListenerId, ServerId};
use crate::messages::{CancelReserve, Reserve, ServerInfo, StopAccepting};

/// The data-plane runtime. `run` is async, and a tokio runtime dropped in
/// an async context panics, so every exit path — the normal end and each
/// early `?` — shuts it down in the background instead.
struct DataPlane(Option<tokio::runtime::Runtime>);

impl DataPlane {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle().clone()
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// How long killed sessions get to write their records after the grace.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Bound listening sockets, by frontend name.
#[derive(Debug, Default)]
pub struct BoundListeners(pub HashMap<String, Vec<TcpListener>>);

impl BoundListeners {
    pub fn insert(&mut self, frontend: &str, listener: TcpListener) {
        self.0.entry(frontend.to_owned()).or_default().push(listener);
    }
}

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
    Ok(bound)
}

struct BackendHandle {
    reserve: Recipient<Reserve>,
    cancel: Recipient<CancelReserve>,
    params: BackendParams,
}

fn start_backend(b: &BackendSettings, log: &Logger) -> BackendHandle {
    let name: Arc<str> = Arc::from(b.name.as_str());
    let log = log.new(o!("backend" => b.name.clone()));
    let ctx: Context<BackendQueue> = Context::new();
    let queue = ctx.address();
    let mut servers = Vec::new();
    let mut setups = Vec::new();
    for (i, s) in b.servers.iter().enumerate() {
        let id = ServerId(i);
        let slog = log.new(o!("server" => s.name.clone()));
        let server = Server::new(id, s.maxconn, queue.clone().recipient(), slog).start();
        let info = Arc::new(ServerInfo { id, name: s.name.clone(), backend: name.clone(), address: s.address });
        servers.push((info, server.recipient()));
        setups.push(ServerSetup { maxconn: s.maxconn, weight: s.weight, maxqueue: s.maxqueue });
    }
    let balancer = balance::for_kind(b.balance, b.servers.len());
    ctx.run(BackendQueue::new(&setups, servers, b.maxqueue, balancer, log));
    BackendHandle {
        reserve: queue.clone().recipient(),
        cancel: queue.recipient(),
        params: BackendParams {
            name,
            queue_timeout: b.timeout.queue,
            connect_timeout: b.timeout.connect,
            server_timeout: b.timeout.server,
            retries: b.retries,
            redispatch: b.redispatch,
            servers: b.servers.len(),
        },
    }
}

/// Runs the broker until `shutdown` resolves, then stops accepting, lets
/// sessions finish for up to `global.grace`, closes the rest and returns.
pub async fn run(
    settings: Settings,
    mut listeners: BoundListeners,
    log: Logger,
    extensions: Extensions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let workers = settings.global.worker_threads();
    let data_plane = DataPlane(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("usher-data")
            .enable_all()
            .build()
            .context("cannot start the data-plane threads")?,
    ));

    // Listener ids and the watchdog first: every frontend needs its address.
    let mut plan = Vec::new();
    let mut infos = Vec::new();
    for (fi, f) in settings.frontends.iter().enumerate() {
        for listener in listeners.0.remove(&f.name).unwrap_or_default() {
            let id = ListenerId(infos.len());
            let address = listener.local_addr().context("listener without an address")?;
            listener.set_nonblocking(true)?;
            infos.push(ListenerInfo { id, frontend: f.name.clone(), address });
            plan.push((FrontendId(fi), id, listener));
        }
    }
    if let Some(name) = listeners.0.keys().next() {
        return Err(anyhow!("a listener was given for frontend {name:?}, which is not configured"));
    }
    let fd_budget = FdBudget::measure().context("cannot read the fd limit")?;
    let maxconn = fd_budget.effective_maxconn(settings.global.maxconn)?;
    info!(log, "fd budget";
        "nofile" => fd_budget.nofile, "hard" => fd_budget.hard, "in_use" => fd_budget.in_use,
        "spare" => fd_budget.spare, "sessions" => fd_budget.sessions, "maxconn" => maxconn,
        "maxconn_source" => if settings.global.maxconn == 0 { "fd budget" } else { "global.maxconn" });
    let admission = AdmissionConfig {
        global_maxconn: maxconn,
        global_rate: settings.global.maxconnrate,
        frontends: settings
            .frontends
            .iter()
            .map(|f| FrontendLimits { maxconn: f.maxconn, rate: f.rate_limit })
            .collect(),
        listeners: plan
            .iter()
            .map(|(f, _, _)| ListenerLimits { frontend: *f, maxconn: settings.frontends[f.0].bind_maxconn })
            .collect(),
    };
    let watchdog = ResourceWatchdog::new(
        WatchdogConfig {
            admission,
            listeners: infos,
            frontend_names: settings.frontends.iter().map(|f| f.name.clone()).collect(),
            stress_cooldowns: settings.frontends.iter().map(|f| f.stress.cooldown).collect(),
            maxconn_recheck: settings.watchdog.maxconn_recheck,
            shortage_recheck: settings.watchdog.shortage_recheck,
            warn_interval: settings.watchdog.warn_interval,
            fd_budget: Some(fd_budget),
            maxconn_from_fd_budget: settings.global.maxconn == 0,
        },
        log.new(o!("actor" => "watchdog")),
    )
    .start();

    let backends: HashMap<&str, BackendHandle> =
        settings.backends.iter().map(|b| (b.name.as_str(), start_backend(b, &log))).collect();

    let epoch = tokio::time::Instant::now();
    let kill = CancellationToken::new();
    let tracker = TaskTracker::new();
    let session_ids = Arc::new(AtomicU64::new(1));
    let mut fronts = Vec::new();
    for (i, f) in settings.frontends.iter().enumerate() {
        let backend = backends.get(f.backend.as_str()).ok_or_else(|| anyhow!("backend {} missing", f.backend))?;
        fronts.push(Arc::new(FrontendContext {
            id: FrontendId(i),
            name: Arc::from(f.name.as_str()),
            client_timeout: f.timeout.client,
            stress: f.stress.timeout.clone(),
            bufsize: settings.global.bufsize as usize,
            backend: backend.params.clone(),
            reserve: backend.reserve.clone(),
            cancel: backend.cancel.clone(),
            closed: watchdog.clone().recipient(),
            admission: extensions.admission.clone(),
            // Access records name their frontend themselves.
            log: log.clone(),
            kill: kill.clone(),
            tracker: tracker.clone(),
            session_ids: session_ids.clone(),
            epoch,
            priority_class: f.priority_class,
            priority_offset_ms: f.priority_offset,
        }));
    }

    let mut running = Vec::new();
    for (frontend, id, listener) in plan {
        let front = fronts[frontend.0].clone();
        let accept = AcceptLoop {
            id,
            listener,
            front: front.clone(),
            admit: watchdog.clone().recipient(),
            give_back: watchdog.clone().recipient(),
            shortage: watchdog.clone().recipient(),
            maxaccept: settings.global.maxaccept,
            error_pause: settings.watchdog.shortage_recheck,
            stop: CancellationToken::new(),
            log: log.new(o!("frontend" => front.name.to_string())),
        };
        running.push(Listener::new(accept, data_plane.handle())?.start());
    }
    info!(log, "started";
        "frontends" => settings.frontends.len(), "backends" => settings.backends.len(),
        "listeners" => running.len(), "workers" => workers, "maxconn" => maxconn);
    if settings.frontends.is_empty() {
        warn!(log, "no frontends configured: nothing to accept");
    }

    shutdown.await;

    info!(log, "shutting down"; "grace" => %humantime::format_duration(settings.global.grace),
        "sessions" => tracker.len());
    for listener in &running {
        let _ = listener.send(StopAccepting).await;
    }
    tracker.close();
    if tokio::time::timeout(settings.global.grace, tracker.wait()).await.is_err() {
        warn!(log, "grace expired, closing sessions"; "sessions" => tracker.len());
        kill.cancel();
        if tokio::time::timeout(KILL_WAIT, tracker.wait()).await.is_err() {
            warn!(log, "sessions still open after kill"; "sessions" => tracker.len());
        }
    }
    drop(data_plane);
    info!(log, "stopped");
    Ok(())
}
