//! Real third-party servers (PostgreSQL, Redis) for the recipe tests: where
//! their programs are, the loud skip when they are missing, a port for a
//! server that cannot take a bound listener, and a child process that is
//! stopped on every path.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `program` on PATH or in one of `extra` directories.
pub fn find_program(program: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Every one of `programs`, or `None` to skip the test — said loudly on
/// stderr, and never under `CI`, where a missing program fails the test.
pub fn require(test: &str, packages: &str, programs: &[&str], extra: &[PathBuf]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = programs.iter().map(|p| find_program(p, extra)).collect();
    if found.iter().all(Option::is_some) {
        return Some(found.into_iter().flatten().collect());
    }
    let missing: Vec<&str> = programs.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(p, _)| *p).collect();
    let missing = missing.join(", ");
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {missing} not found: install `{packages}` (scripts/test does, as root)");
    }
    // Straight to stderr, not eprintln!: the test harness captures the
    // latter for a passing test, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n========================================================================\n\
         SKIPPED: {test} needs {missing}\n\
         (Debian: apt-get install {packages}, or run scripts/test as root).\n\
         Under CI=1 this is a failure, not a skip.\n\
         ========================================================================\n"
    );
    None
}

/// A free port on 127.0.0.1 for a server that binds its own socket. The
/// port is only free when this returns: another process may take it before
/// the server binds it, so callers retry with a new one when the server
/// reports the address in use.
pub fn unbound_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("addr").port()
}

/// A child process stopped on drop — on every path, a failed assertion
/// included: first `stop_signal` (the server's clean fast exit), then
/// SIGKILL if it is still there after a few seconds.
pub struct ServerProcess {
    pub child: Child,
    pub name: &'static str,
    pub stop_signal: &'static str,
}

impl ServerProcess {
    /// Sends `stop_signal` and waits (bounded) for the process to exit.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").arg(format!("-{}", self.stop_signal)).arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory of its own under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("usher-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `limit`;
/// panics naming `what` when it never does.
pub async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server's `op` state (`UP`, `DOWN`, `STARTING`) in the admin API's `/stats`.
pub async fn server_op(admin: std::net::SocketAddr, backend: &str, server: &str) -> Option<String> {
    let stats = crate::http::call(admin, "GET", "/stats", None, None).await.ok()?.json();
    let backend = stats["backends"].as_array()?.iter().find(|b| b["name"] == backend)?;
    let server = backend["servers"].as_array()?.iter().find(|s| s["name"] == server)?;
    server["op"].as_str().map(str::to_owned)
}

/// One of a server's figures in `/stats` (`sessions_max`, …).
pub async fn server_figure(admin: std::net::SocketAddr, backend: &str, server: &str, figure: &str) -> u64 {
    let stats = crate::http::get(admin, "/stats", None).await.json();
    let backends = stats["backends"].as_array().expect("backends");
    let backend = backends.iter().find(|b| b["name"] == backend).expect("backend in /stats");
    let servers = backend["servers"].as_array().expect("servers");
    let server = servers.iter().find(|s| s["name"] == server).expect("server in /stats");
    server[figure].as_u64().unwrap_or_else(|| panic!("{figure} in {server}"))
}
