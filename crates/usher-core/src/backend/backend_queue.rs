//! BackendQueue: one backend's queues and balancing, over [`BackendState`].
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
//! is disarmed and offered to the next waiter at once.

use std::sync::Arc;

use actix::prelude::*;
use slog::{debug, info, Logger};
use tokio::sync::oneshot;

use crate::backend::{
    BackendSetup, BackendState, Grant, QueuePlace, Refusal, ReserveRequest, Reserved, ServerSetup,
};
use crate::ids::ServerId;
use crate::backend::{CancelReserve, Dequeue, Reserve, ReserveReply, ServerInfo, ServerStatusChanged, Slot};

type Waiter = oneshot::Sender<ReserveReply>;

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

/// A server change of a reload, by stable server id.
pub enum ServerChange {
    /// A new server; its id must be the next one (`BackendState::add_server`).
    Add { id: ServerId, info: Arc<ServerInfo>, setup: ServerSetup },
    /// Same server, new settings (a new `ServerInfo` for sessions seated from now on).
    Update { id: ServerId, info: Arc<ServerInfo>, setup: ServerSetup },
    /// Gone from the configuration: its queue is balanced again, its
    /// sessions carry on.
    Remove { id: ServerId },
}

/// A reload changed this backend: settings, balancer, servers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReconfigureBackend {
    pub setup: BackendSetup,
    pub balancer: Box<dyn crate::backend::balance::Balancer>,
    pub servers: Vec<ServerChange>,
}

/// A reload removed this backend: no frontend sends it new sessions. It
/// serves the sessions already queued, then stops once nobody waits.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RetireBackend;

pub struct BackendQueue {
    state: BackendState<Waiter>,
    /// By server id; `None` once a reload removed the server.
    servers: Vec<Option<Arc<ServerInfo>>>,
    retired: bool,
    log: Logger,
}

impl BackendQueue {
    pub fn new(
        setups: &[ServerSetup],
        servers: Vec<Arc<ServerInfo>>,
        setup: BackendSetup,
        balancer: Box<dyn crate::backend::balance::Balancer>,
        log: Logger,
    ) -> BackendQueue {
        let servers = servers.into_iter().map(Some).collect();
        BackendQueue { state: BackendState::with_setup(setups, setup, balancer), servers, retired: false, log }
    }

    fn slot(&self, server: ServerId) -> Slot {
        // Grants only come from servers that are not removed.
        let info = self.servers[server.0].as_ref().expect("granted server exists");
        Slot::new(info.clone())
    }

    /// A retired backend stops once nobody waits in it any more: its
    /// servers then stop when their last session gives its slot back.
    fn stop_if_retired(&mut self, ctx: &mut Context<Self>) {
        if self.retired && self.state.nobody_waits() {
            info!(self.log, "backend retired");
            self.servers.clear();
            ctx.stop();
        }
    }

    /// Sends a granted slot; if the waiter is gone, the slot is disarmed and
    /// held again.
    fn deliver(&mut self, server: ServerId, waiter: Waiter, queued: Option<QueuePlace>) -> bool {
        match waiter.send(ReserveReply::Granted { slot: self.slot(server), queued }) {
            Ok(()) => true,
            Err(reply) => {
                if let ReserveReply::Granted { slot, .. } = reply {
                    slot.disarm();
                }
                self.state.ungrant(server);
                false
            }
        }
    }

    fn deliver_grant(&mut self, grant: Grant<Waiter>) {
        if !self.deliver(grant.server, grant.waiter, Some(grant.queued)) {
            debug!(self.log, "granted waiter was gone"; "session" => grant.session.0);
        }
    }

    fn deliver_grants(&mut self, grants: Vec<Grant<Waiter>>) {
        for grant in grants {
            self.deliver_grant(grant);
        }
    }

    fn refuse(&self, refusals: Vec<Refusal<Waiter>>) {
        if !refusals.is_empty() {
            info!(self.log, "queued sessions refused: no usable server"; "sessions" => refusals.len());
        }
        for r in refusals {
            let _ = r.waiter.send(ReserveReply::NoServer { queued: Some(r.queued) });
        }
    }

    /// Hands every usable held slot to waiters, until none is left; a slot
    /// whose waiter was gone goes around again.
    fn settle(&mut self) {
        loop {
            let grants = self.state.dispatch();
            if grants.is_empty() {
                break;
            }
            self.deliver_grants(grants);
        }
        debug_assert_eq!(self.state.check(), Ok(()));
    }
}

impl Actor for BackendQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<Reserve> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: Reserve, _: &mut Self::Context) {
        let req = ReserveRequest {
            session: msg.session,
            key: msg.key,
            client: Some(msg.client),
            pin: msg.pin,
            avoid: msg.avoid,
        };
        let session = msg.session;
        match self.state.reserve(req, msg.reply) {
            Reserved::Granted { server, waiter } => {
                self.deliver(server, waiter, None);
            }
            // Its answer comes when it leaves the queue, with its place.
            Reserved::Queued { server, position } => {
                debug!(self.log, "session queued"; "session" => session.0,
                    "queue" => if server.is_some() { "server" } else { "backend" }, "position" => position);
            }
            Reserved::Full { waiter } => {
                let _ = waiter.send(ReserveReply::Full);
            }
            Reserved::NoServer { waiter } => {
                let _ = waiter.send(ReserveReply::NoServer { queued: None });
            }
        }
        // A larger backend load may raise dynamic maxconn: settle.
        self.settle();
    }
}

impl Handler<CancelReserve> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: CancelReserve, ctx: &mut Self::Context) {
        if let Some((waiter, queued)) = self.state.cancel(msg.session) {
            // Unheard when the session is already gone (dropped its receiver).
            let _ = waiter.send(ReserveReply::Left { queued });
        }
        self.stop_if_retired(ctx);
    }
}

impl Handler<Dequeue> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: Dequeue, ctx: &mut Self::Context) {
        self.state.released(msg.server, msg.released);
        for _ in 0..msg.credits {
            if let Some(grant) = self.state.credit(msg.server) {
                self.deliver_grant(grant);
            }
        }
        self.settle();
        self.stop_if_retired(ctx);
    }
}

impl Handler<ServerStatusChanged> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: ServerStatusChanged, ctx: &mut Self::Context) {
        let (grants, refusals) = self.state.set_status(msg.server, msg.status);
        self.deliver_grants(grants);
        self.refuse(refusals);
        self.settle();
        self.stop_if_retired(ctx);
    }
}

impl Handler<ReconfigureBackend> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: ReconfigureBackend, ctx: &mut Self::Context) {
        // New and changed servers first, so the queues of removed servers
        // can move to them; then the removals; then the new balancer, which
        // is sized for every id.
        let mut removed = Vec::new();
        for change in msg.servers {
            match change {
                ServerChange::Add { id, info, setup } => {
                    let got = self.state.add_server(&setup);
                    debug_assert_eq!(got, id, "server ids are handed out in order");
                    self.servers.push(Some(info));
                }
                ServerChange::Update { id, info, setup } => {
                    self.state.update_server(id, &setup);
                    if let Some(Some(old)) = self.servers.get_mut(id.0) {
                        *old = info;
                    }
                }
                ServerChange::Remove { id } => removed.push(id),
            }
        }
        let grants = self.state.reconfigure(msg.setup, msg.balancer);
        self.deliver_grants(grants);
        for id in removed {
            let (grants, refusals) = self.state.remove_server(id);
            if let Some(entry) = self.servers.get_mut(id.0) {
                // Its Server stops when its last session's slot comes back.
                *entry = None;
            }
            self.deliver_grants(grants);
            self.refuse(refusals);
        }
        self.settle();
        self.stop_if_retired(ctx);
    }
}

impl Handler<RetireBackend> for BackendQueue {
    type Result = ();

    fn handle(&mut self, _: RetireBackend, ctx: &mut Self::Context) {
        self.retired = true;
        self.stop_if_retired(ctx);
    }
}

impl Handler<GetQueueReport> for BackendQueue {
    type Result = QueueReport;

    fn handle(&mut self, _: GetQueueReport, _: &mut Self::Context) -> QueueReport {
        QueueReport {
            backend_queue: self.state.backend_queue_len(),
            max_backend_queue: self.state.max_backend_queue(),
            max_served: self.state.max_backend_served(),
            servers: (0..self.state.servers())
                .map(|i| ServerQueueReport {
                    served: self.state.served(ServerId(i)),
                    queued: self.state.server_queue_len(ServerId(i)),
                    effective_maxconn: self.state.effective_maxconn(ServerId(i)),
                    max_served: self.state.max_served(ServerId(i)),
                    max_queued: self.state.max_server_queue(ServerId(i)),
                })
                .collect(),
        }
    }
}
