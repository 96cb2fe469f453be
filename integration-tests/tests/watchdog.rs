//! Connection rate limits and stress mode on real sockets.

use std::time::Duration;

use integration_tests::{request, seated, Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// With `rate_limit = 50`, 500 connection attempts are all
/// served, spread over ~10 s by pausing the listener, and none is reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_paces_accepts_without_resets() {
    const ATTEMPTS: usize = 500;
    const RATE: usize = 50;
    let server = TestBackend::start(Behavior::Reply { hold: Duration::ZERO, reply: b"ok" });
    let broker = TestBroker::start(&format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nrate_limit = {RATE}\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let addr = broker.addr("web");
    let started = tokio::time::Instant::now();
    let clients: Vec<_> = (0..ATTEMPTS).map(|_| tokio::spawn(request(addr, b"hi"))).collect();
    let mut failures = Vec::new();
    for c in clients {
        match tokio::time::timeout(DEADLINE, c).await.expect("served in time").expect("task") {
            Ok(reply) if reply == b"ok" => {}
            other => failures.push(format!("{other:?}")),
        }
    }
    let elapsed = started.elapsed();
    assert!(failures.is_empty(), "{} clients failed or were reset: {:?}", failures.len(), &failures[..1]);
    // A one-second burst, then 50 per second: at least (500 - 50) / 50 = 9 s.
    assert!(elapsed >= Duration::from_secs(8), "not rate limited: {elapsed:?}");
    let records = broker.logs.wait_sessions(ATTEMPTS).await;
    assert!(records.iter().all(|r| r.termination() == "--"));
    let warning =
        broker.logs.wait_for("frontend reached its rate_limit; new clients wait in the kernel backlog", |_| true).await;
    assert_eq!(warning.int("rate"), RATE as i64);
}

/// Sessions accepted in stress get the stress idle timeout,
/// earlier ones keep theirs; stress ends after a full cooldown without a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_mode_shortens_timeouts_of_new_sessions_only() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nmaxconn = 2\n\
         [frontends.web.timeout]\nclient = \"1h\"\n\
         [frontends.web.stress]\ncooldown = \"500ms\"\n\
         [frontends.web.stress.timeout]\nclient = \"200ms\"\nqueue = \"1h\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let addr = broker.addr("web");
    let mut early = seated(addr, b'x').await;
    // Reaching maxconn (count + 1 == limit) enters stress.
    let second = seated(addr, b'x').await;
    let entered = broker.logs.wait_for("stress mode entered", |_| true).await;
    assert_eq!(entered.get("frontend"), "web");
    assert_eq!(entered.get("cause"), "frontend maxconn");
    drop(second);
    broker.logs.wait_sessions(1).await;

    // Accepted in stress: closed after the stress idle timeout.
    let stressed = seated(addr, b'x').await;
    let record = broker.logs.wait_for("session", |r| r.termination() == "cD").await;
    assert_eq!(record.get("stress"), "true");
    assert!(record.int("total_ms") >= 200);
    drop(stressed);

    // The session from before stress keeps its one-hour idle timeout.
    early.write_all(b"y").await.expect("early session alive");
    let mut b = [0u8; 1];
    early.read_exact(&mut b).await.expect("early session echoes");

    broker.logs.wait_for("stress mode left", |r| r.get("frontend") == "web").await;
    let calm = seated(addr, b'x').await;
    drop(calm);
    let record = broker.logs.wait_for("session", |r| r.get("stress") == "false" && r.termination() == "--").await;
    assert_eq!(record.get("frontend"), "web");
    drop(early);
}
