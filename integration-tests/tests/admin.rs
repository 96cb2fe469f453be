//! The admin API on real sockets: its reports agree with the
//! traffic the test drove, run-time changes take effect, errors are JSON
//! with the right status, and the bearer token is enforced.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::http::{get, put, HttpReply};
use integration_tests::{request, seated, Behavior, TestBackend, TestBroker, DEADLINE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(backend: &str, servers: &[(&str, SocketAddr, &str)]) -> String {
    let mut toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\n{backend}\n[backends.app.timeout]\nqueue = \"1m\"\n"
    );
    for (name, addr, extra) in servers {
        toml.push_str(&format!("[backends.app.servers.{name}]\naddress = \"{addr}\"\n{extra}\n"));
    }
    toml
}

fn admin(broker: &TestBroker) -> SocketAddr {
    broker.admin_addr.expect("started with the admin API")
}

async fn stats(broker: &TestBroker) -> Value {
    let reply = get(admin(broker), "/stats", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

fn server<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["backends"][0]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no server {name} in {stats}"))
}

/// `{"error": "<reason>"}` with `status`.
fn assert_error(reply: &HttpReply, status: u16, needle: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    let reason = reply.json()["error"].as_str().unwrap_or_else(|| panic!("no error reason: {reply:?}")).to_owned();
    assert!(reason.contains(needle), "reason {reason:?} lacks {needle:?}");
}

/// Scrapes `/metrics` with a real Prometheus parser; every sample line must
/// parse, with a `# HELP` and a `# TYPE` for its family.
async fn scrape(broker: &TestBroker) -> prometheus_parse::Scrape {
    let reply = get(admin(broker), "/metrics", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")), "{reply:?}");
    let lines: Vec<std::io::Result<String>> = reply.body.lines().map(|l| Ok(l.to_owned())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("Prometheus text format");
    // The parser folds a histogram's `_bucket` lines into one sample per
    // label set and keeps its `_sum` and `_count` as untyped samples.
    let lines = || reply.body.lines().filter(|l| !l.is_empty() && !l.starts_with('#'));
    let taken: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(taken, lines().count(), "lines the parser did not take:\n{}", reply.body);
    for sample in &scrape.samples {
        assert!(sample.metric.starts_with("usher_"), "{}", sample.metric);
        match sample.value {
            prometheus_parse::Value::Counter(_) => assert!(sample.metric.ends_with("_total"), "{}", sample.metric),
            prometheus_parse::Value::Gauge(_) => {}
            prometheus_parse::Value::Histogram(ref buckets) => {
                let last = buckets.last().expect("buckets");
                assert!(last.less_than.is_infinite(), "{} has no +Inf bucket", sample.metric);
                assert!(
                    buckets.windows(2).all(|w| w[0].count <= w[1].count),
                    "{} buckets not cumulative",
                    sample.metric
                );
            }
            // A histogram's `_sum` and `_count`.
            prometheus_parse::Value::Untyped(_) => {
                let family = sample.metric.strip_suffix("_sum").or_else(|| sample.metric.strip_suffix("_count"));
                assert!(family.is_some_and(|f| scrape.docs.contains_key(f)), "{} is untyped", sample.metric);
                continue;
            }
            ref other => panic!("{} is not a typed counter, gauge or histogram: {other:?}", sample.metric),
        }
        assert!(scrape.docs.contains_key(&sample.metric), "no # HELP for {}", sample.metric);
    }
    scrape
}

/// The value of `metric` with exactly these labels.
fn metric(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape.samples.iter().find(|s| {
        s.metric == metric && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    });
    match found.map(|s| &s.value) {
        Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => *v,
        _ => panic!("no {metric} {labels:?}"),
    }
}

/// After 100 sessions through 2 servers at maxconn 1, the
/// figures match what was driven, in /stats and in /metrics alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_and_metrics_agree_with_the_traffic() {
    let reply: &'static [u8] = b"pong!";
    let s1 = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(10), reply });
    let s2 = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(10), reply });
    let broker =
        TestBroker::start_with_admin(&config("", &[("s1", s1.addr, "maxconn = 1"), ("s2", s2.addr, "maxconn = 1")]));
    let addr = broker.addr("web");
    let clients: Vec<_> = (0..100).map(|_| tokio::spawn(request(addr, b"ping"))).collect();
    for c in clients {
        assert_eq!(c.await.expect("task").expect("served"), reply);
    }
    broker.logs.wait_sessions(100).await;

    let s = stats(&broker).await;
    let web = &s["frontends"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["sessions_total"], 100);
    assert_eq!(web["bytes_in"], 400);
    assert_eq!(web["bytes_out"], 500);
    assert_eq!(web["terminations"]["--"], 100);
    assert!(web["sessions_max"].as_u64().unwrap() >= 2, "{web}");
    let app = &s["backends"][0];
    let app_stats = app.clone();
    assert_eq!(app["name"], "app");
    assert_eq!(app["sessions_total"], 100);
    assert_eq!(app["connect_errors"], 0);
    assert_eq!(app["queue_timeouts"], 0);
    assert!(app["queue_max"].as_u64().unwrap() > 0, "100 clients on 2 slots must have queued: {app}");
    assert_eq!(app["queue_limit"], 0);
    assert!(app["sessions_max"].as_u64().unwrap() <= 2, "{app}");
    let mut served = 0;
    for name in ["s1", "s2"] {
        let srv = server(&s, name);
        assert_eq!(srv["sessions_limit"], 1);
        assert!(srv["sessions_max"].as_u64().unwrap() <= 1, "{srv}");
        assert_eq!(srv["status"], "UP");
        assert_eq!(srv["admin"], "ready");
        assert_eq!(srv["weight"], 1);
        served += srv["sessions_total"].as_u64().unwrap();
    }
    assert_eq!(served, 100);
    assert_eq!(server(&s, "s1")["sessions_total"].as_u64().unwrap(), s1.accepted());
    let listener = &s["listeners"][0];
    assert_eq!(listener["frontend"], "web");
    assert_eq!(listener["address"], addr.to_string());
    assert_eq!(listener["state"], "OPEN");
    assert!(s["global"]["sessions_limit"].as_u64().unwrap() > 0);
    assert!(s["global"]["fd_budget"]["sessions"].as_u64().unwrap() > 0);

    let m = scrape(&broker).await;
    let web = [("frontend", "web")];
    assert_eq!(metric(&m, "usher_frontend_sessions_total", &web), 100.0);
    assert_eq!(metric(&m, "usher_frontend_bytes_in_total", &web), 400.0);
    assert_eq!(metric(&m, "usher_frontend_terminations_total", &[("frontend", "web"), ("code", "--")]), 100.0);
    let app = [("backend", "app")];
    assert_eq!(metric(&m, "usher_backend_sessions_total", &app), 100.0);
    assert_eq!(metric(&m, "usher_backend_bytes_out_total", &app), 500.0);
    assert_eq!(metric(&m, "usher_backend_connect_errors_total", &app), 0.0);
    assert!(metric(&m, "usher_backend_queue_max", &app) > 0.0);
    let mut total = 0.0;
    for name in ["s1", "s2"] {
        let labels = [("backend", "app"), ("server", name)];
        assert!(metric(&m, "usher_server_sessions_max", &labels) <= 1.0);
        assert_eq!(metric(&m, "usher_server_sessions_limit", &labels), 1.0);
        assert_eq!(metric(&m, "usher_server_up", &labels), 1.0);
        assert_eq!(metric(&m, "usher_server_op_state", &[labels[0], labels[1], ("state", "UP")]), 1.0);
        assert_eq!(metric(&m, "usher_server_admin_state", &[labels[0], labels[1], ("state", "drain")]), 0.0);
        total += metric(&m, "usher_server_sessions_total", &labels);
    }
    assert_eq!(total, 100.0);
    assert!(metric(&m, "usher_global_sessions_limit", &[]) > 0.0);
    assert_eq!(metric(&m, "usher_build_info", &[("version", s["global"]["version"].as_str().expect("version"))]), 1.0);
    assert!(metric(&m, "usher_process_start_time_seconds", &[]) > 1.6e9);
    let waits = m.samples.iter().find(|x| x.metric == "usher_backend_queue_wait_seconds").expect("wait histogram");
    match &waits.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.last().map(|b| b.count), Some(100.0), "every session asked for a slot: {buckets:?}")
        }
        other => panic!("usher_backend_queue_wait_seconds is {other:?}"),
    }
    assert_eq!(app_stats["queue_wait_ms"]["count"], 100, "{app_stats}");
    assert!(s["global"]["uptime_s"].is_u64() && s["global"]["started_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(s["global"]["version"], env!("CARGO_PKG_VERSION"));

    // Live figures fall back to zero once every session has ended.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let s = stats(&broker).await;
        let idle = s["global"]["sessions_current"] == 0
            && s["frontends"][0]["sessions_current"] == 0
            && s["backends"][0]["sessions_current"] == 0
            && s["backends"][0]["queue_current"] == 0;
        if idle {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "sessions still counted: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drain through the API stops new sessions to that server
/// while its established session continues; ready brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_via_the_api_keeps_established_sessions() {
    let s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config("", &[("s1", s1.addr, ""), ("s2", s2.addr, "")]));
    let addr = broker.addr("web");
    let mut a = seated(addr, b'x').await;
    let _b = seated(addr, b'x').await;
    assert_eq!((s1.accepted(), s2.accepted()), (1, 1));

    let reply = put(admin(&broker), "/backends/app/servers/s1", r#"{"state": "drain"}"#, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["admin"], "drain");
    broker.logs.wait_for("server admin state changed", |r| r.get("server") == "s1" && r.get("to") == "drain").await;
    broker.logs.wait_for("server change requested", |r| r.get("state") == "drain").await;
    for _ in 0..4 {
        request(addr, b"d").await.expect("served");
    }
    assert_eq!(s1.accepted(), 1, "a draining server got a new session");
    a.write_all(b"y").await.expect("established session on the drained server");
    let mut byte = [0u8; 1];
    a.read_exact(&mut byte).await.expect("still served");
    assert_eq!(server(&stats(&broker).await, "s1")["status"], "DRAIN");

    let reply = put(admin(&broker), "/backends/app/servers/s1", r#"{"state": "ready"}"#, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    for _ in 0..4 {
        request(addr, b"r").await.expect("served");
    }
    assert!(s1.accepted() >= 2, "ready again, s1 takes sessions");
}

/// Weight 0 through the API likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_via_the_api_keeps_established_sessions() {
    let s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config("", &[("s1", s1.addr, ""), ("s2", s2.addr, "")]));
    let addr = broker.addr("web");
    let mut a = seated(addr, b'x').await;
    let _b = seated(addr, b'x').await;
    assert_eq!((s1.accepted(), s2.accepted()), (1, 1));

    let reply = put(admin(&broker), "/backends/app/servers/s1", r#"{"weight": 0}"#, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["weight"], 0);
    broker.logs.wait_for("server weight changed", |r| r.get("server") == "s1" && r.get("to") == "0").await;
    for _ in 0..4 {
        request(addr, b"w").await.expect("served");
    }
    assert_eq!(s1.accepted(), 1, "a server at weight 0 got a new session");
    a.write_all(b"y").await.expect("established session");
    let mut byte = [0u8; 1];
    a.read_exact(&mut byte).await.expect("still served");
    assert_eq!(server(&stats(&broker).await, "s1")["weight"], 0);
}

/// A maxconn change takes effect for the next session,
/// raised above the configured value and lowered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_change_applies_to_the_next_session() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config("", &[("s1", s1.addr, "maxconn = 1")]));
    let addr = broker.addr("web");
    let a = seated(addr, b'a').await;

    let reply = put(admin(&broker), "/backends/app/servers/s1", r#"{"maxconn": 2}"#, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["maxconn"], 2);
    broker.logs.wait_for("server maxconn changed", |r| r.get("from") == "1" && r.get("to") == "2").await;
    let b = tokio::time::timeout(DEADLINE, seated(addr, b'b')).await.expect("a second slot at once");
    assert_eq!(s1.current(), 2);
    assert_eq!(server(&stats(&broker).await, "s1")["sessions_limit"], 2);

    let reply = put(admin(&broker), "/backends/app/servers/s1", r#"{"maxconn": 1}"#, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    drop((a, b));
    s1.wait_until("both sessions over", |s| s.current() == 0).await;
    broker.logs.wait_sessions(2).await;
    let c = seated(addr, b'c').await;
    let mut d = TcpStream::connect(addr).await.expect("connect");
    d.write_all(b"d").await.expect("write");
    broker.logs.wait_for("session queued", |_| true).await;
    assert_eq!(s1.current(), 1, "maxconn 1 again: the next session waits");
    drop(c);
    let mut byte = [0u8; 1];
    tokio::time::timeout(DEADLINE, d.read_exact(&mut byte)).await.expect("served after the release").expect("echo");
    assert_eq!(&byte, b"d");
}

/// A frontend's maxconn set through the API: lowered, new clients wait in
/// the backlog; raised, the waiting client is accepted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_maxconn_via_the_api() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config("", &[("s1", s1.addr, "")]));
    let addr = broker.addr("web");
    let reply = put(admin(&broker), "/frontends/web", r#"{"maxconn": 1}"#, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!((reply.json()["maxconn"].clone(), reply.json()["previous"].clone()), (1.into(), 0.into()));
    broker.logs.wait_for("frontend maxconn changed", |r| r.get("frontend") == "web" && r.get("to") == "1").await;

    let _a = seated(addr, b'a').await;
    let mut b = TcpStream::connect(addr).await.expect("connect: waits in the backlog");
    b.write_all(b"b").await.expect("write");
    broker.logs.wait_for("listener paused", |r| r.get("reason") == "frontend maxconn").await;
    assert_eq!(s1.accepted(), 1);
    let s = stats(&broker).await;
    assert_eq!(s["frontends"][0]["sessions_limit"], 1);
    assert_eq!(s["listeners"][0]["state"], "PAUSED(frontend maxconn)");

    let reply = put(admin(&broker), "/frontends/web", r#"{"maxconn": 2}"#, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut byte = [0u8; 1];
    tokio::time::timeout(DEADLINE, b.read_exact(&mut byte)).await.expect("accepted once raised").expect("echo");
    assert_eq!(&byte, b"b");
}

/// Unknown names are 404, bad values 400 (and change nothing), unknown
/// endpoints 404, wrong methods 405 — every error JSON with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config("", &[("s1", s1.addr, "maxconn = 5"), ("s2", s1.addr, "")]));
    let api = admin(&broker);
    let ok = r#"{"state": "drain"}"#;
    assert_error(&put(api, "/backends/nope/servers/s1", ok, None).await, 404, "no backend \"nope\"");
    assert_error(&put(api, "/backends/app/servers/nope", ok, None).await, 404, "no server \"nope\"");
    assert_error(&put(api, "/frontends/nope", r#"{"maxconn": 1}"#, None).await, 404, "no frontend");
    assert_error(&get(api, "/nope", None).await, 404, "no such endpoint");
    assert_error(&get(api, "/backends/app/servers/s1", None).await, 405, "not allowed");
    assert_error(&put(api, "/stats", "{}", None).await, 405, "not allowed");

    let s1_path = "/backends/app/servers/s1";
    for (body, needle) in [
        (r#"{"state": "sleeping"}"#, "unknown state \"sleeping\""),
        (r#"{"weight": 257}"#, "weight 257"),
        (r#"{"weight": -1}"#, "bad JSON body"),
        (r#"{"maxconn": 0}"#, "maxconn 0"),
        (r#"{"maxconn": "ten"}"#, "bad JSON body"),
        (r#"{"state": "drain", "weight": 1000}"#, "weight 1000"),
        (r#"{"colour": "blue"}"#, "unknown field"),
        ("{}", "nothing to change"),
        ("not json", "bad JSON body"),
        ("", "bad JSON body"),
    ] {
        assert_error(&put(api, s1_path, body, None).await, 400, needle);
    }
    assert_error(&put(api, "/backends/app/servers/s2", r#"{"maxconn": 3}"#, None).await, 400, "unlimited");
    assert_error(&put(api, "/frontends/web", r#"{"maxconn": -3}"#, None).await, 400, "bad JSON body");
    assert_error(&put(api, "/frontends/web", r#"{"maxconn": 99999999}"#, None).await, 400, "out of range");
    // The rejected changes changed nothing (not even the valid half).
    let s = stats(&broker).await;
    let srv = server(&s, "s1");
    assert_eq!(
        (srv["admin"].as_str(), srv["weight"].as_u64(), srv["sessions_limit"].as_u64()),
        (Some("ready"), Some(1), Some(5))
    );
    assert!(broker.logs.all().iter().all(|r| r.msg != "server admin state changed"));
}

/// With `admin.token`, requests without it or with
/// another get 401; with it, 200. `/health` answers while running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_set() {
    let s1 = TestBackend::start(Behavior::Echo);
    let toml = config("", &[("s1", s1.addr, "")]) + "[admin]\ntoken = \"s3cret-token\"\n";
    let broker = TestBroker::start_with_admin(&toml);
    let api = admin(&broker);
    for path in ["/health", "/stats", "/metrics", "/nope"] {
        let reply = get(api, path, None).await;
        assert_error(&reply, 401, "missing bearer token");
        assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{reply:?}");
        assert_error(&get(api, path, Some("wrong")).await, 401, "wrong bearer token");
    }
    assert_error(&put(api, "/backends/app/servers/s1", r#"{"state": "maint"}"#, Some("s3cret")).await, 401, "wrong");
    assert!(broker.logs.all().iter().all(|r| r.msg != "server admin state changed"), "changed without the token");

    let health = get(api, "/health", Some("s3cret-token")).await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json(), serde_json::json!({ "status": "ok" }));
    assert_eq!(get(api, "/stats", Some("s3cret-token")).await.status, 200);
    assert_eq!(get(api, "/metrics", Some("s3cret-token")).await.status, 200);
    let reply = put(api, "/backends/app/servers/s1", r#"{"state": "maint"}"#, Some("s3cret-token")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["admin"], "maint");
}

/// `/health` is 200 while running and 503 once shutdown began; the API
/// stays up through the grace, then closes with the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_broker_lifecycle() {
    let s1 = TestBackend::start(Behavior::Echo);
    let toml = config("", &[("s1", s1.addr, "")]) + "[global]\ngrace = \"30s\"\n";
    let broker = TestBroker::start_with_admin(&toml);
    let api = admin(&broker);
    let logs = broker.logs.clone();
    let health = get(api, "/health", None).await;
    assert_eq!((health.status, health.json()), (200, serde_json::json!({ "status": "ok" })));
    let mut live = seated(broker.addr("web"), b'x').await;

    let stopping = tokio::spawn(broker.stop());
    logs.wait_for("listener closed", |_| true).await;
    let health = get(api, "/health", None).await;
    assert_eq!((health.status, health.json()), (503, serde_json::json!({ "status": "stopping" })));
    assert_eq!(stats_at(api).await["global"]["sessions_current"], 1, "the drain can be watched");
    live.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    live.read_to_end(&mut rest).await.expect("eof");
    tokio::time::timeout(DEADLINE, stopping).await.expect("stopped").expect("join").expect("clean stop");
    logs.wait_for("admin API stopped", |_| true).await;
    assert!(TcpStream::connect(api).await.is_err(), "admin API still listening after the stop");
}

async fn stats_at(api: SocketAddr) -> Value {
    let reply = get(api, "/stats", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

/// A non-loopback admin address without a token is
/// a configuration error naming `admin.token`; the daemon test of `usher
/// run` (exit 64) is in crates/usher/tests/cli.rs.
#[test]
fn admin_beyond_loopback_needs_a_token() {
    let err = usher_core::config::from_toml_str("[admin]\nbind = \"0.0.0.0:9900\"\n").expect_err("refused");
    assert!(err.mentions("admin.token"), "{err}");
    assert!(err.to_string().contains("0.0.0.0:9900"), "{err}");
    let err = usher_core::config::from_toml_str("[admin]\nbind = \"[::]:9900\"\n").expect_err("refused");
    assert!(err.mentions("admin.token"), "{err}");

    let with_token = usher_core::config::from_toml_str("[admin]\nbind = \"0.0.0.0:9900\"\ntoken = \"t\"\n");
    assert_eq!(with_token.expect("accepted").admin.bind, Some("0.0.0.0:9900".parse().unwrap()));
    let mut loopbacks = HashMap::new();
    for bind in ["127.0.0.1:9900", "127.0.0.2:1", "[::1]:9900", ""] {
        let settings = usher_core::config::from_toml_str(&format!("[admin]\nbind = \"{bind}\"\n"))
            .unwrap_or_else(|err| panic!("{bind}: {err}"));
        loopbacks.insert(bind, settings.admin.bind);
    }
    assert_eq!(loopbacks[""], None, "\"\" disables the API");
    assert_eq!(loopbacks["[::1]:9900"], Some("[::1]:9900".parse().unwrap()));
    let default = usher_core::config::from_toml_str("").expect("defaults");
    assert_eq!(default.admin.bind, Some("127.0.0.1:9900".parse().unwrap()));
    assert!(default.admin.token.is_empty());
    let err = usher_core::config::from_toml_str("[admin]\nbind = \"nowhere\"\n").expect_err("refused");
    assert!(err.mentions("admin.bind"), "{err}");
    // `usher check` output reads back the same, a disabled API included.
    let off = usher_core::config::from_toml_str("[admin]\nbind = \"\"\n").expect("valid");
    let again = usher_core::config::from_toml_str(&off.to_toml()).expect("round trip");
    assert_eq!(again.admin.bind, None);
}
