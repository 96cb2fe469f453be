//! ResourceWatchdog: owns the process-wide limits — global `maxconn`, each
//! frontend's `maxconn` — and the listeners paused on them.
//!
//! Listeners ask for admission before accepting (`Admit`); a listener that
//! gets nothing is paused (it stops polling its socket, clients wait in the
//! kernel backlog) until a session ends (`SessionClosed`) or unused credits
//! return (`GiveBack`). Resuming is event-driven; the `maxconn_recheck` tick
//! is only a safety net and does nothing while still at the limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use slog::{info, Logger};
use tokio::sync::oneshot;

use crate::bookkeeping::{AdmissionState, Admitted, Resumed};
use crate::ids::ListenerId;
use crate::messages::{Admit, GiveBack, SessionClosed};

/// What the watchdog knows of a listener, for its log records.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub id: ListenerId,
    pub frontend: String,
    pub address: SocketAddr,
}

pub struct ResourceWatchdog {
    state: AdmissionState<oneshot::Sender<u32>>,
    listeners: HashMap<ListenerId, ListenerInfo>,
    recheck: Duration,
    log: Logger,
}

impl ResourceWatchdog {
    pub fn new(
        global_maxconn: u32,
        frontend_maxconn: &[u32],
        listeners: Vec<ListenerInfo>,
        recheck: Duration,
        log: Logger,
    ) -> ResourceWatchdog {
        ResourceWatchdog {
            state: AdmissionState::new(global_maxconn, frontend_maxconn),
            listeners: listeners.into_iter().map(|l| (l.id, l)).collect(),
            recheck,
            log,
        }
    }

    fn listener_kv(&self, id: ListenerId) -> (String, String) {
        match self.listeners.get(&id) {
            Some(l) => (l.frontend.clone(), l.address.to_string()),
            None => (String::new(), String::new()),
        }
    }

    /// Sends credits to resumed listeners; credits of a listener that is gone
    /// come back and may resume another one.
    fn resume(&mut self, mut resumed: Vec<Resumed<oneshot::Sender<u32>>>) {
        while let Some(r) = resumed.pop() {
            let (frontend, address) = self.listener_kv(r.listener);
            if r.waiter.send(r.granted).is_ok() {
                info!(self.log, "listener resumed";
                    "frontend" => frontend, "address" => address,
                    "global_used" => self.state.global_used());
            } else {
                resumed.extend(self.state.give_back(r.frontend, r.granted));
            }
        }
    }
}

impl Actor for ResourceWatchdog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
        if !self.recheck.is_zero() {
            // Safety net only: parked listeners are served on every release.
            ctx.run_interval(self.recheck, |act, _| {
                let resumed = act.state.recheck();
                act.resume(resumed);
            });
        }
    }
}

impl Handler<Admit> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: Admit, _: &mut Self::Context) {
        match self.state.admit(msg.listener, msg.frontend, msg.want, msg.reply) {
            Admitted::Granted(n, reply) => {
                if reply.send(n).is_err() {
                    let resumed = self.state.give_back(msg.frontend, n);
                    self.resume(resumed);
                }
            }
            Admitted::Parked(reason) => {
                let (frontend, address) = self.listener_kv(msg.listener);
                info!(self.log, "listener paused";
                    "frontend" => frontend, "address" => address, "reason" => reason.as_str(),
                    "global_used" => self.state.global_used(),
                    "frontend_used" => self.state.frontend_used(msg.frontend));
            }
        }
        debug_assert_eq!(self.state.check(), Ok(()));
    }
}

impl Handler<GiveBack> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: GiveBack, _: &mut Self::Context) {
        let resumed = self.state.give_back(msg.frontend, msg.credits);
        self.resume(resumed);
    }
}

impl Handler<SessionClosed> for ResourceWatchdog {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, _: &mut Self::Context) {
        let resumed = self.state.session_closed(msg.frontend);
        self.resume(resumed);
        debug_assert_eq!(self.state.check(), Ok(()));
    }
}
