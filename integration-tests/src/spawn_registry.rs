//! The registry of the spawned-server tests: every `spawn_echo` process
//! holds one connection to it for its life and one per session it serves,
//! so the registry counts live processes and sessions — and their peaks —
//! from outside usher, as the kernel sees them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::DEADLINE;

#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub processes: u64,
    pub peak_processes: u64,
    pub sessions: u64,
    pub peak_sessions: u64,
    /// Every process that registered, by pid.
    pub pids: BTreeSet<u32>,
}

#[derive(Clone)]
pub struct Registry {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Registry {
    /// Listens on 127.0.0.1 port 0; must run inside a tokio runtime.
    pub fn start() -> Registry {
        let listener = crate::listener();
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let addr = listener.local_addr().expect("address");
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counts = shared.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (Some(kind), Some(pid)) = (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok()))
                    else {
                        return;
                    };
                    let process = kind == "P";
                    {
                        let mut c = counts.lock().unwrap();
                        if process {
                            c.processes += 1;
                            c.peak_processes = c.peak_processes.max(c.processes);
                            c.pids.insert(pid);
                        } else {
                            c.sessions += 1;
                            c.peak_sessions = c.peak_sessions.max(c.sessions);
                        }
                    }
                    // Held until the process (or its session) ends: a
                    // session says `E` and waits for the count to drop.
                    line.clear();
                    let ended = reader.read_line(&mut line).await;
                    {
                        let mut c = counts.lock().unwrap();
                        if process {
                            c.processes -= 1;
                        } else {
                            c.sessions -= 1;
                        }
                    }
                    if matches!(ended, Ok(n) if n > 0) {
                        let _ = reader.get_mut().write_all(b"ok\n").await;
                        let mut rest = Vec::new();
                        let _ = reader.read_to_end(&mut rest).await;
                    }
                });
            }
        });
        Registry { addr, counts }
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// Waits (bounded by [`DEADLINE`]) until `cond` holds.
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&Counts) -> bool) -> Counts {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let now = self.counts();
            if cond(&now) {
                return now;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {now:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Waits, within the test deadline, until none of `pids` exists: a child's
/// registry connection may close a moment before the process is gone.
pub async fn wait_gone(pids: impl IntoIterator<Item = u32>) {
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    for pid in pids {
        while process_exists(pid) {
            assert!(std::time::Instant::now() < deadline, "process {pid} left behind");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// Whether process `pid` still exists (a zombie counts as gone).
pub fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
