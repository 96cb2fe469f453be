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
use slog::{debug, Logger};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::bookkeeping::backend_state::ServerSetup;
use crate::bookkeeping::{BackendState, ReserveRequest, Reserved};
use crate::ids::ServerId;
use crate::messages::{CancelReserve, Dequeue, Release, Reserve, ReserveReply, ServerInfo, Slot};

type Waiter = mpsc::Sender<ReserveReply>;

pub struct BackendQueue {
    state: BackendState<Waiter>,
    servers: Vec<(Arc<ServerInfo>, Recipient<Release>)>,
    log: Logger,
}

impl BackendQueue {
    pub fn new(
        setups: &[ServerSetup],
        servers: Vec<(Arc<ServerInfo>, Recipient<Release>)>,
        maxqueue: u32,
        balancer: Box<dyn crate::balance::Balancer>,
        log: Logger,
    ) -> BackendQueue {
        BackendQueue { state: BackendState::new(setups, maxqueue, balancer), servers, log }
    }

    fn slot(&self, server: ServerId) -> Slot {
        let (info, release) = &self.servers[server.0];
        Slot::new(info.clone(), release.clone())
    }

    /// Sends a granted slot; `false` if the waiter is gone (slot disarmed).
    fn deliver(&self, server: ServerId, waiter: &Waiter) -> bool {
        match waiter.try_send(ReserveReply::Granted(self.slot(server))) {
            Ok(()) => true,
            Err(TrySendError::Closed(reply) | TrySendError::Full(reply)) => {
                if let ReserveReply::Granted(slot) = reply {
                    slot.disarm();
                }
                false
            }
        }
    }

    /// One freed slot of `server`: to the best waiter still there, else held.
    fn offer(&mut self, server: ServerId) {
        while let Some(grant) = self.state.credit(server) {
            if self.deliver(server, &grant.waiter) {
                return;
            }
            debug!(self.log, "granted waiter was gone"; "session" => grant.session.0);
        }
    }
}

impl Actor for BackendQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
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
        let notify = msg.reply.clone();
        match self.state.reserve(req, msg.reply) {
            Reserved::Granted { server, waiter } => {
                if !self.deliver(server, &waiter) {
                    self.offer(server);
                }
            }
            Reserved::Queued { server, position } => {
                let _ = notify.try_send(ReserveReply::Queued { server_queue: server.is_some(), position });
            }
            Reserved::Full { waiter } => {
                let _ = waiter.try_send(ReserveReply::Full);
            }
            Reserved::NoServer { waiter } => {
                let _ = waiter.try_send(ReserveReply::NoServer);
            }
        }
        debug_assert_eq!(self.state.check(), Ok(()));
    }
}

impl Handler<CancelReserve> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: CancelReserve, _: &mut Self::Context) {
        self.state.cancel(msg.session);
    }
}

impl Handler<Dequeue> for BackendQueue {
    type Result = ();

    fn handle(&mut self, msg: Dequeue, _: &mut Self::Context) {
        for _ in 0..msg.credits {
            self.offer(msg.server);
        }
        debug_assert_eq!(self.state.check(), Ok(()));
    }
}
