//! How many heap allocations one short session costs the broker on its
//! steady path (the bench's connrate session: the client sends 64 bytes,
//! the server answers 64 and closes, the client closes). Every allocation
//! is work a proxy doing a connection per request repeats thousands of
//! times a second, so the count is held to a fixed ceiling.
//!
//! This test binary counts every allocation of the process, so it is alone
//! in its file and keeps everything but the broker off the heap while it
//! counts: the client and the server are plain blocking sockets on their
//! own threads, and the broker's log goes to a drain that only counts
//! access records (the daemon's own drains cost what they cost whatever
//! the session does).

use std::net::TcpListener;

use integration_tests::counted_sessions::{serve, session, SessionCounter};
use slog::Drain;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const REQUEST: usize = 64;
/// Sessions before counting: first-time allocations (slabs, maps, the
/// server's and backend's first entries) are not the steady path.
const WARM_UP: u64 = 300;
/// Sessions counted.
const COUNTED: u64 = 1_000;
/// Most allocations (and reallocations) one session may make on the steady
/// path, as measured (the test prints the figure). Most are the actors'
/// messages: actix boxes every message and its mailbox queue node.
const CEILING: f64 = 22.0;
/// Allocations of the broker's periodic work (the watchdog's tick, the
/// stats book's window rotation) that happen to fall inside the counted
/// window, spread over its sessions: a few in a thousand sessions. One more
/// allocation made by every session adds 1.0, far above it.
const BACKGROUND: f64 = 0.05;

#[test]
fn a_short_session_makes_a_bounded_number_of_allocations() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let server_addr = server.local_addr().expect("server address");
    std::thread::spawn(move || serve(server, REQUEST));

    let settings = usher_core::config::from_toml_str(&format!(
        "[global]\nworkers = 1\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{server_addr}\"\n"
    ))
    .expect("valid configuration");
    let listeners = usher_core::bind_all(&settings).expect("bind the frontend");
    let broker = listeners.0.values().flatten().next().expect("one listener").local_addr().expect("address");
    let counter = SessionCounter::default();
    let log = slog::Logger::root(counter.clone().fuse(), slog::o!());
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(usher_core::run(
            settings,
            listeners,
            log,
            usher_core::Extensions::default(),
            std::future::pending(),
        ))
    });

    for _ in 0..WARM_UP {
        session(broker, &[b'q'; REQUEST]);
    }
    counter.wait_for(WARM_UP);
    let region = Region::new(GLOBAL);
    for _ in 0..COUNTED {
        session(broker, &[b'q'; REQUEST]);
    }
    counter.wait_for(WARM_UP + COUNTED);
    let stats = region.change();
    let per_session = stats.allocations as f64 / COUNTED as f64;
    let reallocations = stats.reallocations as f64 / COUNTED as f64;
    println!(
        "per session: {per_session:.2} allocations, {reallocations:.2} reallocations, {:.0} bytes",
        stats.bytes_allocated as f64 / COUNTED as f64
    );
    assert!(
        per_session + reallocations <= CEILING + BACKGROUND,
        "a session makes {per_session:.2} allocations and {reallocations:.2} reallocations, \
         more than the {CEILING} allowed"
    );
}
