//! Topology: the registry of which actors run — frontends, backends,
//! servers and listeners, by stable id — and the handlers that start them,
//! reload them and hand them out.
//!
//! The first start is a reload from nothing, so both go through one path:
//! [`planner::plan`] decides every step without touching anything,
//! [`bind::open_listeners`] opens the new addresses, and only then does the
//! commit (`commit.rs`) apply the plan, which cannot fail. A rejected reload
//! changes nothing. After the first start, the plan runs off the actor
//! thread and the commit in slices (`staged_reload.rs`), so a big reload
//! never stalls the other actors.
//!
//! Servers from DNS: the Topology keeps the *declared* settings (what the
//! files, or a run-time change, say) apart from the settings in force,
//! which add the servers the last known resolutions make
//! ([`crate::discovery`]). Every apply — first start, reload, run-time
//! change, a name that resolved differently — expands the declared
//! settings from the last known resolutions and goes through the same
//! plan → bind → commit. So a reload never drops resolved servers, and a
//! re-resolution changes servers exactly as a reload would.
//!
//! Ids are stable for the life of the process: a frontend, backend,
//! listener or server removed by a reload leaves its slot behind (its
//! sessions may still run and report to it), and new ones come after. So
//! the watchdog's counts, the stats and the consistent-hash ring of every
//! server that stays are untouched.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::{self, ActorFutureExt, LocalBoxActorFuture};
use actix::prelude::*;
use slog::{error, info, o, warn, Logger};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bind;
use super::staged_reload::Applied;
use crate::backend::balance::BalancerRegistry;
use super::planner::{self, ListenerKey, RunningSnapshot};
use crate::config::{ReloadError, ReloadSummary};
use crate::admission::listener::SessionStarter;
use crate::admission::{Listener, ResourceWatchdog, SessionGauge};
use crate::backend::{BackendLoad, BackendQueue, Server};
use crate::config::{BackendSettings, ConfigErrors, FrontendSettings, ServerSettings, Settings};
use crate::discovery::{self, DiscoveryPlan, Resolutions, Resolved};
use crate::extension::{Event, PluggedHooks};
use crate::ids::{FrontendId, ServerId};
use crate::observe::Stats;
use crate::session::{BackendParams, SessionThreads};
use super::handle::{Actors, BackendControl, BrokerHandle};

/// Re-reads the configuration from the sources the broker was started with.
pub type ConfigLoader = Box<dyn Fn() -> Result<Settings, ConfigErrors> + Send>;

/// Re-read the configuration (or take `settings`) and apply the difference.
#[derive(Message)]
#[rtype(result = "Result<ReloadSummary, ReloadError>")]
pub struct Reload {
    /// `None`: re-read with the broker's [`ConfigLoader`].
    pub settings: Option<Settings>,
}

/// Asks for a [`BrokerHandle`] on the settings in force.
#[derive(Message, Debug)]
#[rtype(result = "BrokerHandle")]
pub struct GetHandle;

/// Asks for the addresses of the running actors.
#[derive(Message, Debug)]
#[rtype(result = "Actors")]
pub struct GetActors;

/// Shutdown: no more reloads; answers what the stop needs.
#[derive(Message, Debug)]
#[rtype(result = "Stopping")]
pub struct BeginShutdown;

/// The listeners to stop and the current `global.grace` and
/// `global.close_spread`.
pub struct Stopping {
    pub listeners: Vec<Addr<Listener>>,
    pub grace: Duration,
    pub close_spread: Option<Duration>,
}

/// What every frontend context and accept loop shares.
pub struct Shared {
    /// The pool of data-plane threads: accept loops run there.
    pub data_plane: tokio::runtime::Handle,
    pub watchdog: Addr<ResourceWatchdog>,
    pub stats: Addr<Stats>,
    pub global_gauge: Arc<SessionGauge>,
    pub hooks: PluggedHooks,
    /// Builds each backend's balancer by name, at start and reloads.
    pub balancers: Arc<BalancerRegistry>,
    pub kill: CancellationToken,
    /// Where sessions run (the pool, and the actors' thread's share).
    pub session_threads: SessionThreads,
    pub session_ids: Arc<AtomicU64>,
    /// Cluster mode (`[cluster]`, fixed at start): every limited server
    /// starts with no share and takes the share the cluster gives it.
    pub clustered: bool,
    pub epoch: tokio::time::Instant,
    pub log: Logger,
}

pub(super) struct FrontendSlot {
    pub(super) name: String,
    /// The settings it runs with (its last ones once removed); shared with
    /// the snapshot a reload is planned from.
    pub(super) settings: Arc<FrontendSettings>,
    pub(super) live: bool,
    pub(super) gauge: Arc<SessionGauge>,
}

pub(super) struct BackendSlot {
    pub(super) settings: Arc<BackendSettings>,
    pub(super) live: bool,
    pub(super) queue: Addr<BackendQueue>,
    /// The load its queue publishes once a routing rule spills from it.
    pub(super) load: Arc<BackendLoad>,
    /// By server id.
    pub(super) servers: Vec<ServerSlot>,
    pub(super) params: BackendParams,
}

pub(super) struct ServerSlot {
    pub(super) settings: Arc<ServerSettings>,
    /// `None` once removed.
    pub(super) actor: Option<Addr<Server>>,
}

pub(super) struct ListenerSlot {
    pub(super) key: ListenerKey,
    pub(super) frontend: FrontendId,
    pub(super) address: SocketAddr,
    /// False once a reload closed it.
    pub(super) open: bool,
    pub(super) actor: Option<Addr<Listener>>,
    pub(super) context: watch::Sender<Arc<dyn SessionStarter>>,
    pub(super) gauge: Arc<SessionGauge>,
}

pub struct Topology {
    /// The settings in force: the declared ones with their servers from DNS.
    pub(super) settings: Arc<Settings>,
    /// The settings as the files (and run-time changes) declare them.
    pub(super) declared: Arc<Settings>,
    /// Last known answers of the names servers come from.
    pub(super) resolutions: Resolutions,
    /// The names the resolution task resolves; `None` until one is needed,
    /// and again once stopping (the task then ends).
    dns_plan: Option<watch::Sender<DiscoveryPlan>>,
    /// Its own address, for the resolution task's reports (weak: the
    /// task never keeps the Topology alive). Set once it runs: the task
    /// starts only then, so its first report always finds it.
    me: Option<actix::WeakAddr<Topology>>,
    pub(super) loader: Option<ConfigLoader>,
    pub(super) shared: Shared,
    pub(super) frontends: Vec<FrontendSlot>,
    pub(super) backends: Vec<BackendSlot>,
    pub(super) listeners: Vec<ListenerSlot>,
    /// The backends' actors as `GetActors` lists them, kept until a commit
    /// changes what runs (`commit.rs` clears it): listing 10 000 servers,
    /// a name cloned each, held this thread 1.0-1.7 ms on every `/stats`
    /// read.
    pub(super) listed_backends: Option<Arc<Vec<BackendControl>>>,
    stopping: bool,
    pub(super) log: Logger,
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
            declared: empty.clone(),
            settings: empty,
            resolutions: Resolutions::new(),
            dns_plan: None,
            me: None,
            loader,
            shared,
            frontends: Vec::new(),
            backends: Vec::new(),
            listeners: Vec::new(),
            listed_backends: None,
            stopping: false,
            log,
        };
        topology.apply(settings, bound).map_err(|err| anyhow::anyhow!("{err}"))?;
        Ok(ctx.run(topology))
    }

    /// Plans going to `declared` with its servers from DNS (the last known
    /// resolutions), opens its new addresses, then commits. Fails
    /// (changing nothing) only when a new address cannot be opened.
    fn apply(
        &mut self,
        declared: Settings,
        bound: HashMap<String, Vec<TcpListener>>,
    ) -> Result<ReloadSummary, ReloadError> {
        let expanded = self.resolutions.expand(&declared).settings;
        let plan = planner::plan(&self.running().view(), expanded);
        let opened = bind::open_listeners(&plan.listeners.open, bound)?;
        let summary = self.commit(plan, opened);
        self.adopt_declared(Arc::new(declared));
        Ok(summary)
    }

    /// `declared` is in force (its servers from DNS included): the
    /// resolution task follows its names.
    pub(super) fn adopt_declared(&mut self, declared: Arc<Settings>) {
        let previous = std::mem::replace(&mut self.declared, declared);
        // Freeing 10 000 servers' settings took 0.2-0.3 ms of this thread.
        super::plan_thread::drop_off_the_actors_thread(previous);
        self.follow_names();
    }

    /// Tells the resolution task which names to resolve, starting it when
    /// the first one appears.
    fn follow_names(&mut self) {
        let Some(me) = self.me.clone().filter(|_| !self.stopping) else {
            return;
        };
        let plan = DiscoveryPlan {
            resolvers: self.declared.resolvers.clone(),
            queries: discovery::resolution::queries(&self.declared),
        };
        if let Some(sender) = &self.dns_plan {
            sender.send_if_modified(|current| std::mem::replace(current, plan.clone()) != plan);
            return;
        }
        if plan.queries.is_empty() {
            return;
        }
        let (sender, plans) = watch::channel(plan);
        let report = Box::new(move |resolved: Resolved| match me.upgrade() {
            Some(topology) => {
                topology.do_send(DnsOutcome(resolved));
                true
            }
            None => false,
        });
        match discovery::start(plans, report, self.log.new(o!("actor" => "resolver"))) {
            Ok(()) => self.dns_plan = Some(sender),
            Err(err) => error!(self.log, "resolver cannot start"; "error" => %err),
        }
    }

    /// What runs, as the planner sees it.
    pub(super) fn running(&self) -> RunningSnapshot {
        let mut taking = self.begin_snapshot();
        while !self.continue_snapshot(&mut taking, usize::MAX) {}
        taking.snapshot
    }

    /// A snapshot of what runs, its backends still to be taken
    /// ([`continue_snapshot`](Self::continue_snapshot)).
    pub(super) fn begin_snapshot(&self) -> SnapshotInProgress {
        SnapshotInProgress {
            snapshot: RunningSnapshot {
                settings: self.settings.clone(),
                frontends: self.frontends.iter().map(|f| f.live.then(|| f.settings.clone())).collect(),
                backends: Vec::with_capacity(self.backends.len()),
                listeners: self.listeners.iter().map(|l| l.open.then_some((l.key, l.address))).collect(),
            },
            servers: Vec::new(),
        }
    }

    /// Takes about `budget` more servers into `taking`; true once every
    /// backend is in. Each server costs a shared pointer's count, and with
    /// 10 000 servers whose settings have left the cache the whole took
    /// the actor thread 1.5-2.2 ms at once: a reload takes it in parts,
    /// between which nothing can change it (the Topology's mailbox waits
    /// for the whole apply).
    pub(super) fn continue_snapshot(&self, taking: &mut SnapshotInProgress, budget: usize) -> bool {
        let mut taken = 0;
        while let Some(slot) = self.backends.get(taking.snapshot.backends.len()) {
            if !slot.live {
                taking.snapshot.backends.push(None);
                continue;
            }
            let from = taking.servers.len();
            let to = slot.servers.len().min(from.saturating_add(budget - taken));
            taking.servers.extend(slot.servers[from..to].iter().map(|s| s.actor.is_some().then(|| s.settings.clone())));
            taken += to - from;
            if to < slot.servers.len() {
                return false;
            }
            let servers = std::mem::take(&mut taking.servers);
            taking.snapshot.backends.push(Some((slot.settings.clone(), servers)));
            if taken >= budget {
                return taking.snapshot.backends.len() == self.backends.len();
            }
        }
        true
    }

    /// The running actors, in declaration order of the settings in force.
    fn actors(&mut self) -> Actors {
        let backends = match &self.listed_backends {
            Some(listed) => listed.clone(),
            None => self.listed_backends.insert(Arc::new(self.list_backends())).clone(),
        };
        let frontends = self
            .settings
            .frontends
            .iter()
            .filter_map(|f| Some((f.name.clone(), self.live_frontend(&f.name)?)))
            .collect();
        Actors {
            watchdog: self.shared.watchdog.clone(),
            backends,
            frontends,
            stats: self.shared.stats.clone(),
            settings: self.settings.clone(),
            dns: Arc::new(self.resolutions.report(&self.declared)),
        }
    }

    /// Configured backends in declaration order, each with its live
    /// servers' actors.
    fn list_backends(&self) -> Vec<BackendControl> {
        let live_backends: HashMap<&str, usize> = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.live)
            .map(|(i, b)| (b.settings.name.as_str(), i))
            .collect();
        self
            .settings
            .backends
            .iter()
            .filter_map(|b| {
                let index = *live_backends.get(b.name.as_str())?;
                let slot = &self.backends[index];
                // By name, once: a backend of thousands of servers is
                // listed in linear time.
                let live: HashMap<&str, (ServerId, &Addr<Server>)> = slot
                    .servers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| Some((s.settings.name.as_str(), (ServerId(i), s.actor.as_ref()?))))
                    .collect();
                let servers = b
                    .servers
                    .iter()
                    .filter_map(|s| {
                        let (id, actor) = live.get(s.name.as_str())?;
                        Some((s.name.clone(), *id, (*actor).clone()))
                    })
                    .collect();
                Some(BackendControl { name: b.name.clone(), index, queue: slot.queue.clone(), servers })
            })
            .collect()
    }

    pub(super) fn live_backend(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.live && b.settings.name == name)
    }

    fn live_frontend(&self, name: &str) -> Option<FrontendId> {
        self.frontends.iter().position(|f| f.live && f.name == name).map(FrontendId)
    }

    /// Applies `settings`, or re-reads the configuration first.
    fn reload(&mut self, settings: Option<Settings>) -> LocalBoxActorFuture<Topology, Applied> {
        if self.stopping {
            return fut::ready(Err(ReloadError::Stopping)).boxed_local();
        }
        match (settings, self.loader.take()) {
            (Some(settings), loader) => {
                self.loader = loader;
                self.apply_in_steps(Arc::new(settings))
            }
            (None, Some(loader)) => self.reload_in_steps(loader),
            (None, None) => fut::ready(Err(ReloadError::NoSource)).boxed_local(),
        }
    }
}

impl Actor for Topology {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.me = Some(ctx.address().downgrade());
        self.follow_names();
    }
}

impl Handler<Reload> for Topology {
    type Result = AtomicResponse<Self, Result<ReloadSummary, ReloadError>>;

    fn handle(&mut self, msg: Reload, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let applying = self.reload(msg.settings).map(move |result, topology: &mut Topology, _| {
            let result = result.map(|(summary, holds)| {
                // `apply_ms`: from the request to the commit's end, the
                // files' reading and the plan included; `longest_hold_ms`:
                // the longest the actor thread (which every actor shares)
                // was held at once — what a session in flight could wait.
                info!(topology.log, "reload done";
                    "changes" => summary.changes.len(), "restart_needed" => summary.restart_needed_list(),
                    "apply_ms" => millis(started.elapsed()), "longest_hold_ms" => millis(holds.longest),
                    "hold_ms" => millis(holds.total));
                summary
            });
            if let Err(err) = &result {
                warn!(topology.log, "reload rejected, configuration unchanged"; "error" => %err);
            }
            let observers = topology.shared.hooks.observers();
            if !observers.is_empty() {
                observers.publish(match &result {
                    Ok(summary) => Event::ReloadDone(Arc::new(summary.clone())),
                    Err(err) => Event::ReloadRejected(Arc::new(err.clone())),
                });
            }
            result
        });
        AtomicResponse::new(applying.boxed_local())
    }
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e3
}

impl Handler<super::runtime_topology::Amend> for Topology {
    type Result = AtomicResponse<Self, Result<ReloadSummary, super::handle::ControlError>>;

    /// A run-time change: the edit reads the settings in force here, in the
    /// mailbox every reload goes through, so no change is lost to another.
    fn handle(&mut self, msg: super::runtime_topology::Amend, _: &mut Self::Context) -> Self::Result {
        use super::handle::ControlError;
        if self.stopping {
            return AtomicResponse::new(fut::ready(Err(ControlError::Stopped)).boxed_local());
        }
        // Declared settings: servers from DNS are the resolutions' to change.
        let applying = self.amend_in_steps(msg.edit).map(|edited, topology: &mut Topology, _| {
            // An edit that cannot apply (an unknown server…) is the
            // caller's error; only an apply that fails is logged.
            match edited? {
                Ok((summary, _)) => {
                    info!(topology.log, "run-time change done"; "changes" => summary.changes.len());
                    Ok(summary)
                }
                Err(err) => {
                    warn!(topology.log, "run-time change rejected, configuration unchanged"; "error" => %err);
                    Err(ControlError::Rejected(err.to_string()))
                }
            }
        });
        AtomicResponse::new(applying.boxed_local())
    }
}

impl Handler<GetHandle> for Topology {
    type Result = MessageResult<GetHandle>;

    fn handle(&mut self, _: GetHandle, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(BrokerHandle::new(ctx.address(), self.settings.clone(), self.shared.hooks.clone()))
    }
}

impl Handler<GetActors> for Topology {
    type Result = MessageResult<GetActors>;

    fn handle(&mut self, _: GetActors, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.actors())
    }
}

impl Handler<BeginShutdown> for Topology {
    type Result = MessageResult<BeginShutdown>;

    fn handle(&mut self, _: BeginShutdown, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        // The resolution task ends.
        self.dns_plan = None;
        let listeners = self.listeners.iter().filter_map(|l| l.actor.clone()).collect();
        let global = &self.settings.global;
        MessageResult(Stopping { listeners, grace: global.grace, close_spread: global.close_spread })
    }
}

/// A snapshot of what runs, taken in parts.
pub(super) struct SnapshotInProgress {
    pub(super) snapshot: RunningSnapshot,
    /// The servers taken so far of the backend being taken.
    servers: Vec<Option<Arc<ServerSettings>>>,
}

/// One resolution's outcome, from the resolution task.
#[derive(Message)]
#[rtype(result = "()")]
struct DnsOutcome(Resolved);

impl Handler<DnsOutcome> for Topology {
    type Result = AtomicResponse<Self, ()>;

    /// A name resolved differently: its backends' servers change as a
    /// reload of the declared settings changes them. A failure keeps the
    /// servers and warns, at most once a minute per name.
    fn handle(&mut self, msg: DnsOutcome, _: &mut Self::Context) -> Self::Result {
        let done = || AtomicResponse::new(fut::ready(()).boxed_local());
        if self.stopping {
            return done();
        }
        let Resolved { key, outcome } = msg.0;
        let error = outcome.as_ref().err().cloned();
        let recorded = self.resolutions.record(&key, outcome, tokio::time::Instant::now());
        if let (true, Some(error)) = (recorded.warn, error) {
            warn!(self.log, "name resolution failed";
                "query" => &key.query, "kind" => key.kind.as_str(), "error" => error,
                "servers_kept" => self.resolutions.report(&self.declared).iter().any(|s| s.query == key.query && s.state.as_str() == "stale"));
        }
        if !recorded.changed {
            return done();
        }
        let applying = self.apply_in_steps(self.declared.clone()).map(move |result, topology: &mut Topology, _| match result {
            Ok((summary, _)) => info!(topology.log, "servers from DNS changed";
                "query" => &key.query, "kind" => key.kind.as_str(), "changes" => summary.changes.len()),
            Err(err) => warn!(topology.log, "servers from DNS not applied";
                "query" => &key.query, "kind" => key.kind.as_str(), "error" => %err),
        });
        AtomicResponse::new(applying.boxed_local())
    }
}
