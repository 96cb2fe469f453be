//! Distribution and lifecycle tests of every balancing algorithm, through
//! the BackendQueue's core (`QueueCore` over `BackendState`) rather than the
//! bare balancer: candidates, slots, queues, releases and server status
//! changes all play their part, as in the actor.
//!
//! [`Backend`] sends the core the BackendQueue's messages: every limited
//! server lends all its slots at start (`Dequeue`); a session's close is a
//! `Dequeue` (its release, plus a credit for a limited server); a status
//! change is `ServerStatusChanged`. The answers the sessions hear say who
//! was granted and who refused. `check()` must hold after every message.
//!
//! Sessions' lifetimes come from a seeded xorshift, so every run is the same.
//!
//! Three tests here found bugs in `src/` (leastconn idle traffic, source
//! ignoring `avoid`, stranded sessions overtaking older waiters); all fixed.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{queue_core, Reply, Sessions, TestWaiter};
use tokio::time::Instant;
use usher_core::backend::balance::{Balancer, ConsistentHash, First, LeastConn, PowerOfChoices, SmoothRoundRobin};
use usher_core::backend::{
    BackendSetup, BackendState, HealthConfig, QueueCore, QueueKey, ReserveRequest, Reserved, ServerHealth, ServerSetup,
    ServerStatus,
};
use usher_core::ids::{ServerId, SessionId};

// =====================================================================
// Harness
// =====================================================================

/// What a `Reserve` got at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Granted(usize),
    /// In a server's queue (`Some`) or the backend queue.
    Queued(Option<usize>),
    Full,
    NoServer,
}

/// One backend's queue core, sent the BackendQueue's messages.
struct Backend {
    core: QueueCore<TestWaiter>,
    sessions: Sessions,
    limited: Vec<bool>,
    next: u64,
    /// Sessions holding a slot, by id: their server.
    holding: BTreeMap<u64, usize>,
    /// Every grant, in order: (session, server).
    log: Vec<(u64, usize)>,
    /// Every session refused after it was queued (`set_status`), in order.
    refused: Vec<u64>,
}

fn server(maxconn: u32, weight: u32) -> ServerSetup {
    ServerSetup { maxconn, weight, maxqueue: 0, backup: false, minconn: 0 }
}

fn up(weight: u32) -> ServerStatus {
    ServerStatus { up: true, weight, cap: None }
}

fn down(weight: u32) -> ServerStatus {
    ServerStatus { up: false, weight, cap: None }
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i.wrapping_mul(7919)))
}

impl Backend {
    fn new(servers: &[ServerSetup], setup: BackendSetup, balancer: Box<dyn Balancer>) -> Backend {
        let mut b = Backend {
            core: queue_core(servers, setup, balancer),
            sessions: Sessions::default(),
            limited: servers.iter().map(|s| s.maxconn > 0).collect(),
            next: 1,
            holding: BTreeMap::new(),
            log: Vec::new(),
            refused: Vec::new(),
        };
        // `Server::started`: every slot is lent at once.
        for (i, s) in servers.iter().enumerate() {
            let _ = b.core.dequeue(ServerId(i), s.maxconn, 0);
            assert!(b.hear().is_empty(), "nobody waits yet");
        }
        b
    }

    fn state(&self) -> &BackendState<TestWaiter> {
        self.core.state()
    }

    fn plain(servers: &[ServerSetup], balancer: Box<dyn Balancer>) -> Backend {
        Backend::new(servers, BackendSetup::default(), balancer)
    }

    /// A FIFO session from `client`.
    fn arrive(&mut self, client: Option<IpAddr>) -> (u64, Answer) {
        let key = QueueKey::fifo(SessionId(self.next));
        self.arrive_with(key, client, None, None)
    }

    /// The `Reserve` handler.
    fn arrive_with(
        &mut self,
        key: QueueKey,
        client: Option<IpAddr>,
        pin: Option<usize>,
        avoid: Option<usize>,
    ) -> (u64, Answer) {
        let id = self.next;
        self.next += 1;
        let req =
            ReserveRequest { session: SessionId(id), key, client, pin: pin.map(ServerId), avoid: avoid.map(ServerId) };
        let answer = match self.core.reserve(req, self.sessions.waiter(id)) {
            Reserved::Granted { server, .. } => Answer::Granted(server.0),
            Reserved::Queued { server, .. } => Answer::Queued(server.map(|s| s.0)),
            Reserved::Full { .. } => Answer::Full,
            Reserved::NoServer { .. } => Answer::NoServer,
            Reserved::SourceFull { .. } | Reserved::SourceBusy { .. } => {
                unreachable!("these backends have no per-source cap")
            }
        };
        self.hear();
        (id, answer)
    }

    /// What the sessions heard since the last message: the grants, in
    /// order, are logged; refused sessions leave. Returns the grants.
    fn hear(&mut self) -> Vec<(u64, usize)> {
        let mut grants = Vec::new();
        for heard in self.sessions.heard() {
            assert!(heard.delivered, "nobody is gone here");
            match heard.reply {
                Reply::Granted { server, .. } => {
                    assert!(self.holding.insert(heard.session, server).is_none(), "{heard:?}: granted twice");
                    self.log.push((heard.session, server));
                    grants.push((heard.session, server));
                }
                Reply::NoServer { queued: Some(_) } | Reply::Shed { .. } => self.refused.push(heard.session),
                Reply::Full | Reply::SourceFull | Reply::SourceBusy | Reply::NoServer { .. } | Reply::Left { .. } => {}
            }
        }
        assert_eq!(self.state().check(), Ok(()));
        grants
    }

    /// Session `id` closes: its Server reports the release with the credit
    /// it lends back (`Dequeue`).
    fn release(&mut self, id: u64) {
        let s = self.holding.remove(&id).expect("release of a session holding a slot");
        let _ = self.core.dequeue(ServerId(s), u32::from(self.limited[s]), 1);
        self.hear();
    }

    /// `ServerStatusChanged`: returns the sessions granted and refused.
    fn set_status(&mut self, s: usize, status: ServerStatus) -> (Vec<(u64, usize)>, Vec<u64>) {
        let before = self.refused.len();
        let _ = self.core.status_changed(ServerId(s), status);
        let grants = self.hear();
        (grants, self.refused[before..].to_vec())
    }

    fn served(&self, s: usize) -> u32 {
        self.state().served(ServerId(s))
    }

    fn served_all(&self, n: usize) -> Vec<u32> {
        (0..n).map(|s| self.served(s)).collect()
    }

    /// Grants per server among `log[from..]`.
    fn grants_since(&self, from: usize, n: usize) -> Vec<u32> {
        let mut counts = vec![0; n];
        for &(_, s) in &self.log[from..] {
            counts[s] += 1;
        }
        counts
    }
}

/// xorshift64: deterministic lifetimes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `sessions` arrivals (from `client(i)`); whenever more than `concurrency`
/// sessions hold a slot, a random one of them closes. Returns the grants per
/// server made during the run.
fn traffic(
    b: &mut Backend,
    n: usize,
    sessions: usize,
    concurrency: usize,
    seed: u64,
    client: impl Fn(usize) -> Option<IpAddr>,
) -> Vec<u32> {
    let from = b.log.len();
    let mut rng = Rng(seed | 1);
    for i in 0..sessions {
        b.arrive(client(i));
        while b.holding.len() > concurrency {
            let open: Vec<u64> = b.holding.keys().copied().collect();
            b.release(open[rng.below(open.len())]);
        }
    }
    b.grants_since(from, n)
}

/// Each count is within `tolerance` (relative) of `total × weight / Σweight`.
fn assert_shares(counts: &[u32], weights: &[u32], tolerance: f64, what: &str) {
    let total: u32 = counts.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (s, (&got, &w)) in counts.iter().zip(weights).enumerate() {
        let want = f64::from(total) * f64::from(w) / f64::from(wsum);
        let off = (f64::from(got) - want).abs() / want;
        assert!(
            off <= tolerance,
            "{what}: server {s} got {got} of {total}, want {want:.0} ±{tolerance} (all: {counts:?})"
        );
    }
}

// =====================================================================
// roundrobin and static-rr
// =====================================================================

/// Weights 1, 2, 3 over 6000 sessions with releases: within ±5% (smooth
/// weighted round robin is exact while no server is full).
#[test]
fn roundrobin_and_static_rr_match_weights() {
    let weights = [1, 2, 3];
    let servers: Vec<ServerSetup> = weights.iter().map(|&w| server(50, w)).collect();
    for (name, balancer) in [
        ("roundrobin", Box::new(SmoothRoundRobin::new(3)) as Box<dyn Balancer>),
        ("static-rr", Box::new(SmoothRoundRobin::with_static_weights(&weights))),
    ] {
        let mut b = Backend::plain(&servers, balancer);
        let counts = traffic(&mut b, 3, 6000, 20, 11, |_| None);
        assert_shares(&counts, &weights, 0.05, name);
        // Smooth: the weight-3 server never gets more than two in a row.
        let runs = b.log.windows(3).filter(|w| w.iter().all(|&(_, s)| s == 2)).count();
        assert_eq!(runs, 0, "{name}: three sessions in a row on server 2");
    }
}

/// A weight change at run time (`set_status` with a new weight): roundrobin
/// follows it, static-rr keeps the configured weights.
#[test]
fn roundrobin_follows_weight_changes_static_rr_does_not() {
    for (name, balancer, after) in [
        ("roundrobin", Box::new(SmoothRoundRobin::new(2)) as Box<dyn Balancer>, [3, 1]),
        ("static-rr", Box::new(SmoothRoundRobin::with_static_weights(&[1, 1])), [1, 1]),
    ] {
        let mut b = Backend::plain(&[server(50, 1), server(50, 1)], balancer);
        let counts = traffic(&mut b, 2, 2000, 10, 3, |_| None);
        assert_shares(&counts, &[1, 1], 0.05, name);
        b.set_status(0, up(3));
        let counts = traffic(&mut b, 2, 4000, 10, 5, |_| None);
        assert_shares(&counts, &after, 0.05, &format!("{name} after weight 1 → 3"));
    }
}

// =====================================================================
// leastconn
// =====================================================================

/// Equal loads rotate; a server whose sessions stay open gets fewer new
/// ones; open sessions even out (relative to weight).
#[test]
fn leastconn_follows_load() {
    // Idle servers of equal weight: strict rotation.
    let mut b = Backend::plain(&[server(0, 1), server(0, 1), server(0, 1)], Box::new(LeastConn::default()));
    for _ in 0..30 {
        let (id, _) = b.arrive(None);
        b.release(id);
    }
    let order: Vec<usize> = b.log.iter().map(|&(_, s)| s).collect();
    assert_eq!(order, [0, 1, 2].repeat(10), "equal loads rotate");

    // Ten long sessions stay open on server 0: short sessions avoid it and
    // alternate between the two others.
    for _ in 0..10 {
        assert_eq!(b.arrive_with(QueueKey::fifo(SessionId(b.next)), None, Some(0), None).1, Answer::Granted(0));
    }
    let from = b.log.len();
    for _ in 0..100 {
        let (id, _) = b.arrive(None);
        b.release(id);
    }
    assert_eq!(b.grants_since(from, 3), [0, 50, 50]);
    // Thirty more that stay open fill the others up to server 0 first, then
    // spread: every server ends within one of the others.
    for _ in 0..30 {
        b.arrive(None);
    }
    let served = b.served_all(3);
    assert_eq!(served.iter().sum::<u32>(), 40);
    assert!(served.iter().max().unwrap() - served.iter().min().unwrap() <= 1, "open sessions even out: {served:?}");

    // Relative to weight: weights 1 and 3 carry open sessions 1:3.
    let mut b = Backend::plain(&[server(0, 1), server(0, 3)], Box::new(LeastConn::default()));
    for _ in 0..400 {
        b.arrive(None);
    }
    let served = b.served_all(2);
    assert!(served[0].abs_diff(100) <= 1 && served[1].abs_diff(300) <= 1, "weights 1:3 carry {served:?}");

    // A slow server (its sessions last five times longer) gets about a fifth
    // of the new sessions the others get, where roundrobin gives it a third
    // of all.
    let mut b = Backend::plain(&[server(0, 1), server(0, 1), server(0, 1)], Box::new(LeastConn::default()));
    let mut open: VecDeque<(u64, usize)> = VecDeque::new(); // (session, closes at arrival number)
    for t in 0..6000 {
        let (id, answer) = b.arrive(None);
        let Answer::Granted(s) = answer else { panic!("unlimited servers grant at once: {answer:?}") };
        open.push_back((id, t + if s == 0 { 50 } else { 10 }));
        open.make_contiguous().sort_by_key(|&(_, end)| end);
        while open.front().is_some_and(|&(_, end)| end <= t) {
            let (id, _) = open.pop_front().unwrap();
            b.release(id);
        }
    }
    let counts = b.grants_since(0, 3);
    assert!(counts[0] * 3 < counts[1] && counts[0] * 3 < counts[2], "the slow server gets fewer: {counts:?}");
}

/// Regression (fixed in 2e7a031): leastconn ranked servers by
/// `(load + 1) / weight`, so idle servers were ranked by weight alone and
/// under light traffic every session went to the heaviest server ([0, 0,
/// 6000] here). Equal loads must rotate, following the weights ("round robin among
/// equals"; nginx's least_conn does weighted round robin
/// among ties).
#[test]
fn leastconn_idle_traffic_follows_weights() {
    let mut b = Backend::plain(&[server(0, 1), server(0, 2), server(0, 3)], Box::new(LeastConn::default()));
    let counts = traffic(&mut b, 3, 6000, 0, 1, |_| None);
    for (s, &c) in counts.iter().enumerate() {
        assert!(c > 0, "idle server {s} never picked: {counts:?}");
    }
    assert_shares(&counts, &[1, 2, 3], 0.05, "leastconn, idle");
}

// =====================================================================
// first
// =====================================================================

/// `first` fills servers one after the other (weights ignored): with
/// maxconn 2 each, sessions go s0, s0, s1, s1, s2, s2; a freed slot goes to
/// the waiter, and once nobody waits the lowest server with a free slot
/// takes the next one.
#[test]
fn first_fills_servers_in_order() {
    let mut b = Backend::plain(&[server(2, 1), server(2, 5), server(2, 9)], Box::new(First::default()));
    for want in [0, 0, 1, 1, 2, 2] {
        assert_eq!(b.arrive(None).1, Answer::Granted(want));
    }
    let (waiter, answer) = b.arrive(None);
    assert_eq!(answer, Answer::Queued(None));
    // A slot of s1 frees: the waiter takes it.
    let on_s1 = *b.holding.iter().find(|(_, &s)| s == 1).unwrap().0;
    b.release(on_s1);
    assert_eq!(b.holding.get(&waiter), Some(&1));
    // Slots free on s2 then s0: the next sessions fill s0 first.
    let on_s2 = *b.holding.iter().find(|(_, &s)| s == 2).unwrap().0;
    let on_s0 = *b.holding.iter().find(|(_, &s)| s == 0).unwrap().0;
    b.release(on_s2);
    b.release(on_s0);
    assert_eq!(b.arrive(None).1, Answer::Granted(0));
    assert_eq!(b.arrive(None).1, Answer::Granted(2));
    assert_eq!(b.arrive(None).1, Answer::Queued(None));
}

// =====================================================================
// random (power of d choices)
// =====================================================================

/// Balls into bins: 1000 long-lived sessions on 10 unlimited servers. Two
/// draws keep the fullest server far closer to the mean (100) than one.
#[test]
fn random_two_draws_beat_one_on_max_load() {
    let max_load = |draws: u32, seed: u64| {
        let servers = vec![server(0, 1); 10];
        let mut b = Backend::plain(&servers, Box::new(PowerOfChoices::new(draws, seed)));
        for _ in 0..1000 {
            b.arrive(None);
        }
        *b.served_all(10).iter().max().unwrap()
    };
    for seed in 1..=10 {
        let (one, two) = (max_load(1, seed), max_load(2, seed));
        assert!(two < one, "seed {seed}: max load with 2 draws {two} not below 1 draw {one}");
        assert!(two <= 105, "seed {seed}: 2 draws should stay near the mean of 100: {two}");
    }
}

/// Weighted: with one or two draws, idle or loaded, sessions follow the
/// weights (60 000 sessions: ±5% is several standard deviations).
#[test]
fn random_matches_weights() {
    let weights = [1, 2, 3];
    for draws in [1, 2] {
        for concurrency in [0, 60] {
            let servers: Vec<ServerSetup> = weights.iter().map(|&w| server(0, w)).collect();
            let mut b = Backend::plain(&servers, Box::new(PowerOfChoices::new(draws, 42)));
            let counts = traffic(&mut b, 3, 60_000, concurrency, 9, |_| None);
            assert_shares(&counts, &weights, 0.05, &format!("random({draws}), {concurrency} open"));
        }
    }
}

// =====================================================================
// source (consistent hash)
// =====================================================================

/// The same client address always reaches the same server, across many
/// reserves with releases in between; clients spread over every server.
#[test]
fn source_same_client_same_server() {
    let n = 4;
    let mut b = Backend::plain(&vec![server(0, 1); n], Box::new(ConsistentHash::new(0)));
    let mut home: BTreeMap<u32, usize> = BTreeMap::new();
    let mut rng = Rng(77);
    for round in 0..20 {
        for c in 0..200 {
            let (id, answer) = b.arrive(Some(ip(c)));
            let Answer::Granted(s) = answer else { panic!("unlimited servers grant at once: {answer:?}") };
            assert_eq!(*home.entry(c).or_insert(s), s, "client {c} moved in round {round}");
            if rng.below(2) == 0 {
                b.release(id);
            }
        }
    }
    let mut per_server = vec![0; n];
    for &s in home.values() {
        per_server[s] += 1;
    }
    assert!(per_server.iter().all(|&k| k >= 25), "200 clients spread over {n} servers: {per_server:?}");
}

/// Removing 1 of 5 servers (`set_status` down) moves only that server's
/// clients (about 1/5 of 10 000, at most 25%); bringing it back restores
/// every client's server.
#[test]
fn source_removing_one_of_five_moves_only_its_clients() {
    let mut b = Backend::plain(&[server(0, 1); 5], Box::new(ConsistentHash::new(0)));
    let homes = |b: &mut Backend| -> Vec<usize> {
        (0..10_000)
            .map(|c| {
                let (id, answer) = b.arrive(Some(ip(c)));
                let Answer::Granted(s) = answer else { panic!("{answer:?}") };
                b.release(id);
                s
            })
            .collect()
    };
    let before = homes(&mut b);
    let on_2 = before.iter().filter(|&&s| s == 2).count();
    assert!((1_400..=2_600).contains(&on_2), "server 2 had {on_2} of 10 000 clients");
    b.set_status(2, down(1));
    let after = homes(&mut b);
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    assert!(moved <= 2_500, "{moved} of 10 000 clients moved");
    for (c, (&x, &y)) in before.iter().zip(&after).enumerate() {
        assert!(x == y || x == 2, "client {c} moved from server {x} to {y}, though {x} is still up");
        assert_ne!(y, 2, "client {c} sent to the removed server");
    }
    assert_eq!(moved, on_2, "every client of the removed server moved, no other");
    b.set_status(2, up(1));
    assert_eq!(homes(&mut b), before, "back up: every client back on its server");
}

/// A pinned (hashed) session whose server is at maxconn waits in that
/// server's queue; when that queue is full it is redispatched to another
/// server if `redispatch` is on (the backend queue if none has room), and
/// refused at once (Full) otherwise.
#[test]
fn source_pinned_server_at_maxconn_queues_then_redispatches_or_refuses() {
    for redispatch in [false, true] {
        let servers = vec![ServerSetup { maxconn: 1, weight: 1, maxqueue: 1, backup: false, minconn: 0 }; 3];
        let setup = BackendSetup { maxqueue: 0, redispatch, fullconn: 0, ..BackendSetup::default() };
        let mut b = Backend::new(&servers, setup, Box::new(ConsistentHash::new(0)));
        let hot = Some(ip(1));
        let (a, answer) = b.arrive(hot);
        let Answer::Granted(h) = answer else { panic!("{answer:?}") };
        let (queued, answer) = b.arrive(hot);
        assert_eq!(answer, Answer::Queued(Some(h)), "its server is full: its own queue");
        let (_, answer) = b.arrive(hot);
        if !redispatch {
            assert_eq!(answer, Answer::Full, "own queue full, no redispatch: refused at once");
        } else {
            let Answer::Granted(o1) = answer else { panic!("redispatched to another server: {answer:?}") };
            let (_, answer) = b.arrive(hot);
            let Answer::Granted(o2) = answer else { panic!("redispatched to the last server: {answer:?}") };
            assert_eq!(BTreeSet::from([h, o1, o2]).len(), 3, "each to a server with room");
            // Every server full: the backend queue.
            let (last, answer) = b.arrive(hot);
            assert_eq!(answer, Answer::Queued(None));
            let on_o1 = *b.holding.iter().find(|(_, &s)| s == o1).unwrap().0;
            b.release(on_o1);
            assert_eq!(b.holding.get(&last), Some(&o1), "the backend queue takes another server's slot");
        }
        // The pinned server's slot frees: its own queue's head takes it.
        b.release(a);
        assert_eq!(b.holding.get(&queued), Some(&h));
    }
}

/// Bounded load (`hash_balance_factor` 125): a stream of long-lived
/// sessions from ONE hot client address keeps every server under
/// 1.25 × the average + 1; without it they all pile onto one server.
#[test]
fn source_bounded_load_spreads_one_hot_client() {
    let hot = Some(ip(3));
    let mut b = Backend::plain(&[server(0, 1); 4], Box::new(ConsistentHash::new(125)));
    for k in 1..=400u32 {
        assert!(matches!(b.arrive(hot).1, Answer::Granted(_)));
        let max = *b.served_all(4).iter().max().unwrap();
        let bound = 1.25 * f64::from(k) / 4.0 + 1.0;
        assert!(f64::from(max) <= bound, "after {k} sessions a server serves {max} > {bound}");
    }
    // With releases too (40 open at a time): no server takes much more than
    // its share of the stream (the bound holds when a session is placed;
    // releases elsewhere may leave a server above it for a while).
    let counts = traffic(&mut b, 4, 4000, 40, 5, |_| hot);
    assert!(counts.iter().all(|&c| c > 0 && c <= 1_400), "one hot client over 4 servers: {counts:?}");

    let mut plain = Backend::plain(&[server(0, 1); 4], Box::new(ConsistentHash::new(0)));
    for _ in 0..400 {
        plain.arrive(hot);
    }
    assert_eq!(*plain.served_all(4).iter().max().unwrap(), 400, "without a bound one server takes all");
}

/// Regression (fixed in 2e7a031): a redispatched retry (`avoid` = the
/// server it failed to connect to; the session's retry) under `source`
/// went straight back to that server, because the hash ignored `avoid`, so
/// `redispatch` did nothing for hashed sessions. Like HAProxy's hash lookup
/// with an avoid server, it must move on along the ring.
#[test]
fn source_redispatched_retry_avoids_the_failed_server() {
    let setup = BackendSetup { maxqueue: 0, redispatch: true, fullconn: 0, ..BackendSetup::default() };
    let mut b = Backend::new(&[server(10, 1); 3], setup, Box::new(ConsistentHash::new(0)));
    let client = Some(ip(1));
    let (first, answer) = b.arrive(client);
    let Answer::Granted(home) = answer else { panic!("{answer:?}") };
    // The connect to `home` failed: the session drops its slot and asks
    // again, avoiding it, while the other servers are idle.
    b.release(first);
    let key = QueueKey::fifo(SessionId(first));
    let (_, retry) = b.arrive_with(key, client, None, Some(home));
    assert_ne!(retry, Answer::Granted(home), "the retry went back to the server it failed on");
    assert!(matches!(retry, Answer::Granted(_)), "{retry:?}");
}

// =====================================================================
// slowstart and dynamic maxconn
// =====================================================================

/// A slowstart cap (`set_status` with `cap`) limits grants; raising it
/// grants queued sessions at once, in order; lifting it uses every slot.
#[test]
fn slowstart_cap_limits_grants() {
    let mut b = Backend::plain(&[server(10, 1)], Box::new(SmoothRoundRobin::new(1)));
    b.set_status(0, ServerStatus { up: true, weight: 1, cap: Some(3) });
    let answers: Vec<Answer> = (0..10).map(|_| b.arrive(None).1).collect();
    assert_eq!(answers.iter().filter(|a| **a == Answer::Granted(0)).count(), 3);
    assert_eq!(b.served(0), 3);
    assert_eq!(b.state().effective_maxconn(ServerId(0)), Some(3));
    let (grants, _) = b.set_status(0, ServerStatus { up: true, weight: 1, cap: Some(6) });
    assert_eq!(grants, [(4, 0), (5, 0), (6, 0)], "oldest first");
    let (grants, _) = b.set_status(0, up(1));
    assert_eq!(grants.len(), 4);
    assert_eq!(b.served(0), 10);
    assert_eq!(b.state().held(ServerId(0)), Some(0));

    // A capped server takes no more than its cap; its neighbour the rest.
    let mut b = Backend::plain(&[server(10, 1), server(10, 1)], Box::new(SmoothRoundRobin::new(2)));
    b.set_status(0, ServerStatus { up: true, weight: 1, cap: Some(2) });
    for _ in 0..12 {
        b.arrive(None);
    }
    assert_eq!(b.served_all(2), [2, 10]);
}

/// The ramp as `ServerHealth` reports it after a server comes back: with 30
/// sessions waiting, the grants follow the effective maxconn second by
/// second (maxconn 20, slowstart 10 s: 1, 2, 4, 6, … 18, then 20).
#[test]
fn slowstart_ramp_grows_the_effective_maxconn() {
    let cfg = HealthConfig {
        checks: true,
        inter: Duration::from_secs(2),
        fastinter: Duration::from_millis(500),
        downinter: Duration::from_secs(5),
        rise: 1,
        fall: 1,
        error_limit: 0,
        down_after_failed_connects: None,
        slowstart: Duration::from_secs(10),
        weight: 10,
        maxconn: 20,
        clustered: false,
    };
    let t0 = Instant::now();
    let mut health = ServerHealth::new(cfg, t0);
    let mut b = Backend::plain(&[server(20, 10), server(20, 10)], Box::new(SmoothRoundRobin::new(2)));
    health.check_result(false, t0);
    b.set_status(0, health.status(t0));
    assert!(!health.status(t0).up);
    // Server 1 is full; 30 sessions wait in the backend queue.
    for _ in 0..50 {
        b.arrive(None);
    }
    assert_eq!((b.served(0), b.served(1), b.state().backend_queue_len()), (0, 20, 30));
    health.check_result(true, t0);
    let mut last = 0;
    for sec in 0..=10u64 {
        let now = t0 + Duration::from_secs(sec) + Duration::from_millis(1);
        health.tick(now);
        let status = health.status(now);
        b.set_status(0, status);
        let want = status.cap.unwrap_or(20);
        assert_eq!(b.served(0), want, "second {sec}: {status:?}");
        assert!(want >= last, "the ramp only grows");
        last = want;
    }
    assert_eq!(last, 20);
    assert_eq!(b.state().backend_queue_len(), 10);
}

/// Dynamic maxconn (HAProxy's minconn/fullconn): a server's effective
/// maxconn is max(minconn, backend load × maxconn / fullconn) until the
/// load reaches fullconn, so grants scale with the backend load.
#[test]
fn dynamic_maxconn_scales_grants_with_backend_load() {
    let servers = [ServerSetup { maxconn: 10, weight: 1, maxqueue: 0, backup: false, minconn: 2 }];
    let setup = BackendSetup { maxqueue: 0, redispatch: false, fullconn: 20, ..BackendSetup::default() };
    let mut b = Backend::new(&servers, setup, Box::new(SmoothRoundRobin::new(1)));
    let eff = |load: u32| if load < 20 { (load * 10 / 20).max(2) } else { 10 };
    for k in 1..=30u32 {
        b.arrive(None);
        // Backend load k: every session is served or queued.
        assert_eq!(b.served(0), k.min(eff(k)), "after {k} sessions");
        let want = (k < 20).then(|| eff(k));
        assert_eq!(b.state().effective_maxconn(ServerId(0)), want, "effective maxconn at load {k}");
    }
    // As sessions close the load falls: nobody is stuck, all are served.
    let mut served = BTreeSet::new();
    while let Some(&id) = b.holding.keys().next() {
        served.insert(id);
        b.release(id);
        assert!(b.served(0) > 0 || b.state().backend_queue_len() == 0, "sessions wait with no slot in use");
    }
    assert_eq!(served.len(), 30);

    // Two servers, only server 0 with minconn: server 1 takes sessions up
    // to its maxconn from the start, server 0 only as the load grows.
    let servers = [
        ServerSetup { maxconn: 10, weight: 1, maxqueue: 0, backup: false, minconn: 1 },
        ServerSetup { maxconn: 10, weight: 1, maxqueue: 0, backup: false, minconn: 0 },
    ];
    let mut b = Backend::new(&servers, setup, Box::new(SmoothRoundRobin::new(2)));
    for k in 1..=20u32 {
        b.arrive(None);
        let dynamic = if k < 20 { (k * 10 / 20).max(1) } else { 10 };
        assert!(b.served(0) <= dynamic, "after {k} sessions server 0 serves {} > {dynamic}", b.served(0));
        if b.state().backend_queue_len() > 0 {
            assert_eq!(b.served_all(2), [dynamic, 10], "after {k} sessions, some waiting");
        } else {
            assert_eq!(b.served(0) + b.served(1), k);
        }
    }
    assert_eq!(b.served_all(2), [10, 10], "at fullconn every slot is in use");
}

/// A reload that changes `fullconn` moves the load from which each
/// server's held credits have room: the waiters a lower `fullconn` lets in
/// are granted by the reload itself, and a higher one holds the servers
/// back again (the settle's order of holding servers is re-sorted; the
/// core's `check()` after every message holds it to `has_room`).
#[test]
fn a_reload_changing_fullconn_regrants_at_once() {
    let servers = [ServerSetup { maxconn: 10, weight: 1, maxqueue: 0, backup: false, minconn: 1 }; 2];
    let fullconn = |fullconn: u32| BackendSetup { fullconn, ..BackendSetup::default() };
    let mut b = Backend::new(&servers, fullconn(1_000), Box::new(LeastConn::default()));
    for _ in 0..6 {
        b.arrive(None);
    }
    assert_eq!(b.served_all(2), [1, 1], "load 6 of fullconn 1 000: each server held at its minconn");
    assert_eq!(b.state().backend_queue_len(), 4);
    let _ = b.core.reconfigure(fullconn(6), None, Vec::new());
    assert_eq!(b.hear().len(), 4, "load 6 reaches fullconn 6: the waiters are granted by the reload");
    assert_eq!(b.state().backend_queue_len(), 0);
    let _ = b.core.reconfigure(fullconn(1_000), None, Vec::new());
    b.hear();
    assert_eq!(b.arrive(None).1, Answer::Queued(None), "held back again below the new fullconn");
}

// =====================================================================
// priority
// =====================================================================

/// Queue keys order by class first (lower first), then arrival time plus
/// offset; arrival order is kept within a class.
#[test]
fn priority_classes_then_arrival_order() {
    let mut b = Backend::plain(&[server(1, 1)], Box::new(SmoothRoundRobin::new(1)));
    let (holder, _) = b.arrive(None);
    // Sessions 2..=9: (class, priority_offset ms); time = id × 10 + offset.
    let spec = [(1, 0), (0, 0), (1, 0), (-1, 0), (0, 0), (-1, 0), (0, -25), (1, 0)];
    for (class, offset) in spec {
        let id = b.next;
        let key = QueueKey { class, time_ms: id as i64 * 10 + offset, seq: id };
        assert_eq!(b.arrive_with(key, None, None, None).1, Answer::Queued(None));
    }
    let mut current = holder;
    let mut order = Vec::new();
    while b.state().backend_queue_len() > 0 {
        b.release(current);
        current = *b.holding.keys().next().unwrap();
        order.push(current);
    }
    // Class -1: 5, 7; class 0: 3 (30 ms), 8 (80 − 25 = 55 ms), 6 (60 ms);
    // class 1: 2, 4, 9.
    assert_eq!(order, [5, 7, 3, 8, 6, 2, 4, 9]);
}

/// When a slot frees, the older of the server queue head and the backend
/// queue head wins; an exact tie goes to the server queue.
#[test]
fn server_queue_and_backend_queue_heads_compete_by_key() {
    let mut b = Backend::plain(&[server(1, 1)], Box::new(SmoothRoundRobin::new(1)));
    let (holder, _) = b.arrive(None);
    let key = |class, time_ms, seq| QueueKey { class, time_ms, seq };
    // Pinned (server queue) at 100 ms, balanced (backend queue) at 90 ms,
    // then a tie: identical keys in both queues.
    let (pinned, _) = b.arrive_with(key(0, 100, 2), None, Some(0), None);
    let (balanced, _) = b.arrive_with(key(0, 90, 3), None, None, None);
    let (tie_backend, _) = b.arrive_with(key(0, 200, 9), None, None, None);
    let (tie_server, _) = b.arrive_with(key(0, 200, 9), None, Some(0), None);
    let mut current = holder;
    let mut order = Vec::new();
    for _ in 0..4 {
        b.release(current);
        current = *b.holding.keys().next().unwrap();
        order.push(current);
    }
    assert_eq!(order, [balanced, pinned, tie_server, tie_backend]);
}

// =====================================================================
// backups
// =====================================================================

/// Backup servers take balanced traffic only while no active server is
/// usable (all down, or all drained to weight 0) — not merely full.
#[test]
fn backup_servers_only_while_all_actives_are_down() {
    let backup = ServerSetup { maxconn: 2, weight: 1, maxqueue: 0, backup: true, minconn: 0 };
    let mut b = Backend::plain(&[server(2, 1), server(2, 1), backup], Box::new(SmoothRoundRobin::new(3)));
    for _ in 0..4 {
        let (_, answer) = b.arrive(None);
        assert!(matches!(answer, Answer::Granted(0 | 1)), "{answer:?}");
    }
    // Actives full, backup idle: the session waits.
    let (waiting, answer) = b.arrive(None);
    assert_eq!(answer, Answer::Queued(None));
    let (grants, _) = b.set_status(0, down(1));
    assert!(grants.is_empty(), "one active is still up: the backup stays idle");
    // The last active goes down: the backup takes the waiter and newcomers.
    let (grants, refused) = b.set_status(1, down(1));
    assert_eq!((grants, refused), (vec![(waiting, 2)], vec![]));
    assert_eq!(b.arrive(None).1, Answer::Granted(2));
    assert_eq!(b.arrive(None).1, Answer::Queued(None));
    // Server 0's old sessions end and it comes back: the waiter and new
    // sessions go to it, never to the backup's freed slot.
    let on_0: Vec<u64> = b.holding.iter().filter(|(_, &s)| s == 0).map(|(&id, _)| id).collect();
    for id in on_0 {
        b.release(id);
    }
    let (grants, _) = b.set_status(0, up(1));
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].1, 0);
    let on_backup = *b.holding.iter().find(|(_, &s)| s == 2).unwrap().0;
    b.release(on_backup);
    assert_eq!(b.arrive(None).1, Answer::Granted(0));
    assert_eq!(b.arrive(None).1, Answer::Queued(None), "server 0 full: wait, the backup's free slot is not used");
    // Drained actives (weight 0) count as unusable too.
    b.set_status(0, up(0));
    assert_eq!(b.holding.values().filter(|&&s| s == 2).count(), 2, "drained: the backup takes the waiter");
}

/// Regression (FIFO by queue key; found by `backend_model.rs`, fixed in
/// 2e7a031): when the last active server went down with `redispatch` on,
/// `set_status` re-reserved the downed server's queue *before* dispatching
/// to the backup that had just become usable, so the session redispatched
/// now took the backup's slot ahead of an older one (redispatched earlier)
/// waiting in the backend queue.
#[test]
fn redispatched_session_overtakes_older_waiter_on_backup() {
    let backup = ServerSetup { maxconn: 1, weight: 1, maxqueue: 0, backup: true, minconn: 0 };
    let setup = BackendSetup { maxqueue: 0, redispatch: true, fullconn: 0, ..BackendSetup::default() };
    let mut b = Backend::new(&[server(1, 1), server(1, 1), backup], setup, Box::new(SmoothRoundRobin::new(3)));
    assert_eq!(b.arrive(None).1, Answer::Granted(0)); // 1
    assert_eq!(b.arrive(None).1, Answer::Granted(1)); // 2
    let (older, _) = b.arrive_with(QueueKey::fifo(SessionId(3)), None, Some(0), None);
    let (newer, _) = b.arrive_with(QueueKey::fifo(SessionId(4)), None, Some(1), None);
    // Server 0 down: session 3 moves to the backend queue (server 1 full).
    let (grants, refused) = b.set_status(0, down(1));
    assert!(grants.is_empty() && refused.is_empty());
    assert_eq!(b.state().backend_queue_len(), 1);
    // Server 1 down: the backup has one slot; 3 queued first, so 3 gets it.
    let (grants, _) = b.set_status(1, down(1));
    assert_eq!(grants, [(older, 2)], "the backup's slot went to {grants:?}, not the older session {older}");
    assert!(b.state().is_queued(SessionId(newer)));
}

// =====================================================================
// maxqueue under every algorithm, and retries
// =====================================================================

/// Every algorithm, built for `n` servers of weight 1.
fn every_algorithm(n: usize) -> Vec<(&'static str, Box<dyn Balancer>)> {
    vec![
        ("roundrobin", Box::new(SmoothRoundRobin::new(n))),
        ("static-rr", Box::new(SmoothRoundRobin::with_static_weights(&vec![1; n]))),
        ("leastconn", Box::new(LeastConn::default())),
        ("first", Box::new(First::default())),
        ("random", Box::new(PowerOfChoices::new(2, 7))),
        ("source", Box::new(ConsistentHash::new(0))),
    ]
}

/// One server, maxconn 1, its own `maxqueue = 2`, no backend bound, five
/// clients at once: one served, two wait, the last two are refused at once
/// (`SQ`) — whatever the algorithm, and under `source` even with
/// `redispatch` (no other server could take them).
#[test]
fn a_servers_maxqueue_bounds_its_waiters_under_every_algorithm() {
    for redispatch in [false, true] {
        for (name, balancer) in every_algorithm(1) {
            let servers = [ServerSetup { maxconn: 1, weight: 1, maxqueue: 2, backup: false, minconn: 0 }];
            let mut b = Backend::new(
                &servers,
                BackendSetup { maxqueue: 0, redispatch, fullconn: 0, ..BackendSetup::default() },
                balancer,
            );
            let answers: Vec<Answer> = (0..5).map(|_| b.arrive(Some(ip(1))).1).collect();
            assert_eq!(answers[0], Answer::Granted(0), "{name}");
            assert!(
                matches!(answers[1], Answer::Queued(_)) && matches!(answers[2], Answer::Queued(_)),
                "{name}: {answers:?}"
            );
            assert_eq!(answers[3..], [Answer::Full, Answer::Full], "{name} (redispatch {redispatch}): {answers:?}");
        }
    }
}

/// The backend queue holds at most the sum of the usable servers' own
/// `maxqueue` when every one has one, and the backend's `maxqueue` when
/// that is lower; one server without a bound leaves only the backend's.
#[test]
fn the_backend_queue_is_bounded_by_the_servers_maxqueue_sum() {
    let with = |maxqueue: u32| ServerSetup { maxconn: 1, weight: 1, maxqueue, backup: false, minconn: 0 };
    for (servers, backend_maxqueue, waiting) in [
        (vec![with(2), with(3)], 0, 5),
        (vec![with(2), with(3)], 4, 4),
        (vec![with(2), with(0)], 4, 4),
        (vec![with(2), with(0)], 0, 50),
    ] {
        let setup =
            BackendSetup { maxqueue: backend_maxqueue, redispatch: false, fullconn: 0, ..BackendSetup::default() };
        let mut b = Backend::new(&servers, setup, Box::new(SmoothRoundRobin::new(2)));
        let answers: Vec<Answer> = (0..52).map(|_| b.arrive(None).1).collect();
        let queued = answers.iter().filter(|a| **a == Answer::Queued(None)).count();
        assert_eq!(queued, waiting, "{servers:?} backend maxqueue {backend_maxqueue}");
        assert_eq!(answers.iter().filter(|a| **a == Answer::Full).count(), 50 - waiting);
        // A server going down shrinks the bound for newcomers.
        if backend_maxqueue == 0 && waiting == 5 {
            b.set_status(1, down(1));
            assert_eq!(b.state().backend_queue_limit(), Some(2));
        }
    }
}

/// A retry leaving the server it failed on waits for the other server,
/// in that server's own queue, rather than take back the slot the failed
/// server just freed; a newcomer may take that slot.
#[test]
fn a_retry_waits_for_another_server_rather_than_go_back() {
    let setup = BackendSetup { maxqueue: 0, redispatch: true, fullconn: 0, ..BackendSetup::default() };
    let mut b = Backend::new(&[server(1, 1), server(1, 1)], setup, Box::new(SmoothRoundRobin::new(2)));
    let (a, first) = b.arrive(None);
    let (other, second) = b.arrive(None);
    let Answer::Granted(failed) = first else { panic!("{first:?}") };
    assert_eq!(second, Answer::Granted(1 - failed));
    // `a`'s connect failed: its slot goes back, and it asks again.
    b.release(a);
    let retry_key = QueueKey::fifo(SessionId(a)).for_retry();
    let (retry, answer) = b.arrive_with(retry_key, None, None, Some(failed));
    assert_eq!(answer, Answer::Queued(Some(1 - failed)), "waits for the other server");
    let (_, newcomer) = b.arrive(None);
    assert_eq!(newcomer, Answer::Granted(failed), "the freed slot serves a newcomer");
    b.release(other);
    assert_eq!(b.holding.get(&retry), Some(&(1 - failed)));
}

/// A retry on the same server (after its turn-around pause, without
/// `redispatch`) goes ahead of every session waiting for the first time,
/// though they arrived before it asked again.
#[test]
fn a_retry_goes_ahead_of_first_time_waiters() {
    let mut b = Backend::plain(&[server(1, 1)], Box::new(SmoothRoundRobin::new(1)));
    let (a, _) = b.arrive(None);
    let (waiting, answer) = b.arrive(None);
    assert_eq!(answer, Answer::Queued(None));
    // `a`'s connect was refused: its slot goes to the next waiter at once.
    b.release(a);
    assert_eq!(b.holding.get(&waiting), Some(&0), "the next waiter tries meanwhile");
    let (late, _) = b.arrive(None);
    let (retry, answer) = b.arrive_with(QueueKey::fifo(SessionId(a)).for_retry(), None, Some(0), None);
    assert_eq!(answer, Answer::Queued(Some(0)));
    b.release(waiting);
    assert_eq!(b.holding.get(&retry), Some(&0), "the retry first");
    assert!(!b.holding.contains_key(&late));
}
