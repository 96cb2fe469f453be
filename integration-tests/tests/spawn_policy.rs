//! Spawned servers on real sockets and real processes (`spawn_echo`):
//! scale from zero, the process and session limits under 100 clients at
//! once, idle reap, recycle after `max_use` with no session cut, and the
//! stop of every child when the broker stops.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::spawn_registry::{process_exists, wait_gone, Registry};
use integration_tests::{TestBroker, DEADLINE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ECHO: &str = env!("CARGO_BIN_EXE_spawn_echo");

/// Frontend `web` on the spawned backend `app`, with `spawn` keys added.
fn config(registry: &Registry, spawn: &str) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 0\n[backends.app.timeout]\nqueue = \"30s\"\n\
         [backends.app.spawn]\ncommand = [\"{ECHO}\", \"--port\", \"{{port}}\"]\n\
         env = {{ SPAWN_ECHO_REGISTRY = \"{}\" }}\nstart_timeout = \"10s\"\nstop_timeout = \"2s\"\n{spawn}",
        registry.addr
    )
}

/// A client seated on a spawned process: it asked for the pid.
struct Client {
    lines: BufReader<TcpStream>,
    pid: u32,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut client = Client { lines: BufReader::new(stream), pid: 0 };
        client.pid = client.ask("PID?").await.parse().expect("a pid");
        client
    }

    /// Sends one line and reads the answer (the echo, or the pid).
    async fn ask(&mut self, line: &str) -> String {
        self.lines.get_mut().write_all(format!("{line}\n").as_bytes()).await.expect("write");
        let mut reply = String::new();
        let read = tokio::time::timeout(DEADLINE, self.lines.read_line(&mut reply)).await.expect("answered in time");
        assert!(read.expect("read") > 0, "the session was cut");
        reply.trim_end().to_owned()
    }

    async fn close(mut self) {
        self.lines.get_mut().shutdown().await.expect("shutdown");
        let mut rest = String::new();
        let _ = tokio::time::timeout(DEADLINE, self.lines.read_line(&mut rest)).await;
    }
}

/// The broker turns transparent huge pages off for its own process, a flag
/// children inherit across exec: a spawned server must run under the
/// machine's policy instead (a database behind usher keeps the huge pages
/// it asks for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_server_gets_the_machines_huge_page_policy_not_ushers() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(&registry, "min_procs = 0\nmax_procs = 1\n"));
    assert!(
        rustix::thread::transparent_huge_pages_are_disabled().expect("PR_GET_THP_DISABLE"),
        "the broker turned huge pages off for its process"
    );
    let client = Client::connect(broker.addr("web")).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", client.pid)).expect("the child's status");
    let thp = status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(str::trim);
    assert_eq!(thp, Some("1"), "the spawned server inherited usher's huge-page switch:\n{status}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_client_waits_while_the_process_starts_and_is_served() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(&registry, "min_procs = 0\nmax_procs = 2\n"));
    assert_eq!(registry.counts().processes, 0, "scale to zero: nothing runs before the first client");
    let client = Client::connect(broker.addr("web")).await;
    assert!(registry.counts().pids.contains(&client.pid), "served by the process usher started");
    client.close().await;
    let record = broker.logs.wait_sessions(1).await.remove(0);
    println!("first client: queue_ms {} backend_queue_pos {}", record.get("queue_ms"), record.get("backend_queue_pos"));
    assert_eq!(record.termination(), "--");
    assert_eq!(record.get("server"), "proc1");
    // It waited in the backend queue while the process started.
    assert_eq!(record.int("backend_queue_pos"), 0, "{record:?}");
    // Its wait covers the process's start.
    let ready = broker.logs.wait_for("process ready", |_| true).await;
    assert!(record.int("queue_ms") >= ready.int("start_ms"), "{ready:?} {record:?}");
    assert_eq!(registry.counts().peak_processes, 1, "one client needs one process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_never_exceed_the_process_and_session_limits_and_all_are_served() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(&registry, "max_procs = 3\nsessions_per_proc = 2\nidle_timeout = \"0\"\n"));
    let addr = broker.addr("web");
    let started = Instant::now();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let echo = client.ask(&format!("hello {i}")).await;
                assert_eq!(echo, format!("hello {i}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
                client.close().await;
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client served");
    }
    let records = broker.logs.wait_sessions(100).await;
    let counts = registry.counts();
    println!(
        "100 clients in {:?}: peak processes {}, peak sessions {}, processes started {}",
        started.elapsed(),
        counts.peak_processes,
        counts.peak_sessions,
        counts.pids.len()
    );
    assert!(records.iter().all(|r| r.termination() == "--"), "every client served");
    assert!(counts.peak_processes <= 3, "{counts:?}");
    assert!(counts.peak_sessions <= 6, "{counts:?}");
    assert_eq!(counts.peak_processes, 3, "the queue needed every process");
    let report = broker.handle.stats().await.expect("stats");
    let queue = &report.backends[0].queue;
    assert!(queue.servers.iter().all(|s| s.max_served <= 2), "{queue:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_is_reaped_after_idle_timeout() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(&registry, "idle_timeout = \"300ms\"\n"));
    let client = Client::connect(broker.addr("web")).await;
    let pid = client.pid;
    client.close().await;
    broker.logs.wait_sessions(1).await;
    let idle_from = Instant::now();
    registry.wait_until("the idle process to exit", |c| c.processes == 0).await;
    let waited = idle_from.elapsed();
    println!("reaped after {waited:?} idle (idle_timeout 300ms)");
    assert!(waited >= Duration::from_millis(250), "reaped too early: {waited:?}");
    let stopping = broker.logs.wait_for("process stopping", |r| r.get("reason") == "idle").await;
    assert_eq!(stopping.int("pid"), i64::from(pid));
    broker.logs.wait_for("process exited", |r| r.int("pid") == i64::from(pid)).await;
    // The next client starts a new process.
    let client = Client::connect(broker.addr("web")).await;
    assert_ne!(client.pid, pid);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_is_recycled_after_max_use_once_its_last_session_ends() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(
        &registry,
        "max_procs = 1\nsessions_per_proc = 2\nmax_use = 2\nidle_timeout = \"0\"\n",
    ));
    let addr = broker.addr("web");
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    let first = a.pid;
    assert_eq!(b.pid, first);
    // Its two uses are spent: a third client waits for the next process.
    let third = tokio::spawn(async move { Client::connect(addr).await });
    let deadline = Instant::now() + DEADLINE;
    while broker.handle.stats().await.expect("stats").backends[0].queue.backend_queue != 1 {
        assert!(Instant::now() < deadline, "the third client never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Draining, not cut: both sessions still relay.
    assert_eq!(a.ask("still there").await, "still there");
    a.close().await;
    assert_eq!(b.ask("me too").await, "me too");
    assert!(process_exists(first), "stopped while a session was live");
    assert_eq!(registry.counts().processes, 1);
    b.close().await;
    let third = third.await.expect("third client");
    assert_ne!(third.pid, first, "served by a new process");
    let stopping = broker.logs.wait_for("process stopping", |r| r.get("reason") == "max_use").await;
    assert_eq!(stopping.int("pid"), i64::from(first));
    third.close().await;
    let records = broker.logs.wait_sessions(3).await;
    assert!(records.iter().all(|r| r.termination() == "--"), "no session cut: {records:?}");
    let counts = registry.counts();
    assert_eq!((counts.peak_processes, counts.pids.len()), (1, 2), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_broker_stops_every_child() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(
        &registry,
        "min_procs = 2
max_procs = 2
",
    ));
    let counts = registry.wait_until("min_procs processes", |c| c.processes == 2).await;
    let started = Instant::now();
    broker.stop().await.expect("stopped");
    registry.wait_until("every child gone", |c| c.processes == 0).await;
    println!("children gone {:?} after the stop began", started.elapsed());
    wait_gone(counts.pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics_show_each_process() {
    let registry = Registry::start();
    let broker = TestBroker::start_with_admin(&config(&registry, "max_procs = 2\nidle_timeout = \"0\"\n"));
    let admin = broker.admin_addr.expect("admin API");
    let client = Client::connect(broker.addr("web")).await;
    let stats = integration_tests::http::get(admin, "/stats", None).await.json();
    let app = &stats["backends"][0];
    println!("{}", serde_json::to_string_pretty(&app["servers"]).unwrap());
    assert_eq!(app["spawn"]["throttled"], false, "{app}");
    let slot = &app["servers"][0];
    assert_eq!(slot["name"], "proc1");
    assert_eq!(slot["process"]["pid"], client.pid, "{slot}");
    assert_eq!(slot["process"]["state"], "ready");
    assert_eq!(slot["process"]["uses"], 1);
    assert_eq!(slot["process"]["restarts"], 0);
    assert_eq!(slot["sessions_current"], 1);
    let port = slot["process"]["port"].as_u64().expect("port");
    assert_eq!(slot["address"], format!("127.0.0.1:{port}"));
    assert_eq!(app["servers"][1]["process"]["state"], "empty");
    assert_eq!(app["servers"][1]["process"]["pid"], serde_json::Value::Null);

    let metrics = integration_tests::http::get(admin, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let text = &metrics.body;
    for line in [
        format!("usher_spawn_process_pid{{backend=\"app\",server=\"proc1\"}} {}", client.pid),
        "usher_spawn_process_state{backend=\"app\",server=\"proc1\",state=\"ready\"} 1".to_owned(),
        "usher_spawn_process_uses{backend=\"app\",server=\"proc1\"} 1".to_owned(),
        "usher_spawn_process_restarts_total{backend=\"app\",server=\"proc1\"} 0".to_owned(),
        "usher_spawn_throttled{backend=\"app\"} 0".to_owned(),
        "usher_server_sessions_current{backend=\"app\",server=\"proc1\"} 1".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_started_while_the_frontend_is_in_stress_get_usher_stress() {
    let registry = Registry::start();
    // Reaching the frontend's maxconn of 1 enters stress mode at once.
    let toml = config(&registry, "max_procs = 2\nidle_timeout = \"0\"\n")
        .replace("backend = \"app\"\n", "backend = \"app\"\nmaxconn = 1\n[frontends.web.stress]\ncooldown = \"1h\"\n");
    let broker = TestBroker::start(&toml);
    let client = Client::connect(broker.addr("web")).await;
    broker.logs.wait_for("stress mode entered", |r| r.get("frontend") == "web").await;
    let started = broker.logs.wait_for("process started", |r| r.int("pid") == i64::from(client.pid)).await;
    assert_eq!(started.get("stress"), "true", "{started:?}");
    let output = broker
        .logs
        .wait_for("process output", |r| r.int("pid") == i64::from(client.pid) && r.get("stream") == "stdout")
        .await;
    assert!(output.get("line").ends_with("stress=1"), "{output:?}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_output_is_logged_with_its_pid() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(&registry, ""));
    let client = Client::connect(broker.addr("web")).await;
    let output = broker.logs.wait_for("process output", |r| r.int("pid") == i64::from(client.pid)).await;
    assert_eq!(output.get("stream"), "stdout");
    assert!(output.get("line").starts_with("spawn_echo listening on 127.0.0.1:"), "{output:?}");
    assert!(output.get("line").ends_with("stress="), "no stress: {output:?}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_spawned_backend_stops_its_processes() {
    let registry = Registry::start();
    let other = integration_tests::TestBackend::start(integration_tests::Behavior::Echo);
    let spawned = config(&registry, "min_procs = 1\n");
    let file = integration_tests::ConfigFile::new("spawn-removed", &spawned);
    let mut broker = TestBroker::start_reloadable(&file.0, false);
    let counts = registry.wait_until("min_procs process", |c| c.processes == 1).await;
    // The frontend moves to a plain backend; the spawned one is removed.
    file.write(&format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"plain\"\n\
         [backends.plain.servers.s1]\naddress = \"{}\"\n",
        other.addr
    ));
    broker.reload().await.expect("reload");
    broker.logs.wait_for("spawned backend removed", |_| true).await;
    registry.wait_until("the removed backend's process to exit", |c| c.processes == 0).await;
    let stopping = broker.logs.wait_for("process stopping", |_| true).await;
    assert_eq!(stopping.get("reason"), "backend_removed");
    wait_gone(counts.pids).await;
}

/// A process that dies while relaying ends its sessions server-side
/// (`SD`) at once — even one its client keeps open — and the next client
/// is served by a process started in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_dies_mid_session_ends_it_server_side_and_is_replaced() {
    let registry = Registry::start();
    let broker = TestBroker::start(&config(&registry, "min_procs = 0\nmax_procs = 1\n"));
    let mut client = Client::connect(broker.addr("web")).await;
    let dead = client.pid;
    // SIGKILL: no goodbye, the kernel closes its sockets.
    let killed = std::process::Command::new("kill").args(["-9", &dead.to_string()]).status().expect("run kill");
    assert!(killed.success());
    let mut rest = String::new();
    let read = tokio::time::timeout(DEADLINE, client.lines.read_line(&mut rest)).await.expect("ended in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the session ended with its process: {read:?} {rest:?}");
    // The client has not closed: the broker ends the session itself.
    let record = broker.logs.wait_sessions(1).await.remove(0);
    println!("session of the killed process: {record:?}");
    assert_eq!(record.termination(), "SD", "{record:?}");
    drop(client);

    let next = Client::connect(broker.addr("web")).await;
    assert_ne!(next.pid, dead, "a new process serves the next client");
    wait_gone([dead]).await;
    next.close().await;
}
