//! The `usher` binary as a real process: what systemd runs, and what a
//! test can kill with SIGKILL. Its JSON log records (stderr) are collected
//! by a thread and waited on; the process is killed on drop, so a failing
//! test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crate::DEADLINE;

pub struct Daemon {
    pub child: Child,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line received so far.
    pub seen: Vec<String>,
}

impl Daemon {
    /// Starts `binary run -c config` with `env` set and no inherited
    /// `USHER__*` variables (they would override the test's config).
    pub fn start(binary: &Path, config: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let mut cmd = Command::new(binary);
        cmd.args(["run", "-c"]).arg(config);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().to_uppercase().starts_with("USHER__") {
                cmd.env_remove(name);
            }
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", binary.display()));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, stderr: rx, seen: Vec::new() }
    }

    /// Waits (blocking, bounded) for a stderr line containing `needle` and
    /// returns it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no log line with {needle:?}; stderr so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The `address` of the first JSON record whose message is `msg`
    /// (`"listening"` for a frontend, `"admin API listening"`), waited for.
    pub fn address(&mut self, msg: &str) -> SocketAddr {
        let line = self.wait_log(&format!("\"msg\":\"{msg}\""));
        let record: serde_json::Value = serde_json::from_str(&line).expect("JSON record");
        record["address"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address in {line}"))
    }

    /// Sends signal `name` (`"HUP"`, `"TERM"`, `"KILL"`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([format!("-{name}"), self.child.id().to_string()]).status();
        assert!(status.expect("run kill").success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "usher still running after {DEADLINE:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
