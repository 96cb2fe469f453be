//! Balancing algorithms: the seam through which a backend picks a server.
//!
//! A [`Balancer`] sees the servers through [`Servers`], a view that the
//! BackendQueue answers per server in O(1) from what it keeps
//! incrementally (weights, free slots, load, how many actives are usable);
//! it never reads another actor's counters. It either picks a server that
//! can take the session now ([`Choice::Balanced`]) or, for hash-based
//! algorithms, names the server the client belongs to whatever its load
//! ([`Choice::Pinned`]), and the BackendQueue queues it there if that
//! server is full.
//!
//! The core still decides: a pick of a server that cannot take the
//! session now, of no such server, or a panic, is not followed — the
//! session waits in the backend queue as if the balancer had found no
//! candidate, and the next freed slot serves it. No algorithm can put a
//! server over its maxconn or strand a waiter.
//!
//! Why a view and hooks rather than a slice of every server: a backend may
//! have thousands of servers and one BackendQueue thread serves every
//! backend, so a pick must not cost O(n) nor allocate. The core recomputes
//! one server's [`Candidate`]-relevant state after every change to that
//! server (a grant, a release, a credit, its queue growing or shrinking,
//! its weight, state or role, add/remove) and tells the balancer through
//! [`Balancer::candidate_changed`]; the built-in algorithms keep their own
//! index from that (a set of ready servers in id order for `first`, an
//! earliest-deadline order for the round robins, a load/weight order for
//! `leastconn`, a Fenwick tree of weights for `random`, a sorted ring for
//! `source`) and look at only a few servers per pick. What can change many
//! servers' room at once without touching them — a pause, the backend's
//! own maxconn, dynamic maxconn (`minconn`/`fullconn`) — is read per
//! visited server at pick time ([`Servers::get`]); a pause or a full
//! backend is answered in O(1), dynamic maxconn may make a pick walk past
//! servers it has lowered (worst case every ready server, as HAProxy's
//! leastconn tree does). That walk is paid only while nobody waits in the
//! backend queue: while somebody does, no server can take a newcomer, so
//! a balancer that never pins ([`Balancer::only_balances`], every built-in
//! but `source`) is not asked at all — the session queues in O(1) — and
//! the settle after each message visits only the servers whose dynamic
//! maxconn the backend's load has raised enough to grant (`RoomByLoad`,
//! holding servers by the load from which they have room).
//!
//! The core makes two choices by load itself — where a retry that finds
//! every other server busy waits, and which server takes a hashed session
//! whose server's queue is full — from its own load/weight index
//! (`LoadOrder`), in O(log n) too.
//!
//! Algorithms are registered by name ([`BalancerRegistry`]); the
//! `Balancer` trait's other methods have default bodies that do nothing,
//! so a stateless algorithm is one method (or a closure), and a stateful
//! one (EWMA of connect times, least latency) hears of grants, releases,
//! server changes and connect times.

mod first;
mod hash;
mod heap;
mod id_set;
mod leastconn;
pub(crate) mod load_order;
mod random;
mod registry;
pub(crate) mod room_by_load;
mod roundrobin;
pub(crate) mod servers;
mod vtime;

pub use first::First;
pub use hash::ConsistentHash;
pub use leastconn::LeastConn;
pub use random::PowerOfChoices;
pub use registry::{BalancerFactory, BalancerRegistry, BalancerSetup};
pub use roundrobin::SmoothRoundRobin;
pub use servers::Servers;

use std::net::IpAddr;
use std::time::Duration;

use crate::ids::ServerId;

/// What a balancer may know about one server when picking.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub id: ServerId,
    /// Effective weight now (slowstart and runtime changes applied).
    pub weight: u32,
    /// Can take balanced traffic at all: up, not in maintenance, weight > 0,
    /// and not a backup while an active server is usable.
    pub usable: bool,
    /// Usable and can take a new session right now: a free slot, nobody
    /// queued for it.
    pub available: bool,
    /// Sessions it serves plus sessions queued for it.
    pub load: u32,
}

/// A balancer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// This available server takes the session now.
    Balanced(ServerId),
    /// The session belongs to this usable server (hash); it queues there
    /// when the server is full.
    Pinned(ServerId),
}

/// What happened to one server, for a balancer that keeps state per server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// A reload or a run-time change added it (its id is the next one).
    Added,
    /// Its state as balancing sees it: usable at all, effective weight.
    Changed { up: bool, weight: u32 },
    /// A reload removed it: it is never a candidate again.
    Removed,
}

/// A balancing algorithm, run inside its backend's BackendQueue (one
/// thread, no lock): every method is called between two messages.
pub trait Balancer: Send + 'static {
    /// Picks for one new session; `None` when no candidate fits.
    fn pick(&mut self, servers: &Servers<'_>, client: Option<IpAddr>) -> Option<Choice>;

    /// What `server` is by itself changed: its load, weight, state or
    /// role, or whether it could take a session now (`servers.get(server)`
    /// tells the rest). Called after every such change, and for every
    /// server once when the balancer is installed, so a balancer can keep
    /// an index instead of looking at every server per pick. A balancer
    /// that wraps another forwards it, or the inner one's index stays
    /// empty.
    fn candidate_changed(&mut self, _server: ServerId, _servers: &Servers<'_>) {}

    /// This balancer never answers [`Choice::Pinned`]. While the backend
    /// queue has waiters, no server that takes balanced traffic has a slot
    /// it may use (the core hands every usable slot to them first), so
    /// such a balancer could only answer `None`: the core then queues the
    /// session behind them without asking it — in O(1), where a pick
    /// might walk past every server dynamic maxconn holds back. A balancer
    /// that answers `true` is not asked for those sessions, so it must not
    /// rely on seeing every one of them. Off by default: a balancer that
    /// may pin (hashing) must be asked, since a pinned session waits in its
    /// own server's queue or is redispatched, not queued behind the
    /// backend queue. A balancer that wraps another forwards it.
    fn only_balances(&self) -> bool {
        false
    }

    /// A session took a slot on `server` (whoever picked it: this
    /// balancer, a pin, a freed slot handed to a waiter).
    fn granted(&mut self, _server: ServerId) {}

    /// `sessions` of `server` gave their slots back.
    fn released(&mut self, _server: ServerId, _sessions: u32) {}

    /// A server was added, changed state, or was removed.
    fn server_changed(&mut self, _server: ServerId, _event: ServerEvent) {}

    /// Keeps its own index right through servers added, changed and
    /// removed (it hears of each through the methods above), so a reload
    /// that changes only the backend's servers keeps it — with its rotation,
    /// its ring and what it learnt — instead of installing a new one, which
    /// visits every server in one handler (for hashing, 64 ring points per
    /// unit of weight: a backend of 10 000 servers stalls its thread for
    /// tens of milliseconds). Off by default: a balancer that reads the
    /// configured servers when it is built is built again.
    fn follows_server_changes(&self) -> bool {
        false
    }

    /// Asks sessions to report how long their connects took
    /// ([`connected`](Self::connected)); off by default, since each report
    /// is a message per session.
    fn wants_connect_times(&self) -> bool {
        false
    }

    /// A session of this backend connected to `server` in `connect_time`
    /// (only when [`wants_connect_times`](Self::wants_connect_times)).
    fn connected(&mut self, _server: ServerId, _connect_time: Duration) {}
}

/// A stateless balancer is a closure.
impl<F> Balancer for F
where
    F: FnMut(&Servers<'_>, Option<IpAddr>) -> Option<Choice> + Send + 'static,
{
    fn pick(&mut self, servers: &Servers<'_>, client: Option<IpAddr>) -> Option<Choice> {
        self(servers, client)
    }
}

#[cfg(test)]
pub(crate) mod testing;
