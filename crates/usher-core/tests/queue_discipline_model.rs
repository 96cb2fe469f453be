//! Model-based test of the queue disciplines (fifo, codel, adaptive_lifo),
//! fair share between sources, per-source caps and the backend-wide
//! maxconn, with no actix and no sockets: the BackendQueue's core
//! (`QueueCore`, the very struct the actor runs) and one `ServerState` per
//! server, under seeded random interleavings of arrivals, cancels (handled
//! at once or left in flight), closes (`Release` → `Dequeue`) and time
//! advancing — during which the shedding timer fires exactly where the core
//! asks, as the actor's `run_later` does.
//!
//! After every step, against the simulator's own record of every session:
//! - a slot never idles while a waiter exists that may take it (every
//!   waiter here may take any slot: no pins, every server up);
//! - never over a server's maxconn nor the backend's;
//! - every session hears exactly one answer, so no waiter is served after
//!   it left (a left one hears `Left` and nothing more) and a shed waiter
//!   is answered once;
//! - priority: a grant never goes to a waiter while one of a better class
//!   waits; without fair share, codel and fifo grant the oldest key;
//! - a waiter is shed only while the queue is overloaded, only once it
//!   waited the shed age (twice `codel.target`), and none of the worst class
//!   is left that old once the timer ran;
//! - per-source caps hold;
//! - every slot taken is released exactly once (`ServerState`'s ledger
//!   asserts it; at the end every slot is back and lent, none served).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use common::{proptest_config as config, queue_core, Heard, Reply, Sessions, TestWaiter, MAX_OPS};
use proptest::prelude::*;
use usher_core::backend::balance::SmoothRoundRobin;
use usher_core::backend::{BackendSetup, QueueCore, QueueKey, ReserveRequest, ServerSetup, ServerState};
use usher_core::config::{CodelSettings, FairShare, PerSourceSettings, QueueDiscipline, QueueSettings};
use usher_core::ids::{ServerId, SessionId};

const TARGET_MS: u64 = 50;
const INTERVAL_MS: u64 = 300;
/// Under overload, waiters this old are shed: twice the target.
const SHED_MS: u64 = 2 * TARGET_MS;

#[derive(Debug, Clone)]
struct Cfg {
    /// Per server; 0 = unlimited (only with a backend maxconn).
    maxconn: Vec<u32>,
    /// 0 = none.
    backend_maxconn: u32,
    discipline: QueueDiscipline,
    fair: bool,
    /// 0 = no cap.
    max_queued: u32,
}

#[derive(Debug, Clone)]
enum Op {
    /// A session arrives from client `client` in priority `class`.
    Arrive { client: u8, class: i32 },
    /// A queued session leaves: its `CancelReserve` handled at once, or
    /// left in flight (its client is gone meanwhile).
    Leave { pick: usize, at_once: bool },
    /// A `CancelReserve` in flight arrives.
    DeliverCancel(usize),
    /// A session holding a slot ends: `Release`, then the Server's `Dequeue`.
    Close(usize),
    /// Time passes; the shedding timer fires where the core asked.
    Advance(u64),
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        prop::collection::vec(0u32..=3, 1..=3),
        prop_oneof![2 => Just(0u32), 1 => 1u32..=4],
        prop_oneof![Just(QueueDiscipline::Fifo), Just(QueueDiscipline::Codel), Just(QueueDiscipline::AdaptiveLifo)],
        any::<bool>(),
        prop_oneof![3 => Just(0u32), 1 => 1u32..=3],
    )
        .prop_map(|(mut maxconn, backend_maxconn, discipline, fair, max_queued)| {
            if backend_maxconn == 0 {
                // An unlimited server never queues anyone: keep every one
                // limited unless the backend bounds them.
                for m in &mut maxconn {
                    *m = (*m).max(1);
                }
            }
            Cfg { maxconn, backend_maxconn, discipline, fair, max_queued }
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, prop_oneof![4 => Just(0i32), 1 => Just(1)]).prop_map(|(client, class)| Op::Arrive { client, class }),
        2 => (0usize..64, any::<bool>()).prop_map(|(pick, at_once)| Op::Leave { pick, at_once }),
        1 => (0usize..64).prop_map(Op::DeliverCancel),
        4 => (0usize..64).prop_map(Op::Close),
        3 => prop_oneof![1u64..=60, 100u64..=400].prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sess {
    /// In the core's queues; `gone`: its cancel is in flight.
    Queued {
        key: QueueKey,
        joined_ms: u64,
        client: u8,
        gone: bool,
    },
    Holding(usize),
}

struct Sim {
    cfg: Cfg,
    core: QueueCore<TestWaiter>,
    replies: Sessions,
    servers: Vec<ServerState>,
    t0: Instant,
    now_ms: u64,
    live: BTreeMap<u64, Sess>,
    /// Sessions that heard their one answer.
    answered: BTreeSet<u64>,
    cancels: Vec<u64>,
    next_id: u64,
    /// The queue counted as overloaded when the timer last fired.
    overloaded_at_shed: bool,
    shed: u64,
}

impl Sim {
    fn new(cfg: Cfg) -> Sim {
        let setups: Vec<ServerSetup> = cfg
            .maxconn
            .iter()
            .map(|&maxconn| ServerSetup { maxconn, weight: 1, maxqueue: 0, backup: false, minconn: 0 })
            .collect();
        let queue = QueueSettings {
            discipline: cfg.discipline,
            codel: CodelSettings {
                target: Duration::from_millis(TARGET_MS),
                interval: Duration::from_millis(INTERVAL_MS),
            },
            fair: if cfg.fair { FairShare::Source { ipv4_prefix: 32 } } else { FairShare::None },
            per_source: PerSourceSettings { max_queued: NonZeroU32::new(cfg.max_queued), max_live: None },
        };
        let setup = BackendSetup { maxconn: cfg.backend_maxconn, queue, ..BackendSetup::default() };
        let mut core = queue_core(&setups, setup, Box::new(SmoothRoundRobin::new(setups.len())));
        // After the core read the clock: from here on its time is t0 + the
        // simulated milliseconds, exactly.
        let t0 = Instant::now();
        core.set_time(t0);
        let mut sim = Sim {
            servers: cfg.maxconn.iter().map(|&m| ServerState::new(m)).collect(),
            cfg,
            core,
            replies: Sessions::default(),
            t0,
            now_ms: 0,
            live: BTreeMap::new(),
            answered: BTreeSet::new(),
            cancels: Vec::new(),
            next_id: 1,
            overloaded_at_shed: false,
            shed: 0,
        };
        for s in 0..sim.servers.len() {
            let credits = sim.servers[s].lend_free();
            let _ = sim.core.dequeue(ServerId(s), credits, 0);
        }
        sim.hear();
        sim.check();
        sim
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    fn queued(&self) -> impl Iterator<Item = (u64, QueueKey, u64, u8)> + '_ {
        self.live.iter().filter_map(|(&id, s)| match *s {
            Sess::Queued { key, joined_ms, client, .. } => Some((id, key, joined_ms, client)),
            Sess::Holding(_) => None,
        })
    }

    fn holding(&self, server: usize) -> u32 {
        self.live.values().filter(|s| **s == Sess::Holding(server)).count() as u32
    }

    fn step(&mut self, op: &Op) {
        // The actor sets the time of every message.
        self.core.set_time(self.now());
        match *op {
            Op::Arrive { client, class } => self.arrive(client, class),
            Op::Leave { pick, at_once } => {
                let queued: Vec<u64> = self
                    .live
                    .iter()
                    .filter(|(_, s)| matches!(s, Sess::Queued { gone: false, .. }))
                    .map(|(&id, _)| id)
                    .collect();
                if queued.is_empty() {
                    return;
                }
                let id = queued[pick % queued.len()];
                self.replies.leave(id);
                if let Some(Sess::Queued { gone, .. }) = self.live.get_mut(&id) {
                    *gone = true;
                }
                if at_once {
                    let _ = self.core.cancel(SessionId(id));
                } else {
                    self.cancels.push(id);
                }
            }
            Op::DeliverCancel(pick) => {
                if self.cancels.is_empty() {
                    return;
                }
                let id = self.cancels.remove(pick % self.cancels.len());
                let _ = self.core.cancel(SessionId(id));
            }
            Op::Close(pick) => {
                let holders: Vec<(u64, usize)> = self
                    .live
                    .iter()
                    .filter_map(|(&id, s)| match *s {
                        Sess::Holding(server) => Some((id, server)),
                        Sess::Queued { .. } => None,
                    })
                    .collect();
                if holders.is_empty() {
                    return;
                }
                let (id, server) = holders[pick % holders.len()];
                self.live.remove(&id);
                let credits = self.servers[server].release();
                let _ = self.core.dequeue(ServerId(server), credits, 1);
            }
            Op::Advance(ms) => self.advance(ms),
        }
        self.hear();
        self.fire_until(self.now_ms);
        self.check();
    }

    fn arrive(&mut self, client: u8, class: i32) {
        let id = self.next_id;
        self.next_id += 1;
        let key = QueueKey { class, time_ms: self.now_ms as i64, seq: id };
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, client));
        let queued_here = self.queued().filter(|q| q.3 == client).count() as u32;
        self.live.insert(id, Sess::Queued { key, joined_ms: self.now_ms, client, gone: false });
        let req = ReserveRequest { session: SessionId(id), key, client: Some(ip), pin: None, avoid: None };
        let _ = self.core.reserve(req, self.replies.waiter(id));
        let heard = self.replies.heard();
        if let Some(first) = heard.first().filter(|h| h.session == id) {
            if first.reply == Reply::SourceFull {
                assert!(
                    self.cfg.max_queued > 0 && queued_here >= self.cfg.max_queued,
                    "session {id} refused PS with {queued_here} of its source queued (cap {})",
                    self.cfg.max_queued
                );
            }
        } else if self.cfg.max_queued > 0 {
            assert!(queued_here < self.cfg.max_queued, "session {id} queued past its source's cap");
        }
        self.apply(heard);
    }

    /// Time passes; the timer fires where the core asks, as the actor's.
    fn advance(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        self.fire_until(until);
        self.now_ms = until;
        self.core.set_time(self.now());
    }

    /// The shedding timer fires at every moment up to `until` the core
    /// names; a moment already past (a message made someone sheddable)
    /// fires at once, as the actor's `run_later` with no delay.
    fn fire_until(&mut self, until: u64) {
        for _ in 0..10_000 {
            let Some(next) = self.core.next_look() else { return };
            let next_ms = next.saturating_duration_since(self.t0).as_millis() as u64;
            if next_ms > until {
                return;
            }
            self.now_ms = next_ms.max(self.now_ms);
            self.core.set_time(next.max(self.now()));
            self.overloaded_at_shed = self.core.state().overloaded();
            let _ = self.core.shed();
            self.hear();
            self.check();
        }
        panic!("the shedding timer keeps firing at {} ms", self.now_ms);
    }

    fn hear(&mut self) {
        let heard = self.replies.heard();
        self.apply(heard);
    }

    fn apply(&mut self, heard: Vec<Heard>) {
        for h in heard {
            let id = h.session;
            assert!(self.answered.insert(id), "session {id} heard a second answer: {h:?}");
            let Some(Sess::Queued { key, joined_ms, gone, .. }) = self.live.get(&id).copied() else {
                panic!("session {id} answered while not waiting: {h:?} ({:?})", self.live.get(&id));
            };
            assert_eq!(h.delivered, !gone, "session {id}: delivery follows whether it is gone");
            self.live.remove(&id);
            match h.reply {
                Reply::Granted { server, queued, .. } => {
                    if queued.is_some() {
                        self.check_priority(id, key);
                    }
                    if h.delivered {
                        self.live.insert(id, Sess::Holding(server));
                    }
                }
                Reply::Left { .. } => assert!(gone, "session {id} left without leaving"),
                Reply::Shed { .. } => {
                    self.shed += 1;
                    assert_ne!(self.cfg.discipline, QueueDiscipline::Fifo, "fifo shed session {id}");
                    assert!(self.overloaded_at_shed, "session {id} shed while the queue was not overloaded");
                    let waited = self.now_ms - joined_ms;
                    assert!(waited >= SHED_MS, "session {id} shed after {waited} ms < {SHED_MS}");
                    // Worst class first: nobody of a worse class is left.
                    if let Some((other, k, _, _)) = self.queued().find(|q| q.1.class > key.class) {
                        panic!("session {id} (class {}) shed while {other} (class {}) waits", key.class, k.class);
                    }
                }
                Reply::SourceFull => assert!(self.cfg.max_queued > 0, "session {id}: PS with no cap"),
                Reply::SourceBusy => panic!("session {id}: PL with no max_live"),
                Reply::Full | Reply::NoServer { .. } => {
                    panic!("session {id}: {h:?} with no maxqueue and every server up")
                }
            }
        }
    }

    /// A grant from the queue never passes over a better class; fifo and
    /// codel (without fair share) grant the oldest key.
    fn check_priority(&self, id: u64, key: QueueKey) {
        for (other, k, _, _) in self.queued() {
            assert!(
                k.class >= key.class,
                "session {id} (class {}) served while {other} (class {}) waits",
                key.class,
                k.class
            );
            if !self.cfg.fair && self.cfg.discipline != QueueDiscipline::AdaptiveLifo {
                assert!(key < k, "session {id} served before older {other}");
            }
        }
    }

    fn check(&self) {
        let state = self.core.state();
        assert_eq!(state.check(), Ok(()));
        let total: u32 = (0..self.servers.len()).map(|s| self.holding(s)).sum();
        if self.cfg.backend_maxconn > 0 {
            assert!(total <= self.cfg.backend_maxconn, "servers serve {total} > backend maxconn");
        }
        for (s, &max) in self.cfg.maxconn.iter().enumerate() {
            assert_eq!(state.served(ServerId(s)), self.holding(s), "server {s}: served as the core counts it");
            if max > 0 {
                assert!(self.holding(s) <= max, "server {s} over its maxconn");
            }
        }
        // Work conservation: a waiter means every slot is taken.
        if self.queued().next().is_some() {
            let backend_full = self.cfg.backend_maxconn > 0 && total == self.cfg.backend_maxconn;
            let servers_full = self.cfg.maxconn.iter().enumerate().all(|(s, &max)| max > 0 && self.holding(s) == max);
            assert!(backend_full || servers_full, "a slot idles while someone waits: {:?}", self.live);
        }
        if self.cfg.max_queued > 0 {
            for client in 0..4u8 {
                let n = self.queued().filter(|q| q.3 == client).count() as u32;
                assert!(n <= self.cfg.max_queued, "client {client} has {n} queued");
            }
        }
        // Once the timer ran, nobody of the worst class is left at the shed age.
        if self.cfg.discipline != QueueDiscipline::Fifo && state.overloaded() {
            if let Some(worst) = self.queued().map(|q| q.1.class).max() {
                for (id, key, joined, _) in self.queued() {
                    if key.class == worst {
                        assert!(
                            self.now_ms - joined < SHED_MS,
                            "session {id} kept past the shed age at {} ms: {:?}",
                            self.now_ms,
                            self.live
                        );
                    }
                }
            }
        }
    }

    /// Everyone leaves; every slot must be back and lent.
    fn drain(&mut self) {
        while !self.cancels.is_empty() {
            self.step(&Op::DeliverCancel(0));
        }
        let queued: Vec<u64> = self.queued().map(|q| q.0).collect();
        for id in queued {
            self.replies.leave(id);
            let _ = self.core.cancel(SessionId(id));
            if let Some(Sess::Queued { gone, .. }) = self.live.get_mut(&id) {
                *gone = true;
            }
            self.hear();
        }
        while self.live.values().any(|s| matches!(s, Sess::Holding(_))) {
            self.step(&Op::Close(0));
        }
        assert!(self.live.is_empty(), "{:?}", self.live);
        assert_eq!(self.answered.len() as u64, self.next_id - 1, "every session heard exactly one answer");
        for (s, server) in self.servers.iter().enumerate() {
            assert_eq!(self.core.state().served(ServerId(s)), 0);
            assert_eq!(server.out(), self.cfg.maxconn[s], "server {s}: every slot lent back to the queue");
            if self.cfg.maxconn[s] > 0 {
                assert_eq!(self.core.state().held(ServerId(s)), Some(self.cfg.maxconn[s]));
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every discipline, with and without fair share, caps and a backend
    /// maxconn, under random interleavings.
    #[test]
    fn disciplines_keep_every_invariant(cfg in cfg(), ops in prop::collection::vec(op(), 0..MAX_OPS)) {
        let mut sim = Sim::new(cfg);
        for op in &ops {
            sim.step(op);
        }
        sim.drain();
    }
}

fn sim(maxconn: &[u32], backend_maxconn: u32, discipline: QueueDiscipline, fair: bool) -> Sim {
    Sim::new(Cfg { maxconn: maxconn.to_vec(), backend_maxconn, discipline, fair, max_queued: 0 })
}

fn holders(sim: &Sim) -> Vec<u64> {
    sim.live.iter().filter(|(_, s)| matches!(s, Sess::Holding(_))).map(|(&id, _)| id).collect()
}

/// codel: a queue that stands is cut at the shed age, at once (not at the
/// queue timeout), and the waiters who remain are served in order.
#[test]
fn codel_sheds_waiters_of_a_standing_queue() {
    let mut sim = sim(&[1], 0, QueueDiscipline::Codel, false);
    for _ in 0..3 {
        sim.step(&Op::Arrive { client: 0, class: 0 });
    }
    sim.step(&Op::Advance(300));
    sim.step(&Op::Arrive { client: 0, class: 0 });
    // 1 holds the slot; 2 and 3 wait since 0 ms, 4 since 300 ms. The queue
    // stands from 50 ms (target) on: overloaded at 350 ms (a whole 300 ms
    // interval later), when 2 and 3 have waited 350 ms >= the 100 ms shed
    // age (twice the target).
    sim.step(&Op::Advance(49));
    assert_eq!(sim.shed, 0);
    sim.step(&Op::Advance(1));
    assert_eq!(sim.shed, 2, "{:?}", sim.live);
    assert!(!sim.live.contains_key(&2) && !sim.live.contains_key(&3));
    // 4 stays (50 ms old) and is served next.
    sim.step(&Op::Close(0));
    assert_eq!(holders(&sim), [4]);
    sim.drain();
}

/// adaptive_lifo: the newest is served while the queue stands; FIFO before.
#[test]
fn adaptive_lifo_serves_the_newest_while_the_queue_stands() {
    let mut sim = sim(&[1], 0, QueueDiscipline::AdaptiveLifo, false);
    sim.step(&Op::Arrive { client: 0, class: 0 });
    sim.step(&Op::Arrive { client: 0, class: 0 });
    sim.step(&Op::Arrive { client: 0, class: 0 });
    // Not standing yet: the oldest waiter (2) goes first.
    sim.step(&Op::Close(0));
    assert_eq!(holders(&sim), [2]);
    // Arrivals every 30 ms: the queue stands from 50 ms on (3 waits since
    // 0), is overloaded from 350 ms, and sheds waiters at 100 ms of age —
    // the oldest left is always older than the target, so it stays
    // standing.
    for _ in 0..14 {
        sim.step(&Op::Arrive { client: 0, class: 0 });
        sim.step(&Op::Advance(30));
    }
    assert!(sim.core.state().overloaded(), "the queue stood for 420 ms");
    sim.step(&Op::Close(0));
    let newest = sim.next_id - 1;
    assert_eq!(holders(&sim), [newest], "standing: the newest is served");
    sim.drain();
}

/// Backend maxconn: beyond it sessions wait even while servers have free
/// slots, and the next release seats the oldest.
#[test]
fn backend_maxconn_queues_beyond_it_with_free_server_slots() {
    let mut sim = sim(&[2, 2], 2, QueueDiscipline::Fifo, false);
    for _ in 0..4 {
        sim.step(&Op::Arrive { client: 0, class: 0 });
    }
    assert_eq!(holders(&sim), [1, 2]);
    assert_eq!(sim.core.state().backend_queue_len(), 2, "3 and 4 wait though two server slots are free");
    sim.step(&Op::Close(0));
    assert_eq!(holders(&sim), [2, 3]);
    sim.drain();
}

/// Fair share: a lone source's session is served right after the crowd's
/// first, not behind all of the crowd.
#[test]
fn fair_share_serves_a_lone_source_ahead_of_a_crowds_tail() {
    let mut sim = sim(&[1], 0, QueueDiscipline::Fifo, true);
    for _ in 0..10 {
        sim.step(&Op::Arrive { client: 1, class: 0 });
    }
    sim.step(&Op::Arrive { client: 2, class: 0 });
    let lone = sim.next_id - 1;
    // 1 holds; 2 (the crowd's round 0) then the lone one (round 0).
    sim.step(&Op::Close(0));
    assert_eq!(holders(&sim), [2]);
    sim.step(&Op::Close(0));
    assert_eq!(holders(&sim), [lone]);
    sim.drain();
}
