//! `reload`: a reload of a big configuration under a steady load, in
//! process. usher runs on the bench's own thread (one data-plane worker)
//! with a backend `app` of one real server, beside 10 000 servers in
//! backends nobody uses (their address is never connected to): 500
//! backends of 20, then one backend of 10 000. A closed loop of short
//! sessions runs through `app`; after a while the configuration is
//! reloaded with every fleet backend's server names shifted by 7 (7
//! servers removed and 7 added per backend, every other one changed in
//! place). The same again under an open loop of sessions at a fixed rate
//! well under what the machine can run: the closed loop keeps both cores
//! busy, so any CPU the reload takes (planning 10 000 servers) shows as
//! latency, while the open loop has room to spare and shows what is left
//! of a stall. Reported: from the broker's `reload done` record,
//! the apply time (`apply_ms`: from the request to the end of the commit)
//! and the longest time the reload held the actor thread at once
//! (`longest_hold_ms`), the reload's round trip, the p99 and max latency
//! of the sessions before the reload and of those that overlapped it, and
//! against what: the median and worst p99 of windows as long as the
//! reload before it, and the share of those windows at least as slow as
//! the reload's (about 50 % when a reload costs nothing). For usher, a
//! probe also asks the actors' thread for a report every millisecond
//! ([`Probe`]): the p99 of its round trips before the reload, and their
//! p99 and max during it — the stall of the actors as a message sees it.
//!
//! HAProxy runs the same case the way its operators reload it: in
//! master-worker mode, the file rewritten and `SIGUSR2` sent to the master
//! ([`crate::master_worker`]); its apply time is from the signal until the
//! old worker has left (it takes the same 10 000 servers, parses them in
//! a new process and hands the listening socket over). It has no
//! "longest hold". Both proxies have one thread, on CPU 0, and the load
//! and its backend on CPU 1, as in connrate (when the machine can pin):
//! unpinned, the scheduler put the load's thread and the proxy's thread
//! on one core for hundreds of milliseconds at a time, before or during
//! a reload alike, and each then waited ~0.2 ms for the other at every
//! wake (`perf sched timehist`) — which decided a window's p99 more than
//! the reload did. usher's planning thread inherits CPU 0 (it yields to
//! the broker there); HAProxy's new process starts on CPU 0 beside its
//! old one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use usher_core::backend::server::GetServerReport;

use super::{Harness, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::in_process::InProcess;
use crate::master_worker::MasterWorker;
use crate::proxies::{self, ProxyKind};
use crate::report::{CaseResult, Metric};

/// (backends, servers per backend): many small backends, then one fleet
/// behind one name (as a DNS template makes), 10 000 servers each.
const SHAPES: [(usize, usize); 2] = [(500, 20), (1, 10_000)];
/// The same, in `--quick`.
const QUICK_SHAPES: [(usize, usize); 2] = [(25, 20), (1, 500)];
/// Server names shift by this much between the two configurations.
const SHIFT: usize = 7;
const CLIENTS: usize = 16;
const REQUEST: usize = 64;
const REPLY: usize = 64;
/// Steady load before the reload (the first half second not counted).
const BEFORE: Duration = Duration::from_secs(3);
const SKIPPED: Duration = Duration::from_millis(500);
/// Steady load after the reload answered.
const AFTER: Duration = Duration::from_secs(2);
const STEP_LIMIT: Duration = Duration::from_secs(10);
/// Sessions per second of the open loop: about a third of what one broker
/// thread serves on the reference machine.
const OPEN_RATE: f64 = 4_000.0;
/// HAProxy's global maxconn: far above what the load keeps open.
const HAPROXY_MAXCONN: u32 = 4_096;

/// How the steady load arrives.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// `CLIENTS` closed loops: as many sessions as the machine can run.
    Closed,
    /// Sessions started at a fixed rate, whatever the earlier ones do.
    Open { rate: f64 },
}

impl Load {
    fn describe(self) -> String {
        match self {
            Load::Closed => format!("{CLIENTS} closed-loop clients"),
            Load::Open { rate } => format!("an open loop of {rate:.0} sessions/s"),
        }
    }
}

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let shapes = if h.opts.quick { QUICK_SHAPES } else { SHAPES };
    let loads = [Load::Closed, Load::Open { rate: OPEN_RATE }];
    loads
        .into_iter()
        .flat_map(|load| shapes.into_iter().map(move |shape| (load, shape)))
        .map(|(load, (backends, per_backend))| {
            let servers = backends * per_backend;
            let title = format!(
                "reload: {servers} servers in {backends} backend(s), every backend's servers renamed or changed, \
                 under {} through another backend; usher in process, 1 worker; HAProxy 1 thread; {}",
                load.describe(),
                h.describe(&REFERENCE)
            );
            let metrics = vec![
                Metric::lower("apply ms", 1),
                Metric::lower("longest hold ms", 2),
                Metric::lower("reload round trip ms", 1),
                Metric::lower("p99 ms before", 2),
                Metric::lower("p99 ms during", 2),
                Metric::lower("p99 ms quiet windows", 2),
                Metric::lower("p99 ms worst quiet window", 2),
                Metric::higher("quiet windows as slow %", 0),
                Metric::lower("max ms during", 2),
                Metric::zero("errors"),
                Metric::lower("probe p99 µs before", 0),
                Metric::lower("probe p99 µs during", 0),
                Metric::lower("probe max µs during", 0),
            ];
            let proxies = h.only(&[ProxyKind::Usher, ProxyKind::Haproxy]);
            h.alternate("reload", title, metrics, proxies, |kind| match kind {
                ProxyKind::Haproxy => haproxy_run(h, backends, per_backend, load),
                _ => usher_run(h, backends, per_backend, load),
            })
        })
        .collect()
}

fn usher_config(
    app: SocketAddr,
    backends: usize,
    per_backend: usize,
    generation: usize,
) -> anyhow::Result<usher_core::Settings> {
    let mut toml = format!(
        // No admin API: the reload is asked through the handle, and a
        // fixed admin port would collide with anything else on the machine.
        "[global]\nworkers = 1\n[log]\nlevel = \"info\"\n[admin]\nbind = \"\"\n\
         [frontends.bench]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{app}\"\n"
    );
    for b in 0..backends {
        for s in generation * SHIFT..generation * SHIFT + per_backend {
            // Never connected to: no session goes to these backends.
            toml.push_str(&format!(
                "[backends.fleet{b}.servers.s{s}]\naddress = \"127.0.0.1:9\"\nmaxconn = {}\n",
                10 + generation
            ));
        }
    }
    usher_core::config::from_toml_str(&toml).map_err(|e| anyhow!("generated configuration: {e}"))
}

/// The same backends for HAProxy (its global section completed by
/// [`MasterWorker`]).
fn haproxy_config(bind: SocketAddr, app: SocketAddr, backends: usize, per_backend: usize, generation: usize) -> String {
    let mut cfg = format!(
        "global\n    nbthread 1\n    maxconn {HAPROXY_MAXCONN}\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend bench\n    bind {bind}\n    default_backend app\n\n\
         backend app\n    server s1 {app}\n"
    );
    for b in 0..backends {
        cfg.push_str(&format!("\nbackend fleet{b}\n"));
        for s in generation * SHIFT..generation * SHIFT + per_backend {
            cfg.push_str(&format!("    server s{s} 127.0.0.1:9 maxconn {}\n", 10 + generation));
        }
    }
    cfg
}

fn haproxy_run(h: &Harness, backends: usize, per_backend: usize, load: Load) -> anyhow::Result<Vec<f64>> {
    let exe = h.launcher.haproxy.as_ref().context("haproxy not found")?;
    let rt = h.load_runtime(&REFERENCE)?;
    let backend = Backend::start(rt.handle(), Behavior::Reply { request: REQUEST, reply: REPLY })?;
    let addr = proxies::free_port()?;
    let stem = h.scratch("haproxy-reload");
    let first = haproxy_config(addr, backend.addr, backends, per_backend, 0);
    let second = haproxy_config(addr, backend.addr, backends, per_backend, 1);
    let proxy = MasterWorker::start(exe, &stem, addr, &first, h.pinned.then_some(REFERENCE.proxy_cpus))?;
    let (measured, _) = rt.block_on(under_load(addr, load, proxy.reload(&second, &stem)))?;
    // The reload's round trip is its apply time; it holds no shared thread,
    // and it has no actors to probe.
    let unprobed = [f64::NAN; 3];
    Ok([measured[0], f64::NAN].into_iter().chain(measured).chain(unprobed).collect())
}

fn usher_run(h: &Harness, backends: usize, per_backend: usize, load: Load) -> anyhow::Result<Vec<f64>> {
    let rt = h.load_runtime(&REFERENCE)?;
    let broker_cpu = h.pinned.then(|| REFERENCE.proxy_cpus.parse::<usize>()).transpose()?;
    let backend = Backend::start(rt.handle(), Behavior::Reply { request: REQUEST, reply: REPLY })?;
    let first = usher_config(backend.addr, backends, per_backend, 0)?;
    let second = usher_config(backend.addr, backends, per_backend, 1)?;
    let listeners = usher_core::bind_all(&first)?;
    let addr = listeners.0.values().flatten().next().context("a listener")?.local_addr()?;
    let apply_ms = ApplyTime::default();
    let log = slog::Logger::root(apply_ms.clone(), slog::o!());
    let broker = InProcess::start(first, listeners, log, move || {
        if let Some(cpu) = broker_cpu {
            // This thread only (the load's stay where `load_runtime` put
            // them); the threads usher starts from it inherit it.
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            rustix::thread::sched_setaffinity(None, &set)
                .map_err(|e| anyhow!("pinning the broker to CPU {cpu}: {e}"))?;
        }
        Ok(())
    })?;
    let handle = &broker.handle;
    let actors = rt.block_on(handle.actors()).context("the broker does not answer")?;
    let probe = Probe::start(&rt, actors.server("app", "s1").context("server app/s1")?.clone());
    let reload = async { handle.reload_with(second).await.map(drop).map_err(|e| anyhow!("the reload failed: {e}")) };
    let measured = rt.block_on(under_load(addr, load, reload));
    let trips = probe.stop(&rt);
    broker.stop()?;
    let (measured, window) = measured?;
    let trips = trips?;
    let (apply, hold) = apply_ms.0.lock().map_err(|_| anyhow!("poisoned"))?.unwrap_or((f64::NAN, f64::NAN));
    let before = latencies(trips.iter().filter(|(at, _)| *at >= window.from && *at < window.reload_start));
    let during = latencies(overlapping(&trips, window.reload_start, window.reload_end));
    let micros = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    let probed = [micros(&before, 0.99), micros(&during, 0.99), micros(&during, 1.0)];
    Ok([apply, hold].into_iter().chain(measured).chain(probed).collect())
}

/// How often the probe asks.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// What a message to the actors' thread waits, before and during the
/// reload: a task of the load's runtime (on its thread: a thread of its
/// own beside the load's made the load's sessions wait for it) asks the
/// server every session goes to for its report, once per
/// [`PROBE_EVERY`], and keeps each round trip. The reload's own "longest
/// hold" is what its steps measured of themselves; the probe also sees
/// the work they leave behind (actors starting and stopping, the parts
/// sent to the queues) and the plan's thread when it has the core.
struct Probe {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<(Instant, Duration)>>>,
}

impl Probe {
    fn start(rt: &tokio::runtime::Runtime, server: actix::Addr<usher_core::backend::server::Server>) -> Probe {
        let running = Arc::new(AtomicBool::new(true));
        let asking = running.clone();
        let task = rt.spawn(async move {
            let mut trips = Vec::new();
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while asking.load(Ordering::Relaxed) {
                every.tick().await;
                let at = Instant::now();
                server.send(GetServerReport).await.map_err(|e| anyhow!("probe: {e}"))?;
                trips.push((at, at.elapsed()));
            }
            Ok(trips)
        });
        Probe { running, task }
    }

    fn stop(self, rt: &tokio::runtime::Runtime) -> anyhow::Result<Vec<(Instant, Duration)>> {
        self.running.store(false, Ordering::Relaxed);
        rt.block_on(self.task)?
    }
}

/// Where [`under_load`]'s reload fell: the measured load from `from`.
struct Window {
    from: Instant,
    reload_start: Instant,
    reload_end: Instant,
}

/// Runs `load` through `addr`, then `reload`, then the load a while more:
/// the reload's round trip in ms, the p99 of the sessions before it, the
/// p99 of those that overlapped it, the median and the worst p99 of
/// windows as long as the reload before it ([`quiet_windows`]), the share
/// of those windows at least as slow as the reload's ([`share_at_least`]),
/// the max of those that overlapped the reload, and the failed sessions.
async fn under_load(
    addr: SocketAddr,
    load: Load,
    reload: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(Vec<f64>, Window)> {
    let running = Arc::new(AtomicBool::new(true));
    let loops: Vec<_> = match load {
        Load::Closed => (0..CLIENTS).map(|_| tokio::spawn(client_loop(addr, running.clone()))).collect(),
        Load::Open { rate } => vec![tokio::spawn(open_arrivals(addr, rate, running.clone()))],
    };
    let begin = Instant::now();
    tokio::time::sleep(BEFORE).await;
    let reload_start = Instant::now();
    let reloaded = reload.await;
    let reload_end = Instant::now();
    tokio::time::sleep(AFTER).await;
    running.store(false, Ordering::Relaxed);
    let mut sessions = Vec::new();
    let mut errors = 0;
    for l in loops {
        let (done, failed) = l.await?;
        sessions.extend(done);
        errors += failed;
    }
    reloaded?;
    let before = latencies(sessions.iter().filter(|(at, _)| *at >= begin + SKIPPED && *at < reload_start));
    let during = latencies(overlapping(&sessions, reload_start, reload_end));
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let quiet = quiet_windows(&sessions, begin + SKIPPED, reload_start, reload_end - reload_start);
    let quiet_p99: Vec<f64> = quiet.iter().map(|h| ms(h, 0.99)).collect();
    let during_p99 = ms(&during, 0.99);
    let window = Window { from: begin + SKIPPED, reload_start, reload_end };
    let measured = vec![
        (reload_end - reload_start).as_secs_f64() * 1e3,
        ms(&before, 0.99),
        during_p99,
        crate::report::median(quiet_p99.clone()).unwrap_or(f64::NAN),
        quiet_p99.iter().copied().fold(f64::NAN, f64::max),
        share_at_least(&quiet_p99, during_p99),
        ms(&during, 1.0),
        errors as f64,
    ];
    Ok((measured, window))
}

/// The sessions that were in flight at some time in `[from, to)`.
fn overlapping(
    sessions: &[(Instant, Duration)],
    from: Instant,
    to: Instant,
) -> impl Iterator<Item = &(Instant, Duration)> {
    sessions.iter().filter(move |(at, took)| *at < to && *at + *took > from)
}

/// The latencies of the sessions in flight in each window of `length`
/// between `from` and `to`, without a reload: what "p99 during" is to be
/// compared with. The p99 of a window of a few hundred milliseconds is
/// noisier than the p99 of the seconds before, and a loaded VM's latency
/// comes in bursts, so a reload that costs nothing still shows a "during"
/// above "before" in many rounds; these windows show how far a window
/// without a reload goes.
fn quiet_windows(
    sessions: &[(Instant, Duration)],
    from: Instant,
    to: Instant,
    length: Duration,
) -> Vec<Histogram<u64>> {
    let length = length.max(Duration::from_millis(1));
    let mut windows = Vec::new();
    let mut start = from;
    // A session that overlaps the reload is not in any window before it.
    while start + length <= to {
        let window: Vec<_> =
            overlapping(sessions, start, start + length).filter(|(at, took)| *at + *took <= to).collect();
        windows.push(latencies(window.into_iter()));
        start += length;
    }
    windows
}

/// The share of `windows` (in %) whose p99 is at least `during`: where
/// the reload's window ranks among windows without a reload. Around 50 %
/// when a reload costs nothing, whatever the machine's own bursts; 0 %
/// when the reload's window is slower than every window before it.
fn share_at_least(windows: &[f64], during: f64) -> f64 {
    if windows.is_empty() {
        return f64::NAN;
    }
    let as_slow = windows.iter().filter(|p99| **p99 >= during).count();
    as_slow as f64 * 100.0 / windows.len() as f64
}

fn latencies<'a>(sessions: impl Iterator<Item = &'a (Instant, Duration)>) -> Histogram<u64> {
    // 1 µs to a minute, 3 significant digits.
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for (_, took) in sessions {
        h.saturating_record(took.as_micros() as u64);
    }
    h
}

/// Short sessions one after another until `running` is cleared: each
/// one's start and duration, and the count of failed ones.
async fn client_loop(addr: SocketAddr, running: Arc<AtomicBool>) -> (Vec<(Instant, Duration)>, u64) {
    let mut done = Vec::new();
    let mut failed = 0;
    while running.load(Ordering::Relaxed) {
        let at = Instant::now();
        match tokio::time::timeout(STEP_LIMIT, session(addr)).await {
            Ok(Ok(())) => done.push((at, at.elapsed())),
            _ => failed += 1,
        }
    }
    (done, failed)
}

/// Sessions started `rate` times a second until `running` is cleared, each
/// on its own task: each one's start and duration, and the count of failed
/// ones. (tokio's timer ticks every millisecond: the arrivals of a
/// millisecond start together.)
async fn open_arrivals(addr: SocketAddr, rate: f64, running: Arc<AtomicBool>) -> (Vec<(Instant, Duration)>, u64) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut started = Vec::new();
    while running.load(Ordering::Relaxed) {
        ticks.tick().await;
        started.push(tokio::spawn(async move {
            let at = Instant::now();
            let served = matches!(tokio::time::timeout(STEP_LIMIT, session(addr)).await, Ok(Ok(())));
            (at, at.elapsed(), served)
        }));
    }
    let mut done = Vec::with_capacity(started.len());
    let mut failed = 0;
    for session in started {
        match session.await {
            Ok((at, took, true)) => done.push((at, took)),
            _ => failed += 1,
        }
    }
    (done, failed)
}

async fn session(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&[b'q'; REQUEST]).await?;
    let mut reply = [0u8; REPLY];
    stream.read_exact(&mut reply).await?;
    Ok(())
}

/// A log drain that keeps the `apply_ms` and `longest_hold_ms` of the
/// broker's `reload done` record and drops every other record.
#[derive(Clone, Default)]
struct ApplyTime(Arc<Mutex<Option<(f64, f64)>>>);

impl slog::Drain for ApplyTime {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if record.msg().to_string() == "reload done" {
            let mut found = ApplyField::default();
            let _ = slog::KV::serialize(&record.kv(), record, &mut found);
            let _ = values;
            if let (Some(apply), Some(hold), Ok(mut slot)) = (found.apply, found.longest_hold, self.0.lock()) {
                *slot = Some((apply, hold));
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct ApplyField {
    apply: Option<f64>,
    longest_hold: Option<f64>,
}

impl slog::Serializer for ApplyField {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        match key {
            "apply_ms" => self.apply = val.to_string().parse().ok(),
            "longest_hold_ms" => self.longest_hold = val.to_string().parse().ok(),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::share_at_least;

    #[test]
    fn the_share_counts_windows_at_least_as_slow_as_the_reloads() {
        let windows = [0.6, 0.7, 0.8, 2.5];
        assert_eq!(share_at_least(&windows, 0.75), 50.0);
        assert_eq!(share_at_least(&windows, 0.8), 50.0);
        assert_eq!(share_at_least(&windows, 3.0), 0.0);
        assert_eq!(share_at_least(&windows, 0.1), 100.0);
        assert!(share_at_least(&[], 1.0).is_nan());
    }
}
