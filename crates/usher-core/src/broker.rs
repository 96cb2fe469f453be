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

use crate::actors::server::CheckSpec;
use crate::actors::stats::Gauges;
use crate::actors::watchdog::{ListenerInfo, WatchdogConfig};
use crate::actors::{BackendQueue, Listener, ResourceWatchdog, Server, Stats};
use crate::balance;
use crate::bookkeeping::stats::{SessionGauge, StatsBook};
use crate::bookkeeping::{AdmissionConfig, FrontendLimits, ListenerLimits};
use crate::bookkeeping::{BackendSetup, HealthConfig, ServerSetup};
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

struct BackendHandle {
    reserve: Recipient<Reserve>,
    cancel: Recipient<CancelReserve>,
    params: BackendParams,
}

fn start_backend(b: &BackendSettings, log: &Logger) -> (BackendHandle, BackendControl) {
    let name: Arc<str> = Arc::from(b.name.as_str());
    let log = log.new(o!("backend" => b.name.clone()));
    let ctx: Context<BackendQueue> = Context::new();
    let queue = ctx.address();
    let mut servers = Vec::new();
    let mut setups = Vec::new();
    let mut control = Vec::new();
    for (i, s) in b.servers.iter().enumerate() {
        let id = ServerId(i);
        let slog = log.new(o!("server" => s.name.clone()));
        let c = &s.check;
        let health = HealthConfig {
            checks: c.enabled,
            inter: c.inter,
            fastinter: c.fastinter,
            downinter: c.downinter,
            rise: c.rise,
            fall: c.fall,
            error_limit: c.error_limit,
            slowstart: s.slowstart,
            weight: s.weight,
            maxconn: s.maxconn,
        };
        let spec = CheckSpec {
            timeout: if c.timeout.is_zero() { c.inter } else { c.timeout },
            send: c.send.clone().into_bytes(),
            expect: c.expect.clone().into_bytes(),
        };
        let server = Server::new(
            id,
            s.name.clone(),
            s.address,
            health,
            spec,
            queue.clone().recipient(),
            queue.clone().recipient(),
            slog,
        )
        .start();
        let observe = (c.enabled && c.error_limit > 0).then(|| server.clone().recipient());
        let info = Arc::new(ServerInfo {
            id,
            name: s.name.clone(),
            backend: name.clone(),
            address: s.address,
            send_proxy: s.send_proxy,
            observe,
        });
        servers.push((info, server.clone().recipient()));
        control.push((s.name.clone(), server));
        setups.push(ServerSetup {
            maxconn: s.maxconn,
            weight: s.weight,
            maxqueue: s.maxqueue,
            backup: s.backup,
            minconn: s.minconn,
        });
    }
    let weights: Vec<u32> = b.servers.iter().map(|s| s.weight).collect();
    let balancer = balance::for_kind(b.balance, &weights, b.draws, b.hash_balance_factor);
    let setup = BackendSetup { maxqueue: b.maxqueue, redispatch: b.redispatch, fullconn: b.fullconn };
    ctx.run(BackendQueue::new(&setups, servers, setup, balancer, log));
    let handle = BackendHandle {
        reserve: queue.clone().recipient(),
        cancel: queue.clone().recipient(),
        params: BackendParams {
            name,
            queue_timeout: b.timeout.queue,
            connect_timeout: b.timeout.connect,
            server_timeout: b.timeout.server,
            retries: b.retries,
            redispatch: b.redispatch,
            servers: b.servers.len(),
        },
    };
    (handle, BackendControl { name: b.name.clone(), queue, servers: control })
}

/// Addresses of the running actors, for the admin API, tests and
/// extensions: everything a control plane may talk to.
#[derive(Clone)]
pub struct BrokerHandle {
    pub watchdog: Addr<ResourceWatchdog>,
    pub backends: Vec<BackendControl>,
    /// Traffic counters and live-session gauges.
    pub stats: Addr<Stats>,
}

/// One backend's actors.
#[derive(Clone)]
pub struct BackendControl {
    pub name: String,
    pub queue: Addr<BackendQueue>,
    /// Servers in declaration order, by name.
    pub servers: Vec<(String, Addr<Server>)>,
}

impl BrokerHandle {
    pub fn server(&self, backend: &str, server: &str) -> Option<&Addr<Server>> {
        let b = self.backends.iter().find(|b| b.name == backend)?;
        b.servers.iter().find(|(name, _)| name == server).map(|(_, addr)| addr)
    }
}

/// Runs the broker until `shutdown` resolves, then stops accepting, lets
/// sessions finish for up to `global.grace`, closes the rest and returns.
pub async fn run(
    settings: Settings,
    mut listeners: BoundListeners,
    log: Logger,
    mut extensions: Extensions,
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

    let mut backends: HashMap<&str, BackendHandle> = HashMap::new();
    let mut controls = Vec::new();
    for b in &settings.backends {
        let (handle, control) = start_backend(b, &log);
        backends.insert(b.name.as_str(), handle);
        controls.push(control);
    }
    // Traffic figures: gauges kept by the accept loops, counters fed by
    // each session's end.
    let gauges = Gauges {
        global: Arc::new(SessionGauge::default()),
        frontends: settings.frontends.iter().map(|_| Arc::new(SessionGauge::default())).collect(),
        listeners: plan.iter().map(|_| Arc::new(SessionGauge::default())).collect(),
    };
    let backend_of = settings
        .frontends
        .iter()
        .map(|f| settings.backends.iter().position(|b| b.name == f.backend).unwrap_or(usize::MAX))
        .collect();
    let server_counts: Vec<usize> = settings.backends.iter().map(|b| b.servers.len()).collect();
    let stats = Stats::new(StatsBook::new(backend_of, &server_counts), gauges.clone()).start();
    let handle = BrokerHandle { watchdog: watchdog.clone(), backends: controls, stats: stats.clone() };
    if let Some(on_start) = extensions.on_start.take() {
        on_start(handle.clone());
    }

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
            stats: stats.clone().recipient(),
            sessions: gauges.frontends[i].clone(),
            admission: extensions.admission.clone(),
            // Access records name their frontend themselves.
            log: log.clone(),
            kill: kill.clone(),
            tracker: tracker.clone(),
            session_ids: session_ids.clone(),
            epoch,
            priority_class: f.priority_class,
            priority_offset_ms: f.priority_offset,
            accept_proxy: f.accept_proxy,
            proxy_timeout: f.timeout.proxy,
        }));
    }

    let mut running = Vec::new();
    for (frontend, id, listener) in plan {
        let front = fronts[frontend.0].clone();
        let accept = AcceptLoop {
            id,
            listener: Some(listener),
            front: front.clone(),
            admit: watchdog.clone().recipient(),
            give_back: watchdog.clone().recipient(),
            shortage: watchdog.clone().recipient(),
            maxaccept: settings.global.maxaccept,
            error_pause: settings.watchdog.shortage_recheck,
            stop: CancellationToken::new(),
            log: log.new(o!("frontend" => front.name.to_string())),
            gauges: [gauges.global.clone(), gauges.listeners[id.0].clone()],
        };
        running.push(Listener::new(accept, data_plane.handle())?.start());
    }
    let admin = match listeners.1.take() {
        Some(listener) => Some(crate::admin::start(listener, &settings, handle, log.new(o!("actor" => "admin")))?),
        None => None,
    };
    info!(log, "started";
        "frontends" => settings.frontends.len(), "backends" => settings.backends.len(),
        "listeners" => running.len(), "workers" => workers, "maxconn" => maxconn);
    if settings.frontends.is_empty() {
        warn!(log, "no frontends configured: nothing to accept");
    }
    if let Some(on_ready) = extensions.on_ready.take() {
        on_ready();
    }

    shutdown.await;
    if let Some(admin) = &admin {
        admin.stopping();
    }

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
    // The admin API stays up through the grace, so the drain can be watched.
    if let Some(admin) = admin {
        admin.stop().await;
    }
    drop(data_plane);
    info!(log, "stopped");
    Ok(())
}
