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

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use slog::{Drain, OwnedKVList, Record};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const REQUEST: usize = 64;
const REPLY: usize = 64;
/// Sessions before counting: first-time allocations (slabs, maps, the
/// server's and backend's first entries) are not the steady path.
const WARM_UP: u64 = 300;
/// Sessions counted.
const COUNTED: u64 = 1_000;
/// Most allocations (and reallocations) one session may make on the steady
/// path, as measured (the test prints the figure). Most are the actors'
/// messages: actix boxes every message and its mailbox queue node.
const CEILING: f64 = 23.0;
/// Allocations of the broker's periodic work (the watchdog's tick, the
/// stats book's window rotation) that happen to fall inside the counted
/// window, spread over its sessions: a few in a thousand sessions. One more
/// allocation made by every session adds 1.0, far above it.
const BACKGROUND: f64 = 0.05;
const DEADLINE: Duration = Duration::from_secs(30);

/// Counts access records ("session") and lets the test wait for a count,
/// without allocating.
#[derive(Clone, Default)]
struct SessionCounter(Arc<(Mutex<u64>, Condvar)>);

impl SessionCounter {
    fn wait_for(&self, want: u64) {
        let (count, changed) = &*self.0;
        let deadline = Instant::now() + DEADLINE;
        let mut done = count.lock().expect("counter");
        while *done < want {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| {
                panic!("only {} of {want} sessions ended within {DEADLINE:?}", *done);
            });
            done = changed.wait_timeout(done, left).expect("counter").0;
        }
    }
}

impl Drain for SessionCounter {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _: &OwnedKVList) -> Result<(), slog::Never> {
        if record.msg().as_str() == Some("session") {
            let (count, changed) = &*self.0;
            *count.lock().expect("counter") += 1;
            changed.notify_all();
        }
        Ok(())
    }
}

/// A server that reads the request, answers and closes, one connection at
/// a time (the client runs one session at a time).
fn serve(listener: TcpListener) {
    let mut request = [0u8; REQUEST];
    let reply = [b'r'; REPLY];
    while let Ok((mut stream, _)) = listener.accept() {
        if stream.read_exact(&mut request).is_ok() {
            let _ = stream.write_all(&reply);
        }
    }
}

/// One session through the broker: send, read the reply to its end, close.
fn session(broker: SocketAddr) {
    let mut stream = TcpStream::connect(broker).expect("connect to the broker");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream.write_all(&[b'q'; REQUEST]).expect("send the request");
    let mut reply = [0u8; REPLY + 1];
    let mut got = 0;
    loop {
        match stream.read(&mut reply[got..]).expect("read the reply") {
            0 => break,
            n => got += n,
        }
    }
    assert_eq!(got, REPLY, "the reply came whole, then the end");
    let _ = stream.shutdown(Shutdown::Both);
}

#[test]
fn a_short_session_makes_a_bounded_number_of_allocations() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let server_addr = server.local_addr().expect("server address");
    std::thread::spawn(move || serve(server));

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
        session(broker);
    }
    counter.wait_for(WARM_UP);
    let region = Region::new(GLOBAL);
    for _ in 0..COUNTED {
        session(broker);
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
