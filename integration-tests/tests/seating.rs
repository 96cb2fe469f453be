//! Seating and queueing on real sockets: maxconn is never exceeded, every
//! client is served, queues are FIFO, timeouts and aborts leave the queue.

use std::time::Duration;

use integration_tests::{request, seated, Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_backend(servers: &[(&str, std::net::SocketAddr, u32)], backend_extra: &str) -> String {
    let mut toml =
        format!("[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\n[backends.app]\n{backend_extra}\n");
    for (name, addr, maxconn) in servers {
        toml.push_str(&format!("[backends.app.servers.{name}]\naddress = \"{addr}\"\nmaxconn = {maxconn}\n"));
    }
    toml
}

/// 2 servers with maxconn 1, 200 clients at once, each held
/// ~10 ms: all served, no server ever sees 2 connections, no queue timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_of_one_slot_serve_200_clients() {
    let hold = Behavior::Reply { hold: Duration::from_millis(10), reply: b"ok" };
    let (s1, s2) = (TestBackend::start(hold.clone()), TestBackend::start(hold));
    let broker = TestBroker::start(&one_backend(&[("s1", s1.addr, 1), ("s2", s2.addr, 1)], ""));
    let addr = broker.addr("web");

    let clients: Vec<_> = (0..200).map(|_| tokio::spawn(request(addr, b"hi"))).collect();
    for client in clients {
        let reply = tokio::time::timeout(DEADLINE, client).await.expect("served in time").expect("task");
        assert_eq!(reply.expect("reply"), b"ok");
    }
    let records = broker.logs.wait_sessions(200).await;
    assert!(records.iter().all(|r| r.termination() == "--"), "all end normally");
    assert_eq!(s1.peak(), 1, "s1 saw more than maxconn");
    assert_eq!(s2.peak(), 1, "s2 saw more than maxconn");
    assert_eq!(s1.accepted() + s2.accepted(), 200);
    assert!(records.iter().any(|r| r.int("backend_queue_pos") >= 0), "some waited in the queue");
    broker.stop().await.expect("clean stop");
}

/// Connects a client and waits until the broker logged it as queued at `position`.
async fn queued_client(broker: &TestBroker, position: i64) -> TcpStream {
    let client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    broker.logs.wait_for("session queued", |r| r.int("position") == position).await;
    client
}

/// Clients queued in a known order are served in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_are_served_in_arrival_order() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&one_backend(&[("s1", server.addr, 1)], ""));
    let holder = seated(broker.addr("web"), b'H').await;

    let mut waiters = Vec::new();
    for i in 0..6u8 {
        let mut client = queued_client(&broker, i64::from(i)).await;
        waiters.push(tokio::spawn(async move {
            client.write_all(&[b'0' + i]).await.expect("write");
            client.shutdown().await.expect("half-close");
            let mut echo = Vec::new();
            client.read_to_end(&mut echo).await.expect("read");
            echo
        }));
    }
    drop(holder);
    for (i, w) in waiters.into_iter().enumerate() {
        assert_eq!(w.await.expect("task"), vec![b'0' + i as u8]);
    }
    let order: Vec<Vec<u8>> = server.first_bytes();
    let expected: Vec<Vec<u8>> = std::iter::once(b"H".to_vec()).chain((0..6u8).map(|i| vec![b'0' + i])).collect();
    assert_eq!(order, expected, "served out of arrival order");
    assert_eq!(server.peak(), 1);
    // Each grant carries the place its session waited at: in accept order,
    // the holder never queued, then positions 0 to 5.
    let mut records = broker.logs.wait_sessions(7).await;
    records.sort_by_key(|r| r.int("session"));
    let places: Vec<i64> = records.iter().map(|r| r.int("backend_queue_pos")).collect();
    assert_eq!(places, vec![-1, 0, 1, 2, 3, 4, 5], "queue positions in the access records");
}

/// A queued client is closed at the queue deadline; the server
/// never sees it; the record says sQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_closes_the_client_and_spares_the_server() {
    let server = TestBackend::start(Behavior::Echo);
    let broker =
        TestBroker::start(&one_backend(&[("s1", server.addr, 1)], "[backends.app.timeout]\nqueue = \"300ms\"\n"));
    let _holder = seated(broker.addr("web"), b'H').await;

    let mut late = TcpStream::connect(broker.addr("web")).await.expect("connect");
    let record = broker.logs.wait_for("session", |r| r.termination() == "sQ").await;
    assert!(record.int("queue_ms") >= 300, "closed before the deadline: {record:?}");
    assert_eq!(record.get("server"), "-");
    assert_eq!(record.int("backend_queue_pos"), 0, "a timed-out record keeps its queue position: {record:?}");
    let mut buf = Vec::new();
    let n = tokio::time::timeout(DEADLINE, late.read_to_end(&mut buf)).await.expect("closed").unwrap_or(0);
    assert_eq!(n, 0, "no data for a timed-out client");
    assert_eq!(server.accepted(), 1, "the server saw the timed-out client");
}

/// A queued client that resets leaves the queue at once
/// (CQ); the next one takes its place and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_client_reset_leaves_the_queue() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&one_backend(&[("s1", server.addr, 1)], ""));
    let holder = seated(broker.addr("web"), b'H').await;

    let quitter = queued_client(&broker, 0).await;
    socket2::SockRef::from(&quitter).set_linger(Some(Duration::ZERO)).expect("linger 0 → RST");
    drop(quitter);
    let left = broker.logs.wait_for("session", |r| r.termination() == "CQ").await;
    assert_eq!(left.int("backend_queue_pos"), 0, "a client that left keeps its queue position: {left:?}");

    // The quitter's place is free: the next client is first in line.
    let mut next = queued_client(&broker, 0).await;
    drop(holder);
    next.write_all(b"n").await.expect("write");
    let mut b = [0u8; 1];
    next.read_exact(&mut b).await.expect("served");
    assert_eq!(&b, b"n");
    assert_eq!(server.accepted(), 2, "the reset client reached the server");
}

/// HAProxy's TCP default: a queued client that sent data and half-closed
/// stays queued and is forwarded; one that closes without data leaves (CQ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_half_close_with_data_is_forwarded() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&one_backend(&[("s1", server.addr, 1)], ""));
    let holder = seated(broker.addr("web"), b'H').await;

    let mut polite = queued_client(&broker, 0).await;
    polite.write_all(b"request").await.expect("write");
    polite.shutdown().await.expect("half-close");
    let silent = queued_client(&broker, 1).await;
    drop(silent);
    let left = broker.logs.wait_for("session", |r| r.termination() == "CQ").await;
    assert_eq!(left.int("backend_queue_pos"), 1, "one was ahead of the client that left: {left:?}");

    drop(holder);
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, polite.read_to_end(&mut reply)).await.expect("served").expect("read");
    assert_eq!(reply, b"request");
    let record = broker.logs.wait_for("session", |r| r.int("bytes_from_client") == 7).await;
    assert_eq!(record.termination(), "--");
}

/// A full queue refuses at once (SQ) and never grows past
/// its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_refuses_at_once() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&one_backend(&[("s1", server.addr, 1)], "maxqueue = 2\n"));
    let _holder = seated(broker.addr("web"), b'H').await;
    let _a = queued_client(&broker, 0).await;
    let _b = queued_client(&broker, 1).await;

    let mut refused = TcpStream::connect(broker.addr("web")).await.expect("connect");
    let record = broker.logs.wait_for("session", |r| r.termination() == "SQ").await;
    assert_eq!(record.get("server"), "-");
    let mut buf = Vec::new();
    let n = tokio::time::timeout(DEADLINE, refused.read_to_end(&mut buf)).await.expect("closed").unwrap_or(0);
    assert_eq!(n, 0);
    let positions: Vec<i64> =
        broker.logs.all().iter().filter(|r| r.msg == "session queued").map(|r| r.int("position")).collect();
    assert_eq!(positions, vec![0, 1], "the queue grew past maxqueue");
    assert_eq!(server.accepted(), 1);
}
