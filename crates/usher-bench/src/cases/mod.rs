//! The benchmark cases and the harness they share: placement (taskset),
//! proxy start, the measured window, and alternation of the proxies run by
//! run (A B C A B C …) with repeats.

mod actors;
mod close;
#[cfg(feature = "cluster")]
mod cluster;
mod connrate;
mod cost;
mod idle;
mod keepalive;
mod many_backends;
mod one_backend;
mod overload;
mod queue;
mod queued;
mod reload;
mod routing;
mod scale;
mod stats_read;
mod throughput;

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::load::Window;
use crate::proxies::{Launcher, ProxyKind, Running, Tune};
use crate::report::{CaseResult, Metric};
use crate::sys;

pub use queue::SERVER_MAXCONN as QUEUE_SERVER_MAXCONN;
pub use scale::ScaleOnly;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Connrate,
    Keepalive,
    Throughput,
    Idle,
    Queue,
    Actors,
    /// Client close → server EOF, per session.
    Close,
    /// Per-session CPU and system calls; not in [`Case::ALL`] (strace is slow).
    Cost,
    /// Two instances sharing a maxconn through etcd vs one; not in
    /// [`Case::ALL`] (needs etcd and the `cluster` build).
    Cluster,
    /// Short sessions whose request is a ClientHello, with and without an
    /// SNI routing rule; not in [`Case::ALL`].
    Routing,
    /// Open-loop arrivals through an overload, for each queue discipline
    /// and HAProxy; not in [`Case::ALL`] (a minute per run).
    Overload,
    /// Sessions/s with 2 to 10 000 servers per algorithm; not in
    /// [`Case::ALL`] (48 runs per repeat).
    Scale,
    /// Clients queued behind a full server: RSS per queued client and the
    /// drain rate; not in [`Case::ALL`] (it uses the whole fd limit).
    Queued,
    /// A reload of 10 000 servers under a steady load, in process: apply
    /// time and the load's p99 during it; not in [`Case::ALL`].
    Reload,
    /// One frontend's sessions with 1 and with 50 frontends × 500 backends
    /// configured, usher and HAProxy; not in [`Case::ALL`] (2 000 servers).
    Backends,
    /// Reads of the report with 10 000 servers, in process: ms per read
    /// and what a message to the actors' thread waits meanwhile; not in
    /// [`Case::ALL`].
    Stats,
}

impl Case {
    pub const ALL: [Case; 7] =
        [Case::Connrate, Case::Keepalive, Case::Throughput, Case::Idle, Case::Queue, Case::Actors, Case::Close];

    pub fn name(self) -> &'static str {
        match self {
            Case::Connrate => "connrate",
            Case::Keepalive => "keepalive",
            Case::Throughput => "throughput",
            Case::Idle => "idle",
            Case::Queue => "queue",
            Case::Actors => "actors",
            Case::Close => "close",
            Case::Cost => "cost",
            Case::Cluster => "cluster",
            Case::Routing => "routing",
            Case::Overload => "overload",
            Case::Scale => "scale",
            Case::Queued => "queued",
            Case::Reload => "reload",
            Case::Backends => "backends",
            Case::Stats => "stats",
        }
    }
}

/// Where the proxy and the load run, and with how many threads each.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub proxy_cpus: &'static str,
    pub load_cpus: &'static str,
    /// Proxy threads (usher workers, HAProxy nbthread) and load threads.
    pub threads: usize,
}

/// The reference set-up: proxy with 1 thread on CPU 0, load
/// generator and backends on CPU 1.
pub const REFERENCE: Placement = Placement { proxy_cpus: "0", load_cpus: "1", threads: 1 };
/// `queue`: proxy with 2 threads, everything sharing both cores.
pub const SHARED: Placement = Placement { proxy_cpus: "0,1", load_cpus: "0,1", threads: 2 };

/// Other processes using more than this share of one CPU during a run make
/// its figures suspect: the run waits for a quiet machine first, and says so.
const NOISE: f64 = 0.15;
/// Times a noisy run is done again before it is kept with a note.
const NOISY_RETRIES: usize = 2;
/// Fds of the bench or a proxy that are not connections (listeners, epoll, logs).
const FD_OVERHEAD: u64 = 200;

#[derive(Debug, Clone)]
pub struct Options {
    pub warmup: Duration,
    pub duration: Duration,
    pub repeats: usize,
    pub quick: bool,
    pub proxies: Vec<ProxyKind>,
    pub pin: bool,
    pub idle_conns: usize,
    /// Sessions per batch in the `cost` case.
    pub cost_sessions: u64,
    /// The `scale` case's algorithms and sizes.
    pub scale: ScaleOnly,
    /// Longest wait before each run for other processes to go quiet (0 = none).
    pub quiet_wait: Duration,
    /// The usher-bench binary (for `serve-usher`).
    pub exe: PathBuf,
    pub haproxy: PathBuf,
    pub nginx: PathBuf,
}

impl Options {
    pub fn new(exe: PathBuf) -> Options {
        Options {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            repeats: 3,
            quick: false,
            proxies: ProxyKind::ALL.to_vec(),
            pin: true,
            idle_conns: 10_000,
            cost_sessions: 20_000,
            scale: ScaleOnly::default(),
            quiet_wait: Duration::from_secs(120),
            exe,
            haproxy: PathBuf::from("/usr/sbin/haproxy"),
            nginx: PathBuf::from("/usr/sbin/nginx"),
        }
    }

    /// Tiny runs (CI): about a second each, one repeat, 500 idle connections.
    pub fn quick(mut self) -> Options {
        self.quick = true;
        self.warmup = Duration::from_millis(200);
        self.duration = Duration::from_millis(600);
        self.repeats = 1;
        self.idle_conns = self.idle_conns.min(500);
        self.cost_sessions = self.cost_sessions.min(300);
        self.quiet_wait = Duration::ZERO;
        self
    }
}

pub struct Harness {
    pub opts: Options,
    /// Proxies that will run (HAProxy, nginx dropped when not installed).
    pub proxies: Vec<ProxyKind>,
    pub pinned: bool,
    pub haproxy_version: Option<String>,
    /// e.g. "nginx/1.22.1"; `None` when nginx or its stream module is absent.
    pub nginx_version: Option<String>,
    /// What the header should say: skipped proxies, unpinned runs, fd limit.
    pub notes: Vec<String>,
    /// Global maxconn of both proxies (fits the fd limit).
    pub maxconn: u32,
    launcher: Launcher,
    run_seq: Cell<usize>,
}

impl Harness {
    pub fn new(mut opts: Options) -> anyhow::Result<Harness> {
        let mut notes = Vec::new();
        let mut proxies = opts.proxies.clone();
        let haproxy_version = crate::proxies::haproxy_version(&opts.haproxy);
        if proxies.contains(&ProxyKind::Haproxy) && haproxy_version.is_none() {
            let note = "haproxy not found: install with apt-get install haproxy; skipping";
            eprintln!("{note}");
            notes.push(note.to_owned());
            proxies.retain(|p| *p != ProxyKind::Haproxy);
        }
        let nginx = crate::nginx::Nginx::find(&opts.nginx);
        if let (true, Err(note)) = (proxies.contains(&ProxyKind::Nginx), &nginx) {
            eprintln!("{note}");
            notes.push(note.clone());
            proxies.retain(|p| *p != ProxyKind::Nginx);
        }
        let nginx = nginx.ok();
        let nginx_version = nginx.as_ref().map(|n| n.version.clone());
        let pinned = opts.pin && {
            match sys::can_pin() {
                Ok(()) => true,
                Err(why) => {
                    eprintln!("{why}");
                    notes.push(why);
                    false
                }
            }
        };
        // Each idle connection holds two fds here (client and backend ends)
        // and two in the proxy, which inherits the limit.
        let want = opts.idle_conns as u64 * 2 + 2 * FD_OVERHEAD;
        let limit = sys::raise_fd_limit(want);
        let maxconn = ((opts.idle_conns as u64 + 2000).min(limit.saturating_sub(FD_OVERHEAD) / 2)) as u32;
        if (maxconn as usize) < opts.idle_conns + 50 {
            let fit = (maxconn as usize).saturating_sub(50).max(1);
            let note = format!(
                "RLIMIT_NOFILE is {limit} and cannot be raised: maxconn {maxconn}, idle uses {fit} connections \
                 instead of {}",
                opts.idle_conns
            );
            eprintln!("{note}");
            notes.push(note);
            opts.idle_conns = opts.idle_conns.min(fit);
        }
        // One directory per harness, not per process: each harness removes
        // its own when dropped, and tests run several harnesses at once.
        static HARNESSES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = HARNESSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let workdir = std::env::temp_dir().join(format!("usher-bench-{}-{nth}", std::process::id()));
        std::fs::create_dir_all(&workdir)?;
        let haproxy = haproxy_version.as_ref().map(|_| opts.haproxy.clone());
        let launcher = Launcher { exe: opts.exe.clone(), haproxy, nginx, workdir, spent: Rc::new(Cell::new(0.0)) };
        Ok(Harness {
            opts,
            proxies,
            pinned,
            haproxy_version,
            nginx_version,
            notes,
            maxconn,
            launcher,
            run_seq: Cell::new(0),
        })
    }

    /// Runs one case: every variant, every repeat, proxies alternated.
    pub fn run(&self, case: Case) -> Vec<CaseResult> {
        match case {
            Case::Connrate => connrate::run(self),
            Case::Keepalive => keepalive::run(self),
            Case::Throughput => throughput::run(self),
            Case::Idle => idle::run(self),
            Case::Queue => queue::run(self),
            Case::Actors => actors::run(self),
            Case::Close => close::run(self),
            Case::Cost => cost::run(self),
            Case::Routing => routing::run(self),
            Case::Overload => overload::run(self),
            Case::Scale => scale::run(self),
            Case::Queued => queued::run(self),
            Case::Reload => reload::run(self),
            Case::Backends => many_backends::run(self),
            Case::Stats => stats_read::run(self),
            #[cfg(feature = "cluster")]
            Case::Cluster => cluster::run(self),
            #[cfg(not(feature = "cluster"))]
            Case::Cluster => {
                eprintln!("cluster: skipped: usher-bench was built without cluster mode (--features cluster)");
                Vec::new()
            }
        }
    }

    /// A path for a run's side files (strace's output), in the bench's
    /// temporary directory, unique per call.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let seq = self.run_seq.get() + 1;
        self.run_seq.set(seq);
        self.launcher.workdir.join(format!("{name}-{seq}"))
    }

    /// These proxies, among the ones that run.
    pub fn only(&self, kinds: &[ProxyKind]) -> Vec<ProxyKind> {
        self.proxies.iter().copied().filter(|p| kinds.contains(p)).collect()
    }

    pub fn describe(&self, p: &Placement) -> String {
        if self.pinned {
            format!("proxy {} thread(s) on CPU {}, load + backends on CPU {}", p.threads, p.proxy_cpus, p.load_cpus)
        } else {
            format!("proxy {} thread(s), unpinned", p.threads)
        }
    }

    /// A fresh runtime for the load generator and backends, on its CPUs.
    pub fn load_runtime(&self, p: &Placement) -> anyhow::Result<tokio::runtime::Runtime> {
        if self.pinned {
            sys::pin_self(p.load_cpus)?;
        }
        Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(p.threads).enable_all().build()?)
    }

    pub fn tune(&self, p: &Placement, server_maxconn: u32, queue_timeout: Duration) -> Tune {
        Tune {
            threads: p.threads,
            cpus: self.pinned.then(|| p.proxy_cpus.to_owned()),
            maxconn: self.maxconn,
            server_maxconn,
            queue_timeout,
            balance: "roundrobin",
            layout: crate::layout::Layout::SINGLE,
        }
    }

    /// `instances` usher processes in cluster mode, `cluster` their
    /// `[cluster]` section without `name` (each gets its own), each with an
    /// admin API.
    pub fn start_clustered(
        &self,
        kind: ProxyKind,
        instances: usize,
        servers: &[std::net::SocketAddr],
        tune: &Tune,
        cluster: &str,
    ) -> anyhow::Result<Vec<Running>> {
        (0..instances)
            .map(|i| {
                let seq = self.run_seq.get() + 1;
                self.run_seq.set(seq);
                let stem = self.launcher.workdir.join(format!("{}-{seq}", kind.name()));
                let section = format!("\n[cluster]\nname = \"bench-{seq}-{i}\"\n{cluster}");
                self.launcher.usher(kind, &stem, servers, tune, true, &section)
            })
            .collect()
    }

    pub fn start_proxy(
        &self,
        kind: ProxyKind,
        servers: &[std::net::SocketAddr],
        tune: &Tune,
    ) -> anyhow::Result<Running> {
        let seq = self.run_seq.get() + 1;
        self.run_seq.set(seq);
        self.launcher.start(kind, servers, tune, seq)
    }

    /// The measured window of a run, starting now.
    pub fn window(&self) -> Window {
        Window::new(self.opts.warmup, self.opts.duration)
    }

    /// Runs `run` for every repeat and proxy, alternating the proxies, and
    /// prints progress on stderr and the table on stdout.
    pub fn alternate(
        &self,
        case: &'static str,
        title: String,
        metrics: Vec<Metric>,
        proxies: Vec<ProxyKind>,
        mut run: impl FnMut(ProxyKind) -> anyhow::Result<Vec<f64>>,
    ) -> CaseResult {
        let mut result = CaseResult {
            case,
            title,
            proxies: proxies.clone(),
            metrics,
            runs: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
        };
        eprintln!("-- {}", result.title);
        for rep in 1..=self.opts.repeats {
            for &proxy in &proxies {
                let outcome = self.measured(proxy, &mut run, result.metrics.len(), rep, &mut result.notes);
                match outcome {
                    Ok(values) => {
                        let shown: Vec<String> = result
                            .metrics
                            .iter()
                            .zip(&values)
                            .map(|(m, v)| format!("{} {}", m.name, crate::report::number(*v, m.decimals)))
                            .collect();
                        eprintln!("   run {rep}/{} {:<8} {}", self.opts.repeats, proxy.name(), shown.join(", "));
                        result.runs.push((rep, proxy, values));
                    }
                    Err(err) => {
                        let msg = format!("{} run {rep} failed: {err:#}", proxy.name());
                        eprintln!("   {msg}");
                        result.errors.push(msg);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        println!("{}", result.render());
        result
    }

    /// One run of `proxy`, on a quiet machine when possible: a run during
    /// which other processes used more than [`NOISE`] of a CPU is done again
    /// (up to [`NOISY_RETRIES`] times, when the machine was quiet before it)
    /// and otherwise kept with a note.
    fn measured(
        &self,
        proxy: ProxyKind,
        run: &mut impl FnMut(ProxyKind) -> anyhow::Result<Vec<f64>>,
        metrics: usize,
        rep: usize,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Vec<f64>> {
        let mut attempt = 0;
        loop {
            // A machine that stayed busy for the whole wait gets no retries.
            let calm = !self.opts.quiet_wait.is_zero() && sys::wait_quiet(NOISE, self.opts.quiet_wait) < NOISE;
            let meter = sys::CpuMeter::start();
            self.launcher.spent.set(0.0);
            let outcome = run(proxy);
            let others = meter.others(self.launcher.spent.get());
            if let Ok(values) = &outcome {
                anyhow::ensure!(values.len() == metrics, "{} values for {metrics} metrics", values.len());
            }
            if others <= NOISE || outcome.is_err() {
                return outcome;
            }
            let busy = format!("other processes or CPU steal took {:.0}% of a CPU", others * 100.0);
            if attempt < NOISY_RETRIES && calm {
                attempt += 1;
                eprintln!("   {} run {rep}: {busy}; running it again", proxy.name());
                continue;
            }
            let note = format!("{} run {rep}: {busy} meanwhile", proxy.name());
            eprintln!("   {note}");
            notes.push(note);
            return outcome;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.launcher.workdir);
    }
}
