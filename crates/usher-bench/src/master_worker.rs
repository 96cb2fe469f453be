//! HAProxy in master-worker mode (`-W`), reloaded the way its operators
//! do: the configuration file is rewritten and the master gets `SIGUSR2`.
//! The master then executes itself again, parses the new file, starts a
//! new worker that takes the listening sockets over from the old one
//! (`expose-fd listeners` on the stats socket: no connection is refused
//! in between) and tells the old worker to finish its sessions and leave.
//! A reload is over when every worker of before has left.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rustix::process::{kill_process, Pid, Signal};

use crate::sys::is_running;
use tokio::time::Instant;

/// How long a start or a reload may take before the run fails.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// How often the workers are looked at while waiting.
const POLL: Duration = Duration::from_millis(1);

/// A running master and its workers; all are stopped when dropped.
pub struct MasterWorker {
    master: Child,
    config: PathBuf,
    /// Where its frontend listens.
    pub addr: SocketAddr,
}

impl MasterWorker {
    /// Starts `exe` on `config_text` (written next to `stem`), which must
    /// bind its frontend to `addr`, and waits until a worker accepts there.
    /// `config_text` is completed with the global lines a seamless reload
    /// needs.
    pub fn start(
        exe: &Path,
        stem: &Path,
        addr: SocketAddr,
        config_text: &str,
        cpus: Option<&str>,
    ) -> anyhow::Result<MasterWorker> {
        let config = stem.with_extension("cfg");
        std::fs::write(&config, with_socket(config_text, stem))?;
        let log = std::fs::File::create(stem.with_extension("log"))?;
        // The master dies with the bench; its workers leave when it is gone.
        let mut cmd = crate::proxies::pinned_and_guarded(cpus, exe);
        cmd.arg("-W").arg("-db").arg("-f").arg(&config);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let master = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
        let mut running = MasterWorker { master, config, addr };
        let deadline = std::time::Instant::now() + STEP_LIMIT;
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if let Some(status) = running.master.try_wait()? {
                bail!("haproxy -W exited with {status}; see {}", stem.with_extension("log").display());
            }
            if std::time::Instant::now() > deadline {
                bail!("haproxy -W did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(running)
    }

    /// Rewrites the configuration, sends `SIGUSR2` to the master and waits
    /// until a new worker runs and every worker of before has left.
    pub async fn reload(&self, config_text: &str, stem: &Path) -> anyhow::Result<()> {
        std::fs::write(&self.config, with_socket(config_text, stem))?;
        let before = self.workers();
        anyhow::ensure!(!before.is_empty(), "haproxy has no worker to reload");
        kill_process(self.master_pid()?, Signal::USR2).context("SIGUSR2 to the master")?;
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let now = self.workers();
            let replaced = now.iter().any(|w| !before.contains(w)) && before.iter().all(|w| !is_running(*w));
            if replaced {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("haproxy's reload did not finish: workers {now:?}, before {before:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn master_pid(&self) -> anyhow::Result<Pid> {
        i32::try_from(self.master.id()).ok().and_then(Pid::from_raw).ok_or_else(|| anyhow!("no master pid"))
    }

    /// The master's live children (its workers).
    fn workers(&self) -> HashSet<u32> {
        let pid = self.master.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| is_running(*p))
            .collect()
    }
}

impl Drop for MasterWorker {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then itself.
        let workers = self.workers();
        if let Ok(pid) = self.master_pid() {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.master.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
        for worker in workers.into_iter().filter(|w| is_running(*w)) {
            if let Some(pid) = i32::try_from(worker).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// The stats socket through which a new worker takes the listeners.
fn with_socket(config_text: &str, stem: &Path) -> String {
    let socket = stem.with_extension("sock");
    config_text.replacen(
        "global\n",
        &format!("global\n    stats socket {} expose-fd listeners level admin\n", socket.display()),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_socket_goes_into_the_global_section() {
        let cfg = with_socket("global\n    nbthread 1\n\ndefaults\n    mode tcp\n", Path::new("/tmp/run/haproxy-1"));
        assert_eq!(
            cfg,
            "global\n    stats socket /tmp/run/haproxy-1.sock expose-fd listeners level admin\n    nbthread 1\n\n\
             defaults\n    mode tcp\n"
        );
    }
}
