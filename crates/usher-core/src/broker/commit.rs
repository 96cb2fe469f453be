//! The second half of a reload: the Topology applies a bound [`Plan`].
//! Nothing here can fail — every fallible step (configuration, binding,
//! reading the new addresses) happened before.
//!
//! Order matters. The Topology's mailbox waits for the whole commit (no
//! other change interleaves), but a reload commits its backend steps in
//! slices, letting the other actors run in between
//! ([`super::staged_reload`]); the steps from 2 on run as one:
//! 1. backends: new servers are announced to their BackendQueue before they
//!    lend it their first slots; removed servers' queues are balanced again.
//!    A backend's update reaches its queue in parts of about a slice
//!    ([`PendingUpdate`]); a new backend bigger than what is left of the
//!    slice starts empty and takes its servers the same way; a removed
//!    backend's servers are told to retire a slice at a time;
//! 2. frontends and listeners take their new ids;
//! 3. the watchdog and the Stats actor learn the new ids before any session
//!    can use them;
//! 4. every listener gets its frontend's new context (sessions accepted from
//!    then on use it; established and queued sessions keep theirs);
//! 5. new listeners start, removed ones close.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::Arc;

use actix::prelude::*;
use slog::o;
use tokio::sync::watch;

use super::bind::OpenedSocket;
use super::planner::{BackendStep, BackendUpdate, FrontendStep, ListenerPlan, Plan, ServerStep};
use crate::config::{ReloadChange, Settings};
use crate::config::ReloadSummary;
use super::topology::{BackendSlot, FrontendSlot, ListenerSlot, ServerSlot, Topology};
use super::wiring::{
    self, backend_params, backend_setup, balancer, carries_same_info, check_spec, health_config, new_server, server_info,
    server_setup,
};
use crate::admission::listener::{ListenerWiring, SessionStarter};
use crate::admission::watchdog::{ListenerInfo, ReconfigureAdmission};
use crate::admission::{AdmissionConfig, FrontendLimits, Listener, ListenerLimits, SessionGauge, StopAccepting};
use crate::backend::backend_queue::{ReconfigureBackend, RetireBackend, ServerChange};
use crate::backend::server::{ReconfigureServer, RetireServer};
use crate::backend::{BackendReconfig, BalancerUpdate, Server};
use crate::config::{BackendSettings, ZeroForNone};
use crate::ids::{BackendId, FrontendId, ListenerId, ServerId};
use crate::observe::stats::{Gauges, ResizeStats};
use crate::spawn::StressSource;
use crate::session::{BackendTarget, FrontendContext, FrontendHooks, Routes, SessionHandles, SessionSettings};

/// New listeners' sockets, to start; closed listeners' actors, to stop.
type ListenerTurnover = (Vec<(ListenerId, TcpListener)>, Vec<Option<Addr<Listener>>>);

/// A bound plan being committed: the backends' steps go in slices (each a
/// bounded amount of work, see [`Topology::commit_slice`]), the rest at once.
pub(super) struct StagedCommit {
    settings: Settings,
    restart_needed: Vec<crate::config::RestartKey>,
    backends: VecDeque<BackendStep>,
    /// The backend update in progress, when it spans slices.
    updating: Option<PendingUpdate>,
    /// Servers of removed backends still to be told to retire.
    retiring: VecDeque<Addr<Server>>,
    frontends: Vec<FrontendStep>,
    listeners: ListenerPlan,
    opened: Vec<OpenedSocket>,
    changes: Vec<ReloadChange>,
    /// Changes logged so far (they are logged slice by slice too).
    logged: usize,
}

/// A backend update in progress. A backend of thousands of servers is
/// updated over several slices, and its BackendQueue and Servers hear of
/// it in parts, one per slice, in the order a whole update was always
/// applied in: new and changed servers first (each part: the changed
/// Servers, then the BackendQueue, then the new Servers start), then the
/// backend's settings and balancer, then the removals (the retired Servers,
/// then the BackendQueue). See [`crate::backend::QueueCore::reconfigure_part`].
pub(super) struct PendingUpdate {
    id: BackendId,
    settings: BackendSettings,
    /// Removed or replaced servers, with their actors taken from the slot
    /// at once (so the new balancer already weighs them 0).
    retire: VecDeque<(ServerId, Option<Addr<Server>>)>,
    servers: VecDeque<ServerStep>,
    /// For a new backend started empty: the indexes in `settings.servers`
    /// of the servers still to add (copied part by part).
    adding: std::ops::Range<usize>,
    reconfigure: bool,
    /// Any server is added, changed or removed (a new balancer is built).
    servers_change: bool,
    /// The part with the backend's own settings was sent.
    backend_sent: bool,
    log: slog::Logger,
}

impl PendingUpdate {
    fn is_done(&self) -> bool {
        self.retire.is_empty() && self.servers.is_empty() && self.adding.is_empty() && self.backend_sent
    }

    /// The next new or changed server, if any is left.
    fn next_server(&mut self) -> Option<ServerStep> {
        self.servers.pop_front().or_else(|| {
            let i = self.adding.next()?;
            Some(ServerStep::Add { id: ServerId(i), settings: self.settings.servers[i].clone() })
        })
    }
}

impl StagedCommit {
    /// `before_listeners`: `plan.changes_before_listeners()`, when it was
    /// already taken (off the actor thread).
    pub(super) fn new(plan: Plan, opened: Vec<OpenedSocket>, before_listeners: Option<Vec<ReloadChange>>) -> StagedCommit {
        let addresses: Vec<_> = opened.iter().map(|o| o.address).collect();
        let mut changes = before_listeners.unwrap_or_else(|| plan.changes_before_listeners());
        changes.extend(plan.listener_changes(&addresses));
        changes.extend(plan.hooks.iter().cloned());
        let Plan { settings, restart_needed, backends, frontends, listeners, .. } = plan;
        StagedCommit {
            settings,
            restart_needed,
            backends: backends.into(),
            updating: None,
            retiring: VecDeque::new(),
            frontends,
            listeners,
            opened,
            changes,
            logged: 0,
        }
    }
}

impl Topology {
    /// Applies `plan`, whose new listeners are `opened` (in order), at once.
    pub(super) fn commit(&mut self, plan: Plan, opened: Vec<OpenedSocket>) -> ReloadSummary {
        let mut staged = StagedCommit::new(plan, opened, None);
        while !self.commit_slice(&mut staged, usize::MAX) {}
        self.finish_commit(staged)
    }

    /// Commits backend steps until about `budget` servers were started,
    /// changed or retired (at least one step), then logs up to `budget`
    /// changes. True once every backend step is committed and every
    /// change logged. Between slices the actor
    /// thread serves the others: sessions meanwhile see each backend
    /// either before or after its step, as they would see a reload that
    /// raced them on another thread.
    pub(super) fn commit_slice(&mut self, staged: &mut StagedCommit, budget: usize) -> bool {
        // What runs changes from here: `/stats` must list it as it is.
        self.listed_backends = None;
        let mut work = 0;
        let mut grown = false;
        while work < budget {
            if !staged.retiring.is_empty() {
                let take = staged.retiring.len().min(budget - work);
                for actor in staged.retiring.drain(..take) {
                    actor.do_send(RetireServer);
                }
                work += take;
                continue;
            }
            if let Some(mut pending) = staged.updating.take() {
                let before = self.backends[pending.id.0].servers.len();
                work += self.update_part(&mut pending, budget - work);
                // A session may be seated on a server of this part before
                // the last slice.
                grown |= self.backends[pending.id.0].servers.len() > before;
                if pending.is_done() {
                    self.finish_update(pending);
                } else {
                    staged.updating = Some(pending);
                }
                continue;
            }
            let Some(step) = staged.backends.pop_front() else { break };
            match step {
                BackendStep::Update(update) => staged.updating = Some(self.begin_update(update)),
                // A new backend too big for what is left of the slice starts
                // empty and takes its servers in parts (a spawned one
                // starts whole: its process gate is sized for its servers).
                BackendStep::Add { id, settings } if settings.spawn.is_none() && settings.servers.len() > budget - work => {
                    grown = true;
                    work += 1;
                    staged.updating = Some(self.begin_add(id, settings));
                }
                BackendStep::Remove { id, .. } => {
                    work += 1;
                    let slot = &mut self.backends[id.0];
                    slot.live = false;
                    slot.queue.do_send(RetireBackend);
                    staged.retiring.extend(slot.servers.iter_mut().filter_map(|s| s.actor.take()));
                }
                BackendStep::Add { id, settings } => {
                    grown = true;
                    work += 1 + settings.servers.len();
                    self.start_whole_backend(id, settings, &staged.settings);
                }
            }
        }
        if grown {
            // A session may be seated on a new server before the last
            // slice: the Stats actor must have room to count it when it
            // ends (its mailbox is in order).
            self.tell_stats();
        }
        // Then the changes' records, with what is left of the budget and
        // in slices of their own: a reload of 10 000 servers logs as many.
        let committed = staged.backends.is_empty() && staged.updating.is_none() && staged.retiring.is_empty();
        if committed {
            let end = staged.changes.len().min(staged.logged.saturating_add(budget.saturating_sub(work).max(1)));
            for change in &staged.changes[staged.logged..end] {
                change.log(&self.log);
            }
            staged.logged = end;
        }
        committed && staged.logged == staged.changes.len()
    }

    /// The frontends, listeners, watchdog and Stats actor, once every
    /// backend step is committed.
    pub(super) fn finish_commit(&mut self, staged: StagedCommit) -> ReloadSummary {
        self.listed_backends = None;
        let StagedCommit { settings, restart_needed, frontends, listeners, opened, changes, logged, .. } = staged;
        for step in frontends {
            self.commit_frontend(step);
        }
        self.settings = Arc::new(settings);
        let contexts = self.frontend_contexts();
        let (starting, closing) = self.commit_listeners(listeners, opened, &contexts);
        // The watchdog and the Stats actor learn the new ids before any
        // session can use them (their mailboxes are in order).
        self.tell_watchdog_and_stats();

        // Contexts: sessions accepted from now on use the new settings.
        for slot in self.listeners.iter().filter(|l| l.open) {
            if let Some(context) = contexts.get(&slot.frontend) {
                slot.context.send_replace(context.clone() as Arc<dyn SessionStarter>);
            }
        }
        for (id, socket) in starting {
            self.start_listener(id, socket);
        }
        for change in &changes[logged..] {
            change.log(&self.log);
        }
        for listener in closing.into_iter().flatten() {
            listener.do_send(StopAccepting);
        }
        ReloadSummary { changes, restart_needed }
    }

    /// Starts a new backend with all its servers at once. `all`: the
    /// settings being applied (a spawned backend's processes learn the
    /// stress mode of the frontends that feed it).
    fn start_whole_backend(&mut self, id: BackendId, settings: BackendSettings, all: &crate::config::Settings) {
        debug_assert_eq!(id, BackendId(self.backends.len()), "planned after every id in use");
        let stress = settings
            .spawn
            .is_some()
            .then(|| StressSource { watchdog: self.shared.watchdog.clone(), frontends: feeders(all, &settings.name) });
        self.backends.push(start_backend(Arc::new(settings), &self.shared, stress));
    }

    fn begin_update(&mut self, update: BackendUpdate) -> PendingUpdate {
        let BackendUpdate { id, settings, retire, servers, reconfigure, .. } = update;
        let slot = &mut self.backends[id.0];
        PendingUpdate {
            log: self.shared.log.new(o!("backend" => settings.name.clone())),
            id,
            servers_change: !retire.is_empty() || !servers.is_empty(),
            retire: retire.into_iter().map(|r| (r.id, slot.servers[r.id.0].actor.take())).collect(),
            servers: servers.into(),
            adding: 0..0,
            reconfigure,
            backend_sent: false,
            settings,
        }
    }

    /// Starts a new backend with no server, to be filled in parts like an
    /// update that adds every server.
    fn begin_add(&mut self, id: BackendId, mut settings: BackendSettings) -> PendingUpdate {
        debug_assert_eq!(id, BackendId(self.backends.len()), "planned after every id in use");
        // Copied without its servers (each is copied in its own part).
        let servers = std::mem::take(&mut settings.servers);
        let bare = settings.clone();
        settings.servers = servers;
        self.backends.push(start_backend(Arc::new(bare), &self.shared, None));
        PendingUpdate {
            log: self.shared.log.new(o!("backend" => settings.name.clone())),
            id,
            retire: VecDeque::new(),
            servers: VecDeque::new(),
            adding: 0..settings.servers.len(),
            reconfigure: true,
            servers_change: true,
            backend_sent: false,
            settings,
        }
    }

    /// Commits the next part of an update, about `budget` servers (at
    /// least one part): new and changed servers while any is left, then the
    /// backend's settings with the first removals, then the other removals.
    /// Returns how many servers it took.
    fn update_part(&mut self, pending: &mut PendingUpdate, budget: usize) -> usize {
        if pending.servers.is_empty() && pending.adding.is_empty() {
            return self.shrink_part(pending, budget);
        }
        let mut changes = Vec::new();
        let mut starting = Vec::new();
        while changes.len() < budget.max(1) {
            let Some(step) = pending.next_server() else { break };
            let slot = &mut self.backends[pending.id.0];
            match step {
                ServerStep::Update { id, settings: s } => {
                    let server = &mut slot.servers[id.0];
                    let actor = server.actor.clone().expect("the plan updates live servers only");
                    let info = (!carries_same_info(&server.settings, &s))
                        .then(|| server_info(id, &s, &actor, &slot.queue, &self.shared.kill));
                    changes.push(ServerChange::Update { id, info, setup: server_setup(&s) });
                    actor.do_send(ReconfigureServer { health: health_config(&s, self.shared.clustered), check: check_spec(&s) });
                    server.settings = Arc::new(s);
                }
                ServerStep::Add { id, settings: s } => {
                    debug_assert_eq!(id.0, slot.servers.len(), "planned after every id in use");
                    let ctx: Context<Server> = Context::new();
                    let actor = ctx.address();
                    let info = server_info(id, &s, &actor, &slot.queue, &self.shared.kill);
                    changes.push(ServerChange::Add { id, info, setup: server_setup(&s) });
                    let observers = self.shared.hooks.observers().server_state_changes(&slot.settings.name);
                    let server =
                        new_server(id, &s, &slot.queue, &pending.log, self.shared.clustered).with_state_changes(observers);
                    starting.push((ctx, server));
                    slot.servers.push(ServerSlot { settings: Arc::new(s), actor: Some(actor) });
                }
            }
        }
        let taken = changes.len();
        self.backends[pending.id.0].queue.do_send(ReconfigureBackend { servers: changes, backend: None });
        // Announced to the queue above: only now may they lend it slots.
        for (ctx, server) in starting {
            ctx.run(server);
        }
        taken
    }

    /// The part with the backend's own settings (and the first removals),
    /// or a part of the removals after it.
    fn shrink_part(&mut self, pending: &mut PendingUpdate, budget: usize) -> usize {
        let slot = &self.backends[pending.id.0];
        let backend = (!pending.backend_sent).then(|| {
            let b = &pending.settings;
            // A balancer keeps what it learnt (an EWMA, a ring) through a
            // reload that changes neither its servers nor its own keys, and
            // through one that changes only its servers if it follows them.
            let same_keys = (&slot.settings.balance, slot.settings.draws, slot.settings.hash_balance_factor)
                == (&b.balance, b.draws, b.hash_balance_factor);
            let built = || {
                let weights: Vec<u32> =
                    slot.servers.iter().map(|s| if s.actor.is_some() { s.settings.weight } else { 0 }).collect();
                balancer(b, &weights, &self.shared.balancers)
            };
            let balancer = match (same_keys, pending.servers_change) {
                (true, false) => BalancerUpdate::Keep,
                (true, true) => BalancerUpdate::ServersChanged(built()),
                (false, _) => BalancerUpdate::Replace(built()),
            };
            BackendReconfig { setup: backend_setup(b), balancer }
        });
        pending.backend_sent = true;
        let take = pending.retire.len().min(budget.max(1));
        let mut changes = Vec::with_capacity(take);
        for (id, actor) in pending.retire.drain(..take) {
            if let Some(actor) = actor {
                actor.do_send(RetireServer);
            }
            changes.push(ServerChange::Remove { id });
        }
        if pending.reconfigure {
            slot.queue.do_send(ReconfigureBackend { servers: changes, backend });
        }
        take.max(1)
    }

    /// Every part was sent: the slot takes the new settings.
    fn finish_update(&mut self, pending: PendingUpdate) {
        debug_assert!(pending.is_done(), "finished before every part was sent");
        let slot = &mut self.backends[pending.id.0];
        let b = pending.settings;
        let spawn_throttled = slot.params.spawn_throttled.take();
        slot.params = backend_params(&b);
        slot.params.spawn_throttled = spawn_throttled;
        slot.settings = Arc::new(b);
    }

    fn commit_frontend(&mut self, step: FrontendStep) {
        match step {
            FrontendStep::Add { id, settings } => {
                debug_assert_eq!(id, FrontendId(self.frontends.len()), "planned after every id in use");
                self.frontends.push(FrontendSlot {
                    name: settings.name.clone(),
                    settings: Arc::new(settings),
                    live: true,
                    gauge: Arc::new(SessionGauge::default()),
                });
            }
            FrontendStep::Change { id, settings } => self.frontends[id.0].settings = Arc::new(settings),
            FrontendStep::Remove { id, .. } => self.frontends[id.0].live = false,
        }
    }

    /// Listeners take their frontends' ids; closed ones leave their slot
    /// (their actors are returned, to stop), new ones get one (their
    /// sockets are returned, to start).
    fn commit_listeners(
        &mut self,
        plan: ListenerPlan,
        opened: Vec<OpenedSocket>,
        contexts: &HashMap<FrontendId, Arc<FrontendContext>>,
    ) -> ListenerTurnover {
        for (id, frontend) in plan.keep {
            self.listeners[id.0].frontend = frontend;
        }
        let closing = plan
            .close
            .iter()
            .map(|(id, _)| {
                let slot = &mut self.listeners[id.0];
                slot.open = false;
                slot.actor.take()
            })
            .collect();
        let mut starting = Vec::new();
        for (new, OpenedSocket { socket, address }) in plan.open.into_iter().zip(opened) {
            debug_assert_eq!(new.id, ListenerId(self.listeners.len()), "planned after every id in use");
            // Validated settings name an existing backend for every frontend.
            let context = contexts.get(&new.frontend).expect("every live frontend has a backend").clone();
            starting.push((new.id, socket));
            self.listeners.push(ListenerSlot {
                key: new.key,
                frontend: new.frontend,
                address,
                open: true,
                actor: None,
                context: watch::channel(context as Arc<dyn SessionStarter>).0,
                gauge: Arc::new(SessionGauge::default()),
            });
        }
        (starting, closing)
    }

    /// Starts the accept loop of a new listener on its opened socket.
    fn start_listener(&mut self, id: ListenerId, socket: TcpListener) {
        let slot = &self.listeners[id.0];
        let front = &self.frontends[slot.frontend.0];
        let wiring = ListenerWiring {
            front: slot.context.subscribe(),
            admit: self.shared.watchdog.clone().recipient(),
            closed: Arc::new(self.shared.watchdog.clone().recipient()),
            give_back: self.shared.watchdog.clone().recipient(),
            shortage: self.shared.watchdog.clone().recipient(),
            maxaccept: self.settings.global.maxaccept,
            error_pause: self.settings.watchdog.shortage_recheck,
            gauges: [self.shared.global_gauge.clone(), slot.gauge.clone()],
            log: self.shared.log.new(o!("frontend" => front.name.clone())),
        };
        // The plan bound the socket and read its address: nothing here can fail.
        let listener = Listener::new(id, socket, slot.address, wiring, self.shared.data_plane.clone());
        self.listeners[id.0].actor = Some(listener.start());
    }

    /// The watchdog's and the Stats actor's view of every id.
    fn tell_watchdog_and_stats(&self) {
        let admission = AdmissionConfig {
            global_maxconn: 0, // kept by the watchdog
            global_rate: self.settings.global.maxconnrate.or_zero(),
            frontends: self
                .frontends
                .iter()
                .map(|f| FrontendLimits { maxconn: f.settings.maxconn.or_zero(), rate: f.settings.rate_limit.or_zero() })
                .collect(),
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerLimits {
                    frontend: l.frontend,
                    maxconn: self.frontends[l.frontend.0].settings.bind_maxconn.or_zero(),
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
        self.tell_stats();
    }

    /// The Stats actor's view of every id (it only ever grows).
    fn tell_stats(&self) {
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
            // Validated settings name live backends only (default and rules).
            let Some(default) = self.backend_target(&slot.settings.backend) else { continue };
            let routes = Routes::new(&slot.settings, |name| self.backend_target(name));
            let settings = SessionSettings::new(FrontendId(i), &slot.settings, &self.settings.global);
            let s = &self.shared;
            let handles = SessionHandles {
                stats: s.stats.clone().recipient(),
                gauge: slot.gauge.clone(),
                // Access records name their frontend themselves.
                log: s.log.clone(),
                kill: s.kill.clone(),
                threads: s.session_threads.clone(),
                session_ids: s.session_ids.clone(),
                epoch: s.epoch,
            };
            let mut context = FrontendContext::new(settings, handles, default, routes);
            let hooks = s.hooks.for_frontend(&slot.settings, &self.settings);
            if !hooks.is_empty() {
                // A hook may route to any live backend.
                let backends = self.backends.iter().filter(|b| b.live).filter_map(|b| self.backend_target(&b.settings.name));
                context = context.with_hooks(FrontendHooks { hooks, backends: backends.collect() });
            }
            contexts.insert(FrontendId(i), Arc::new(context));
        }
        contexts
    }

    /// What a session needs of the live backend `name`.
    fn backend_target(&self, name: &str) -> Option<BackendTarget> {
        let b = self.live_backend(name)?;
        let backend = &self.backends[b];
        Some(BackendTarget::new(BackendId(b), &backend.params, &backend.queue, backend.load.clone()))
    }
}

/// The frontends whose sessions may go to `backend`: by default, by a
/// routing rule or as its overflow.
fn feeders(all: &crate::config::Settings, backend: &str) -> Vec<String> {
    all.frontends
        .iter()
        .filter(|f| {
            f.backend == backend
                || f.routes.iter().any(|r| r.backend == backend || r.overflow.as_ref().is_some_and(|o| o.backend == backend))
        })
        .map(|f| f.name.clone())
        .collect()
}

/// A new backend's actors, in the registry's slot.
fn start_backend(settings: Arc<BackendSettings>, shared: &super::topology::Shared, stress: Option<StressSource>) -> BackendSlot {
    let actors = wiring::start_backend_under(
        &settings,
        &shared.log,
        shared.clustered,
        &shared.kill,
        &shared.balancers,
        stress,
        &shared.hooks.observers().server_state_changes(&settings.name),
    );
    let servers = settings
        .servers
        .iter()
        .zip(actors.servers)
        .map(|(s, actor)| ServerSlot { settings: Arc::new(s.clone()), actor: Some(actor) })
        .collect();
    let mut params = backend_params(&settings);
    // The supervisor lives as long as the queue, which holds its address.
    params.spawn_throttled = actors.spawn.map(|(_, throttle)| throttle);
    BackendSlot {
        params,
        settings,
        live: true,
        queue: actors.queue,
        load: actors.load,
        servers,
    }
}
