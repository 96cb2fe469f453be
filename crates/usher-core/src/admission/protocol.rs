//! Admission's protocol: what listeners, sessions and the ResourceWatchdog
//! say to each other about accepting clients.
//!
//! Mailbox bounds come by construction: a listener has at most one `Admit`
//! in flight, and every session sends one `SessionClosed`.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::ids::ListenerId;
use crate::net::ShortageCause;

// === Admission ===

/// A listener with clients in its backlog asks for up to `want` accepts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Admit {
    pub listener: ListenerId,
    pub want: u32,
    pub reply: oneshot::Sender<AdmitGrant>,
}

/// Accepts allowed now, and whether the sessions accepted with them are
/// accepted in stress mode (and get the frontend's stress timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitGrant {
    pub credits: u32,
    pub stress: bool,
}

/// Accept credits a listener did not use.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct GiveBack {
    pub listener: ListenerId,
    pub credits: u32,
}

/// `accept()` failed for lack of fds or memory on this listener.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shortage {
    pub listener: ListenerId,
    pub cause: ShortageCause,
}

/// A session accepted on `listener` ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionClosed {
    pub listener: ListenerId,
}

/// Held by every session; dropping it sends one `SessionClosed`. The
/// recipient is shared with the listener (an `Arc`): cloning an actix
/// `Recipient` allocates twice, on every session's path.
pub struct AdmissionGuard {
    listener: ListenerId,
    watchdog: Arc<Recipient<SessionClosed>>,
}

impl AdmissionGuard {
    pub(crate) fn new(listener: ListenerId, watchdog: Arc<Recipient<SessionClosed>>) -> AdmissionGuard {
        AdmissionGuard { listener, watchdog }
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        // do_send: Drop cannot await; one per session bounds it.
        self.watchdog.do_send(SessionClosed { listener: self.listener });
    }
}

// === Control ===

/// Stop accepting: the listener closes its socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopAccepting;
