//! Model-based tests of the bookkeeping structs, with no actix and no sockets.
//!
//! The actors are thin shells over `BackendState`, `ServerState` and
//! `AdmissionState` (see `src/bookkeeping.rs`). Here a small simulator plays
//! the actors' part: it keeps the messages that would be in flight between
//! them in an explicit pool and lets proptest choose, step by step, which
//! pending message is delivered next or which new event happens (a session
//! arrives, leaves its queue, closes; a listener asks for admission, accepts,
//! stops...). After every step the simulator checks the invariants of
//! `/work/shared/design.md` ("Invariants", numbered 1–7 below) against its
//! own independent record of where every slot and every waiter is.
//!
//! Model 1 (`backend_slots`): one backend = `BackendState` (the BackendQueue
//! actor) + one `ServerState` per server (the Server actors), driven by the
//! `Dequeue` / `Release` / `CancelReserve` protocol of `actors/server.rs`
//! and `actors/backend_queue.rs`.
//!
//! Model 2 (`admission`): `AdmissionState` (the ResourceWatchdog actor)
//! driven by listeners that follow the protocol of `data_plane/accept.rs`
//! and `actors/watchdog.rs` (at most one `Admit` outstanding per listener).
//!
//! proptest seeds randomly and saves failing seeds next to this file
//! (`bookkeeping_model.proptest-regressions`, replayed first on later runs);
//! set `PROPTEST_CASES` to run more than the 1024 cases per property.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use usher_core::balance::{Balancer, Candidate, SmoothRoundRobin};
use usher_core::bookkeeping::backend_state::ServerSetup;
use usher_core::bookkeeping::{
    AdmissionState, Admitted, BackendState, PauseReason, QueueKey, ReserveRequest, Reserved, Resumed, ServerState,
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
}

#[derive(Debug, Clone, Copy)]
enum BalancerKind {
    /// The production balancer.
    RoundRobin,
    /// Any available server, chosen pseudo-randomly from this seed: the
    /// invariants must not depend on which balancer is plugged in.
    Scripted(u64),
}

#[derive(Debug, Clone)]
struct BackendCfg {
    servers: Vec<ServerCfg>,
    /// Backend queue's maxqueue, 0 = unlimited.
    maxqueue: u32,
    balancer: BalancerKind,
}

/// A balancer that picks any available candidate (xorshift over a seed).
struct ScriptedBalancer {
    state: u64,
}

impl Balancer for ScriptedBalancer {
    fn pick(&mut self, candidates: &[Candidate]) -> Option<ServerId> {
        let available: Vec<ServerId> =
            candidates.iter().filter(|c| c.available && c.weight > 0).map(|c| c.id).collect();
        if available.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Some(available[(self.state % available.len() as u64) as usize])
    }
}

/// A message in flight between the actors.
#[derive(Debug, Clone, Copy)]
enum Msg {
    /// Server -> BackendQueue: `credits` free slots lent.
    Dequeue { server: usize, credits: u32 },
    /// Session's `Slot` guard -> Server: one slot given back.
    Release { server: usize },
    /// Session -> BackendQueue: `CancelReserve` (client gone, queue timeout).
    Cancel { session: u64 },
}

/// What the simulator knows of a live session (finished ones are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sess {
    /// Waiting in the backend queue (`at == None`) or in a server's queue.
    /// `gone`: its client left and a `Cancel` is in flight; a grant sent to
    /// it fails and the BackendQueue offers the slot again.
    Queued { at: Option<usize>, gone: bool },
    /// Holds one slot of this server (connected or connecting).
    Holding(usize),
}

#[derive(Debug, Clone)]
enum BOp {
    /// Deliver pending message number `i % pool.len()`.
    Deliver(usize),
    /// A new session asks for a slot. `pin`: 15 means a server id that does
    /// not exist, otherwise taken modulo the number of servers. `gone`: its
    /// client left before the `Reserve` was handled.
    Arrive { pin: Option<usize>, avoid: Option<usize>, gone: bool },
    /// A queued (live) session leaves its queue: at once (`CancelReserve`
    /// handled right away) or with its `CancelReserve` left in flight.
    Leave { pick: usize, at_once: bool },
    /// A session holding a slot ends; its `Release` goes in flight.
    Close(usize),
    /// Deliver every pending message and check work conservation.
    Quiesce,
}

fn backend_cfg() -> impl Strategy<Value = BackendCfg> {
    (
        prop::collection::vec((0u32..=3, 0u32..=3, 0u32..=3), 1..=4),
        // Force all weights to 0 now and then (a random draw rarely does
        // with 3–4 servers): balanced reserves must answer NoServer.
        prop::bool::weighted(0.15),
        0u32..=4,
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(servers, all_zero, maxqueue, scripted)| BackendCfg {
            servers: servers
                .into_iter()
                .map(|(maxconn, weight, maxqueue)| ServerCfg {
                    maxconn,
                    weight: if all_zero { 0 } else { weight },
                    maxqueue,
                })
                .collect(),
            maxqueue,
            balancer: match scripted {
                None => BalancerKind::RoundRobin,
                Some(seed) => BalancerKind::Scripted(seed | 1),
            },
        })
}

fn backend_op() -> impl Strategy<Value = BOp> {
    prop_oneof![
        6 => (0usize..1024).prop_map(BOp::Deliver),
        5 => (
            prop::option::weighted(0.3, 0usize..16),
            prop::option::weighted(0.2, 0usize..4),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(pin, avoid, gone)| BOp::Arrive { pin, avoid, gone }),
        2 => (0usize..64, any::<bool>()).prop_map(|(pick, at_once)| BOp::Leave { pick, at_once }),
        3 => (0usize..64).prop_map(BOp::Close),
        1 => Just(BOp::Quiesce),
    ]
}

/// What `reserve` must answer, computed by the simulator beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Granted,
    Queued,
    Full,
    NoServer,
}

/// `maxqueue == 0` means unlimited.
fn queue_full(maxqueue: u32, len: usize) -> bool {
    maxqueue > 0 && len >= maxqueue as usize
}

/// The BackendQueue actor, its Servers, and the sessions, simulated.
struct BackendSim {
    cfg: BackendCfg,
    state: BackendState<u64>,
    servers: Vec<ServerState>,
    /// Messages in flight, in no particular order (proptest picks).
    pool: Vec<Msg>,
    /// Live sessions by id; ids grow in arrival order (FIFO keys).
    sessions: BTreeMap<u64, Sess>,
    next_id: u64,
    /// Last session granted from the backend queue / each server queue
    /// (0 = none yet; ids start at 1).
    last_from_backend_queue: u64,
    last_from_server_queue: Vec<u64>,
}

impl BackendSim {
    fn new(cfg: BackendCfg) -> BackendSim {
        let setups: Vec<ServerSetup> = cfg
            .servers
            .iter()
            .map(|s| ServerSetup { maxconn: s.maxconn, weight: s.weight, maxqueue: s.maxqueue })
            .collect();
        let balancer: Box<dyn Balancer> = match cfg.balancer {
            BalancerKind::RoundRobin => Box::new(SmoothRoundRobin::new(setups.len())),
            BalancerKind::Scripted(seed) => Box::new(ScriptedBalancer { state: seed }),
        };
        let state = BackendState::new(&setups, cfg.maxqueue, balancer);
        let mut sim = BackendSim {
            servers: cfg.servers.iter().map(|s| ServerState::new(s.maxconn)).collect(),
            last_from_server_queue: vec![0; cfg.servers.len()],
            cfg,
            state,
            pool: Vec::new(),
            sessions: BTreeMap::new(),
            next_id: 1,
            last_from_backend_queue: 0,
        };
        // `Server::started`: every free slot is lent at once.
        for (i, server) in sim.servers.iter_mut().enumerate() {
            let credits = server.lend_free();
            assert_eq!(credits, sim.cfg.servers[i].maxconn, "server {i} lends all its slots at start");
            if credits > 0 {
                sim.pool.push(Msg::Dequeue { server: i, credits });
            }
        }
        sim.check();
        sim
    }

    fn n(&self) -> usize {
        self.cfg.servers.len()
    }

    fn balanced(&self, s: usize) -> bool {
        self.cfg.servers[s].weight > 0
    }

    fn limited(&self, s: usize) -> bool {
        self.cfg.servers[s].maxconn > 0
    }

    /// Server `s` could take a newcomer right now, as BackendState sees it:
    /// a credit held (or unlimited) and nobody queued for it.
    fn usable(&self, s: usize) -> bool {
        self.state.held(ServerId(s)) != Some(0) && self.state.server_queue_len(ServerId(s)) == 0
    }

    fn holding(&self, s: usize) -> u32 {
        self.sessions.values().filter(|&&x| x == Sess::Holding(s)).count() as u32
    }

    fn queued_at(&self, at: Option<usize>) -> usize {
        self.sessions.values().filter(|x| matches!(x, Sess::Queued { at: a, .. } if *a == at)).count()
    }

    fn step(&mut self, op: &BOp) {
        match *op {
            BOp::Deliver(i) => {
                if !self.pool.is_empty() {
                    let msg = self.pool.remove(i % self.pool.len());
                    self.deliver(msg);
                }
            }
            BOp::Arrive { pin, avoid, gone } => self.arrive(pin, avoid, gone),
            BOp::Leave { pick, at_once } => self.leave(pick, at_once),
            BOp::Close(pick) => self.close(pick),
            BOp::Quiesce => self.quiesce(),
        }
        self.check();
    }

    /// The `Reserve` handler of the BackendQueue.
    fn arrive(&mut self, pin: Option<usize>, avoid: Option<usize>, gone: bool) {
        let n = self.n();
        let id = self.next_id;
        self.next_id += 1;
        let pin = pin.map(|p| if p == 15 { n } else { p % n });
        let avoid = avoid.map(|a| a % n);

        // Snapshot before the call.
        let backend_q = self.state.backend_queue_len();
        let server_q: Vec<usize> = (0..n).map(|s| self.state.server_queue_len(ServerId(s))).collect();
        let usable: Vec<bool> = (0..n).map(|s| self.usable(s)).collect();
        let balanced_usable: Vec<bool> = (0..n).map(|s| self.balanced(s) && usable[s]).collect();

        let expect = match pin {
            Some(p) if p >= n => Expect::NoServer,
            Some(p) if usable[p] => Expect::Granted,
            Some(p) if queue_full(self.cfg.servers[p].maxqueue, server_q[p]) => Expect::Full,
            Some(_) => Expect::Queued,
            // "NoServer: no server can ever take it (all weights 0)".
            None if !(0..n).any(|s| self.balanced(s)) => Expect::NoServer,
            None if balanced_usable.iter().any(|&u| u) => Expect::Granted,
            None if queue_full(self.cfg.maxqueue, backend_q) => Expect::Full,
            None => Expect::Queued,
        };

        let req = ReserveRequest {
            session: SessionId(id),
            key: QueueKey::fifo(SessionId(id)),
            pin: pin.map(ServerId),
            avoid: avoid.map(ServerId),
        };
        match self.state.reserve(req, id) {
            Reserved::Granted { server, waiter } => {
                assert_eq!(expect, Expect::Granted, "session {id} granted {server:?}");
                assert_eq!(waiter, id);
                let s = server.0;
                // Invariant 4 (nobody overtakes): a newcomer never gets a
                // server with its own queue non-empty, nor a balanced server
                // while the backend queue waits.
                assert_eq!(server_q[s], 0, "newcomer {id} overtook server {s}'s queue");
                if self.balanced(s) {
                    assert_eq!(backend_q, 0, "newcomer {id} overtook the backend queue on server {s}");
                }
                // Invariant 1/5: only a held credit (or an unlimited server)
                // can be granted.
                assert!(usable[s], "newcomer {id} granted server {s} without a free slot");
                match pin {
                    Some(p) => assert_eq!(s, p, "pinned session granted another server"),
                    None => {
                        assert!(self.balanced(s), "balanced session granted weight-0 server {s}");
                        if avoid == Some(s) {
                            let others = (0..n).any(|o| o != s && balanced_usable[o]);
                            assert!(!others, "session {id} granted avoided server {s} though others were free");
                        }
                    }
                }
                if gone {
                    // `deliver` fails: the slot is disarmed and offered again.
                    self.offer(s);
                } else {
                    self.sessions.insert(id, Sess::Holding(s));
                }
            }
            Reserved::Queued { server, position } => {
                assert_eq!(expect, Expect::Queued, "session {id} queued in {server:?}");
                assert_eq!(server.map(|s| s.0), pin, "session {id} queued in the wrong queue");
                // Invariant 6: Queued only below maxqueue; position = waiters
                // already there.
                let len = match pin {
                    Some(p) => server_q[p],
                    None => backend_q,
                };
                assert_eq!(position as usize, len, "queue position of session {id}");
                self.sessions.insert(id, Sess::Queued { at: pin, gone });
                if gone {
                    self.pool.push(Msg::Cancel { session: id });
                }
            }
            Reserved::Full { waiter } => {
                // Invariant 6: a full queue answers Full at once.
                assert_eq!(expect, Expect::Full, "session {id} refused Full");
                assert_eq!(waiter, id);
            }
            Reserved::NoServer { waiter } => {
                assert_eq!(expect, Expect::NoServer, "session {id} refused NoServer");
                assert_eq!(waiter, id);
            }
        }
    }

    fn leave(&mut self, pick: usize, at_once: bool) {
        let live: Vec<(u64, Option<usize>)> = self
            .sessions
            .iter()
            .filter_map(|(&id, s)| match *s {
                Sess::Queued { at, gone: false } => Some((id, at)),
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
            assert_eq!(self.state.cancel(SessionId(id)), Some(id), "cancel of queued session {id}");
            assert_eq!(self.queue_len(at), before - 1, "cancel of {id} did not shrink its queue");
            assert!(!self.state.is_queued(SessionId(id)));
            self.sessions.remove(&id);
        } else {
            self.sessions.insert(id, Sess::Queued { at, gone: true });
            self.pool.push(Msg::Cancel { session: id });
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
            // BackendQueue's `Dequeue` handler: one offer per credit.
            Msg::Dequeue { server, credits } => {
                for _ in 0..credits {
                    self.offer(server);
                }
            }
            // Server's `Release` handler: the slot is lent again at once.
            Msg::Release { server } => {
                let credits = self.servers[server].release();
                let expected = u32::from(self.limited(server));
                assert_eq!(credits, expected, "server {server} lends back what was released");
                if credits > 0 {
                    self.pool.push(Msg::Dequeue { server, credits });
                }
            }
            // BackendQueue's `CancelReserve` handler.
            Msg::Cancel { session } => {
                let got = self.state.cancel(SessionId(session));
                match self.sessions.get(&session) {
                    Some(Sess::Queued { gone: true, .. }) => {
                        assert_eq!(got, Some(session), "in-flight cancel of still queued {session}");
                        self.sessions.remove(&session);
                    }
                    None => assert_eq!(got, None, "cancel of {session}, granted (and re-offered) meanwhile"),
                    Some(other) => {
                        panic!("cancel in flight for session {session} in state {other:?}")
                    }
                }
            }
        }
    }

    /// `BackendQueue::offer`: one freed slot of `server` goes to the best
    /// waiter still there; if the waiter is gone, the same slot is offered
    /// again (`credit` called again); with no waiter it is held.
    fn offer(&mut self, server: usize) {
        loop {
            // Invariant 3 (FIFO): among sessions that could use this slot
            // (its own queue, plus the backend queue if it takes balanced
            // traffic), the one queued first — lowest id — is served.
            let balanced = self.balanced(server);
            let oldest = self
                .sessions
                .iter()
                .find(|(_, s)| match **s {
                    Sess::Queued { at: Some(a), .. } => a == server,
                    Sess::Queued { at: None, .. } => balanced,
                    Sess::Holding(_) => false,
                })
                .map(|(&id, &s)| (id, s));
            let held_before = self.state.held(ServerId(server));
            match self.state.credit(ServerId(server)) {
                None => {
                    // Invariant 2: a slot is held only if nobody can use it.
                    assert_eq!(oldest, None, "server {server}'s slot held while a session waits for it");
                    assert_eq!(
                        self.state.held(ServerId(server)),
                        held_before.map(|h| h + 1),
                        "server {server}'s credit must be held exactly once"
                    );
                    return;
                }
                Some(grant) => {
                    assert_eq!(grant.server, ServerId(server));
                    assert_eq!(grant.waiter, grant.session.0);
                    let id = grant.session.0;
                    let Some((oldest_id, Sess::Queued { at, gone })) = oldest else {
                        panic!("server {server}'s credit granted {id} but nobody could use it");
                    };
                    assert_eq!(id, oldest_id, "FIFO: server {server}'s slot went to {id}, not the oldest {oldest_id}");
                    assert!(!self.state.is_queued(grant.session));
                    // FIFO per queue: grants from one queue come in arrival order.
                    let last = match at {
                        None => &mut self.last_from_backend_queue,
                        Some(s) => &mut self.last_from_server_queue[s],
                    };
                    assert!(id > *last, "FIFO: {id} granted from queue {at:?} after {}", *last);
                    *last = id;
                    if gone {
                        // `deliver` failed; the slot is disarmed and reused.
                        self.sessions.remove(&id);
                        continue;
                    }
                    self.sessions.insert(id, Sess::Holding(server));
                    return;
                }
            }
        }
    }

    /// Deliver every pending message (in send order), then check invariant 2
    /// at rest: no session is queued while a slot it could use is free.
    fn quiesce(&mut self) {
        while !self.pool.is_empty() {
            let msg = self.pool.remove(0);
            self.deliver(msg);
            self.check();
        }
        let backend_q = self.state.backend_queue_len();
        for s in 0..self.n() {
            let maxconn = self.cfg.servers[s].maxconn;
            let holding = self.holding(s);
            let server_q = self.state.server_queue_len(ServerId(s));
            if self.limited(s) {
                // Invariant 5: at rest every slot not held by a session is
                // back as a credit — none lost, none doubled.
                assert_eq!(self.state.held(ServerId(s)), Some(maxconn - holding), "server {s} at rest");
            }
            // Invariant 2: a waiter that could use server s implies s is full.
            if server_q > 0 {
                assert!(self.limited(s) && holding == maxconn, "server {s} has a queue but free slots at rest");
            }
            if backend_q > 0 && self.balanced(s) {
                assert!(
                    self.limited(s) && holding == maxconn,
                    "backend queue waits but balanced server {s} has free slots at rest"
                );
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
            self.check();
            self.quiesce();
        }
        assert!(self.sessions.is_empty(), "sessions left after draining: {:?}", self.sessions);
        for s in 0..self.n() {
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
        let n = self.n();
        for s in 0..n {
            let maxconn = self.cfg.servers[s].maxconn;
            let holding = self.holding(s);
            let mut credits = 0;
            let mut releases = 0;
            for m in &self.pool {
                match *m {
                    Msg::Dequeue { server, credits: c } if server == s => credits += c,
                    Msg::Release { server } if server == s => releases += 1,
                    _ => {}
                }
            }
            let out = self.servers[s].out();
            if self.limited(s) {
                let held = self.state.held(ServerId(s)).expect("limited server has a credit count");
                // Invariant 1: never more than maxconn connections at the
                // server, counting every slot wherever it is.
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
        }
        let backend_q = self.state.backend_queue_len();
        assert_eq!(backend_q, self.queued_at(None), "backend queue length");
        if self.cfg.maxqueue > 0 {
            assert!(backend_q <= self.cfg.maxqueue as usize, "backend queue over maxqueue");
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
                assert!(!self.usable(s), "server {s} open to newcomers while sessions wait for it");
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Model 1: random backends, random interleavings of arrivals, leaves,
    /// closes and message deliveries.
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
        let req = ReserveRequest { session, key: QueueKey::fifo(session), pin, avoid: None };
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
    let mut sim = BackendSim::new(BackendCfg {
        servers: vec![ServerCfg { maxconn: 1, weight: 1, maxqueue: 0 }],
        maxqueue: 0,
        balancer: BalancerKind::RoundRobin,
    });
    for op in [
        // The one credit arrives and is held.
        BOp::Quiesce,
        // Session 1 is granted it; 2 waits in the backend queue, 3 in
        // server 0's queue.
        BOp::Arrive { pin: None, avoid: None, gone: false },
        BOp::Arrive { pin: None, avoid: None, gone: false },
        BOp::Arrive { pin: Some(0), avoid: None, gone: false },
        // 2's client leaves; its Cancel stays in flight (pool: [Cancel 2]).
        BOp::Leave { pick: 0, at_once: false },
        // 1 ends (pool: [Cancel 2, Release 0]).
        BOp::Close(0),
        // The Release reaches the Server (pool: [Cancel 2, Dequeue 0]).
        BOp::Deliver(1),
        // The Dequeue: the slot goes to 2 (older), which is gone, so it is
        // offered again and 3 gets it.
        BOp::Deliver(1),
    ] {
        sim.step(&op);
    }
    assert_eq!(sim.sessions.get(&3), Some(&Sess::Holding(0)));
    sim.drain();
}

// =====================================================================
// Model 2: admission (AdmissionState)
// =====================================================================

#[derive(Debug, Clone)]
struct AdmissionCfg {
    /// 0 = unlimited.
    global: u32,
    /// Each frontend's maxconn, 0 = unlimited.
    frontends: Vec<u32>,
    /// Each listener's frontend.
    listeners: Vec<usize>,
}

#[derive(Debug, Clone)]
enum AOp {
    /// Listener `l` (if idle) asks for up to `want` credits.
    Admit { l: usize, want: u32 },
    /// Listener `l` (if holding credits) accepts up to `k` connections and
    /// gives the rest back.
    Accept { l: usize, k: u32 },
    /// An open session (chosen by `pick`) ends.
    Close(usize),
    /// The periodic `maxconn_recheck` tick.
    Recheck,
    /// Listener `l` stops and its parked request is forgotten (`unpark`).
    Unpark(usize),
    /// Listener `l` stops silently (drops its reply channel): credits it
    /// holds, or gets later, come back through `give_back`.
    Stop(usize),
}

fn admission_cfg() -> impl Strategy<Value = AdmissionCfg> {
    (0u32..=5, prop::collection::vec(0u32..=3, 1..=3), prop::collection::vec(0usize..3, 1..=6)).prop_map(
        |(global, frontends, listeners)| {
            let nf = frontends.len();
            AdmissionCfg { global, listeners: listeners.into_iter().map(|f| f % nf).collect(), frontends }
        },
    )
}

fn admission_op() -> impl Strategy<Value = AOp> {
    prop_oneof![
        6 => (0usize..6, 1u32..=4).prop_map(|(l, want)| AOp::Admit { l, want }),
        5 => (0usize..6, 0u32..=4).prop_map(|(l, k)| AOp::Accept { l, k }),
        5 => (0usize..64).prop_map(AOp::Close),
        1 => Just(AOp::Recheck),
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

/// The ResourceWatchdog and its listeners, simulated.
struct AdmissionSim {
    cfg: AdmissionCfg,
    state: AdmissionState<usize>,
    listeners: Vec<Lst>,
    /// Parked listeners in park order.
    parked: VecDeque<usize>,
    /// Frontend of each open session.
    sessions: Vec<usize>,
}

impl AdmissionSim {
    fn new(cfg: AdmissionCfg) -> AdmissionSim {
        AdmissionSim {
            state: AdmissionState::new(cfg.global, &cfg.frontends),
            listeners: vec![Lst::Idle; cfg.listeners.len()],
            parked: VecDeque::new(),
            sessions: Vec::new(),
            cfg,
        }
    }

    /// The simulator's own count: sessions + credits held by listeners.
    fn used(&self, frontend: Option<usize>) -> u32 {
        let in_f = |f: usize| frontend.is_none_or(|x| x == f);
        let sessions = self.sessions.iter().filter(|&&f| in_f(f)).count() as u32;
        let credits: u32 = self
            .listeners
            .iter()
            .enumerate()
            .filter(|&(l, _)| in_f(self.cfg.listeners[l]))
            .map(|(_, s)| match s {
                Lst::Holding(n) => *n,
                _ => 0,
            })
            .sum();
        sessions + credits
    }

    fn global_free(&self) -> u32 {
        free(self.cfg.global, self.used(None))
    }

    fn frontend_free(&self, f: usize) -> u32 {
        free(self.cfg.frontends[f], self.used(Some(f)))
    }

    fn step(&mut self, op: &AOp) {
        let nl = self.listeners.len();
        match *op {
            AOp::Admit { l, want } => self.admit(l % nl, want),
            AOp::Accept { l, k } => self.accept(l % nl, k),
            AOp::Close(pick) => {
                if !self.sessions.is_empty() {
                    let f = self.sessions.remove(pick % self.sessions.len());
                    let resumed = self.state.session_closed(FrontendId(f));
                    self.resume(resumed);
                }
            }
            AOp::Recheck => {
                // Invariant 7: parked listeners are served on the release
                // itself, so the safety-net tick never finds work.
                let resumed = self.state.recheck();
                assert!(
                    resumed.is_empty(),
                    "recheck resumed {:?}",
                    resumed.iter().map(|r| r.listener).collect::<Vec<_>>()
                );
            }
            AOp::Unpark(l) => {
                let l = l % nl;
                let got = self.state.unpark(ListenerId(l));
                if let Lst::Parked { .. } = self.listeners[l] {
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
                        let resumed = self.state.give_back(FrontendId(self.cfg.listeners[l]), n);
                        self.resume(resumed);
                    }
                    Lst::Parked { want, .. } => self.listeners[l] = Lst::Parked { want, dead: true },
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
        let f = self.cfg.listeners[l];
        let (g, fr) = (self.global_free(), self.frontend_free(f));
        match self.state.admit(ListenerId(l), FrontendId(f), want, l) {
            Admitted::Granted(n, waiter) => {
                assert_eq!(waiter, l);
                assert!(g > 0 && fr > 0, "listener {l} granted with no room");
                assert_eq!(n, want.min(g).min(fr), "listener {l} granted {n}");
                self.listeners[l] = Lst::Holding(n);
            }
            Admitted::Parked(reason) => {
                assert!(g == 0 || fr == 0, "listener {l} parked with room (global {g}, frontend {fr})");
                let expected = if g == 0 { PauseReason::Global } else { PauseReason::Frontend };
                assert_eq!(reason, expected, "listener {l} pause reason");
                self.listeners[l] = Lst::Parked { want, dead: false };
                self.parked.push_back(l);
            }
        }
    }

    /// The accept loop: use `k` of the credits, give the rest back.
    fn accept(&mut self, l: usize, k: u32) {
        let Lst::Holding(n) = self.listeners[l] else {
            return;
        };
        let f = self.cfg.listeners[l];
        let used = k.min(n);
        self.sessions.extend(std::iter::repeat_n(f, used as usize));
        self.listeners[l] = Lst::Idle;
        if used < n {
            let resumed = self.state.give_back(FrontendId(f), n - used);
            self.resume(resumed);
        }
    }

    /// `ResourceWatchdog::resume`: credits for a stopped listener come back
    /// through `give_back` and may resume another one.
    fn resume(&mut self, resumed: Vec<Resumed<usize>>) {
        let mut pending = self.validate_resumed(resumed);
        while let Some(r) = pending.pop() {
            let l = r.listener.0;
            if let Lst::Parked { dead: true, .. } = self.listeners[l] {
                self.listeners[l] = Lst::Gone;
                let more = self.state.give_back(r.frontend, r.granted);
                let more = self.validate_resumed(more);
                pending.extend(more);
            } else {
                self.listeners[l] = Lst::Holding(r.granted);
            }
        }
    }

    /// Checks one batch of resumed listeners (each was parked, on its own
    /// frontend, gets 1..=want; served in park order) and unparks them in
    /// the model.
    fn validate_resumed(&mut self, resumed: Vec<Resumed<usize>>) -> Vec<Resumed<usize>> {
        let mut last_position = None;
        for r in &resumed {
            let l = r.listener.0;
            assert_eq!(r.waiter, l);
            assert_eq!(r.frontend, FrontendId(self.cfg.listeners[l]), "listener {l} resumed on another frontend");
            let Lst::Parked { want, .. } = self.listeners[l] else {
                panic!("listener {l} resumed but not parked ({:?})", self.listeners[l]);
            };
            assert!(r.granted >= 1 && r.granted <= want, "listener {l} resumed with {} (want {want})", r.granted);
            let position = self.parked.iter().position(|&p| p == l).expect("parked in the model");
            assert!(last_position.is_none_or(|p| position > p), "parked listeners served out of park order");
            last_position = Some(position);
        }
        for r in &resumed {
            self.parked.retain(|&p| p != r.listener.0);
        }
        resumed
    }

    fn check(&self) {
        // The struct's own check: limits, nobody parked while it has room.
        if let Err(e) = self.state.check() {
            panic!("AdmissionState::check: {e}");
        }
        // Invariant 7: the simulator's count (sessions + credits out) is
        // what the state counts, and never exceeds a limit.
        let global = self.used(None);
        assert_eq!(self.state.global_used(), global, "global used");
        if self.cfg.global > 0 {
            assert!(global <= self.cfg.global, "global {global} > maxconn {}", self.cfg.global);
        }
        for (f, &max) in self.cfg.frontends.iter().enumerate() {
            let used = self.used(Some(f));
            assert_eq!(self.state.frontend_used(FrontendId(f)), used, "frontend {f} used");
            if max > 0 {
                assert!(used <= max, "frontend {f}: {used} > maxconn {max}");
            }
        }
        // Invariant 7: a parked listener is resumed as soon as room appears,
        // so at every step a parked listener has none.
        let parked: Vec<usize> = self.state.parked().map(|l| l.0).collect();
        assert_eq!(parked, self.parked.iter().copied().collect::<Vec<_>>(), "parked listeners, in order");
        for &l in &self.parked {
            assert!(matches!(self.listeners[l], Lst::Parked { .. }));
            let f = self.cfg.listeners[l];
            assert!(
                self.global_free() == 0 || self.frontend_free(f) == 0,
                "listener {l} parked while global and frontend {f} have room"
            );
        }
        for (l, s) in self.listeners.iter().enumerate() {
            if let Lst::Parked { .. } = s {
                assert!(self.parked.contains(&l), "listener {l} parked in the model only");
            }
        }
    }

    /// End of a case: give every credit back and close every session, round
    /// after round; every parked listener must get served and everything
    /// must come back to zero.
    fn drain(&mut self) {
        for _ in 0..=self.listeners.len() + 1 {
            for l in 0..self.listeners.len() {
                if let Lst::Holding(_) = self.listeners[l] {
                    self.accept(l, 0);
                    self.check();
                }
            }
            while let Some(f) = self.sessions.pop() {
                let resumed = self.state.session_closed(FrontendId(f));
                self.resume(resumed);
                self.check();
            }
            if !self.listeners.iter().any(|s| matches!(s, Lst::Holding(_))) {
                break;
            }
        }
        assert!(self.parked.is_empty(), "listeners still parked with nothing in use: {:?}", self.parked);
        assert_eq!(self.state.global_used(), 0);
        for f in 0..self.cfg.frontends.len() {
            assert_eq!(self.state.frontend_used(FrontendId(f)), 0);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Model 2: random limits and listeners, random interleavings of
    /// admits, accepts, closes, rechecks and stops.
    #[test]
    fn admission(cfg in admission_cfg(), ops in prop::collection::vec(admission_op(), 0..MAX_OPS)) {
        let mut sim = AdmissionSim::new(cfg);
        for op in &ops {
            sim.step(op);
        }
        sim.drain();
    }
}
