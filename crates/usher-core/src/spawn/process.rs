//! Starting one server process: its port, its command line and
//! environment, its output carried into usher's log.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use slog::{info, warn, Logger};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::config::{SpawnSettings, ADDRESS_PLACEHOLDER, PORT_PLACEHOLDER};

/// Lines of a process's stderr kept for the record of a failed start.
pub const STDERR_TAIL: usize = 10;

/// The last lines a process wrote to stderr.
pub type StderrTail = Arc<Mutex<VecDeque<String>>>;

/// A free port on 127.0.0.1, for the next process. The port is free when
/// read; another program could take it before the process binds it (a
/// small race the kernel's ephemeral range makes unlikely). The process
/// then fails to start and is retried like any failed start.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// `text` with the placeholders replaced for a process listening at `address`.
fn placed(text: &str, address: SocketAddr) -> String {
    text.replace(PORT_PLACEHOLDER, &address.port().to_string()).replace(ADDRESS_PLACEHOLDER, &address.to_string())
}

/// A started process and where its last stderr lines go.
pub struct Started {
    pub child: Child,
    pub pid: u32,
    pub stderr: StderrTail,
    /// Ends when stderr is closed: its last lines are in `stderr` then.
    pub stderr_read: tokio::task::JoinHandle<()>,
}

/// Starts `spawn.command` for a process listening at `address`, in a
/// process group of its own, killed if usher dies; `stress`: the frontend
/// feeding the backend is in stress mode (`USHER_STRESS=1`).
pub fn start(spawn: &SpawnSettings, address: SocketAddr, stress: bool, log: &Logger) -> io::Result<Started> {
    let (program, args) = spawn.command.split_first().expect("validated: the command is not empty");
    let mut command = Command::new(placed(program, address));
    command
        .args(args.iter().map(|a| placed(a, address)))
        .envs(spawn.env.iter().map(|(k, v)| (k, placed(v, address))))
        .env("USHER_PORT", address.port().to_string())
        .env("USHER_ADDRESS", address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if stress {
        command.env("USHER_STRESS", "1");
    }
    if let Some(dir) = &spawn.working_dir {
        command.current_dir(dir);
    }
    super::hygiene::confine(&mut command);
    let mut child = command.spawn()?;
    let pid = child.id().unwrap_or(0);
    let stderr = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(carry_lines(out, "stdout", pid, log.clone(), None));
    }
    let stderr_read = match child.stderr.take() {
        Some(err) => tokio::spawn(carry_lines(err, "stderr", pid, log.clone(), Some(stderr.clone()))),
        None => tokio::spawn(async {}),
    };
    Ok(Started { child, pid, stderr, stderr_read })
}

/// Longest line carried into the log; the rest of a longer one is cut.
const MAX_LINE: usize = 4096;

/// Writes each line the process prints as a log record with its pid, and
/// keeps stderr's last lines in `tail`.
async fn carry_lines(stream: impl AsyncRead + Unpin, name: &'static str, pid: u32, log: Logger, tail: Option<StderrTail>) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(mut line)) => {
                if line.len() > MAX_LINE {
                    let mut end = MAX_LINE;
                    while !line.is_char_boundary(end) {
                        end -= 1;
                    }
                    line.truncate(end);
                }
                info!(log, "process output"; "pid" => pid, "stream" => name, "line" => &line);
                if let Some(tail) = &tail {
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
            Ok(None) => return,
            Err(err) => {
                // Not UTF-8, or the pipe failed: the rest is not carried.
                warn!(log, "process output unreadable"; "pid" => pid, "stream" => name, "error" => %err);
                return;
            }
        }
    }
}
