//! `stats`: what one read of the broker's report (`BrokerHandle::stats`,
//! what `GET /stats` and `/metrics` build) costs with 10 000 servers, in
//! process: 500 backends of 20, then one backend of 10 000 (their address
//! is never connected to). The reads run back to back from a thread of
//! their own, as the admin API's worker reads from its own thread; each one
//! asks every server's actor on the actors' thread for its report.
//! Reported: the median and longest read; the CPU the actors' thread
//! spends per read (over as many reads again, without the probe); and what
//! another message to the actors' thread waits meanwhile: a probe on a
//! third thread asks one server of another backend for its report again
//! and again, and its round trips' p99 and max, alone (half a second before
//! the reads) and while the reads run, show how long the reads' messages
//! keep the actors' thread from it (a session's `Reserve` would wait as
//! long).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use hdrhistogram::Histogram;
use usher_core::backend::server::GetServerReport;

use super::Harness;
use crate::in_process::InProcess;
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

/// (backends, servers per backend): many small backends, then one fleet
/// behind one name (as a DNS template makes), 10 000 servers each.
const SHAPES: [(usize, usize); 2] = [(500, 20), (1, 10_000)];
/// The same, in `--quick`.
const QUICK_SHAPES: [(usize, usize); 2] = [(25, 20), (1, 500)];
/// Reads per run, one after another.
const READS: usize = 20;
const QUICK_READS: usize = 3;
/// How long the probe runs alone first: its round trips with nothing else
/// on the actors' thread, to set the ones during the reads against.
const IDLE_PROBE: Duration = Duration::from_millis(500);
/// The probe's phases.
const IDLE: u8 = 0;
const READING: u8 = 1;
const DONE: u8 = 2;

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let (shapes, reads) = if h.opts.quick { (QUICK_SHAPES, QUICK_READS) } else { (SHAPES, READS) };
    shapes
        .into_iter()
        .map(|(backends, per_backend)| {
            let title = format!(
                "stats: {reads} reads of the report, one after another, with {} servers in {backends} backend(s), \
                 and a probe asking one other server meanwhile; usher in process, unpinned",
                backends * per_backend
            );
            let metrics = vec![
                Metric::lower("read ms", 1),
                Metric::lower("read ms max", 1),
                Metric::lower("actors' CPU ms/read", 2),
                Metric::lower("probe p99 µs idle", 0),
                Metric::lower("probe max µs idle", 0),
                Metric::lower("probe p99 µs", 0),
                Metric::lower("probe max µs", 0),
            ];
            h.alternate("stats", title, metrics, vec![ProxyKind::Usher], |_| reads_of(backends, per_backend, reads))
        })
        .collect()
}

fn config(backends: usize, per_backend: usize) -> anyhow::Result<usher_core::Settings> {
    // The probe's server: nothing connects to it either.
    let mut toml = String::from(
        "[global]\nworkers = 1\n[log]\nlevel = \"warning\"\n\
         [frontends.bench]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"127.0.0.1:9\"\n",
    );
    for b in 0..backends {
        for s in 0..per_backend {
            toml.push_str(&format!("[backends.fleet{b}.servers.s{s}]\naddress = \"127.0.0.1:9\"\nmaxconn = 10\n"));
        }
    }
    usher_core::config::from_toml_str(&toml).map_err(|e| anyhow!("generated configuration: {e}"))
}

/// The median and longest of `reads` reads in ms, the actors' thread's CPU
/// ms per read, then the probe's p99 and max round trip in µs alone and
/// while the reads ran.
fn reads_of(backends: usize, per_backend: usize, reads: usize) -> anyhow::Result<Vec<f64>> {
    let settings = config(backends, per_backend)?;
    let listeners = usher_core::bind_all(&settings)?;
    let log = slog::Logger::root(slog::Discard, slog::o!());
    // With one worker, the broker's thread is the whole broker: actors and sessions.
    let broker = InProcess::start(settings, listeners, log, || Ok(()))?;
    let measured = measure(&broker.handle, broker.tid, reads);
    broker.stop()?;
    measured
}

fn measure(handle: &usher_core::BrokerHandle, actors_thread: i32, reads: usize) -> anyhow::Result<Vec<f64>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let actors = rt.block_on(handle.actors()).context("the broker does not answer")?;
    let probed = actors.server("app", "s1").context("server app/s1")?.clone();
    // A first read outside the measure: the first one after the start also
    // pays for the actors' and the admin side's first touches of memory.
    rt.block_on(handle.stats()).map_err(|e| anyhow!("stats: {e}"))?;

    let phase = Arc::new(AtomicU8::new(IDLE));
    let probe = {
        let phase = phase.clone();
        std::thread::spawn(move || -> anyhow::Result<[Histogram<u64>; 2]> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            // Idle, then during the reads; 1 µs to a minute, 3 significant digits.
            let mut trips = [
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
            ];
            rt.block_on(async {
                loop {
                    let now = phase.load(Ordering::Relaxed);
                    if now == DONE {
                        break;
                    }
                    let at = Instant::now();
                    probed.send(GetServerReport).await.map_err(|e| anyhow!("probe: {e}"))?;
                    // A trip that straddled the start of the reads counts as idle.
                    trips[usize::from(now)].saturating_record(at.elapsed().as_micros() as u64);
                }
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(trips)
        })
    };
    std::thread::sleep(IDLE_PROBE);
    phase.store(READING, Ordering::Relaxed);
    let mut took = Vec::with_capacity(reads);
    let read_all = rt.block_on(async {
        for _ in 0..reads {
            let at = Instant::now();
            handle.stats().await.map_err(|e| anyhow!("stats: {e}"))?;
            took.push(at.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<_, anyhow::Error>(())
    });
    phase.store(DONE, Ordering::Relaxed);
    let [idle, trips] = probe.join().map_err(|_| anyhow!("the probe thread panicked"))??;
    read_all?;
    // The actors' thread's CPU per read, without the probe (whose own
    // round trips would count, more of them the longer a read takes).
    let cpu_before = crate::sys::thread_cpu_seconds(actors_thread)?;
    rt.block_on(async {
        for _ in 0..reads {
            handle.stats().await.map_err(|e| anyhow!("stats: {e}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let actors_cpu = (crate::sys::thread_cpu_seconds(actors_thread)? - cpu_before) * 1e3 / reads as f64;
    took.sort_by(f64::total_cmp);
    let median = took[took.len() / 2];
    let longest = took[took.len() - 1];
    Ok(vec![
        median,
        longest,
        actors_cpu,
        idle.value_at_quantile(0.99) as f64,
        idle.max() as f64,
        trips.value_at_quantile(0.99) as f64,
        trips.max() as f64,
    ])
}
