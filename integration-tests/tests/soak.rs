//! The lost-wakeup soak: one server with one slot, 20 000
//! short sessions in bursts from many concurrent clients, two data-plane
//! workers. A single session stuck in the queue while the slot is free would
//! end as a queue timeout (`sQ`); there must be none, and no failure.

use std::time::Duration;

use integration_tests::{request, Behavior, TestBackend, TestBroker};

const SESSIONS: usize = 20_000;
const CLIENTS: usize = 40;
const BURST: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_wakeup_with_one_slot() {
    let server = TestBackend::start(Behavior::Reply { hold: Duration::ZERO, reply: b"k" });
    // Up to 1 000 sessions wait behind the one slot; a debug build on a VM
    // losing CPUs to steal once took 240 s for the soak, and a 30 s queue
    // timeout turned that slow service into failures. A lost wake-up waits
    // for any timeout, however long, so 120 s still shows it as `sQ`.
    let broker = TestBroker::start(&format!(
        "[global]\nworkers = 2\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.timeout]\nqueue = \"120s\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\nmaxconn = 1\n",
        server.addr
    ));
    let addr = broker.addr("web");
    let per_client = SESSIONS / CLIENTS;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut failures = 0;
                for burst in 0..per_client / BURST {
                    // Bursts: many sessions end and arrive at the same moment,
                    // the pattern that exposed HAProxy's lost wake-up.
                    let replies = futures_join(BURST, addr).await;
                    failures += replies.iter().filter(|r| r.as_deref() != Some(b"k".as_slice())).count();
                    if burst % 4 == 3 {
                        tokio::task::yield_now().await;
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = 0;
    for c in clients {
        failures += c.await.expect("client task");
    }
    // Every session has its access record, failed or not: their
    // termination codes say why a failure happened.
    let records = broker.logs.wait_sessions(SESSIONS).await;
    let mut codes = std::collections::BTreeMap::new();
    for r in &records {
        *codes.entry(r.termination().to_string()).or_insert(0usize) += 1;
    }
    assert_eq!(failures, 0, "sessions failed; termination codes {codes:?}");
    let timeouts = records.iter().filter(|r| r.termination() == "sQ").count();
    assert_eq!(timeouts, 0, "sessions waited for the queue timeout");
    assert!(records.iter().all(|r| r.termination() == "--"));
    assert_eq!(server.peak(), 1, "more than maxconn at the server");
    assert_eq!(server.accepted() as usize, SESSIONS);
}

/// Sequential sessions within one burst, issued back to back.
async fn futures_join(n: usize, addr: std::net::SocketAddr) -> Vec<Option<Vec<u8>>> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(request(addr, b"q"))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.ok().and_then(Result::ok));
    }
    out
}
