//! Seeded random interleavings of a backend's traffic with reloads that add,
//! change and remove servers (`QueueCore::reconfigure`, the BackendQueue's
//! own reload code), against the Servers' own slot ledgers. A reload comes
//! whole or, as a big backend's update does, in parts: server changes
//! alone and the backend's settings alone, with traffic between them
//! (`QueueCore::reconfigure_part`).
//!
//! What must hold at every step, whatever the order:
//! - `BackendState::check` (no usable credit while someone waits, queues
//!   within bounds, a removed server neither queues nor holds credits);
//! - no server ever serves more sessions than its maxconn, counted by its
//!   own ledger (slots it lent minus slots given back);
//! - a removed server is never granted again;
//! - every session is accounted for exactly once: served, refused, waiting
//!   or cancelled — a reload never loses a waiting session;
//! - while the backend is paused nobody is granted, and neither a pause nor
//!   a resume refuses anyone; a resume serves the waiters in queue order;
//! - a reload that lowers the backend's maxqueue below its queue evicts
//!   nobody, and the queue takes nobody more until it is below it.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{queue_core, Reply, Sessions, TestWaiter};
use proptest::prelude::*;
use usher_core::backend::balance::SmoothRoundRobin;
use usher_core::backend::queue_core::ServerChange;
use usher_core::backend::{
    BackendReconfig, BackendSetup, BalancerUpdate, QueueCore, QueueKey, ReserveRequest, ServerSetup,
};
use usher_core::ids::{ServerId, SessionId};

#[derive(Debug, Clone)]
enum Op {
    Arrive,
    /// The session at this index (mod the served ones) ends.
    End(usize),
    /// The waiting session at this index (mod) leaves.
    Leave(usize),
    /// A reload adds a server with this maxconn.
    Add(u32, Part),
    /// A reload removes the live server at this index (mod).
    Remove(usize, Part),
    /// A reload changes the maxconn of the live server at this index (mod).
    Resize(usize, u32, Part),
    /// The part of a reload with the backend's settings (this backend
    /// maxqueue, 0 = none) and a new balancer, and no server change.
    Settings(u32),
    /// An operator pauses (`true`) or resumes the backend.
    Pause(bool),
}

/// How a reload's server change reaches the queue.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// With the backend's settings and a new balancer, as one message.
    Whole,
    /// Alone: one part of a big update.
    ServersOnly,
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![Just(Part::Whole), Just(Part::ServersOnly)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Arrive),
        4 => any::<usize>().prop_map(Op::End),
        1 => any::<usize>().prop_map(Op::Leave),
        1 => ((1u32..4), part()).prop_map(|(m, p)| Op::Add(m, p)),
        1 => (any::<usize>(), part()).prop_map(|(i, p)| Op::Remove(i, p)),
        1 => (any::<usize>(), 1u32..4, part()).prop_map(|(i, m, p)| Op::Resize(i, m, p)),
        1 => (0u32..4).prop_map(Op::Settings),
        1 => any::<bool>().prop_map(Op::Pause),
    ]
}

/// A Server's slot ledger, as the Server actor keeps it.
struct Ledger {
    maxconn: u32,
    /// Slots lent to the BackendQueue or held by sessions.
    out: u32,
    removed: bool,
}

struct Model {
    queue: QueueCore<TestWaiter>,
    sessions: Sessions,
    ledgers: Vec<Ledger>,
    /// Served sessions and their server.
    served: BTreeMap<u64, usize>,
    waiting: BTreeSet<u64>,
    refused: u64,
    cancelled: u64,
    next: u64,
    paused: bool,
    /// Sessions in the order they were granted.
    grants: Vec<u64>,
    /// The backend's maxqueue in force (0: none).
    maxqueue: u32,
}

impl Model {
    fn new() -> Model {
        let setups = [setup(2), setup(1)];
        let queue = queue_core(&setups, backend(), Box::new(SmoothRoundRobin::new(2)));
        let mut m = Model {
            queue,
            sessions: Sessions::default(),
            ledgers: setups.iter().map(|s| Ledger { maxconn: s.maxconn, out: 0, removed: false }).collect(),
            served: BTreeMap::new(),
            waiting: BTreeSet::new(),
            refused: 0,
            cancelled: 0,
            next: 0,
            paused: false,
            grants: Vec::new(),
            maxqueue: 0,
        };
        for i in 0..m.ledgers.len() {
            m.lend_free(i, 0);
        }
        m
    }

    /// The Server lends its free slots (and reports `released`): a `Dequeue`.
    fn lend_free(&mut self, i: usize, released: u32) {
        let ledger = &mut self.ledgers[i];
        let free = ledger.maxconn.saturating_sub(ledger.out);
        ledger.out += free;
        let _ = self.queue.dequeue(ServerId(i), free, released);
        // Credits a removed server lends are dropped by the BackendState:
        // they stay "out" in its ledger, which is what keeps it bounded.
        self.hear();
    }

    /// What the sessions heard from the queue (nobody is gone here).
    fn hear(&mut self) {
        for heard in self.sessions.heard() {
            assert!(heard.delivered);
            let session = heard.session;
            match heard.reply {
                Reply::Granted { server, .. } => self.granted(server, session),
                Reply::Full | Reply::SourceFull | Reply::SourceBusy | Reply::Shed { .. } | Reply::NoServer { .. } => {
                    assert!(self.waiting.remove(&session), "refused a session that was not waiting");
                    self.refused += 1;
                }
                Reply::Left { .. } => {
                    assert!(self.waiting.remove(&session), "cancelled a session that was not waiting");
                    self.cancelled += 1;
                }
            }
        }
    }

    /// A reload of `change`, whole (new settings and balancer for every
    /// server id too) or as a part with the server change alone.
    fn reload(&mut self, change: ServerChange<()>, part: Part) {
        let _ = match part {
            Part::Whole => self.queue.reconfigure(self.backend(), Some(self.balancer()), vec![change]),
            Part::ServersOnly => self.queue.reconfigure_part(vec![change], None),
        };
        self.hear();
    }

    /// The backend's settings now (its maxqueue may have been changed).
    fn backend(&self) -> BackendSetup {
        BackendSetup { maxqueue: self.maxqueue, ..backend() }
    }

    fn balancer(&self) -> Box<dyn usher_core::backend::balance::Balancer> {
        Box::new(SmoothRoundRobin::new(self.ledgers.len()))
    }

    fn granted(&mut self, server: usize, session: u64) {
        assert!(!self.ledgers[server].removed, "session {session} granted on removed server {server}");
        assert!(!self.paused, "session {session} granted while the backend is paused");
        self.grants.push(session);
        assert!(self.waiting.remove(&session), "granted session {session}, which was not waiting");
        self.served.insert(session, server);
        // Its own ledger bounds it: slots out never exceed maxconn (a lowered
        // maxconn only stops lending until enough come back).
        let serving = self.served.values().filter(|s| **s == server).count() as u32;
        assert!(serving <= self.ledgers[server].out, "server {server} serves {serving} > slots it lent");
    }

    /// Pauses or resumes; neither refuses anyone, and a resume grants in
    /// queue order (arrival order here: one class, no offsets).
    fn set_paused(&mut self, paused: bool) {
        let refused = self.refused;
        let before = self.grants.len();
        self.paused = paused;
        let _ = self.queue.set_paused(paused);
        self.hear();
        assert_eq!(self.refused, refused, "a pause or resume refused a waiting session");
        let granted = &self.grants[before..];
        assert!(granted.windows(2).all(|w| w[0] < w[1]), "a resume granted out of queue order: {granted:?}");
        if !paused {
            if let Some(last) = granted.last() {
                assert!(self.waiting.iter().all(|w| w > last), "a resume skipped an older waiter");
            }
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.ledgers.len()).filter(|&i| !self.ledgers[i].removed).collect()
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Arrive => {
                let id = self.next;
                self.next += 1;
                let req = ReserveRequest {
                    session: SessionId(id),
                    key: QueueKey { class: 0, time_ms: id as i64, seq: id },
                    client: None,
                    pin: None,
                    avoid: None,
                };
                self.waiting.insert(id);
                let before = self.queue.state().backend_queue_len();
                let _ = self.queue.reserve(req, self.sessions.waiter(id));
                self.hear();
                // A lowered maxqueue evicts nobody but admits nobody more.
                if self.maxqueue > 0 && before >= self.maxqueue as usize {
                    assert!(self.queue.state().backend_queue_len() <= before, "the queue grew past its maxqueue");
                }
            }
            Op::End(k) => {
                let Some((&session, &server)) = self.served.iter().nth(k % self.served.len().max(1)) else { return };
                self.served.remove(&session);
                let ledger = &mut self.ledgers[server];
                ledger.out -= 1;
                self.lend_free(server, 1);
            }
            Op::Leave(k) => {
                let Some(&session) = self.waiting.iter().nth(k % self.waiting.len().max(1)) else { return };
                let _ = self.queue.cancel(SessionId(session));
                self.hear();
            }
            Op::Add(maxconn, part) => {
                let id = ServerId(self.ledgers.len());
                self.ledgers.push(Ledger { maxconn, out: 0, removed: false });
                self.reload(ServerChange::Add { id, info: (), setup: setup(maxconn) }, part);
                assert_eq!(self.queue.state().servers(), self.ledgers.len(), "ids are handed out in order");
                self.lend_free(id.0, 0);
            }
            Op::Remove(k, part) => {
                let live = self.live();
                // Keep one server: with none, waiting sessions are refused,
                // which the refusal count covers elsewhere.
                if live.len() < 2 {
                    return;
                }
                let server = live[k % live.len()];
                self.ledgers[server].removed = true;
                self.reload(ServerChange::Remove { id: ServerId(server) }, part);
            }
            Op::Resize(k, maxconn, part) => {
                let live = self.live();
                let server = live[k % live.len()];
                self.reload(ServerChange::Update { id: ServerId(server), info: Some(()), setup: setup(maxconn) }, part);
                self.ledgers[server].maxconn = maxconn;
                self.lend_free(server, 0);
            }
            Op::Pause(paused) => self.set_paused(paused),
            Op::Settings(maxqueue) => {
                self.maxqueue = maxqueue;
                let backend =
                    BackendReconfig { setup: self.backend(), balancer: BalancerUpdate::Replace(self.balancer()) };
                let _ = self.queue.reconfigure_part(Vec::new(), Some(backend));
                self.hear();
            }
        }
        if let Err(e) = self.queue.state().check() {
            panic!("BackendState::check: {e}");
        }
        let accounted = self.served.len() as u64 + self.waiting.len() as u64 + self.refused + self.cancelled;
        assert!(accounted <= self.next, "sessions counted twice");
    }
}

fn setup(maxconn: u32) -> ServerSetup {
    ServerSetup { maxconn, weight: 1, maxqueue: 0, backup: false, minconn: 0 }
}

fn backend() -> BackendSetup {
    BackendSetup { maxqueue: 0, redispatch: false, fullconn: 0, ..BackendSetup::default() }
}

/// The example behind the model's pause checks: two servers with free
/// slots, a pause, three arrivals, a resume.
#[test]
fn a_pause_grants_nothing_and_a_resume_serves_the_queue_in_order() {
    let mut m = Model::new();
    m.apply(Op::Pause(true));
    for _ in 0..3 {
        m.apply(Op::Arrive);
    }
    assert!(m.served.is_empty(), "granted while paused");
    assert_eq!(m.waiting.len(), 3);
    // A reload while paused keeps the pause.
    m.apply(Op::Add(2, Part::Whole));
    assert!(m.served.is_empty(), "a reload lifted the pause");
    m.apply(Op::Pause(false));
    assert_eq!(m.grants, vec![0, 1, 2]);
    assert!(m.waiting.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn reloads_interleaved_with_traffic_keep_every_invariant(ops in proptest::collection::vec(op(), 1..200)) {
        let mut m = Model::new();
        let mut ended = 0u64;
        for op in ops {
            if matches!(op, Op::End(_)) && !m.served.is_empty() {
                ended += 1;
            }
            m.apply(op);
        }
        // Nobody is left waiting while a live server has a free slot: let
        // every session end, and the queue must drain to the last waiter.
        m.set_paused(false);
        while let Some((&session, &server)) = m.served.iter().next() {
            m.served.remove(&session);
            m.ledgers[server].out -= 1;
            m.lend_free(server, 1);
            ended += 1;
        }
        prop_assert!(m.waiting.is_empty(), "{} sessions still wait with every slot free", m.waiting.len());
        prop_assert_eq!(ended + m.refused + m.cancelled, m.next, "every session is accounted for once");
    }
}

/// A reload that changes only a backend's servers keeps a balancer that
/// follows server changes — a round robin goes on with its rotation — and
/// replaces one that does not (static-rr, built from the configured
/// weights), which starts over.
#[test]
fn a_reload_of_servers_only_keeps_a_balancer_that_follows_them() {
    for (name, first, replacement, next) in [
        ("roundrobin", SmoothRoundRobin::new(2), SmoothRoundRobin::new(3), 1),
        (
            "static-rr",
            SmoothRoundRobin::with_static_weights(&[1, 1]),
            SmoothRoundRobin::with_static_weights(&[1, 1, 1]),
            0,
        ),
    ] {
        let mut m = Model::new();
        let installed = BackendReconfig { setup: m.backend(), balancer: BalancerUpdate::Replace(Box::new(first)) };
        let _ = m.queue.reconfigure_part(Vec::new(), Some(installed));
        m.apply(Op::Arrive);
        assert_eq!(m.served.values().copied().collect::<Vec<_>>(), vec![0], "{name}: the first pick");
        // The part with the backend's settings after a part adding a server.
        m.apply(Op::Add(1, Part::ServersOnly));
        let settings =
            BackendReconfig { setup: m.backend(), balancer: BalancerUpdate::ServersChanged(Box::new(replacement)) };
        let _ = m.queue.reconfigure_part(Vec::new(), Some(settings));
        m.hear();
        m.apply(Op::Arrive);
        assert_eq!(m.served.get(&1), Some(&next), "{name}: the pick after the reload");
    }
}
