//! A real etcd (Debian's `etcd-server`) on 127.0.0.1 for cluster-mode
//! tests, in a temporary data directory, stopped on every path (a guard
//! whose Drop kills it).
//!
//! etcd takes `127.0.0.1:0` and says which port it got on stderr ("serving
//! insecure client requests on 127.0.0.1:PORT"), so no port is guessed. A
//! restart ([`EtcdServer::restart`]) binds the port it had again: clients
//! must find it where they left it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::DEADLINE;

pub struct EtcdServer {
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

/// The etcd binary, or why there is none. Outside CI a test may skip on
/// `Err`; under CI (`CI` set) it must fail.
pub fn etcd_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("USHER_TEST_ETCD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found (Debian: apt-get install etcd-server; or set USHER_TEST_ETCD)", path.display()))
    }
}

/// `Some(etcd)`, or `None` after a loud note when etcd is missing outside CI.
pub fn etcd_or_skip(test: &str) -> Option<PathBuf> {
    match etcd_binary() {
        Ok(path) => Some(path),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("\n!!! SKIPPED {test}: {why} — scripts/test installs it as root; under CI this fails !!!\n");
            None
        }
        Err(why) => panic!("{test}: {why} (CI is set: the cluster tests must run)"),
    }
}

impl EtcdServer {
    /// Starts a one-member etcd cluster on ports the OS picks.
    pub fn start(binary: &std::path::Path) -> EtcdServer {
        let dir = std::env::temp_dir().join(format!(
            "usher-etcd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("etcd data dir");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut etcd = EtcdServer { client: any, peer: any, dir, child: None };
        etcd.launch(binary);
        etcd
    }

    fn launch(&mut self, binary: &std::path::Path) {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let mut child = Command::new(binary)
            .arg("--name=usher-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=usher-test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        self.child = Some(child);
        // etcd logs the ports it bound and when it is ready; the rest of
        // its log is drained by the same thread (a full pipe would stall it).
        let (found, ports) = mpsc::channel();
        std::thread::spawn(move || {
            let mut peer = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = after(&line, "listening for peers on ") {
                    peer = Some(addr);
                }
                if let Some(addr) = after(&line, "serving insecure client requests on ") {
                    let _ = found.send((addr, peer));
                }
            }
        });
        let (client, peer) = ports.recv_timeout(DEADLINE).expect("etcd serves clients in time");
        self.client = client;
        self.peer = peer.unwrap_or(self.peer);
    }

    /// `http://127.0.0.1:PORT`, as `cluster.etcd` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Kills etcd (as a crash would); its data stays for a restart.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self, binary: &std::path::Path) {
        self.stop();
        self.launch(binary);
    }
}

/// The `IP:PORT` at the end of `line` after `marker`.
fn after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split(|c: char| c == ',' || c.is_whitespace()).next()?.parse().ok()
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One clustered instance's settings: frontend `web` on a port the OS
/// picks, backend `app` with server `s1` at `server` (`maxconn`, queue
/// timeout 30 s), and `[cluster]` last, so a test can append keys to it.
pub fn cluster_toml(
    etcd: &str,
    prefix: &str,
    name: &str,
    server: SocketAddr,
    maxconn: u32,
    lease_ttl: std::time::Duration,
    period: std::time::Duration,
) -> String {
    format!(
        r#"
[frontends.web]
bind = ["127.0.0.1:0"]
backend = "app"

[backends.app]
timeout.queue = "30s"

[backends.app.servers.s1]
address = "{server}"
maxconn = {maxconn}

[cluster]
etcd = ["{etcd}"]
name = "{name}"
prefix = "{prefix}"
lease_ttl = "{ttl}ms"
period = "{period}ms"
"#,
        ttl = lease_ttl.as_millis(),
        period = period.as_millis(),
    )
}
