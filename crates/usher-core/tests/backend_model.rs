//! Model-based test of one backend's slots, with no actix and no sockets:
//! the BackendQueue's core (`QueueCore` over `BackendState`) and one
//! `ServerState` per server (the Server actors), driven by the `Dequeue` /
//! `Release` / `CancelReserve` / `ServerStatusChanged` protocol.
//!
//! A small simulator plays the actors' part: it keeps the messages that
//! would be in flight between them in an explicit pool and lets proptest
//! choose, step by step, which pending message is delivered next or which
//! new event happens (a session arrives, leaves its queue, closes; a server
//! changes status). Sessions wait on recording waiters, which a session that
//! left makes "gone": the core's own delivery, re-offer and settle code runs,
//! and the simulator checks every answer it sent.
//!
//! Servers go up and down, change weight (0 = drain), get slowstart caps;
//! some are backups; some have `minconn` under a backend `fullconn` (dynamic
//! maxconn); the backend may redispatch. Every production balancer is
//! plugged in (wrapped to record each pick), `source` with client addresses
//! from a small pool so sessions pile onto their hashed server's own queue.
//! The simulator is a shadow of the BackendQueue: it predicts every answer
//! to a `Reserve`, every grant and refusal of a status change, and checks
//! that each grant from a held slot went to the waiter the rules name, from
//! its own independent record of where every slot and every waiter is. It
//! checks the balancer saw exactly its view, and the invariants after every
//! step: never over maxconn or an effective cap, nobody overtakes, FIFO by
//! queue key, backups only while no active server can serve, no backend
//! queue without a usable server, a downed server's queue refused or
//! redispatched at once, every slot in exactly one place, work conservation.
//!
//! proptest seeds randomly and saves failing seeds next to this file
//! (`backend_model.proptest-regressions`, replayed first on later runs);
//! set `PROPTEST_CASES` to run more than the 1024 cases per property.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use common::{proptest_config as config, queue_core, Heard, Reply, Sessions, TestWaiter, MAX_OPS};
use proptest::prelude::*;
use usher_core::backend::balance::{
    Balancer, Candidate, Choice, ConsistentHash, First, LeastConn, PowerOfChoices, Servers, SmoothRoundRobin,
};
use usher_core::backend::{
    BackendSetup, BackendState, QueueCore, QueueKey, QueuePlace, ReserveRequest, Reserved, ServerSetup, ServerState,
    ServerStatus,
};
use usher_core::ids::{ServerId, SessionId};

#[derive(Debug, Clone, Copy)]
struct ServerCfg {
    /// 0 = unlimited.
    maxconn: u32,
    weight: u32,
    /// 0 = unlimited.
    maxqueue: u32,
    /// Takes balanced traffic only while no active server can.
    backup: bool,
    /// Dynamic maxconn floor (0 = off); with `BackendCfg::fullconn`.
    minconn: u32,
}

impl ServerCfg {
    fn plain(maxconn: u32, weight: u32, maxqueue: u32) -> ServerCfg {
        ServerCfg { maxconn, weight, maxqueue, backup: false, minconn: 0 }
    }
}

#[derive(Debug, Clone, Copy)]
enum BalancerKind {
    /// `roundrobin`: smooth weighted, follows live weights.
    RoundRobin,
    /// `static-rr`: the configured weights.
    StaticRr,
    LeastConn,
    First,
    /// `random`: power of `draws` choices, seeded.
    Random {
        draws: u32,
        seed: u64,
    },
    /// `source`: consistent hash of the client address, with this
    /// `hash_balance_factor` (0 = plain). Its picks are `Choice::Pinned`.
    Source(u32),
    /// Any available server, chosen pseudo-randomly from this seed: the
    /// invariants must not depend on which balancer is plugged in.
    Scripted(u64),
}

impl BalancerKind {
    fn hashed(self) -> bool {
        matches!(self, BalancerKind::Source(_))
    }
}

#[derive(Debug, Clone)]
struct BackendCfg {
    servers: Vec<ServerCfg>,
    /// Backend queue's maxqueue, 0 = unlimited.
    maxqueue: u32,
    balancer: BalancerKind,
    /// `backends.X.redispatch`: a downed server's queue and a hashed
    /// session whose server queue is full go to another server.
    redispatch: bool,
    /// `backends.X.fullconn` (0 = off).
    fullconn: u32,
}

impl BackendCfg {
    fn plain(servers: Vec<ServerCfg>, maxqueue: u32, balancer: BalancerKind) -> BackendCfg {
        BackendCfg { servers, maxqueue, balancer, redispatch: false, fullconn: 0 }
    }
}

/// A balancer that picks any available candidate (xorshift over a seed).
struct ScriptedBalancer {
    state: u64,
}

impl Balancer for ScriptedBalancer {
    fn pick(&mut self, servers: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        let available: Vec<ServerId> = servers.iter().filter(|c| c.available && c.weight > 0).map(|c| c.id).collect();
        if available.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Some(Choice::Balanced(available[(self.state % available.len() as u64) as usize]))
    }
}

/// One `Balancer::pick` call, as the BackendQueue made it.
#[derive(Debug)]
struct Pick {
    candidates: Vec<Candidate>,
    client: Option<IpAddr>,
    choice: Option<Choice>,
}

type Picks = Arc<Mutex<VecDeque<Pick>>>;

/// Wraps the balancer under test and records every call: the simulator
/// checks that the balancer saw exactly the simulator's view of the servers
/// (weight, usable, available, load), then follows its choice.
struct Recording {
    inner: Box<dyn Balancer>,
    picks: Picks,
}

impl Balancer for Recording {
    fn pick(&mut self, servers: &Servers<'_>, client: Option<IpAddr>) -> Option<Choice> {
        let choice = self.inner.pick(servers, client);
        self.picks.lock().unwrap().push_back(Pick { candidates: servers.iter().collect(), client, choice });
        choice
    }

    // A wrapper forwards what its inner balancer indexes from.
    fn candidate_changed(&mut self, server: ServerId, servers: &Servers<'_>) {
        self.inner.candidate_changed(server, servers);
    }

    fn only_balances(&self) -> bool {
        self.inner.only_balances()
    }
}

fn view(c: &Candidate) -> (usize, u32, bool, bool, u32) {
    (c.id.0, c.weight, c.usable, c.available, c.load)
}

/// A message in flight between the actors.
#[derive(Debug, Clone, Copy)]
enum Msg {
    /// Server -> BackendQueue: `credits` free slots lent, after `released`
    /// sessions gave theirs back.
    Dequeue { server: usize, credits: u32, released: u32 },
    /// Session's `Slot` guard -> Server: one slot given back.
    Release { server: usize },
    /// Session -> BackendQueue: `CancelReserve` (client gone, queue timeout).
    Cancel { session: u64 },
}

/// What the simulator knows of a live session (finished ones are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sess {
    /// Waiting in the backend queue (`at == None`) or in a server's queue,
    /// under `key`, since tick `since`. `gone`: its client left and a
    /// `Cancel` is in flight; a grant sent to it fails and the BackendQueue
    /// offers the slot again.
    Queued { at: Option<usize>, gone: bool, key: QueueKey, since: u64 },
    /// Holds one slot of this server (connected or connecting).
    Holding(usize),
}

#[derive(Debug, Clone)]
enum BOp {
    /// Deliver pending message number `i % pool.len()`.
    Deliver(usize),
    /// A new session asks for a slot. `pin`: 15 means a server id that does
    /// not exist, otherwise taken modulo the number of servers. `gone`: its
    /// client left before the `Reserve` was handled. `client`: last byte of
    /// its IPv4 address (a small pool, so `source` sends several sessions to
    /// one server). `class` / `offset`: its frontend's `priority_class` and
    /// `priority_offset` (ms; arrivals are 10 ms apart).
    Arrive { pin: Option<usize>, avoid: Option<usize>, gone: bool, client: u8, class: i32, offset: i64 },
    /// A queued (live) session leaves its queue: at once (`CancelReserve`
    /// handled right away) or with its `CancelReserve` left in flight.
    Leave { pick: usize, at_once: bool },
    /// A session holding a slot ends; its `Release` goes in flight.
    Close(usize),
    /// Deliver every pending message and check work conservation.
    Quiesce,
    /// A Server reports its status (`ServerStatusChanged`): up or down
    /// (health, maintenance), weight (0 = drain; admin changes, slowstart
    /// ramp) and a cap below maxconn (slowstart; limited servers only, as
    /// `ServerHealth::status` sends).
    Status { server: usize, up: bool, weight: u32, cap: Option<u32> },
    /// An operator pauses (`true`) or resumes the backend
    /// (`QueueCore::set_paused`).
    Pause(bool),
}

fn balancer_kind() -> impl Strategy<Value = BalancerKind> {
    prop_oneof![
        3 => Just(BalancerKind::RoundRobin),
        1 => Just(BalancerKind::StaticRr),
        1 => Just(BalancerKind::LeastConn),
        1 => Just(BalancerKind::First),
        1 => (1u32..=3, any::<u64>()).prop_map(|(draws, seed)| BalancerKind::Random { draws, seed }),
        3 => prop_oneof![Just(0u32), Just(125), Just(150)].prop_map(BalancerKind::Source),
        2 => any::<u64>().prop_map(|seed| BalancerKind::Scripted(seed | 1)),
    ]
}

fn backend_cfg() -> impl Strategy<Value = BackendCfg> {
    (
        prop::collection::vec(
            (0u32..=3, 0u32..=3, 0u32..=3, prop::bool::weighted(0.25), prop::option::weighted(0.3, 1u32..=3)),
            1..=4,
        ),
        // Force all weights to 0 now and then (a random draw rarely does
        // with 3–4 servers): balanced reserves must answer NoServer.
        prop::bool::weighted(0.15),
        0u32..=4,
        balancer_kind(),
        any::<bool>(),
        prop::option::weighted(0.4, 1u32..=12),
    )
        .prop_map(|(servers, all_zero, maxqueue, balancer, redispatch, fullconn)| BackendCfg {
            servers: servers
                .into_iter()
                .map(|(maxconn, weight, maxqueue, backup, minconn)| ServerCfg {
                    maxconn,
                    weight: if all_zero { 0 } else { weight },
                    maxqueue,
                    backup,
                    minconn: minconn.unwrap_or(0),
                })
                .collect(),
            maxqueue,
            balancer,
            redispatch,
            fullconn: fullconn.unwrap_or(0),
        })
}

fn backend_op() -> impl Strategy<Value = BOp> {
    prop_oneof![
        6 => (0usize..1024).prop_map(BOp::Deliver),
        5 => (
            prop::option::weighted(0.3, 0usize..16),
            prop::option::weighted(0.2, 0usize..4),
            prop::bool::weighted(0.1),
            0u8..6,
            prop_oneof![6 => Just(0i32), 1 => Just(-1), 1 => Just(1)],
            prop_oneof![6 => Just(0i64), 1 => Just(-25), 1 => Just(25)],
        )
            .prop_map(|(pin, avoid, gone, client, class, offset)| BOp::Arrive {
                pin,
                avoid,
                gone,
                client,
                class,
                offset
            }),
        2 => (0usize..64, any::<bool>()).prop_map(|(pick, at_once)| BOp::Leave { pick, at_once }),
        3 => (0usize..64).prop_map(BOp::Close),
        1 => Just(BOp::Quiesce),
        2 => (0usize..4, prop::bool::weighted(0.7), 0u32..=3, prop::option::weighted(0.3, 1u32..=3))
            .prop_map(|(server, up, weight, cap)| BOp::Status { server, up, weight, cap }),
        1 => any::<bool>().prop_map(BOp::Pause),
    ]
}

/// A plain FIFO arrival (client 10.0.0.0, class 0, no offset).
fn arrival(pin: Option<usize>) -> BOp {
    BOp::Arrive { pin, avoid: None, gone: false, client: 0, class: 0, offset: 0 }
}

/// What `reserve` must answer, as the spec states it from the state before
/// the call (independently of the shadow's step-by-step prediction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Granted,
    Queued,
    Full,
    NoServer,
}

/// The shadow's exact prediction of a `reserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Granted(usize),
    Queued(Option<usize>),
    Full,
    NoServer,
}

/// `maxqueue == 0` means unlimited.
fn queue_full(maxqueue: u32, len: usize) -> bool {
    maxqueue > 0 && len >= maxqueue as usize
}

/// Among `candidates`, the available one other than `not` with the least
/// load relative to its weight (ties to the lowest index).
fn least_loaded(candidates: &[Candidate], not: usize) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate() {
        if !c.available || c.weight == 0 || i == not {
            continue;
        }
        let better = best.is_none_or(|b| {
            let cb = &candidates[b];
            (u64::from(c.load) + 1) * u64::from(cb.weight) < (u64::from(cb.load) + 1) * u64::from(c.weight)
        });
        if better {
            best = Some(i);
        }
    }
    best
}

/// The BackendQueue actor, its Servers, and the sessions, simulated.
struct BackendSim {
    cfg: BackendCfg,
    queue: QueueCore<TestWaiter>,
    /// The sessions' reply channels: who is gone, what they heard.
    replies: Sessions,
    servers: Vec<ServerState>,
    /// The balancer's calls not yet matched by the shadow.
    picks: Picks,
    /// What each Server last told the BackendQueue.
    status: Vec<ServerStatus>,
    /// Credits the BackendQueue holds per server (`None` = unlimited).
    held: Vec<Option<u32>>,
    /// Sessions holding a slot per server as the BackendQueue counts them:
    /// grants minus ungrants minus releases reported by `Dequeue`.
    served: Vec<u32>,
    /// Messages in flight, in no particular order (proptest picks).
    pool: Vec<Msg>,
    /// Live sessions by id; ids grow in arrival order.
    sessions: BTreeMap<u64, Sess>,
    next_id: u64,
    /// Counts enqueues and grants (FIFO check).
    tick: u64,
    /// Last grant from each queue (0: backend queue, s + 1: server s's own
    /// queue): its key and tick.
    last_grant: Vec<Option<(QueueKey, u64)>>,
    /// Servers that granted a slot during the current step, and the highest
    /// backend load seen during it (dynamic maxconn grows with the load).
    granted: Vec<bool>,
    load_peak: u64,
    /// An operator paused the backend: no slot is usable until the resume.
    paused: bool,
}

impl BackendSim {
    fn new(cfg: BackendCfg) -> BackendSim {
        let n = cfg.servers.len();
        let setups: Vec<ServerSetup> = cfg
            .servers
            .iter()
            .map(|s| ServerSetup {
                maxconn: s.maxconn,
                weight: s.weight,
                maxqueue: s.maxqueue,
                backup: s.backup,
                minconn: s.minconn,
            })
            .collect();
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight).collect();
        let inner: Box<dyn Balancer> = match cfg.balancer {
            BalancerKind::RoundRobin => Box::new(SmoothRoundRobin::new(n)),
            BalancerKind::StaticRr => Box::new(SmoothRoundRobin::with_static_weights(&weights)),
            BalancerKind::LeastConn => Box::new(LeastConn::default()),
            BalancerKind::First => Box::new(First::default()),
            BalancerKind::Random { draws, seed } => Box::new(PowerOfChoices::new(draws, seed)),
            BalancerKind::Source(factor) => Box::new(ConsistentHash::new(factor)),
            BalancerKind::Scripted(seed) => Box::new(ScriptedBalancer { state: seed }),
        };
        let picks = Picks::default();
        let balancer = Box::new(Recording { inner, picks: picks.clone() });
        let setup = BackendSetup {
            maxqueue: cfg.maxqueue,
            redispatch: cfg.redispatch,
            fullconn: cfg.fullconn,
            ..BackendSetup::default()
        };
        let queue = queue_core(&setups, setup, balancer);
        let mut sim = BackendSim {
            servers: cfg.servers.iter().map(|s| ServerState::new(s.maxconn)).collect(),
            status: cfg.servers.iter().map(|s| ServerStatus { up: true, weight: s.weight, cap: None }).collect(),
            held: cfg.servers.iter().map(|s| (s.maxconn > 0).then_some(0)).collect(),
            served: vec![0; n],
            last_grant: vec![None; n + 1],
            granted: vec![false; n],
            load_peak: 0,
            paused: false,
            tick: 0,
            picks,
            cfg,
            queue,
            replies: Sessions::default(),
            pool: Vec::new(),
            sessions: BTreeMap::new(),
            next_id: 1,
        };
        // `Server::started`: every free slot is lent at once.
        for (i, server) in sim.servers.iter_mut().enumerate() {
            let credits = server.lend_free();
            assert_eq!(credits, sim.cfg.servers[i].maxconn, "server {i} lends all its slots at start");
            if credits > 0 {
                sim.pool.push(Msg::Dequeue { server: i, credits, released: 0 });
            }
        }
        sim.check();
        sim
    }

    fn n(&self) -> usize {
        self.cfg.servers.len()
    }

    fn limited(&self, s: usize) -> bool {
        self.cfg.servers[s].maxconn > 0
    }

    // === the spec's view of the backend, from the simulator's own record ===

    /// An active (non-backup) server can take balanced traffic.
    fn active_usable(&self) -> bool {
        (0..self.n()).any(|s| !self.cfg.servers[s].backup && self.status[s].up && self.status[s].weight > 0)
    }

    /// Server `s` takes balanced traffic: up, weight > 0, and a backup only
    /// while no active server can.
    fn balanced(&self, s: usize) -> bool {
        let st = self.status[s];
        st.up && st.weight > 0 && (!self.cfg.servers[s].backup || !self.active_usable())
    }

    fn any_balanced(&self) -> bool {
        (0..self.n()).any(|s| self.balanced(s))
    }

    /// Backend load (HAProxy's beconn): sessions served plus queued.
    fn load(&self) -> u64 {
        let served: u64 = self.served.iter().map(|&x| u64::from(x)).sum();
        let queued = self.sessions.values().filter(|s| matches!(s, Sess::Queued { .. })).count() as u64;
        served + queued
    }

    /// The maxconn in force for `s` at backend load `load`: its slowstart
    /// cap and, with `minconn` and `fullconn`, HAProxy's dynamic maxconn
    /// (max(minconn, load × maxconn / fullconn), at most maxconn, while the
    /// load is below fullconn). `None` = the configured maxconn.
    fn eff_max(&self, s: usize, load: u64) -> Option<u32> {
        let cfg = self.cfg.servers[s];
        let mut max = self.status[s].cap;
        if cfg.minconn > 0 && cfg.maxconn > 0 && self.cfg.fullconn > 0 && load < u64::from(self.cfg.fullconn) {
            let dynamic = (load * u64::from(cfg.maxconn) / u64::from(self.cfg.fullconn)) as u32;
            let dynamic = dynamic.max(cfg.minconn).min(cfg.maxconn);
            max = Some(max.map_or(dynamic, |m| m.min(dynamic)));
        }
        max
    }

    /// A slot of `s` may be used now: a credit held (or unlimited) and room
    /// under its effective maxconn.
    fn has_room(&self, s: usize) -> bool {
        !self.paused && self.held[s] != Some(0) && self.eff_max(s, self.load()).is_none_or(|m| self.served[s] < m)
    }

    /// Server `s` could take a newcomer pinned to it right now: up, a usable
    /// slot, and nobody queued for it.
    fn open(&self, s: usize) -> bool {
        self.status[s].up && self.has_room(s) && self.queued_at(Some(s)) == 0
    }

    fn holding(&self, s: usize) -> u32 {
        self.sessions.values().filter(|&&x| x == Sess::Holding(s)).count() as u32
    }

    fn queued_at(&self, at: Option<usize>) -> usize {
        self.sessions.values().filter(|x| matches!(x, Sess::Queued { at: a, .. } if *a == at)).count()
    }

    /// The sessions waiting in one queue, in service order.
    fn waiters(&self, at: Option<usize>) -> Vec<(QueueKey, u64)> {
        let mut w: Vec<(QueueKey, u64)> = self
            .sessions
            .iter()
            .filter_map(|(&id, s)| match *s {
                Sess::Queued { at: a, key, .. } if a == at => Some((key, id)),
                _ => None,
            })
            .collect();
        w.sort();
        w
    }

    fn head(&self, at: Option<usize>) -> Option<(QueueKey, u64)> {
        self.waiters(at).first().copied()
    }

    /// The candidates the BackendQueue must show its balancer.
    fn candidates(&self, avoid: Option<usize>) -> Vec<Candidate> {
        let mut c: Vec<Candidate> = (0..self.n())
            .map(|s| Candidate {
                id: ServerId(s),
                weight: self.status[s].weight,
                usable: self.balanced(s),
                available: self.balanced(s) && self.open(s),
                load: self.served[s] + self.queued_at(Some(s)) as u32,
            })
            .collect();
        if self.avoiding(avoid) {
            // A retry never goes back to the server it failed on while
            // another is usable (hashing walks past it too).
            let a = avoid.unwrap();
            c[a].usable = false;
            c[a].available = false;
        }
        c
    }

    /// A retry leaving `avoid` keeps off it: it takes balanced traffic and
    /// another server does too.
    fn avoiding(&self, avoid: Option<usize>) -> bool {
        avoid.is_some_and(|a| self.balanced(a) && (0..self.n()).any(|o| o != a && self.balanced(o)))
    }

    /// How many may wait in the backend queue (0 = unbounded): the
    /// backend's maxqueue, and no more than the sum of the balanced
    /// servers' maxqueue when every one of them has one.
    fn backend_bound(&self) -> u32 {
        let mut sum = 0u32;
        for s in 0..self.n() {
            if self.balanced(s) {
                let own = self.cfg.servers[s].maxqueue;
                if own == 0 {
                    return self.cfg.maxqueue;
                }
                sum += own;
            }
        }
        match self.cfg.maxqueue {
            _ if sum == 0 => self.cfg.maxqueue,
            0 => sum,
            own => own.min(sum),
        }
    }

    /// Session `id` now holds a slot of `s`.
    fn take(&mut self, s: usize, id: u64) {
        if let Some(h) = &mut self.held[s] {
            assert!(*h > 0, "server {s}: slot taken for session {id} without a held credit");
            *h -= 1;
        }
        self.served[s] += 1;
        self.granted[s] = true;
        self.sessions.insert(id, Sess::Holding(s));
        self.load_peak = self.load_peak.max(self.load());
    }

    fn enqueue(&mut self, at: Option<usize>, id: u64, key: QueueKey, gone: bool) -> Outcome {
        self.tick += 1;
        self.sessions.insert(id, Sess::Queued { at, gone, key, since: self.tick });
        self.load_peak = self.load_peak.max(self.load());
        Outcome::Queued(at)
    }

    fn enqueue_backend(&mut self, id: u64, key: QueueKey, gone: bool) -> Outcome {
        if queue_full(self.backend_bound(), self.queued_at(None)) {
            return Outcome::Full;
        }
        self.enqueue(None, id, key, gone)
    }

    /// A retry keeping off the server it failed on, with nothing available:
    /// it waits in the own queue of the least loaded other usable server
    /// (ties to the lowest index), unless that queue is full.
    fn enqueue_elsewhere(&mut self, candidates: &[Candidate], id: u64, key: QueueKey, gone: bool) -> Outcome {
        let usable: Vec<Candidate> = candidates.iter().map(|c| Candidate { available: c.usable, ..*c }).collect();
        match least_loaded(&usable, usize::MAX) {
            Some(s) if !queue_full(self.cfg.servers[s].maxqueue, self.queued_at(Some(s))) => {
                self.enqueue(Some(s), id, key, gone)
            }
            _ => self.enqueue_backend(id, key, gone),
        }
    }

    // === the shadow: what the BackendQueue must do, step by step ===

    /// `reserve`, following the balancer's recorded choice, applied to the
    /// record.
    fn model_reserve(
        &mut self,
        id: u64,
        key: QueueKey,
        client: Option<IpAddr>,
        pin: Option<usize>,
        avoid: Option<usize>,
        gone: bool,
    ) -> Outcome {
        if let Some(p) = pin {
            return self.model_pinned(id, key, p, None, gone, false);
        }
        let candidates = self.candidates(avoid);
        if !candidates.iter().any(|c| c.usable) {
            return Outcome::NoServer;
        }
        // While the backend queue waits nothing is available, and a
        // balancer that never pins is not asked: the session queues.
        let only_balances = !matches!(self.cfg.balancer, BalancerKind::Source(_) | BalancerKind::Scripted(_));
        let choice = if only_balances && self.queued_at(None) > 0 {
            assert!(self.picks.lock().unwrap().is_empty(), "session {id}: asked while the backend queue waits");
            None
        } else {
            let pick = self.picks.lock().unwrap().pop_front();
            let pick = pick.unwrap_or_else(|| panic!("session {id}: the balancer was not asked"));
            assert_eq!(pick.client, client, "session {id}: client address given to the balancer");
            assert_eq!(
                pick.candidates.iter().map(view).collect::<Vec<_>>(),
                candidates.iter().map(view).collect::<Vec<_>>(),
                "session {id}: the balancer's view (id, weight, usable, available, load)"
            );
            pick.choice
        };
        match choice {
            Some(Choice::Balanced(ServerId(s))) => {
                assert!(candidates[s].available, "session {id}: balancer picked unavailable server {s}");
                self.grant_new(id, s, true);
                Outcome::Granted(s)
            }
            Some(Choice::Pinned(ServerId(p))) => {
                assert!(candidates[p].usable, "session {id} hashed to unusable server {p}");
                self.model_pinned(id, key, p, avoid, gone, true)
            }
            None => {
                // Nothing available (static-rr included: a server configured
                // at weight 0 follows its live weight).
                assert!(
                    !candidates.iter().any(|c| c.available),
                    "session {id}: balancer found nothing among {candidates:?}"
                );
                if self.avoiding(avoid) {
                    return self.enqueue_elsewhere(&candidates, id, key, gone);
                }
                self.enqueue_backend(id, key, gone)
            }
        }
    }

    /// `reserve_pinned`: `hashed` by `source` (may redispatch when its
    /// server's queue is full) or explicitly pinned.
    fn model_pinned(
        &mut self,
        id: u64,
        key: QueueKey,
        p: usize,
        avoid: Option<usize>,
        gone: bool,
        hashed: bool,
    ) -> Outcome {
        if p >= self.n() || !self.status[p].up {
            return Outcome::NoServer;
        }
        if self.open(p) {
            self.grant_new(id, p, hashed);
            return Outcome::Granted(p);
        }
        if queue_full(self.cfg.servers[p].maxqueue, self.queued_at(Some(p))) {
            if hashed && self.cfg.redispatch {
                // Its server's queue is full: the least loaded other
                // available server, else the backend queue.
                let mut others = self.candidates(Some(p));
                // Nor the server a retry is leaving.
                if let Some(a) = avoid {
                    others[a].available = false;
                }
                if let Some(s) = least_loaded(&others, p) {
                    self.grant_new(id, s, true);
                    return Outcome::Granted(s);
                }
                // No other server could ever take it: refused at once.
                if !(0..self.n()).any(|o| o != p && Some(o) != avoid && self.balanced(o)) {
                    return Outcome::Full;
                }
                return self.enqueue_backend(id, key, gone);
            }
            return Outcome::Full;
        }
        self.enqueue(Some(p), id, key, gone)
    }

    /// A session in no queue gets a slot of `s` at once. `balancing`: the
    /// server was chosen by balancing, not by an explicit pin.
    fn grant_new(&mut self, id: u64, s: usize, balancing: bool) {
        // Never over maxconn, no slot used twice: a held credit (or unlimited) with room under the
        // effective maxconn.
        assert!(self.status[s].up && self.has_room(s), "session {id} granted server {s} without a usable slot");
        // Nobody overtakes: nobody waits who could use this
        // slot — newcomers and a downed server's redispatched sessions alike
        // (`set_status` serves the waiters first).
        let own = self.head(Some(s));
        let shared = if self.balanced(s) { self.head(None) } else { None };
        if let Some((_, other)) = own.or(shared) {
            panic!("session {id} granted server {s} ahead of waiting session {other}");
        }
        // Backups take balanced traffic only while no active server can.
        if balancing && self.cfg.servers[s].backup {
            assert!(!self.active_usable(), "backup server {s} granted session {id} while an active server is up");
        }
        self.take(s, id);
    }

    /// `credit` / `dispatch` with one held slot of `s`: the waiter with the
    /// lowest key among its own queue and, if it takes balanced traffic, the
    /// backend queue (a tie goes to its own queue). Returns the session and
    /// whether its client is gone.
    fn model_grant_from(&mut self, s: usize) -> Option<(u64, bool)> {
        if !self.status[s].up || !self.has_room(s) {
            return None;
        }
        let own = self.head(Some(s));
        let shared = if self.balanced(s) { self.head(None) } else { None };
        let (key, id, at) = match (own, shared) {
            (None, None) => return None,
            (Some((k, id)), None) => (k, id, Some(s)),
            (None, Some((k, id))) => (k, id, None),
            (Some(o), Some(b)) if o.0 <= b.0 => (o.0, o.1, Some(s)),
            (Some(_), Some(b)) => (b.0, b.1, None),
        };
        let Some(&Sess::Queued { gone, since, .. }) = self.sessions.get(&id) else { unreachable!() };
        // FIFO by queue key, per queue: a session that was already waiting
        // when the previous grant from its queue was made has a later key.
        let q = at.map_or(0, |s| s + 1);
        if let Some((last_key, last_tick)) = self.last_grant[q] {
            if since < last_tick {
                assert!(key > last_key, "FIFO: session {id} ({key:?}) granted from {at:?} after {last_key:?}");
            }
        }
        self.tick += 1;
        self.last_grant[q] = Some((key, self.tick));
        if at.is_none() && self.cfg.servers[s].backup {
            assert!(!self.active_usable(), "backup server {s} served the backend queue while an active server is up");
        }
        self.take(s, id);
        Some((id, gone))
    }

    fn model_dispatch(&mut self) -> Vec<(usize, u64, bool)> {
        let mut grants = Vec::new();
        for s in 0..self.n() {
            while let Some((id, gone)) = self.model_grant_from(s) {
                grants.push((s, id, gone));
            }
        }
        grants
    }

    /// The grant to `id` could not be delivered (its client is gone): the
    /// slot was disarmed and is held again.
    fn model_ungrant(&mut self, s: usize, id: u64) {
        assert_eq!(self.sessions.remove(&id), Some(Sess::Holding(s)));
        self.served[s] -= 1;
        if let Some(h) = &mut self.held[s] {
            *h += 1;
        }
    }

    /// Grants the core made from held slots (a credit, its settle rounds),
    /// checked one by one against the rules: each went to the waiter that
    /// `model_grant_from` names for that server, and a grant its session did
    /// not take (gone) left the slot held, to be offered again. That nothing
    /// usable is left held while someone waits is checked after the step.
    fn offered(&mut self, heard: &[Heard]) {
        for h in heard {
            let Reply::Granted { server, queued: Some(place), .. } = h.reply else {
                panic!("only grants from a queue were due, got {h:?}");
            };
            self.check_place(h.session, place);
            let model = self.model_grant_from(server);
            assert_eq!(model, Some((h.session, !h.delivered)), "server {server}'s held slot went to {h:?}");
            if !h.delivered {
                self.model_ungrant(server, h.session);
            }
        }
    }

    fn state(&self) -> &BackendState<TestWaiter> {
        self.queue.state()
    }

    // === the ops ===

    /// Resets the per-step record.
    fn begin(&mut self) {
        self.granted.iter_mut().for_each(|g| *g = false);
        self.load_peak = self.load();
    }

    fn step(&mut self, op: &BOp) {
        self.begin();
        match *op {
            BOp::Deliver(i) => {
                if !self.pool.is_empty() {
                    let msg = self.pool.remove(i % self.pool.len());
                    self.deliver(msg);
                }
            }
            BOp::Arrive { pin, avoid, gone, client, class, offset } => {
                self.arrive(pin, avoid, gone, client, class, offset)
            }
            BOp::Leave { pick, at_once } => self.leave(pick, at_once),
            BOp::Close(pick) => self.close(pick),
            BOp::Quiesce => self.quiesce(),
            BOp::Status { server, up, weight, cap } => self.set_status(server, up, weight, cap),
            BOp::Pause(paused) => self.set_paused(paused),
        }
        self.check();
    }

    /// The `Reserve` handler of the BackendQueue.
    fn arrive(&mut self, pin: Option<usize>, avoid: Option<usize>, gone: bool, client: u8, class: i32, offset: i64) {
        let n = self.n();
        let id = self.next_id;
        self.next_id += 1;
        let pin = pin.map(|p| if p == 15 { n } else { p % n });
        let avoid = avoid.map(|a| a % n);
        let key = QueueKey { class, time_ms: id as i64 * 10 + offset, seq: id };
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, client));
        let hashed = self.cfg.balancer.hashed();
        // Snapshot before the call.
        let backend_q = self.queued_at(None);
        let server_q: Vec<usize> = (0..n).map(|s| self.queued_at(Some(s))).collect();
        let open: Vec<bool> = (0..n).map(|s| self.open(s)).collect();
        let balanced: Vec<bool> = (0..n).map(|s| self.balanced(s)).collect();
        let active_usable = self.active_usable();
        // A balancer other than `source` picks any balanced server that is
        // open.
        // An avoided server is not available while another one is.
        let available: Vec<bool> = (0..n).map(|s| balanced[s] && open[s]).collect();
        // A retry keeps off the server it failed on while another server
        // takes balanced traffic, even when it must wait for that one.
        let avoiding = pin.is_none() && self.avoiding(avoid);
        let avoided = |s: usize| avoiding && avoid == Some(s);
        let pickable: Vec<bool> = (0..n).map(|s| available[s] && !avoided(s)).collect();
        let backend_bound = self.backend_bound();

        let expect = match pin {
            Some(p) if p >= n || !self.status[p].up => Some(Expect::NoServer),
            Some(p) if open[p] => Some(Expect::Granted),
            Some(p) if queue_full(self.cfg.servers[p].maxqueue, server_q[p]) => Some(Expect::Full),
            Some(_) => Some(Expect::Queued),
            // "NoServer: no server can take it (none, all down, all at
            // weight 0)".
            None if !balanced.iter().any(|&b| b) => Some(Expect::NoServer),
            // `source` pins by hash; the shadow follows its choice.
            None if hashed => None,
            None if pickable.iter().any(|&p| p) => Some(Expect::Granted),
            // It waits, in another server's queue or the backend queue.
            None if avoiding => None,
            None if queue_full(backend_bound, backend_q) => Some(Expect::Full),
            None => Some(Expect::Queued),
        };

        let req = ReserveRequest {
            client: Some(ip),
            session: SessionId(id),
            key,
            pin: pin.map(ServerId),
            avoid: avoid.map(ServerId),
        };
        if gone {
            self.replies.leave(id);
        }
        let real = self.queue.reserve(req, self.replies.waiter(id));
        let model = self.model_reserve(id, key, Some(ip), pin, avoid, gone);
        let heard = self.replies.heard();
        let (got, answer) = match &real {
            Reserved::Granted { server, .. } => (
                (Expect::Granted, Outcome::Granted(server.0)),
                Some(Reply::Granted { server: server.0, queued: None, ticket: None }),
            ),
            Reserved::Queued { server, .. } => ((Expect::Queued, Outcome::Queued(server.map(|s| s.0))), None),
            Reserved::Full { .. } => ((Expect::Full, Outcome::Full), Some(Reply::Full)),
            Reserved::NoServer { .. } => {
                ((Expect::NoServer, Outcome::NoServer), Some(Reply::NoServer { queued: None }))
            }
            Reserved::SourceFull { .. } | Reserved::SourceBusy { .. } => {
                panic!("session {id}: no per-source cap here, yet {real:?}")
            }
        };
        // Answered at once, before anything else; a queued one hears later.
        let heard = match answer {
            Some(reply) => {
                assert_eq!(heard.first(), Some(&Heard { session: id, reply, delivered: !gone }), "{real:?}");
                &heard[1..]
            }
            None => &heard[..],
        };
        assert_eq!(got.1, model, "session {id}: reserve answered {real:?}");
        if let Some(expect) = expect {
            assert_eq!(got.0, expect, "session {id}: reserve answered {real:?}");
        }
        match real {
            Reserved::Granted { server, .. } => {
                let s = server.0;
                // Nobody overtakes: a newcomer never gets a
                // server with its own queue non-empty, nor a balanced server
                // while the backend queue waits.
                assert_eq!(server_q[s], 0, "newcomer {id} overtook server {s}'s queue");
                if balanced[s] {
                    assert_eq!(backend_q, 0, "newcomer {id} overtook the backend queue on server {s}");
                }
                // Never over maxconn, no slot used twice: only a held credit (or an unlimited server)
                // with room under its effective maxconn can be granted.
                assert!(open[s], "newcomer {id} granted server {s} without a free slot");
                match pin {
                    Some(p) => assert_eq!(s, p, "pinned session granted another server"),
                    None => {
                        assert!(balanced[s], "balanced session granted server {s}, which takes no balanced traffic");
                        assert!(!self.cfg.servers[s].backup || !active_usable, "backup {s} granted a balanced session");
                        assert!(!avoided(s), "retry {id} granted the server {s} it failed on though another is usable");
                    }
                }
                if gone {
                    // Delivery failed: the slot is disarmed and held again;
                    // the core's settle offers it to the next waiter.
                    self.model_ungrant(s, id);
                }
            }
            Reserved::Queued { server, position } => {
                // Queues within maxqueue: Queued only below it; position = waiters
                // already there.
                let len = match server {
                    Some(p) => server_q[p.0],
                    None => backend_q,
                };
                if !hashed && !avoiding {
                    assert_eq!(server.map(|s| s.0), pin, "session {id} queued in the wrong queue");
                }
                if avoiding {
                    assert_ne!(server.map(|s| s.0), avoid, "retry {id} queued for the server it failed on");
                }
                if server.is_none() {
                    // The backend queue's bound: each server's maxqueue
                    // holds whatever the algorithm.
                    assert!(
                        backend_bound == 0 || len < backend_bound as usize,
                        "session {id} joined the backend queue at {len} >= its bound {backend_bound}"
                    );
                }
                assert_eq!(position as usize, len, "queue position of session {id}");
                if gone {
                    self.pool.push(Msg::Cancel { session: id });
                }
            }
            Reserved::Full { .. }
            | Reserved::NoServer { .. }
            | Reserved::SourceFull { .. }
            | Reserved::SourceBusy { .. } => {}
        }
        self.offered(heard);
    }

    fn leave(&mut self, pick: usize, at_once: bool) {
        let live: Vec<(u64, Option<usize>)> = self
            .sessions
            .iter()
            .filter_map(|(&id, s)| match *s {
                Sess::Queued { at, gone: false, .. } => Some((id, at)),
                _ => None,
            })
            .collect();
        if live.is_empty() {
            return;
        }
        let (id, at) = live[pick % live.len()];
        if at_once {
            // A client that leaves frees its place at once.
            let before = self.queue_len(at);
            let _ = self.queue.cancel(SessionId(id));
            let place = self.left(id, true);
            assert_eq!(place.server_queue, at.is_some(), "session {id} left the queue it waited in");
            assert_eq!(self.queue_len(at), before - 1, "cancel of {id} did not shrink its queue");
            assert!(!self.state().is_queued(SessionId(id)));
            self.sessions.remove(&id);
        } else {
            if let Some(Sess::Queued { gone, .. }) = self.sessions.get_mut(&id) {
                *gone = true;
            }
            self.replies.leave(id);
            self.pool.push(Msg::Cancel { session: id });
        }
    }

    /// The one answer to a `CancelReserve` of queued session `id`: `Left`,
    /// with its place; heard unless the session is gone.
    fn left(&mut self, id: u64, delivered: bool) -> QueuePlace {
        let heard = self.replies.heard();
        let [Heard { session, reply: Reply::Left { queued }, delivered: d }] = heard[..] else {
            panic!("cancel of queued session {id} answered {heard:?}");
        };
        assert_eq!((session, d), (id, delivered), "cancel of queued session {id}");
        queued
    }

    /// A grant says which queue its session waited in.
    fn check_place(&self, session: u64, place: QueuePlace) {
        if let Some(&Sess::Queued { at, .. }) = self.sessions.get(&session) {
            assert_eq!(place.server_queue, at.is_some(), "session {session} granted from the queue it waited in");
        }
    }

    fn queue_len(&self, at: Option<usize>) -> usize {
        match at {
            None => self.state().backend_queue_len(),
            Some(s) => self.state().server_queue_len(ServerId(s)),
        }
    }

    fn close(&mut self, pick: usize) {
        let holding: Vec<(u64, usize)> = self
            .sessions
            .iter()
            .filter_map(|(&id, s)| match *s {
                Sess::Holding(server) => Some((id, server)),
                _ => None,
            })
            .collect();
        if holding.is_empty() {
            return;
        }
        let (id, server) = holding[pick % holding.len()];
        self.sessions.remove(&id);
        // Every slot in one place: the Slot guard sends exactly one Release.
        self.pool.push(Msg::Release { server });
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            // BackendQueue's `Dequeue` handler: the releases, then one
            // credit per lent slot, each to the best waiter that can use it
            // (never overtaken, FIFO by key) or held if nobody can.
            Msg::Dequeue { server, credits, released } => {
                let _ = self.queue.dequeue(ServerId(server), credits, released);
                assert!(self.served[server] >= released, "server {server}: more released than served");
                self.served[server] -= released;
                if let Some(h) = &mut self.held[server] {
                    *h += credits;
                }
                let heard = self.replies.heard();
                self.offered(&heard);
            }
            // Server's `Release` handler: the slot is lent again at once.
            Msg::Release { server } => {
                let credits = self.servers[server].release();
                let expected = u32::from(self.limited(server));
                assert_eq!(credits, expected, "server {server} lends back what was released");
                // Every release is reported, even by unlimited servers.
                self.pool.push(Msg::Dequeue { server, credits, released: 1 });
            }
            // BackendQueue's `CancelReserve` handler.
            Msg::Cancel { session } => {
                let _ = self.queue.cancel(SessionId(session));
                match self.sessions.get(&session) {
                    Some(&Sess::Queued { gone: true, at, .. }) => {
                        let place = self.left(session, false);
                        assert_eq!(place.server_queue, at.is_some(), "session {session} left the queue it waited in");
                        self.sessions.remove(&session);
                    }
                    None => {
                        let heard = self.replies.heard();
                        assert!(heard.is_empty(), "cancel of {session}, granted (or refused) meanwhile: {heard:?}");
                    }
                    Some(other) => {
                        panic!("cancel in flight for session {session} in state {other:?}")
                    }
                }
            }
        }
    }

    /// `ServerStatusChanged`: the core's `set_status` grants and refusals
    /// (a refused session got NoServer and leaves), then its settle.
    fn set_status(&mut self, server: usize, up: bool, weight: u32, cap: Option<u32>) {
        let s = server % self.n();
        let cap = if self.limited(s) { cap } else { None };
        let new = ServerStatus { up, weight, cap };
        let went_down = self.status[s].up && !up;
        let stranded = if went_down { self.waiters(Some(s)) } else { Vec::new() };

        let _ = self.queue.status_changed(ServerId(s), new);
        let heard = self.replies.heard();

        // The shadow: usable held slots go to the waiters already queued;
        // a downed server's queue is popped, then each of its sessions is
        // refused (no redispatch) or re-reserved with its original key,
        // avoiding this server; with no usable server left, the backend
        // queue is refused; then every usable held slot is granted.
        self.status[s] = new;
        let mut model_grants = Vec::new();
        let mut model_refusals = Vec::new();
        // Waiters already queued go first for slots that just became usable.
        model_grants.extend(self.model_dispatch());
        let mut gone_of = BTreeMap::new();
        for &(_, id) in &stranded {
            let Some(Sess::Queued { gone, .. }) = self.sessions.remove(&id) else { unreachable!() };
            gone_of.insert(id, gone);
        }
        for &(key, id) in &stranded {
            if !self.cfg.redispatch {
                model_refusals.push(id);
                continue;
            }
            // Re-reserved with its original key: it keeps its place.
            match self.model_reserve(id, key, None, None, Some(s), gone_of[&id]) {
                Outcome::Granted(t) => model_grants.push((t, id, gone_of[&id])),
                // Queued, it raised the backend's load: room that opened
                // under a dynamic limit goes to the queue before the next
                // stranded session is balanced.
                Outcome::Queued(_) => model_grants.extend(self.model_dispatch()),
                Outcome::Full | Outcome::NoServer => model_refusals.push(id),
            }
        }
        if !self.any_balanced() {
            for (_, id) in self.waiters(None) {
                self.sessions.remove(&id);
                model_refusals.push(id);
            }
        }
        model_grants.extend(self.model_dispatch());
        // Heard in that order: the grants, then the refusals; then the
        // grants of the settle that follows.
        let (g, r) = (model_grants.len(), model_refusals.len());
        assert!(heard.len() >= g + r, "set_status({s}, {new:?}): heard {heard:?}");
        let real_grants: Vec<(usize, u64, bool)> = heard[..g]
            .iter()
            .map(|h| match h.reply {
                Reply::Granted { server, queued: Some(_), .. } => (server, h.session, !h.delivered),
                _ => panic!("set_status({s}, {new:?}): {h:?} where a grant was due"),
            })
            .collect();
        let real_refusals: Vec<u64> = heard[g..g + r]
            .iter()
            .map(|h| match h.reply {
                Reply::NoServer { queued: Some(_) } => h.session,
                _ => panic!("set_status({s}, {new:?}): {h:?} where a refusal was due"),
            })
            .collect();
        assert_eq!(real_grants, model_grants, "set_status({s}, {new:?}) grants");
        assert_eq!(real_refusals, model_refusals, "set_status({s}, {new:?}) refusals");
        for &(t, id, gone) in &model_grants {
            if gone {
                self.model_ungrant(t, id);
            }
        }
        self.offered(&heard[g + r..]);

        // The spec, stated directly.
        assert_eq!(self.state().server_queue_len(ServerId(s)), if up { self.queued_at(Some(s)) } else { 0 });
        if went_down && !self.cfg.redispatch {
            // Without redispatch a downed server's queue fails at once.
            for (_, id) in &stranded {
                assert!(real_refusals.contains(id), "session {id} of downed server {s} not refused at once");
            }
        }
        for (_, id) in &stranded {
            assert!(!matches!(self.sessions.get(id), Some(Sess::Queued { at: Some(a), .. }) if *a == s));
        }
        if !self.any_balanced() {
            assert_eq!(self.state().backend_queue_len(), 0, "backend queue left waiting with no usable server");
        }
    }

    /// The pause and resume handlers of the BackendQueue. A pause answers
    /// nobody: no grant, no refusal, every waiter stays queued. A resume
    /// grants the held slots, each to the next waiter of its server in
    /// queue order (`offered` checks each against the shadow), and refuses
    /// nobody; every waiter from before is still queued or now holds a slot.
    fn set_paused(&mut self, paused: bool) {
        // Live waiters (a gone one's grant fails and its slot is offered on).
        let waiting: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s, Sess::Queued { gone: false, .. }))
            .map(|(&id, _)| id)
            .collect();
        let changed = self.queue.set_paused(paused);
        assert_eq!(changed, self.paused != paused, "set_paused reports whether anything changed");
        self.paused = paused;
        assert_eq!(self.state().is_paused(), paused);
        let heard = self.replies.heard();
        if paused {
            assert!(heard.is_empty(), "a pause answered {heard:?}");
        } else {
            // As with a status change: the dispatch's grants, server by
            // server in queue order, then those of the settle that follows.
            let model_grants = self.model_dispatch();
            let g = model_grants.len();
            assert!(heard.len() >= g, "resume: heard {heard:?}, due {model_grants:?}");
            let real_grants: Vec<(usize, u64, bool)> = heard[..g]
                .iter()
                .map(|h| match h.reply {
                    Reply::Granted { server, queued: Some(_), .. } => (server, h.session, !h.delivered),
                    _ => panic!("resume: {h:?} where a grant was due"),
                })
                .collect();
            assert_eq!(real_grants, model_grants, "resume grants");
            for &(t, id, gone) in &model_grants {
                if gone {
                    self.model_ungrant(t, id);
                }
            }
            self.offered(&heard[g..]);
        }
        for id in waiting {
            assert!(self.sessions.contains_key(&id), "waiter {id} dropped by a pause or resume");
        }
    }

    /// Deliver every pending message (in send order), then check work
    /// conservation at rest: no session is queued while a slot it could use is free.
    fn quiesce(&mut self) {
        while !self.pool.is_empty() {
            self.begin();
            let msg = self.pool.remove(0);
            self.deliver(msg);
            self.check();
        }
        let backend_q = self.state().backend_queue_len();
        for s in 0..self.n() {
            let holding = self.holding(s);
            assert_eq!(self.served[s], holding, "server {s} at rest: served = live sessions holding it");
            if self.limited(s) {
                // Every slot in one place: at rest every slot not held by a session is
                // back as a credit — none lost, none doubled.
                let maxconn = self.cfg.servers[s].maxconn;
                assert_eq!(self.state().held(ServerId(s)), Some(maxconn - holding), "server {s} at rest");
            }
            // Work conservation: a usable slot with room under
            // the effective maxconn implies nobody waits who could use it.
            if self.status[s].up && self.has_room(s) {
                let eff = self.eff_max(s, self.load());
                let server_q = self.state().server_queue_len(ServerId(s));
                assert_eq!(
                    server_q, 0,
                    "server {s} (serving {holding}, effective max {eff:?}) idle while its queue waits"
                );
                if self.balanced(s) {
                    assert_eq!(
                        backend_q, 0,
                        "server {s} (serving {holding}, max {eff:?}) idle while the backend queue waits"
                    );
                }
            }
        }
        // Every `Cancel` was delivered: no gone session is left queued.
        assert!(self.sessions.values().all(|s| !matches!(s, Sess::Queued { gone: true, .. })));
    }

    /// End of a case: close every session round after round; every queued
    /// session must get a slot (nobody is stuck), and then every slot must
    /// be back as a held credit.
    fn drain(&mut self) {
        self.quiesce();
        let rounds = self.sessions.len() + 1;
        for _ in 0..rounds {
            if self.sessions.is_empty() {
                break;
            }
            let holding: Vec<u64> =
                self.sessions.iter().filter(|(_, s)| matches!(s, Sess::Holding(_))).map(|(&id, _)| id).collect();
            assert!(!holding.is_empty(), "sessions stuck in queue with no slot in use: {:?}", self.sessions);
            for id in holding {
                let Some(Sess::Holding(server)) = self.sessions.remove(&id) else { unreachable!() };
                self.pool.push(Msg::Release { server });
            }
            self.begin();
            self.check();
            self.quiesce();
        }
        assert!(self.sessions.is_empty(), "sessions left after draining: {:?}", self.sessions);
        for s in 0..self.n() {
            assert_eq!(self.state().served(ServerId(s)), 0);
            if self.limited(s) {
                let maxconn = self.cfg.servers[s].maxconn;
                assert_eq!(self.state().held(ServerId(s)), Some(maxconn));
                assert_eq!(self.servers[s].out(), maxconn);
            }
        }
    }

    /// Invariants after every step.
    fn check(&self) {
        // The struct's own invariant check (work conservation as seen by
        // the BackendQueue, nobody overtakes, maxqueue).
        if let Err(e) = self.state().check() {
            panic!("BackendState::check: {e}");
        }
        assert!(self.picks.lock().unwrap().is_empty(), "balancer calls the shadow did not expect");
        let n = self.n();
        for s in 0..n {
            let maxconn = self.cfg.servers[s].maxconn;
            let holding = self.holding(s);
            let mut credits = 0;
            let mut releases = 0;
            let mut reported = 0;
            for m in &self.pool {
                match *m {
                    Msg::Dequeue { server, credits: c, released } if server == s => {
                        credits += c;
                        reported += released;
                    }
                    Msg::Release { server } if server == s => releases += 1,
                    _ => {}
                }
            }
            // Served as the BackendQueue counts it: every session holding a
            // slot, plus releases not yet reported to it.
            let served = self.state().served(ServerId(s));
            assert_eq!(served, self.served[s], "server {s}: served");
            assert_eq!(served, holding + releases + reported, "server {s}: served = sessions + releases in flight");
            assert_eq!(self.state().held(ServerId(s)), self.held[s], "server {s}: held credits");
            // Effective maxconn: a server that granted a slot this step is
            // within its cap / dynamic maxconn at the highest load of the step
            // (it may be above a cap lowered since, or a dynamic maxconn that
            // fell with the load, until releases drain).
            if self.granted[s] {
                if let Some(max) = self.eff_max(s, self.load_peak) {
                    assert!(served <= max, "server {s}: granted up to {served} > effective maxconn {max}");
                }
            }
            let out = self.servers[s].out();
            if self.limited(s) {
                let held = self.state().held(ServerId(s)).expect("limited server has a credit count");
                // Never more than maxconn connections at the
                // server, counting every slot wherever it is.
                assert!(served <= maxconn, "server {s}: served {served} > maxconn {maxconn}");
                assert!(holding <= maxconn, "server {s}: {holding} sessions > maxconn {maxconn}");
                assert!(
                    holding + held + credits <= maxconn,
                    "server {s}: {holding} sessions + {held} held + {credits} in flight > maxconn {maxconn}"
                );
                assert!(out <= maxconn, "server {s}: out {out} > maxconn {maxconn}");
                // Every slot in one place: every slot the Server counts as out is in
                // exactly one place — held by the BackendQueue, held by a
                // session, or in a message (Dequeue or Release) in flight.
                assert_eq!(
                    out,
                    held + holding + credits + releases,
                    "server {s}: out != held {held} + sessions {holding} + credits {credits} + releases {releases}"
                );
            } else {
                assert_eq!(self.state().held(ServerId(s)), None, "unlimited server {s} holds credits");
                assert_eq!(out, 0, "unlimited server {s} counts slots");
                assert_eq!(credits, 0, "unlimited server {s} lends credits");
                // Only a pause makes anyone wait for an unlimited server.
                if !self.paused {
                    assert_eq!(self.state().server_queue_len(ServerId(s)), 0, "unlimited server {s} has a queue");
                }
            }
            // Queues bounded by maxqueue; the struct's queues
            // hold exactly the sessions the simulator thinks are there.
            let server_q = self.state().server_queue_len(ServerId(s));
            assert_eq!(server_q, self.queued_at(Some(s)), "server {s} queue length");
            if self.cfg.servers[s].maxqueue > 0 {
                assert!(server_q <= self.cfg.servers[s].maxqueue as usize, "server {s} queue over maxqueue");
            }
            if !self.status[s].up {
                assert_eq!(server_q, 0, "down server {s} keeps a queue");
            }
        }
        let backend_q = self.state().backend_queue_len();
        assert_eq!(backend_q, self.queued_at(None), "backend queue length");
        assert_eq!(self.state().backend_queue_limit().unwrap_or(0), self.backend_bound(), "backend queue bound");
        if self.cfg.maxqueue > 0 {
            assert!(backend_q <= self.cfg.maxqueue as usize, "backend queue over maxqueue");
        }
        // No usable server: the backend queue was refused at once, not left
        // to time out.
        if !self.any_balanced() {
            assert_eq!(backend_q, 0, "backend queue waits while no server can take it");
        }
        for (&id, s) in &self.sessions {
            let queued = matches!(s, Sess::Queued { .. });
            assert_eq!(self.state().is_queued(SessionId(id)), queued, "session {id} ({s:?})");
        }
        // Nobody overtakes, stated directly: while the backend queue waits, no
        // balanced server could take a newcomer; a server with its own queue
        // never could.
        for s in 0..n {
            if self.state().server_queue_len(ServerId(s)) > 0 || (backend_q > 0 && self.balanced(s)) {
                assert!(
                    !(self.status[s].up && self.has_room(s)),
                    "server {s} has a usable slot while sessions wait for it"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Model 1: random backends (every balancer, backups, minconn/fullconn,
    /// redispatch), random interleavings of arrivals, leaves, closes, server
    /// status changes and message deliveries.
    #[test]
    fn backend_slots(cfg in backend_cfg(), ops in prop::collection::vec(backend_op(), 0..MAX_OPS)) {
        let mut sim = BackendSim::new(cfg);
        for op in &ops {
            sim.step(op);
        }
        // A paused backend keeps its waiters until the resume.
        sim.step(&BOp::Pause(false));
        sim.drain();
    }
}

/// NoServer: a backend with no server refuses every reserve at once and
/// ignores stray credits.
#[test]
fn empty_backend_answers_no_server() {
    let mut state: BackendState<u64> = BackendState::new(&[], 0, Box::new(SmoothRoundRobin::new(0)));
    for id in 1..=3u64 {
        let session = SessionId(id);
        let pin = if id == 2 { Some(ServerId(0)) } else { None };
        let req = ReserveRequest { client: None, session, key: QueueKey::fifo(session), pin, avoid: None };
        assert!(matches!(state.reserve(req, id), Reserved::NoServer { waiter } if waiter == id));
        assert!(!state.is_queued(session));
    }
    assert!(state.credit(ServerId(0)).is_none());
    assert_eq!(state.backend_queue_len(), 0);
    assert_eq!(state.check(), Ok(()));
}

/// The gone-waiter path, step by step: a credit granted to a session whose
/// client has left is offered again to the next waiter in line.
#[test]
fn gone_waiter_slot_goes_to_the_next() {
    let mut sim = BackendSim::new(BackendCfg::plain(vec![ServerCfg::plain(1, 1, 0)], 0, BalancerKind::RoundRobin));
    for op in [
        // The one credit arrives and is held.
        BOp::Quiesce,
        // Session 1 is granted it; 2 waits in the backend queue, 3 in
        // server 0's queue.
        arrival(None),
        arrival(None),
        arrival(Some(0)),
        // 2's client leaves; its Cancel stays in flight (pool: [Cancel 2]).
        BOp::Leave { pick: 0, at_once: false },
        // 1 ends (pool: [Cancel 2, Release 0]).
        BOp::Close(0),
        // The Release reaches the Server (pool: [Cancel 2, Dequeue 0]).
        BOp::Deliver(1),
        // The Dequeue: the slot goes to 2 (older), which is gone, so it is
        // held again and `settle` hands it to 3.
        BOp::Deliver(1),
    ] {
        sim.step(&op);
    }
    assert_eq!(sim.sessions.get(&3), Some(&Sess::Holding(0)));
    sim.drain();
}

/// A pause grants nothing — not to newcomers, not from credits the Server
/// lends meanwhile — and refuses nobody; the resume serves the waiters in
/// arrival order, and maxconn holds throughout.
#[test]
fn a_paused_backend_grants_nothing_and_the_resume_serves_waiters_in_order() {
    let mut sim = BackendSim::new(BackendCfg::plain(vec![ServerCfg::plain(1, 1, 0)], 0, BalancerKind::RoundRobin));
    sim.step(&BOp::Pause(true));
    // The credit arrives while paused and is held, not granted.
    sim.step(&BOp::Quiesce);
    for op in [arrival(None), arrival(None), arrival(Some(0)), arrival(None)] {
        sim.step(&op);
    }
    assert!(sim.sessions.values().all(|s| matches!(s, Sess::Queued { .. })), "{:?}", sim.sessions);
    assert_eq!(sim.sessions.len(), 4, "nobody refused by the pause");
    sim.step(&BOp::Pause(true));
    sim.step(&BOp::Pause(false));
    // maxconn 1: only the first waiter holds the slot, the others wait on.
    assert_eq!(sim.sessions.get(&1), Some(&Sess::Holding(0)));
    assert_eq!(sim.sessions.values().filter(|s| matches!(s, Sess::Holding(_))).count(), 1);
    for next in 2..=4u64 {
        sim.step(&BOp::Close(0));
        sim.step(&BOp::Quiesce);
        assert_eq!(sim.sessions.get(&next), Some(&Sess::Holding(0)), "waiter {next} next, in arrival order");
    }
    sim.drain();
}

/// A pause while a server is down and comes back: still nothing granted
/// until the resume, and then the waiters of both servers are served.
#[test]
fn a_server_coming_back_during_a_pause_grants_nothing_until_the_resume() {
    let two = vec![ServerCfg::plain(1, 1, 0), ServerCfg::plain(2, 1, 0)];
    let mut sim = BackendSim::new(BackendCfg::plain(two, 0, BalancerKind::RoundRobin));
    sim.step(&BOp::Quiesce);
    sim.step(&BOp::Status { server: 1, up: false, weight: 1, cap: None });
    sim.step(&BOp::Pause(true));
    for _ in 0..4 {
        sim.step(&arrival(None));
    }
    sim.step(&BOp::Status { server: 1, up: true, weight: 1, cap: None });
    sim.step(&BOp::Quiesce);
    assert!(sim.sessions.values().all(|s| matches!(s, Sess::Queued { .. })), "{:?}", sim.sessions);
    sim.step(&BOp::Pause(false));
    let holding = sim.sessions.values().filter(|s| matches!(s, Sess::Holding(_))).count();
    assert_eq!(holding, 3, "both servers full after the resume: {:?}", sim.sessions);
    sim.drain();
}

/// The last usable server goes down while sessions wait in its own queue
/// and in the backend queue: without redispatch, all are refused at once.
#[test]
fn last_server_down_refuses_every_waiter_at_once() {
    let mut sim = BackendSim::new(BackendCfg::plain(vec![ServerCfg::plain(1, 1, 0)], 0, BalancerKind::RoundRobin));
    for op in [BOp::Quiesce, arrival(None), arrival(None), arrival(None), arrival(Some(0)), arrival(Some(0))] {
        sim.step(&op);
    }
    assert_eq!((sim.queued_at(None), sim.queued_at(Some(0))), (2, 2));
    sim.step(&BOp::Status { server: 0, up: false, weight: 1, cap: None });
    assert_eq!(sim.sessions.len(), 1, "only the session holding the slot is left: {:?}", sim.sessions);
    sim.drain();
}

/// A server going down with redispatch on: its queue moves to the other
/// server (ahead of that server's later arrivals), nobody is refused.
#[test]
fn downed_server_queue_is_redispatched() {
    let mut cfg = BackendCfg::plain(vec![ServerCfg::plain(1, 1, 0); 2], 0, BalancerKind::RoundRobin);
    cfg.redispatch = true;
    let mut sim = BackendSim::new(cfg);
    for op in [
        BOp::Quiesce,
        // 1 → s0, 2 → s1; 3, 4 wait for s0; 5 waits in the backend queue.
        arrival(None),
        arrival(None),
        arrival(Some(0)),
        arrival(Some(0)),
        arrival(None),
        BOp::Status { server: 0, up: false, weight: 1, cap: None },
    ] {
        sim.step(&op);
    }
    assert_eq!(sim.queued_at(None), 3, "3 and 4 redispatched to the backend queue: {:?}", sim.sessions);
    // s1's slot frees: 3 (redispatched, older place) goes first, then 4, then 5.
    for want in [3, 4, 5] {
        let holder = *sim.sessions.iter().find(|(_, s)| **s == Sess::Holding(1)).unwrap().0;
        let pick = sim.sessions.iter().filter(|(_, s)| matches!(s, Sess::Holding(_))).position(|(&id, _)| id == holder);
        sim.step(&BOp::Close(pick.unwrap()));
        sim.step(&BOp::Quiesce);
        assert_eq!(sim.sessions.get(&want), Some(&Sess::Holding(1)));
    }
    sim.drain();
}
