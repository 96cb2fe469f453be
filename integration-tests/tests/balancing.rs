//! On real sockets: balancing algorithms, source pinning with
//! maxconn/maxqueue, and priority classes.

use std::net::{IpAddr, SocketAddr};

use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn toml(backend: &str, servers: &[(&str, SocketAddr, &str)]) -> String {
    let mut t = format!("[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n[backends.app]\n{backend}\n");
    for (name, addr, extra) in servers {
        t.push_str(&format!("[backends.app.servers.{name}]\naddress = \"{addr}\"\n{extra}\n"));
    }
    t
}

/// Connects from a chosen loopback address (all of 127/8 is local).
async fn connect_from(ip: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind source");
    socket.connect(addr).await.expect("connect")
}

async fn hold(mut c: TcpStream) -> TcpStream {
    c.write_all(b"x").await.expect("write");
    c
}

async fn exchange(mut c: TcpStream, byte: u8) -> Vec<u8> {
    c.write_all(&[byte]).await.expect("write");
    c.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, c.read_to_end(&mut got)).await.expect("served").expect("read");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fills_servers_in_order() {
    let (s1, s2) = (TestBackend::start(Behavior::Drain), TestBackend::start(Behavior::Drain));
    let broker = TestBroker::start(&toml(
        "balance = \"first\"",
        &[("s1", s1.addr, "maxconn = 2"), ("s2", s2.addr, "maxconn = 2")],
    ));
    let mut held = Vec::new();
    for want in [(1, 0), (2, 0), (2, 1)] {
        held.push(hold(TcpStream::connect(broker.addr("web")).await.expect("connect")).await);
        s2.wait_until("seated", |s| s.current() == want.1).await;
        s1.wait_until("seated", |s| s.current() == want.0).await;
    }
}

/// leastconn on sockets: long sessions spread evenly (the load-following
/// details are in crates/usher-core/tests/balancing.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_spreads_long_sessions() {
    let (s1, s2) = (TestBackend::start(Behavior::Drain), TestBackend::start(Behavior::Drain));
    let broker = TestBroker::start(&toml("balance = \"leastconn\"", &[("s1", s1.addr, ""), ("s2", s2.addr, "")]));
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(hold(TcpStream::connect(broker.addr("web")).await.expect("connect")).await);
    }
    s1.wait_until("3 on s1", |s| s.current() == 3).await;
    s2.wait_until("3 on s2", |s| s.current() == 3).await;
}

/// Same client IP → same server; a pinned server at
/// maxconn queues, then redispatches when its queue is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_pins_clients_and_respects_maxconn() {
    let (s1, s2) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let broker = TestBroker::start(&toml(
        "balance = \"source\"\nredispatch = true",
        &[("s1", s1.addr, "maxconn = 1\nmaxqueue = 1"), ("s2", s2.addr, "maxconn = 1\nmaxqueue = 1")],
    ));
    let addr = broker.addr("web");
    // Twenty client addresses, twice each: each lands on the same server.
    for round in 0..2u8 {
        for host in 2..22u8 {
            let c = connect_from(IpAddr::from([127, 0, 0, host]), addr).await;
            assert_eq!(exchange(c, round).await, vec![round]);
        }
    }
    let records = broker.logs.wait_sessions(40).await;
    for host in 2..22u8 {
        let prefix = format!("127.0.0.{host}:");
        let servers: Vec<&str> =
            records.iter().filter(|r| r.get("client").starts_with(&prefix)).map(|r| r.get("server")).collect();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0], servers[1], "client {host} moved between servers");
    }
    assert!(s1.accepted() > 0 && s2.accepted() > 0, "the ring uses both servers");

    // One client address: its server at maxconn queues the next one on that
    // server (maxqueue 1); a third is redispatched to the other server.
    let ip = IpAddr::from([127, 0, 0, 2]);
    let holder = hold(connect_from(ip, addr).await).await;
    let queued = connect_from(ip, addr).await;
    broker.logs.wait_for("session queued", |r| r.get("queue") == "server").await;
    let third = connect_from(ip, addr).await;
    assert_eq!(exchange(third, 9).await, vec![9], "redispatched past the full server queue");
    drop(holder);
    assert_eq!(exchange(queued, 8).await, vec![8], "the queued one is served by its own server");
    let home = records.iter().find(|r| r.get("client").starts_with("127.0.0.2:")).expect("home").get("server");
    let moved =
        broker.logs.wait_for("session", |r| r.get("client").starts_with("127.0.0.2:") && r.get("server") != home).await;
    assert_eq!(moved.termination(), "--");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_without_redispatch_refuses_when_the_server_queue_is_full() {
    let s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&toml(
        "balance = \"source\"\nredispatch = false",
        &[("s1", s1.addr, "maxconn = 1\nmaxqueue = 1"), ("s2", s2.addr, "maxconn = 1\nmaxqueue = 1")],
    ));
    let addr = broker.addr("web");
    let ip = IpAddr::from([127, 0, 0, 3]);
    let _holder = hold(connect_from(ip, addr).await).await;
    let _queued = connect_from(ip, addr).await;
    broker.logs.wait_for("session queued", |r| r.get("queue") == "server").await;
    // Refused at once: closed without data (a reset is fine too).
    let mut refused = connect_from(ip, addr).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(DEADLINE, refused.read_to_end(&mut got)).await.expect("closed");
    assert!(read.is_err() || got.is_empty());
    let record = broker.logs.wait_for("session", |r| r.termination() == "SQ").await;
    assert_eq!(record.get("server"), "-");
}

/// Queued sessions of a better class are served first;
/// arrival order is kept within a class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_classes_are_served_first() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[frontends.bronze]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [frontends.gold]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\npriority_class = -1\n\
         [backends.app.servers.s1]\naddress = \"{}\"\nmaxconn = 1\n",
        server.addr
    ));
    let holder = {
        let mut c = TcpStream::connect(broker.addr("bronze")).await.expect("connect");
        c.write_all(b"H").await.expect("write");
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.expect("seated");
        c
    };
    let mut waiters = Vec::new();
    let order = [("bronze", b'a'), ("bronze", b'b'), ("gold", b'X'), ("bronze", b'c'), ("gold", b'Y')];
    for (i, (frontend, byte)) in order.into_iter().enumerate() {
        let c = TcpStream::connect(broker.addr(frontend)).await.expect("connect");
        broker.logs.wait_for("session queued", |r| r.int("position") == i as i64).await;
        waiters.push(tokio::spawn(exchange(c, byte)));
    }
    drop(holder);
    for w in waiters {
        w.await.expect("served");
    }
    let served: Vec<u8> = server.first_bytes().iter().skip(1).map(|b| b[0]).collect();
    assert_eq!(served, b"XYabc", "gold first in arrival order, then bronze in arrival order");
}

/// Under every algorithm, a server with maxconn 1 never sees
/// 2 connections, and every client of a 200-client burst is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_algorithm_exceeds_maxconn() {
    for balance in ["roundrobin", "static-rr", "leastconn", "first", "source", "random"] {
        let hold = Behavior::Reply { hold: std::time::Duration::from_millis(2), reply: b"ok" };
        let (s1, s2) = (TestBackend::start(hold.clone()), TestBackend::start(hold));
        let broker = TestBroker::start(&toml(
            &format!("balance = \"{balance}\"\nredispatch = true\n[backends.app.timeout]\nqueue = \"1h\""),
            &[("s1", s1.addr, "maxconn = 1"), ("s2", s2.addr, "maxconn = 1")],
        ));
        let addr = broker.addr("web");
        let clients: Vec<_> = (0..200u8)
            .map(|i| {
                tokio::spawn(async move {
                    let c = connect_from(IpAddr::from([127, 0, 1, i % 50 + 1]), addr).await;
                    exchange(c, b'q').await
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.await.expect("client"), b"ok", "{balance}: a client was not served");
        }
        assert!(s1.peak() <= 1 && s2.peak() <= 1, "{balance}: maxconn exceeded ({}, {})", s1.peak(), s2.peak());
        assert_eq!(s1.accepted() + s2.accepted(), 200, "{balance}");
    }
}

/// On sockets: sessions follow the weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shape_the_distribution() {
    for balance in ["roundrobin", "static-rr", "random"] {
        let reply = Behavior::Reply { hold: std::time::Duration::ZERO, reply: b"ok" };
        let (s1, s2) = (TestBackend::start(reply.clone()), TestBackend::start(reply));
        let broker = TestBroker::start(&toml(
            &format!("balance = \"{balance}\""),
            &[("s1", s1.addr, "weight = 1"), ("s2", s2.addr, "weight = 3")],
        ));
        for _ in 0..400 {
            let c = TcpStream::connect(broker.addr("web")).await.expect("connect");
            assert_eq!(exchange(c, b'w').await, b"ok");
        }
        let share = s2.accepted() as f64 / 400.0;
        assert!((0.65..=0.85).contains(&share), "{balance}: weight-3 server got {share:.2} of sessions");
    }
}
