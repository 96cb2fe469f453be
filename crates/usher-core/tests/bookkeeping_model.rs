//! Model-based tests of the bookkeeping structs, with no actix and no sockets.
//!
//! The actors are thin shells over `BackendState`, `ServerState`,
//! `AdmissionState`, `WarningThrottle` and `StressState` (see
//! `src/bookkeeping.rs`). Here a small simulator plays the actors' part: it
//! keeps the messages that would be in flight between them in an explicit
//! pool and lets proptest choose, step by step, which pending message is
//! delivered next or which new event happens (a session arrives, leaves its
//! queue, closes; a listener asks for admission, accepts, stops; time
//! passes...). After every step the simulator checks the invariants of
//! `/work/shared/design.md` ("Invariants", numbered 1–7 below) against its
//! own independent record of where every slot and every waiter is.
//!
//! Model 1 (`backend_slots`): one backend = `BackendState` (the BackendQueue
//! actor) + one `ServerState` per server (the Server actors), driven by the
//! `Dequeue` / `Release` / `CancelReserve` / `ServerStatusChanged` protocol
//! of `actors/server.rs` and `actors/backend_queue.rs` (after every message
//! the BackendQueue `settle`s: `dispatch` until no grant; a grant whose
//! waiter is gone is `ungrant`ed). Servers go up and down, change weight
//! (0 = drain), get slowstart caps; some are backups; some have `minconn`
//! under a backend `fullconn` (dynamic maxconn); the backend may redispatch.
//! Every production balancer is plugged in (wrapped to record each pick),
//! `source` with client addresses from a small pool so sessions pile onto
//! their hashed server's own queue. The simulator is a shadow of the
//! BackendQueue: it predicts every answer, grant and refusal from its own
//! record, checks the balancer saw exactly its view, and checks the
//! invariants (maxconn and effective caps, nobody overtakes, FIFO by queue
//! key, backups, no backend queue without a usable server, a downed
//! server's queue refused or redispatched at once, work conservation).
//!
//! Model 2 (`admission`): `AdmissionState` (the ResourceWatchdog actor)
//! driven by listeners that follow the protocol of `data_plane/accept.rs`
//! and `actors/watchdog.rs` (at most one `Admit` outstanding per listener;
//! `Shortage` then `GiveBack` when `accept()` runs out of fds), on a fake
//! clock: a base `tokio::time::Instant` advanced by random durations, with
//! the watchdog's timer (`next_wakeup`) fired on time or late. Global,
//! frontend and listener `maxconn`, global and frontend rates (token
//! buckets) and shortage pauses are all modelled.
//!
//! `warning_throttle` and `stress_state` check `WarningThrottle` and
//! `StressState` against small models, on the same kind of fake clock.
//!
//! proptest seeds randomly and saves failing seeds next to this file
//! (`bookkeeping_model.proptest-regressions`, replayed first on later runs);
//! set `PROPTEST_CASES` to run more than the 1024 cases per property.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use usher_core::admission::{
    AdmissionConfig, AdmissionState, Admitted, FrontendLimits, LimitHit, ListenerLimits, ListenerState, PauseReason,
    Resumed, StressChange, StressState, WarningThrottle,
};
use usher_core::backend::balance::{
    Balancer, Candidate, Choice, ConsistentHash, First, LeastConn, PowerOfChoices, SmoothRoundRobin,
};
use usher_core::backend::ServerSetup;
use usher_core::backend::{
    BackendSetup, BackendState, QueueKey, QueuePlace, ReserveRequest, Reserved, ServerState, ServerStatus,
};
use usher_core::ids::{FrontendId, ListenerId, ServerId, SessionId};

/// At least 1024 cases (a case takes well under a millisecond);
/// `PROPTEST_CASES` may ask for more.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig { cases: default.cases.max(1024), ..default }
}

/// Longest op sequence per case.
const MAX_OPS: usize = 200;

// =====================================================================
// Model 1: backend slots (BackendState + ServerState)
// =====================================================================

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
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        let available: Vec<ServerId> =
            candidates.iter().filter(|c| c.available && c.weight > 0).map(|c| c.id).collect();
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
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice> {
        let choice = self.inner.pick(candidates, client);
        self.picks.lock().unwrap().push_back(Pick { candidates: candidates.to_vec(), client, choice });
        choice
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
    state: BackendState<u64>,
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
            BalancerKind::First => Box::new(First),
            BalancerKind::Random { draws, seed } => Box::new(PowerOfChoices::new(draws, seed)),
            BalancerKind::Source(factor) => Box::new(ConsistentHash::new(factor)),
            BalancerKind::Scripted(seed) => Box::new(ScriptedBalancer { state: seed }),
        };
        let picks = Picks::default();
        let balancer = Box::new(Recording { inner, picks: picks.clone() });
        let setup = BackendSetup { maxqueue: cfg.maxqueue, redispatch: cfg.redispatch, fullconn: cfg.fullconn };
        let state = BackendState::with_setup(&setups, setup, balancer);
        let mut sim = BackendSim {
            servers: cfg.servers.iter().map(|s| ServerState::new(s.maxconn)).collect(),
            status: cfg.servers.iter().map(|s| ServerStatus { up: true, weight: s.weight, cap: None }).collect(),
            held: cfg.servers.iter().map(|s| (s.maxconn > 0).then_some(0)).collect(),
            served: vec![0; n],
            last_grant: vec![None; n + 1],
            granted: vec![false; n],
            load_peak: 0,
            tick: 0,
            picks,
            cfg,
            state,
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
        self.held[s] != Some(0) && self.eff_max(s, self.load()).is_none_or(|m| self.served[s] < m)
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
        if let Some(a) = avoid {
            // A redispatched retry prefers any other server.
            if c.iter().any(|x| x.available && x.id.0 != a) {
                c[a].available = false;
            }
            // Hashing walks past it while another server is usable.
            if c.iter().any(|x| x.usable && x.id.0 != a) {
                c[a].usable = false;
            }
        }
        c
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
        if queue_full(self.cfg.maxqueue, self.queued_at(None)) {
            return Outcome::Full;
        }
        self.enqueue(None, id, key, gone)
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
            return self.model_pinned(id, key, p, gone, false);
        }
        let candidates = self.candidates(avoid);
        if !candidates.iter().any(|c| c.usable) {
            return Outcome::NoServer;
        }
        let pick = self.picks.lock().unwrap().pop_front();
        let pick = pick.unwrap_or_else(|| panic!("session {id}: the balancer was not asked"));
        assert_eq!(pick.client, client, "session {id}: client address given to the balancer");
        assert_eq!(
            pick.candidates.iter().map(view).collect::<Vec<_>>(),
            candidates.iter().map(view).collect::<Vec<_>>(),
            "session {id}: the balancer's view (id, weight, usable, available, load)"
        );
        match pick.choice {
            Some(Choice::Balanced(ServerId(s))) => {
                assert!(candidates[s].available, "session {id}: balancer picked unavailable server {s}");
                self.grant_new(id, s, true);
                Outcome::Granted(s)
            }
            Some(Choice::Pinned(ServerId(p))) => {
                assert!(candidates[p].usable, "session {id} hashed to unusable server {p}");
                self.model_pinned(id, key, p, gone, true)
            }
            None => {
                // Nothing available (static-rr included: a server configured
                // at weight 0 follows its live weight).
                assert!(
                    !candidates.iter().any(|c| c.available),
                    "session {id}: balancer found nothing among {candidates:?}"
                );
                self.enqueue_backend(id, key, gone)
            }
        }
    }

    /// `reserve_pinned`: `hashed` by `source` (may redispatch when its
    /// server's queue is full) or explicitly pinned.
    fn model_pinned(&mut self, id: u64, key: QueueKey, p: usize, gone: bool, hashed: bool) -> Outcome {
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
                if let Some(s) = least_loaded(&self.candidates(Some(p)), p) {
                    self.grant_new(id, s, true);
                    return Outcome::Granted(s);
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
        // Invariants 1/5: a held credit (or unlimited) with room under the
        // effective maxconn.
        assert!(self.status[s].up && self.has_room(s), "session {id} granted server {s} without a usable slot");
        // Invariant 4 (nobody overtakes): nobody waits who could use this
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
        // Invariant 3 (FIFO), per queue: a session that was already waiting
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
    /// slot is disarmed and held again (`ungrant`).
    fn fail_delivery(&mut self, s: usize, id: u64) {
        self.state.ungrant(ServerId(s));
        assert_eq!(self.sessions.remove(&id), Some(Sess::Holding(s)));
        self.served[s] -= 1;
        if let Some(h) = &mut self.held[s] {
            *h += 1;
        }
    }

    /// `BackendQueue::settle`: `dispatch` until no grant, delivering each
    /// batch (a gone waiter's slot goes around again).
    fn settle(&mut self) {
        loop {
            let real: Vec<(usize, u64)> = self
                .state
                .dispatch()
                .into_iter()
                .map(|g| {
                    assert_eq!(g.waiter, g.session.0);
                    self.check_place(g.session.0, g.queued);
                    (g.server.0, g.session.0)
                })
                .collect();
            let model = self.model_dispatch();
            assert_eq!(real, model.iter().map(|&(s, id, _)| (s, id)).collect::<Vec<_>>(), "dispatch grants");
            if model.is_empty() {
                return;
            }
            for (s, id, gone) in model {
                if gone {
                    self.fail_delivery(s, id);
                }
            }
        }
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
        let avoided = |s: usize| avoid == Some(s) && (0..n).any(|o| o != s && available[o]);
        let pickable: Vec<bool> = (0..n).map(|s| available[s] && !avoided(s)).collect();

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
            None if queue_full(self.cfg.maxqueue, backend_q) => Some(Expect::Full),
            None => Some(Expect::Queued),
        };

        let req = ReserveRequest {
            client: Some(ip),
            session: SessionId(id),
            key,
            pin: pin.map(ServerId),
            avoid: avoid.map(ServerId),
        };
        let real = self.state.reserve(req, id);
        let model = self.model_reserve(id, key, Some(ip), pin, avoid, gone);
        let got = match &real {
            Reserved::Granted { server, waiter } => {
                assert_eq!(*waiter, id);
                (Expect::Granted, Outcome::Granted(server.0))
            }
            Reserved::Queued { server, .. } => (Expect::Queued, Outcome::Queued(server.map(|s| s.0))),
            Reserved::Full { waiter } => {
                assert_eq!(*waiter, id);
                (Expect::Full, Outcome::Full)
            }
            Reserved::NoServer { waiter } => {
                assert_eq!(*waiter, id);
                (Expect::NoServer, Outcome::NoServer)
            }
        };
        assert_eq!(got.1, model, "session {id}: reserve answered {real:?}");
        if let Some(expect) = expect {
            assert_eq!(got.0, expect, "session {id}: reserve answered {real:?}");
        }
        match real {
            Reserved::Granted { server, .. } => {
                let s = server.0;
                // Invariant 4 (nobody overtakes): a newcomer never gets a
                // server with its own queue non-empty, nor a balanced server
                // while the backend queue waits.
                assert_eq!(server_q[s], 0, "newcomer {id} overtook server {s}'s queue");
                if balanced[s] {
                    assert_eq!(backend_q, 0, "newcomer {id} overtook the backend queue on server {s}");
                }
                // Invariant 1/5: only a held credit (or an unlimited server)
                // with room under its effective maxconn can be granted.
                assert!(open[s], "newcomer {id} granted server {s} without a free slot");
                match pin {
                    Some(p) => assert_eq!(s, p, "pinned session granted another server"),
                    None => {
                        assert!(balanced[s], "balanced session granted server {s}, which takes no balanced traffic");
                        assert!(!self.cfg.servers[s].backup || !active_usable, "backup {s} granted a balanced session");
                        if !hashed {
                            assert!(!avoided(s), "session {id} granted avoided server {s} though others were free");
                        }
                    }
                }
                if gone {
                    // `deliver` fails: the slot is disarmed and held again;
                    // `settle` offers it to the next waiter.
                    self.fail_delivery(s, id);
                }
            }
            Reserved::Queued { server, position } => {
                // Invariant 6: Queued only below maxqueue; position = waiters
                // already there.
                let len = match server {
                    Some(p) => server_q[p.0],
                    None => backend_q,
                };
                if !hashed {
                    assert_eq!(server.map(|s| s.0), pin, "session {id} queued in the wrong queue");
                }
                assert_eq!(position as usize, len, "queue position of session {id}");
                if gone {
                    self.pool.push(Msg::Cancel { session: id });
                }
            }
            Reserved::Full { .. } | Reserved::NoServer { .. } => {}
        }
        self.settle();
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
            // Invariant 6: a client that leaves frees its place at once.
            let before = self.queue_len(at);
            let (waiter, place) = self.state.cancel(SessionId(id)).expect("cancel of a queued session");
            assert_eq!(waiter, id, "cancel of queued session {id}");
            assert_eq!(place.server_queue, at.is_some(), "session {id} left the queue it waited in");
            assert_eq!(self.queue_len(at), before - 1, "cancel of {id} did not shrink its queue");
            assert!(!self.state.is_queued(SessionId(id)));
            self.sessions.remove(&id);
        } else {
            if let Some(Sess::Queued { gone, .. }) = self.sessions.get_mut(&id) {
                *gone = true;
            }
            self.pool.push(Msg::Cancel { session: id });
        }
    }

    /// A grant says which queue its session waited in.
    fn check_place(&self, session: u64, place: QueuePlace) {
        if let Some(&Sess::Queued { at, .. }) = self.sessions.get(&session) {
            assert_eq!(place.server_queue, at.is_some(), "session {session} granted from the queue it waited in");
        }
    }

    fn queue_len(&self, at: Option<usize>) -> usize {
        match at {
            None => self.state.backend_queue_len(),
            Some(s) => self.state.server_queue_len(ServerId(s)),
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
        // Invariant 5: the Slot guard sends exactly one Release.
        self.pool.push(Msg::Release { server });
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            // BackendQueue's `Dequeue` handler: `released`, then one `credit`
            // per credit (each grant delivered at once), then `settle`.
            Msg::Dequeue { server, credits, released } => {
                self.state.released(ServerId(server), released);
                assert!(self.served[server] >= released, "server {server}: more released than served");
                self.served[server] -= released;
                for _ in 0..credits {
                    let real = self.state.credit(ServerId(server)).map(|g| {
                        assert_eq!(g.waiter, g.session.0);
                        self.check_place(g.session.0, g.queued);
                        (g.server.0, g.session.0)
                    });
                    if let Some(h) = &mut self.held[server] {
                        *h += 1;
                    }
                    let model = self.model_grant_from(server);
                    // Invariant 2/3: the credit goes to the oldest waiter that
                    // can use it, or is held only if nobody can.
                    assert_eq!(real, model.map(|(id, _)| (server, id)), "server {server}'s credit");
                    if let Some((id, true)) = model {
                        self.fail_delivery(server, id);
                    }
                }
                self.settle();
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
                let got = self.state.cancel(SessionId(session));
                match self.sessions.get(&session) {
                    Some(&Sess::Queued { gone: true, at, .. }) => {
                        let (waiter, place) = got.expect("in-flight cancel of a still queued session");
                        assert_eq!(waiter, session, "in-flight cancel of still queued {session}");
                        assert_eq!(place.server_queue, at.is_some(), "session {session} left the queue it waited in");
                        self.sessions.remove(&session);
                    }
                    None => assert_eq!(got, None, "cancel of {session}, granted (or refused) meanwhile"),
                    Some(other) => {
                        panic!("cancel in flight for session {session} in state {other:?}")
                    }
                }
            }
        }
    }

    /// The `ServerStatusChanged` handler: `set_status`, deliver its grants
    /// and refusals (a refused session got NoServer and leaves), `settle`.
    fn set_status(&mut self, server: usize, up: bool, weight: u32, cap: Option<u32>) {
        let s = server % self.n();
        let cap = if self.limited(s) { cap } else { None };
        let new = ServerStatus { up, weight, cap };
        let went_down = self.status[s].up && !up;
        let stranded = if went_down { self.waiters(Some(s)) } else { Vec::new() };

        let (grants, refusals) = self.state.set_status(ServerId(s), new);
        let real_grants: Vec<(usize, u64)> = grants
            .iter()
            .map(|g| {
                assert_eq!(g.waiter, g.session.0);
                (g.server.0, g.session.0)
            })
            .collect();
        let real_refusals: Vec<u64> = refusals
            .iter()
            .map(|r| {
                assert_eq!(r.waiter, r.session.0);
                r.session.0
            })
            .collect();

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
                Outcome::Queued(_) => {}
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
        assert_eq!(
            real_grants,
            model_grants.iter().map(|&(t, id, _)| (t, id)).collect::<Vec<_>>(),
            "set_status({s}, {new:?}) grants"
        );
        assert_eq!(real_refusals, model_refusals, "set_status({s}, {new:?}) refusals");

        // The spec, stated directly.
        assert_eq!(self.state.server_queue_len(ServerId(s)), if up { self.queued_at(Some(s)) } else { 0 });
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
            assert_eq!(self.state.backend_queue_len(), 0, "backend queue left waiting with no usable server");
        }

        for (t, id, gone) in model_grants {
            if gone {
                self.fail_delivery(t, id);
            }
        }
        self.settle();
    }

    /// Deliver every pending message (in send order), then check invariant 2
    /// at rest: no session is queued while a slot it could use is free.
    fn quiesce(&mut self) {
        while !self.pool.is_empty() {
            self.begin();
            let msg = self.pool.remove(0);
            self.deliver(msg);
            self.check();
        }
        let backend_q = self.state.backend_queue_len();
        for s in 0..self.n() {
            let holding = self.holding(s);
            assert_eq!(self.served[s], holding, "server {s} at rest: served = live sessions holding it");
            if self.limited(s) {
                // Invariant 5: at rest every slot not held by a session is
                // back as a credit — none lost, none doubled.
                let maxconn = self.cfg.servers[s].maxconn;
                assert_eq!(self.state.held(ServerId(s)), Some(maxconn - holding), "server {s} at rest");
            }
            // Invariant 2 (work conservation): a usable slot with room under
            // the effective maxconn implies nobody waits who could use it.
            if self.status[s].up && self.has_room(s) {
                let eff = self.eff_max(s, self.load());
                let server_q = self.state.server_queue_len(ServerId(s));
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
            assert_eq!(self.state.served(ServerId(s)), 0);
            if self.limited(s) {
                let maxconn = self.cfg.servers[s].maxconn;
                assert_eq!(self.state.held(ServerId(s)), Some(maxconn));
                assert_eq!(self.servers[s].out(), maxconn);
            }
        }
    }

    /// Invariants after every step.
    fn check(&self) {
        // The struct's own invariant check (work conservation as seen by
        // the BackendQueue, nobody overtakes, maxqueue).
        if let Err(e) = self.state.check() {
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
            let served = self.state.served(ServerId(s));
            assert_eq!(served, self.served[s], "server {s}: served");
            assert_eq!(served, holding + releases + reported, "server {s}: served = sessions + releases in flight");
            assert_eq!(self.state.held(ServerId(s)), self.held[s], "server {s}: held credits");
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
                let held = self.state.held(ServerId(s)).expect("limited server has a credit count");
                // Invariant 1: never more than maxconn connections at the
                // server, counting every slot wherever it is.
                assert!(served <= maxconn, "server {s}: served {served} > maxconn {maxconn}");
                assert!(holding <= maxconn, "server {s}: {holding} sessions > maxconn {maxconn}");
                assert!(
                    holding + held + credits <= maxconn,
                    "server {s}: {holding} sessions + {held} held + {credits} in flight > maxconn {maxconn}"
                );
                assert!(out <= maxconn, "server {s}: out {out} > maxconn {maxconn}");
                // Invariant 5: every slot the Server counts as out is in
                // exactly one place — held by the BackendQueue, held by a
                // session, or in a message (Dequeue or Release) in flight.
                assert_eq!(
                    out,
                    held + holding + credits + releases,
                    "server {s}: out != held {held} + sessions {holding} + credits {credits} + releases {releases}"
                );
            } else {
                assert_eq!(self.state.held(ServerId(s)), None, "unlimited server {s} holds credits");
                assert_eq!(out, 0, "unlimited server {s} counts slots");
                assert_eq!(credits, 0, "unlimited server {s} lends credits");
                assert_eq!(self.state.server_queue_len(ServerId(s)), 0, "unlimited server {s} has a queue");
            }
            // Invariant 6: queues bounded by maxqueue; the struct's queues
            // hold exactly the sessions the simulator thinks are there.
            let server_q = self.state.server_queue_len(ServerId(s));
            assert_eq!(server_q, self.queued_at(Some(s)), "server {s} queue length");
            if self.cfg.servers[s].maxqueue > 0 {
                assert!(server_q <= self.cfg.servers[s].maxqueue as usize, "server {s} queue over maxqueue");
            }
            if !self.status[s].up {
                assert_eq!(server_q, 0, "down server {s} keeps a queue");
            }
        }
        let backend_q = self.state.backend_queue_len();
        assert_eq!(backend_q, self.queued_at(None), "backend queue length");
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
            assert_eq!(self.state.is_queued(SessionId(id)), queued, "session {id} ({s:?})");
        }
        // Invariant 4 stated directly: while the backend queue waits, no
        // balanced server could take a newcomer; a server with its own queue
        // never could.
        for s in 0..n {
            if self.state.server_queue_len(ServerId(s)) > 0 || (backend_q > 0 && self.balanced(s)) {
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

// =====================================================================
// Model 2: admission (AdmissionState, on a fake clock)
// =====================================================================

/// One second in ns; also one token in nano-tokens.
const NANO: i128 = 1_000_000_000;
/// `RateLimiter` counts tokens in f64: at an exact token boundary it may see
/// 0.999… or 1.000…, so the model allows either within this many
/// nano-tokens (1e-6 token).
const TOKEN_SLACK: i128 = 1_000;
/// Slack for instants computed through f64, in ns.
const TIME_SLACK: u64 = 1_000;
/// `RateLimiter::next_token` rounds its wait up to the next whole ms.
const WAKEUP_ROUNDING: u64 = 1_000_000;

/// One rate limiter (`global.maxconnrate` or a frontend's `rate_limit`) as
/// the model sees it: an exact token bucket with burst = rate, in nano-tokens
/// on the fake clock, and the net number of sessions it let through (credits
/// granted minus credits given back), checked against the bucket bound.
#[derive(Debug)]
struct RateModel {
    /// Sessions per second; 0 = unlimited.
    rate: i128,
    /// Tokens × 1e9 at `at` (ns since the start).
    level: i128,
    at: u64,
    /// Credits granted minus credits given back.
    net: i128,
    /// Minimum over every past moment `a` of `net(a)·1e9 − rate·a`.
    lowest: i128,
}

impl RateModel {
    fn new(rate: u32) -> RateModel {
        let rate = i128::from(rate);
        RateModel { rate, level: rate * NANO, at: 0, net: 0, lowest: 0 }
    }

    fn limited(&self) -> bool {
        self.rate > 0
    }

    fn level_at(&self, t: u64) -> i128 {
        let elapsed = i128::from(t - self.at);
        (self.level + elapsed * self.rate).min(self.rate * NANO)
    }

    /// Whole tokens at `t`: the lowest and highest count the struct may see.
    fn available(&self, t: u64) -> (u32, u32) {
        if !self.limited() {
            return (u32::MAX, u32::MAX);
        }
        let level = self.level_at(t);
        let whole = |x: i128| (x.max(0) / NANO) as u32;
        (whole(level - TOKEN_SLACK), whole(level + TOKEN_SLACK))
    }

    /// When the next whole token is there, exactly (ns since the start).
    fn next_token(&self, t: u64) -> u64 {
        let level = self.level_at(t);
        if level >= NANO {
            t
        } else {
            t + ((NANO - level + self.rate - 1) / self.rate) as u64
        }
    }

    fn mark(&mut self, t: u64) {
        self.lowest = self.lowest.min(self.net * NANO - self.rate * i128::from(t));
    }

    fn settle(&mut self, t: u64) {
        self.level = self.level_at(t);
        self.at = t;
        // The moment just before this event starts a window too.
        self.mark(t);
    }

    fn take(&mut self, n: u32, t: u64, name: &str) {
        if !self.limited() {
            return;
        }
        self.settle(t);
        self.level -= i128::from(n) * NANO;
        self.net += i128::from(n);
        // The token-bucket bound, with burst = rate: over any window [a, t]
        // the net number granted is at most rate·(t − a) + rate, i.e.
        // `net(t)·1e9 − rate·t ≤ min_a (net(a)·1e9 − rate·a) + rate·1e9`.
        // (a = the start gives the bound over the whole run.)
        let value = self.net * NANO - self.rate * i128::from(t);
        assert!(
            value - self.lowest <= self.rate * NANO + TOKEN_SLACK,
            "{name}: {} sessions net by {t} ns exceed the bucket bound (rate {}/s, burst {})",
            self.net,
            self.rate,
            self.rate
        );
        self.mark(t);
    }

    fn give_back(&mut self, n: u32, t: u64) {
        if !self.limited() {
            return;
        }
        self.settle(t);
        self.level = (self.level + i128::from(n) * NANO).min(self.rate * NANO);
        self.net -= i128::from(n);
        self.mark(t);
    }
}

#[derive(Debug, Clone)]
enum AOp {
    /// Listener `l` (if idle) asks for up to `want` credits.
    Admit { l: usize, want: u32 },
    /// Listener `l` (if holding credits) accepts up to `k` connections and
    /// gives the rest back.
    Accept { l: usize, k: u32 },
    /// Listener `l` (if holding `n` credits) accepts `k % n`, then
    /// `accept()` fails for lack of fds: `Shortage` (paused for `recheck_ms`)
    /// then `GiveBack` of the rest, as `data_plane/accept.rs` sends them.
    AcceptFails { l: usize, k: u32, recheck_ms: u64 },
    /// An open session (chosen by `pick`) ends.
    Close(usize),
    /// The clock moves `us` microseconds on. `fire`: the watchdog's timer
    /// runs at each `next_wakeup` on the way; otherwise it is late.
    Advance { us: u64, fire: bool },
    /// The watchdog's timer fires: the clock goes to `next_wakeup` (if it
    /// is later), then `recheck`.
    Wake,
    /// The periodic `maxconn_recheck` tick: `recheck` now.
    Tick,
    /// Listener `l` stops and its parked request is forgotten (`unpark`).
    Unpark(usize),
    /// Listener `l` stops silently (drops its reply channel): credits it
    /// holds, or gets later, come back through `give_back`.
    Stop(usize),
}

/// Rates: often unlimited, so count limits and rates both get exercised.
fn rate() -> impl Strategy<Value = u32> {
    prop_oneof![2 => Just(0u32), 3 => 1u32..=5]
}

fn admission_cfg() -> impl Strategy<Value = AdmissionConfig> {
    (
        0u32..=5,
        rate(),
        prop::collection::vec((0u32..=3, rate()), 1..=3),
        prop::collection::vec((0usize..3, 0u32..=3), 1..=6),
    )
        .prop_map(|(global_maxconn, global_rate, frontends, listeners)| {
            let nf = frontends.len();
            AdmissionConfig {
                global_maxconn,
                global_rate,
                frontends: frontends.into_iter().map(|(maxconn, rate)| FrontendLimits { maxconn, rate }).collect(),
                listeners: listeners
                    .into_iter()
                    .map(|(f, maxconn)| ListenerLimits { frontend: FrontendId(f % nf), maxconn })
                    .collect(),
            }
        })
}

fn advance_us() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Within the rounding of a wake-up (next_token rounds up to the ms).
        2 => 0u64..=3_000,
        // Whole milliseconds: lands on exact token boundaries.
        2 => (0u64..=1_000).prop_map(|ms| ms * 1_000),
        1 => 0u64..=2_500_000,
    ]
}

fn admission_op() -> impl Strategy<Value = AOp> {
    prop_oneof![
        6 => (0usize..6, 1u32..=4).prop_map(|(l, want)| AOp::Admit { l, want }),
        5 => (0usize..6, 0u32..=4).prop_map(|(l, k)| AOp::Accept { l, k }),
        1 => (0usize..6, 0u32..=4, 1u64..=300).prop_map(|(l, k, recheck_ms)| AOp::AcceptFails { l, k, recheck_ms }),
        5 => (0usize..64).prop_map(AOp::Close),
        4 => (advance_us(), prop::bool::weighted(0.7)).prop_map(|(us, fire)| AOp::Advance { us, fire }),
        2 => Just(AOp::Wake),
        1 => Just(AOp::Tick),
        1 => (0usize..6).prop_map(AOp::Unpark),
        1 => (0usize..6).prop_map(AOp::Stop),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lst {
    /// Polling; may send an `Admit`.
    Idle,
    /// Got `n` credits, accepting.
    Holding(u32),
    /// Waiting for credits; `dead`: stopped meanwhile (its reply channel is
    /// closed, so a later grant comes back).
    Parked { want: u32, dead: bool },
    /// Resumed after it stopped: the watchdog is giving these credits back.
    Returning(u32),
    /// Stopped for good.
    Gone,
}

fn free(max: u32, used: u32) -> u32 {
    if max == 0 {
        u32::MAX
    } else {
        max.saturating_sub(used)
    }
}

/// What `AdmissionState` may answer for one listener now, per the model.
#[derive(Debug)]
struct RoomModel {
    /// Pause reasons it may give.
    reasons: Vec<PauseReason>,
    /// If it may grant: the lowest and highest room it may see.
    grant: Option<(u32, u32)>,
}

/// The ResourceWatchdog and its listeners, simulated.
struct AdmissionSim {
    cfg: AdmissionConfig,
    state: AdmissionState<usize>,
    /// The fake clock: `base` + `t` ns.
    base: Instant,
    t: u64,
    listeners: Vec<Lst>,
    /// Parked listeners in park order.
    parked: VecDeque<usize>,
    /// Listener of each open session.
    sessions: Vec<usize>,
    /// End of each listener's shortage pause (ns); any close ends them all.
    shortage: Vec<Option<u64>>,
    global_rate: RateModel,
    frontend_rates: Vec<RateModel>,
    /// Limit hits the state must report at the next `take_hits`.
    hits: Vec<LimitHit>,
}

impl AdmissionSim {
    fn new(cfg: AdmissionConfig) -> AdmissionSim {
        let base = Instant::now();
        let sim = AdmissionSim {
            state: AdmissionState::new(&cfg, base),
            base,
            t: 0,
            listeners: vec![Lst::Idle; cfg.listeners.len()],
            parked: VecDeque::new(),
            sessions: Vec::new(),
            shortage: vec![None; cfg.listeners.len()],
            global_rate: RateModel::new(cfg.global_rate),
            frontend_rates: cfg.frontends.iter().map(|f| RateModel::new(f.rate)).collect(),
            hits: Vec::new(),
            cfg,
        };
        sim.check_wakeup();
        sim
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.t)
    }

    /// An instant of the struct's, in ns on the fake clock.
    fn ns(&self, at: Instant) -> u64 {
        let since = at.checked_duration_since(self.base).expect("an instant before the start");
        u64::try_from(since.as_nanos()).expect("fits")
    }

    fn frontend(&self, l: usize) -> usize {
        self.cfg.listeners[l].frontend.0
    }

    /// The simulator's own count: sessions + credits out, on the listeners
    /// that `on` selects.
    fn used_on(&self, on: impl Fn(usize) -> bool) -> u32 {
        let sessions = self.sessions.iter().filter(|&&l| on(l)).count() as u32;
        let credits: u32 = self
            .listeners
            .iter()
            .enumerate()
            .filter(|&(l, _)| on(l))
            .map(|(_, s)| match *s {
                Lst::Holding(n) | Lst::Returning(n) => n,
                _ => 0,
            })
            .sum();
        sessions + credits
    }

    fn global_used(&self) -> u32 {
        self.used_on(|_| true)
    }

    fn frontend_used(&self, f: usize) -> u32 {
        self.used_on(|l| self.frontend(l) == f)
    }

    fn listener_used(&self, l: usize) -> u32 {
        self.used_on(|x| x == l)
    }

    fn is_parked(&self, l: usize) -> bool {
        matches!(self.listeners[l], Lst::Parked { .. })
    }

    /// Why the state says parked listener `l` waits.
    fn pause_reason(&self, l: usize) -> PauseReason {
        match self.state.listener_state(ListenerId(l)) {
            ListenerState::Full => PauseReason::Listener,
            ListenerState::Paused(reason) => {
                assert_ne!(reason, PauseReason::Listener, "listener {l} at bind_maxconn shows as Paused, not Full");
                reason
            }
            ListenerState::Open => panic!("parked listener {l} shows as Open"),
        }
    }

    /// What `admit` (or a resume) may answer for `l` now. The state checks,
    /// in order: shortage, global, frontend and listener maxconn, global
    /// rate, frontend rate; a rate at an exact token boundary may go either
    /// way (f64).
    fn room(&self, l: usize) -> RoomModel {
        if self.shortage[l].is_some_and(|until| until > self.t) {
            return RoomModel { reasons: vec![PauseReason::Shortage], grant: None };
        }
        let f = self.frontend(l);
        let count = |max: u32, used: u32| (free(max, used), free(max, used));
        let checks = [
            (count(self.cfg.global_maxconn, self.global_used()), PauseReason::Global),
            (count(self.cfg.frontends[f].maxconn, self.frontend_used(f)), PauseReason::Frontend),
            (count(self.cfg.listeners[l].maxconn, self.listener_used(l)), PauseReason::Listener),
            (self.global_rate.available(self.t), PauseReason::GlobalRate),
            (self.frontend_rates[f].available(self.t), PauseReason::FrontendRate),
        ];
        let mut reasons = Vec::new();
        let (mut lo, mut hi) = (u32::MAX, u32::MAX);
        for ((low, high), reason) in checks {
            if low == 0 {
                reasons.push(reason);
            }
            if high == 0 {
                return RoomModel { reasons, grant: None };
            }
            lo = lo.min(low.max(1));
            hi = hi.min(high);
        }
        RoomModel { reasons, grant: Some((lo, hi)) }
    }

    fn step(&mut self, op: &AOp) {
        let nl = self.listeners.len();
        match *op {
            AOp::Admit { l, want } => self.admit(l % nl, want),
            AOp::Accept { l, k } => self.accept(l % nl, k),
            AOp::AcceptFails { l, k, recheck_ms } => self.accept_fails(l % nl, k, recheck_ms),
            AOp::Close(pick) => self.close(pick),
            AOp::Advance { us, fire } => self.advance(us, fire),
            AOp::Wake => {
                self.wake();
            }
            // Invariant 7: a listener paused on a count limit resumes on the
            // release itself, so the safety-net tick can only find time-based
            // pauses that are over (`served` checks every resume against the
            // model, and `check` that count pauses are still at their limit).
            AOp::Tick => self.recheck(),
            AOp::Unpark(l) => {
                let l = l % nl;
                let got = self.state.unpark(ListenerId(l));
                if self.is_parked(l) {
                    assert_eq!(got, Some(l), "unpark of parked listener {l}");
                    self.parked.retain(|&p| p != l);
                    self.listeners[l] = Lst::Gone;
                } else {
                    assert_eq!(got, None, "unpark of listener {l} in state {:?}", self.listeners[l]);
                }
            }
            AOp::Stop(l) => {
                let l = l % nl;
                match self.listeners[l] {
                    Lst::Idle | Lst::Gone => self.listeners[l] = Lst::Gone,
                    Lst::Holding(n) => {
                        self.listeners[l] = Lst::Gone;
                        self.give_back(l, n);
                    }
                    Lst::Parked { want, .. } => self.listeners[l] = Lst::Parked { want, dead: true },
                    Lst::Returning(_) => unreachable!("only inside resume"),
                }
            }
        }
        self.check();
    }

    /// `Admit` handler: grant `min(want, room)` at once, or park.
    fn admit(&mut self, l: usize, want: u32) {
        // One Admit in flight per listener (`data_plane/accept.rs`).
        if self.listeners[l] != Lst::Idle {
            return;
        }
        let room = self.room(l);
        match self.state.admit(ListenerId(l), want, l, self.now()) {
            Admitted::Granted(n, waiter) => {
                assert_eq!(waiter, l);
                let Some((lo, hi)) = room.grant else {
                    panic!("listener {l} granted {n}; the model has it blocked by {:?}", room.reasons);
                };
                assert!(
                    n >= want.min(lo) && n <= want.min(hi),
                    "listener {l} granted {n} of {want}; the model's room is {lo}..={hi}"
                );
                self.grant(l, n, false);
            }
            Admitted::Parked(reason) => {
                // Shortage: parked until the recheck or any close; limits:
                // the first one reached, in the state's order.
                assert!(room.reasons.contains(&reason), "listener {l} parked on {reason:?}; the model allows {room:?}");
                if reason != PauseReason::Shortage {
                    let frontend = FrontendId(self.frontend(l));
                    self.hits.push(LimitHit { frontend, listener: ListenerId(l), reason });
                }
                self.listeners[l] = Lst::Parked { want, dead: false };
                self.parked.push_back(l);
            }
        }
    }

    /// `n` credits go to `l` (at `admit` or on a resume): the model's counts
    /// and buckets, and Postfix's rule that reaching a limit is a hit.
    fn grant(&mut self, l: usize, n: u32, returning: bool) {
        let f = self.frontend(l);
        self.listeners[l] = if returning { Lst::Returning(n) } else { Lst::Holding(n) };
        self.global_rate.take(n, self.t, "global rate");
        self.frontend_rates[f].take(n, self.t, &format!("frontend {f} rate"));
        let reached = [
            (self.cfg.global_maxconn, self.global_used(), PauseReason::Global),
            (self.cfg.frontends[f].maxconn, self.frontend_used(f), PauseReason::Frontend),
            (self.cfg.listeners[l].maxconn, self.listener_used(l), PauseReason::Listener),
        ];
        if let Some(&(_, _, reason)) = reached.iter().find(|&&(max, used, _)| max > 0 && used >= max) {
            self.hits.push(LimitHit { frontend: FrontendId(f), listener: ListenerId(l), reason });
        }
    }

    /// The accept loop: use `k` of the credits, give the rest back.
    fn accept(&mut self, l: usize, k: u32) {
        let Lst::Holding(n) = self.listeners[l] else {
            return;
        };
        let used = k.min(n);
        self.sessions.extend(std::iter::repeat_n(l, used as usize));
        self.listeners[l] = Lst::Idle;
        if used < n {
            self.give_back(l, n - used);
        }
    }

    /// The accept loop when `accept()` fails with EMFILE & co.: `Shortage`,
    /// then `GiveBack` of the unused credits.
    fn accept_fails(&mut self, l: usize, k: u32, recheck_ms: u64) {
        let Lst::Holding(n) = self.listeners[l] else {
            return;
        };
        let used = k % n;
        self.sessions.extend(std::iter::repeat_n(l, used as usize));
        self.listeners[l] = Lst::Idle;
        self.state.shortage(ListenerId(l), self.now(), Duration::from_millis(recheck_ms));
        self.shortage[l] = Some(self.t + recheck_ms * 1_000_000);
        let frontend = FrontendId(self.frontend(l));
        self.hits.push(LimitHit { frontend, listener: ListenerId(l), reason: PauseReason::Shortage });
        self.give_back(l, n - used);
    }

    /// `GiveBack`: `n` credits of `l`, no longer counted by the model, come
    /// back (to the buckets too: the sessions never happened).
    fn give_back(&mut self, l: usize, n: u32) {
        let f = self.frontend(l);
        self.global_rate.give_back(n, self.t);
        self.frontend_rates[f].give_back(n, self.t);
        let resumed = self.state.give_back(ListenerId(l), n, self.now());
        self.resume(resumed);
    }

    fn close(&mut self, pick: usize) {
        if self.sessions.is_empty() {
            return;
        }
        let l = self.sessions.remove(pick % self.sessions.len());
        // Its fds are free: every shortage pause ends.
        self.shortage.fill(None);
        let resumed = self.state.session_closed(ListenerId(l), self.now());
        self.resume(resumed);
    }

    /// `ResourceWatchdog::resume`: the batch is checked against the model of
    /// `serve_parked`; credits of listeners that stopped meanwhile come back
    /// (last first, as the watchdog pops them) and may resume more.
    fn resume(&mut self, resumed: Vec<Resumed<usize>>) {
        let mut pending = self.served(resumed);
        while let Some((l, n)) = pending.pop() {
            if self.listeners[l] == Lst::Returning(n) {
                self.listeners[l] = Lst::Gone;
                let f = self.frontend(l);
                self.global_rate.give_back(n, self.t);
                self.frontend_rates[f].give_back(n, self.t);
                let more = self.state.give_back(ListenerId(l), n, self.now());
                pending.extend(self.served(more));
            }
        }
    }

    /// One `serve_parked` pass, replayed on the model: parked listeners are
    /// tried in park order (resumed listeners come in park order); each gets
    /// `min(want, room)` credits or stays parked on a reason the model
    /// allows — so nobody is skipped while it has room. Returns the resumed
    /// ones, in order.
    fn served(&mut self, resumed: Vec<Resumed<usize>>) -> Vec<(usize, u32)> {
        let mut resumed = resumed.into_iter().peekable();
        let mut out = Vec::new();
        let order: Vec<usize> = self.parked.iter().copied().collect();
        for l in order {
            let Lst::Parked { want, dead } = self.listeners[l] else {
                unreachable!("the model's parked list holds parked listeners");
            };
            let room = self.room(l);
            match resumed.next_if(|r| r.listener.0 == l) {
                Some(r) => {
                    assert_eq!(r.waiter, l);
                    let f = self.frontend(l);
                    assert_eq!(r.frontend, FrontendId(f), "listener {l} resumed on another frontend");
                    let Some((lo, hi)) = room.grant else {
                        panic!(
                            "listener {l} resumed with {}; the model has it blocked by {:?}",
                            r.granted, room.reasons
                        );
                    };
                    assert!(
                        r.granted >= want.min(lo) && r.granted <= want.min(hi),
                        "listener {l} resumed with {} of {want}; the model's room is {lo}..={hi}",
                        r.granted
                    );
                    self.parked.retain(|&p| p != l);
                    self.grant(l, r.granted, dead);
                    out.push((l, r.granted));
                }
                None => {
                    let reason = self.pause_reason(l);
                    assert!(
                        room.reasons.contains(&reason),
                        "listener {l} left parked on {reason:?}; the model allows {room:?}"
                    );
                }
            }
        }
        if let Some(r) = resumed.next() {
            panic!("listener {} resumed out of park order, or not parked", r.listener.0);
        }
        out
    }

    /// `recheck(now)`: the watchdog's timer or its `maxconn_recheck` tick.
    fn recheck(&mut self) {
        let resumed = self.state.recheck(self.now());
        self.resume(resumed);
        // Every time-based pause over by now was served (or is blocked
        // anew): the next one ends strictly later.
        if let Some(w) = self.state.next_wakeup(self.now()) {
            assert!(self.ns(w) > self.t, "after recheck at {} ns, next_wakeup is {} ns", self.t, self.ns(w));
        }
    }

    /// The watchdog's timer fires at `next_wakeup` (or now, if late): a
    /// listener parked on a rate or shortage is resumed there, or is blocked
    /// again on a reason the model allows (`served`).
    fn wake(&mut self) -> bool {
        let Some(w) = self.state.next_wakeup(self.now()) else {
            return false;
        };
        self.check_wakeup();
        self.t = self.t.max(self.ns(w));
        self.recheck();
        true
    }

    fn advance(&mut self, us: u64, fire: bool) {
        let target = self.t + us * 1_000;
        if fire {
            // Each recheck moves next_wakeup strictly later (by at least a
            // ms for a rate), so this ends.
            while let Some(w) = self.state.next_wakeup(self.now()) {
                if self.ns(w) > target {
                    break;
                }
                self.wake();
                self.check();
            }
        }
        self.t = target;
    }

    /// `next_wakeup` (the watchdog's timer) is set exactly while a listener
    /// is parked on a rate or a shortage, for when the first such pause ends:
    /// never early, late only by `next_token`'s rounding up to the ms.
    fn check_wakeup(&self) {
        let ends: Vec<u64> = self
            .parked
            .iter()
            .filter_map(|&l| match self.pause_reason(l) {
                PauseReason::GlobalRate => Some(self.global_rate.next_token(self.t)),
                PauseReason::FrontendRate => Some(self.frontend_rates[self.frontend(l)].next_token(self.t)),
                PauseReason::Shortage => Some(self.shortage[l].expect("a shortage pause the model knows")),
                _ => None,
            })
            .collect();
        let wakeup = self.state.next_wakeup(self.now()).map(|w| self.ns(w));
        match (ends.iter().min(), wakeup) {
            (None, None) => {}
            (Some(&end), Some(w)) => assert!(
                w + TIME_SLACK >= end && w <= end + WAKEUP_ROUNDING + TIME_SLACK,
                "next_wakeup at {w} ns; the first time-based pause ends at {end} ns (now {} ns)",
                self.t
            ),
            (end, w) => {
                panic!("next_wakeup {w:?} ns; first time-based pause ends at {end:?} ns (parked {:?})", self.parked)
            }
        }
    }

    fn check(&mut self) {
        let now = self.now();
        assert_eq!(self.state.take_hits(), std::mem::take(&mut self.hits), "limit hits");
        // Invariant 7: the simulator's count (sessions + credits out) is
        // what the state counts, and never exceeds a limit: global, frontend
        // or listener (bind_maxconn).
        let global = self.global_used();
        assert_eq!(self.state.global_used(), global, "global used");
        if self.cfg.global_maxconn > 0 {
            assert!(global <= self.cfg.global_maxconn, "global {global} > maxconn {}", self.cfg.global_maxconn);
        }
        for (f, limits) in self.cfg.frontends.iter().enumerate() {
            let used = self.frontend_used(f);
            assert_eq!(self.state.frontend_used(FrontendId(f)), used, "frontend {f} used");
            if limits.maxconn > 0 {
                assert!(used <= limits.maxconn, "frontend {f}: {used} > maxconn {}", limits.maxconn);
            }
        }
        for (l, limits) in self.cfg.listeners.iter().enumerate() {
            let used = self.listener_used(l);
            assert_eq!(self.state.listener_used(ListenerId(l)), used, "listener {l} used");
            if limits.maxconn > 0 {
                assert!(used <= limits.maxconn, "listener {l}: {used} > bind_maxconn {}", limits.maxconn);
            }
        }
        let parked: Vec<usize> = self.state.parked().map(|l| l.0).collect();
        assert_eq!(parked, self.parked.iter().copied().collect::<Vec<_>>(), "parked listeners, in order");
        for l in 0..self.listeners.len() {
            if !self.is_parked(l) {
                assert!(!self.parked.contains(&l), "listener {l} in the parked list but {:?}", self.listeners[l]);
                assert_eq!(self.state.listener_state(ListenerId(l)), ListenerState::Open, "listener {l}");
                continue;
            }
            assert!(self.parked.contains(&l), "listener {l} parked in the model only");
            let f = self.frontend(l);
            let at_max = |max: u32, used: u32| max > 0 && used >= max;
            match self.pause_reason(l) {
                // Invariant 7: paused listeners resume as soon as capacity
                // returns, so one parked on a count limit still has it
                // reached.
                PauseReason::Global => assert!(
                    at_max(self.cfg.global_maxconn, global),
                    "listener {l} paused on global maxconn with {global} of {} used",
                    self.cfg.global_maxconn
                ),
                PauseReason::Frontend => assert!(
                    at_max(self.cfg.frontends[f].maxconn, self.frontend_used(f)),
                    "listener {l} paused on frontend {f}'s maxconn with room"
                ),
                PauseReason::Listener => assert!(
                    at_max(self.cfg.listeners[l].maxconn, self.listener_used(l)),
                    "listener {l} FULL below its bind_maxconn"
                ),
                // Time-based pauses end on the timer (`check_wakeup`), which
                // may not have run yet (it is late, or `next_token` rounded
                // it up): a rate pause may be over already.
                PauseReason::GlobalRate | PauseReason::FrontendRate => {}
                PauseReason::Shortage => {
                    assert!(self.shortage[l].is_some(), "listener {l} paused on a shortage the model ended");
                }
            }
        }
        // The struct's own check: limits, nobody parked on a count limit
        // while it has room (time-based pauses wait for `recheck`).
        if let Err(e) = self.state.check(now) {
            panic!("AdmissionState::check: {e}");
        }
        self.check_wakeup();
    }

    fn holding_any(&self) -> bool {
        self.listeners.iter().any(|s| matches!(s, Lst::Holding(_)))
    }

    /// End of a case: give every credit back and close every session, round
    /// after round, letting the clock run to each `next_wakeup` when nothing
    /// is in use; every parked listener must get served and everything must
    /// come back to zero.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            for l in 0..self.listeners.len() {
                if let Lst::Holding(_) = self.listeners[l] {
                    self.accept(l, 0);
                    self.check();
                }
            }
            while !self.sessions.is_empty() {
                self.close(self.sessions.len() - 1);
                self.check();
            }
            if self.holding_any() {
                continue;
            }
            if self.parked.is_empty() {
                break;
            }
            // Nothing in use: only a time-based pause can hold a listener
            // back, and the timer must be set for it.
            assert!(self.wake(), "listeners {:?} parked with nothing in use and no timer", self.parked);
            self.check();
        }
        assert!(self.parked.is_empty(), "listeners still parked: {:?}", self.parked);
        assert!(!self.holding_any());
        assert_eq!(self.state.global_used(), 0, "global used after draining");
        for f in 0..self.cfg.frontends.len() {
            assert_eq!(self.state.frontend_used(FrontendId(f)), 0, "frontend {f} used after draining");
        }
        for l in 0..self.cfg.listeners.len() {
            assert_eq!(self.state.listener_used(ListenerId(l)), 0, "listener {l} used after draining");
        }
        assert_eq!(self.state.next_wakeup(self.now()), None);
        assert_eq!(self.state.check(self.now()), Ok(()));
    }
}

proptest! {
    #![proptest_config(config())]

    /// Model 2: random limits (global, frontend and listener maxconn;
    /// global and frontend rates) and listeners, random interleavings of
    /// admits, accepts, shortages, closes, clock moves, timer wake-ups,
    /// rechecks and stops.
    #[test]
    fn admission(cfg in admission_cfg(), ops in prop::collection::vec(admission_op(), 0..MAX_OPS)) {
        let mut sim = AdmissionSim::new(cfg);
        for op in &ops {
            sim.step(op);
        }
        sim.drain();
    }
}

/// A rate pause that is over but not yet rechecked is no error for `check`
/// (which the ResourceWatchdog asserts after every message): `next_token`
/// sets the timer up to a millisecond after the token is back, and the timer
/// may be late, so another listener's message can be handled in between.
#[test]
fn check_excepts_time_based_pauses() {
    let t = Instant::now();
    let config = AdmissionConfig {
        global_maxconn: 0,
        global_rate: 0,
        frontends: vec![FrontendLimits { maxconn: 0, rate: 3 }, FrontendLimits { maxconn: 0, rate: 0 }],
        listeners: vec![
            ListenerLimits { frontend: FrontendId(0), maxconn: 0 },
            ListenerLimits { frontend: FrontendId(1), maxconn: 0 },
        ],
    };
    let mut a: AdmissionState<()> = AdmissionState::new(&config, t);
    assert!(matches!(a.admit(ListenerId(0), 3, (), t), Admitted::Granted(3, ())));
    assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Parked(PauseReason::FrontendRate)));
    // 3/s: the next token is back at t + 333.3 ms; the timer is for 334 ms.
    let wake = a.next_wakeup(t).expect("a timer for the rate pause");
    let now = t + Duration::from_micros(333_500);
    assert!(now < wake, "timer at {:?}", wake - t);
    // Listener 1 (another frontend) is admitted meanwhile; the watchdog
    // then asserts check(now).
    assert!(matches!(a.admit(ListenerId(1), 1, (), now), Admitted::Granted(1, ())));
    assert_eq!(a.check(now), Ok(()));
    // The timer resumes it.
    let resumed = a.recheck(wake);
    assert_eq!(resumed.iter().map(|r| (r.listener, r.granted)).collect::<Vec<_>>(), vec![(ListenerId(0), 1)]);
    assert_eq!(a.check(wake), Ok(()));
}

// =====================================================================
// WarningThrottle and StressState
// =====================================================================

/// Warning causes as the watchdog keys them: a reason and whose limit.
const CAUSES: [(PauseReason, usize); 4] =
    [(PauseReason::Global, 0), (PauseReason::Frontend, 0), (PauseReason::Frontend, 1), (PauseReason::Shortage, 2)];

proptest! {
    #![proptest_config(config())]

    /// A cause is logged at most once per interval (its first hit at once),
    /// each log line carries the occurrences since the previous one, and
    /// every occurrence is counted exactly once; causes are independent.
    #[test]
    fn warning_throttle(
        interval_ms in 0u64..=10,
        hits in prop::collection::vec((0usize..CAUSES.len(), 0u64..=6), 0..MAX_OPS),
    ) {
        let base = Instant::now();
        let mut throttle = WarningThrottle::new(Duration::from_millis(interval_ms));
        // Per cause: time of the last log line (ms), hits since, hits logged.
        let mut last_log: [Option<u64>; CAUSES.len()] = [None; CAUSES.len()];
        let mut pending = [0u64; CAUSES.len()];
        let mut logged = [0u64; CAUSES.len()];
        let mut total = [0u64; CAUSES.len()];
        let mut t = 0;
        for (c, dt) in hits {
            t += dt;
            total[c] += 1;
            pending[c] += 1;
            let got = throttle.hit(CAUSES[c], base + Duration::from_millis(t));
            let due = last_log[c].is_none_or(|at| t - at >= interval_ms);
            if due {
                prop_assert_eq!(got, Some(pending[c]), "cause {:?} at {} ms", CAUSES[c], t);
                logged[c] += pending[c];
                pending[c] = 0;
                last_log[c] = Some(t);
            } else {
                prop_assert_eq!(got, None, "cause {:?} at {} ms, last logged at {:?}", CAUSES[c], t, last_log[c]);
            }
        }
        for c in 0..CAUSES.len() {
            prop_assert_eq!(logged[c] + pending[c], total[c]);
        }
    }
}

#[derive(Debug, Clone)]
enum SOp {
    /// `dt_ms` later, a limit is hit on frontend `f`.
    Hit { f: usize, dt_ms: u64 },
    /// `dt_ms` later, the watchdog expires stress periods.
    Expire { dt_ms: u64 },
}

fn stress_op() -> impl Strategy<Value = SOp> {
    prop_oneof![
        (0usize..3, 0u64..=8).prop_map(|(f, dt_ms)| SOp::Hit { f, dt_ms }),
        (0u64..=8).prop_map(|dt_ms| SOp::Expire { dt_ms }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Per frontend: stress is entered on a hit (reported once), and left
    /// only at an `expire` a full cooldown after the last hit; a zero
    /// cooldown disables it; `next_expiry` is the earliest end.
    #[test]
    fn stress_state(
        cooldowns_ms in prop::collection::vec(prop_oneof![1 => Just(0u64), 3 => 1u64..=20], 1..=3),
        ops in prop::collection::vec(stress_op(), 0..MAX_OPS),
    ) {
        let base = Instant::now();
        let n = cooldowns_ms.len();
        let cooldowns: Vec<Duration> = cooldowns_ms.iter().map(|&ms| Duration::from_millis(ms)).collect();
        let mut stress = StressState::new(&cooldowns);
        // Per frontend: while in stress, the time of its last hit (ms).
        let mut last_hit: Vec<Option<u64>> = vec![None; n];
        // Every hit, to check a leave against the whole history.
        let mut hits: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut t = 0;
        for op in ops {
            match op {
                SOp::Hit { f, dt_ms } => {
                    let f = f % n;
                    t += dt_ms;
                    hits[f].push(t);
                    let got = stress.hit(FrontendId(f), base + Duration::from_millis(t));
                    if cooldowns_ms[f] == 0 {
                        prop_assert_eq!(got, None, "frontend {} has stress disabled", f);
                    } else {
                        let expected = last_hit[f].is_none().then_some(StressChange::Entered(FrontendId(f)));
                        prop_assert_eq!(got, expected, "hit on frontend {} at {} ms", f, t);
                        last_hit[f] = Some(t);
                    }
                }
                SOp::Expire { dt_ms } => {
                    t += dt_ms;
                    let got = stress.expire(base + Duration::from_millis(t));
                    let mut expected = Vec::new();
                    for f in 0..n {
                        if last_hit[f].is_some_and(|h| t - h >= cooldowns_ms[f]) {
                            last_hit[f] = None;
                            expected.push(StressChange::Left(FrontendId(f)));
                        }
                    }
                    prop_assert_eq!(&got, &expected, "expire at {} ms", t);
                    for change in got {
                        let StressChange::Left(FrontendId(f)) = change else { unreachable!() };
                        // A full cooldown without a hit.
                        prop_assert!(hits[f].iter().all(|&h| t - h >= cooldowns_ms[f]), "frontend {} left early", f);
                    }
                }
            }
            for (f, last) in last_hit.iter().enumerate() {
                prop_assert_eq!(stress.in_stress(FrontendId(f)), last.is_some(), "frontend {} at {} ms", f, t);
            }
            let next = last_hit.iter().zip(&cooldowns_ms).filter_map(|(h, c)| h.map(|h| h + c)).min();
            prop_assert_eq!(stress.next_expiry(), next.map(|ms| base + Duration::from_millis(ms)));
        }
    }
}
