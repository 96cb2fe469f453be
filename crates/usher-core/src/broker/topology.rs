//! Topology: which actors exist. It starts the backends, servers, frontends
//! and listeners of a configuration, and on `Reload` applies the difference
//! to the running ones (the decisions are in [`crate::broker::reload_plan`]).
//!
//! The first start is a reload from nothing, so both go through one path.
//! Ids are stable for the life of the process: a frontend, backend,
//! listener or server removed by a reload leaves its slot behind (its
//! sessions may still run and report to it), and new ones come after. So
//! the watchdog's counts, the stats and the consistent-hash ring of every
//! server that stays are untouched.
//!
//! Order matters, and everything below runs inside one handler (nothing
//! else runs on this arbiter in between):
//! 1. bind the new addresses first — if one fails, nothing changed;
//! 2. backends: new servers are announced to their BackendQueue before they
//!    lend it their first slots; removed servers' queues are balanced again;
//! 3. the watchdog and the Stats actor learn the new ids before any session
//!    can use them;
//! 4. every listener gets its frontend's new context (sessions accepted from
//!    then on use it; established and queued sessions keep theirs);
//! 5. new listeners start, removed ones close.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use slog::{info, o, warn, Logger};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::backend_queue::{ReconfigureBackend, RetireBackend, ServerChange};
use crate::backend::server::{CheckSpec, ReconfigureServer, RetireServer};
use crate::observe::stats::{Gauges, ResizeStats};
use crate::admission::watchdog::{ListenerInfo, ReconfigureAdmission};
use crate::admission::{Listener, ResourceWatchdog};
use crate::backend::{BackendQueue, Server};
use crate::observe::Stats;
use crate::backend::balance;
use crate::admission::SessionGauge;
use crate::admission::{AdmissionConfig, FrontendLimits, ListenerLimits, StopAccepting};
use crate::backend::{BackendSetup, HealthConfig, ServerInfo, ServerSetup};
use crate::config::{BackendSettings, ConfigErrors, FrontendSettings, ServerSettings, Settings};
use crate::admission::accept::{AcceptLoop, SessionStarter};
use crate::proxy_protocol;
use crate::session::{BackendParams, FrontendContext, SessionHandles, SessionSettings};
use crate::extension::CheckClient;
use super::handle::{BackendControl, BrokerHandle};
use crate::ids::{BackendId, FrontendId, ListenerId, ServerId};
use crate::broker::reload_plan::{self as reload, ReloadError, ReloadSummary, ServerPlan};

/// Re-reads the configuration from the sources the broker was started with.
pub type ConfigLoader = Box<dyn Fn() -> Result<Settings, ConfigErrors> + Send>;

/// Re-read the configuration (or take `settings`) and apply the difference.
#[derive(Message)]
#[rtype(result = "Result<ReloadSummary, ReloadError>")]
pub struct Reload {
    /// `None`: re-read with the broker's [`ConfigLoader`].
    pub settings: Option<Settings>,
}

/// Asks for the current [`BrokerHandle`].
#[derive(Message, Debug)]
#[rtype(result = "BrokerHandle")]
pub struct GetHandle;

/// Shutdown: no more reloads; answers the listeners to stop and the grace.
#[derive(Message, Debug)]
#[rtype(result = "(Vec<Addr<Listener>>, Duration)")]
pub struct BeginShutdown;

/// What every frontend context and accept loop shares.
pub struct Shared {
    pub data_plane: tokio::runtime::Handle,
    pub watchdog: Addr<ResourceWatchdog>,
    pub stats: Addr<Stats>,
    pub global_gauge: Arc<SessionGauge>,
    pub admission: Vec<Recipient<CheckClient>>,
    pub kill: CancellationToken,
    pub tracker: TaskTracker,
    pub session_ids: Arc<AtomicU64>,
    pub epoch: tokio::time::Instant,
    pub log: Logger,
}

struct FrontendSlot {
    name: String,
    /// The settings it runs with (its last ones once removed).
    settings: FrontendSettings,
    live: bool,
    gauge: Arc<SessionGauge>,
}

struct BackendSlot {
    settings: BackendSettings,
    live: bool,
    queue: Addr<BackendQueue>,
    /// By server id.
    servers: Vec<ServerSlot>,
    params: BackendParams,
}

struct ServerSlot {
    settings: ServerSettings,
    /// `None` once removed.
    actor: Option<Addr<Server>>,
}

/// Listeners are matched by configured address; the same address listed
/// twice (e.g. `127.0.0.1:0`) is told apart by its occurrence.
type ListenerKey = (SocketAddr, usize);

struct ListenerSlot {
    key: ListenerKey,
    frontend: FrontendId,
    address: SocketAddr,
    /// False once a reload closed it.
    open: bool,
    actor: Option<Addr<Listener>>,
    context: watch::Sender<Arc<dyn SessionStarter>>,
    gauge: Arc<SessionGauge>,
}

pub struct Topology {
    settings: Arc<Settings>,
    loader: Option<ConfigLoader>,
    shared: Shared,
    frontends: Vec<FrontendSlot>,
    backends: Vec<BackendSlot>,
    listeners: Vec<ListenerSlot>,
    stopping: bool,
    log: Logger,
}

impl Topology {
    /// Starts everything `settings` describes. `bound` holds the listening
    /// sockets the caller bound, by frontend, in the order of its `bind`
    /// list (addresses without one are bound here).
    pub fn start(
        settings: Settings,
        bound: HashMap<String, Vec<TcpListener>>,
        loader: Option<ConfigLoader>,
        shared: Shared,
    ) -> anyhow::Result<Addr<Topology>> {
        let log = shared.log.new(o!("actor" => "topology"));
        let empty = Arc::new(Settings { frontends: Vec::new(), backends: Vec::new(), ..settings.clone() });
        let ctx: Context<Topology> = Context::new();
        let mut topology = Topology {
            settings: empty,
            loader,
            shared,
            frontends: Vec::new(),
            backends: Vec::new(),
            listeners: Vec::new(),
            stopping: false,
            log,
        };
        topology.apply(settings, bound).map_err(|err| anyhow::anyhow!("{err}"))?;
        Ok(ctx.run(topology))
    }

    fn broker_handle(&self, me: &Addr<Topology>) -> BrokerHandle {
        let backends = self
            .settings
            .backends
            .iter()
            .filter_map(|b| {
                let index = self.live_backend(&b.name)?;
                let slot = &self.backends[index];
                let servers = b
                    .servers
                    .iter()
                    .filter_map(|s| {
                        let (id, server) = live_server(slot, &s.name)?;
                        Some((s.name.clone(), id, server.actor.clone()?))
                    })
                    .collect();
                Some(BackendControl { name: b.name.clone(), index, queue: slot.queue.clone(), servers })
            })
            .collect();
        let frontends = self
            .settings
            .frontends
            .iter()
            .filter_map(|f| Some((f.name.clone(), self.live_frontend(&f.name)?)))
            .collect();
        BrokerHandle {
            watchdog: self.shared.watchdog.clone(),
            backends,
            frontends,
            stats: self.shared.stats.clone(),
            topology: me.clone(),
            settings: self.settings.clone(),
        }
    }

    fn live_backend(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.live && b.settings.name == name)
    }

    fn live_frontend(&self, name: &str) -> Option<FrontendId> {
        self.frontends.iter().position(|f| f.live && f.name == name).map(FrontendId)
    }

    /// Applies `new` over what runs. Fails (changing nothing) only when a
    /// new address cannot be bound.
    fn apply(
        &mut self,
        new: Settings,
        mut bound: HashMap<String, Vec<TcpListener>>,
    ) -> Result<ReloadSummary, ReloadError> {
        let first = self.listeners.is_empty() && self.backends.is_empty() && self.frontends.is_empty();
        let restart_needed = if first { Vec::new() } else { reload::restart_needed(&self.settings, &new) };
        let new = if first { new } else { reload::applicable(&self.settings, new) };
        let mut changes = Vec::new();

        // 1. Sockets for new addresses, before anything changes.
        let wanted = listener_keys(&new);
        let mut opened: HashMap<ListenerKey, TcpListener> = HashMap::new();
        for (key, frontend, backlog) in &wanted {
            if self.listeners.iter().any(|l| l.open && l.key == *key) {
                continue;
            }
            let given = bound.get_mut(frontend).and_then(|list| (!list.is_empty()).then(|| list.remove(0)));
            let socket = match given {
                Some(socket) => socket,
                None => crate::net::bind_listener(key.0, *backlog)
                    .with_context(|| format!("frontends.{frontend}.bind: cannot listen on {}", key.0))
                    .map_err(|err| ReloadError::Bind(format!("{err:#}")))?,
            };
            socket.set_nonblocking(true).map_err(|err| ReloadError::Bind(err.to_string()))?;
            opened.insert(*key, socket);
        }
        if let Some((name, _)) = bound.iter().find(|(_, list)| !list.is_empty()) {
            return Err(ReloadError::Bind(format!(
                "a listener was given for frontend {name:?}, which is not configured"
            )));
        }

        // 2. Backends.
        for b in &new.backends {
            match self.live_backend(&b.name) {
                Some(index) => self.update_backend(index, b, &mut changes),
                None => {
                    self.backends.push(start_backend(b, &self.shared.log));
                    if !first {
                        info!(self.log, "backend added"; "backend" => &b.name);
                        changes.push(format!("backend {} added", b.name));
                    }
                }
            }
        }
        for slot in self.backends.iter_mut().filter(|s| s.live) {
            if new.backend(&slot.settings.name).is_none() {
                slot.live = false;
                slot.queue.do_send(RetireBackend);
                for server in &mut slot.servers {
                    if let Some(actor) = server.actor.take() {
                        actor.do_send(RetireServer);
                    }
                }
                info!(self.log, "backend removed"; "backend" => &slot.settings.name);
                changes.push(format!("backend {} removed", slot.settings.name));
            }
        }

        // 3. Frontends and listeners, by id.
        for f in &new.frontends {
            match self.live_frontend(&f.name) {
                Some(id) => {
                    let slot = &mut self.frontends[id.0];
                    if slot.settings != *f {
                        info!(self.log, "frontend changed"; "frontend" => &f.name);
                        changes.push(format!("frontend {} changed", f.name));
                        slot.settings = f.clone();
                    }
                }
                None => {
                    self.frontends.push(FrontendSlot {
                        name: f.name.clone(),
                        settings: f.clone(),
                        live: true,
                        gauge: Arc::new(SessionGauge::default()),
                    });
                    if !first {
                        info!(self.log, "frontend added"; "frontend" => &f.name);
                        changes.push(format!("frontend {} added", f.name));
                    }
                }
            }
        }
        for slot in self.frontends.iter_mut().filter(|f| f.live) {
            if new.frontend(&slot.name).is_none() {
                slot.live = false;
                info!(self.log, "frontend removed"; "frontend" => &slot.name);
                changes.push(format!("frontend {} removed", slot.name));
            }
        }
        self.settings = Arc::new(new);
        let contexts = self.frontend_contexts();
        let frontend_of = |frontends: &[FrontendSlot], name: &str| {
            frontends.iter().position(|s| s.live && s.name == name).map(FrontendId).expect("frontends were added above")
        };
        let mut closing = Vec::new();
        for slot in self.listeners.iter_mut().filter(|l| l.open) {
            match wanted.iter().find(|(key, _, _)| *key == slot.key) {
                Some((_, f, _)) => slot.frontend = frontend_of(&self.frontends, f),
                None => {
                    slot.open = false;
                    closing.push((slot.actor.take(), slot.address));
                }
            }
        }
        let mut starting = Vec::new();
        for (key, f, _) in &wanted {
            let Some(socket) = opened.remove(key) else { continue };
            let frontend = frontend_of(&self.frontends, f);
            let address = socket.local_addr().map_err(|err| ReloadError::Bind(err.to_string()))?;
            let context = contexts.get(&frontend).expect("every live frontend has a backend").clone();
            starting.push((ListenerId(self.listeners.len()), socket));
            self.listeners.push(ListenerSlot {
                key: *key,
                frontend,
                address,
                open: true,
                actor: None,
                context: watch::channel(context as Arc<dyn SessionStarter>).0,
                gauge: Arc::new(SessionGauge::default()),
            });
        }
        // The watchdog and the Stats actor learn the new ids before any
        // session can use them (their mailboxes are in order).
        self.tell_watchdog_and_stats();

        // 4. Contexts: sessions accepted from now on use the new settings.
        for slot in self.listeners.iter().filter(|l| l.open) {
            if let Some(context) = contexts.get(&slot.frontend) {
                slot.context.send_replace(context.clone() as Arc<dyn SessionStarter>);
            }
        }

        // 5. Listeners.
        for (id, socket) in starting {
            let slot = &self.listeners[id.0];
            let front = &self.frontends[slot.frontend.0];
            let accept = AcceptLoop {
                id,
                listener: Some(socket),
                front: slot.context.subscribe(),
                admit: self.shared.watchdog.clone().recipient(),
                closed: self.shared.watchdog.clone().recipient(),
                give_back: self.shared.watchdog.clone().recipient(),
                shortage: self.shared.watchdog.clone().recipient(),
                maxaccept: self.settings.global.maxaccept,
                error_pause: self.settings.watchdog.shortage_recheck,
                stop: CancellationToken::new(),
                log: self.shared.log.new(o!("frontend" => front.name.clone())),
                gauges: [self.shared.global_gauge.clone(), slot.gauge.clone()],
            };
            let listener = Listener::new(accept, self.shared.data_plane.clone())
                .map_err(|err| ReloadError::Bind(err.to_string()))?
                .start();
            if !first {
                info!(self.log, "listener added"; "frontend" => &front.name, "address" => %slot.address);
                changes.push(format!("frontend {}: listener {} added", front.name, slot.address));
            }
            self.listeners[id.0].actor = Some(listener);
        }
        for (listener, address) in closing {
            info!(self.log, "listener removed"; "address" => %address);
            changes.push(format!("listener {address} removed"));
            if let Some(listener) = listener {
                listener.do_send(StopAccepting);
            }
        }
        Ok(ReloadSummary { changes, restart_needed })
    }

    /// Applies a backend's new settings and servers.
    fn update_backend(&mut self, index: usize, b: &BackendSettings, changes: &mut Vec<String>) {
        let log = self.shared.log.new(o!("backend" => b.name.clone()));
        let slot = &mut self.backends[index];
        let mut server_changes = Vec::new();
        let mut starting = Vec::new();
        // Removed, or replaced: retire first (ids of the others stay).
        for (i, server) in slot.servers.iter_mut().enumerate() {
            let Some(actor) = &server.actor else { continue };
            let plan = b
                .servers
                .iter()
                .find(|s| s.name == server.settings.name)
                .map(|s| reload::server_plan(&server.settings, s));
            if matches!(plan, None | Some(ServerPlan::Replace)) {
                actor.do_send(RetireServer);
                server.actor = None;
                server_changes.push(ServerChange::Remove { id: ServerId(i) });
                if plan.is_none() {
                    info!(self.log, "server removed"; "backend" => &b.name, "server" => &server.settings.name);
                    changes.push(format!("backend {}: server {} removed", b.name, server.settings.name));
                }
            }
        }
        for s in &b.servers {
            match live_server(slot, &s.name) {
                Some((id, server)) => {
                    if server.settings == *s {
                        continue;
                    }
                    let actor = server.actor.clone().expect("live");
                    actor.do_send(ReconfigureServer { health: health_config(s), check: check_spec(s) });
                    let info = server_info(id, s, &slot.settings.name, &actor);
                    server_changes.push(ServerChange::Update { id, info, setup: server_setup(s) });
                    slot.servers[id.0].settings = s.clone();
                    info!(self.log, "server changed"; "backend" => &b.name, "server" => &s.name);
                    changes.push(format!("backend {}: server {} changed", b.name, s.name));
                }
                None => {
                    let id = ServerId(slot.servers.len());
                    let ctx: Context<Server> = Context::new();
                    let actor = ctx.address();
                    let info = server_info(id, s, &b.name, &actor);
                    server_changes.push(ServerChange::Add { id, info, setup: server_setup(s) });
                    slot.servers.push(ServerSlot { settings: s.clone(), actor: Some(actor) });
                    starting.push((ctx, new_server(id, s, &slot.queue, &log)));
                    info!(self.log, "server added"; "backend" => &b.name, "server" => &s.name);
                    changes.push(format!("backend {}: server {} added", b.name, s.name));
                }
            }
        }
        let settings_changed = !same_backend_settings(&slot.settings, b);
        if settings_changed {
            info!(self.log, "backend changed"; "backend" => &b.name);
            changes.push(format!("backend {} changed", b.name));
        }
        let order_changed = slot.settings.servers.iter().map(|s| &s.name).ne(b.servers.iter().map(|s| &s.name));
        if settings_changed || !server_changes.is_empty() || order_changed {
            let weights: Vec<u32> =
                slot.servers.iter().map(|s| if s.actor.is_some() { s.settings.weight } else { 0 }).collect();
            slot.queue.do_send(ReconfigureBackend {
                setup: backend_setup(b),
                balancer: balance::for_kind(b.balance, &weights, b.draws, b.hash_balance_factor),
                servers: server_changes,
            });
        }
        // Announced to the queue above: only now may they lend it slots.
        for (ctx, server) in starting {
            ctx.run(server);
        }
        slot.settings = b.clone();
        slot.params = backend_params(b);
    }

    /// The watchdog's and the Stats actor's view of every id.
    fn tell_watchdog_and_stats(&self) {
        let admission = AdmissionConfig {
            global_maxconn: 0, // kept by the watchdog
            global_rate: self.settings.global.maxconnrate,
            frontends: self
                .frontends
                .iter()
                .map(|f| FrontendLimits { maxconn: f.settings.maxconn, rate: f.settings.rate_limit })
                .collect(),
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerLimits {
                    frontend: l.frontend,
                    maxconn: self.frontends[l.frontend.0].settings.bind_maxconn,
                })
                .collect(),
        };
        let listeners = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerInfo {
                id: ListenerId(i),
                frontend: self.frontends[l.frontend.0].name.clone(),
                address: l.address,
                closed: !l.open,
            })
            .collect();
        self.shared.watchdog.do_send(ReconfigureAdmission {
            admission,
            listeners,
            frontend_names: self.frontends.iter().map(|f| f.name.clone()).collect(),
            stress_cooldowns: self.frontends.iter().map(|f| f.settings.stress.cooldown).collect(),
        });
        self.shared.stats.do_send(ResizeStats {
            frontends: self.frontends.len(),
            servers: self.backends.iter().map(|b| b.servers.len()).collect(),
            gauges: Gauges {
                global: self.shared.global_gauge.clone(),
                frontends: self.frontends.iter().map(|f| f.gauge.clone()).collect(),
                listeners: self.listeners.iter().map(|l| l.gauge.clone()).collect(),
            },
        });
    }

    fn frontend_contexts(&self) -> HashMap<FrontendId, Arc<FrontendContext>> {
        let mut contexts = HashMap::new();
        for (i, slot) in self.frontends.iter().enumerate().filter(|(_, f)| f.live) {
            let Some(b) = self.live_backend(&slot.settings.backend) else { continue };
            let backend = &self.backends[b];
            let settings =
                SessionSettings::new(FrontendId(i), &slot.settings, BackendId(b), &backend.params, &self.settings.global);
            let s = &self.shared;
            let handles = SessionHandles {
                reserve: backend.queue.clone().recipient(),
                cancel: backend.queue.clone().recipient(),
                stats: s.stats.clone().recipient(),
                gauge: slot.gauge.clone(),
                admission: s.admission.clone(),
                // Access records name their frontend themselves.
                log: s.log.clone(),
                kill: s.kill.clone(),
                tracker: s.tracker.clone(),
                session_ids: s.session_ids.clone(),
                epoch: s.epoch,
            };
            contexts.insert(FrontendId(i), Arc::new(FrontendContext::new(settings, handles)));
        }
        contexts
    }
}

/// Every configured listening address: its key, frontend and backlog.
fn listener_keys(settings: &Settings) -> Vec<(ListenerKey, String, u32)> {
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut keys = Vec::new();
    for f in &settings.frontends {
        for addr in &f.bind {
            let n = seen.entry(*addr).or_default();
            keys.push(((*addr, *n), f.name.clone(), f.backlog));
            *n += 1;
        }
    }
    keys
}

fn live_server<'a>(slot: &'a BackendSlot, name: &str) -> Option<(ServerId, &'a ServerSlot)> {
    slot.servers
        .iter()
        .enumerate()
        .find(|(_, s)| s.actor.is_some() && s.settings.name == name)
        .map(|(i, s)| (ServerId(i), s))
}

/// Backend settings other than its servers.
fn same_backend_settings(a: &BackendSettings, b: &BackendSettings) -> bool {
    BackendSettings { servers: Vec::new(), ..a.clone() } == BackendSettings { servers: Vec::new(), ..b.clone() }
}

fn health_config(s: &ServerSettings) -> HealthConfig {
    let c = &s.check;
    HealthConfig {
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
    }
}

fn check_spec(s: &ServerSettings) -> CheckSpec {
    let c = &s.check;
    CheckSpec {
        timeout: if c.timeout.is_zero() { c.inter } else { c.timeout },
        proxy_header: proxy_protocol::encode_unknown(s.send_proxy).unwrap_or_default(),
        send: c.send.clone().into_bytes(),
        expect: c.expect.clone().into_bytes(),
    }
}

fn server_setup(s: &ServerSettings) -> ServerSetup {
    ServerSetup { maxconn: s.maxconn, weight: s.weight, maxqueue: s.maxqueue, backup: s.backup, minconn: s.minconn }
}

fn backend_setup(b: &BackendSettings) -> BackendSetup {
    BackendSetup { maxqueue: b.maxqueue, redispatch: b.redispatch, fullconn: b.fullconn }
}

fn backend_params(b: &BackendSettings) -> BackendParams {
    BackendParams {
        name: Arc::from(b.name.as_str()),
        queue_timeout: b.timeout.queue,
        connect_timeout: b.timeout.connect,
        server_timeout: b.timeout.server,
        retries: b.retries,
        redispatch: b.redispatch,
        servers: b.servers.len(),
    }
}

fn server_info(id: ServerId, s: &ServerSettings, backend: &str, actor: &Addr<Server>) -> Arc<ServerInfo> {
    let c = &s.check;
    Arc::new(ServerInfo {
        id,
        name: Arc::from(s.name.as_str()),
        backend: Arc::from(backend),
        address: s.address,
        send_proxy: s.send_proxy,
        observe: (c.enabled && c.error_limit > 0).then(|| actor.clone().recipient()),
        release: actor.clone().recipient(),
    })
}

fn new_server(id: ServerId, s: &ServerSettings, queue: &Addr<BackendQueue>, log: &Logger) -> Server {
    Server::new(
        id,
        s.name.clone(),
        s.address,
        health_config(s),
        check_spec(s),
        queue.clone().recipient(),
        queue.clone().recipient(),
        log.new(o!("server" => s.name.clone())),
    )
}

/// Starts one backend: its BackendQueue and a Server per server.
fn start_backend(b: &BackendSettings, log: &Logger) -> BackendSlot {
    let log = log.new(o!("backend" => b.name.clone()));
    let ctx: Context<BackendQueue> = Context::new();
    let queue = ctx.address();
    let mut infos = Vec::new();
    let mut slots = Vec::new();
    let mut servers = Vec::new();
    for (i, s) in b.servers.iter().enumerate() {
        let id = ServerId(i);
        let server = new_server(id, s, &queue, &log).start();
        infos.push(server_info(id, s, &b.name, &server));
        servers.push(server_setup(s));
        slots.push(ServerSlot { settings: s.clone(), actor: Some(server) });
    }
    let weights: Vec<u32> = b.servers.iter().map(|s| s.weight).collect();
    let balancer = balance::for_kind(b.balance, &weights, b.draws, b.hash_balance_factor);
    ctx.run(BackendQueue::new(&servers, infos, backend_setup(b), balancer, log));
    BackendSlot { settings: b.clone(), live: true, queue, servers: slots, params: backend_params(b) }
}

impl Actor for Topology {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<Reload> for Topology {
    type Result = Result<ReloadSummary, ReloadError>;

    fn handle(&mut self, msg: Reload, _: &mut Self::Context) -> Self::Result {
        let result = if self.stopping {
            Err(ReloadError::Stopping)
        } else {
            let settings = match msg.settings {
                Some(settings) => Ok(settings),
                None => match &self.loader {
                    Some(load) => load().map_err(ReloadError::Config),
                    None => Err(ReloadError::NoSource),
                },
            };
            settings.and_then(|settings| self.apply(settings, HashMap::new()))
        };
        match &result {
            Ok(summary) => info!(self.log, "reload done";
                "changes" => summary.changes.len(), "restart_needed" => summary.restart_needed.join(",")),
            Err(err) => warn!(self.log, "reload rejected, configuration unchanged"; "error" => %err),
        }
        result
    }
}

impl Handler<GetHandle> for Topology {
    type Result = MessageResult<GetHandle>;

    fn handle(&mut self, _: GetHandle, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.broker_handle(&ctx.address()))
    }
}

impl Handler<BeginShutdown> for Topology {
    type Result = MessageResult<BeginShutdown>;

    fn handle(&mut self, _: BeginShutdown, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let listeners = self.listeners.iter().filter_map(|l| l.actor.clone()).collect();
        MessageResult((listeners, self.settings.global.grace))
    }
}
