//! Probes told apart: a client that connects and closes having sent nothing,
//! and that never waited in a queue (a port probe, a balancer's TCP health
//! check), ends `CN` and is counted as a probe — not as a client that gave
//! up on a queue (`CQ`), which is what an operator would chase.

use integration_tests::http::get;
use integration_tests::{seated, Behavior, FullBacklogServer, TestBackend, TestBroker};
use tokio::net::TcpStream;

/// Frontend `edge` is in front of a server with slots to spare whose listen
/// backlog is full, so a connect to it neither completes nor fails within
/// the test; frontend `busy` is in front of a server with one slot.
fn config(free: std::net::SocketAddr, full: std::net::SocketAddr) -> String {
    format!(
        r#"
[frontends.edge]
bind = ["127.0.0.1:0"]
backend = "spare"

[frontends.busy]
bind = ["127.0.0.1:0"]
backend = "one_slot"

[backends.spare]
timeout.connect = "60s"

[backends.spare.servers.free]
address = "{free}"
maxconn = 10

[backends.one_slot.servers.full]
address = "{full}"
maxconn = 1
"#
    )
}

/// A probe with a free server ends `CN`; a queued client that leaves still
/// ends `CQ`; `/stats` and `/metrics` count each apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_not_a_queue_abort() {
    let (free, full) = (FullBacklogServer::start().await, TestBackend::start(Behavior::Echo));
    let broker = TestBroker::start_with_admin(&config(free.addr, full.addr));
    let admin = broker.admin_addr.expect("admin API");

    // The probe connects and closes at once. Whenever usher sees its
    // close — before the slot is granted or while the connect to a server
    // that cannot answer is pending — no byte could have been relayed: a
    // server that accepted at once could race the close into a relayed,
    // empty session (`--`).
    let probe = TcpStream::connect(broker.addr("edge")).await.expect("the kernel completes the handshake");
    drop(probe);
    let probed = broker.logs.wait_for("session", |r| r.get("frontend") == "edge" && r.termination() != "--").await;
    assert_eq!(probed.termination(), "CN", "a probe with a free server: {probed:?}");
    assert_eq!(probed.int("backend_queue_pos"), -1, "the probe never queued: {probed:?}");
    assert_eq!(probed.int("bytes_from_client"), 0);

    // A client queued behind the one slot of `busy` that closes without
    // sending anything gave up on the queue: still `CQ`.
    let seated_busy = seated(broker.addr("busy"), b'B').await;
    let quitter = TcpStream::connect(broker.addr("busy")).await.expect("connect");
    broker.logs.wait_for("session queued", |r| r.int("position") == 0).await;
    drop(quitter);
    let left = broker.logs.wait_for("session", |r| r.get("frontend") == "busy" && r.termination() != "--").await;
    assert_eq!(left.termination(), "CQ", "a queued client that leaves: {left:?}");
    drop(seated_busy);

    let stats = get(admin, "/stats", None).await.json();
    let frontend = |name: &str| {
        stats["frontends"].as_array().expect("frontends").iter().find(|f| f["name"] == name).cloned().expect(name)
    };
    let (edge, busy) = (frontend("edge"), frontend("busy"));
    println!("edge: probes {} queue_aborts {}", edge["probes"], edge["queue_aborts"]);
    println!("busy: probes {} queue_aborts {}", busy["probes"], busy["queue_aborts"]);
    assert_eq!((edge["probes"].as_u64(), edge["queue_aborts"].as_u64()), (Some(1), Some(0)), "edge: {edge}");
    assert_eq!((busy["probes"].as_u64(), busy["queue_aborts"].as_u64()), (Some(0), Some(1)), "busy: {busy}");
    assert_eq!(edge["terminations"]["CN"], 1, "edge: {edge}");
    let spare = stats["backends"].as_array().expect("backends").iter().find(|b| b["name"] == "spare").cloned();
    assert_eq!(spare.expect("backend spare")["probes"], 1);

    let metrics = get(admin, "/metrics", None).await.body;
    for sample in [
        "usher_frontend_probes_total{frontend=\"edge\"} 1",
        "usher_frontend_probes_total{frontend=\"busy\"} 0",
        "usher_frontend_queue_aborts_total{frontend=\"busy\"} 1",
        "usher_backend_probes_total{backend=\"spare\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == sample), "/metrics lacks {sample:?}");
    }
    broker.stop().await.expect("clean stop");
}
