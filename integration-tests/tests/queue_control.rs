//! Queue control on real sockets: a paused backend queues its clients and
//! a resume serves them in order, sessions already relaying are untouched,
//! a pause outlives a reload, a server's sessions can be shut down (`AD`),
//! and a request waits until a server is idle or its timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::http::{call, get, post, HttpReply};
use integration_tests::{request, seated, Behavior, ConfigFile, TestBackend, TestBroker, DEADLINE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One frontend `web` on backend `app` with one server `s1` at `addr`.
fn config(addr: SocketAddr, maxconn: u32, weight: u32) -> String {
    format!(
        "[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 0\n[backends.app.timeout]\nqueue = \"30s\"\n\
         [backends.app.servers.s1]\naddress = \"{addr}\"\nmaxconn = {maxconn}\nweight = {weight}\n"
    )
}

fn admin(broker: &TestBroker) -> SocketAddr {
    broker.admin_addr.expect("started with the admin API")
}

async fn stats(broker: &TestBroker) -> Value {
    let reply = get(admin(broker), "/stats", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

/// Sessions waiting in `app`'s queues, from the broker's report.
async fn waiting(broker: &TestBroker) -> usize {
    let report = broker.handle.stats().await.expect("stats");
    let queue = &report.backends[0].queue;
    queue.backend_queue + queue.servers.iter().map(|s| s.queued).sum::<usize>()
}

/// Waits (bounded) until `n` sessions wait in `app`'s queues.
async fn until_waiting(broker: &TestBroker, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = waiting(broker).await;
        if now == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now} waiting, expected {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn assert_ok(reply: &HttpReply) -> Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_backend_queues_clients_and_a_resume_serves_them_in_order() {
    let server = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("pause-order", &config(server.addr, 2, 1));
    let broker = TestBroker::start_reloadable(&file.0, true);
    let web = broker.addr("web");
    // Relaying before the pause: it must not notice it.
    let mut relaying = seated(web, 200).await;

    let paused = assert_ok(&post(admin(&broker), "/backends/app/pause", None).await);
    assert_eq!(paused["paused"], true, "{paused}");
    assert_eq!(paused["changed"], true, "{paused}");
    let record = broker.logs.wait_for("backend paused", |_| true).await;
    assert_eq!(record.get("backend"), "app");
    // Pausing twice changes nothing and says so.
    let again = assert_ok(&post(admin(&broker), "/backends/app/pause", None).await);
    assert_eq!(again["changed"], false, "{again}");

    // Five clients arrive one after the other; the server has a free slot
    // but none is connected.
    let mut clients = Vec::new();
    for i in 0..5u8 {
        clients.push(tokio::spawn(async move { request(web, &[i]).await }));
        until_waiting(&broker, usize::from(i) + 1).await;
    }
    assert_eq!(server.accepted(), 1, "only the session from before the pause reached the server");
    relaying.write_all(&[201]).await.expect("write");
    let mut byte = [0u8; 1];
    relaying.read_exact(&mut byte).await.expect("the relaying session still echoes");
    assert_eq!(byte, [201]);

    let report = stats(&broker).await;
    let app = &report["backends"][0];
    assert_eq!(app["paused"], true, "{app}");
    let since = app["paused_since"].as_u64().expect("paused_since while paused");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!(since <= now && now - since < 60, "paused_since {since}, now {now}");
    let metrics = get(admin(&broker), "/metrics", None).await.body;
    assert!(metrics.contains("usher_backend_paused{backend=\"app\"} 1\n"), "{metrics}");
    assert!(metrics.contains(&format!("usher_backend_paused_since_seconds{{backend=\"app\"}} {since}\n")), "{metrics}");

    let resumed = assert_ok(&post(admin(&broker), "/backends/app/resume", None).await);
    assert_eq!(resumed["paused"], false, "{resumed}");
    assert_eq!(resumed["paused_since"], Value::Null, "{resumed}");
    for (i, client) in clients.into_iter().enumerate() {
        let echo = client.await.expect("client task").expect("served after the resume");
        assert_eq!(echo, vec![i as u8]);
    }
    // One free slot while the relaying session holds the other: granted in
    // queue order, so they reached the server in arrival order.
    let firsts: Vec<u8> = server.first_bytes().iter().skip(1).map(|b| b[0]).collect();
    assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
    let metrics = get(admin(&broker), "/metrics", None).await.body;
    assert!(metrics.contains("usher_backend_paused{backend=\"app\"} 0\n"), "{metrics}");
    broker.logs.wait_for("backend resumed", |r| r.get("backend") == "app").await;
    drop(relaying);
    broker.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_reload_of_its_backend() {
    let server = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("pause-reload", &config(server.addr, 4, 1));
    let mut broker = TestBroker::start_reloadable(&file.0, true);
    let web = broker.addr("web");
    assert_ok(&post(admin(&broker), "/backends/app/pause", None).await);
    let client = tokio::spawn(async move { request(web, b"x").await });
    until_waiting(&broker, 1).await;

    // A reload that changes the backend (the server's weight and maxconn).
    file.write(&config(server.addr, 8, 3));
    let summary = broker.reload().await.expect("reload");
    assert!(!summary.changes.is_empty(), "{summary:?}");
    assert_eq!(waiting(&broker).await, 1, "still queued after the reload");
    assert_eq!(server.accepted(), 0, "still paused after the reload");
    assert_eq!(stats(&broker).await["backends"][0]["paused"], true);

    assert_ok(&post(admin(&broker), "/backends/app/resume", None).await);
    let echo = tokio::time::timeout(DEADLINE, client).await.expect("served").expect("task").expect("echo");
    assert_eq!(echo, b"x");
    broker.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_a_servers_sessions_closes_them_with_ad_and_spares_later_ones() {
    let server = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("shutdown", &config(server.addr, 10, 1));
    let mut broker = TestBroker::start_reloadable(&file.0, true);
    let web = broker.addr("web");
    let mut a = seated(web, 1).await;
    let mut b = seated(web, 2).await;
    // A reload that changes the server: its sessions from before it must
    // still be reached.
    file.write(&config(server.addr, 10, 2));
    let summary = broker.reload().await.expect("reload");
    assert!(!summary.changes.is_empty(), "{summary:?}");

    let reply = assert_ok(&post(admin(&broker), "/backends/app/servers/s1/shutdown-sessions", None).await);
    assert_eq!(reply["sessions"], 2, "{reply}");
    for client in [&mut a, &mut b] {
        let mut rest = Vec::new();
        // EOF or a reset: either way the session was closed, in time.
        let _ = tokio::time::timeout(DEADLINE, client.read_to_end(&mut rest)).await.expect("closed in time");
    }
    let records = broker.logs.wait_sessions(2).await;
    let codes: Vec<&str> = records.iter().map(|r| r.termination()).collect();
    assert_eq!(codes, vec!["AD", "AD"]);
    broker.logs.wait_for("server sessions shut down", |r| r.get("server") == "s1" && r.get("sessions") == "2").await;

    // A session seated after the shutdown is not touched by it.
    let echo = request(web, b"after").await.expect("a later session is served");
    assert_eq!(echo, b"after");
    let records = broker.logs.wait_sessions(3).await;
    assert_eq!(records[2].termination(), "--");

    let unknown = post(admin(&broker), "/backends/app/servers/nope/shutdown-sessions", None).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.json()["error"].as_str().expect("reason").contains("nope"), "{unknown:?}");
    let wrong_method = get(admin(&broker), "/backends/app/servers/s1/shutdown-sessions", None).await;
    assert_eq!(wrong_method.status, 405, "{wrong_method:?}");
    broker.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_idle_answers_when_the_last_session_ends_or_at_its_timeout() {
    let server = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("wait-idle", &config(server.addr, 10, 1));
    let broker = TestBroker::start_reloadable(&file.0, true);
    let web = broker.addr("web");
    let admin = admin(&broker);
    let path = "/backends/app/servers/s1/wait-idle";

    // Idle already: answers at once.
    let idle = assert_ok(&call(admin, "POST", path, Some(r#"{"timeout_ms": 20000}"#), None).await.expect("POST"));
    assert_eq!(idle["idle"], true, "{idle}");

    let seated = seated(web, 1).await;
    let started = Instant::now();
    let timed_out = assert_ok(&call(admin, "POST", path, Some(r#"{"timeout_ms": 200}"#), None).await.expect("POST"));
    println!("timed out after {:?}", started.elapsed());
    assert_eq!(timed_out["idle"], false, "{timed_out}");
    assert_eq!(timed_out["outcome"], "timeout", "{timed_out}");
    assert!(started.elapsed() >= Duration::from_millis(200));

    let waiter =
        tokio::spawn(
            async move { call(admin, "POST", path, Some(r#"{"timeout_ms": 20000}"#), None).await.expect("POST") },
        );
    broker.logs.wait_for("server idle wait requested", |r| r.get("timeout_ms") == "20000").await;
    drop(seated);
    let answered = tokio::time::timeout(DEADLINE, waiter).await.expect("answered").expect("task");
    let answered = assert_ok(&answered);
    assert_eq!(answered["idle"], true, "{answered}");
    assert_eq!(answered["outcome"], "idle", "{answered}");
    println!("idle after {} ms", answered["waited_ms"]);
    assert!(answered["waited_ms"].as_u64().expect("waited_ms") < 20_000);

    let bad = call(admin, "POST", path, Some(r#"{"timeout": 5}"#), None).await.expect("POST");
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.json()["error"].as_str().expect("reason").contains("timeout_ms"), "{bad:?}");
    let too_long = call(admin, "POST", path, Some(r#"{"timeout_ms": 3600001}"#), None).await.expect("POST");
    assert_eq!(too_long.status, 400, "{too_long:?}");
    assert!(too_long.json()["error"].as_str().expect("reason").contains("out of range"), "{too_long:?}");
    let unknown = call(admin, "POST", "/backends/nope/servers/s1/wait-idle", Some(r#"{"timeout_ms": 1}"#), None)
        .await
        .expect("POST");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    broker.stop().await.expect("stop");
}
