//! BackendQueue: one backend's queues and balancing. The actor only hands
//! each message to its [`QueueCore`], which decides, answers the sessions
//! and logs; it stops when the core says the retired backend is done.
//!
//! Race-freedom: `Reserve` (grant from a held slot, or queue) and `Dequeue`
//! (a freed slot arrives) are both handled here, one message at a time, and
//! each handler runs to completion without awaiting. So between "no slot
//! free, queue this session" and "a slot freed, grant the oldest waiter"
//! nothing can slip in: a slot that frees after a session was queued arrives
//! as a `Dequeue` that finds it in the queue. No lock, no retry loop, no
//! "dequeuing" flag (the HAProxy seeds needed all three).
//!
//! A waiter is a channel to a session task. If the session is gone by the
//! time its slot is granted, the send fails and returns the [`Slot`], which
//! is disarmed (see the [`Waiter`] impl in [`protocol`](super::protocol));
//! the core offers the slot to the next waiter at once.
//!
//! With a timed queue discipline (codel, adaptive LIFO) the actor gives the
//! core the time of each message and keeps one timer armed at the moment
//! the core names ([`QueueCore::next_look`]): when it fires, the core sheds
//! the waiters its discipline refuses now. FIFO reads no clock and arms no
//! timer.
//!
//! A spawned backend's queue also runs its [`SpawnGate`]: the Servers'
//! statuses pass through it, and after each message it tells the
//! supervisor about waiters and load.
//!
//! [`Slot`]: super::Slot
//! [`Waiter`]: super::queue_core::Waiter

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;
use slog::Logger;
use tokio::sync::oneshot;

use crate::backend::{After, BackendLoad, BackendReconfig, BackendSetup, QueueCore, ReserveRequest, ServerSetup};
use crate::backend::spawn_gate::{GetSpawnReport, GetSpawnReporter, SetSlotGate, SetSpawnThrottled, SlotGate, SpawnActivity, SpawnLink};
use crate::backend::{CancelReserve, ConnectTimed, Dequeue, Reserve, ReserveReply, ServerInfo, ServerStatusChanged, SourceLeft};
use crate::ids::ServerId;

/// Asks for a [`QueueReport`].
#[derive(Message, Debug)]
#[rtype(result = "QueueReport")]
pub struct GetQueueReport;

/// What the BackendQueue knows, for stats.
#[derive(Debug, Clone, MessageResponse)]
pub struct QueueReport {
    pub backend_queue: usize,
    /// Longest the backend queue was.
    pub max_backend_queue: usize,
    /// Most sessions the servers served at once, together.
    pub max_served: u32,
    /// Per server, in declaration order.
    pub servers: Vec<ServerQueueReport>,
    /// Paused by an operator since then (`None`: granting).
    pub paused_since: Option<SystemTime>,
    /// Balancer picks the core did not follow (no such server, one that
    /// cannot take balanced traffic, a panic) since the backend started.
    pub balancer_bad_picks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerQueueReport {
    /// Sessions holding a slot.
    pub served: u32,
    /// Sessions in its own queue.
    pub queued: usize,
    /// The maxconn in force now if not the configured one (slowstart,
    /// dynamic maxconn, a runtime change).
    pub effective_maxconn: Option<u32>,
    /// Most sessions it served at once.
    pub max_served: u32,
    /// Longest its own queue was.
    pub max_queued: usize,
}

/// A server change of a reload; grants on a server carry its [`ServerInfo`].
pub type ServerChange = super::queue_core::ServerChange<Arc<ServerInfo>>;

/// A reload changed this backend: one part of its update (see
/// [`QueueCore::reconfigure_part`] for the order of the parts).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReconfigureBackend {
    pub servers: Vec<ServerChange>,
    /// The backend's own settings and balancer, in the part that carries
    /// them (after every new and changed server, before the removals).
    pub backend: Option<BackendReconfig>,
}

/// A reload removed this backend: no frontend sends it new sessions. It
/// serves the sessions already queued, then stops once nobody waits.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RetireBackend;

/// An operator pauses (`true`) or resumes (`false`) the backend.
#[derive(Message, Debug)]
#[rtype(result = "PauseReport")]
pub struct SetPaused(pub bool);

/// The backend's pause after a [`SetPaused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct PauseReport {
    /// Paused since then; `None` once resumed.
    pub since: Option<SystemTime>,
    /// The request changed it (pausing a paused backend does not).
    pub changed: bool,
    /// Sessions waiting in the backend's queues after the change.
    pub queued: usize,
}

/// An operator shuts down the sessions `server` serves now. Answers how
/// many held one of its slots (`None`: a reload removed the server).
#[derive(Message, Debug)]
#[rtype(result = "Option<u32>")]
pub struct ShutDownSessions {
    pub server: ServerId,
    /// Why: an operator asked (`AD`), or the server's process exited
    /// (`SD`).
    pub cause: ShutdownCause,
}

/// Why the sessions of a server are shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCause {
    Operator,
    ServerExited,
}

/// Answers a receiver that hears once `server` serves no session (at once
/// if it serves none now).
#[derive(Message, Debug)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct WatchIdle {
    pub server: ServerId,
}

pub struct BackendQueue {
    core: QueueCore<oneshot::Sender<ReserveReply>>,
    /// Since when an operator paused it.
    paused_since: Option<SystemTime>,
    /// Requests waiting for a server to serve no session.
    idle_watchers: Vec<(ServerId, oneshot::Sender<()>)>,
    /// The shedding timer, when armed: when it fires.
    shed_timer: Option<(Instant, SpawnHandle)>,
    /// Published after every message once a routing rule spills from here.
    load: Arc<BackendLoad>,
    /// A spawned backend's gate and its supervisor.
    spawn: Option<SpawnLink>,
    /// Whether every server's grants now carry where to report connect
    /// times (what the balancer wanted when they were last all set).
    asking_connect_times: bool,
}

impl BackendQueue {
    pub fn new(
        setups: &[ServerSetup],
        servers: Vec<Arc<ServerInfo>>,
        setup: BackendSetup,
        balancer: Box<dyn crate::backend::balance::Balancer>,
        log: Logger,
        load: Arc<BackendLoad>,
    ) -> BackendQueue {
        BackendQueue {
            core: QueueCore::new(setups, servers, setup, balancer, log),
            paused_since: None,
            idle_watchers: Vec::new(),
            shed_timer: None,
            load,
            spawn: None,
            asking_connect_times: false,
        }
    }

    /// Makes this a spawned backend's queue, before it starts: every
    /// Server's status passes through the link's gate, and its supervisor
    /// hears about demand and load.
    pub fn with_spawn(mut self, link: SpawnLink) -> BackendQueue {
        self.spawn = Some(link);
        self
    }

    /// Before a `Dequeue` of a spawned backend gives `released` slots of a
    /// process back: its max_use bound comes down first.
    fn spawn_before(&mut self, released: Option<(ServerId, u32)>, ctx: &mut Context<Self>) {
        let (Some(link), Some((server, released))) = (&mut self.spawn, released) else { return };
        if let Some(status) = link.gate.before_release(server, released) {
            follow(self.core.status_changed(server, status), ctx);
        }
    }

    /// After a message of a spawned backend: the gate counts its grants
    /// (lowering a slot's bound at max_use) and the supervisor hears of the
    /// change.
    fn spawn_after(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &mut self.spawn else { return };
        for (server, status) in link.gate.observe(self.core.state()) {
            // A lower bound grants nothing, so no grant escapes the count.
            follow(self.core.status_changed(server, status), ctx);
        }
        if let Some(activity) = link.gate.activity(self.core.state()) {
            link.activity.do_send(SpawnActivity(activity));
        }
    }

    /// Tells the watchers of every server that serves nobody now (a
    /// watcher that hung up is dropped too).
    fn answer_idle_watchers(&mut self) {
        if self.idle_watchers.is_empty() {
            return;
        }
        let state = self.core.state();
        let mut i = 0;
        while i < self.idle_watchers.len() {
            let (server, watcher) = &self.idle_watchers[i];
            if state.served(*server) == 0 {
                let (_, watcher) = self.idle_watchers.swap_remove(i);
                let _ = watcher.send(());
            } else if watcher.is_closed() {
                // The request timed out or its client left.
                self.idle_watchers.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Before a message: the time it is handled at, for timed disciplines.
    fn clock(&mut self) {
        if self.core.timed() {
            self.core.set_time(Instant::now());
        }
    }

    /// After a message: the shedding timer fires when the core says,
    /// earlier if a change brought that moment closer.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let next = self.core.next_look();
        if let (Some(next), Some((armed, _))) = (next, self.shed_timer) {
            if armed <= next {
                return;
            }
        }
        if let Some((_, handle)) = self.shed_timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(next) = next else { return };
        let handle = ctx.run_later(next.saturating_duration_since(Instant::now()), |queue, ctx| {
            queue.shed_timer = None;
            queue.core.set_time(Instant::now());
            follow(queue.core.shed(), ctx);
            queue.arm(ctx);
            queue.publish_load(0);
            queue.spawn_after(ctx);
        });
        self.shed_timer = Some((next, handle));
    }

    /// Publishes the queue's load for spill-over decisions, if a rule
    /// watches it; `released`: slots the message gave back.
    fn publish_load(&self, released: u32) {
        if !self.load.watched() {
            return;
        }
        // Every waiter, backend queue and server queues alike: kept as a
        // count by the core, so a big backend pays nothing per message.
        let queued = self.core.state().queued();
        self.load.publish(u32::try_from(queued).unwrap_or(u32::MAX), released, tokio::time::Instant::now());
    }
}

/// Stops the actor when the core says so (a retired backend nobody waits in).
fn follow(after: After, ctx: &mut Context<BackendQueue>) {
    if after == After::Stop {
        ctx.stop();
    }
}

impl Actor for BackendQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.ask_for_connect_times(ctx, &[]);
    }
}

impl BackendQueue {
    /// Grants carry where to report connect times exactly while the
    /// balancer asks for them (a reload may bring one that does, or not).
    /// Every server is visited only when that changes; otherwise only the
    /// servers a reload's part just brought (`arrived`): a reload of a
    /// big backend comes in many parts, and visiting every server for
    /// each part made its cost grow with the square of the servers.
    fn ask_for_connect_times(&mut self, ctx: &mut Context<Self>, arrived: &[ServerId]) {
        let wanted = self.core.state().wants_connect_times();
        if wanted == self.asking_connect_times {
            // Kept servers are as asked; new ones come without a recipient.
            if wanted {
                let me = ctx.address().recipient();
                for &id in arrived {
                    self.report_connect_times(id, Some(&me));
                }
            }
            return;
        }
        let me = ctx.address().recipient();
        for i in 0..self.core.state().servers() {
            self.report_connect_times(ServerId(i), wanted.then_some(&me));
        }
        self.asking_connect_times = wanted;
    }

    /// Where `server`'s grants report their connect times from now on.
    fn report_connect_times(&mut self, server: ServerId, to: Option<&Recipient<ConnectTimed>>) {
        let Some(info) = self.core.server_info_mut(server) else { return };
        if info.connect_times.is_some() != to.is_some() {
            *info = Arc::new(ServerInfo { connect_times: to.cloned(), ..(**info).clone() });
        }
    }
}

impl Handler<ConnectTimed> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: ConnectTimed, _: &mut Self::Context) {
        self.core.connected(msg.server, msg.connect_time);
    }
}

impl Handler<Reserve> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: Reserve, ctx: &mut Self::Context) {
        self.clock();
        let req = ReserveRequest {
            session: msg.session,
            key: msg.key,
            client: Some(msg.client),
            pin: msg.pin,
            avoid: msg.avoid,
        };
        let _ = self.core.reserve(req, msg.reply);
        self.arm(ctx);
        self.publish_load(0);
        self.spawn_after(ctx);
    }
}

/// Messages the actor only hands to its core, then follows the core's word
/// on whether it runs on (a retired backend stops once nobody waits).
macro_rules! forward_to_core {
    ($($message:ty => |$core:ident, $msg:ident| $call:expr, released: $released:expr, from: $from:expr;)*) => {$(
        impl Handler<$message> for BackendQueue {
            type Result = ();

            #[allow(unused_variables)]
            fn handle(&mut self, $msg: $message, ctx: &mut Self::Context) {
                let released = $released;
                let from: Option<ServerId> = $from;
                self.clock();
                self.spawn_before(from.map(|server| (server, released)), ctx);
                let $core = &mut self.core;
                follow($call, ctx);
                self.arm(ctx);
                self.publish_load(released);
                self.answer_idle_watchers();
                self.spawn_after(ctx);
            }
        }
    )*};
}

forward_to_core! {
    CancelReserve => |core, msg| core.cancel(msg.session), released: 0, from: None;
    Dequeue => |core, msg| core.dequeue(msg.server, msg.credits, msg.released), released: msg.released,
        from: Some(msg.server);
    RetireBackend => |core, msg| core.retire(), released: 0, from: None;
}

impl Handler<ServerStatusChanged> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: ServerStatusChanged, ctx: &mut Self::Context) {
        self.clock();
        // A spawned backend's slot holds no more than its gate allows.
        let status = match &mut self.spawn {
            Some(link) => link.gate.reported(msg.server, msg.status),
            None => msg.status,
        };
        follow(self.core.status_changed(msg.server, status), ctx);
        self.arm(ctx);
        self.publish_load(0);
        self.answer_idle_watchers();
        self.spawn_after(ctx);
    }
}

impl Handler<SetSlotGate> for BackendQueue {
    type Result = u32;

    fn handle(&mut self, msg: SetSlotGate, ctx: &mut Self::Context) -> u32 {
        self.clock();
        if let SlotGate::Open { address, .. } = msg.gate {
            // Sessions granted from now on connect to the new process;
            // those seated before keep the address they had.
            if let Some(info) = self.core.server_info_mut(msg.server) {
                if info.address != address {
                    *info = Arc::new(ServerInfo { address, ..(**info).clone() });
                }
            }
        }
        let Some(link) = &mut self.spawn else { return 0 };
        if let Some(status) = link.gate.set(msg.server, msg.gate) {
            follow(self.core.status_changed(msg.server, status), ctx);
        }
        self.arm(ctx);
        self.publish_load(0);
        self.spawn_after(ctx);
        self.core.state().served(msg.server)
    }
}

impl Handler<GetSpawnReporter> for BackendQueue {
    type Result = Option<Recipient<GetSpawnReport>>;

    fn handle(&mut self, _: GetSpawnReporter, _: &mut Self::Context) -> Self::Result {
        self.spawn.as_ref().map(|link| link.reports.clone())
    }
}

impl Handler<SetSpawnThrottled> for BackendQueue {
    type Result = ();

    fn handle(&mut self, SetSpawnThrottled(throttled): SetSpawnThrottled, ctx: &mut Self::Context) {
        self.clock();
        let Some(link) = &mut self.spawn else { return };
        for (server, status) in link.gate.set_throttled(throttled) {
            follow(self.core.status_changed(server, status), ctx);
        }
        self.arm(ctx);
        self.publish_load(0);
        self.spawn_after(ctx);
    }
}

/// A server a reload changed keeps the tokens that shut its sessions down
/// (and the mark that its process exited): its sessions from before the
/// reload must still hear a shutdown asked for after it, with its cause.
fn keep_session_switches(
    core: &mut QueueCore<oneshot::Sender<ReserveReply>>,
    changes: Vec<ServerChange>,
) -> Vec<ServerChange> {
    changes
        .into_iter()
        .map(|change| match change {
            ServerChange::Update { id, info: Some(info), setup } => {
                let info = match core.server_info_mut(id) {
                    Some(current) => Arc::new(ServerInfo {
                        sessions: current.sessions.clone(),
                        shut_down: current.shut_down.clone(),
                        exited: current.exited.clone(),
                        connect_times: current.connect_times.clone(),
                        ..(*info).clone()
                    }),
                    None => info,
                };
                ServerChange::Update { id, info: Some(info), setup }
            }
            other => other,
        })
        .collect()
}

impl Handler<ReconfigureBackend> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: ReconfigureBackend, ctx: &mut Self::Context) {
        self.clock();
        let servers = keep_session_switches(&mut self.core, msg.servers);
        let arrived: Vec<ServerId> = servers.iter().filter_map(ServerChange::arrived).collect();
        follow(self.core.reconfigure_part(servers, msg.backend), ctx);
        self.ask_for_connect_times(ctx, &arrived);
        self.arm(ctx);
        self.publish_load(0);
        self.answer_idle_watchers();
        self.spawn_after(ctx);
    }
}

impl Handler<SourceLeft> for BackendQueue {
    type Result = ();

    /// Only admission reads the count: no waiter can be served because of
    /// it, so nothing else to do.
    fn handle(&mut self, msg: SourceLeft, _: &mut Self::Context) {
        self.core.source_left(msg.source);
    }
}

impl Handler<SetPaused> for BackendQueue {
    type Result = PauseReport;

    fn handle(&mut self, SetPaused(paused): SetPaused, ctx: &mut Self::Context) -> PauseReport {
        self.clock();
        let changed = self.core.set_paused(paused);
        if changed {
            self.paused_since = paused.then(SystemTime::now);
        }
        self.arm(ctx);
        self.publish_load(0);
        self.spawn_after(ctx);
        PauseReport { since: self.paused_since, changed, queued: self.core.state().queued() }
    }
}

impl Handler<ShutDownSessions> for BackendQueue {
    type Result = Option<u32>;

    fn handle(&mut self, msg: ShutDownSessions, _: &mut Self::Context) -> Option<u32> {
        let served = self.core.state().served(msg.server);
        let info = self.core.server_info_mut(msg.server)?;
        // Sessions granted from now on carry a fresh token; those seated
        // before hear this one.
        let fresh = Arc::new(ServerInfo {
            sessions: info.kill.child_token(),
            shut_down: tokio_util::sync::CancellationToken::new(),
            exited: Arc::default(),
            ..(**info).clone()
        });
        let old = std::mem::replace(info, fresh);
        if msg.cause == ShutdownCause::ServerExited {
            // Read by each session once it hears the token below.
            old.exited.store(true, std::sync::atomic::Ordering::Release);
        }
        old.sessions.cancel();
        old.shut_down.cancel();
        Some(served)
    }
}

impl Handler<WatchIdle> for BackendQueue {
    type Result = MessageResult<WatchIdle>;

    fn handle(&mut self, msg: WatchIdle, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.core.state().served(msg.server) > 0 {
            self.idle_watchers.push((msg.server, tx));
        } else {
            let _ = tx.send(());
        }
        // A receiver whose sender is dropped unanswered means the backend
        // stopped, not that the server is idle.
        MessageResult(rx)
    }
}

impl Handler<GetQueueReport> for BackendQueue {
    type Result = QueueReport;

    fn handle(&mut self, _: GetQueueReport, _: &mut Self::Context) -> QueueReport {
        let state = self.core.state();
        QueueReport {
            backend_queue: state.backend_queue_len(),
            max_backend_queue: state.max_backend_queue(),
            max_served: state.max_backend_served(),
            servers: (0..state.servers())
                .map(|i| ServerQueueReport {
                    served: state.served(ServerId(i)),
                    queued: state.server_queue_len(ServerId(i)),
                    effective_maxconn: state.effective_maxconn(ServerId(i)),
                    max_served: state.max_served(ServerId(i)),
                    max_queued: state.max_server_queue(ServerId(i)),
                })
                .collect(),
            paused_since: self.paused_since,
            balancer_bad_picks: state.bad_picks(),
        }
    }
}
