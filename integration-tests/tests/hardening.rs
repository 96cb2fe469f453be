//! Hardening on real sockets: durations past what the clock can hold,
//! set in code where validation cannot refuse them, serve sessions normally;
//! a queued client whose bytes wait unread in its socket is still watched, so
//! its reset leaves the queue at once.

use std::time::{Duration, Instant};

use integration_tests::sockets::unread_bytes;
use integration_tests::{seated, Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usher_core::Settings;

fn one_server(server: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n{extra}\n\
         [backends.app.servers.s1]\naddress = \"{server}\"\nmaxconn = 1\n"
    )
}

/// Connects a client and waits until the broker logged it as queued at `position`.
async fn queued_client(broker: &TestBroker, position: i64) -> TcpStream {
    let client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    broker.logs.wait_for("session queued", |r| r.int("position") == position).await;
    client
}

/// `Duration::MAX` as every session timeout: no deadline the clock can
/// represent, so no deadline at all — never a panic that resets the client
/// and loses its access record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_past_the_clock_set_in_code_serve_sessions_normally() {
    let server = TestBackend::start(Behavior::Echo);
    let mut settings: Settings =
        usher_core::config::from_toml_str(&one_server(server.addr, "")).expect("valid base configuration");
    for frontend in &mut settings.frontends {
        frontend.timeout.client = Some(Duration::MAX);
        frontend.stress.timeout.client = Some(Duration::MAX);
        frontend.stress.timeout.queue = Some(Duration::MAX);
    }
    for backend in &mut settings.backends {
        backend.timeout.queue = Some(Duration::MAX);
        backend.timeout.connect = Some(Duration::MAX);
        backend.timeout.server = Some(Duration::MAX);
    }
    let broker = TestBroker::start_settings(settings);

    // Relaying under the huge client and server timeouts.
    let holder = seated(broker.addr("web"), b'H').await;
    // Queued under the huge queue timeout, then served.
    let mut waiter = queued_client(&broker, 0).await;
    waiter.write_all(b"queued").await.expect("write");
    waiter.shutdown().await.expect("half-close");
    drop(holder);
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, waiter.read_to_end(&mut reply)).await.expect("served in time").expect("read");
    assert_eq!(reply, b"queued");

    let records = broker.logs.wait_sessions(2).await;
    for r in &records {
        assert_eq!(r.termination(), "--", "{r:?}");
    }
    let queued = records.iter().find(|r| r.int("backend_queue_pos") == 0).expect("the queued session's record");
    assert_eq!(queued.int("bytes_from_client"), 6);
}

/// The smallest `global.bufsize`: the clients below send several times it.
const BUFSIZE: usize = 1024;

/// A broker whose one server takes one session, with a queue timeout long
/// enough that only the client watch can end a wait within a test.
fn broker_with_a_long_queue(server: std::net::SocketAddr) -> TestBroker {
    TestBroker::start(&format!(
        "[global]\nbufsize = {BUFSIZE}\n{}[backends.app.timeout]\nqueue = \"60s\"\n",
        one_server(server, "")
    ))
}

/// Waits until every one of the `sent` bytes `client` wrote sits in the
/// broker's socket, unread: the watch peeks and never reads, so the bytes
/// wait there for the relay. The kernel's receive queue is the readiness
/// signal.
async fn until_the_bytes_wait_unread(broker: &TestBroker, client: &TcpStream, sent: usize) {
    let (front, local) = (broker.addr("web").port(), client.local_addr().expect("local address").port());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let unread = unread_bytes(front, local);
        // A FIN received counts one in the kernel's receive queue.
        if unread.is_some_and(|n| n == sent as u64 || n == sent as u64 + 1) {
            return;
        }
        assert!(Instant::now() < deadline, "the bytes never arrived: {unread:?} bytes unread of {sent}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A queued client that already sent more than `bufsize` bytes is still
/// watched: its reset ends the wait at once (`CQ`), not at `timeout.queue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_past_bufsize_that_resets_leaves_at_once() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = broker_with_a_long_queue(server.addr);
    let _holder = seated(broker.addr("web"), b'H').await;

    let mut quitter = queued_client(&broker, 0).await;
    let sent = 4 * BUFSIZE;
    quitter.write_all(&vec![b'x'; sent]).await.expect("write");
    until_the_bytes_wait_unread(&broker, &quitter, sent).await;
    socket2::SockRef::from(&quitter).set_linger(Some(Duration::ZERO)).expect("linger 0 → RST");
    let reset_at = Instant::now();
    drop(quitter);

    // Well before the 60 s queue timeout.
    let records = broker
        .logs
        .wait_until(Duration::from_secs(10), "the reset client's CQ", |rs| {
            rs.iter().any(|r| r.is_session() && r.termination() == "CQ")
        })
        .await;
    let noticed = reset_at.elapsed();
    println!("reset noticed after {noticed:?}");
    let left = records.iter().find(|r| r.is_session() && r.termination() == "CQ").expect("CQ record");
    assert_eq!(left.int("backend_queue_pos"), 0, "{left:?}");
    assert_eq!(left.get("server"), "-", "{left:?}");
    assert_eq!(server.accepted(), 1, "the reset client reached the server");
}

/// The other side of the rule: a queued client past `bufsize` that
/// half-closes has not left. It stays queued and every byte is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_past_bufsize_that_half_closes_is_served_whole() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = broker_with_a_long_queue(server.addr);
    let holder = seated(broker.addr("web"), b'H').await;

    let mut polite = queued_client(&broker, 0).await;
    let sent: Vec<u8> = (0..4 * BUFSIZE).map(|i| (i % 251) as u8).collect();
    polite.write_all(&sent).await.expect("write");
    polite.shutdown().await.expect("half-close");
    until_the_bytes_wait_unread(&broker, &polite, sent.len()).await;

    drop(holder);
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, polite.read_to_end(&mut reply)).await.expect("served in time").expect("read");
    assert!(reply == sent, "echo differs: {} bytes back of {}", reply.len(), sent.len());
    let record = broker.logs.wait_for("session", |r| r.int("backend_queue_pos") == 0).await;
    assert_eq!(record.termination(), "--", "{record:?}");
    assert_eq!(record.int("bytes_from_client"), sent.len() as i64);
}
