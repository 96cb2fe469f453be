//! Balancing algorithms: the seam through which a backend picks a server.
//!
//! A [`Balancer`] only chooses among servers the BackendQueue says are
//! available *now* (holding a free slot, nobody queued for them, weight > 0);
//! it never sees counters of another actor. New algorithms implement the
//! trait and are named in [`for_kind`].

mod roundrobin;

pub use roundrobin::SmoothRoundRobin;

use crate::config::Balance;
use crate::ids::ServerId;

/// What a balancer may know about one server when picking.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub id: ServerId,
    pub weight: u32,
    /// Can take a new session right now.
    pub available: bool,
}

pub trait Balancer: Send + 'static {
    /// Picks one of the available candidates, or `None` when none is.
    fn pick(&mut self, candidates: &[Candidate]) -> Option<ServerId>;
}

/// The balancer configured by `backends.NAME.balance`.
pub fn for_kind(kind: Balance, servers: usize) -> Box<dyn Balancer> {
    match kind {
        Balance::Roundrobin => Box::new(SmoothRoundRobin::new(servers)),
    }
}
