//! The daemon under a tiny RLIMIT_NOFILE (64, soft = hard,
//! set with util-linux `prlimit`) and 200 connecting clients. It must not
//! crash or spin: it derives its session limit from the fd budget, pauses its
//! listener there (clients wait in the kernel backlog), logs the limit once
//! per `warn_interval` with a count, keeps existing sessions going and serves
//! every client as fds free up.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use integration_tests::{request, Behavior, TestBackend, DEADLINE};
use serde_json::Value;

const CLIENTS: usize = 200;
const NOFILE: u64 = 64;

/// `usher run -c config` with RLIMIT_NOFILE = NOFILE (soft = hard), stderr piped.
fn usher_under_prlimit(config: &std::path::Path) -> Child {
    Command::new("prlimit")
        .arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg(env!("CARGO_BIN_EXE_usher"))
        .args(["run", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn usher under prlimit")
}

struct Daemon {
    child: Child,
    records: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Daemon {
    fn next_matching(&mut self, msg: &str) -> Value {
        let deadline = std::time::Instant::now() + DEADLINE;
        if let Some(found) = self.seen.iter().find(|r| r["msg"] == msg) {
            return found.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let record = self.records.recv_timeout(left).unwrap_or_else(|_| panic!("no {msg:?} record"));
            self.seen.push(record.clone());
            if record["msg"] == msg {
                return record;
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(r) = self.records.try_recv() {
            self.seen.push(r);
        }
    }

    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("stat");
        let fields: Vec<&str> = stat.rsplit(')').next().expect("fields").split_whitespace().collect();
        // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the ")".
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starved_of_fds_the_daemon_waits_and_serves_everyone() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is required for this test");
    }
    let server = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(100), reply: b"ok" });
    let config = std::env::temp_dir().join(format!("usher-fd-limit-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n[watchdog]\nwarn_interval = \"1h\"\n[admin]\nbind = \"\"\n\
             [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\n",
            server.addr
        ),
    )
    .expect("write config");
    let mut child = usher_under_prlimit(&config);
    let stderr = child.stderr.take().expect("stderr");
    let (tx, records) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut daemon = Daemon { child, records, seen: Vec::new() };

    let budget = daemon.next_matching("fd budget");
    assert_eq!(budget["nofile"], NOFILE);
    let sessions = budget["sessions"].as_u64().expect("sessions");
    assert!(sessions > 0 && sessions < 32, "budget: {budget}");
    let listening = daemon.next_matching("listening");
    let addr: std::net::SocketAddr = listening["address"].as_str().expect("address").parse().expect("addr");

    let cpu_before = daemon.cpu_seconds();
    let wall = std::time::Instant::now();
    let clients: Vec<_> = (0..CLIENTS).map(|_| tokio::spawn(request(addr, b"x"))).collect();
    let mut failed = 0;
    for c in clients {
        let reply = tokio::time::timeout(DEADLINE, c).await.expect("served in time").expect("task");
        if reply.ok().as_deref() != Some(b"ok".as_slice()) {
            failed += 1;
        }
    }
    let wall = wall.elapsed().as_secs_f64();
    let cpu = daemon.cpu_seconds() - cpu_before;
    assert_eq!(failed, 0, "clients were refused or reset");
    assert!(daemon.child.try_wait().expect("status").is_none(), "the daemon died");
    assert!(server.peak() <= sessions, "more sessions than the fd budget");
    // Starved most of the time (200 clients, ~{sessions} at once, 100 ms each):
    // a spinning accept loop would burn a core.
    assert!(cpu < 0.5 * wall, "busy while starved: {cpu:.2}s CPU in {wall:.2}s");

    let warning = daemon.next_matching("process fd limit reached; new clients wait in the kernel backlog");
    assert_eq!(warning["sessions"].as_u64(), Some(sessions));
    // Wait for every access record, then check the warning was not repeated.
    let deadline = std::time::Instant::now() + DEADLINE;
    while daemon.seen.iter().filter(|r| r["msg"] == "session").count() < CLIENTS {
        assert!(std::time::Instant::now() < deadline, "missing access records");
        if let Ok(r) = daemon.records.recv_timeout(Duration::from_millis(200)) {
            daemon.seen.push(r);
        }
    }
    daemon.drain();
    let warnings = daemon.seen.iter().filter(|r| r["msg"] == warning["msg"]).count();
    assert_eq!(warnings, 1, "the limit warning was logged more than once per interval");
    assert!(daemon.seen.iter().filter(|r| r["msg"] == "session").all(|r| r["termination"] == "--"));
    let _ = std::fs::remove_file(config);
}

/// An explicit `global.maxconn` that cannot fit the fd budget refuses to
/// start, saying what to raise, before any listener accepts.
#[test]
fn maxconn_beyond_the_fd_budget_refuses_to_start() {
    let config = std::env::temp_dir().join(format!("usher-fd-refuse-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[global]\nmaxconn = 1000\n[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"127.0.0.1:9\"\n",
    )
    .expect("write config");
    let mut child = usher_under_prlimit(&config);
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("usher kept running with an impossible maxconn");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert_eq!(status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("global.maxconn = 1000 needs"), "{stderr}");
    assert!(stderr.contains("RLIMIT_NOFILE is 64"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    let _ = std::fs::remove_file(config);
}
