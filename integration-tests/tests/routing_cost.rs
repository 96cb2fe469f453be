//! What routing costs a session, in heap allocations on the steady path
//! (the pattern of `session_allocations.rs`: this binary counts every
//! allocation of the process, so it is alone in its file and keeps the
//! client, the server and the log off the heap while it counts).
//!
//! Three frontends on one broker, measured one after the other: without
//! rules (routing must cost nothing), with a source rule (no ClientHello
//! read), and with an SNI rule whose client sends a ClientHello. The
//! figures are printed; README (Routing) quotes them.

use std::net::{SocketAddr, TcpListener};

use integration_tests::counted_sessions::{serve, session, SessionCounter};
use slog::Drain;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const WARM_UP: u64 = 300;
const COUNTED: u64 = 1_000;
/// `session_allocations.rs`'s ceiling for a session without routing.
const CEILING: f64 = 23.0;
/// Periodic work of the broker that falls inside the counted window (see
/// `session_allocations.rs`): a few allocations in a thousand sessions.
const BACKGROUND: f64 = 0.05;
/// Most allocations reading and parsing a ClientHello may add: the parsed
/// record, handshake and extension lists of `tls-parser`, the server name
/// and the ALPN list kept.
const PEEK_EXTRA: f64 = 12.0;

/// A TLS 1.3-style ClientHello record for `sni`, offering ALPN h2.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut ext = vec![0x00, 0x00];
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0x00, 0x10, 0x00, 0x05, 0x00, 0x03, 0x02, b'h', b'2']);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    record.push(0x01);
    record.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    record.extend_from_slice(&body);
    record
}

/// Allocations (and reallocations) per session through `broker` with `request`.
fn measure(broker: SocketAddr, request: &[u8], counter: &SessionCounter, ended: &mut u64) -> f64 {
    for _ in 0..WARM_UP {
        session(broker, request);
    }
    *ended += WARM_UP;
    counter.wait_for(*ended);
    let region = Region::new(GLOBAL);
    for _ in 0..COUNTED {
        session(broker, request);
    }
    *ended += COUNTED;
    counter.wait_for(*ended);
    let stats = region.change();
    (stats.allocations + stats.reallocations) as f64 / COUNTED as f64
}

#[test]
fn routing_costs_nothing_without_rules_and_little_with_a_peek() {
    let hello = client_hello("api.example.com");
    let plain = vec![b'q'; hello.len()];
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let server_addr = server.local_addr().expect("server address");
    let request_len = hello.len();
    std::thread::spawn(move || serve(server, request_len));

    let settings = usher_core::config::from_toml_str(&format!(
        "[global]\nworkers = 1\n\
         [frontends.plain]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [frontends.source]\nbind = [\"127.0.0.1:0\"]\nbackend = \"other\"\n\
         [[frontends.source.routes]]\nsource = [\"127.0.0.0/8\"]\nbackend = \"app\"\n\
         [frontends.sni]\nbind = [\"127.0.0.1:0\"]\nbackend = \"other\"\n\
         [[frontends.sni.routes]]\nsni = [\"*.example.com\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{server_addr}\"\n\
         [backends.other.servers.s1]\naddress = \"127.0.0.1:9\"\n"
    ))
    .expect("valid configuration");
    let listeners = usher_core::bind_all(&settings).expect("bind the frontends");
    let addr = |name: &str| listeners.0[name][0].local_addr().expect("address");
    let (plain_addr, source_addr, sni_addr) = (addr("plain"), addr("source"), addr("sni"));
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

    let mut ended = 0;
    let without = measure(plain_addr, &plain, &counter, &mut ended);
    let by_source = measure(source_addr, &plain, &counter, &mut ended);
    let by_sni = measure(sni_addr, &hello, &counter, &mut ended);
    println!(
        "allocations per session: no rules {without:.2}, source rule {by_source:.2}, SNI rule with a peek {by_sni:.2}"
    );
    assert!(without <= CEILING + BACKGROUND, "no rules: {without:.2} allocations, more than {CEILING}");
    assert!(by_source <= without + 0.5, "a source rule allocates: {by_source:.2} against {without:.2}");
    assert!(by_sni <= without + PEEK_EXTRA, "the peek costs {:.2} allocations", by_sni - without);
}
