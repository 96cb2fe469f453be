//! The daemon under a (simulated) systemd `Type=notify`
//! unit. A Unix datagram socket stands in for the service manager's
//! `NOTIFY_SOCKET`: usher must say `READY=1` once it listens, survive the
//! `ExecReload` signal (SIGHUP), say `STOPPING=1` on SIGTERM and exit 0.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::daemon::Daemon;

const USHER: &str = env!("CARGO_BIN_EXE_usher");
/// Bound on every wait; only reached on failure.
const DEADLINE: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(config: &Path, notify_socket: &std::ffi::OsStr) -> Daemon {
    Daemon::start(Path::new(USHER), config, &[("NOTIFY_SOCKET", notify_socket)])
}

/// Receives notification datagrams until one contains `state`; returns it.
fn wait_notification(socket: &UnixDatagram, state: &str, got: &mut Vec<String>) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {state} notification; got {got:?}");
        socket.set_read_timeout(Some(left)).expect("timeout");
        let n = socket.recv(&mut buf).unwrap_or_else(|err| panic!("no {state} notification ({err}); got {got:?}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        got.push(message.clone());
        if message.lines().any(|l| l == state) {
            return message;
        }
    }
}

/// The status line of `GET /health` on the daemon's admin API (the address
/// its `admin API listening` record names).
fn health(daemon: &Daemon) -> String {
    use std::io::{Read, Write};
    let line = daemon.seen.iter().find(|l| l.contains("\"admin API listening\"")).expect("admin record");
    let record: serde_json::Value = serde_json::from_str(line).expect("JSON record");
    let address = record["address"].as_str().expect("address");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the admin API");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: usher\r\nConnection: close\r\n\r\n").expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    reply.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn notifies_ready_and_stopping_and_exits_cleanly() {
    let dir = TempDir(std::env::temp_dir().join(format!("usher-systemd-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let notify_path = dir.0.join("notify");
    let socket = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let config = dir.0.join("usher.toml");
    std::fs::write(
        &config,
        "[log]\nformat = \"json\"\n[global]\ngrace = \"2s\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"127.0.0.1:9\"\n",
    )
    .expect("write config");

    let mut daemon = start(&config, notify_path.as_os_str());
    let mut got = Vec::new();

    let ready = wait_notification(&socket, "READY=1", &mut got);
    assert!(ready.contains("STATUS=serving 1 frontends on 1 listeners"), "{ready:?}");
    daemon.wait_log("\"started\"");
    daemon.wait_log("\"admin API listening\"");
    assert_eq!(health(&daemon), "HTTP/1.1 200 OK", "the daemon serves the admin API");

    // systemctl reload (ExecReload=kill -HUP): RELOADING=1, then READY=1.
    std::fs::write(
        &config,
        "[log]\nformat = \"json\"\n[global]\ngrace = \"2s\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"127.0.0.1:9\"\n\
         [backends.app.servers.s2]\naddress = \"127.0.0.1:10\"\n",
    )
    .expect("write config");
    daemon.signal("HUP");
    wait_notification(&socket, "RELOADING=1", &mut got);
    let reloaded = wait_notification(&socket, "READY=1", &mut got);
    assert!(reloaded.contains("STATUS=reloaded: 1 changes"), "{reloaded:?}");
    daemon.wait_log("\"server added\"");

    // A bad configuration is rejected; the running one stays.
    std::fs::write(&config, "[frontends.web]\nbackend = \"nowhere\"\n").expect("write config");
    daemon.signal("HUP");
    wait_notification(&socket, "RELOADING=1", &mut got);
    let rejected = wait_notification(&socket, "READY=1", &mut got);
    assert!(rejected.contains("STATUS=reload rejected, configuration unchanged"), "{rejected:?}");
    daemon.wait_log("\"reload rejected, configuration unchanged\"");
    assert!(daemon.child.try_wait().expect("status").is_none(), "SIGHUP ended usher");
    assert_eq!(health(&daemon), "HTTP/1.1 200 OK", "still serving after a rejected reload");

    daemon.signal("TERM");
    let stopping = wait_notification(&socket, "STOPPING=1", &mut got);
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");

    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{}", daemon.seen.join("\n"));
    assert_eq!(got.iter().filter(|m| m.contains("READY=1")).count(), 3, "start and two reloads: {got:?}");
}

/// A NOTIFY_SOCKET that cannot be used is logged; usher runs on.
#[test]
fn unusable_notify_socket_is_reported_not_fatal() {
    let dir = TempDir(std::env::temp_dir().join(format!("usher-systemd-bad-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let config = dir.0.join("usher.toml");
    std::fs::write(
        &config,
        "[log]\nformat = \"json\"\n[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"127.0.0.1:9\"\n",
    )
    .expect("write config");
    let mut daemon = start(&config, "relative/path".as_ref());
    daemon.wait_log("cannot use NOTIFY_SOCKET");
    daemon.wait_log("\"started\"");
    daemon.signal("TERM");
    daemon.wait_log("\"stopped\"");
}
