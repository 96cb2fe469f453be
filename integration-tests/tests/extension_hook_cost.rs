//! What one no-op session hook costs a session, in heap allocations, next
//! to a frontend without hooks of the same broker, counted as
//! `session_allocations.rs` counts (alone in its file for the same reason:
//! it counts every allocation of the process).

use std::net::TcpListener;

use integration_tests::counted_sessions::{serve, session, SessionCounter};
use slog::Drain;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use usher_core::{HookRegistry, SessionHook};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const REQUEST: usize = 64;
const WARM_UP: u64 = 300;
const COUNTED: u64 = 1_000;
/// A no-op hook's allocations per session: its sessions' hook state (one
/// box) and the list of the hooks' contexts (one vector).
const HOOK_COST: f64 = 2.0;
/// The broker's periodic work falling inside a counted window.
const BACKGROUND: f64 = 0.1;

struct NoOp;

impl SessionHook for NoOp {}

#[test]
fn a_no_op_hook_costs_a_fixed_number_of_allocations_per_session() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let server_addr = server.local_addr().expect("server address");
    std::thread::spawn(move || serve(server, REQUEST));

    let mut hooks = HookRegistry::default();
    hooks.hook("no-op", NoOp);
    let sources = usher_core::config::ConfigSources::inline(&format!(
        "[global]\nworkers = 1\n\
         [frontends.plain]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [frontends.hooked]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nhooks = [\"no-op\"]\n\
         [backends.app.servers.s1]\naddress = \"{server_addr}\"\n"
    ));
    let settings = usher_core::config::load_with(&sources, &hooks).expect("valid configuration");
    let listeners = usher_core::bind_all(&settings).expect("bind the frontends");
    let addr = |name: &str| listeners.0[name][0].local_addr().expect("address");
    let (plain, hooked) = (addr("plain"), addr("hooked"));
    let counter = SessionCounter::default();
    let log = slog::Logger::root(counter.clone().fuse(), slog::o!());
    let extensions = usher_core::Extensions { hooks, ..usher_core::Extensions::default() };
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(usher_core::run(settings, listeners, log, extensions, std::future::pending()))
    });

    let mut done = 0;
    let mut per_session = |broker| {
        for _ in 0..WARM_UP {
            session(broker, &[b'q'; REQUEST]);
        }
        done += WARM_UP;
        counter.wait_for(done);
        let region = Region::new(GLOBAL);
        for _ in 0..COUNTED {
            session(broker, &[b'q'; REQUEST]);
        }
        done += COUNTED;
        counter.wait_for(done);
        let stats = region.change();
        (stats.allocations + stats.reallocations) as f64 / COUNTED as f64
    };
    let without = per_session(plain);
    let with = per_session(hooked);
    println!("per session: {without:.2} allocations without hooks, {with:.2} with one no-op hook");
    assert!(
        with - without <= HOOK_COST + BACKGROUND,
        "one no-op hook costs {:.2} allocations per session, more than {HOOK_COST}",
        with - without
    );
}
