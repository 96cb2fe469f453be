//! Hardening on real sockets: durations past what the clock can hold,
//! set in code where validation cannot refuse them, serve sessions normally;
//! a queued client whose early bytes filled `bufsize` is still watched, so
//! its reset leaves the queue at once.

use std::time::Duration;

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
