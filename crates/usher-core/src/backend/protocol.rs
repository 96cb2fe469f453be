//! The backend's protocol: what sessions, Servers and the BackendQueue say
//! to each other about slots. `Reserve`, `Release` and `Dequeue` are the
//! names the whole codebase (docs, logs, tests) uses for these steps.
//!
//! Mailbox bounds come by construction (actix's `do_send` ignores mailbox
//! capacity): a session has at most one `Reserve`, one `CancelReserve` and one
//! `Release` in flight, so no mailbox holds more than a few messages per live
//! session, and live sessions are bounded by `global.maxconn`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::core::QueuePlace;
use super::discipline::SourceKey;
use super::wait_queue::QueueKey;
use crate::backend::{Answer, Gone, Waiter};
use crate::ids::{ServerId, SessionId};

// === Slots ===

/// What a session needs to know about the server it was seated on.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub id: ServerId,
    pub name: Arc<str>,
    pub address: SocketAddr,
    /// PROXY protocol header written after connecting (`servers.X.send_proxy`).
    pub send_proxy: crate::config::ProxyVersion,
    /// Where to report connect outcomes, when the server learns from live
    /// traffic (`check.down_after_failed_connects`, `check.error_limit`).
    pub observe: Option<super::connect_reports::ConnectReports>,
    /// The Server actor that owns this server's slots: a [`Slot`] sends its
    /// `Release` here. Kept once per server rather than per slot, so a grant
    /// costs an `Arc` increment, not a boxed `Recipient` clone.
    pub release: Recipient<Release>,
    /// The BackendQueue, told when a session holding a source ticket
    /// leaves the backend (`queue.per_source.max_live`). Once per server,
    /// like `release`.
    pub source_left: Recipient<SourceLeft>,
    /// The BackendQueue, when its balancer learns from connect times
    /// (`Balancer::wants_connect_times`): each session reports its connect.
    /// Set by the BackendQueue itself, so a backend whose balancer does not
    /// ask costs its sessions nothing.
    pub connect_times: Option<Recipient<ConnectTimed>>,
    /// Cancelled when an operator shuts down the server's sessions: every
    /// session relaying on a slot granted before then ends (`AD`). Grants
    /// made after carry a fresh token, so the shutdown never reaches a
    /// session that had not started yet. A child of `kill`, so the relay
    /// waits on this one token for both.
    pub sessions: tokio_util::sync::CancellationToken,
    /// The broker's kill token (shutdown after the grace): the parent of
    /// every `sessions` token.
    pub kill: tokio_util::sync::CancellationToken,
    /// Cancelled with `sessions` by an operator's shutdown, and never by
    /// the stop: a session waiting its turn in `global.close_spread` (its
    /// `sessions` token already cancelled by the stop) still hears it.
    pub shut_down: tokio_util::sync::CancellationToken,
    /// Set before `sessions` is cancelled when the server itself went away
    /// (a spawned process exited): its sessions end server-side (`SD`), not
    /// as an operator's shutdown.
    pub exited: Arc<std::sync::atomic::AtomicBool>,
}

/// A reserved slot on one server. Dropping it sends exactly one `Release` to
/// the server that owns it, on every path: normal close, error, timeout,
/// cancellation, task abort, panic unwinding — and, with its source
/// ticket, one `SourceLeft` to the BackendQueue.
pub struct Slot {
    pub server: Arc<ServerInfo>,
    armed: bool,
    /// The source this session counts for under `max_live`, until it
    /// leaves the backend.
    ticket: Option<SourceKey>,
}

impl Slot {
    pub(crate) fn new(server: Arc<ServerInfo>, ticket: Option<SourceKey>) -> Slot {
        Slot { server, armed: true, ticket }
    }

    /// Takes the slot back without a `Release`: the BackendQueue reuses it
    /// when the waiter it was sent to is gone (and never counted its
    /// ticket).
    pub(crate) fn disarm(mut self) {
        self.armed = false;
        self.ticket = None;
    }

    /// Takes the source ticket out, so a retry keeps counting the session
    /// while this slot goes back: a new session of the same source cannot
    /// take its place in between.
    pub(crate) fn take_ticket(&mut self) -> Option<SourceTicket> {
        self.ticket.take().map(|source| SourceTicket { source, queue: self.server.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if std::mem::take(&mut self.armed) {
            // do_send: Drop cannot await, and one Release per slot bounds it.
            self.server.release.do_send(Release);
        }
        if let Some(source) = self.ticket.take() {
            // Same bound: one ticket per session.
            self.server.source_left.do_send(SourceLeft { source });
        }
    }
}

/// A session's count under `queue.per_source.max_live`, kept apart from
/// its slot while it retries. Dropping it tells the BackendQueue the
/// session left.
pub struct SourceTicket {
    source: SourceKey,
    queue: Arc<ServerInfo>,
}

impl Drop for SourceTicket {
    fn drop(&mut self) {
        self.queue.source_left.do_send(SourceLeft { source: self.source });
    }
}

impl std::fmt::Debug for SourceTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTicket").field("source", &self.source).finish()
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("server", &self.server.name).finish()
    }
}

// === Reserve ===

/// A session asks its backend for a slot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reserve {
    pub session: SessionId,
    pub key: QueueKey,
    pub client: IpAddr,
    pub pin: Option<ServerId>,
    pub avoid: Option<ServerId>,
    pub reply: oneshot::Sender<ReserveReply>,
}

/// The answer to `Reserve`: one per `Reserve`, on the channel it carried.
/// A queued session hears nothing until it is granted, refused, or has
/// left on its own `CancelReserve`; each of those answers says where it
/// waited, so queueing costs no message of its own.
#[derive(Debug)]
pub enum ReserveReply {
    /// `queued`: where it waited before the grant, if it did.
    Granted { slot: Slot, queued: Option<QueuePlace> },
    /// The queue is at its `maxqueue`.
    Full,
    /// Its client source has `queue.per_source.max_queued` waiting already.
    SourceFull,
    /// Its client source has `queue.per_source.max_live` sessions in the
    /// backend already.
    SourceBusy,
    /// Shed by the queue discipline under overload.
    Shed { queued: QueuePlace },
    /// No server can take it.
    NoServer { queued: Option<QueuePlace> },
    /// It left its queue on its `CancelReserve`.
    Left { queued: QueuePlace },
}

/// A session task waits on the receiving end; a grant becomes its [`Slot`].
impl Waiter for oneshot::Sender<ReserveReply> {
    type Server = Arc<ServerInfo>;

    fn answer(self, answer: Answer<'_, Arc<ServerInfo>>) -> Result<(), Gone> {
        let reply = match answer {
            Answer::Granted { server, info, queued, ticket } => {
                debug_assert_eq!(info.id, server, "a grant carries its own server's info");
                ReserveReply::Granted { slot: Slot::new(info.clone(), ticket), queued }
            }
            Answer::Full => ReserveReply::Full,
            Answer::SourceFull => ReserveReply::SourceFull,
            Answer::SourceBusy => ReserveReply::SourceBusy,
            Answer::Shed { queued } => ReserveReply::Shed { queued },
            Answer::NoServer { queued } => ReserveReply::NoServer { queued },
            Answer::Left { queued } => ReserveReply::Left { queued },
        };
        self.send(reply).map_err(|unheard| {
            if let ReserveReply::Granted { slot, .. } = unheard {
                // Never taken: no Release for it, the queue holds it again.
                slot.disarm();
            }
            Gone
        })
    }
}

/// A queued session leaves its queue (client gone, queue timeout). The
/// answer to its `Reserve` follows: `Left`, or whatever was sent first.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelReserve {
    pub session: SessionId,
}

// === Release / Dequeue ===

/// A session gives its slot back to the owning Server.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Release;

/// A session counted under `queue.per_source.max_live` left the backend.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SourceLeft {
    pub source: SourceKey,
}

/// A session connected to `server` in `connect_time` (its last attempt),
/// for a balancer that learns from connect times.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConnectTimed {
    pub server: ServerId,
    pub connect_time: std::time::Duration,
}

/// A Server lends free slots to its BackendQueue, which hands each to the
/// oldest waiter that can use it, or holds it. `released` says how many
/// sessions gave their slot back since the last `Dequeue` (so the
/// BackendQueue knows what each server serves, for leastconn and caps).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Dequeue {
    pub server: ServerId,
    pub credits: u32,
    pub released: u32,
}

/// A Server's state changed: up or not, effective weight, slowstart cap.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ServerStatusChanged {
    pub server: ServerId,
    pub status: super::core::ServerStatus,
}

/// The outcome of one connection attempt of live traffic, for passive
/// health observation (sent only when the server observes).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConnectOutcome {
    pub ok: bool,
}
