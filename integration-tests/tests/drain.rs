//! Graceful drain of long-lived sessions: at stop, past the grace, relaying
//! sessions close spread over `global.close_spread` rather than all at once;
//! and `timeout.session_max` closes a session older than it (`PD`).

use std::time::{Duration, Instant};

use integration_tests::{seated, Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SESSIONS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_sessions_spread_over_close_spread() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[global]\ngrace = \"100ms\"\nclose_spread = \"1s\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let addr = broker.addr("web");
    let logs = broker.logs.clone();
    let mut clients = Vec::new();
    for i in 0..SESSIONS {
        clients.push(seated(addr, i as u8).await);
    }
    // Each client notes when its connection closed (EOF, or a reset).
    let closes: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut rest = Vec::new();
                let _ = client.read_to_end(&mut rest).await;
                Instant::now()
            })
        })
        .collect();

    let stopping = tokio::spawn(broker.stop());
    logs.wait_for("grace expired, closing sessions", |_| true).await;
    let killed_at = Instant::now();
    let mut closed = Vec::new();
    for close in closes {
        closed.push(tokio::time::timeout(DEADLINE, close).await.expect("closed in time").expect("join"));
    }
    tokio::time::timeout(DEADLINE, stopping).await.expect("stopped in time").expect("join").expect("clean stop");

    let mut offsets: Vec<Duration> = closed.iter().map(|at| at.saturating_duration_since(killed_at)).collect();
    offsets.sort();
    let first = offsets[0];
    let last = offsets[SESSIONS - 1];
    println!("close offsets after the kill: first {first:?}, last {last:?}, all {offsets:?}");
    // All at once would close the twenty within a few ms; spread over 1 s,
    // evenly, the first and last are about 0.95 s apart.
    assert!(last - first >= Duration::from_millis(500), "closes span only {:?}: {offsets:?}", last - first);
    // No crowd: no 50 ms window holds more than a quarter of them (evenly
    // spread, one holds one or two).
    let crowd = offsets
        .iter()
        .map(|start| offsets.iter().filter(|o| **o >= *start && **o < *start + Duration::from_millis(50)).count())
        .max()
        .unwrap();
    assert!(crowd <= SESSIONS / 4, "{crowd} closes within 50 ms: {offsets:?}");
    assert!(last < Duration::from_secs(5), "the spread is bounded by close_spread: last close {last:?}");
    let records = logs.wait_sessions(SESSIONS).await;
    assert!(records.iter().all(|r| r.termination() == "KD"), "{records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_max_closes_an_old_idle_session_and_spares_a_young_one() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.timeout]\nsession_max = \"300ms\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let addr = broker.addr("web");
    let logs = broker.logs.clone();

    // An idle session well inside timeout.client and timeout.server (60 s).
    let opened = Instant::now();
    let mut old = seated(addr, b'a').await;
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, old.read_to_end(&mut rest)).await.expect("closed in time").expect("EOF");
    let lived = opened.elapsed();
    let record = logs.wait_for("session", |_| true).await;
    println!("old session closed after {lived:?}, total_ms {}", record.int("total_ms"));
    assert_eq!(record.termination(), "PD");
    assert!(record.int("total_ms") >= 270, "closed before session_max less its 10 %: {record:?}");
    assert!(lived >= Duration::from_millis(270), "closed after {lived:?}");

    // A session younger than that is untouched: it relays both ways, and
    // its own end comes only once it too is old enough.
    let opened = Instant::now();
    let mut young = seated(addr, b'b').await;
    young.write_all(b"c").await.expect("write");
    let mut echo = [0u8; 1];
    young.read_exact(&mut echo).await.expect("echo while young");
    assert_eq!(&echo, b"c");
    assert_eq!(logs.sessions().len(), 1, "the young session is still open");
    tokio::time::timeout(DEADLINE, young.read_to_end(&mut rest)).await.expect("closed in time").expect("EOF");
    let lived = opened.elapsed();
    println!("young session closed after {lived:?}");
    assert!(lived >= Duration::from_millis(270), "closed after {lived:?}");
    let records = logs.wait_sessions(2).await;
    assert!(records.iter().all(|r| r.termination() == "PD"), "{records:?}");
}
