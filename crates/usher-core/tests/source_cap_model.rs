//! Model-based test of `queue.per_source.max_live`: the sessions of one
//! client source in a backend — seated, retrying or waiting — never exceed
//! the cap, and a session is refused (`PL`) exactly when its source is at
//! it. Drives the BackendQueue's core (`QueueCore`, the very struct the
//! actor runs) and one `ServerState` per server, with no actix and no
//! sockets, under seeded random interleavings of arrivals, leaves, closes
//! and retries.
//!
//! The simulator plays the sessions' side of the tickets as the real ones
//! do: a granted slot carries its source's ticket, dropped when the session
//! ends (`source_left`); a session whose connect failed keeps its ticket
//! apart while it gives its slot back and asks again (`avoid`), and drops
//! it once that retry is answered. Its `Release` (then the Server's
//! `Dequeue`) may reach the queue before or after the retry's `Reserve`, as
//! between two actors.
//!
//! After every step, against the simulator's own record:
//! - no source has more than `max_live` sessions in the backend;
//! - a new session is refused `PL` exactly when the tickets and waiters of
//!   its source (as the sessions hold them) reach the cap, and admitted
//!   otherwise — so the core's count is exact, neither leaking nor lost;
//! - a retry is never refused `PL`;
//! - every grant carries a ticket for its session's source;
//! - at the end every ticket is back: a new session of each source is
//!   admitted again.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use common::{proptest_config as config, queue_core, Reply, Sessions, TestWaiter, MAX_OPS};
use proptest::prelude::*;
use usher_core::backend::balance::SmoothRoundRobin;
use usher_core::backend::discipline::SourceKey;
use usher_core::backend::{BackendSetup, QueueCore, QueueKey, ReserveRequest, ServerSetup, ServerState};
use usher_core::config::{FairShare, PerSourceSettings, QueueSettings};
use usher_core::ids::{ServerId, SessionId};

const CLIENTS: u8 = 3;

#[derive(Debug, Clone)]
struct Cfg {
    maxconn: Vec<u32>,
    max_live: u32,
    fair: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Arrive {
        client: u8,
    },
    /// A waiter leaves (its cancel handled at once).
    Leave(usize),
    /// A seated session ends.
    Close(usize),
    /// A seated session's connect failed: it gives its slot back and asks
    /// for one elsewhere; `release_first`: its `Dequeue` reaches the queue
    /// before its `Reserve`.
    Retry {
        pick: usize,
        release_first: bool,
    },
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (prop::collection::vec(1u32..=3, 1..=3), 1u32..=4, any::<bool>()).prop_map(|(maxconn, max_live, fair)| Cfg {
        maxconn,
        max_live,
        fair,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..CLIENTS).prop_map(|client| Op::Arrive { client }),
        1 => (0usize..64).prop_map(Op::Leave),
        3 => (0usize..64).prop_map(Op::Close),
        2 => (0usize..64, any::<bool>()).prop_map(|(pick, release_first)| Op::Retry { pick, release_first }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sess {
    /// Waiting; `kept`: the ticket of the slot it gave back, if a retry.
    Queued { client: u8, key: QueueKey, kept: Option<SourceKey> },
    /// Seated on `server` with the grant's ticket.
    Holding { client: u8, key: QueueKey, server: usize, ticket: Option<SourceKey> },
}

impl Sess {
    fn client(&self) -> u8 {
        match *self {
            Sess::Queued { client, .. } | Sess::Holding { client, .. } => client,
        }
    }
}

struct Sim {
    cfg: Cfg,
    core: QueueCore<TestWaiter>,
    replies: Sessions,
    servers: Vec<ServerState>,
    live: BTreeMap<u64, Sess>,
    next_id: u64,
    refused: u64,
}

fn ip(client: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, client))
}

impl Sim {
    fn new(cfg: Cfg) -> Sim {
        let setups: Vec<ServerSetup> = cfg
            .maxconn
            .iter()
            .map(|&maxconn| ServerSetup { maxconn, weight: 1, maxqueue: 0, backup: false, minconn: 0 })
            .collect();
        let queue = QueueSettings {
            fair: if cfg.fair { FairShare::Source { ipv4_prefix: 32 } } else { FairShare::None },
            per_source: PerSourceSettings { max_queued: None, max_live: NonZeroU32::new(cfg.max_live) },
            ..QueueSettings::default()
        };
        let setup = BackendSetup { queue, ..BackendSetup::default() };
        let core = queue_core(&setups, setup, Box::new(SmoothRoundRobin::new(setups.len())));
        let mut sim = Sim {
            servers: cfg.maxconn.iter().map(|&m| ServerState::new(m)).collect(),
            cfg,
            core,
            replies: Sessions::default(),
            live: BTreeMap::new(),
            next_id: 1,
            refused: 0,
        };
        for s in 0..sim.servers.len() {
            let credits = sim.servers[s].lend_free();
            let _ = sim.core.dequeue(ServerId(s), credits, 0);
        }
        sim.hear();
        sim
    }

    /// Sessions of `client` the core should count: waiters, plus every
    /// ticket out (a retrying waiter counts twice until it is answered).
    fn counted(&self, client: u8) -> u32 {
        self.live
            .values()
            .filter(|s| s.client() == client)
            .map(|s| match *s {
                Sess::Queued { kept, .. } => 1 + u32::from(kept.is_some()),
                Sess::Holding { ticket, .. } => u32::from(ticket.is_some()),
            })
            .sum()
    }

    fn pick(&self, n: usize, holding: bool) -> Option<u64> {
        let ids: Vec<u64> =
            self.live.iter().filter(|(_, s)| matches!(s, Sess::Holding { .. }) == holding).map(|(&id, _)| id).collect();
        (!ids.is_empty()).then(|| ids[n % ids.len()])
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Arrive { client } => self.arrive(client),
            Op::Leave(n) => {
                let Some(id) = self.pick(n, false) else { return };
                let _ = self.core.cancel(SessionId(id));
            }
            Op::Close(n) => {
                let Some(id) = self.pick(n, true) else { return };
                let Some(Sess::Holding { server, ticket, .. }) = self.live.remove(&id) else { unreachable!() };
                self.release(server);
                if let Some(source) = ticket {
                    self.core.source_left(source);
                }
            }
            Op::Retry { pick, release_first } => {
                let Some(id) = self.pick(pick, true) else { return };
                let Some(Sess::Holding { client, key, server, ticket }) = self.live.get(&id).copied() else {
                    unreachable!()
                };
                self.live.insert(id, Sess::Queued { client, key: key.for_retry(), kept: ticket });
                if release_first {
                    self.release(server);
                }
                let req = ReserveRequest {
                    session: SessionId(id),
                    key: key.for_retry(),
                    client: Some(ip(client)),
                    pin: None,
                    avoid: Some(ServerId(server)),
                };
                let _ = self.core.reserve(req, self.replies.waiter(id));
                if !release_first {
                    self.release(server);
                }
            }
        }
        self.hear();
        self.check();
    }

    /// `Release`, then the Server's `Dequeue`.
    fn release(&mut self, server: usize) {
        let credits = self.servers[server].release();
        let _ = self.core.dequeue(ServerId(server), credits, 1);
    }

    fn arrive(&mut self, client: u8) {
        let id = self.next_id;
        self.next_id += 1;
        let key = QueueKey { class: 0, time_ms: 0, seq: id };
        let at_cap = self.counted(client) >= self.cfg.max_live;
        self.live.insert(id, Sess::Queued { client, key, kept: None });
        let req = ReserveRequest { session: SessionId(id), key, client: Some(ip(client)), pin: None, avoid: None };
        let _ = self.core.reserve(req, self.replies.waiter(id));
        let heard = self.replies.heard();
        let refused = heard.iter().any(|h| h.session == id && h.reply == Reply::SourceBusy);
        assert_eq!(
            refused,
            at_cap,
            "session {id} of client {client}: refused {refused} with {} counted, cap {}",
            self.counted(client) - 1,
            self.cfg.max_live
        );
        self.apply(heard);
    }

    fn hear(&mut self) {
        let heard = self.replies.heard();
        self.apply(heard);
    }

    fn apply(&mut self, heard: Vec<common::Heard>) {
        for h in heard {
            let id = h.session;
            assert!(h.delivered, "nobody is gone here");
            let Some(Sess::Queued { client, key, kept }) = self.live.remove(&id) else {
                panic!("session {id} answered while not waiting: {h:?}");
            };
            match h.reply {
                Reply::Granted { server, ticket, .. } => {
                    let source = SourceKey::of(ip(client), self.queue_fair());
                    assert_eq!(ticket, Some(source), "session {id}: a grant carries its source's ticket");
                    self.live.insert(id, Sess::Holding { client, key, server, ticket });
                }
                Reply::SourceBusy => {
                    assert!(kept.is_none(), "session {id}: a retry refused PL");
                    self.refused += 1;
                }
                Reply::Left { .. } => {}
                other => panic!("session {id}: {other:?} with every server up and no maxqueue"),
            }
            // The retry is answered: its kept ticket goes back.
            if let Some(source) = kept {
                self.core.source_left(source);
            }
        }
    }

    fn queue_fair(&self) -> FairShare {
        if self.cfg.fair {
            FairShare::Source { ipv4_prefix: 32 }
        } else {
            FairShare::None
        }
    }

    fn check(&self) {
        assert_eq!(self.core.state().check(), Ok(()));
        for client in 0..CLIENTS {
            let sessions = self.live.values().filter(|s| s.client() == client).count() as u32;
            assert!(
                sessions <= self.cfg.max_live,
                "client {client} has {sessions} sessions in the backend: {:?}",
                self.live
            );
            let source = SourceKey::of(ip(client), self.queue_fair());
            let tickets: u32 = self
                .live
                .values()
                .filter(|s| s.client() == client)
                .map(|s| match *s {
                    Sess::Queued { kept, .. } => u32::from(kept.is_some()),
                    Sess::Holding { ticket, .. } => u32::from(ticket.is_some()),
                })
                .sum();
            assert_eq!(
                self.core.state().seated_of(source),
                tickets,
                "client {client}: tickets as the core counts them"
            );
        }
    }

    /// Everyone leaves; every ticket comes back.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            if self.live.is_empty() {
                break;
            }
            if let Some(id) = self.pick(0, false) {
                self.leave(id);
            } else {
                self.step(&Op::Close(0));
            }
        }
        assert!(self.live.is_empty(), "{:?}", self.live);
        for client in 0..CLIENTS {
            let source = SourceKey::of(ip(client), self.queue_fair());
            assert_eq!(self.core.state().seated_of(source), 0, "client {client}: a ticket leaked");
        }
    }

    fn leave(&mut self, id: u64) {
        let _ = self.core.cancel(SessionId(id));
        self.hear();
        self.check();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn max_live_holds_and_counts_exactly(cfg in cfg(), ops in prop::collection::vec(op(), 0..MAX_OPS)) {
        let mut sim = Sim::new(cfg);
        for op in &ops {
            sim.step(op);
        }
        sim.drain();
    }
}

/// A retry keeps its source's place: with the cap reached, the session
/// whose connect failed gets a slot again, and a newcomer of its source
/// arriving in between is refused.
#[test]
fn a_retry_keeps_its_place_under_the_cap() {
    let mut sim = Sim::new(Cfg { maxconn: vec![2, 2], max_live: 2, fair: false });
    sim.step(&Op::Arrive { client: 0 });
    sim.step(&Op::Arrive { client: 0 });
    assert_eq!(sim.refused, 0);
    let first = *sim.live.keys().next().unwrap();
    sim.step(&Op::Retry { pick: 0, release_first: true });
    assert!(matches!(sim.live[&first], Sess::Holding { .. }), "the retry was served: {:?}", sim.live);
    sim.step(&Op::Arrive { client: 0 });
    assert_eq!(sim.refused, 1, "the newcomer of a source at its cap is refused");
    // Another source is not held back.
    sim.step(&Op::Arrive { client: 1 });
    assert_eq!(sim.refused, 1);
    sim.drain();
}
