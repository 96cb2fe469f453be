//! Balancing algorithms registered by name, as session hooks are: the six
//! built in and any an embedder adds go through the same registry, so
//! `backends.NAME.balance` is checked against it (`usher check` names an
//! unknown algorithm with the list of known ones) and a backend's balancer
//! is built from it at start and at every reload that needs a new one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Balancer, ConsistentHash, First, LeastConn, PowerOfChoices, SmoothRoundRobin};
use crate::config::Balance;

/// What a balancer is built from: the backend's servers by id (a removed
/// server's weight is 0) and its balancing keys.
#[derive(Debug, Clone, Copy)]
pub struct BalancerSetup<'a> {
    /// Configured weight of each server id.
    pub weights: &'a [u32],
    /// `backends.NAME.draws`.
    pub draws: u32,
    /// `backends.NAME.hash_balance_factor` (0 = off).
    pub hash_balance_factor: u32,
}

/// Builds one named balancing algorithm for a backend.
pub trait BalancerFactory: Send + Sync + 'static {
    fn build(&self, setup: &BalancerSetup<'_>) -> Box<dyn Balancer>;
}

impl<F> BalancerFactory for F
where
    F: Fn(&BalancerSetup<'_>) -> Box<dyn Balancer> + Send + Sync + 'static,
{
    fn build(&self, setup: &BalancerSetup<'_>) -> Box<dyn Balancer> {
        self(setup)
    }
}

/// The balancing algorithms a program knows, by name.
#[derive(Clone)]
pub struct BalancerRegistry {
    entries: BTreeMap<String, Arc<dyn BalancerFactory>>,
}

use crate::config::BUILT_IN_BALANCERS as BUILT_IN;

impl Default for BalancerRegistry {
    /// The six built in.
    fn default() -> BalancerRegistry {
        let mut r = BalancerRegistry { entries: BTreeMap::new() };
        r.register("roundrobin", |s: &BalancerSetup<'_>| {
            Box::new(SmoothRoundRobin::new(s.weights.len())) as Box<dyn Balancer>
        });
        r.register("static-rr", |s: &BalancerSetup<'_>| {
            Box::new(SmoothRoundRobin::with_static_weights(s.weights)) as Box<dyn Balancer>
        });
        r.register("leastconn", |_: &BalancerSetup<'_>| Box::new(LeastConn::default()) as Box<dyn Balancer>);
        r.register("first", |_: &BalancerSetup<'_>| Box::new(First::default()) as Box<dyn Balancer>);
        r.register("source", |s: &BalancerSetup<'_>| {
            Box::new(ConsistentHash::new(s.hash_balance_factor)) as Box<dyn Balancer>
        });
        r.register("random", |s: &BalancerSetup<'_>| {
            Box::new(PowerOfChoices::new(s.draws, rand::random())) as Box<dyn Balancer>
        });
        debug_assert!(BUILT_IN.iter().all(|name| r.entries.contains_key(*name)));
        r
    }
}

impl BalancerRegistry {
    /// Registers `factory` as `name` (replacing a built-in of that name).
    pub fn register(&mut self, name: &str, factory: impl BalancerFactory) -> &mut Self {
        self.entries.insert(name.to_owned(), Arc::new(factory));
        self
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The balancer `balance` names. A name the configuration check let
    /// through is registered; one that is not (a registry swapped under a
    /// running broker) falls back to round robin rather than failing a
    /// reload halfway.
    pub fn build(&self, balance: &Balance, setup: &BalancerSetup<'_>) -> Box<dyn Balancer> {
        match self.entries.get(balance.as_str()) {
            Some(factory) => factory.build(setup),
            None => Box::new(SmoothRoundRobin::new(setup.weights.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::balance::testing::Table;
    use crate::backend::balance::{Choice, Servers};

    #[test]
    fn built_ins_are_registered_and_an_embedders_name_joins_them() {
        let mut r = BalancerRegistry::default();
        let mut names = BUILT_IN.map(str::to_owned).to_vec();
        names.sort();
        assert_eq!(r.names(), names);
        r.register("always-last", |s: &BalancerSetup<'_>| {
            let last = s.weights.len() - 1;
            Box::new(move |_: &Servers<'_>, _: Option<std::net::IpAddr>| {
                Some(Choice::Balanced(crate::ids::ServerId(last)))
            }) as Box<dyn Balancer>
        });
        assert!(r.names().contains(&"always-last".to_owned()));
        let setup = BalancerSetup { weights: &[1, 1, 1], draws: 2, hash_balance_factor: 0 };
        let mut b = r.build(&Balance::new("always-last"), &setup);
        let t = Table::new(&[1, 1, 1], b.as_mut());
        assert_eq!(b.pick(&t.view(), None), Some(Choice::Balanced(crate::ids::ServerId(2))));
    }
}
