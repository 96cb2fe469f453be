//! The machine: CPU pinning with `taskset`, the fd limit, and a process's
//! CPU time, context switches and RSS read from `/proc`.

use std::fs;
use std::io;
use std::process::{Command, Stdio};

/// Linux reports utime/stime in USER_HZ ticks, fixed at 100 in the ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// `taskset` (util-linux) runs and there are at least 2 CPUs to split.
pub fn can_pin() -> Result<(), String> {
    let cores = cores();
    if cores < 2 {
        return Err(format!("only {cores} CPU: running unpinned"));
    }
    match Command::new("taskset").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => Ok(()),
        _ => Err("taskset not found (install util-linux): running unpinned".to_owned()),
    }
}

/// Pins every thread of this process to `cpus` (a taskset list such as
/// "1" or "0,1"); threads created later inherit it.
pub fn pin_self(cpus: &str) -> io::Result<()> {
    let pid = std::process::id().to_string();
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("taskset -a -p -c {cpus} {pid} failed: {status}")))
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Raises RLIMIT_NOFILE (soft and, when allowed, hard) towards `want`;
/// children inherit it. Returns the soft limit in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    use rlimit::Resource;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap_or((1024, 1024));
    if soft >= want {
        return soft;
    }
    if rlimit::setrlimit(Resource::NOFILE, want, want.max(hard)).is_ok() {
        return want;
    }
    rlimit::increase_nofile_limit(want).unwrap_or(soft)
}

/// The hard RLIMIT_NOFILE: as far as [`raise_fd_limit`] can go without privileges.
pub fn hard_fd_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(_, hard)| hard)
}

/// User + system CPU seconds of process `pid`, all threads.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = after_comm(&stat)?.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or_else(|| io::Error::other("bad stat"));
    Ok((tick(11)? + tick(12)?) as f64 / TICKS_PER_SECOND)
}

/// Seconds thread `tid` of this process has run on a CPU, to the
/// nanosecond (the first field of its `schedstat`; `/proc/PID/stat` counts
/// in 10 ms ticks, too coarse for a read of a few ms).
pub fn thread_cpu_seconds(tid: i32) -> io::Result<f64> {
    let schedstat = fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))?;
    let ns = schedstat.split_whitespace().next().and_then(|f| f.parse::<u64>().ok());
    ns.map(|ns| ns as f64 / 1e9).ok_or_else(|| io::Error::other("bad schedstat"))
}

/// Whether process `pid` runs (exists and is not a zombie).
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    after_comm(&stat).ok().and_then(|rest| rest.split_whitespace().next()).is_some_and(|state| state != "Z")
}

/// A `/proc/PID/stat` line after its `(comm)`, which may hold spaces and
/// parentheses: the fields from the state on.
fn after_comm(stat: &str) -> io::Result<&str> {
    stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| io::Error::other("bad /proc stat"))
}

/// Resident set size of process `pid`, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

/// TCP segments sent by this network namespace so far (`Tcp: OutSegs` of
/// /proc/net/snmp). On 127.0.0.1 that is every party's: the load's, the
/// backends' and the proxy's.
pub fn tcp_segments_sent() -> io::Result<u64> {
    out_segs(&fs::read_to_string("/proc/net/snmp")?).ok_or_else(|| io::Error::other("no Tcp OutSegs in /proc/net/snmp"))
}

/// `OutSegs` of the `Tcp:` pair of lines (a header line of names, then
/// one of values).
fn out_segs(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|name| name == "OutSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Context switches of process `pid` so far, voluntary and not, summed
/// over its threads (`/proc/PID/status` alone counts the main thread; every
/// thread's own count is under `/proc/PID/task/TID/status`). A thread that
/// ended is no longer counted, which is why the proxies' threads, which
/// live as long as the proxy, are what this is for.
pub fn context_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = fs::read_to_string(task?.path().join("status")) else { continue };
        total += status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:").or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

pub fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// CPU seconds all CPUs have spent in user, nice and system time since
/// boot, plus steal time (a virtual CPU taken away by the hypervisor is as
/// lost to the benchmark as one used by another process).
pub fn system_busy_seconds() -> io::Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).ok_or_else(|| io::Error::other("no cpu line"))?;
    // user nice system idle iowait irq softirq steal …
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let busy: u64 = [0, 1, 2, 7].iter().filter_map(|&i| ticks.get(i)).sum();
    Ok(busy as f64 / TICKS_PER_SECOND)
}

/// Measures how much CPU processes other than this one and its proxy used
/// (or the hypervisor stole) over an interval: other work on a 2-core
/// machine ruins a benchmark.
pub struct CpuMeter {
    busy: f64,
    own: f64,
    at: std::time::Instant,
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter {
            busy: system_busy_seconds().unwrap_or(0.0),
            own: cpu_seconds(std::process::id()).unwrap_or(0.0),
            at: std::time::Instant::now(),
        }
    }

    /// CPU used by everything else since `start`, as a share of one CPU
    /// (0.5 = half a core), given what the proxy used meanwhile.
    pub fn others(&self, proxy_cpu: f64) -> f64 {
        let busy = system_busy_seconds().unwrap_or(0.0) - self.busy;
        let own = cpu_seconds(std::process::id()).unwrap_or(0.0) - self.own;
        let wall = self.at.elapsed().as_secs_f64().max(1e-3);
        ((busy - own - proxy_cpu) / wall).max(0.0)
    }
}

/// Waits until other processes use less than `limit` of a CPU (sampled
/// over 300 ms), for at most `patience`. Returns the last share seen.
pub fn wait_quiet(limit: f64, patience: std::time::Duration) -> f64 {
    let deadline = std::time::Instant::now() + patience;
    let mut told = false;
    loop {
        let meter = CpuMeter::start();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let others = meter.others(0.0);
        if others < limit || std::time::Instant::now() > deadline {
            return others;
        }
        if !told {
            eprintln!("   waiting for a quiet machine (others or steal: {:.0}% of a CPU)", others * 100.0);
            told = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_running, out_segs};

    #[test]
    fn this_process_runs_and_a_missing_one_does_not() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
    }

    #[test]
    fn out_segs_is_read_by_its_name_from_the_tcp_lines() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin ActiveOpens InSegs OutSegs RetransSegs\n\
                    Tcp: 1 200 17 4000 4242 3\nUdp: InDatagrams\nUdp: 5\n";
        assert_eq!(out_segs(snmp), Some(4242));
        assert_eq!(out_segs("Tcp: RtoAlgorithm\nTcp: 1\n"), None);
    }
}
