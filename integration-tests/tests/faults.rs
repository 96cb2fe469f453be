//! Fault injection on real sockets: a server that never answers, one whose
//! backlog is full, one that resets mid-stream or closes at once, one killed
//! under load; a client that resets, half-closes or stops reading. Each
//! test injects its fault, checks the access records' termination codes
//! (README, "Termination codes"), and ends with the same check that
//! everything is back (`integration_tests::at_rest`): no live or queued
//! session anywhere, every slot lent again, no server over its maxconn.
//!
//! One test here counts the heap of the whole process (the broker runs in
//! process), so the tests of this file run one at a time (`SERIAL`).

use std::alloc::System;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cap::Cap;
use integration_tests::at_rest::codes;
use integration_tests::{
    assert_everything_back, Fault, FaultyServer, FullBacklogServer, ServerUnderTest, TestBroker, DEADLINE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Held by every test of this file: the heap measurement must not see
/// another test's allocations.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// One frontend `web` to backend `app` with the given servers
/// `(name, address, maxconn)`; `backend_extra` goes into `[backends.app]`.
fn config(global: &str, backend_extra: &str, servers: &[(&str, SocketAddr, u32)]) -> String {
    let mut toml = format!(
        "[global]\n{global}\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\n[backends.app]\n{backend_extra}\n"
    );
    for (name, addr, maxconn) in servers {
        toml.push_str(&format!("[backends.app.servers.{name}]\naddress = \"{addr}\"\nmaxconn = {maxconn}\n"));
    }
    toml
}

fn one(server: &dyn integration_tests::at_rest::ConnectionCounts) -> [ServerUnderTest<'_>; 1] {
    [ServerUnderTest { backend: "app", server: "s1", counts: server }]
}

/// Reads until EOF or a reset; returns what arrived.
async fn read_to_end_or_reset(client: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(DEADLINE, client.read(&mut buf)).await.expect("the client is closed in time") {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Resets the connection: `SO_LINGER` 0, then close.
fn reset(client: TcpStream) {
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).expect("linger 0 → RST");
    drop(client);
}

/// A server that accepts and never answers: usher closes the session at
/// `timeout.server` (`sD`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_closed_at_timeout_server() {
    let _serial = SERIAL.lock().await;
    let server = FaultyServer::start(Fault::Silent);
    let broker = TestBroker::start_with_admin(&config(
        "",
        "[backends.app.timeout]\nserver = \"300ms\"\n",
        &[("s1", server.addr, 2)],
    ));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    client.write_all(b"anyone there?").await.expect("write");
    let started = Instant::now();
    let answer = read_to_end_or_reset(&mut client).await;
    println!("closed {:?} after the request", started.elapsed());
    assert!(answer.is_empty(), "a silent server answered {answer:?}");
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "sD", "{record:?}");
    assert!(record.int("total_ms") >= 300, "closed before timeout.server: {record:?}");
    assert_eq!(record.int("bytes_from_client"), 13, "{record:?}");
    assert_everything_back(&broker, &one(&server), &codes(&[("sD", 1)]), "silent server").await;
    broker.stop().await.expect("clean stop");
}

/// A server whose listen backlog is full and which never accepts: every
/// attempt times out, and after the configured retries the session ends
/// `sC`, its record counting the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_full_backlog_times_out_after_the_retries() {
    let _serial = SERIAL.lock().await;
    let server = FullBacklogServer::start().await;
    let broker = TestBroker::start_with_admin(&config(
        "",
        "retries = 2\n[backends.app.timeout]\nconnect = \"200ms\"\n",
        &[("s1", server.addr, 2)],
    ));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    client.write_all(b"hello").await.expect("write");
    let started = Instant::now();
    let answer = read_to_end_or_reset(&mut client).await;
    println!("closed {:?} after the request", started.elapsed());
    assert!(answer.is_empty());
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "sC", "{record:?}");
    assert_eq!(record.int("retries"), 2, "{record:?}");
    assert_eq!(record.get("server"), "s1", "{record:?}");
    assert_eq!(record.int("connect_ms"), -1, "never connected: {record:?}");
    assert!(record.int("total_ms") >= 3 * 200, "three attempts of 200 ms each: {record:?}");
    assert_everything_back(&broker, &one(&server), &codes(&[("sC", 1)]), "full backlog").await;
    broker.stop().await.expect("clean stop");
}

/// A server that sends some bytes and then resets: the client gets those
/// bytes, then its connection ends; the record says `SD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reset_mid_stream_ends_sd() {
    let _serial = SERIAL.lock().await;
    let server = FaultyServer::start(Fault::ResetAfter { bytes: 1000 });
    let broker = TestBroker::start_with_admin(&config("", "", &[("s1", server.addr, 2)]));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    client.write_all(b"go").await.expect("write");
    let mut first = vec![0u8; 1000];
    client.read_exact(&mut first).await.expect("the bytes sent before the reset arrive");
    let rest = read_to_end_or_reset(&mut client).await;
    assert!(rest.is_empty(), "{} bytes after the reset", rest.len());
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "SD", "{record:?}");
    assert_eq!(record.int("bytes_from_server"), 1000, "{record:?}");
    assert_everything_back(&broker, &one(&server), &codes(&[("SD", 1)]), "server reset").await;
    broker.stop().await.expect("clean stop");
}

/// A server that closes each connection right after accepting it (a FIN,
/// nothing sent): usher passes the close on; once the client closes too,
/// both sides closed normally, which the README's table calls `--`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_at_accept_passes_its_close_on() {
    let _serial = SERIAL.lock().await;
    let server = FaultyServer::start(Fault::CloseAtAccept);
    let broker = TestBroker::start_with_admin(&config("", "", &[("s1", server.addr, 2)]));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    let answer = read_to_end_or_reset(&mut client).await;
    assert!(answer.is_empty());
    assert!(broker.logs.sessions().is_empty(), "the session ended before the client closed its side");
    drop(client);
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "--", "{record:?}");
    assert_eq!(record.get("server"), "s1", "{record:?}");
    assert_eq!((record.int("bytes_from_client"), record.int("bytes_from_server")), (0, 0), "{record:?}");
    assert_everything_back(&broker, &one(&server), &codes(&[("--", 1)]), "close at accept").await;
    broker.stop().await.expect("clean stop");
}

/// Live sessions on a server killed under them.
const LIVE: usize = 50;
/// Sessions queued for it when it is killed.
const QUEUED: usize = 20;

/// A server with 50 live sessions and 20 queued is killed: its listener
/// closes and every connection it holds is reset. The live sessions end
/// `SD`; every queued client ends `SC` (its connects are refused), and
/// nothing is left behind. Whether a refused session holds its slot while
/// it pauses, or the server is marked down and its queue refused at once,
/// this outcome must hold; the time the last queued client took is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_ends_live_sd_and_queued_sc() {
    let _serial = SERIAL.lock().await;
    let mut server = FaultyServer::start(Fault::Echo);
    let broker = TestBroker::start_with_admin(&config(
        "",
        "retries = 1\nredispatch = false\n[backends.app.timeout]\nconnect = \"1s\"\n",
        &[("s1", server.addr, LIVE as u32)],
    ));
    let addr = broker.addr("web");
    let mut live = Vec::new();
    for i in 0..LIVE {
        live.push(integration_tests::seated(addr, i as u8).await);
    }
    let mut queued = Vec::new();
    for position in 0..QUEUED {
        let client = TcpStream::connect(addr).await.expect("connect");
        broker.logs.wait_for("session queued", |r| r.int("position") == position as i64).await;
        queued.push(client);
    }
    assert_eq!(server.current(), LIVE as u64, "the live sessions are at the server");

    let killed = Instant::now();
    server.stop().await;
    let ends: Vec<_> = live
        .into_iter()
        .chain(queued)
        .map(|mut c| tokio::spawn(async move { read_to_end_or_reset(&mut c).await.len() }))
        .collect();
    for end in ends {
        assert_eq!(end.await.expect("client task"), 0, "a client got bytes after the kill");
    }
    println!("the last of {QUEUED} queued clients was closed {:?} after the kill", killed.elapsed());

    let records = broker.logs.wait_sessions(LIVE + QUEUED).await;
    for r in &records {
        let was_queued = r.int("backend_queue_pos") >= 0;
        let expected = if was_queued { "SC" } else { "SD" };
        assert_eq!(r.termination(), expected, "queued {was_queued}: {r:?}");
    }
    assert_everything_back(
        &broker,
        &one(&server),
        &codes(&[("SD", LIVE as u64), ("SC", QUEUED as u64)]),
        "server killed",
    )
    .await;
    broker.stop().await.expect("clean stop");
}

/// A client that resets in the middle of a transfer: `CD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_mid_transfer_ends_cd() {
    let _serial = SERIAL.lock().await;
    let server = FaultyServer::start(Fault::Echo);
    let broker = TestBroker::start_with_admin(&config("", "", &[("s1", server.addr, 2)]));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    let chunk = vec![b'x'; 64 * 1024];
    let mut echo = vec![0u8; chunk.len()];
    for _ in 0..4 {
        client.write_all(&chunk).await.expect("write");
        client.read_exact(&mut echo).await.expect("echo");
    }
    // More in flight both ways when the reset comes.
    client.write_all(&chunk).await.expect("write");
    reset(client);
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "CD", "{record:?}");
    assert!(record.int("bytes_from_client") >= 4 * 64 * 1024, "{record:?}");
    assert_everything_back(&broker, &one(&server), &codes(&[("CD", 1)]), "client reset").await;
    broker.stop().await.expect("clean stop");
}

/// A client that sends its request, half-closes and keeps reading gets the
/// server's whole answer, and the session ends normally (`--`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_gets_the_whole_answer() {
    let _serial = SERIAL.lock().await;
    let answer: Arc<Vec<u8>> = Arc::new((0..4 << 20).map(|i: u32| (i % 251) as u8).collect());
    let server = FaultyServer::start(Fault::AnswerAfterEof { answer: answer.clone() });
    let broker = TestBroker::start_with_admin(&config("", "", &[("s1", server.addr, 2)]));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut got)).await.expect("answered in time").expect("read");
    assert!(got == *answer, "the answer differs: {} bytes of {}", got.len(), answer.len());
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "--", "{record:?}");
    assert_eq!(record.int("bytes_from_server"), answer.len() as i64, "{record:?}");
    assert_everything_back(&broker, &one(&server), &codes(&[("--", 1)]), "client half-close").await;
    broker.stop().await.expect("clean stop");
}

/// Largest relay buffer per direction in the back-pressure test (the
/// default): with the small socket buffers below, reads from the server
/// reach it, not much more.
const BUFSIZE_MAX: usize = 256 << 10;
/// First bulk buffer (the default); a peak twice as large shows the buffer grew.
const BUFSIZE: usize = 32 << 10;
/// What the server tries to send to a client that stopped reading.
const STREAM: u64 = 100 << 20;
/// The server's and the client's own socket buffers, set small and fixed
/// (no autotuning) so that what the kernel may hold is known.
const TEST_SOCKET_BUFFER: usize = 64 << 10;
/// Heap the process may gain beyond usher's two relay buffers: the
/// server's read buffer, tokio's and the test's bookkeeping.
const HEAP_SLACK: usize = 512 << 10;
/// Consecutive unchanged readings of the server's byte count that mean it
/// is blocked.
const STALL_READINGS: usize = 10;

/// `net.ipv4.tcp_{rmem,wmem}` maximum: the most autotuning gives one of
/// usher's sockets.
fn tcp_max(which: &str) -> u64 {
    let path = format!("/proc/sys/net/ipv4/tcp_{which}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path}: expected three numbers, found {text:?}"))
}

/// Waits until the server's byte count stops moving (nothing signals that
/// it is blocked, so it is read until it holds still), noting the heap's
/// peak meanwhile.
async fn wait_for_stall(server: &FaultyServer, heap_peak: &mut usize) {
    let deadline = Instant::now() + DEADLINE;
    let (mut last, mut unchanged) = (server.written(), 0);
    while unchanged < STALL_READINGS {
        assert!(Instant::now() < deadline, "the server never stalled: {} bytes written", server.written());
        tokio::time::sleep(Duration::from_millis(50)).await;
        *heap_peak = (*heap_peak).max(ALLOCATOR.allocated());
        let now = server.written();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
    }
}

/// A client that stops reading while the server streams 100 MiB: usher
/// holds at most `bufsize_max` per direction for the session, and the
/// server is back-pressured — it cannot write more than the sockets'
/// buffers and usher's two relay buffers hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_back_pressures_the_server() {
    let _serial = SERIAL.lock().await;
    let server = FaultyServer::start(Fault::Stream { total: STREAM, sndbuf: TEST_SOCKET_BUFFER });
    let broker = TestBroker::start_with_admin(&config(
        &format!("bufsize = {BUFSIZE}\nbufsize_max = {BUFSIZE_MAX}\n"),
        "",
        &[("s1", server.addr, 2)],
    ));
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(TEST_SOCKET_BUFFER as u32).expect("SO_RCVBUF");
    let mut client = socket.connect(broker.addr("web")).await.expect("connect");
    // The session is seated and the server's connection task runs before
    // the baseline; the client's buffer is allocated before it too.
    server.wait_until("usher connected", |s| s.accepted() == 1).await;
    let mut taken = vec![0u8; 4 << 20];
    let baseline = ALLOCATOR.allocated();
    let mut heap_peak = baseline;

    // The client reads nothing at first, so the server fills every buffer
    // on the way and stalls; then it reads 4 MiB. The relay finds a full
    // socket each time it reads and doubles its buffer: growth that does
    // not depend on which side the scheduler favours (reading right away,
    // a relay that keeps pace with the client may never fill a buffer).
    client.write_all(b"stream please").await.expect("write");
    wait_for_stall(&server, &mut heap_peak).await;
    let mut got = 0;
    while got < taken.len() {
        let n = client.read(&mut taken[got..]).await.expect("the stream flows");
        assert!(n > 0, "the session closed after {got} bytes");
        got += n;
        heap_peak = heap_peak.max(ALLOCATOR.allocated());
    }
    assert!(
        heap_peak >= baseline + 2 * BUFSIZE,
        "the relay's buffer never grew (peak {heap_peak}, baseline {baseline}): this test would prove nothing"
    );

    // The client stops reading again: the server stalls for good.
    wait_for_stall(&server, &mut heap_peak).await;
    let written = server.written();
    let in_flight = written - taken.len() as u64;
    // Server send buffer (the kernel may double SO_SNDBUF), usher's two
    // autotuned sockets, the client's receive buffer (doubled likewise),
    // usher's relay buffers.
    let bound = 2 * TEST_SOCKET_BUFFER as u64
        + tcp_max("rmem")
        + tcp_max("wmem")
        + 2 * TEST_SOCKET_BUFFER as u64
        + 2 * BUFSIZE_MAX as u64;
    let heap = heap_peak.saturating_sub(baseline);
    println!(
        "stalled after {written} bytes written ({in_flight} beyond what the client read; bound {bound}); \
         the heap grew by at most {heap} bytes"
    );
    assert!(written < STREAM, "the server wrote all {STREAM} bytes to a client that stopped reading");
    assert!(in_flight <= bound, "{in_flight} bytes in flight, more than the buffers hold ({bound})");
    assert!(
        heap <= 2 * BUFSIZE_MAX + HEAP_SLACK,
        "usher's heap grew by {heap} bytes for one stalled session; at most 2 × bufsize_max ({BUFSIZE_MAX}) expected"
    );
    assert!(broker.logs.sessions().is_empty(), "the session must still be open while it is measured");

    drop(client);
    let record = broker.logs.wait_for("session", |_| true).await;
    // The client closed with unread bytes: its kernel resets the connection.
    assert_eq!(record.termination(), "CD", "{record:?}");
    assert_everything_back(&broker, &one(&server), &codes(&[("CD", 1)]), "stalled client").await;
    broker.stop().await.expect("clean stop");
}
