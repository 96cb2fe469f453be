//! The built-in balancers keep indexes (ordered sets, a Fenwick tree, a
//! ring) fed incrementally by the BackendQueue; this model checks them
//! against plain references that look at every candidate on every pick,
//! as the algorithms did before they had indexes.
//!
//! Random histories drive the real `QueueCore` over `BackendState` (the
//! structs the BackendQueue actor runs): arrivals (some from a retry
//! avoiding a server, some pinned), closes, clients leaving their queue,
//! status changes (down, weight, slowstart cap), backups, dynamic maxconn,
//! a backend maxconn, pauses, and reloads adding, changing and removing
//! servers or installing a fresh balancer. Every pick the core asks of the
//! balancer under test is also asked of the reference, over the same
//! candidates (`Servers::iter`, O(n)), and must be the same, ties
//! included:
//!
//! - `first` and `source` (with and without bounded load): the reference
//!   is the previous O(n) code, unchanged;
//! - `roundrobin`, `static-rr` and `leastconn`: a pick that changes every
//!   server's state (nginx's smooth round robin, which `leastconn` used for
//!   ties) cannot be indexed, so they moved to virtual-time deadlines
//!   (earliest deadline first, as HAProxy's weighted round robin); the
//!   reference is the same rule by a scan over every candidate;
//! - `random`: its draws cannot match a reference's draw for draw (an
//!   index draws over other numbers), so the model checks the availability
//!   rule instead — it picks a server that can take the session, and picks
//!   one whenever one can — and `random_draws_follow_the_weights` checks
//!   the distribution.
//!
//! The core's own choices by load (a retry's server queue when every other
//! server is busy, a hashed session redispatched off its full server) come
//! from an index too; after every step, for every pair of servers it may
//! be told to keep off, its answers equal a scan of every candidate
//! (`least_loaded`, the O(n) code it replaced).
//!
//! After every step the core's own `check()` holds (which recounts what is
//! kept incrementally) and no pick of a built-in was refused by the core.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use common::{proptest_config, queue_core, Reply, Sessions, TestWaiter};
use proptest::prelude::*;
use usher_core::backend::balance::{
    Balancer, Candidate, Choice, ConsistentHash, First, LeastConn, PowerOfChoices, Servers, SmoothRoundRobin,
};
use usher_core::backend::queue_core::ServerChange;
use usher_core::backend::{BackendSetup, BackendState, QueueCore, QueueKey, ReserveRequest, ServerSetup, ServerStatus};
use usher_core::ids::{ServerId, SessionId};

// =====================================================================
// References: every candidate, every pick
// =====================================================================

/// A plain O(n) balancing rule over the candidates of one pick.
trait Reference: Send {
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice>;
}

/// `first`, as it was: the first available candidate in id order.
struct FirstRef;

impl Reference for FirstRef {
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        candidates.iter().find(|c| c.available).map(|c| Choice::Balanced(c.id))
    }
}

/// Weighted round robin by virtual-time deadlines (earliest first, ties to
/// the lower id), by a scan; with `by_load`, least load / weight first and
/// deadlines among equals (`leastconn`).
struct DeadlineRef {
    deadlines: Vec<u128>,
    clock: u128,
    fixed: Option<Vec<u32>>,
    by_load: bool,
}

impl DeadlineRef {
    fn new(fixed: Option<Vec<u32>>, by_load: bool) -> DeadlineRef {
        DeadlineRef { deadlines: Vec::new(), clock: 0, fixed, by_load }
    }

    fn weight(&self, c: &Candidate) -> u32 {
        match &self.fixed {
            Some(fixed) if c.weight > 0 => fixed.get(c.id.0).copied().filter(|&w| w > 0).unwrap_or(c.weight),
            _ => c.weight,
        }
    }

    fn deadline(&self, i: usize) -> u128 {
        self.deadlines.get(i).copied().unwrap_or(0)
    }
}

impl Reference for DeadlineRef {
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        let mut best: Option<&Candidate> = None;
        for c in candidates.iter().filter(|c| c.available && c.weight > 0) {
            let better = match best {
                None => true,
                Some(b) => {
                    let ratio = if self.by_load {
                        (u64::from(c.load) * u64::from(b.weight)).cmp(&(u64::from(b.load) * u64::from(c.weight)))
                    } else {
                        std::cmp::Ordering::Equal
                    };
                    ratio.then(self.deadline(c.id.0).cmp(&self.deadline(b.id.0))).then(c.id.cmp(&b.id)).is_lt()
                }
            };
            if better {
                best = Some(c);
            }
        }
        let best = *best?;
        let i = best.id.0;
        if self.deadlines.len() <= i {
            self.deadlines.resize(i + 1, 0);
        }
        let weight = if self.by_load { best.weight } else { self.weight(&best) };
        self.clock = self.clock.max(self.deadlines[i]);
        self.deadlines[i] = self.clock + (1u128 << 64) / u128::from(weight.max(1));
        Some(Choice::Balanced(best.id))
    }
}

/// `source`, as it was: the ring rebuilt whenever the usable servers or
/// their weights change, a binary search, and the bounded-load walk.
struct HashRef {
    balance_factor: u32,
    ring: Vec<(u64, ServerId)>,
    built_for: Vec<(u32, bool)>,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn client_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            mix((bits >> 64) as u64 ^ mix(bits as u64))
        }
    }
}

impl Reference for HashRef {
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice> {
        let shape: Vec<(u32, bool)> = candidates.iter().map(|c| (c.weight, c.usable)).collect();
        if shape != self.built_for {
            self.ring.clear();
            for c in candidates.iter().filter(|c| c.usable && c.weight > 0) {
                for k in 0..c.weight.saturating_mul(64) {
                    self.ring.push((mix(((c.id.0 as u64) << 32) ^ u64::from(k)), c.id));
                }
            }
            self.ring.sort_unstable();
            self.built_for = shape;
        }
        if self.ring.is_empty() {
            return None;
        }
        let h = client.map(client_hash).unwrap_or(0);
        let start = self.ring.partition_point(|(p, _)| *p < h) % self.ring.len();
        let home = self.ring[start].1;
        if self.balance_factor == 0 {
            return Some(Choice::Pinned(home));
        }
        let usable: Vec<&Candidate> = candidates.iter().filter(|c| c.usable && c.weight > 0).collect();
        let total: u64 = usable.iter().map(|c| u64::from(c.load)).sum::<u64>() + 1;
        let bound = (total * u64::from(self.balance_factor)).div_ceil(100 * usable.len() as u64).max(1);
        let mut seen = vec![false; candidates.len()];
        for k in 0..self.ring.len() {
            let id = self.ring[(start + k) % self.ring.len()].1;
            if std::mem::replace(&mut seen[id.0], true) {
                continue;
            }
            if u64::from(candidates[id.0].load) < bound {
                return Some(Choice::Pinned(id));
            }
        }
        Some(Choice::Pinned(home))
    }
}

/// No exact reference (random draws): only whether a pick was possible.
struct AnyAvailable;

impl Reference for AnyAvailable {
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        candidates.iter().find(|c| c.available).map(|c| Choice::Balanced(c.id))
    }
}

/// The core's choice by load, as a scan: among the candidates that `only`
/// accepts (and with a weight), the least load relative to weight; ties
/// to the lowest id.
fn least_loaded(candidates: &[Candidate], only: impl Fn(&Candidate) -> bool) -> Option<ServerId> {
    let mut best: Option<&Candidate> = None;
    for c in candidates.iter().filter(|c| c.weight > 0 && only(c)) {
        // load_c / w_c < load_b / w_b, without division.
        let better = best.is_none_or(|b| {
            (u64::from(c.load) + 1) * u64::from(b.weight) < (u64::from(b.load) + 1) * u64::from(c.weight)
        });
        if better {
            best = Some(c);
        }
    }
    best.map(|c| c.id)
}

/// The core's load index answers as the scan does, for every pair of
/// servers to keep off (each one, none, or the same twice).
fn load_order_matches_the_scan(state: &BackendState<TestWaiter>) -> Result<(), String> {
    let candidates = state.candidates();
    let ids = std::iter::once(None).chain((0..candidates.len()).map(|i| Some(ServerId(i))));
    for x in ids.clone() {
        for y in ids.clone() {
            let not = [x, y];
            let other = |c: &Candidate| !not.contains(&Some(c.id));
            let usable = least_loaded(&candidates, |c| c.usable && other(c));
            let available = least_loaded(&candidates, |c| c.available && other(c));
            let any = candidates.iter().any(|c| c.usable && other(c));
            let got = (state.least_loaded_other(false, not), state.least_loaded_other(true, not));
            if got != ((usable, any), (available, any)) {
                return Err(format!(
                    "not {not:?}: index {got:?}, scan usable {usable:?} available {available:?} any {any}, \
                     candidates {candidates:?}"
                ));
            }
        }
    }
    Ok(())
}

// =====================================================================
// The balancer under test, checked pick by pick
// =====================================================================

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    First,
    RoundRobin,
    StaticRr,
    LeastConn,
    Random(u64),
    Source(u32),
}

impl Kind {
    fn build(self, weights: &[u32]) -> (Box<dyn Balancer>, Box<dyn Reference>) {
        match self {
            Kind::First => (Box::new(First::default()), Box::new(FirstRef)),
            Kind::RoundRobin => {
                (Box::new(SmoothRoundRobin::new(weights.len())), Box::new(DeadlineRef::new(None, false)))
            }
            Kind::StaticRr => (
                Box::new(SmoothRoundRobin::with_static_weights(weights)),
                Box::new(DeadlineRef::new(Some(weights.to_vec()), false)),
            ),
            Kind::LeastConn => (Box::new(LeastConn::default()), Box::new(DeadlineRef::new(None, true))),
            Kind::Random(seed) => (Box::new(PowerOfChoices::new(2, seed)), Box::new(AnyAvailable)),
            Kind::Source(factor) => (
                Box::new(ConsistentHash::new(factor)),
                Box::new(HashRef { balance_factor: factor, ring: Vec::new(), built_for: Vec::new() }),
            ),
        }
    }

    fn exact(self) -> bool {
        !matches!(self, Kind::Random(_))
    }
}

type Mismatches = Arc<Mutex<Vec<String>>>;

/// Asks both the balancer and the reference; records any difference.
struct Oracle {
    inner: Box<dyn Balancer>,
    reference: Box<dyn Reference>,
    exact: bool,
    picks: u64,
    mismatches: Mismatches,
}

impl Balancer for Oracle {
    fn pick(&mut self, servers: &Servers<'_>, client: Option<IpAddr>) -> Option<Choice> {
        let candidates: Vec<Candidate> = servers.iter().collect();
        let got = self.inner.pick(servers, client);
        let want = self.reference.pick(&candidates, client);
        self.picks += 1;
        let same = if self.exact { got == want } else { got.is_some() == want.is_some() };
        let fits = match got {
            Some(Choice::Balanced(id)) => candidates.get(id.0).is_some_and(|c| c.available),
            Some(Choice::Pinned(id)) => candidates.get(id.0).is_some_and(|c| c.usable),
            None => true,
        };
        if !same || !fits {
            self.mismatches
                .lock()
                .unwrap()
                .push(format!("pick {}: got {got:?}, reference {want:?}, candidates {candidates:?}", self.picks));
        }
        got
    }

    fn candidate_changed(&mut self, server: ServerId, servers: &Servers<'_>) {
        self.inner.candidate_changed(server, servers);
    }

    fn only_balances(&self) -> bool {
        self.inner.only_balances()
    }
}

// =====================================================================
// Histories
// =====================================================================

#[derive(Debug, Clone)]
struct ServerCfg {
    maxconn: u32,
    weight: u32,
    maxqueue: u32,
    backup: bool,
    minconn: u32,
}

impl ServerCfg {
    fn setup(&self) -> ServerSetup {
        ServerSetup {
            maxconn: self.maxconn,
            weight: self.weight,
            maxqueue: self.maxqueue,
            backup: self.backup,
            minconn: self.minconn,
        }
    }
}

fn server_cfg() -> impl Strategy<Value = ServerCfg> {
    (0u32..4, 0u32..5, 0u32..3, prop::bool::weighted(0.25), prop_oneof![3 => Just(0u32), 1 => 1u32..3]).prop_map(
        |(maxconn, weight, maxqueue, backup, minconn)| ServerCfg { maxconn, weight, maxqueue, backup, minconn },
    )
}

#[derive(Debug, Clone)]
enum Op {
    /// A new session from client `client`; a retry avoiding `avoid`, or
    /// pinned to `pin`.
    Arrive {
        client: u8,
        avoid: Option<u8>,
        pin: Option<u8>,
    },
    /// The `k`-th session holding a slot closes.
    Close {
        k: u8,
    },
    /// The `k`-th waiting session leaves its queue.
    Leave {
        k: u8,
    },
    /// A Server reports its state (down, weight, slowstart cap).
    Status {
        server: u8,
        up: bool,
        weight: u8,
        cap: Option<u8>,
    },
    Pause(bool),
    /// A reload adds a server.
    Add(ServerCfg),
    /// A reload changes a server's role or minconn (not its maxqueue: a
    /// reload lowering it below the queue's length is another matter).
    Update {
        server: u8,
        backup: bool,
        minconn: u8,
    },
    /// A reload removes a server.
    Remove {
        server: u8,
    },
    /// A reload installs a fresh balancer (and reference).
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), prop::option::weighted(0.2, any::<u8>()), prop::option::weighted(0.05, any::<u8>()))
            .prop_map(|(client, avoid, pin)| Op::Arrive { client, avoid, pin }),
        6 => any::<u8>().prop_map(|k| Op::Close { k }),
        1 => any::<u8>().prop_map(|k| Op::Leave { k }),
        2 => (any::<u8>(), prop::bool::weighted(0.8), 0u8..5, prop::option::weighted(0.2, 0u8..3))
            .prop_map(|(server, up, weight, cap)| Op::Status { server, up, weight, cap }),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => server_cfg().prop_map(Op::Add),
        1 => (any::<u8>(), any::<bool>(), 0u8..3).prop_map(|(server, backup, minconn)| Op::Update { server, backup, minconn }),
        1 => any::<u8>().prop_map(|server| Op::Remove { server }),
        1 => Just(Op::Rebuild),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::First),
        Just(Kind::RoundRobin),
        Just(Kind::StaticRr),
        Just(Kind::LeastConn),
        any::<u64>().prop_map(Kind::Random),
        Just(Kind::Source(0)),
        Just(Kind::Source(125)),
    ]
}

/// The backend: the core, the sessions' side, and what the Servers lend.
struct Model {
    kind: Kind,
    setup: BackendSetup,
    core: QueueCore<TestWaiter>,
    sessions: Sessions,
    servers: Vec<ServerCfg>,
    removed: Vec<bool>,
    next: u64,
    /// Sessions holding a slot: their server.
    holding: BTreeMap<u64, usize>,
    /// Sessions waiting in a queue.
    waiting: Vec<u64>,
    mismatches: Mismatches,
}

impl Model {
    fn new(kind: Kind, servers: Vec<ServerCfg>, setup: BackendSetup) -> Model {
        let mismatches = Mismatches::default();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        let setups: Vec<ServerSetup> = servers.iter().map(ServerCfg::setup).collect();
        let oracle = Model::oracle(kind, &weights, &mismatches);
        let mut m = Model {
            kind,
            setup,
            core: queue_core(&setups, setup, oracle),
            sessions: Sessions::default(),
            removed: vec![false; servers.len()],
            servers,
            next: 1,
            holding: BTreeMap::new(),
            waiting: Vec::new(),
            mismatches,
        };
        for i in 0..m.servers.len() {
            // `Server::started`: every slot is lent at once.
            let _ = m.core.dequeue(ServerId(i), m.servers[i].maxconn, 0);
        }
        m.hear();
        m
    }

    fn oracle(kind: Kind, weights: &[u32], mismatches: &Mismatches) -> Box<dyn Balancer> {
        let (inner, reference) = kind.build(weights);
        Box::new(Oracle { inner, reference, exact: kind.exact(), picks: 0, mismatches: mismatches.clone() })
    }

    fn hear(&mut self) {
        for heard in self.sessions.heard() {
            self.waiting.retain(|&w| w != heard.session);
            if let Reply::Granted { server, .. } = heard.reply {
                self.holding.insert(heard.session, server);
            }
        }
    }

    fn server(&self, n: u8) -> usize {
        usize::from(n) % self.servers.len()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Arrive { client, avoid, pin } => {
                let id = self.next;
                self.next += 1;
                let avoid = avoid.map(|a| ServerId(self.server(a)));
                let pin = pin.map(|p| ServerId(self.server(p)));
                let client = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, client)));
                let req =
                    ReserveRequest { session: SessionId(id), key: QueueKey::fifo(SessionId(id)), client, pin, avoid };
                let decided = self.core.reserve(req, self.sessions.waiter(id));
                if matches!(decided, usher_core::backend::Reserved::Queued { .. }) {
                    self.waiting.push(id);
                }
            }
            Op::Close { k } => {
                if self.holding.is_empty() {
                    return;
                }
                let session = *self.holding.keys().nth(usize::from(k) % self.holding.len()).unwrap();
                let server = self.holding.remove(&session).unwrap();
                let credit = u32::from(self.servers[server].maxconn > 0 && !self.removed[server]);
                let _ = self.core.dequeue(ServerId(server), credit, 1);
            }
            Op::Leave { k } => {
                if self.waiting.is_empty() {
                    return;
                }
                let session = self.waiting[usize::from(k) % self.waiting.len()];
                self.sessions.leave(session);
                let _ = self.core.cancel(SessionId(session));
            }
            Op::Status { server, up, weight, cap } => {
                let s = self.server(server);
                let status = ServerStatus { up, weight: u32::from(weight), cap: cap.map(u32::from) };
                let _ = self.core.status_changed(ServerId(s), status);
            }
            Op::Pause(paused) => {
                let _ = self.core.set_paused(paused);
            }
            Op::Add(ref cfg) => {
                if self.servers.len() >= 8 {
                    return;
                }
                let id = ServerId(self.servers.len());
                self.servers.push(cfg.clone());
                self.removed.push(false);
                let change = ServerChange::Add { id, info: (), setup: cfg.setup() };
                let _ = self.core.reconfigure(self.setup(), None, vec![change]);
                let _ = self.core.dequeue(id, cfg.maxconn, 0);
            }
            Op::Update { server, backup, minconn } => {
                let s = self.server(server);
                if self.removed[s] {
                    return;
                }
                let cfg = &mut self.servers[s];
                cfg.backup = backup;
                cfg.minconn = u32::from(minconn);
                let change = ServerChange::Update { id: ServerId(s), info: Some(()), setup: cfg.setup() };
                let _ = self.core.reconfigure(self.setup(), None, vec![change]);
            }
            Op::Remove { server } => {
                let s = self.server(server);
                if self.removed[s] {
                    return;
                }
                self.removed[s] = true;
                let _ = self.core.reconfigure(self.setup(), None, vec![ServerChange::Remove { id: ServerId(s) }]);
            }
            Op::Rebuild => {
                let weights: Vec<u32> = self.servers.iter().map(|s| s.weight).collect();
                let oracle = Model::oracle(self.kind, &weights, &self.mismatches);
                let _ = self.core.reconfigure(self.setup(), Some(oracle), Vec::new());
            }
        }
        self.hear();
    }

    /// The backend's settings stay as they started.
    fn setup(&self) -> BackendSetup {
        self.setup
    }
}

fn backend_setup() -> impl Strategy<Value = BackendSetup> {
    (0u32..4, any::<bool>(), prop_oneof![2 => Just(0u32), 1 => 2u32..8], prop_oneof![3 => Just(0u32), 1 => 2u32..6])
        .prop_map(|(maxqueue, redispatch, fullconn, maxconn)| BackendSetup {
            maxqueue,
            redispatch,
            fullconn,
            maxconn,
            ..BackendSetup::default()
        })
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Every pick of every built-in equals its reference's for the same
    /// history (or, for `random`, follows the availability rule).
    #[test]
    fn every_pick_matches_the_reference(
        kind in kind(),
        servers in prop::collection::vec(server_cfg(), 1..6),
        setup in backend_setup(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut m = Model::new(kind, servers, setup);
        for (step, op) in ops.iter().enumerate() {
            m.apply(op);
            prop_assert_eq!(m.core.state().check(), Ok(()), "step {} {:?}", step, op);
            prop_assert_eq!(load_order_matches_the_scan(m.core.state()), Ok(()), "step {} {:?}", step, op);
            let mismatches = m.mismatches.lock().unwrap().clone();
            prop_assert!(mismatches.is_empty(), "step {} {:?}: {:?}", step, op, mismatches);
            prop_assert_eq!(m.core.state().bad_picks(), 0, "step {} {:?}: a built-in pick was refused", step, op);
        }
    }
}

/// `random`'s draws follow the weights (its exact picks have no reference):
/// idle traffic over weights 1, 2, 3, 0 gives shares within 5 %, and
/// never the weight-0 server.
#[test]
fn random_draws_follow_the_weights() {
    let weights = [1u32, 2, 3, 0];
    let servers: Vec<ServerCfg> = weights
        .iter()
        .map(|&weight| ServerCfg { maxconn: 0, weight, maxqueue: 0, backup: false, minconn: 0 })
        .collect();
    let mut m = Model::new(Kind::Random(11), servers, BackendSetup::default());
    let mut count = [0u32; 4];
    for i in 0..12_000u32 {
        m.apply(&Op::Arrive { client: (i % 256) as u8, avoid: None, pin: None });
        let (&session, &server) = m.holding.iter().next().expect("granted at once");
        count[server] += 1;
        m.holding.remove(&session);
        let _ = m.core.dequeue(ServerId(server), 0, 1);
        m.hear();
    }
    println!("random, weights {weights:?}: {count:?}");
    assert_eq!(count[3], 0);
    for s in 0..3 {
        let want = 12_000.0 * f64::from(weights[s]) / 6.0;
        let off = (f64::from(count[s]) - want).abs() / want;
        assert!(off <= 0.05, "server {s}: {} picks, want {want:.0} ±5 % ({count:?})", count[s]);
    }
}
