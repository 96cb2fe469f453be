//! Connection failures, retries and redispatch.

use std::net::SocketAddr;

use integration_tests::{request, Behavior, TestBackend, TestBroker};
use socket2::{Domain, Socket, Type};

/// A port that refuses connections: bound (so nobody else takes it) but
/// never listening. Kept alive for the whole test.
fn refusing_port() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
    let addr = socket.local_addr().expect("addr").as_socket().expect("inet");
    (socket, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_server_is_retried_then_reported() {
    let (_keep, dead) = refusing_port();
    let broker = TestBroker::start(&format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 2\nredispatch = false\n\
         [backends.app.timeout]\nconnect = \"100ms\"\n\
         [backends.app.servers.dead]\naddress = \"{dead}\"\nmaxconn = 1\n"
    ));
    let reply = request(broker.addr("web"), b"hello").await.unwrap_or_default();
    assert!(reply.is_empty(), "a refused session got data");
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "SC");
    assert_eq!(record.int("retries"), 2);
    assert_eq!(record.get("redispatched"), "false");
    assert_eq!(record.get("server"), "dead");
    // Two turn-around pauses of min(connect timeout, 1 s) between attempts.
    assert!(record.int("total_ms") >= 200, "no turn-around pause: {record:?}");

    // The slot was released on that path: the next client gets it too.
    let _ = request(broker.addr("web"), b"again").await;
    let records = broker.logs.wait_sessions(2).await;
    assert_eq!(records[1].termination(), "SC", "slot leaked: second client was not even tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redispatch_moves_a_refused_session_to_another_server() {
    let (_keep, dead) = refusing_port();
    let good = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 3\nredispatch = true\n\
         [backends.app.servers.dead]\naddress = \"{dead}\"\nmaxconn = 1\n\
         [backends.app.servers.good]\naddress = \"{}\"\nmaxconn = 2\n",
        good.addr
    ));
    // Round robin sends one of two sessions to the dead server first. The
    // good server has room for two: the previous session's release may not
    // have reached the BackendQueue when the next request arrives, and a
    // retry only avoids the dead server while another one has a free slot.
    for _ in 0..2 {
        assert_eq!(request(broker.addr("web"), b"ping").await.expect("reply"), b"ping");
    }
    let records = broker.logs.wait_sessions(2).await;
    assert!(records.iter().all(|r| r.termination() == "--" && r.get("server") == "good"));
    let moved = records.iter().find(|r| r.get("redispatched") == "true").expect("one was redispatched");
    assert_eq!(moved.int("retries"), 1);
    assert!(good.peak() <= 2);
}
