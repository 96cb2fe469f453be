//! Server: the single owner of one server's slot count.
//!
//! It lends every free slot to its BackendQueue (`Dequeue`) and takes slots
//! back through `Release`, one per slot, sent by the session's [`Slot`] guard
//! on every exit path; each release is lent again at once.
//!
//! [`Slot`]: crate::messages::Slot

use actix::prelude::*;
use slog::{debug, Logger};

use crate::bookkeeping::ServerState;
use crate::ids::ServerId;
use crate::messages::{Dequeue, Release};

pub struct Server {
    id: ServerId,
    state: ServerState,
    backend: Recipient<Dequeue>,
    log: Logger,
}

impl Server {
    pub fn new(id: ServerId, maxconn: u32, backend: Recipient<Dequeue>, log: Logger) -> Server {
        Server { id, state: ServerState::new(maxconn), backend, log }
    }

    fn lend(&mut self, credits: u32) {
        if credits > 0 {
            // Same arbiter, one message per release: bounded by maxconn.
            self.backend.do_send(Dequeue { server: self.id, credits });
        }
    }
}

impl Actor for Server {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
        let credits = self.state.lend_free();
        debug!(self.log, "server slots lent"; "credits" => credits, "maxconn" => self.state.maxconn());
        self.lend(credits);
    }
}

impl Handler<Release> for Server {
    type Result = ();

    fn handle(&mut self, _: Release, _: &mut Self::Context) {
        let credits = self.state.release();
        self.lend(credits);
    }
}
