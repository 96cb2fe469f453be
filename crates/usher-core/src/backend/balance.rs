//! Balancing algorithms: the seam through which a backend picks a server.
//!
//! A [`Balancer`] sees only [`Candidate`] views that the BackendQueue
//! computes from its own state (weights, free slots, load); it never reads
//! another actor's counters. It either picks a server that can take the
//! session now ([`Choice::Balanced`]) or, for hash-based algorithms, names the
//! server the client belongs to whatever its load ([`Choice::Pinned`]), and
//! the BackendQueue queues it there if that server is full.

mod first;
mod hash;
mod leastconn;
mod random;
mod roundrobin;

pub use first::First;
pub use hash::ConsistentHash;
pub use leastconn::LeastConn;
pub use random::PowerOfChoices;
pub use roundrobin::SmoothRoundRobin;

use std::net::IpAddr;

use crate::config::Balance;
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

pub trait Balancer: Send + 'static {
    /// Picks for one new session; `None` when no candidate fits.
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice>;
}

/// The balancer configured by `backends.NAME.balance`.
pub fn for_kind(kind: Balance, weights: &[u32], draws: u32, hash_balance_factor: u32) -> Box<dyn Balancer> {
    match kind {
        Balance::Roundrobin => Box::new(SmoothRoundRobin::new(weights.len())),
        Balance::StaticRr => Box::new(SmoothRoundRobin::with_static_weights(weights)),
        Balance::Leastconn => Box::new(LeastConn::default()),
        Balance::First => Box::new(First),
        Balance::Source => Box::new(ConsistentHash::new(hash_balance_factor)),
        Balance::Random => Box::new(PowerOfChoices::new(draws, rand::random())),
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
