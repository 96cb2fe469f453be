//! Cluster mode against a real etcd on 127.0.0.1: three usher instances in
//! front of one server share its maxconn; the server, which counts its own
//! connections, never sees more than maxconn from all of them together.

#![cfg(feature = "cluster")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::etcd::{cluster_toml, etcd_or_skip, EtcdServer};
use integration_tests::http::get;
use integration_tests::{request, Behavior, TestBackend, TestBroker, DEADLINE};

const MAXCONN: u32 = 10;

fn config(etcd: &str, prefix: &str, name: &str, server: SocketAddr) -> String {
    cluster_toml(etcd, prefix, name, server, MAXCONN, Duration::from_secs(2), Duration::from_millis(200))
}

/// The settings of docs/recipes/cluster.md, pointed at this test's etcd,
/// prefix and server, with its timings, on a port the OS picks.
fn recipe_config(etcd: &str, prefix: &str, name: &str, server: SocketAddr) -> String {
    const RECIPE: &str = include_str!("../../docs/recipes/cluster.md");
    let start = RECIPE.find("```toml\n").expect("the recipe's settings") + "```toml\n".len();
    let toml = &RECIPE[start..];
    let toml = &toml[..toml.find("```").expect("end of the settings")];
    let swaps = [
        ("0.0.0.0:6432", "127.0.0.1:0".to_owned()),
        ("10.0.0.20:5432", server.to_string()),
        (r#"["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]"#, format!("[\"{etcd}\"]")),
        (r#""usher-a""#, format!("\"{name}\"")),
    ];
    let mut toml = toml.to_owned();
    for (from, to) in swaps {
        assert!(toml.contains(from), "the recipe no longer has {from}");
        toml = toml.replace(from, &to);
    }
    assert!(toml.contains(&format!("maxconn = {MAXCONN} ")), "the recipe's maxconn is this test's");
    format!("{toml}prefix = \"{prefix}\"\nlease_ttl = \"2s\"\nperiod = \"200ms\"\n")
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

/// 300 clients spread over three instances for 20 s, with the settings of
/// docs/recipes/cluster.md: the server never holds more than its maxconn
/// of 10, every client is served, and when one instance's clients stop,
/// the two others take its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_never_exceed_one_maxconn() {
    let Some(binary) = etcd_or_skip("three_instances_never_exceed_one_maxconn") else { return };
    let etcd = EtcdServer::start(&binary);
    let server = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"ok" });
    let prefix = prefix("three");
    let brokers: Vec<TestBroker> = (0..3)
        .map(|i| TestBroker::start_with_admin(&recipe_config(&etcd.endpoint(), &prefix, &format!("u{i}"), server.addr)))
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
        let addr = brokers[instance].addr("db");
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

/// `/stats` of one instance: whether its lease is surely alive.
async fn in_lease(broker: &TestBroker) -> bool {
    let stats = get(broker.admin_addr.expect("admin API"), "/stats", None).await.json();
    stats["cluster"]["in_lease"].as_bool().unwrap_or(false)
}

/// Clients that send a request through `addr` in a loop until `stop`,
/// counting answers and failures.
fn load(addr: SocketAddr, clients: usize, stop: &Arc<AtomicBool>, served: &Arc<AtomicU64>, failed: &Arc<AtomicU64>) {
    for _ in 0..clients {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match request(addr, b"hello").await {
                    Ok(answer) if answer == b"ok" => served.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        });
    }
}

/// One instance loses etcd while the other keeps it: the cut-off one
/// serves within its last share, then within its fallback once its lease
/// may have ended; the other takes the rest but leaves the fallback free
/// for it; the server never sees more than maxconn; no session is
/// dropped; and once the network is back the instance rejoins without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_etcd_keeps_to_its_fallback_and_rejoins() {
    let Some(binary) = etcd_or_skip("an_instance_cut_off_from_etcd_keeps_to_its_fallback_and_rejoins") else { return };
    let etcd = EtcdServer::start(&binary);
    let partition = integration_tests::partition::Partition::start(etcd.client);
    let server = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"ok" });
    let prefix = prefix("cut-off");
    let fallback = "expected_instances = 2\nfallback = \"even\"\n";
    let cut_off =
        TestBroker::start_with_admin(&(config(&partition.endpoint(), &prefix, "cut", server.addr) + fallback));
    let other = TestBroker::start_with_admin(&(config(&etcd.endpoint(), &prefix, "other", server.addr) + fallback));
    wait_views(&[&cut_off, &other], "two members", |v| {
        v.iter().all(|(m, _)| *m == 2) && total_share(v) == u64::from(MAXCONN)
    })
    .await;

    let (stop, served, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Busier than the other: its share is above the fallback when cut.
    load(cut_off.addr("web"), 40, &stop, &served, &failed);
    load(other.addr("web"), 4, &stop, &served, &failed);
    let before = served.load(Ordering::SeqCst);
    server.wait_until("sessions flow", |s| s.accepted() > before + 100).await;

    wait_views(&[&cut_off], "the busier instance above its fallback", |v| v[0].1 > Some(u64::from(MAXCONN / 2))).await;
    let (_, share_before) = cluster_view(&cut_off).await;
    partition.cut();
    let cut_at = Instant::now();
    // Its lease may have ended: it drops to maxconn / 2.
    loop {
        if !in_lease(&cut_off).await {
            break;
        }
        assert!(cut_at.elapsed() < DEADLINE, "the cut-off instance still counts on its lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fallen = cut_at.elapsed();
    let (_, share_after) = cluster_view(&cut_off).await;
    assert_eq!(share_after, Some(u64::from(MAXCONN / 2)), "on its fallback (before the cut: {share_before:?})");
    // The other sees it gone once etcd ends its lease, and keeps its
    // fallback free: never more than maxconn - maxconn / 2.
    wait_views(&[&other], "the other instance alone", |v| v[0].0 == 1).await;
    let (_, other_share) = cluster_view(&other).await;
    assert!(
        other_share.unwrap_or(0) <= u64::from(MAXCONN - MAXCONN / 2),
        "the other took the fallback: {other_share:?}"
    );
    println!(
        "cut off from etcd with a share of {share_before:?}: on its fallback {fallen:?} after the cut; \
         the other alone {:?} after it",
        cut_at.elapsed()
    );
    let before = served.load(Ordering::SeqCst);
    server.wait_until("sessions still flow at both", |s| s.accepted() > before + 200).await;

    partition.heal();
    let rejoined = wait_views(&[&cut_off, &other], "rejoined", |v| {
        v.iter().all(|(m, _)| *m == 2) && total_share(v) == u64::from(MAXCONN)
    })
    .await;
    assert!(in_lease(&cut_off).await, "back in a lease");
    println!("the network back, the instance rejoined within {rejoined:?}");

    stop.store(true, Ordering::SeqCst);
    // The clients' last requests end within one hold.
    let ended = served.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst);
    println!("served {ended} sessions, {} failed; server peak {}", failed.load(Ordering::SeqCst), server.peak());
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no session dropped or refused");
    assert!(server.peak() <= u64::from(MAXCONN), "server peak {} > {MAXCONN}", server.peak());
    cut_off.stop().await.expect("clean stop");
    other.stop().await.expect("clean stop");
}

/// A server with fewer slots than instances: two slots, three instances
/// with clients waiting at each. The server never sees more than two, and
/// the slots rotate, so every instance's clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_slots_than_instances_rotate_and_never_overshoot() {
    let Some(binary) = etcd_or_skip("fewer_slots_than_instances_rotate_and_never_overshoot") else { return };
    let etcd = EtcdServer::start(&binary);
    let server = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"ok" });
    let prefix = prefix("small");
    let brokers: Vec<TestBroker> = (0..3)
        .map(|i| {
            let toml = config(&etcd.endpoint(), &prefix, &format!("s{i}"), server.addr)
                .replace(&format!("maxconn = {MAXCONN}"), "maxconn = 2")
                .replace("\"30s\"", "\"60s\"");
            TestBroker::start_with_admin(&toml)
        })
        .collect();
    let all: Vec<&TestBroker> = brokers.iter().collect();
    wait_views(&all, "three members", |v| v.iter().all(|(m, _)| *m == 3)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let served: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (b, served) in brokers.iter().zip(&served) {
        load(b.addr("web"), 3, &stop, served, &failed);
    }
    // Slots that do not divide evenly rotate every 10 s (wall clock): each
    // instance is served within two rotations.
    let start = Instant::now();
    let limit = Duration::from_secs(35);
    let mut first_served = [None; 3];
    while first_served.iter().any(Option::is_none) {
        for (i, s) in served.iter().enumerate() {
            if first_served[i].is_none() && s.load(Ordering::SeqCst) > 0 {
                first_served[i] = Some(start.elapsed());
            }
        }
        assert!(start.elapsed() < limit, "not every instance was served in {limit:?}: {first_served:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    println!("maxconn 2 over three instances: first served at {first_served:?}; server peak {}", server.peak());
    assert!(server.peak() <= 2, "server peak {} > maxconn 2", server.peak());
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no client refused or dropped");
    for b in brokers {
        b.stop().await.expect("clean stop");
    }
}
