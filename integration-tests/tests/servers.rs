//! On real sockets: health checks, admin states, backups, queues of
//! servers that go away, slowstart and dynamic maxconn.

use std::time::Duration;

use integration_tests::{request, seated, Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usher_core::backend::backend_queue::GetQueueReport;
use usher_core::backend::server::SetAdminState;
use usher_core::backend::AdminState;

fn servers_toml(backend: &str, servers: &[(&str, std::net::SocketAddr, &str)]) -> String {
    let mut toml = format!("[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n[backends.app]\n{backend}\n");
    for (name, addr, extra) in servers {
        toml.push_str(&format!("[backends.app.servers.{name}]\naddress = \"{addr}\"\n{extra}\n"));
    }
    toml
}

async fn admin(broker: &TestBroker, server: &str, state: AdminState) {
    broker.control.server("app", server).expect("server").send(SetAdminState(state)).await.expect("delivered");
}

/// A killed backend is marked down within about
/// fall × inter and gets no new sessions; it comes back after rise checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_server_out_and_back() {
    let mut s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let check = "[backends.app.servers.s1.check]\nenabled = true\ninter = \"100ms\"\nrise = 2\nfall = 2\n";
    let broker = TestBroker::start(&servers_toml("", &[("s1", s1.addr, check), ("s2", s2.addr, "")]));
    s1.kill().await;
    let down = broker.logs.wait_for("server state changed", |r| r.get("to") == "DOWN").await;
    assert_eq!(down.get("server"), "s1");
    assert_eq!(down.get("reason"), "check failed");
    assert!(down.int("failed_checks") >= 2);

    for _ in 0..6 {
        assert_eq!(request(broker.addr("web"), b"hi").await.expect("served"), b"hi");
    }
    let records = broker.logs.wait_sessions(6).await;
    assert!(records.iter().all(|r| r.get("server") == "s2" && r.int("retries") == 0), "a down server got sessions");

    s1.revive();
    let up = broker.logs.wait_for("server state changed", |r| r.get("from") == "DOWN").await;
    assert_eq!(up.get("to"), "UP");
    assert_eq!(up.get("reason"), "check passed");
    for _ in 0..4 {
        request(broker.addr("web"), b"hi").await.expect("served");
    }
    s1.wait_until("s1 serves again", |s| s.accepted() >= 1).await;
}

/// Passive observation: consecutive connect failures of live traffic count
/// as failed checks and take the server down without waiting for `inter`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_errors_mark_a_server_down() {
    let mut s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let check = "[backends.app.servers.s1.check]\nenabled = true\ninter = \"1h\"\nfall = 1\nerror_limit = 2\n";
    let broker = TestBroker::start(&servers_toml(
        "retries = 3\nredispatch = true\n",
        &[("s1", s1.addr, check), ("s2", s2.addr, "")],
    ));
    s1.kill().await;
    for _ in 0..6 {
        assert_eq!(request(broker.addr("web"), b"hi").await.expect("redispatched"), b"hi");
    }
    let down = broker.logs.wait_for("server state changed", |r| r.get("to") == "DOWN").await;
    assert_eq!(down.get("reason"), "live traffic errors");
}

/// Drain stops new balanced sessions while established ones
/// continue; maint takes it out; ready brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_maint_and_ready_at_run_time() {
    let s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&servers_toml("", &[("s1", s1.addr, ""), ("s2", s2.addr, "")]));
    let addr = broker.addr("web");
    // Round robin: the first two sessions land on s1 and s2.
    let mut a = seated(addr, b'x').await;
    let _b = seated(addr, b'x').await;
    assert_eq!((s1.accepted(), s2.accepted()), (1, 1));

    admin(&broker, "s1", AdminState::Drain).await;
    for _ in 0..4 {
        request(addr, b"d").await.expect("served");
    }
    assert_eq!(s1.accepted(), 1, "a draining server got a new session");
    a.write_all(b"y").await.expect("established session on the drained server");
    let mut b = [0u8; 1];
    a.read_exact(&mut b).await.expect("still served");

    admin(&broker, "s1", AdminState::Maint).await;
    request(addr, b"m").await.expect("served");
    assert_eq!(s1.accepted(), 1, "a server in maintenance got a session");

    admin(&broker, "s1", AdminState::Ready).await;
    for _ in 0..4 {
        request(addr, b"r").await.expect("served");
    }
    assert!(s1.accepted() >= 2, "ready again, s1 takes sessions");
    broker.logs.wait_for("server admin state changed", |r| r.get("to") == "maint").await;
}

/// Sessions queued for a server sent to
/// maintenance are redispatched at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_of_a_server_in_maintenance_is_redispatched() {
    let s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&servers_toml(
        "balance = \"source\"\nredispatch = true\n[backends.app.timeout]\nqueue = \"1h\"\n",
        &[("s1", s1.addr, "maxconn = 1"), ("s2", s2.addr, "maxconn = 1")],
    ));
    let addr = broker.addr("web");
    // All clients come from 127.0.0.1: source pins them to one server.
    let _holder = seated(addr, b'x').await;
    let home = if s1.accepted() == 1 { "s1" } else { "s2" };
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(TcpStream::connect(addr).await.expect("connect"));
        broker.logs.wait_for("session queued", |r| r.get("queue") == "server" && r.int("position") == i).await;
    }
    admin(&broker, home, AdminState::Maint).await;
    // The other server takes them one by one (maxconn 1), none times out.
    for mut c in waiting {
        c.write_all(b"q").await.expect("write");
        c.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, c.read_to_end(&mut got)).await.expect("served").expect("read");
        assert_eq!(got, b"q");
    }
    let records = broker.logs.wait_sessions(3).await;
    assert!(records.iter().all(|r| r.get("server") != home && r.termination() == "--"), "{records:?}");
}

/// The last usable server goes away while 5 clients are
/// queued: all 5 fail at once (queue timeout an hour away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_queue_fails_fast_when_no_server_is_left() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker =
        TestBroker::start(&servers_toml("[backends.app.timeout]\nqueue = \"1h\"\n", &[("s1", s1.addr, "maxconn = 1")]));
    let addr = broker.addr("web");
    let _holder = seated(addr, b'x').await;
    let mut waiting = Vec::new();
    for i in 0..5 {
        waiting.push(TcpStream::connect(addr).await.expect("connect"));
        broker.logs.wait_for("session queued", |r| r.int("position") == i).await;
    }
    admin(&broker, "s1", AdminState::Maint).await;
    let records = broker.logs.wait_sessions(5).await;
    assert!(records.iter().all(|r| r.termination() == "SC" && r.get("server") == "-"), "{records:?}");
    assert!(records.iter().all(|r| r.int("queue_ms") < 5_000), "waited for a timeout: {records:?}");
    for mut c in waiting {
        let mut got = Vec::new();
        let n = tokio::time::timeout(DEADLINE, c.read_to_end(&mut got)).await.expect("closed").unwrap_or(0);
        assert_eq!(n, 0);
    }
}

/// A backup server is used only while all actives are down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_actives_are_down() {
    let active = TestBackend::start(Behavior::Echo);
    let backup = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&servers_toml("", &[("a", active.addr, ""), ("b", backup.addr, "backup = true")]));
    let addr = broker.addr("web");
    for _ in 0..4 {
        request(addr, b"1").await.expect("served");
    }
    assert_eq!((active.accepted(), backup.accepted()), (4, 0));
    admin(&broker, "a", AdminState::Maint).await;
    for _ in 0..3 {
        request(addr, b"2").await.expect("served by the backup");
    }
    assert_eq!(backup.accepted(), 3);
    admin(&broker, "a", AdminState::Ready).await;
    for _ in 0..3 {
        request(addr, b"3").await.expect("served");
    }
    assert_eq!((active.accepted(), backup.accepted()), (7, 3));
}

/// Slowstart ramps a returning server's effective maxconn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowstart_ramps_effective_maxconn() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&servers_toml("", &[("s1", s1.addr, "maxconn = 10\nslowstart = \"3s\"")]));
    let queue = broker.control.backends[0].queue.clone();
    let at_start = queue.send(GetQueueReport).await.expect("report");
    assert_eq!(at_start.servers[0].effective_maxconn, None, "no slowstart at process start");

    admin(&broker, "s1", AdminState::Maint).await;
    admin(&broker, "s1", AdminState::Ready).await;
    let first = queue.send(GetQueueReport).await.expect("report").servers[0].effective_maxconn;
    assert_eq!(first, Some(1), "ramp starts at 1");
    // Bounded poll of the ramp (1 s steps): it grows, then the cap is gone.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = vec![1];
    loop {
        let cap = queue.send(GetQueueReport).await.expect("report").servers[0].effective_maxconn;
        match cap {
            None => break,
            Some(c) if c != *seen.last().unwrap() => seen.push(c),
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "ramp never ended: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.len() >= 3 && seen.windows(2).all(|w| w[0] < w[1]), "ramp {seen:?}");
    broker.logs.wait_for("server state changed", |r| r.get("reason") == "slowstart done").await;
}

/// Dynamic maxconn (minconn / fullconn) follows backend load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_maxconn_follows_backend_load() {
    let s1 = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&servers_toml("fullconn = 20", &[("s1", s1.addr, "maxconn = 10\nminconn = 2")]));
    let addr = broker.addr("web");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"x").await.expect("write");
        clients.push(c);
    }
    // Load 3 of fullconn 20: max(minconn 2, 3 × 10 / 20) = 2 seats.
    s1.wait_until("2 seated", |s| s.current() == 2).await;
    broker.logs.wait_for("session queued", |_| true).await;
    assert_eq!(s1.current(), 2);
    for _ in 0..17 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"x").await.expect("write");
        clients.push(c);
    }
    // Load 20 reaches fullconn: the full maxconn of 10.
    s1.wait_until("10 seated", |s| s.current() == 10).await;
    assert!(s1.peak() <= 10);
}
