//! The BackendQueue's bookkeeping: free slots (credits) lent by its servers,
//! the backend queue, each server's own queue, what each server serves, and
//! the balancing choice.
//!
//! Why this is race-free: a session is queued only inside [`reserve`], after
//! seeing in the same call that no slot it could use is held here; a freed
//! slot reaches this struct only through [`credit`], which hands it to the
//! best waiter before anything else runs. The actor calls both from one
//! mailbox, one message at a time, so "no slot, so queue" and "slot arrived,
//! so grant" can never interleave — the lost wake-up of HAProxy's
//! `assign_server_and_queue` TOCTOU (a session queued just after the last
//! slot was released, stuck until `timeout queue`) has no window here.
//!
//! Invariants kept at every step (checked by [`BackendState::check`]):
//! - a held credit that its server may use now (room under its effective
//!   maxconn) implies nobody waits who could take it: the server's own queue
//!   is empty and, if it takes balanced traffic, so is the backend queue;
//! - a server with sessions queued for it is never picked for a newcomer;
//! - queues never exceed their `maxqueue`;
//! - while no server can take balanced traffic, the backend queue is empty
//!   (its sessions are refused at once, not left to time out).
//!
//! [`reserve`]: BackendState::reserve
//! [`credit`]: BackendState::credit

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::discipline::{Queueing, SourceKey};
use super::limit::Limit;
use super::server_queues::ServerQueues;
use super::wait_queue::{Joining, QueueKey, WaitQueue, Waiting};
use crate::backend::balance::load_order::LoadOrder;
use crate::backend::balance::room_by_load::RoomByLoad;
use crate::backend::balance::servers::{BackendWide, ServerFacts, Standing, Tally};
use crate::backend::balance::{Balancer, Choice, ServerEvent, Servers};
use crate::config::QueueSettings;
use crate::ids::{ServerId, SessionId};

/// A request for a slot.
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest {
    pub session: SessionId,
    pub key: QueueKey,
    /// The client's address, for hash-based balancing (`source`).
    pub client: Option<IpAddr>,
    /// Only this server may serve the session (its own queue when full).
    pub pin: Option<ServerId>,
    /// Prefer any other server (a redispatched retry leaving this one).
    pub avoid: Option<ServerId>,
}

/// The answer to a [`ReserveRequest`].
#[derive(Debug)]
pub enum Reserved<W> {
    /// A slot on `server` is the waiter's now. `source`: its client
    /// source, when the backend groups clients by source.
    Granted { server: ServerId, waiter: W, source: Option<SourceKey> },
    /// The waiter waits; `server` is set for a server queue. `position` is
    /// the number of sessions already waiting in that queue.
    Queued { server: Option<ServerId>, position: u32 },
    /// The queue it would join is at its `maxqueue`.
    Full { waiter: W },
    /// Its client source already has `queue.per_source.max_queued`
    /// sessions waiting in this backend.
    SourceFull { waiter: W },
    /// Its client source already has `queue.per_source.max_live` sessions
    /// in this backend (seated or waiting).
    SourceBusy { waiter: W },
    /// No server can take it (none configured, all down, in maintenance or
    /// at weight 0).
    NoServer { waiter: W },
}

/// Where a session waited: its server's own queue or the backend queue, and
/// how many sessions were ahead of it when it joined (HAProxy's `srv_queue`
/// and `backend_queue` log fields). Handed back with the waiter when it
/// leaves the queue, however it leaves, so that nobody has to be told at
/// the moment it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePlace {
    pub server_queue: bool,
    pub position: u32,
}

impl QueuePlace {
    pub(crate) fn of<W>(waiting: &Waiting<W>, server_queue: bool) -> QueuePlace {
        QueuePlace { server_queue, position: waiting.position }
    }
}

/// A queued session that just got a slot.
#[derive(Debug)]
pub struct Grant<W> {
    pub server: ServerId,
    pub session: SessionId,
    pub waiter: W,
    pub queued: QueuePlace,
    /// Its client source, when the backend groups clients by source.
    pub source: Option<SourceKey>,
}

/// A queued session that can no longer be served.
#[derive(Debug)]
pub struct Refusal<W> {
    pub waiter: W,
    pub queued: QueuePlace,
}

/// How a server is set up in the backend.
#[derive(Debug, Clone, Copy)]
pub struct ServerSetup {
    /// 0 = unlimited.
    pub maxconn: u32,
    pub weight: u32,
    pub maxqueue: u32,
    /// Takes balanced traffic only while no active server can.
    pub backup: bool,
    /// Dynamic maxconn floor (0 = off): see [`BackendSetup::fullconn`].
    pub minconn: u32,
}

/// How the backend is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendSetup {
    /// Backend queue bound (0 = unbounded).
    pub maxqueue: u32,
    /// A pinned session whose server queue is full goes to another server.
    pub redispatch: bool,
    /// Backend load (served + queued) at which servers with `minconn` reach
    /// their full `maxconn` (HAProxy's fullconn; 0 = off).
    pub fullconn: u32,
    /// Sessions the servers serve at once, together (0 = no bound beyond
    /// each server's own maxconn): beyond it sessions wait in the queues
    /// even while a server holds a free slot.
    pub maxconn: u32,
    /// Discipline, fair share and per-source caps.
    pub queue: QueueSettings,
}

/// What a Server tells its BackendQueue about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStatus {
    /// Operationally usable: UP or STARTING, and not in maintenance.
    pub up: bool,
    /// Effective weight (0 = drain: no balanced traffic, own queue served).
    pub weight: u32,
    /// Effective maxconn below the configured one (slowstart), if any.
    pub cap: Option<u32>,
}

/// The stats kept per server beside its [`ServerFacts`].
#[derive(Debug, Clone, Copy)]
struct ServerStats {
    /// Most sessions it served at once (stats).
    max_served: u32,
    /// The highest limit it ever had: its maxconn or a cap reported later
    /// (maxconn raised at run time). `served` never exceeds it.
    limit_seen: u32,
    /// Longest its own queue was (stats).
    max_queue: usize,
    /// The loosest maxqueue it ever had: a reload that lowers it refuses
    /// newcomers while the queue is longer, but evicts nobody, so the queue
    /// may stand above the new bound until it drains.
    maxqueue_seen: Limit,
}

fn facts_of(s: &ServerSetup) -> ServerFacts {
    let maxconn = Limit::from_config(s.maxconn);
    ServerFacts {
        held: if maxconn.is_unlimited() { None } else { Some(0) },
        served: 0,
        queued: 0,
        maxconn,
        minconn: Limit::from_config(s.minconn),
        maxqueue: Limit::from_config(s.maxqueue),
        backup: s.backup,
        status: ServerStatus { up: true, weight: s.weight, cap: None },
        removed: false,
        // Counted by `touch` when the server joins.
        counted: Standing::default(),
    }
}

fn stats_of(s: &ServerSetup) -> ServerStats {
    ServerStats { max_served: 0, max_queue: 0, limit_seen: s.maxconn, maxqueue_seen: Limit::from_config(s.maxqueue) }
}

/// [`BackendSetup`] with its bounds typed.
#[derive(Debug, Clone, Copy)]
struct Setup {
    maxqueue: Limit,
    redispatch: bool,
    fullconn: Limit,
    maxconn: Limit,
}

impl From<BackendSetup> for Setup {
    fn from(s: BackendSetup) -> Setup {
        Setup {
            maxqueue: Limit::from_config(s.maxqueue),
            redispatch: s.redispatch,
            fullconn: Limit::from_config(s.fullconn),
            maxconn: Limit::from_config(s.maxconn),
        }
    }
}

pub struct BackendState<W> {
    /// What is known of each server, by id (non-generic, so the
    /// balancer's [`Servers`] view can borrow it).
    servers: Vec<ServerFacts>,
    /// Each server's own queue, by id (allocated when first joined).
    queues: ServerQueues<W>,
    stats: Vec<ServerStats>,
    /// Running totals over the eligible actives (0) and backups (1).
    tallies: [Tally; 2],
    /// Sessions the servers serve, together.
    served_total: u32,
    /// Servers that are up and hold a credit (or are unlimited), by the
    /// backend load from which they may use it (dynamic maxconn): the only
    /// ones a settle can grant from are those whose load was reached.
    holding: RoomByLoad,
    /// The eligible and the ready servers by load relative to weight: the
    /// core's own choices (a retry with every other server busy, a hashed
    /// session redispatched) in O(log n).
    load_order: LoadOrder,
    queue: WaitQueue<W>,
    setup: Setup,
    balancer: Box<dyn Balancer>,
    /// Which queue each waiting session is in (`None` = backend queue).
    location: FxHashMap<SessionId, Option<ServerId>>,
    /// Longest the backend queue was (stats).
    max_queue: usize,
    /// Most sessions the servers served at once, together (stats).
    max_served: u32,
    /// The discipline over all the queues: their order, shedding, caps.
    queueing: Queueing,
    /// The highest backend maxconn it ever had (`None` once it had none):
    /// the servers together never serve more.
    maxconn_seen: Option<u32>,
    /// The loosest backend maxqueue it ever had (see
    /// `ServerStats::maxqueue_seen`).
    maxqueue_seen: Limit,
    /// Paused by an operator: no slot is granted, newcomers queue behind
    /// the waiters (queue bounds still refuse at once); resuming grants in
    /// queue order. Sessions already seated are untouched.
    paused: bool,
    /// Balancer picks not followed (see `pick`).
    bad_picks: u64,
}

impl<W> BackendState<W> {
    /// Limited servers start with no credit: their Server lends them.
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn new(servers: &[ServerSetup], maxqueue: u32, balancer: Box<dyn Balancer>) -> BackendState<W> {
        Self::with_setup(servers, BackendSetup { maxqueue, ..BackendSetup::default() }, balancer)
    }

    pub fn with_setup(servers: &[ServerSetup], setup: BackendSetup, balancer: Box<dyn Balancer>) -> BackendState<W> {
        let mut state = BackendState {
            servers: servers.iter().map(facts_of).collect(),
            queues: ServerQueues::new(servers.len()),
            stats: servers.iter().map(stats_of).collect(),
            tallies: [Tally::default(); 2],
            served_total: 0,
            holding: RoomByLoad::new(Limit::from_config(setup.fullconn)),
            load_order: LoadOrder::default(),
            queue: WaitQueue::default(),
            setup: setup.into(),
            balancer,
            location: FxHashMap::default(),
            max_queue: 0,
            max_served: 0,
            queueing: Queueing::new(setup.queue, Instant::now()),
            maxconn_seen: Limit::from_config(setup.maxconn).get(),
            maxqueue_seen: Limit::from_config(setup.maxqueue),
            paused: false,
            bad_picks: 0,
        };
        for i in 0..state.servers.len() {
            state.touch(i);
        }
        state.set_fair(setup.queue.fair != crate::config::FairShare::None);
        state
    }

    fn set_fair(&mut self, on: bool) {
        self.queue.set_fair(on);
        self.queues.set_fair(on);
    }

    // === what balancing knows, kept incrementally ===

    /// Server `i` changed (a grant, a release, a credit, its queue, its
    /// status or setup): its standing is recomputed and, if it differs
    /// from what was counted, the tallies, the set of holding servers and
    /// the balancer follow. O(1) plus the balancer's own update (O(log n)
    /// for the built-in ones). Every change to a server goes through here,
    /// which is what lets a pick avoid looking at every server.
    fn touch(&mut self, i: usize) {
        let s = &mut self.servers[i];
        s.queued = self.queues.len(i) as u32;
        let now = s.standing();
        let own_waiters = s.queued > 0;
        // Its cap may move its threshold without changing its standing.
        self.holding.set(i, self.room_from_load(i, now.holds), own_waiters);
        let s = &mut self.servers[i];
        let before = std::mem::replace(&mut s.counted, now);
        if now == before {
            return;
        }
        self.tallies[before.group()].remove(&before);
        self.tallies[now.group()].add(&now);
        self.load_order.place(i, &now);
        let wide = self.wide();
        let servers = Servers::new(&self.servers, &self.tallies, wide, None);
        self.balancer.candidate_changed(ServerId(i), &servers);
    }

    /// From which backend load server `i` may use a held credit (`None`:
    /// it holds none, or has no room at any load). `holds`: its standing's,
    /// which the caller has at hand (`touch` runs on every grant and release).
    fn room_from_load(&self, i: usize, holds: bool) -> Option<u64> {
        holds.then(|| self.servers[i].room_from_load(self.holding.fullconn())).flatten()
    }

    /// Brings the settle's order of holding servers up to the backend's
    /// load now and, after a reload changed `fullconn`, to its thresholds
    /// (O(n log n), on that reload only: `reconfigure` ends with a
    /// dispatch, which comes here).
    fn sort_holding(&mut self) {
        if self.holding.fullconn() != self.setup.fullconn {
            self.holding.set_fullconn(self.setup.fullconn);
            for i in 0..self.servers.len() {
                let holds = self.servers[i].standing().holds;
                self.holding.set(i, self.room_from_load(i, holds), self.servers[i].queued > 0);
            }
        }
        self.holding.follow(self.load());
    }

    /// The backend-wide state a server's room depends on.
    fn wide(&self) -> BackendWide {
        BackendWide {
            paused: self.paused,
            fullconn: self.setup.fullconn,
            maxconn: self.setup.maxconn,
            served: self.served_total,
            load: self.load(),
            any_active: self.any_active(),
        }
    }

    // === what a server may do now ===

    fn any_active(&self) -> bool {
        self.tallies[0].eligible > 0
    }

    /// Takes balanced traffic: up, weight > 0, and a backup only while no
    /// active server can.
    fn balanced(&self, i: usize) -> bool {
        self.wide().usable(&self.servers[i])
    }

    /// Sessions waiting or served in the backend (HAProxy's beconn).
    fn load(&self) -> u64 {
        u64::from(self.served_total) + self.location.len() as u64
    }

    /// A held credit it may use now (below its effective maxconn, and the
    /// backend below its own maxconn).
    fn has_room(&self, i: usize) -> bool {
        self.wide().has_room(&self.servers[i])
    }

    /// Sessions the servers serve, together.
    fn served_total(&self) -> u32 {
        self.served_total
    }

    /// Some server takes balanced traffic.
    fn any_usable(&self) -> bool {
        self.tallies[0].eligible > 0 || self.tallies[1].eligible > 0
    }

    /// The server a retry leaves, if it must be avoided: a retry never goes
    /// back to the server it just failed on while another server is
    /// usable, even if it must wait for that one: a refusing server frees
    /// its slot at once, and a retry that took it again would spend its
    /// retries in a millisecond. Hashing walks past it too (HAProxy's hash
    /// lookups take it as "avoid"). O(1): a usable `avoid` is in the group
    /// in use, so another is usable when that group counts two.
    fn avoiding(&self, avoid: Option<ServerId>) -> Option<ServerId> {
        let avoid = avoid.filter(|a| a.0 < self.servers.len() && self.balanced(a.0))?;
        let group = usize::from(!self.any_active());
        (self.tallies[group].eligible > 1).then_some(avoid)
    }

    /// How many may wait in the backend queue: the backend's `maxqueue`
    /// and, when every server that takes balanced traffic has a `maxqueue`
    /// of its own, no more than their sum — a session in the backend queue
    /// waits for any of them, so each server's bound holds whatever the
    /// algorithm. O(1) from the tally of the group in use.
    fn backend_queue_bound(&self) -> Limit {
        let tally = &self.tallies[usize::from(!self.any_active())];
        if tally.unbounded_queues > 0 {
            return self.setup.maxqueue;
        }
        let sum = u32::try_from(tally.queue_room).unwrap_or(u32::MAX);
        match self.setup.maxqueue.get() {
            _ if sum == 0 => self.setup.maxqueue,
            Some(own) => Limit::from_config(own.min(sum)),
            None => Limit::from_config(sum),
        }
    }

    // === reserve ===

    /// Decides at once: grant from a held credit, or queue, or refuse.
    pub fn reserve(&mut self, req: ReserveRequest, waiter: W) -> Reserved<W> {
        let joining = Joining {
            session: req.session,
            key: req.key,
            joined: self.queueing.now(),
            source: self.queueing.source_of(req.client),
        };
        // Only a session's first request enters the backend; a retry (pin
        // or avoid) is a session already counted by its old slot's ticket.
        let first = req.pin.is_none() && req.avoid.is_none();
        if first && !self.queueing.admits_live(joining.source) {
            return Reserved::SourceBusy { waiter };
        }
        self.reserve_joining(req, joining, waiter)
    }

    /// [`reserve`](Self::reserve) for a session that would join as
    /// `joining` (a redispatched waiter keeps its arrival and source).
    fn reserve_joining(&mut self, req: ReserveRequest, joining: Joining, waiter: W) -> Reserved<W> {
        if let Some(pin) = req.pin {
            return self.reserve_pinned(pin, req, joining, waiter, false);
        }
        if !self.any_usable() {
            return Reserved::NoServer { waiter };
        }
        let avoiding = self.avoiding(req.avoid);
        // Nobody overtakes the backend queue: while it is non-empty, no
        // balanced server has a usable credit (see `credit`), so no
        // candidate is available — and a balancer that only ever balances
        // need not be asked to find none (O(1) instead of a pick that may
        // walk past every server dynamic maxconn holds back). A balancer
        // that may pin is asked: its session may belong to a server's own
        // queue, which the backend queue does not precede.
        let choice = if !self.queue.is_empty() && self.balancer.only_balances() {
            None
        } else {
            self.pick(req.client, avoiding)
        };
        match choice {
            Some(Choice::Balanced(server)) => {
                self.take_slot(server);
                Reserved::Granted { server, waiter, source: joining.source }
            }
            Some(Choice::Pinned(server)) => self.reserve_pinned(server, req, joining, waiter, true),
            _ if avoiding.is_some() => self.enqueue_elsewhere(avoiding, joining, waiter),
            _ => self.enqueue_backend(joining, waiter),
        }
    }

    fn enqueue_backend(&mut self, joining: Joining, waiter: W) -> Reserved<W> {
        if self.backend_queue_bound().reached_by(self.queue.len()) {
            return Reserved::Full { waiter };
        }
        if !self.queueing.admits(joining.source) {
            return Reserved::SourceFull { waiter };
        }
        let position = self.queue.push(joining, waiter);
        self.queueing.joined(&joining);
        self.location.insert(joining.session, None);
        self.max_queue = self.max_queue.max(self.queue.len());
        Reserved::Queued { server: None, position }
    }

    /// A retry leaving a server (`avoid`) while every other is busy: it
    /// waits for the least loaded other usable server in that server's own
    /// queue, where a slot the failed server frees cannot reach it. Only
    /// when that queue is at its `maxqueue` does it wait in the backend
    /// queue instead. O(log n).
    fn enqueue_elsewhere(&mut self, avoid: Option<ServerId>, joining: Joining, waiter: W) -> Reserved<W> {
        let Some(server) = self.least_loaded_usable([avoid, None]) else {
            return self.enqueue_backend(joining, waiter);
        };
        let s = &self.servers[server.0];
        if s.maxqueue.reached_by(s.queued as usize) {
            return self.enqueue_backend(joining, waiter);
        }
        self.enqueue_server(server, joining, waiter)
    }

    fn enqueue_server(&mut self, server: ServerId, joining: Joining, waiter: W) -> Reserved<W> {
        if !self.queueing.admits(joining.source) {
            return Reserved::SourceFull { waiter };
        }
        let position = self.queues.queue_to_join(server.0).push(joining, waiter);
        self.queueing.joined(&joining);
        self.location.insert(joining.session, Some(server));
        let stats = &mut self.stats[server.0];
        stats.max_queue = stats.max_queue.max(self.queues.len(server.0));
        self.touch(server.0);
        Reserved::Queued { server: Some(server), position }
    }

    /// `hashed`: pinned by a hash algorithm (may redispatch when full), as
    /// opposed to an explicit pin.
    fn reserve_pinned(
        &mut self,
        pin: ServerId,
        req: ReserveRequest,
        joining: Joining,
        waiter: W,
        hashed: bool,
    ) -> Reserved<W> {
        if pin.0 >= self.servers.len() || !self.servers[pin.0].status.up {
            return Reserved::NoServer { waiter };
        }
        if self.servers[pin.0].queued == 0 && self.has_room(pin.0) {
            self.take_slot(pin);
            return Reserved::Granted { server: pin, waiter, source: joining.source };
        }
        let s = &self.servers[pin.0];
        if s.maxqueue.reached_by(s.queued as usize) {
            if hashed && self.setup.redispatch {
                // Its server's queue is full: any other server will do —
                // except the one a retry is leaving. O(log n).
                let not = [Some(pin), req.avoid];
                if let Some(server) = self.least_loaded_available(not) {
                    self.take_slot(server);
                    return Reserved::Granted { server, waiter, source: joining.source };
                }
                // With no other server that could ever take it, waiting in
                // the backend queue would only be waiting for this same
                // server past its `maxqueue`: refused at once.
                if !self.any_usable_but(not) {
                    return Reserved::Full { waiter };
                }
                return self.enqueue_backend(joining, waiter);
            }
            return Reserved::Full { waiter };
        }
        self.enqueue_server(pin, joining, waiter)
    }

    // === the core's own choices, by load ===

    /// The usable server other than `not` with the least load relative to
    /// its weight, ties to the lowest id. O(log n).
    fn least_loaded_usable(&mut self, not: [Option<ServerId>; 2]) -> Option<ServerId> {
        let wide = self.wide();
        self.load_order.least_usable(&wide, not)
    }

    /// The same among the servers that can take a session now (see
    /// [`LoadOrder::least_available`] for its cost).
    fn least_loaded_available(&mut self, not: [Option<ServerId>; 2]) -> Option<ServerId> {
        let wide = self.wide();
        self.load_order.least_available(&self.servers, &wide, not)
    }

    /// Some server other than `not` takes balanced traffic. O(1) from the
    /// tally of the group in use.
    fn any_usable_but(&self, not: [Option<ServerId>; 2]) -> bool {
        let excluded = match not {
            [Some(a), Some(b)] if a == b => [Some(a), None],
            not => not,
        };
        let usable_excluded =
            excluded.iter().flatten().filter(|s| s.0 < self.servers.len() && self.balanced(s.0)).count() as u32;
        self.tallies[usize::from(!self.any_active())].eligible > usable_excluded
    }

    /// Every server as a balancer sees it (O(n)).
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn candidates(&self) -> Vec<crate::backend::balance::Candidate> {
        Servers::new(&self.servers, &self.tallies, self.wide(), None).iter().collect()
    }

    /// What the core would choose by load, excluding `not`: the least
    /// loaded usable server (or, with `available`, the least loaded one
    /// that can take a session now), and whether any other is usable —
    /// asked of a copy of the index (a query reorders it), so the
    /// white-box tests can hold the index against a scan of every
    /// candidate. Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn least_loaded_other(&self, available: bool, not: [Option<ServerId>; 2]) -> (Option<ServerId>, bool) {
        let mut order = self.load_order.clone();
        let wide = self.wide();
        let least =
            if available { order.least_available(&self.servers, &wide, not) } else { order.least_usable(&wide, not) };
        (least, self.any_usable_but(not))
    }

    /// The balancer's pick, if the core can follow it: a server that
    /// exists and can take balanced traffic — and, for a `Balanced` pick,
    /// has room now. Anything else (no such server, a full or unusable
    /// one, a panic) counts as a bad pick and as no pick: the session
    /// waits in the backend queue and the next freed slot serves it.
    fn pick(&mut self, client: Option<IpAddr>, avoid: Option<ServerId>) -> Option<Choice> {
        let servers = Servers::new(&self.servers, &self.tallies, self.wide(), avoid);
        let balancer = &mut self.balancer;
        let picked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| balancer.pick(&servers, client)));
        let choice = match picked {
            Ok(choice) => choice,
            Err(_) => {
                self.bad_picks += 1;
                return None;
            }
        };
        let followed = match choice? {
            Choice::Balanced(server) => servers.get(server).is_some_and(|c| c.available),
            Choice::Pinned(server) => servers.get(server).is_some_and(|c| c.usable),
        };
        if followed {
            choice
        } else {
            self.bad_picks += 1;
            None
        }
    }

    /// The balancer learns from connect times.
    pub fn wants_connect_times(&self) -> bool {
        self.balancer.wants_connect_times()
    }

    /// A session connected to `server` in `connect_time`.
    pub fn connected(&mut self, server: ServerId, connect_time: std::time::Duration) {
        if self.servers.get(server.0).is_some_and(|s| !s.removed) {
            self.balancer.connected(server, connect_time);
        }
    }

    /// Picks the balancer made that the core did not follow (a server
    /// that does not exist or cannot take balanced traffic, or a panic).
    pub fn bad_picks(&self) -> u64 {
        self.bad_picks
    }

    fn take_slot(&mut self, server: ServerId) {
        self.balancer.granted(server);
        let s = &mut self.servers[server.0];
        if let Some(held) = &mut s.held {
            debug_assert!(*held > 0);
            *held -= 1;
        }
        s.served += 1;
        let stats = &mut self.stats[server.0];
        stats.max_served = stats.max_served.max(s.served);
        self.served_total += 1;
        self.max_served = self.max_served.max(self.served_total);
        self.touch(server.0);
    }

    /// A grant could not be delivered (the waiter was gone): the slot is
    /// held again, ready for [`credit`](Self::credit) or the next dispatch.
    pub(crate) fn ungrant(&mut self, server: ServerId) {
        self.balancer.released(server, 1);
        let s = &mut self.servers[server.0];
        if s.served > 0 {
            s.served -= 1;
            self.served_total -= 1;
        }
        if let Some(held) = &mut s.held {
            *held += 1;
        }
        self.touch(server.0);
    }

    /// `n` sessions of `server` released their slots (reported by the
    /// Server with the credits it lends back).
    pub fn released(&mut self, server: ServerId, n: u32) {
        if n > 0 {
            self.balancer.released(server, n);
        }
        if let Some(s) = self.servers.get_mut(server.0) {
            debug_assert!(s.served >= n, "release without a grant");
            let n = n.min(s.served);
            s.served -= n;
            self.served_total -= n;
            self.touch(server.0);
        }
    }

    /// A session left its queue (client gone, queue timeout). Returns its
    /// waiter and where it waited, if it was still queued.
    pub fn cancel(&mut self, session: SessionId) -> Option<(W, QueuePlace)> {
        let at = self.location.remove(&session)?;
        let waiting = match at {
            None => self.queue.remove(session),
            Some(server) => self.queues.get_mut(server.0)?.remove(session),
        }?;
        if let Some(server) = at {
            self.touch(server.0);
        }
        self.queueing.left(&waiting);
        let queued = QueuePlace::of(&waiting, at.is_some());
        Some((waiting.waiter, queued))
    }

    // === freed slots ===

    /// A freed slot of `server` arrived (`Dequeue`). The best waiter that can
    /// use it gets it: the head of the server's own queue or, if the server
    /// takes balanced traffic, the head of the backend queue — the lower key
    /// wins, a tie goes to the server queue. With no waiter, or no room under
    /// the server's effective maxconn, it is held.
    pub fn credit(&mut self, server: ServerId) -> Option<Grant<W>> {
        let s = self.servers.get_mut(server.0)?;
        if s.removed {
            // Its Server lends on until its last session ends; nobody may
            // use those slots any more.
            return None;
        }
        if let Some(held) = &mut s.held {
            *held += 1;
        }
        self.touch(server.0);
        self.grant_from(server)
    }

    /// Hands one held slot of `server` to the best waiter, if it may.
    pub(crate) fn grant_from(&mut self, server: ServerId) -> Option<Grant<W>> {
        if !self.servers[server.0].status.up || !self.has_room(server.0) {
            return None;
        }
        let order = self.queueing.order();
        let own = self.queues.get(server.0).and_then(|q| q.next_key(order));
        let shared = if self.balanced(server.0) { self.queue.next_key(order) } else { None };
        let from_own = match (own, shared) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(own), Some(shared)) => order.first(own, shared),
        };
        let waiting =
            if from_own { self.queues.get_mut(server.0)?.pop_next(order) } else { self.queue.pop_next(order) }?;
        self.location.remove(&waiting.session);
        self.queueing.left(&waiting);
        // `take_slot` touches the server, whose queue may have shrunk.
        self.take_slot(server);
        let queued = QueuePlace::of(&waiting, from_own);
        Some(Grant { server, session: waiting.session, waiter: waiting.waiter, queued, source: waiting.source })
    }

    /// The next server after `after` (from the first with `None`) that a
    /// settle should offer to grant from, in id order: `None` at once when
    /// nobody waits or nothing may be granted (paused, the backend at its
    /// maxconn); otherwise only servers holding a credit they may use at
    /// the backend's load now — a credit that dynamic maxconn holds back
    /// is not visited until the load reaches its server's threshold
    /// ([`RoomByLoad`]) — and, while the backend queue is empty, only
    /// those with waiters of their own. The others cannot grant. So a
    /// settle costs O(1) while nobody waits, O(servers with a queue and a
    /// usable credit) while sessions wait for given servers (hashing), and
    /// O(servers with a usable credit) while the backend queue has waiters
    /// (backups not in use, with waiters of their own, included) — each
    /// step an O(1) test, the walk O(n / 4 096) words, plus O(log n) per
    /// server whose threshold the load crossed since the last settle.
    pub(crate) fn next_to_settle(&mut self, after: Option<ServerId>) -> Option<ServerId> {
        self.sort_holding();
        if self.location.is_empty() || self.wide().blocked() {
            return None;
        }
        let from = after.map_or(0, |a| a.0 + 1);
        self.holding.next_ripe_from(from, self.queue.is_empty()).map(ServerId)
    }

    /// Grants every held slot that may be used now to a waiter (after a
    /// weight, cap, state or load change raised what servers may take),
    /// into `grants`.
    fn dispatch_into(&mut self, grants: &mut Vec<Grant<W>>) {
        let mut next = self.next_to_settle(None);
        while let Some(server) = next {
            while let Some(grant) = self.grant_from(server) {
                grants.push(grant);
            }
            next = self.next_to_settle(Some(server));
        }
    }

    // === sources seated (queue.per_source.max_live) ===

    /// The source a grant's ticket counts, if the backend caps its
    /// sources' live sessions (`None`: the grant carries no ticket).
    pub fn ticket_for(&self, source: Option<SourceKey>) -> Option<SourceKey> {
        source.filter(|_| self.queueing.caps_live())
    }

    /// A grant with a ticket for `source` was delivered.
    pub fn seat(&mut self, source: SourceKey) {
        self.queueing.seat(source);
    }

    /// A ticket for `source` was dropped: its session left the backend.
    pub fn unseat(&mut self, source: SourceKey) {
        self.queueing.unseat(source);
    }

    /// Sessions of `source` holding a ticket (seated or retrying).
    #[cfg(feature = "internals")]
    pub fn seated_of(&self, source: SourceKey) -> u32 {
        self.queueing.seated_of(source)
    }

    // === time and shedding (queue disciplines) ===

    /// The discipline reads the clock (codel, adaptive LIFO): the core
    /// sets the time of each message and arms the shedding timer.
    pub fn timed(&self) -> bool {
        self.queueing.timed()
    }

    /// The time of the message being handled.
    pub fn set_now(&mut self, now: Instant) {
        self.queueing.set_now(now);
    }

    /// Looks at the queues after a change, for CoDel's standing-queue test.
    pub fn look(&mut self) {
        self.queueing.look();
    }

    /// The queues have stood for a whole CoDel interval.
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn overloaded(&self) -> bool {
        self.queueing.overloaded()
    }

    /// Takes out the waiters the discipline sheds now (overloaded: older
    /// than the shed age, worst class first), to be refused.
    pub fn shed(&mut self) -> Vec<Refusal<W>> {
        let shed = self.queueing.to_shed();
        let refusals = shed
            .into_iter()
            .filter_map(|session| self.cancel(session))
            .map(|(waiter, queued)| Refusal { waiter, queued })
            .collect();
        self.queueing.look();
        refusals
    }

    /// When the shedding timer should look again (`None`: nobody waits,
    /// or the discipline sheds nobody).
    pub fn next_look(&self) -> Option<Instant> {
        self.queueing.next_look()
    }

    // === server status ===

    /// A Server reports its state. When it goes down or into maintenance,
    /// its own queue is redispatched (re-reserved through balancing) or, with
    /// `redispatch` off, refused; when no server can take balanced traffic
    /// any more, the backend queue is refused at once rather than left to
    /// time out. Returns the grants and refusals to deliver.
    pub fn set_status(&mut self, server: ServerId, status: ServerStatus) -> (Vec<Grant<W>>, Vec<Refusal<W>>) {
        if self.servers.get(server.0).is_none_or(|s| s.removed) {
            // A removed server's last report may still be in flight.
            return (Vec::new(), Vec::new());
        }
        let redispatch = self.setup.redispatch;
        self.apply_status(server, status, redispatch)
    }

    /// `redispatch`: a server going down hands its own queue to balancing
    /// (instead of refusing it).
    fn apply_status(
        &mut self,
        server: ServerId,
        status: ServerStatus,
        redispatch: bool,
    ) -> (Vec<Grant<W>>, Vec<Refusal<W>>) {
        let mut grants = Vec::new();
        let mut refusals = Vec::new();
        let Some(s) = self.servers.get_mut(server.0) else { return (grants, refusals) };
        let went_down = s.status.up && !status.up;
        s.status = status;
        self.balancer.server_changed(server, ServerEvent::Changed { up: status.up, weight: status.weight });
        self.touch(server.0);
        let stats = &mut self.stats[server.0];
        stats.limit_seen = stats.limit_seen.max(status.cap.unwrap_or(0));
        // Waiters already queued go first: a slot that just became usable
        // (a backup taking over, a weight raised) is theirs.
        self.dispatch_into(&mut grants);
        if went_down {
            let mut stranded = Vec::new();
            while let Some(w) = self.queues.get_mut(server.0).and_then(WaitQueue::pop_front) {
                self.location.remove(&w.session);
                self.queueing.left(&w);
                stranded.push(w);
            }
            self.touch(server.0);
            for w in stranded {
                let queued = QueuePlace::of(&w, true);
                if !redispatch {
                    refusals.push(Refusal { waiter: w.waiter, queued });
                    continue;
                }
                // Balanced again with its original key and arrival: it
                // keeps its place among the backend queue's waiters.
                let joining = w.joining();
                let req =
                    ReserveRequest { session: w.session, key: w.key, client: None, pin: None, avoid: Some(server) };
                match self.reserve_joining(req, joining, w.waiter) {
                    Reserved::Granted { server, waiter, source } => {
                        grants.push(Grant { server, session: w.session, waiter, queued, source })
                    }
                    // Its wait raised the backend's load, which may have
                    // raised a server's dynamic limit (`minconn` under
                    // `fullconn`): that room is the queue's before the
                    // next stranded session is balanced, or a later one
                    // would be granted ahead of it.
                    Reserved::Queued { .. } => self.dispatch_into(&mut grants),
                    Reserved::Full { waiter }
                    | Reserved::NoServer { waiter }
                    | Reserved::SourceFull { waiter }
                    | Reserved::SourceBusy { waiter } => {
                        refusals.push(Refusal { waiter, queued })
                    }
                }
            }
        }
        if !self.any_usable() {
            while let Some(w) = self.queue.pop_front() {
                self.location.remove(&w.session);
                self.queueing.left(&w);
                let queued = QueuePlace::of(&w, false);
                refusals.push(Refusal { waiter: w.waiter, queued });
            }
        }
        self.dispatch_into(&mut grants);
        (grants, refusals)
    }

    // === pause ===

    /// Pauses or resumes granting. Returns the grants a resume makes, in
    /// queue order (the head of each queue first, as credits would).
    pub fn set_paused(&mut self, paused: bool) -> Vec<Grant<W>> {
        // Backend-wide: no standing changes, the view reads it per pick.
        self.paused = paused;
        let mut grants = Vec::new();
        self.dispatch_into(&mut grants);
        grants
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    // === reconfiguration (reload) ===

    /// Adds a server (a reload added it); its id is the next index, so the
    /// ids of the others never change. It starts up, with no credit: its
    /// Server lends them.
    pub fn add_server(&mut self, setup: &ServerSetup) -> ServerId {
        self.servers.push(facts_of(setup));
        self.queues.add_server();
        self.stats.push(stats_of(setup));
        let id = ServerId(self.servers.len() - 1);
        self.balancer.server_changed(id, ServerEvent::Added);
        self.touch(id.0);
        id
    }

    /// A reload changed how a server is set up (not its maxconn between
    /// limited and unlimited: that is a new server). Its weight comes from
    /// its Server, in the next status report.
    pub fn update_server(&mut self, server: ServerId, setup: &ServerSetup) {
        let Some(s) = self.servers.get_mut(server.0).filter(|s| !s.removed) else { return };
        let maxconn = Limit::from_config(setup.maxconn);
        debug_assert_eq!(s.maxconn.is_unlimited(), maxconn.is_unlimited(), "limited and unlimited swap servers");
        s.maxconn = maxconn;
        s.minconn = Limit::from_config(setup.minconn);
        s.maxqueue = Limit::from_config(setup.maxqueue);
        s.backup = setup.backup;
        let stats = &mut self.stats[server.0];
        stats.limit_seen = stats.limit_seen.max(setup.maxconn);
        stats.maxqueue_seen = stats.maxqueue_seen.loosest(s.maxqueue);
        self.touch(server.0);
    }

    /// A reload removed a server. Sessions it serves carry on (their slots
    /// still go back to its Server); its held credits are dropped, credits
    /// that arrive later too; its own queue goes to balancing whatever
    /// `redispatch` says — a reload never drops a waiting session while
    /// another server can take it.
    pub fn remove_server(&mut self, server: ServerId) -> (Vec<Grant<W>>, Vec<Refusal<W>>) {
        let Some(s) = self.servers.get_mut(server.0).filter(|s| !s.removed) else { return (Vec::new(), Vec::new()) };
        s.removed = true;
        if s.held.is_some() {
            s.held = Some(0);
        }
        let down = ServerStatus { up: false, weight: 0, cap: None };
        let outcome = self.apply_status(server, down, true);
        self.balancer.server_changed(server, ServerEvent::Removed);
        outcome
    }

    /// A reload changed the backend's settings or its balancing (a new
    /// balancer, sized for every server id; `None` keeps the one it has).
    /// Returns what became grantable (fullconn changes what servers may
    /// take).
    pub fn reconfigure(&mut self, setup: BackendSetup, balancer: Option<Box<dyn Balancer>>) -> Vec<Grant<W>> {
        self.setup = setup.into();
        self.maxqueue_seen = self.maxqueue_seen.loosest(self.setup.maxqueue);
        self.maxconn_seen = match (self.maxconn_seen, self.setup.maxconn.get()) {
            (Some(seen), Some(now)) => Some(seen.max(now)),
            _ => None,
        };
        if let Some(balancer) = balancer {
            self.balancer = balancer;
            // A new balancer starts from nothing: it hears of every server
            // once (O(n), on a reload only).
            let servers = Servers::new(&self.servers, &self.tallies, self.wide(), None);
            for i in 0..servers.len() {
                self.balancer.candidate_changed(ServerId(i), &servers);
            }
        }
        self.set_fair(setup.queue.fair != crate::config::FairShare::None);
        let waiting = self.queue.joinings().chain(self.queues.allocated().flat_map(|q| q.joinings()));
        self.queueing.reconfigure(setup.queue, waiting);
        let mut grants = Vec::new();
        self.dispatch_into(&mut grants);
        grants
    }

    /// Its balancer keeps its index through server changes
    /// ([`Balancer::follows_server_changes`]).
    pub(crate) fn balancer_follows_server_changes(&self) -> bool {
        self.balancer.follows_server_changes()
    }

    /// Whether `server` was removed by a reload.
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn is_removed(&self, server: ServerId) -> bool {
        self.servers.get(server.0).is_some_and(|s| s.removed)
    }

    /// Nobody waits and no session holds a slot: a retired backend may stop.
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn idle(&self) -> bool {
        self.location.is_empty() && self.served_total == 0
    }

    /// Sessions waiting in any of its queues.
    pub fn queued(&self) -> usize {
        self.location.len()
    }

    /// Nobody waits in any of its queues.
    pub fn nobody_waits(&self) -> bool {
        self.location.is_empty()
    }

    // === introspection ===

    pub fn backend_queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn server_queue_len(&self, server: ServerId) -> usize {
        self.queues.len(server.0)
    }

    /// Free credits held for `server` (`None` for an unlimited server).
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn held(&self, server: ServerId) -> Option<u32> {
        self.servers.get(server.0).and_then(|s| s.held)
    }

    /// Sessions holding a slot of `server`.
    pub fn served(&self, server: ServerId) -> u32 {
        self.servers.get(server.0).map_or(0, |s| s.served)
    }

    /// The maxconn in force now for `server` (`None` = its configured one).
    pub fn effective_maxconn(&self, server: ServerId) -> Option<u32> {
        self.servers.get(server.0).and_then(|s| self.wide().effective_max(s))
    }

    /// Most sessions `server` served at once.
    pub fn max_served(&self, server: ServerId) -> u32 {
        self.stats.get(server.0).map_or(0, |s| s.max_served)
    }

    /// Longest `server`'s own queue was.
    pub fn max_server_queue(&self, server: ServerId) -> usize {
        self.stats.get(server.0).map_or(0, |s| s.max_queue)
    }

    /// How many may wait in the backend queue now (`None` = unbounded).
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn backend_queue_limit(&self) -> Option<u32> {
        self.backend_queue_bound().get()
    }

    /// Longest the backend queue was.
    pub fn max_backend_queue(&self) -> usize {
        self.max_queue
    }

    /// Most sessions the backend's servers served at once, together.
    pub fn max_backend_served(&self) -> u32 {
        self.max_served
    }

    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn is_queued(&self, session: SessionId) -> bool {
        self.location.contains_key(&session)
    }

    pub fn servers(&self) -> usize {
        self.servers.len()
    }

    /// Checks the invariants listed in the module doc; returns the first
    /// violation. Used by tests after every step.
    pub fn check(&self) -> Result<(), String> {
        // A lowered maxqueue evicts nobody: the bound checked is the
        // loosest one it ever had; newcomers met the bound in force.
        if self.maxqueue_seen.exceeded_by(self.queue.len()) {
            return Err(format!("backend queue {} > maxqueue {}", self.queue.len(), self.maxqueue_seen));
        }
        self.check_counts()?;
        let any_balanced = (0..self.servers.len()).any(|i| self.balanced(i));
        if !any_balanced && !self.queue.is_empty() {
            return Err("backend queue waits while no server can take it".into());
        }
        for (i, s) in self.servers.iter().enumerate() {
            let queued = self.queues.len(i);
            if s.removed && (queued > 0 || s.held.is_some_and(|n| n > 0) || s.status.up) {
                return Err(format!("removed server {i} still queues, holds credits or is up"));
            }
            if self.stats[i].maxqueue_seen.exceeded_by(queued) {
                return Err(format!("server {i} queue {queued} > maxqueue {}", self.stats[i].maxqueue_seen));
            }
            if !s.maxconn.is_unlimited() && s.served > self.stats[i].limit_seen {
                return Err(format!("server {i} serves {} > maxconn {}", s.served, self.stats[i].limit_seen));
            }
            let usable_credit = s.held.is_some_and(|n| n > 0) && s.status.up && self.has_room(i);
            if usable_credit {
                if queued > 0 {
                    return Err(format!("server {i} holds a usable credit while its own queue waits"));
                }
                if self.balanced(i) && !self.queue.is_empty() {
                    return Err(format!("server {i} holds a usable credit while the backend queue waits"));
                }
            }
            if s.held.is_none() && queued > 0 && s.status.up && self.has_room(i) {
                return Err(format!("unlimited server {i} has a queue"));
            }
        }
        let queued = self.queue.len() + self.queues.allocated().map(WaitQueue::len).sum::<usize>();
        if queued != self.location.len() {
            return Err(format!("{queued} queued but {} located", self.location.len()));
        }
        if let Some(max) = self.maxconn_seen {
            if self.served_total() > max {
                return Err(format!("servers serve {} > backend maxconn {max}", self.served_total()));
            }
        }
        if let Some(indexed) = self.queueing.indexed() {
            if indexed != queued {
                return Err(format!("{queued} queued but {indexed} indexed by age"));
            }
        }
        Ok(())
    }

    /// What is kept incrementally equals what a recount finds: every
    /// server's standing, the tallies, the served total and the set of
    /// holding servers (a missed `touch` shows here).
    fn check_counts(&self) -> Result<(), String> {
        let mut tallies = [Tally::default(); 2];
        let mut served = 0u32;
        for (i, s) in self.servers.iter().enumerate() {
            if s.queued as usize != self.queues.len(i) {
                return Err(format!("server {i} counts {} queued, its queue holds {}", s.queued, self.queues.len(i)));
            }
            let now = s.standing();
            if now != s.counted {
                return Err(format!("server {i} counted as {:?}, stands as {now:?}", s.counted));
            }
            let (from, sorted) = self.holding.of(i);
            if from != self.room_from_load(i, now.holds) || !sorted {
                return Err(format!("server {i} sorted from load {from:?} (sorted as it says: {sorted})"));
            }
            // The threshold is where its room starts: a held credit it may
            // use now is exactly one whose threshold the load reached.
            if now.holds && !self.wide().blocked() && from.is_some_and(|t| t <= self.load()) != self.has_room(i) {
                return Err(format!("server {i} has room from load {from:?}, but at {} has_room disagrees", self.load()));
            }
            tallies[now.group()].add(&now);
            served += s.served;
        }
        if tallies != self.tallies {
            return Err(format!("tallies {:?}, recounted {tallies:?}", self.tallies));
        }
        if served != self.served_total {
            return Err(format!("served total {}, recounted {served}", self.served_total));
        }
        if self.holding.fullconn() != self.setup.fullconn {
            return Err(format!("holding servers sorted for fullconn {}, not {}", self.holding.fullconn(), self.setup.fullconn));
        }
        Ok(())
    }
}