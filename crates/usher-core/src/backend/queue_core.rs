//! The BackendQueue's protocol as a plain struct, with no actix: what it
//! does with each message it gets, over the bookkeeping of [`BackendState`].
//!
//! - A grant is sent to its waiter at once. A grant that cannot be
//!   delivered (the session is gone) hands its slot back: it is held again
//!   and offered to the next waiter, so a gone session never strands a slot.
//! - After every message the queue *settles*: every held slot that may be
//!   used now goes to a waiter, round after round, until none is left (the
//!   "no usable slot while someone waits who could take it" invariant).
//! - Queued sessions that no server can take any more are refused
//!   (`NoServer`) at once rather than left to time out.
//! - A reload applies new and changed servers first (so the queues of
//!   removed servers can move to them), then the new settings and balancer,
//!   then the removals. A big backend's update comes in parts, one message
//!   each, in that order ([`QueueCore::reconfigure_part`]): every part
//!   leaves the backend as consistent as a run-time change of a few
//!   servers, so other messages may be served between parts.
//! - A retired backend stops once nobody waits in it.
//! - With a timed discipline (codel, adaptive LIFO), the actor sets the time
//!   of each message ([`QueueCore::set_time`]) and calls [`QueueCore::shed`]
//!   at [`QueueCore::next_look`]; which waiters to shed is decided by the
//!   bookkeeping ([`discipline`](super::discipline)).
//!
//! Waiters are generic ([`Waiter`]): sessions' reply channels in the actor,
//! recording waiters in the model tests, which so run this very code.

use slog::{debug, info, Logger};

use crate::backend::balance::Balancer;
use crate::backend::discipline::SourceKey;
use crate::backend::{
    BackendSetup, BackendState, Grant, QueuePlace, Refusal, ReserveRequest, Reserved, ServerSetup, ServerStatus,
};
use crate::ids::{ServerId, SessionId};

/// The answer to a session's `Reserve`, before it is put in the session's
/// own terms (a [`Slot`](super::Slot) for a grant).
#[derive(Debug)]
pub enum Answer<'a, S> {
    /// A slot on `server` is the session's; `info` is what the queue keeps
    /// of that server. `queued`: where it waited, if it did. `ticket`: the
    /// source the session counts for under `queue.per_source.max_live`;
    /// whoever takes the grant hands it back through
    /// [`QueueCore::source_left`] when the session leaves the backend.
    Granted { server: ServerId, info: &'a S, queued: Option<QueuePlace>, ticket: Option<SourceKey> },
    /// The queue it would join is at its `maxqueue`.
    Full,
    /// Its client source has `queue.per_source.max_queued` waiting already.
    SourceFull,
    /// Its client source has `queue.per_source.max_live` sessions in the
    /// backend already.
    SourceBusy,
    /// Shed by the queue discipline under overload (it waited longer than
    /// the shed age in a standing queue).
    Shed { queued: QueuePlace },
    /// No server can take it.
    NoServer { queued: Option<QueuePlace> },
    /// It left its queue on its own `CancelReserve`.
    Left { queued: QueuePlace },
}

/// The session an answer was meant for is gone: a grant it carried was not
/// taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Whoever waits for the answer to one `Reserve`.
pub trait Waiter: Sized {
    /// What a grant needs to know about its server.
    type Server;

    /// Delivers the answer. `Err(Gone)` for a grant means the slot was not
    /// taken: no `Release` will ever come for it.
    fn answer(self, answer: Answer<'_, Self::Server>) -> Result<(), Gone>;
}

/// A server change of a reload, by stable server id. `S` is what the queue
/// keeps of each server for its grants.
pub enum ServerChange<S> {
    /// A new server; its id must be the next one (`BackendState::add_server`).
    Add { id: ServerId, info: S, setup: ServerSetup },
    /// Same server, new settings: a new `info` for grants from now on, or
    /// `None` when what grants carry did not change (a new maxconn or
    /// weight): a fleet's update then builds and swaps nothing per server.
    Update { id: ServerId, info: Option<S>, setup: ServerSetup },
    /// Gone from the configuration: its queue is balanced again, its
    /// sessions carry on.
    Remove { id: ServerId },
}

impl<S> ServerChange<S> {
    /// The server this change brings a new `info` for, if any.
    pub fn arrived(&self) -> Option<ServerId> {
        match self {
            ServerChange::Add { id, .. } | ServerChange::Update { id, info: Some(_), .. } => Some(*id),
            ServerChange::Update { info: None, .. } | ServerChange::Remove { .. } => None,
        }
    }
}

/// The backend's own part of a reload: its new settings and balancing.
pub struct BackendReconfig {
    pub setup: BackendSetup,
    pub balancer: BalancerUpdate,
}

/// What a reload does to a backend's balancer. A new one is sized for
/// every server id.
pub enum BalancerUpdate {
    /// Neither its balancing nor its servers changed: it keeps its balancer
    /// and what it learnt.
    Keep,
    /// Its algorithm or the algorithm's settings changed: this one replaces
    /// it.
    Replace(Box<dyn Balancer>),
    /// Only its servers changed: this one replaces it unless it follows
    /// server changes ([`Balancer::follows_server_changes`]), which it has
    /// heard of already.
    ServersChanged(Box<dyn Balancer>),
}

/// What the actor does after a message.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Run,
    /// The backend was retired and nobody waits any more.
    Stop,
}

pub struct QueueCore<W: Waiter> {
    state: BackendState<W>,
    /// By server id; `None` once a reload removed the server.
    servers: Vec<Option<W::Server>>,
    retired: bool,
    log: Logger,
}

impl<W: Waiter> QueueCore<W> {
    /// `infos[i]` is what grants on server `i` carry.
    pub fn new(
        setups: &[ServerSetup],
        infos: Vec<W::Server>,
        setup: BackendSetup,
        balancer: Box<dyn Balancer>,
        log: Logger,
    ) -> QueueCore<W> {
        QueueCore {
            state: BackendState::with_setup(setups, setup, balancer),
            servers: infos.into_iter().map(Some).collect(),
            retired: false,
            log,
        }
    }

    /// The bookkeeping, for reports and tests.
    pub fn state(&self) -> &BackendState<W> {
        &self.state
    }

    // === messages ===

    /// `Reserve`: grants at once, queues, or refuses; then settles (a
    /// larger backend load may raise dynamic maxconn). Returns what was
    /// decided; the waiter was answered already unless it was queued.
    pub fn reserve(&mut self, req: ReserveRequest, waiter: W) -> Reserved<()> {
        let decided = match self.state.reserve(req, waiter) {
            Reserved::Granted { server, waiter, source } => {
                // A gone session's slot is held again: the settle below
                // offers it on.
                let _ = self.deliver(server, waiter, None, source);
                Reserved::Granted { server, waiter: (), source }
            }
            // Its answer comes when it leaves the queue, with its place.
            Reserved::Queued { server, position } => {
                debug!(self.log, "session queued"; "session" => req.session.0,
                    "queue" => if server.is_some() { "server" } else { "backend" }, "position" => position);
                Reserved::Queued { server, position }
            }
            Reserved::Full { waiter } => {
                let _ = waiter.answer(Answer::Full);
                Reserved::Full { waiter: () }
            }
            Reserved::SourceFull { waiter } => {
                let _ = waiter.answer(Answer::SourceFull);
                Reserved::SourceFull { waiter: () }
            }
            Reserved::SourceBusy { waiter } => {
                let _ = waiter.answer(Answer::SourceBusy);
                Reserved::SourceBusy { waiter: () }
            }
            Reserved::NoServer { waiter } => {
                let _ = waiter.answer(Answer::NoServer { queued: None });
                Reserved::NoServer { waiter: () }
            }
        };
        self.settle();
        decided
    }

    /// `CancelReserve`: a queued session leaves its queue.
    pub fn cancel(&mut self, session: SessionId) -> After {
        if let Some((waiter, queued)) = self.state.cancel(session) {
            // Unheard when the session is already gone (dropped its receiver).
            let _ = waiter.answer(Answer::Left { queued });
        }
        self.state.look();
        self.stop_if_retired()
    }

    /// A session connected to `server` in `connect_time`: its balancer
    /// learns from it.
    pub fn connected(&mut self, server: ServerId, connect_time: std::time::Duration) {
        self.state.connected(server, connect_time);
    }

    /// A session holding a ticket for `source` left the backend (its slot
    /// or its retry's ticket was dropped): its source may bring a new one.
    pub fn source_left(&mut self, source: SourceKey) {
        self.state.unseat(source);
    }

    /// The discipline reads the clock: set the time of every message and
    /// call [`shed`](Self::shed) at [`next_look`](Self::next_look).
    pub fn timed(&self) -> bool {
        self.state.timed()
    }

    /// The time of the message about to be handled (timed disciplines).
    pub fn set_time(&mut self, now: std::time::Instant) {
        self.state.set_now(now);
    }

    /// The shedding timer: refuses the waiters the discipline sheds now,
    /// each with its own answer (`Shed`), at once rather than at their
    /// queue timeout.
    pub fn shed(&mut self) -> After {
        let shed = self.state.shed();
        if !shed.is_empty() {
            info!(self.log, "queued sessions shed: queue overloaded"; "sessions" => shed.len());
        }
        for r in shed {
            let _ = r.waiter.answer(Answer::Shed { queued: r.queued });
        }
        self.settle();
        self.stop_if_retired()
    }

    /// When the shedding timer should fire next (`None`: not needed now).
    pub fn next_look(&self) -> Option<std::time::Instant> {
        self.state.next_look()
    }

    /// `Dequeue`: `released` sessions of `server` gave their slot back and
    /// it lends `credits` free slots; each goes to a waiter at once.
    pub fn dequeue(&mut self, server: ServerId, credits: u32, released: u32) -> After {
        self.state.released(server, released);
        for _ in 0..credits {
            if let Some(grant) = self.state.credit(server) {
                self.deliver_grant(grant);
            }
        }
        self.settle();
        self.stop_if_retired()
    }

    /// `ServerStatusChanged`.
    pub fn status_changed(&mut self, server: ServerId, status: ServerStatus) -> After {
        let (grants, refusals) = self.state.set_status(server, status);
        self.deliver_grants(grants);
        self.refuse(refusals);
        self.settle();
        self.stop_if_retired()
    }

    /// A reload changed this backend: settings, balancer, servers, at once.
    /// Used by the model tests only (the actor gets a reload in parts).
    #[cfg(feature = "internals")]
    pub fn reconfigure(
        &mut self,
        setup: BackendSetup,
        balancer: Option<Box<dyn Balancer>>,
        changes: Vec<ServerChange<W::Server>>,
    ) -> After {
        let balancer = balancer.map_or(BalancerUpdate::Keep, BalancerUpdate::Replace);
        self.reconfigure_part(changes, Some(BackendReconfig { setup, balancer }))
    }

    /// One part of a reload's update of this backend: some of its server
    /// changes and, in one part, the backend's own settings. A reload sends
    /// a backend of thousands of servers in parts of about a hundred, each
    /// its own message, so that the actor thread serves the other actors
    /// (and sessions) in between instead of holding them for the whole
    /// backend: first the parts with new and changed servers, then the part
    /// with the backend's settings and balancer, then the parts with the
    /// removals — the order a whole update is applied in, so a removed
    /// server's queue can still move to the servers that replace it.
    /// Between parts the backend runs a mix of old and new servers, each
    /// step as consistent as a run-time change (`BackendState::check`).
    pub fn reconfigure_part(
        &mut self,
        changes: Vec<ServerChange<W::Server>>,
        backend: Option<BackendReconfig>,
    ) -> After {
        let mut removed = Vec::new();
        let (mut added, mut changed) = (0u32, 0u32);
        for change in changes {
            match change {
                ServerChange::Add { id, info, setup } => {
                    added += 1;
                    let got = self.state.add_server(&setup);
                    debug_assert_eq!(got, id, "server ids are handed out in order");
                    self.servers.push(Some(info));
                }
                ServerChange::Update { id, info, setup } => {
                    changed += 1;
                    self.state.update_server(id, &setup);
                    if let (Some(info), Some(Some(old))) = (info, self.servers.get_mut(id.0)) {
                        *old = info;
                    }
                }
                ServerChange::Remove { id } => removed.push(id),
            }
        }
        debug!(self.log, "backend reconfigured";
            "added" => added, "changed" => changed, "removed" => removed.len(), "settings" => backend.is_some());
        if let Some(BackendReconfig { setup, balancer }) = backend {
            let balancer = match balancer {
                BalancerUpdate::Keep => None,
                BalancerUpdate::Replace(new) => Some(new),
                BalancerUpdate::ServersChanged(new) => (!self.state.balancer_follows_server_changes()).then_some(new),
            };
            let grants = self.state.reconfigure(setup, balancer);
            self.deliver_grants(grants);
        }
        for id in removed {
            let (grants, refusals) = self.state.remove_server(id);
            if let Some(entry) = self.servers.get_mut(id.0) {
                // Its Server stops when its last session's slot comes back.
                *entry = None;
            }
            self.deliver_grants(grants);
            self.refuse(refusals);
        }
        // A changed server's room (a raised maxconn) may serve waiters even
        // in a part without the backend's settings.
        self.settle();
        self.stop_if_retired()
    }

    /// An operator paused (`true`) or resumed the backend. A pause grants
    /// nothing until the resume, which serves the queues in order; nobody
    /// queued is refused by either. Returns whether it changed anything.
    pub fn set_paused(&mut self, paused: bool) -> bool {
        if self.state.is_paused() == paused {
            return false;
        }
        let grants = self.state.set_paused(paused);
        let queued = self.state.queued();
        if paused {
            info!(self.log, "backend paused"; "queued" => queued);
        } else {
            info!(self.log, "backend resumed"; "queued" => queued, "granted" => grants.len());
        }
        self.deliver_grants(grants);
        self.settle();
        true
    }

    /// What grants on `server` carry from now on, to be replaced in place
    /// (the sessions of a server shut down: later grants carry a fresh
    /// switch). `None` once the server was removed.
    pub fn server_info_mut(&mut self, server: ServerId) -> Option<&mut W::Server> {
        self.servers.get_mut(server.0).and_then(Option::as_mut)
    }

    /// A reload removed this backend: no frontend sends it new sessions. It
    /// serves the sessions already queued, then stops once nobody waits.
    pub fn retire(&mut self) -> After {
        self.retired = true;
        // Its waiters can only be served by its own servers now: a pause
        // would leave them to their queue timeout.
        self.set_paused(false);
        self.stop_if_retired()
    }

    // === delivery ===

    /// A retired backend stops once nobody waits in it any more: its
    /// servers then stop when their last session gives its slot back.
    fn stop_if_retired(&mut self) -> After {
        if self.retired && self.state.nobody_waits() {
            info!(self.log, "backend retired");
            self.servers.clear();
            return After::Stop;
        }
        After::Run
    }

    /// Sends a granted slot; if the waiter is gone, the slot is held again.
    /// A taken grant with a ticket counts its source seated until the
    /// ticket comes back.
    fn deliver(
        &mut self,
        server: ServerId,
        waiter: W,
        queued: Option<QueuePlace>,
        source: Option<SourceKey>,
    ) -> Result<(), Gone> {
        // Grants only come from servers that are not removed.
        let info = self.servers[server.0].as_ref().expect("granted server exists");
        let ticket = self.state.ticket_for(source);
        let sent = waiter.answer(Answer::Granted { server, info, queued, ticket });
        match (&sent, ticket) {
            (Err(Gone), _) => self.state.ungrant(server),
            (Ok(()), Some(source)) => self.state.seat(source),
            (Ok(()), None) => {}
        }
        sent
    }

    fn deliver_grant(&mut self, grant: Grant<W>) {
        if self.deliver(grant.server, grant.waiter, Some(grant.queued), grant.source).is_err() {
            debug!(self.log, "granted waiter was gone"; "session" => grant.session.0);
        }
    }

    fn deliver_grants(&mut self, grants: Vec<Grant<W>>) {
        for grant in grants {
            self.deliver_grant(grant);
        }
    }

    fn refuse(&self, refusals: Vec<Refusal<W>>) {
        if !refusals.is_empty() {
            info!(self.log, "queued sessions refused: no usable server"; "sessions" => refusals.len());
        }
        for r in refusals {
            let _ = r.waiter.answer(Answer::NoServer { queued: Some(r.queued) });
        }
    }

    /// Hands every usable held slot to waiters, until none is left. Each
    /// grant is delivered as it is made: a gone waiter's slot is offered to
    /// the next one at once, and the next grant sees the backend's load
    /// without the gone session.
    fn settle(&mut self) {
        loop {
            let mut granted = false;
            // Only servers that could grant, and none while nobody waits.
            let mut next = self.state.next_to_settle(None);
            while let Some(server) = next {
                while let Some(grant) = self.state.grant_from(server) {
                    self.deliver_grant(grant);
                    granted = true;
                }
                next = self.state.next_to_settle(Some(server));
            }
            if !granted {
                break;
            }
        }
        self.state.look();
        debug_assert_eq!(self.state.check(), Ok(()));
    }
}
