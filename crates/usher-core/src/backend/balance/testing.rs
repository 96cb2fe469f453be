//! A table of servers for the algorithms' unit tests: what the
//! BackendQueue keeps, without its queues, feeding the balancer under test
//! as the BackendQueue does.

use super::servers::{BackendWide, ServerFacts, Tally};
use super::{Balancer, Servers};
use crate::backend::core::ServerStatus;
use crate::backend::limit::Limit;
use crate::ids::ServerId;

/// An unlimited server of `weight`, up and idle, not yet counted.
pub(crate) fn unlimited(weight: u32) -> ServerFacts {
    ServerFacts {
        held: None,
        served: 0,
        queued: 0,
        maxconn: Limit::default(),
        minconn: Limit::default(),
        maxqueue: Limit::default(),
        backup: false,
        status: ServerStatus { up: true, weight, cap: None },
        removed: false,
        counted: Default::default(),
    }
}

pub(crate) struct Table {
    facts: Vec<ServerFacts>,
    tallies: [Tally; 2],
}

impl Table {
    /// Unlimited servers of these weights, all up and idle; `b` hears of
    /// each.
    pub fn new(weights: &[u32], b: &mut dyn Balancer) -> Table {
        let facts = weights.iter().map(|&w| unlimited(w)).collect();
        let mut t = Table { facts, tallies: Default::default() };
        for i in 0..weights.len() {
            t.touch(i, b);
        }
        t
    }

    pub fn view(&self) -> Servers<'_> {
        let served = self.facts.iter().map(|s| s.served).sum::<u32>();
        let wide = BackendWide {
            paused: false,
            fullconn: Limit::default(),
            maxconn: Limit::default(),
            served,
            load: u64::from(served),
            any_active: self.tallies[0].eligible > 0,
        };
        Servers::new(&self.facts, &self.tallies, wide, None)
    }

    fn touch(&mut self, i: usize, b: &mut dyn Balancer) {
        let now = self.facts[i].standing();
        let before = std::mem::replace(&mut self.facts[i].counted, now);
        self.tallies[before.group()].remove(&before);
        self.tallies[now.group()].add(&now);
        b.candidate_changed(ServerId(i), &self.view());
    }

    /// Server `i` serves `load` sessions.
    pub fn set_load(&mut self, i: usize, load: u32, b: &mut dyn Balancer) {
        self.facts[i].served = load;
        self.touch(i, b);
    }

    /// Server `i` has no free slot (`full`) or is unlimited again.
    pub fn set_full(&mut self, i: usize, full: bool, b: &mut dyn Balancer) {
        self.facts[i].held = full.then_some(0);
        self.touch(i, b);
    }

    pub fn set_weight(&mut self, i: usize, weight: u32, b: &mut dyn Balancer) {
        self.facts[i].status.weight = weight;
        self.touch(i, b);
    }
}
