//! Cluster mode against a real etcd on 127.0.0.1: three usher instances in
//! front of one server share its maxconn; the server, which counts its own
//! connections, never sees more than maxconn from all of them together.

#![cfg(feature = "cluster")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::etcd::{etcd_or_skip, EtcdServer};
use integration_tests::http::get;
use integration_tests::{request, Behavior, TestBackend, TestBroker, DEADLINE};

const MAXCONN: u32 = 10;

fn config(etcd: &str, prefix: &str, name: &str, server: SocketAddr) -> String {
    format!(
        r#"
[frontends.web]
bind = ["127.0.0.1:0"]
backend = "app"

[backends.app]
timeout.queue = "30s"

[backends.app.servers.s1]
address = "{server}"
maxconn = {MAXCONN}

[cluster]
etcd = ["{etcd}"]
name = "{name}"
prefix = "{prefix}"
lease_ttl = "2s"
period = "200ms"
"#
    )
}

/// A prefix of this test's own, so tests sharing an etcd never share servers.
fn prefix(test: &str) -> String {
    format!("/usher-test/{}-{test}", std::process::id())
}

/// `/stats` of one instance: its cluster status and its share of s1.
async fn cluster_view(broker: &TestBroker) -> (u64, Option<u64>) {
    let stats = get(broker.admin_addr.expect("admin API"), "/stats", None).await.json();
    let members = stats["cluster"]["members"].as_u64().unwrap_or(0);
    let share = stats["backends"][0]["servers"][0]["cluster_share"].as_u64();
    (members, share)
}

/// Waits (bounded) until `done` holds for the instances' views.
async fn wait_views(brokers: &[&TestBroker], what: &str, done: impl Fn(&[(u64, Option<u64>)]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let mut views = Vec::new();
        for b in brokers {
            views.push(cluster_view(b).await);
        }
        if done(&views) {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not reached in {DEADLINE:?}; views {views:?}");
        // Shares move once a period (200 ms): look again a little later.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn total_share(views: &[(u64, Option<u64>)]) -> u64 {
    views.iter().map(|(_, s)| s.unwrap_or(0)).sum()
}

/// 300 clients spread over three instances for 20 s: the server never
/// holds more than its maxconn of 10, every client is served, and when one
/// instance's clients stop, the two others take its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_never_exceed_one_maxconn() {
    let Some(binary) = etcd_or_skip("three_instances_never_exceed_one_maxconn") else { return };
    let etcd = EtcdServer::start(&binary);
    let server = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"ok" });
    let prefix = prefix("three");
    let brokers: Vec<TestBroker> = (0..3)
        .map(|i| TestBroker::start_with_admin(&config(&etcd.endpoint(), &prefix, &format!("u{i}"), server.addr)))
        .collect();
    let all: Vec<&TestBroker> = brokers.iter().collect();
    let joined = wait_views(&all, "three members", |v| v.iter().all(|(m, _)| *m == 3)).await;
    println!("three instances joined in {joined:?}");

    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_first = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for k in 0..300usize {
        let instance = k % 3;
        let addr = brokers[instance].addr("web");
        let (served, failed, stop_first) = (served.clone(), failed.clone(), stop_first.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < until && !(instance == 0 && stop_first.load(Ordering::SeqCst)) {
                match request(addr, b"hello").await {
                    Ok(answer) if answer == b"ok" => served.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }

    // Midway, the first instance's clients stop: its share goes to the others.
    tokio::time::sleep_until((until - Duration::from_secs(10)).into()).await;
    stop_first.store(true, Ordering::SeqCst);
    let others: Vec<&TestBroker> = brokers[1..].iter().collect();
    let moved =
        wait_views(&others, "the others take the idle instance's share", |v| total_share(v) >= u64::from(MAXCONN) - 1)
            .await;
    println!("after instance u0's clients stopped, u1 + u2 held {} of {MAXCONN} slots within {moved:?}", MAXCONN - 1);

    for c in clients {
        c.await.expect("client task");
    }
    let (served, failed) = (served.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!("served {served} sessions, {failed} failed; server peak {} (maxconn {MAXCONN})", server.peak());
    assert_eq!(failed, 0, "every client is served");
    assert!(served > 300, "clients were served: {served}");
    assert!(server.peak() <= u64::from(MAXCONN), "the server saw {} at once > maxconn {MAXCONN}", server.peak());
    assert!(moved < Duration::from_secs(5), "the share moved in {moved:?}");

    for b in brokers {
        b.stop().await.expect("clean stop");
    }
    drop(etcd);
}

/// A graceful stop hands the instance's slots to the others at once (not
/// at its lease's end), and the lone instance left then holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_instance_hands_its_share_over() {
    let Some(binary) = etcd_or_skip("a_stopping_instance_hands_its_share_over") else { return };
    let etcd = EtcdServer::start(&binary);
    let server = TestBackend::start(Behavior::Echo);
    let prefix = prefix("handover");
    let a = TestBroker::start_with_admin(&config(&etcd.endpoint(), &prefix, "a", server.addr));
    let b = TestBroker::start_with_admin(&config(&etcd.endpoint(), &prefix, "b", server.addr));
    wait_views(&[&a, &b], "two members sharing every slot", |v| {
        v.iter().all(|(m, s)| *m == 2 && s.is_some_and(|s| s > 0)) && total_share(v) == u64::from(MAXCONN)
    })
    .await;
    let stopped = Instant::now();
    a.stop().await.expect("clean stop");
    let took = wait_views(&[&b], "the last instance holds every slot", |v| v[0] == (1, Some(u64::from(MAXCONN)))).await;
    println!("after a graceful stop, the other instance held all {MAXCONN} slots {:?} later", stopped.elapsed());
    // Well before the 2 s lease could have ended on its own.
    assert!(took < Duration::from_millis(1900), "handed over in {took:?}");
    b.stop().await.expect("clean stop");
}

/// etcd stopped for longer than the lease and started again: no instance
/// goes above its share meanwhile (the server never sees more than
/// maxconn), no session is dropped, and the instances rejoin without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_drops_no_session_and_never_overshoots() {
    let Some(binary) = etcd_or_skip("an_etcd_outage_drops_no_session_and_never_overshoots") else { return };
    let mut etcd = EtcdServer::start(&binary);
    let server = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"ok" });
    let prefix = prefix("outage");
    let with_fallback = |name: &str| {
        config(&etcd.endpoint(), &prefix, name, server.addr) + "expected_instances = 2\nfallback = \"even\"\n"
    };
    let a = TestBroker::start_with_admin(&with_fallback("a"));
    let b = TestBroker::start_with_admin(&with_fallback("b"));
    wait_views(&[&a, &b], "two members", |v| v.iter().all(|(m, _)| *m == 2) && total_share(v) == u64::from(MAXCONN))
        .await;

    let failed = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(8);
    let mut clients = Vec::new();
    for k in 0..40usize {
        let addr = if k % 2 == 0 { a.addr("web") } else { b.addr("web") };
        let (served, failed) = (served.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < until {
                match request(addr, b"hello").await {
                    Ok(answer) if answer == b"ok" => served.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    etcd.stop();
    // Past the lease (2 s): both instances fall back to maxconn / 2 each.
    wait_views(&[&a, &b], "both on the fallback", |v| v.iter().all(|(_, s)| *s == Some(u64::from(MAXCONN / 2)))).await;
    etcd.restart(&binary);
    let rejoined = wait_views(&[&a, &b], "rejoined", |v| v.iter().all(|(m, _)| *m == 2)).await;
    println!("after etcd came back, both instances were members again within {rejoined:?}");
    for c in clients {
        c.await.expect("client task");
    }
    let (served, failed) = (served.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!("served {served}, failed {failed}, server peak {}", server.peak());
    assert_eq!(failed, 0, "no session dropped or refused");
    assert!(server.peak() <= u64::from(MAXCONN), "server peak {} > {MAXCONN}", server.peak());
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
}

/// An instance that has never reached the store holds no share, so it
/// seats no one: its clients wait in the queue and time out there, and the
/// server never sees them. This holds from the first session on — the
/// share of 0 is in force before the server's first slot is lent, not only
/// after the cluster changes it once. Needs no etcd: the "store" is a
/// listener that never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_a_share_seats_no_one() {
    let silent_store = integration_tests::listener();
    let store = format!("http://{}", silent_store.local_addr().expect("addr"));
    let server = TestBackend::start(Behavior::Echo);
    let toml = config(&store, &prefix("no-share"), "alone", server.addr).replace("\"30s\"", "\"300ms\"");
    let broker = TestBroker::start_with_admin(&toml);
    let addr = broker.addr("web");
    let clients: Vec<_> = (0..5).map(|_| tokio::spawn(request(addr, b"hello"))).collect();
    for c in clients {
        let answer = c.await.expect("client task").unwrap_or_default();
        assert!(answer.is_empty(), "a client was served without a share: {answer:?}");
    }
    let records =
        broker.logs.wait_until(DEADLINE, "five sessions", |rs| rs.iter().filter(|r| r.is_session()).count() >= 5).await;
    let codes: Vec<&str> = records.iter().filter(|r| r.is_session()).map(|r| r.termination()).collect();
    assert!(codes.iter().all(|c| *c == "sQ"), "every client timed out in the queue: {codes:?}");
    assert_eq!(server.accepted(), 0, "the server saw no connection");
    assert_eq!(cluster_view(&broker).await.1, Some(0), "the share stays 0");
    broker.stop().await.expect("clean stop");
    drop(silent_store);
}
