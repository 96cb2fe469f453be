//! Hot reload: the configuration file is re-read and applied to the running
//! actors; established and queued sessions never notice (a lowered
//! `maxqueue` evicts nobody), the traffic counters carry on, and a rejected
//! reload changes nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{http, request, seated, Behavior, ConfigFile, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usher_core::broker::BrokerReport;
use usher_core::{AdminState, ControlError, ReloadChange, ReloadError};

/// One frontend `web` on backend `app` with `servers` (name, address,
/// weight, maxconn); `extra` is appended.
fn config(servers: &[(&str, SocketAddr, u32, u32)], extra: &str) -> String {
    let mut toml = "[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\n\
                    [backends.app]\nretries = 0\n[backends.app.timeout]\nqueue = \"20s\"\n"
        .to_owned();
    for (name, addr, weight, maxconn) in servers {
        toml.push_str(&format!(
            "[backends.app.servers.{name}]\naddress = \"{addr}\"\nweight = {weight}\nmaxconn = {maxconn}\n"
        ));
    }
    toml.push_str(extra);
    toml
}

fn leastconn(toml: String) -> String {
    toml.replace("retries = 0\n", "retries = 0\nbalance = \"leastconn\"\n")
}

/// Sessions waiting in the queues of `app`: its backend queue and its
/// servers' own.
async fn waiting(broker: &TestBroker) -> usize {
    let stats = broker.handle.stats().await.expect("stats");
    let report = &stats.backends[0].queue;
    report.backend_queue + report.servers.iter().map(|s| s.queued).sum::<usize>()
}

/// Waits (bounded) until the queues of `app` hold `n` sessions.
async fn queued(broker: &TestBroker, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let waiting = waiting(broker).await;
        if waiting == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{waiting} queued, expected {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The payload of session `i`: distinct per session, so a mix-up shows.
fn payload(i: u64) -> Vec<u8> {
    (0..1500u64).map(|k| (i.wrapping_mul(31).wrapping_add(k) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_nothing() {
    let backends: Vec<TestBackend> = (0..3).map(|_| TestBackend::start(Behavior::Echo)).collect();
    let (a, b, c) = (backends[0].addr, backends[1].addr, backends[2].addr);
    // Ten reloads: servers added, removed, re-added, weights changed.
    let steps: Vec<String> = vec![
        config(&[("s1", a, 1, 100), ("s2", b, 1, 100), ("s3", c, 1, 100)], ""),
        config(&[("s2", b, 1, 100), ("s3", c, 1, 100)], ""),
        config(&[("s2", b, 50, 100), ("s3", c, 200, 100)], ""),
        config(&[("s1", a, 1, 100), ("s2", b, 50, 100), ("s3", c, 200, 100)], ""),
        config(&[("s1", a, 1, 100), ("s3", c, 3, 100)], ""),
        config(&[("s1", a, 1, 100), ("s2", b, 1, 100)], ""),
        config(&[("s1", a, 7, 100), ("s2", b, 1, 100), ("s3", c, 1, 100)], ""),
        config(&[("s3", c, 1, 100)], ""),
        leastconn(config(&[("s1", a, 1, 100), ("s2", b, 1, 100), ("s3", c, 1, 100)], "")),
        leastconn(config(&[("s1", a, 1, 100), ("s2", b, 2, 100)], "")),
    ];
    let file = ConfigFile::new("load", &config(&[("s1", a, 1, 100), ("s2", b, 1, 100)], ""));
    let mut broker = TestBroker::start_reloadable(&file.0, false);
    let web = broker.addr("web");

    // Sessions established before the reloads, on the servers of the time.
    let mut long = Vec::new();
    for i in 0..10u8 {
        long.push(seated(web, i).await);
    }

    // 200 new sessions per second, each checking its echo byte for byte.
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let load = {
        let (failures, done) = (failures.clone(), done.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut sessions = Vec::new();
            for i in 0..900u64 {
                tick.tick().await;
                let (failures, done) = (failures.clone(), done.clone());
                sessions.push(tokio::spawn(async move {
                    let sent = payload(i);
                    match tokio::time::timeout(DEADLINE, request(web, &sent)).await {
                        Ok(Ok(echo)) if echo == sent => done.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("session {i}: {:?}", other.map(|r| r.map(|e| e.len())));
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }));
            }
            for s in sessions {
                s.await.expect("session task");
            }
        })
    };

    for (n, toml) in steps.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(350)).await;
        file.write(toml);
        let summary = broker.reload().await.unwrap_or_else(|err| panic!("reload {n}: {err}"));
        assert!(!summary.changes.is_empty(), "reload {n} changed something");
        assert!(summary.restart_needed.is_empty(), "{:?}", summary.restart_needed);
    }
    load.await.expect("load");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "refused, reset or corrupted sessions");
    assert_eq!(done.load(Ordering::Relaxed), 900);

    // The established sessions never noticed, even those on removed servers.
    for (i, stream) in long.iter_mut().enumerate() {
        let sent = payload(1000 + i as u64);
        stream.write_all(&sent).await.expect("write after the reloads");
        let mut echo = vec![0u8; sent.len()];
        stream.read_exact(&mut echo).await.expect("echo after the reloads");
        assert_eq!(echo, sent);
    }
    drop(long);
    for backend in &backends {
        assert!(backend.peak() <= 100, "maxconn held");
    }
    broker.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_sessions_move_to_the_new_servers_and_maxconn_holds() {
    let old = TestBackend::start(Behavior::Echo);
    let new = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("queued", &config(&[("s1", old.addr, 1, 1)], ""));
    let mut broker = TestBroker::start_reloadable(&file.0, false);
    let web = broker.addr("web");

    let mut established = seated(web, 1).await;
    let waiting: Vec<_> =
        (0..3u64).map(|i| tokio::spawn(async move { (i, request(web, &payload(i)).await) })).collect();
    queued(&broker, 3).await;

    // s1 goes, s2 comes: the queue moves to s2 at once.
    file.write(&config(&[("s2", new.addr, 1, 5)], ""));
    let summary = broker.reload().await.expect("reload");
    let removed = ReloadChange::ServerRemoved { backend: "app".into(), server: "s1".into() };
    assert!(summary.changes.contains(&removed), "{:?}", summary.changes);
    for w in waiting {
        let (i, echo) = w.await.expect("task");
        assert_eq!(echo.expect("served after the reload"), payload(i));
    }
    // The session on the removed server carries on; its slot was the only one.
    established.write_all(b"still here").await.expect("write");
    let mut echo = [0u8; 10];
    established.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"still here");
    assert_eq!(old.peak(), 1, "s1 never served more than its maxconn");
    drop(established);
    broker.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_open_and_close_with_the_configuration() {
    let backend = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("listeners", &config(&[("s1", backend.addr, 1, 10)], ""));
    let mut broker = TestBroker::start_reloadable(&file.0, false);

    // A second frontend; port 0 again, so the kernel picks a free port.
    let extra = "[frontends.extra]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n";
    file.write(&config(&[("s1", backend.addr, 1, 10)], extra));
    let summary = broker.reload().await.expect("reload");
    let added = ReloadChange::FrontendAdded { frontend: "extra".into() };
    assert!(summary.changes.contains(&added), "{:?}", summary.changes);
    let opened = broker.logs.wait_for("listening", |r| r.get("frontend") == "extra").await;
    let address: SocketAddr = opened.get("address").parse().expect("address");
    assert_eq!(request(address, b"new door").await.expect("served"), b"new door");
    assert_eq!(request(broker.addr("web"), b"old door").await.expect("served"), b"old door");

    file.write(&config(&[("s1", backend.addr, 1, 10)], ""));
    let summary = broker.reload().await.expect("reload");
    let removed = ReloadChange::FrontendRemoved { frontend: "extra".into() };
    assert!(summary.changes.contains(&removed), "{:?}", summary.changes);
    broker.logs.wait_for("listener closed", |r| r.get("address") == address.to_string()).await;
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "the removed address is closed");
    assert_eq!(request(broker.addr("web"), b"still open").await.expect("served"), b"still open");
    broker.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_changes_survive_unless_the_configuration_changed_them() {
    let backends: Vec<TestBackend> = (0..3).map(|_| TestBackend::start(Behavior::Echo)).collect();
    let (a, b, c) = (backends[0].addr, backends[1].addr, backends[2].addr);
    let file = ConfigFile::new("admin-state", &config(&[("s1", a, 1, 10), ("s2", b, 1, 10)], ""));
    let mut broker = TestBroker::start_reloadable(&file.0, false);
    broker.handle.set_server_state("app", "s1", AdminState::Drain).await.expect("drain");
    broker.handle.set_frontend_maxconn("web", 7).await.expect("maxconn");

    // An unrelated change: s1 stays drained, the frontend keeps maxconn 7.
    file.write(&config(&[("s1", a, 1, 10), ("s2", b, 1, 10), ("s3", c, 1, 10)], ""));
    broker.reload().await.expect("reload");
    assert_eq!(broker.handle.server_status("app", "s1").await.expect("s1").admin, AdminState::Drain);
    let stats = broker.handle.stats().await.expect("stats");
    assert_eq!(stats.admission.frontends[0].maxconn, 7, "runtime frontend maxconn survives");
    for i in 0..6u64 {
        assert_eq!(request(broker.addr("web"), &payload(i)).await.expect("served"), payload(i));
    }
    assert_eq!(backends[0].accepted(), 0, "drained s1 takes no new session");

    // The configuration changes s1: its values win (ready, weight 3).
    file.write(&config(&[("s1", a, 3, 10), ("s2", b, 1, 10), ("s3", c, 1, 10)], ""));
    let summary = broker.reload().await.expect("reload");
    assert_eq!(summary.changes, vec![ReloadChange::ServerChanged { backend: "app".into(), server: "s1".into() }]);
    assert_eq!(summary.changes[0].to_string(), "backend app: server s1 changed");
    let report = broker.handle.server_status("app", "s1").await.expect("s1");
    assert_eq!((report.admin, report.weight), (AdminState::Ready, 3));
    for i in 0..10u64 {
        assert_eq!(request(broker.addr("web"), &payload(i)).await.expect("served"), payload(i));
    }
    assert!(backends[0].accepted() > 0, "s1 is back in rotation");
    broker.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_is_rejected_and_the_running_one_stays() {
    let backend = TestBackend::start(Behavior::Echo);
    let good = config(&[("s1", backend.addr, 1, 10)], "");
    let file = ConfigFile::new("bad", &good);
    let mut broker = TestBroker::start_reloadable(&file.0, false);

    file.write(&good.replace("backend = \"app\"", "backend = \"nowhere\""));
    match broker.reload().await {
        Err(ReloadError::Config(errors)) => assert!(errors.mentions("frontends.web.backend"), "{errors}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    broker.logs.wait_for("reload rejected, configuration unchanged", |r| r.get("error").contains("nowhere")).await;
    assert_eq!(request(broker.addr("web"), b"unchanged").await.expect("served"), b"unchanged");

    // A new address that cannot be bound (taken by the backend) rejects the
    // whole reload: nothing else changes either.
    let taken = format!(
        "[frontends.extra]\nbind = [\"{}\"]\nbackend = \"app\"\n[backends.app.servers.s2]\naddress = \"{}\"\n",
        backend.addr, backend.addr
    );
    file.write(&format!("{good}{taken}"));
    assert!(matches!(broker.reload().await, Err(ReloadError::Bind(_))), "bind failure rejects the reload");
    assert_eq!(
        broker.handle.server_status("app", "s2").await,
        Err(ControlError::UnknownServer { backend: "app".into(), server: "s2".into() }),
        "no part of a rejected reload applies"
    );
    broker.stop().await.expect("clean stop");
}

/// The configuration is re-read off the actor thread. A loader that panics
/// there (an embedder's: the daemon's returns errors) rejects the reload
/// with its message and is kept for the next one; the running
/// configuration serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loader_rejects_the_reload_and_is_kept() {
    let backend = TestBackend::start(Behavior::Echo);
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let broker = TestBroker::start_with(&config(&[("s1", backend.addr, 1, 10)], ""), move |_| usher_core::Extensions {
        reload: Some(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            panic!("the loader broke")
        })),
        ..usher_core::Extensions::default()
    });
    for attempt in 1..=2 {
        match broker.handle.reload().await {
            Err(ReloadError::LoaderPanicked(message)) => assert_eq!(message, "the loader broke"),
            other => panic!("attempt {attempt}: expected the loader's panic, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the loader was kept and called again");
    assert_eq!(request(broker.addr("web"), b"still").await.expect("served"), b"still");
    broker.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_applies_or_explains() {
    let backend = TestBackend::start(Behavior::Echo);
    let other = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("post", &config(&[("s1", backend.addr, 1, 10)], ""));
    let broker = TestBroker::start_reloadable(&file.0, true);
    let admin = broker.admin_addr.expect("admin");

    file.write(&config(&[("s1", backend.addr, 1, 10), ("s2", other.addr, 1, 10)], ""));
    let reply = http::post(admin, "/reload", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["changes"][0], "backend app: server s2 added");
    let stats = http::get(admin, "/stats", None).await.json();
    assert_eq!(stats["backends"][0]["servers"][1]["name"], "s2", "stats follow the reload");

    file.write("[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nmaxconn = -1\n");
    let reply = http::post(admin, "/reload", None).await;
    assert_eq!(reply.status, 400);
    let reason = reply.json()["error"].as_str().expect("reason").to_owned();
    assert!(reason.contains("frontends.web.maxconn"), "{reason}");
    assert_eq!(http::get(admin, "/reload", None).await.status, 405);
    broker.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_counts_in_the_backend_it_was_admitted_to() {
    let first = TestBackend::start(Behavior::Echo);
    let second = TestBackend::start(Behavior::Echo);
    let toml = |backend: &str| {
        format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"{backend}\"\n\
             [backends.one.servers.s1]\naddress = \"{}\"\n\
             [backends.two.servers.s1]\naddress = \"{}\"\n",
            first.addr, second.addr
        )
    };
    let file = ConfigFile::new("moved", &toml("one"));
    let mut broker = TestBroker::start_reloadable(&file.0, true);
    let admin = broker.admin_addr.expect("admin");
    let addr = broker.addr("web");

    // Seated on backend `one`, then the frontend moves to `two`.
    let mut old = seated(addr, b'a').await;
    file.write(&toml("two"));
    broker.reload().await.expect("reload");
    old.write_all(b"b").await.expect("write after the reload");
    let mut echo = [0u8; 1];
    old.read_exact(&mut echo).await.expect("echo after the reload");
    drop(old);
    assert_eq!(request(addr, b"new").await.expect("served by two"), b"new");
    assert_eq!((first.accepted(), second.accepted()), (1, 1));
    broker.logs.wait_sessions(2).await;

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let stats = http::get(admin, "/stats", None).await.json();
        let total = |name: &str| {
            let backends = stats["backends"].as_array().expect("backends");
            let b = backends.iter().find(|b| b["name"] == name).expect("backend in stats");
            (b["sessions_total"].as_u64().unwrap(), b["servers"][0]["sessions_total"].as_u64().unwrap())
        };
        if stats["frontends"][0]["sessions_total"] == 2 {
            assert_eq!(total("one"), (1, 1), "the old session counts where it was served");
            assert_eq!(total("two"), (1, 1));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stats never counted both sessions: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.stop().await.expect("clean stop");
}

/// Sessions ended so far in `/stats`, one line per frontend and per backend
/// (with each of its servers), by name: `one 6 (s1 4, s2 2)`.
fn ended_sessions(stats: &serde_json::Value) -> Vec<String> {
    let total = |v: &serde_json::Value| v["sessions_total"].as_u64().expect("sessions_total");
    let name = |v: &serde_json::Value| v["name"].as_str().expect("name").to_owned();
    let list = |v: &serde_json::Value| v.as_array().expect("a list").clone();
    let frontends = list(&stats["frontends"]).into_iter().map(|f| format!("{} {}", name(&f), total(&f)));
    let backends = list(&stats["backends"]).into_iter().map(|b| {
        let servers: Vec<_> = list(&b["servers"]).iter().map(|s| format!("{} {}", name(s), total(s))).collect();
        format!("{} {} ({})", name(&b), total(&b), servers.join(", "))
    });
    frontends.chain(backends).collect()
}

/// A reload that adds a frontend, a backend and a server to a backend in
/// use: the Stats actor keeps counting the kept ones where they were, and
/// counts the new ones on their own (a book reset, or one that did not grow
/// for every part, loses or misplaces sessions in `/stats`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_counters_and_counts_what_it_adds_on_its_own() {
    let (a, b, c) =
        (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let before = format!(
        "[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"one\"\n\
         [backends.one.servers.s1]\naddress = \"{}\"\n",
        a.addr
    );
    let file = ConfigFile::new("stats-grow", &before);
    let mut broker = TestBroker::start_reloadable(&file.0, true);
    let admin = broker.admin_addr.expect("admin");
    let web = broker.addr("web");
    for i in 0..2 {
        assert_eq!(request(web, &payload(i)).await.expect("served"), payload(i));
    }
    broker.logs.wait_sessions(2).await;

    file.write(&format!(
        "{before}[backends.one.servers.s2]\naddress = \"{}\"\n\
         [frontends.api]\nbind = [\"127.0.0.1:0\"]\nbackend = \"two\"\n\
         [backends.two.servers.t1]\naddress = \"{}\"\n",
        b.addr, c.addr
    ));
    broker.reload().await.expect("reload");
    // Round robin over s1 and s2: both serve after the reload.
    for i in 2..6 {
        assert_eq!(request(web, &payload(i)).await.expect("served"), payload(i));
    }
    let api = broker.logs.wait_for("listening", |r| r.get("frontend") == "api").await;
    let api: SocketAddr = api.get("address").parse().expect("address");
    assert_eq!(request(api, b"api").await.expect("served"), b"api");
    // Counted before its access record is written (one Stats mailbox).
    broker.logs.wait_sessions(7).await;
    assert!(b.accepted() > 0, "the new server took no session");

    let s1 = format!("one 6 (s1 {}, s2 {})", a.accepted(), b.accepted());
    assert_eq!(
        ended_sessions(&http::get(admin, "/stats", None).await.json()),
        ["web 6", "api 1", &s1, "two 1 (t1 1)"],
        "s1 carries on from its 2 sessions before the reload"
    );
    assert_eq!(a.accepted() + b.accepted(), 6);
    broker.stop().await.expect("clean stop");
}

/// Connects, sends a byte and expects the broker to close at once (a
/// refusal), not to queue the client. The bound is well under `config`'s
/// queue timeout (20 s): a client that timed out in the queue does not
/// pass for refused.
async fn refused_at_once(addr: SocketAddr) {
    let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    client.write_all(b"r").await.expect("write");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte)).await.expect("answered in time");
    assert!(matches!(read, Ok(0) | Err(_)), "not refused: {read:?}");
}

/// A reload that lowers a server's `maxqueue` below the clients waiting
/// for it evicts nobody: they are all served, in order, while newcomers are
/// refused at once (`SQ`) until the queue is below the new bound — under
/// round robin (the backend queue, bounded by the servers' maxqueue) as
/// under `source` (the server's own queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_lowers_a_servers_maxqueue_evicts_nobody_and_refuses_newcomers() {
    for balance in ["roundrobin", "source"] {
        let server = TestBackend::start(Behavior::Echo);
        let toml = |maxqueue: u32| {
            config(&[("s1", server.addr, 1, 1)], "")
                .replace("retries = 0\n", &format!("retries = 0\nbalance = \"{balance}\"\n"))
                .replace("maxconn = 1\n", &format!("maxconn = 1\nmaxqueue = {maxqueue}\n"))
        };
        let file = ConfigFile::new(&format!("lowered-maxqueue-{balance}"), &toml(4));
        let mut broker = TestBroker::start_reloadable(&file.0, false);
        let web = broker.addr("web");
        let holder = seated(web, b'h').await;
        let mut clients = Vec::new();
        for i in 0..4u8 {
            let mut client = tokio::net::TcpStream::connect(web).await.expect("connect");
            client.write_all(&[i]).await.expect("write");
            clients.push(client);
            // One at a time: the queue's order is the clients' order.
            queued(&broker, usize::from(i) + 1).await;
        }

        file.write(&toml(2));
        let summary = broker.reload().await.expect("reload");
        assert_eq!(summary.changes, vec![ReloadChange::ServerChanged { backend: "app".into(), server: "s1".into() }]);
        assert_eq!(waiting(&broker).await, 4, "{balance}: the reload evicted a waiting client");
        refused_at_once(web).await;

        // Served in order; once one waits, below the new bound, a newcomer
        // joins, and the next one finds the queue at the new bound.
        drop(holder);
        let mut clients = clients.into_iter().enumerate();
        let mut echo = [0u8; 1];
        for (i, mut client) in clients.by_ref().take(2) {
            client.read_exact(&mut echo).await.expect("served");
            assert_eq!(echo[0], i as u8, "{balance}: served in queue order");
        }
        // The third keeps the slot, the fourth waits.
        let (_, mut third) = clients.next().expect("a third client");
        third.read_exact(&mut echo).await.expect("served");
        assert_eq!(echo[0], 2, "{balance}: served in queue order");
        queued(&broker, 1).await;
        let mut joiner = tokio::net::TcpStream::connect(web).await.expect("connect");
        joiner.write_all(b"j").await.expect("write");
        queued(&broker, 2).await;
        refused_at_once(web).await;

        // The two refused, the holder and the first two served.
        let mut codes: Vec<_> = broker.logs.wait_sessions(5).await.iter().map(|r| r.termination().to_owned()).collect();
        codes.sort();
        assert_eq!(codes, ["--", "--", "--", "SQ", "SQ"], "{balance}");
        drop(third);
        for (_, mut client) in clients {
            client.read_exact(&mut echo).await.expect("served");
            assert_eq!(echo[0], 3, "{balance}: the last of the four");
        }
        joiner.read_exact(&mut echo).await.expect("the newcomer is served");
        drop(joiner);
        assert_eq!(server.peak(), 1, "{balance}: maxconn 1 held");
        broker.stop().await.expect("clean stop");
    }
}

/// What a reload may change, as the handle reports it: the settings in
/// force, every backend's and server's id, every listener and its state.
fn shape(report: &BrokerReport) -> String {
    let backends: Vec<_> = report
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.id, b.servers.iter().map(|(id, s)| (*id, s.name.clone())).collect::<Vec<_>>()))
        .collect();
    let listeners: Vec<_> =
        report.admission.listeners.iter().map(|l| (l.id, l.frontend.clone(), l.address, l.state)).collect();
    format!(
        "{:?}\n{backends:?}\n{listeners:?}\n{:?}\n{:?}",
        report.settings,
        report.frontends,
        report.traffic.servers.iter().map(|table| table.len()).collect::<Vec<_>>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_last_step_fails_changes_nothing() {
    let (a, b) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let good = config(&[("s1", a.addr, 1, 10)], "");
    let file = ConfigFile::new("last-step", &good);
    let mut broker = TestBroker::start_reloadable(&file.0, true);
    let admin = broker.admin_addr.expect("admin");
    let before = broker.handle.stats().await.expect("stats");
    let stats_before = http::get(admin, "/stats", None).await.json();

    // A server added, the backend changed, and last a listener on an
    // address this test holds: opening it fails after everything else was
    // planned.
    let held = integration_tests::listener();
    let grown = config(&[("s1", a.addr, 1, 10), ("s2", b.addr, 1, 10)], "")
        .replace("retries = 0\n", "retries = 0\nmaxqueue = 5\n");
    let extra = format!("[frontends.extra]\nbind = [\"{}\"]\nbackend = \"app\"\n", held.local_addr().expect("addr"));
    file.write(&format!("{grown}{extra}"));
    assert!(matches!(broker.reload().await, Err(ReloadError::Bind(_))), "the held address rejects the reload");

    let after = broker.handle.stats().await.expect("stats");
    assert_eq!(shape(&after), shape(&before), "the handle reports the same broker");
    assert_eq!(broker.handle.settings().as_ref(), before.settings.as_ref(), "settings in force unchanged");
    let stats_after = http::get(admin, "/stats", None).await.json();
    assert_eq!(stats_after["listeners"], stats_before["listeners"]);
    assert_eq!(stats_after["backends"][0]["servers"].as_array().map(Vec::len), Some(1));
    assert_eq!(stats_after["backends"][0]["queue_limit"], stats_before["backends"][0]["queue_limit"]);
    for i in 0..4u64 {
        assert_eq!(request(broker.addr("web"), &payload(i)).await.expect("served"), payload(i));
    }
    assert_eq!(b.accepted(), 0, "the planned server never served");

    // Without the held address, the same reload applies whole.
    file.write(&grown);
    let summary = broker.reload().await.expect("reload");
    assert_eq!(
        summary.changes,
        vec![
            ReloadChange::ServerAdded { backend: "app".into(), server: "s2".into() },
            ReloadChange::BackendChanged { backend: "app".into() },
        ]
    );
    assert_eq!(broker.handle.server_status("app", "s2").await.expect("s2 runs").weight, 1);
    drop(held);
    broker.stop().await.expect("clean stop");
}
