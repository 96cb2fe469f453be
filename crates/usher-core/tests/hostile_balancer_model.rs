//! Model-based test of the balancer seam against a hostile balancer: one
//! that names servers that do not exist, servers that are full or cannot
//! take balanced traffic, pins at random, finds nothing, or panics. The
//! core decides, so whatever the balancer says — driven here through the
//! BackendQueue's core (`QueueCore`, the very struct the actor runs) and
//! one `ServerState` per server, under seeded random interleavings:
//! - no server ever serves more than its maxconn;
//! - no slot idles while a waiter exists that could take it (a waiter in
//!   the backend queue means every server is full; one in a server's own
//!   queue means that server is full);
//! - every session hears exactly one answer, and at the end every slot is
//!   back;
//! - the picks the core did not follow are counted.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{proptest_config as config, queue_core, Reply, Sessions, TestWaiter, MAX_OPS};
use proptest::prelude::*;
use usher_core::backend::balance::{Balancer, Choice, Servers};
use usher_core::backend::{BackendSetup, QueueCore, QueueKey, ReserveRequest, ServerSetup, ServerState};
use usher_core::ids::{ServerId, SessionId};

/// What the hostile balancer says, in turn.
#[derive(Debug, Clone, Copy)]
enum Says {
    Balanced(usize),
    Pinned(usize),
    Nothing,
    Panic,
    /// A sane pick: the first available server.
    Sane,
}

struct Hostile {
    script: Vec<Says>,
    next: usize,
}

const PANIC_MESSAGE: &str = "hostile balancer panics on purpose";

impl Balancer for Hostile {
    fn pick(&mut self, servers: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        let says = self.script[self.next % self.script.len()];
        self.next += 1;
        match says {
            Says::Balanced(i) => Some(Choice::Balanced(ServerId(i))),
            Says::Pinned(i) => Some(Choice::Pinned(ServerId(i))),
            Says::Nothing => None,
            Says::Panic => panic!("{PANIC_MESSAGE}"),
            Says::Sane => servers.iter().find(|c| c.available).map(|c| Choice::Balanced(c.id)),
        }
    }
}

fn says() -> impl Strategy<Value = Says> {
    prop_oneof![
        3 => (0usize..6).prop_map(Says::Balanced),
        2 => (0usize..6).prop_map(Says::Pinned),
        1 => Just(Says::Nothing),
        1 => Just(Says::Panic),
        2 => Just(Says::Sane),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Arrive,
    Close(usize),
    Leave(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Arrive),
        3 => (0usize..64).prop_map(Op::Close),
        1 => (0usize..64).prop_map(Op::Leave),
    ]
}

struct Sim {
    maxconn: Vec<u32>,
    core: QueueCore<TestWaiter>,
    replies: Sessions,
    servers: Vec<ServerState>,
    /// Session → the server it holds a slot of (`None`: waiting).
    live: BTreeMap<u64, Option<usize>>,
    next_id: u64,
    answered: u64,
}

impl Sim {
    fn new(maxconn: Vec<u32>, script: Vec<Says>) -> Sim {
        let setups: Vec<ServerSetup> = maxconn
            .iter()
            .map(|&maxconn| ServerSetup { maxconn, weight: 1, maxqueue: 0, backup: false, minconn: 0 })
            .collect();
        let core = queue_core(&setups, BackendSetup::default(), Box::new(Hostile { script, next: 0 }));
        let mut sim = Sim {
            servers: maxconn.iter().map(|&m| ServerState::new(m)).collect(),
            maxconn,
            core,
            replies: Sessions::default(),
            live: BTreeMap::new(),
            next_id: 1,
            answered: 0,
        };
        for s in 0..sim.servers.len() {
            let credits = sim.servers[s].lend_free();
            let _ = sim.core.dequeue(ServerId(s), credits, 0);
        }
        sim
    }

    fn pick(&self, n: usize, holding: bool) -> Option<u64> {
        let ids: Vec<u64> = self.live.iter().filter(|(_, s)| s.is_some() == holding).map(|(&id, _)| id).collect();
        (!ids.is_empty()).then(|| ids[n % ids.len()])
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Arrive => {
                let id = self.next_id;
                self.next_id += 1;
                self.live.insert(id, None);
                let key = QueueKey { class: 0, time_ms: 0, seq: id };
                let req = ReserveRequest { session: SessionId(id), key, client: None, pin: None, avoid: None };
                let _ = self.core.reserve(req, self.replies.waiter(id));
            }
            Op::Close(n) => {
                let Some(id) = self.pick(n, true) else { return };
                let server = self.live.remove(&id).flatten().expect("holding");
                let credits = self.servers[server].release();
                let _ = self.core.dequeue(ServerId(server), credits, 1);
            }
            Op::Leave(n) => {
                let Some(id) = self.pick(n, false) else { return };
                let _ = self.core.cancel(SessionId(id));
            }
        }
        self.hear();
        self.check();
    }

    fn hear(&mut self) {
        for h in self.replies.heard() {
            assert!(h.delivered, "nobody is gone here");
            assert_eq!(
                self.live.get(&h.session),
                Some(&None),
                "session {} answered while not waiting: {h:?}",
                h.session
            );
            self.answered += 1;
            match h.reply {
                Reply::Granted { server, .. } => {
                    self.live.insert(h.session, Some(server));
                }
                Reply::Left { .. } => {
                    self.live.remove(&h.session);
                }
                other => panic!("session {}: {other:?} with every server up and no maxqueue", h.session),
            }
        }
    }

    fn check(&self) {
        let state = self.core.state();
        assert_eq!(state.check(), Ok(()));
        let full = |s: usize| state.served(ServerId(s)) == self.maxconn[s];
        for (s, &max) in self.maxconn.iter().enumerate() {
            let holding = self.live.values().filter(|h| **h == Some(s)).count() as u32;
            assert_eq!(state.served(ServerId(s)), holding, "server {s}: served as the core counts it");
            assert!(holding <= max, "server {s} serves {holding} > maxconn {max}");
            if state.server_queue_len(ServerId(s)) > 0 {
                assert!(full(s), "server {s} has a free slot while its own queue waits");
            }
        }
        if state.backend_queue_len() > 0 {
            assert!((0..self.maxconn.len()).all(full), "a slot idles while the backend queue waits");
        }
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            if self.live.is_empty() {
                break;
            }
            match self.pick(0, true) {
                Some(_) => self.step(&Op::Close(0)),
                None => self.step(&Op::Leave(0)),
            }
        }
        assert!(self.live.is_empty(), "{:?}", self.live);
        assert_eq!(self.answered, self.next_id - 1, "every session heard exactly one answer");
        for (s, server) in self.servers.iter().enumerate() {
            assert_eq!(self.core.state().served(ServerId(s)), 0);
            assert_eq!(server.out(), self.maxconn[s], "server {s}: every slot lent back to the queue");
        }
    }
}

/// The hostile balancer's panics are expected: keep them out of the
/// output, and every other panic in it.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<String>().is_none_or(|m| m != PANIC_MESSAGE) {
                default(info);
            }
        }));
    });
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_hostile_balancer_cannot_break_the_core(
        maxconn in prop::collection::vec(1u32..=3, 1..=3),
        script in prop::collection::vec(says(), 1..12),
        ops in prop::collection::vec(op(), 0..MAX_OPS),
    ) {
        quiet_expected_panics();
        let mut sim = Sim::new(maxconn, script);
        for op in &ops {
            sim.step(op);
        }
        sim.drain();
    }
}

/// Each kind of bad pick is counted and not followed.
#[test]
fn bad_picks_are_counted_and_not_followed() {
    quiet_expected_panics();
    let script = vec![Says::Balanced(7), Says::Pinned(9), Says::Panic];
    let mut sim = Sim::new(vec![1, 1], script);
    for _ in 0..3 {
        sim.step(&Op::Arrive);
    }
    // Each waited in the backend queue, where the settle served two of
    // them from the free slots.
    assert_eq!(sim.core.state().bad_picks(), 3);
    assert_eq!(sim.live.values().filter(|h| h.is_some()).count(), 2);
    sim.drain();
}
