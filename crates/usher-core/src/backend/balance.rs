//! Balancing algorithms: the seam through which a backend picks a server.
//!
//! A [`Balancer`] sees only [`Candidate`] views that the BackendQueue
//! computes from its own state (weights, free slots, load); it never reads
//! another actor's counters. It either picks a server that can take the
//! session now ([`Choice::Balanced`]) or, for hash-based algorithms, names the
//! server the client belongs to whatever its load ([`Choice::Pinned`]), and
//! the BackendQueue queues it there if that server is full.
//!
//! The core still decides: a pick of a server that cannot take the
//! session now, of no such server, or a panic, is not followed — the
//! session waits in the backend queue as if the balancer had found no
//! candidate, and the next freed slot serves it. No algorithm can put a
//! server over its maxconn or strand a waiter.
//!
//! Algorithms are registered by name ([`BalancerRegistry`]); the
//! `Balancer` trait's other methods have default bodies that do nothing,
//! so a stateless algorithm is one method (or a closure), and a stateful
//! one (EWMA of connect times, least latency) hears of grants, releases,
//! server changes and connect times.

mod first;
mod hash;
mod leastconn;
mod random;
mod registry;
mod roundrobin;

pub use first::First;
pub use hash::ConsistentHash;
pub use leastconn::LeastConn;
pub use random::PowerOfChoices;
pub use registry::{BalancerFactory, BalancerRegistry, BalancerSetup};
pub use roundrobin::SmoothRoundRobin;

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
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice>;

    /// A session took a slot on `server` (whoever picked it: this
    /// balancer, a pin, a freed slot handed to a waiter).
    fn granted(&mut self, _server: ServerId) {}

    /// `sessions` of `server` gave their slots back.
    fn released(&mut self, _server: ServerId, _sessions: u32) {}

    /// A server was added, changed state, or was removed.
    fn server_changed(&mut self, _server: ServerId, _event: ServerEvent) {}

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
    F: FnMut(&[Candidate], Option<IpAddr>) -> Option<Choice> + Send + 'static,
{
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice> {
        self(candidates, client)
    }
}

/// Among the `candidates` that `only` accepts (and with a weight), the one
/// with the least load relative to its weight; ties go to the first at or
/// after `start` (rotating ties).
pub(crate) fn least_loaded(candidates: &[Candidate], start: usize, only: impl Fn(&Candidate) -> bool) -> Option<usize> {
    let n = candidates.len();
    let mut best: Option<usize> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let c = &candidates[i];
        if c.weight == 0 || !only(c) {
            continue;
        }
        best = match best {
            None => Some(i),
            Some(b) => {
                let cb = &candidates[b];
                // load_i / w_i < load_b / w_b, without division.
                let lhs = (u64::from(c.load) + 1) * u64::from(cb.weight);
                let rhs = (u64::from(cb.load) + 1) * u64::from(c.weight);
                if lhs < rhs {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

#[cfg(test)]
pub(crate) fn candidates(weights: &[u32]) -> Vec<Candidate> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Candidate { id: ServerId(i), weight: w, usable: w > 0, available: w > 0, load: 0 })
        .collect()
}
