//! Spill-over on real sockets: a rule's sessions go to its overflow backend
//! while its own backend is too busy (its queue long, or its expected wait
//! long), and stay on it when it keeps up. The access record says why, and
//! `/stats` counts them per frontend and rule.

mod routing_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::http::get;
use integration_tests::{seated, Behavior, TestBackend, TestBroker, DEADLINE};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

async fn stats(admin: SocketAddr) -> Value {
    get(admin, "/stats", None).await.json()
}

/// Polls `/stats` until `ready` holds; bounded by [`DEADLINE`].
async fn stats_until(admin: SocketAddr, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = stats(admin).await;
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Frontend `web`: every local client (rule 0) to `primary`, whose only
/// server takes one session at a time, spilling to `spare` when `when`.
/// Frontend `direct` reaches `primary` without rules: its clients load it
/// whatever the spill decision.
fn config(when: &str, primary: SocketAddr, spare: SocketAddr) -> String {
    format!(
        "[frontends.direct]\nbind = [\"127.0.0.1:0\"]\nbackend = \"primary\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"spare\"\n\
         [[frontends.web.routes]]\nsource = [\"127.0.0.0/8\"]\nbackend = \"primary\"\noverflow = \"spare\"\n{when}\
         [backends.primary.timeout]\nqueue = \"1m\"\n\
         [backends.primary.servers.s1]\naddress = \"{primary}\"\nmaxconn = 1\n\
         [backends.spare.servers.s1]\naddress = \"{spare}\"\n"
    )
}

/// A client that sent a byte and waits in a queue for its echo.
async fn queued_client(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"q").await.expect("write");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_queue_spills_to_the_overflow_and_a_short_one_does_not() {
    let primary = TestBackend::start(Behavior::Echo);
    let spare = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config("spill_when.queue_length = 2\n", primary.addr, spare.addr));
    let (addr, admin) = (broker.addr("web"), broker.admin_addr.expect("admin API"));

    // Fast: nobody waits, so the rule's own backend serves.
    drop(seated(addr, b'1').await);
    let fast = broker.logs.wait_for("session", |r| r.is_session()).await;
    assert_eq!((fast.get("backend"), fast.get("spill"), fast.int("route")), ("primary", "-", 0), "{fast:?}");

    // Slow: one client holds the only slot, two wait behind it.
    let holder = seated(addr, b'h').await;
    let waiting = [queued_client(addr).await, queued_client(addr).await];
    stats_until(admin, "two queued on primary", |s| s["backends"][0]["queue_current"] == 2).await;
    let spilled = timeout(DEADLINE, seated(addr, b's')).await.expect("seated at once, not queued");
    assert_eq!(spare.accepted(), 1, "the newcomer was seated on the overflow backend");
    assert_eq!(primary.current(), 1, "primary still serves only its holder");
    drop(spilled);
    let record = broker.logs.wait_for("session", |r| r.get("backend") == "spare").await;
    assert_eq!(
        (record.get("spill"), record.int("route"), record.termination()),
        ("queue_length", 0, "--"),
        "{record:?}"
    );
    assert_eq!(record.int("backend_queue_pos"), -1, "it never waited: {record:?}");

    drop(holder);
    drop(waiting);
    let s =
        stats_until(admin, "the spill-over counted", |s| s["frontends"][1]["routes"]["0"]["spill_overs"] == 1).await;
    let rule = &s["frontends"][1]["routes"]["0"];
    assert!(rule["sessions_total"].as_u64().unwrap_or(0) >= 2, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_wait_past_the_limit_spills_and_a_fast_backend_keeps_its_clients() {
    let primary = TestBackend::start(Behavior::Echo);
    let spare = TestBackend::start(Behavior::Echo);
    let broker =
        TestBroker::start_with_admin(&config("spill_when.expected_wait = \"200ms\"\n", primary.addr, spare.addr));
    let (addr, admin) = (broker.addr("web"), broker.admin_addr.expect("admin API"));

    // Fast: sessions come and go one at a time; each finds no queue.
    for i in 0..20u8 {
        drop(seated(addr, i).await);
    }
    let records = broker.logs.wait_sessions(20).await;
    assert!(records.iter().all(|r| r.get("backend") == "primary" && r.get("spill") == "-"), "{records:?}");
    assert_eq!(spare.accepted(), 0);

    // Slow: its only slot is held and three clients wait (through the
    // frontend without rules, so none of them spills). The 20 sessions
    // above gave the service rate at most 10 a second (each release adds
    // 1/2 s, and it only decays since), so three ahead are at least 300 ms.
    let direct = broker.addr("direct");
    let holder = seated(direct, b'h').await;
    let waiting = [queued_client(direct).await, queued_client(direct).await, queued_client(direct).await];
    stats_until(admin, "three queued on primary", |s| s["backends"][0]["queue_current"] == 3).await;
    drop(timeout(DEADLINE, seated(addr, b's')).await.expect("seated at once, not queued"));
    let record = broker.logs.wait_for("session", |r| r.get("backend") == "spare").await;
    assert_eq!((record.get("spill"), record.int("route")), ("expected_wait", 0), "{record:?}");
    drop((holder, waiting));
}
