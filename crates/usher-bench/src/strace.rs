//! Counting a running proxy's system calls with `strace -c -f -p PID`:
//! attach, wait until every thread is traced, let the caller run its load,
//! stop strace with SIGINT (it then writes its summary) and read the
//! summary's per-call counts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

/// How long strace may take to attach to every thread, and to write its
/// summary once interrupted.
const LIMIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);

/// System calls counted by strace, by name, most frequent first.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts(pub Vec<(String, u64)>);

impl Counts {
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    }
}

/// strace attached to every thread of a process; counting until [`Tracer::finish`].
pub struct Tracer {
    child: Child,
    summary: PathBuf,
    log: PathBuf,
}

impl Tracer {
    /// Attaches to `pid` and returns once all its threads are traced, or
    /// fails with strace's own words (no strace, ptrace not permitted).
    pub fn attach(pid: u32, stem: &Path) -> anyhow::Result<Tracer> {
        let summary = stem.with_extension("strace");
        let log = stem.with_extension("strace.log");
        let child = Command::new("strace")
            .args(["-c", "-f", "-q", "-o"])
            .arg(&summary)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot run strace (apt-get install strace)")?;
        let mut tracer = Tracer { child, summary, log };
        let deadline = Instant::now() + LIMIT;
        // The readiness signal: the kernel shows a tracer on every thread.
        while !all_threads_traced(pid)? {
            if let Some(status) = tracer.child.try_wait()? {
                bail!("strace -p {pid} exited with {status}: {}", tracer.stderr());
            }
            if Instant::now() > deadline {
                bail!("strace did not attach to every thread of {pid} within {LIMIT:?}: {}", tracer.stderr());
            }
            std::thread::sleep(POLL);
        }
        Ok(tracer)
    }

    /// Stops tracing and returns the counts since [`Tracer::attach`].
    pub fn finish(mut self) -> anyhow::Result<Counts> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().context("cannot run kill")?;
        anyhow::ensure!(sent.success(), "kill -INT {pid} failed: {sent}");
        let deadline = Instant::now() + LIMIT;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("strace did not stop within {LIMIT:?} of SIGINT");
            }
            std::thread::sleep(POLL);
        }
        let text = std::fs::read_to_string(&self.summary)
            .with_context(|| format!("strace wrote no summary to {}: {}", self.summary.display(), self.stderr()))?;
        parse_summary(&text)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default().trim().to_owned()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Once finished this is a no-op; otherwise detaches the proxy.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn all_threads_traced(pid: u32) -> anyhow::Result<bool> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("process {pid} is gone"))?;
    for task in tasks {
        let status = std::fs::read_to_string(task?.path().join("status")).unwrap_or_default();
        let tracer = status.lines().find_map(|l| l.strip_prefix("TracerPid:")).map(str::trim);
        if matches!(tracer, None | Some("0")) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The table `strace -c` writes:
///
/// ```text
/// % time     seconds  usecs/call     calls    errors syscall
/// ------ ----------- ----------- --------- --------- ----------------
///  25.00    0.000100          10        10           close
///  ...
/// ------ ----------- ----------- --------- --------- ----------------
/// 100.00    0.000400                    40         2 total
/// ```
///
/// The errors column is blank when a call never failed; the `total` row is
/// left out (it is the sum).
pub fn parse_summary(text: &str) -> anyhow::Result<Counts> {
    let mut counts = Vec::new();
    let mut header = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"%") {
            header = true;
            continue;
        }
        let Some(name) = fields.last() else { continue };
        if !header || *name == "total" || fields[0].starts_with('-') {
            continue;
        }
        let calls = fields
            .get(3)
            .filter(|_| fields.len() >= 5 && fields[0].parse::<f64>().is_ok())
            .and_then(|c| c.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("unexpected line in strace's summary: {line:?}"))?;
        counts.push(((*name).to_owned(), calls));
    }
    anyhow::ensure!(header, "no table in strace's summary:\n{text}");
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Counts(counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 21.43    0.150000           7     20000           connect
 20.00    0.140000           3     40000           close
  5.00    0.035000           1     20000     20000 recvfrom
  0.01    0.000070          70         1           futex
------ ----------- ----------- --------- --------- ----------------
100.00    0.700000           8     80001     20000 total
";

    #[test]
    fn summary_counts_each_call_without_the_total_row() {
        let counts = parse_summary(SUMMARY).unwrap();
        assert_eq!(counts.get("close"), 40_000);
        assert_eq!(counts.get("recvfrom"), 20_000, "the errors column is not the calls column");
        assert_eq!(counts.get("total"), 0);
        assert_eq!(counts.total(), 80_001);
        assert_eq!(counts.0[0].0, "close", "most frequent first");
    }

    #[test]
    fn a_summary_without_a_table_is_an_error() {
        assert!(parse_summary("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n").is_err());
        assert!(parse_summary("% time seconds usecs/call calls errors syscall\n 1.0 0.1 x y close\n").is_err());
    }
}
