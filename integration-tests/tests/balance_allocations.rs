//! What a pick costs: no heap allocation, for every built-in algorithm,
//! whatever the number of servers (the pattern of
//! `session_allocations.rs`: this binary counts every allocation of the
//! process, so it is alone in its file).
//!
//! It drives the BackendQueue's bookkeeping (`BackendState`) as the actor
//! does on the steady path of a session: a `Reserve` granted at once, then
//! the session's close (`released`) and the credit its Server lends back.
//! The time per session is printed (a figure, not a bound: it depends on
//! the machine), with 10, 1 000 and 10 000 servers. The core's own choices
//! by load are measured the same way at 10 000 servers: a retry that finds
//! every other server busy (it waits in the least loaded one's queue) and
//! a hashed session whose server's queue is full (redispatched to the
//! least loaded available server). And the settle that follows every
//! message, while the backend queue waits and dynamic maxconn holds
//! 10 000 servers below their maxconn.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use usher_core::backend::balance::{Balancer, ConsistentHash, First, LeastConn, PowerOfChoices, SmoothRoundRobin};
use usher_core::backend::{BackendSetup, BackendState, QueueKey, ReserveRequest, Reserved, ServerSetup};
use usher_core::ids::{ServerId, SessionId};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The counting allocator counts every thread: the tests of this file take
/// turns, or one's set-up counts in another's measured cycles.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const WARM_UP: u64 = 2_000;
const COUNTED: u64 = 20_000;

/// Each algorithm with its servers' maxconn: 1 (a grant empties a server,
/// a release refills it: every session changes what the indexes hold),
/// 8 for hashing (pinned sessions would queue on a full server).
fn balancers(n: usize) -> Vec<(&'static str, u32, Box<dyn Balancer>)> {
    let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 3) as u32).collect();
    vec![
        ("roundrobin", 1, Box::new(SmoothRoundRobin::new(n)) as Box<dyn Balancer>),
        ("static-rr", 1, Box::new(SmoothRoundRobin::with_static_weights(&weights))),
        ("leastconn", 1, Box::new(LeastConn::default())),
        ("first", 1, Box::new(First::default())),
        ("random", 1, Box::new(PowerOfChoices::new(2, 7))),
        ("source", 8, Box::new(ConsistentHash::new(0))),
        ("source bounded", 8, Box::new(ConsistentHash::new(125))),
    ]
}

/// `n` servers of `maxconn` with every slot lent, `held` sessions seated
/// at random places so loads differ; then `warm_up + counted` sessions
/// that each reserve and close. Returns the allocations during the
/// counted ones and the time per session.
fn run(n: usize, maxconn: u32, balancer: Box<dyn Balancer>) -> (u64, f64) {
    let setups: Vec<ServerSetup> = (0..n)
        .map(|i| ServerSetup { maxconn, weight: 1 + (i % 3) as u32, maxqueue: 0, backup: i % 10 == 9, minconn: 0 })
        .collect();
    let mut state: BackendState<u64> = BackendState::with_setup(&setups, BackendSetup::default(), balancer);
    for i in 0..n {
        for _ in 0..maxconn {
            assert!(state.credit(ServerId(i)).is_none(), "nobody waits yet");
        }
    }
    let mut session = 0u64;
    let seat = |state: &mut BackendState<u64>, session: &mut u64| -> ServerId {
        *session += 1;
        let client = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + (*session as u32).wrapping_mul(7919)));
        let req = ReserveRequest {
            session: SessionId(*session),
            key: QueueKey::fifo(SessionId(*session)),
            client: Some(client),
            pin: None,
            avoid: None,
        };
        match state.reserve(req, *session) {
            Reserved::Granted { server, .. } => server,
            other => panic!("a free slot was not granted: {other:?}"),
        }
    };
    // A third of the servers hold a session for the whole run.
    for _ in 0..n / 3 {
        seat(&mut state, &mut session);
    }
    let cycle = |state: &mut BackendState<u64>, session: &mut u64| {
        let server = seat(state, session);
        state.released(server, 1);
        assert!(state.credit(server).is_none(), "nobody waits");
    };
    let measured = measure(|| cycle(&mut state, &mut session));
    assert_eq!(state.check(), Ok(()));
    assert_eq!(state.bad_picks(), 0);
    measured
}

/// Runs `cycle` `WARM_UP` times, then `COUNTED` times counting every
/// allocation: the allocations and the time per cycle, in ns.
fn measure(mut cycle: impl FnMut()) -> (u64, f64) {
    for _ in 0..WARM_UP {
        cycle();
    }
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    for _ in 0..COUNTED {
        cycle();
    }
    let elapsed = started.elapsed();
    let stats = region.change();
    ((stats.allocations + stats.reallocations) as u64, elapsed.as_secs_f64() * 1e9 / COUNTED as f64)
}

#[test]
fn a_pick_allocates_nothing_whatever_the_number_of_servers() {
    let _alone = alone();
    // The test harness's own thread may still be writing its first lines
    // while the first region counts: one run, not counted, lets it finish.
    let _ = run(10, 1, Box::new(SmoothRoundRobin::new(10)));
    for n in [10usize, 1_000, 10_000] {
        for (name, maxconn, balancer) in balancers(n) {
            let (allocations, ns) = run(n, maxconn, balancer);
            println!("{n:>6} servers, {name:<15}: {allocations} allocations in {COUNTED} sessions, {ns:.0} ns each");
            assert_eq!(allocations, 0, "{name} with {n} servers allocated {allocations} times in {COUNTED} sessions");
        }
    }
}

/// The core's choice a cycle exercises.
#[derive(Debug, Clone, Copy)]
enum CoreChoice {
    /// Every server busy: a retry leaving server 0 queues on the least
    /// loaded other server, then leaves its queue.
    Retry,
    /// One client's server serves a session and has one queued (its
    /// `maxqueue`): the client's next session is redispatched to the least
    /// loaded available server, then closes.
    Redispatch,
}

/// `n` servers of maxconn 1 (weights 1 to 3), every slot lent; returns the
/// allocations during the counted cycles of `choice` and the time per cycle.
fn run_core_choice(n: usize, choice: CoreChoice) -> (u64, f64) {
    let setups: Vec<ServerSetup> = (0..n)
        .map(|i| ServerSetup { maxconn: 1, weight: 1 + (i % 3) as u32, maxqueue: 1, backup: false, minconn: 0 })
        .collect();
    let (setup, balancer): (BackendSetup, Box<dyn Balancer>) = match choice {
        CoreChoice::Retry => (BackendSetup::default(), Box::new(LeastConn::default())),
        CoreChoice::Redispatch => {
            (BackendSetup { redispatch: true, ..BackendSetup::default() }, Box::new(ConsistentHash::new(0)))
        }
    };
    let mut state: BackendState<u64> = BackendState::with_setup(&setups, setup, balancer);
    for i in 0..n {
        assert!(state.credit(ServerId(i)).is_none(), "nobody waits yet");
    }
    let client = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let request = |session: u64, avoid: Option<ServerId>| ReserveRequest {
        session: SessionId(session),
        key: QueueKey::fifo(SessionId(session)),
        client,
        pin: None,
        avoid,
    };
    let mut session = 0u64;
    match choice {
        CoreChoice::Retry => {
            // Every server serves a session.
            for _ in 0..n {
                session += 1;
                assert!(matches!(state.reserve(request(session, None), session), Reserved::Granted { .. }));
            }
        }
        CoreChoice::Redispatch => {
            // The client's server serves one session and queues one.
            session += 1;
            assert!(matches!(state.reserve(request(session, None), session), Reserved::Granted { .. }));
            session += 1;
            assert!(matches!(state.reserve(request(session, None), session), Reserved::Queued { server: Some(_), .. }));
        }
    }
    let cycle = |state: &mut BackendState<u64>, session: &mut u64| {
        *session += 1;
        match choice {
            CoreChoice::Retry => {
                let decided = state.reserve(request(*session, Some(ServerId(0))), *session);
                assert!(matches!(decided, Reserved::Queued { server: Some(s), .. } if s != ServerId(0)), "{decided:?}");
                assert!(state.cancel(SessionId(*session)).is_some());
            }
            CoreChoice::Redispatch => {
                let Reserved::Granted { server, .. } = state.reserve(request(*session, None), *session) else {
                    panic!("a redispatched session was not granted");
                };
                state.released(server, 1);
                assert!(state.credit(server).is_none(), "nobody waits for it");
            }
        }
    };
    let measured = measure(|| cycle(&mut state, &mut session));
    assert_eq!(state.check(), Ok(()));
    measured
}

#[test]
fn the_cores_own_choices_allocate_nothing_at_ten_thousand_servers() {
    let _alone = alone();
    let _ = run_core_choice(10, CoreChoice::Retry);
    for choice in [CoreChoice::Retry, CoreChoice::Redispatch] {
        let (allocations, ns) = run_core_choice(10_000, choice);
        println!("10000 servers, {choice:?}: {allocations} allocations in {COUNTED} sessions, {ns:.0} ns each");
        assert_eq!(allocations, 0, "{choice:?} allocated {allocations} times in {COUNTED} sessions");
    }
}

/// `n` servers of maxconn 4 and minconn 1 under a `fullconn` far above the
/// load, so dynamic maxconn holds each at 1: each serves one session and
/// holds 3 credits it may not use, and sessions wait — in the backend
/// queue or, with `own_queues`, one pinned in every server's own queue.
/// Each counted cycle is two messages (a session queues, then leaves),
/// each followed by the walk the BackendQueue's settle makes
/// (`set_paused(false)` on a running backend is that walk alone: the
/// settle itself ends with `check()`, O(n), in builds with debug
/// assertions). Returns the allocations and the time per message.
fn run_settle(n: usize, own_queues: bool) -> (u64, f64) {
    let setups: Vec<ServerSetup> =
        (0..n).map(|_| ServerSetup { maxconn: 4, weight: 1, maxqueue: 0, backup: false, minconn: 1 }).collect();
    let setup = BackendSetup { fullconn: 1_000_000, ..BackendSetup::default() };
    let mut state: BackendState<u64> = BackendState::with_setup(&setups, setup, Box::new(LeastConn::default()));
    for i in 0..n {
        for _ in 0..4 {
            assert!(state.credit(ServerId(i)).is_none(), "nobody waits yet");
        }
    }
    let request = |session: u64, pin: Option<ServerId>| ReserveRequest {
        session: SessionId(session),
        key: QueueKey::fifo(SessionId(session)),
        client: None,
        pin,
        avoid: None,
    };
    let pin_of = |i: usize| own_queues.then_some(ServerId(i));
    let queued = |decided: &Reserved<u64>| matches!(decided, Reserved::Queued { server, .. } if *server == pin_of(0));
    for session in 1..=n as u64 {
        let decided = state.reserve(request(session, pin_of(session as usize - 1)), session);
        assert!(matches!(decided, Reserved::Granted { .. }), "one session a server");
    }
    let mut session = n as u64;
    for i in 0..if own_queues { n } else { 1 } {
        session += 1;
        let decided = state.reserve(request(session, pin_of(i)), session);
        assert!(matches!(decided, Reserved::Queued { .. }), "held back: {decided:?}");
    }
    let mut cycle = |state: &mut BackendState<u64>| {
        session += 1;
        assert!(queued(&state.reserve(request(session, pin_of(0)), session)));
        assert!(state.set_paused(false).is_empty(), "dynamic maxconn holds every credit back");
        assert!(state.cancel(SessionId(session)).is_some());
        assert!(state.set_paused(false).is_empty());
    };
    let (allocations, ns_per_cycle) = measure(|| cycle(&mut state));
    assert_eq!(state.check(), Ok(()));
    assert_eq!(state.queued(), if own_queues { n } else { 1 });
    (allocations, ns_per_cycle / 2.0)
}

#[test]
fn a_settle_skips_the_credits_dynamic_maxconn_holds_back() {
    let _alone = alone();
    for (own_queues, waiting) in [(false, "the backend queue"), (true, "every server's own queue")] {
        let (allocations, ns) = run_settle(10_000, own_queues);
        println!(
            "10000 servers, settle held by dynamic maxconn, sessions in {waiting}: {allocations} allocations in {} \
             messages, {ns:.0} ns each",
            2 * COUNTED
        );
        assert_eq!(allocations, 0, "a settle allocated {allocations} times");
    }
}
