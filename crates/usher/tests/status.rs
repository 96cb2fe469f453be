//! `usher status` against a running daemon: a real `usher run` with one
//! server of one slot, a client seated on it and one queued behind it. The
//! table must name the backend and the server with those figures, find the
//! admin API through the configuration layers or `--admin`, carry the token,
//! and fail clearly (non-zero, naming the address) when nothing answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration_tests::{Behavior, TestBackend, DEADLINE};
use serde_json::Value;

const USHER: &str = env!("CARGO_BIN_EXE_usher");
const TOKEN: &str = "status-test-token";
/// sysexits EX_UNAVAILABLE / EX_NOPERM, as `usher status` documents.
const EXIT_UNAVAILABLE: i32 = 69;
const EXIT_NOPERM: i32 = 77;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `usher ARGS…` without inherited `USHER__*` or `USHER_ADMIN_TOKEN`.
fn usher(args: &[&str]) -> Command {
    let mut cmd = Command::new(USHER);
    cmd.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name_upper = name.to_string_lossy().to_uppercase();
        if name_upper.starts_with("USHER__") || name_upper == "USHER_ADMIN_TOKEN" {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The daemon, killed when the test ends; its JSON records as they come.
struct Daemon {
    child: Child,
    records: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Daemon {
    fn start(config: &std::path::Path) -> Daemon {
        let mut child = usher(&["run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn usher run");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, records) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(record) = serde_json::from_str::<Value>(&line) {
                    if tx.send(record).is_err() {
                        break;
                    }
                }
            }
        });
        Daemon { child, records, seen: Vec::new() }
    }

    /// The first record with message `msg` for which `pred` holds.
    fn wait(&mut self, msg: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(found) = self.seen.iter().find(|r| r["msg"] == msg && pred(r)) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.records.recv_timeout(left) {
                Ok(record) => self.seen.push(record),
                Err(_) => panic!("no {msg:?} record; records so far:\n{:#?}", self.seen),
            }
        }
    }

    fn address(&mut self, msg: &str) -> String {
        self.wait(msg, |_| true)["address"].as_str().expect("address field").to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end within the deadline.
fn output(mut cmd: Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn usher status");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("usher status still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = Vec::new();
    child.stderr.take().expect("stderr").read_to_end(&mut stderr).expect("stderr");
    Output { status, stdout: reader.join().expect("reader"), stderr }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The words of the table row that starts with `first` and contains `has`.
fn row<'a>(table: &'a str, first: &str, has: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&first) && w.contains(&has))
        .unwrap_or_else(|| panic!("no row {first} … {has} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_queued_client_and_the_full_server() {
    let server = TestBackend::start(Behavior::Echo);
    let dir = TempDir(std::env::temp_dir().join(format!("usher-status-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let config = dir.0.join("usher.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\nlevel = \"debug\"\n\
             [admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
             [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\nmaxconn = 1\n",
            server.addr
        ),
    )
    .expect("write config");
    let mut daemon = Daemon::start(&config);
    let admin = daemon.address("admin API listening");
    let web = daemon.address("listening");

    // One client came and went, seated at once (never queued; its wait is
    // the Reserve's round trip, a few ms at most on a busy machine).
    let mut passing = TcpStream::connect(&web).expect("connect");
    passing.set_read_timeout(Some(DEADLINE)).expect("timeout");
    passing.write_all(b"p").expect("write");
    passing.read_exact(&mut [0u8; 1]).expect("echoed");
    drop(passing);
    let passed = daemon.wait("session", |r| r["termination"] == "--");
    assert_eq!(passed["backend_queue_pos"], -1, "{passed}");
    let waited = passed["queue_ms"].as_u64().expect("queue_ms");

    // One client holds the only slot (its byte came back through s1)…
    let mut holder = TcpStream::connect(&web).expect("connect");
    holder.set_read_timeout(Some(DEADLINE)).expect("timeout");
    holder.write_all(b"h").expect("write");
    holder.read_exact(&mut [0u8; 1]).expect("seated and echoed");
    // …and one waits in the backend queue.
    let _queued = TcpStream::connect(&web).expect("connect");
    daemon.wait("session queued", |r| r["position"] == 0);

    let out = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || output(usher(&["status", "--admin", &format!("http://{admin}"), "--token", TOKEN]))
    })
    .await
    .expect("status task");
    let table = text(&out.stdout);
    println!("{table}");
    assert!(out.status.success(), "usher status failed: {}", text(&out.stderr));
    assert!(!table.contains('\x1b'), "colours only on a terminal; stdout is a pipe:\n{table:?}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(table.starts_with(&format!("usher {version} at http://{admin}, up ")), "{table}");
    // Backend: 1 session, 1 queued (no maxqueue), its one server up; the
    // session that ended is in the rate (once its second is over), with
    // its wait.
    let backend = row(&table, "app", "roundrobin");
    assert_eq!(backend[..5], ["app", "roundrobin", "1", "1/-", "1/1"], "{table}");
    assert!(["0.0", "0.1"].contains(&backend[5]), "sessions per second: {table}");
    assert_eq!(backend[6], format!("{waited}ms"), "{table}");
    // Server: up, at its maxconn of 1, nobody in its own queue.
    let server_addr = server.addr.to_string();
    assert_eq!(row(&table, "app", "s1"), ["app", "s1", server_addr.as_str(), "UP", "1/1", "0/-", "1"]);
    // Frontend: both clients, its listener open.
    let frontend = row(&table, "web", "app");
    assert_eq!(frontend[2], "2/-", "{table}");
    assert!(frontend.ends_with(&[web.as_str(), "OPEN", "2/-"]), "{table}");

    // The same through the configuration layers: admin.bind from the
    // environment over the file, admin.token from the file.
    let mut from_config = usher(&["status", "-c"]);
    from_config.arg(&config).env("USHER__ADMIN__BIND", &admin);
    let out = tokio::task::spawn_blocking(move || output(from_config)).await.expect("status task");
    assert!(out.status.success(), "status from the configuration failed: {}", text(&out.stderr));
    assert_eq!(row(&text(&out.stdout), "app", "s1")[4], "1/1");

    // Without the token: refused, and told how to pass it.
    let out = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || output(usher(&["status", "--admin", &admin]))
    })
    .await
    .expect("status task");
    assert_eq!(out.status.code(), Some(EXIT_NOPERM), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("USHER_ADMIN_TOKEN"), "{}", text(&out.stderr));
    // USHER_ADMIN_TOKEN stands for --token.
    let out = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || {
            let mut cmd = usher(&["status", "--admin", &admin]);
            cmd.env("USHER_ADMIN_TOKEN", TOKEN);
            output(cmd)
        }
    })
    .await
    .expect("status task");
    assert!(out.status.success(), "USHER_ADMIN_TOKEN: {}", text(&out.stderr));
}

/// `--watch` prints a fresh table every `--interval` until interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refreshes_until_interrupted() {
    let server = TestBackend::start(Behavior::Echo);
    let dir = TempDir(std::env::temp_dir().join(format!("usher-status-watch-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let config = dir.0.join("usher.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
             [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\n",
            server.addr
        ),
    )
    .expect("write config");
    let mut daemon = Daemon::start(&config);
    let admin = daemon.address("admin API listening");

    let refreshes = tokio::task::spawn_blocking(move || {
        let mut watch = usher(&["status", "--watch", "--interval", "100ms", "--admin", &admin])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn usher status --watch");
        let (tx, rx) = mpsc::channel();
        let stdout = watch.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut summaries = 0;
        while summaries < 3 {
            let left = DEADLINE.saturating_sub(started.elapsed());
            let line = rx.recv_timeout(left).expect("a refresh within the deadline");
            // The summary line: `usher VERSION at ADDRESS, up …: sessions …`.
            summaries += usize::from(line.starts_with("usher ") && line.contains(": sessions "));
        }
        let elapsed = started.elapsed();
        assert!(watch.try_wait().expect("wait").is_none(), "--watch stopped on its own");
        let _ = watch.kill();
        let _ = watch.wait();
        elapsed
    })
    .await
    .expect("watch task");
    println!("3 refreshes in {refreshes:?}");
}

/// Nothing listening: a non-zero exit and a message naming the address.
#[test]
fn unreachable_admin_api_is_named() {
    // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
    let out = output(usher(&["status", "--admin", "127.0.0.1:9"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_UNAVAILABLE), "stderr: {stderr}");
    assert!(stderr.contains("http://127.0.0.1:9/stats"), "the message names the address: {stderr}");
    assert!(out.stdout.is_empty(), "no table when nothing answered");
}

/// The admin API switched off in the configuration: said so, non-zero.
#[test]
fn disabled_admin_api_is_explained() {
    let dir = TempDir(std::env::temp_dir().join(format!("usher-status-off-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let config = dir.0.join("usher.toml");
    std::fs::write(&config, "[admin]\nbind = \"\"\n").expect("write config");
    let mut cmd = usher(&["status", "-c"]);
    cmd.arg(&config);
    let out = output(cmd);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("admin.bind") && stderr.contains("--admin"), "{stderr}");
}
