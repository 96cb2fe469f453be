//! `actors`: Reserve → grant → Release cycles per second through one
//! BackendQueue and its Servers, in process, wired by the broker's own wiring
//! (`broker/wiring.rs` `start_backend`), with the actors on the actix System
//! thread. The requesting tasks run either on one separate tokio worker
//! thread, as sessions do (every message crosses threads), or on the System
//! thread itself (the actors' own capacity, without thread hops). A granted
//! `Slot` is dropped at once, which sends `Release`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::anyhow;
use tokio::sync::oneshot;
use usher_core::backend::{QueueKey, Reserve, ReserveReply};
use usher_core::broker::wiring::start_backend as start_backend_actors;
use usher_core::ids::SessionId;

use super::{Harness, SHARED};
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

/// Servers of the regular runs.
const SERVERS: usize = 2;
/// The control plane's capacity as a backend grows: these many servers
/// sharing about [`SCALED_CAPACITY`] slots (maxconn 1 from 200 servers
/// on), with every task queued, on one thread.
const SCALED_SERVERS: [usize; 3] = [100, 1_000, 10_000];
const SCALED_CAPACITY: u32 = 200;
/// How long the tasks may take to finish their last cycle after the run.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Where the requesting tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tasks {
    /// A separate tokio runtime with one worker, as the data plane.
    DataThread,
    /// The System thread, with the actors.
    SameThread,
}

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let (warmup, duration) = (h.opts.warmup, h.opts.duration);
    // (tasks, servers, maxconn per server): 1000/100 always queued,
    // 100/1000 never queued; then always queued with more and more servers.
    let regular = [(1000, SERVERS, 100, Tasks::DataThread), (100, SERVERS, 1000, Tasks::DataThread)];
    let scaled = std::iter::once(SERVERS)
        .chain(SCALED_SERVERS)
        .map(|servers| (1000, servers, (SCALED_CAPACITY / servers as u32).max(1), Tasks::SameThread));
    regular
        .into_iter()
        .chain(scaled)
        .map(|(tasks, servers, maxconn, place)| {
            let (short, place_text) = match place {
                Tasks::DataThread => {
                    ("across threads", "tasks on 1 tokio thread, actors on the System thread (as in usher)")
                }
                Tasks::SameThread => ("one thread", "tasks and actors on the System thread (no thread hops)"),
            };
            let title = format!(
                "actors ({short}): {tasks} tasks cycling Reserve→grant→Release through 1 BackendQueue, \
                 {servers} Servers × maxconn {maxconn}; in process, {place_text}"
            );
            let metrics = vec![Metric::higher("cycles/s", 0)];
            h.alternate("actors", title, metrics, vec![ProxyKind::Usher], |_| {
                if h.pinned {
                    crate::sys::pin_self(SHARED.load_cpus)?;
                }
                Ok(vec![cycles_per_second(tasks, servers, maxconn, place, warmup, duration)?])
            })
        })
        .collect()
}

fn cycles_per_second(
    tasks: usize,
    servers: usize,
    maxconn: u32,
    place: Tasks,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<f64> {
    let data = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let spawner = data.handle().clone();
    let system = actix_rt::System::new();
    let rate = system.block_on(async move {
        let reserve = start_backend(servers, maxconn)?;
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(AtomicU64::new(1));
        let loops: Vec<_> = (0..tasks)
            .map(|_| {
                let task = cycle(reserve.clone(), ids.clone(), done.clone(), stop.clone());
                match place {
                    Tasks::DataThread => spawner.spawn(task),
                    Tasks::SameThread => actix_rt::spawn(task),
                }
            })
            .collect();
        actix_rt::time::sleep(warmup).await;
        let (c0, t0) = (done.load(Ordering::Relaxed), Instant::now());
        actix_rt::time::sleep(duration).await;
        let (c1, t1) = (done.load(Ordering::Relaxed), Instant::now());
        stop.store(true, Ordering::Relaxed);
        for l in loops {
            actix_rt::time::timeout(STOP_LIMIT, l).await.map_err(|_| anyhow!("a task never got its slot"))???;
        }
        Ok::<_, anyhow::Error>((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
    });
    drop(data);
    rate
}

/// One BackendQueue and its Servers, started by the broker's own wiring
/// from a configuration, so the bench measures exactly what usher runs.
fn start_backend(servers: usize, maxconn: u32) -> anyhow::Result<Recipient<Reserve>> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let servers: String = (0..servers)
        .map(|i| format!("[backends.bench.servers.s{i}]\naddress = \"127.0.0.1:9\"\nmaxconn = {maxconn}\n"))
        .collect();
    let settings = usher_core::config::from_toml_str(&format!("[backends.bench]\nbalance = \"roundrobin\"\n{servers}"))
        .map_err(|err| anyhow!("bench backend configuration: {err}"))?;
    let backend = settings.backend("bench").ok_or_else(|| anyhow!("bench backend missing"))?;
    Ok(start_backend_actors(backend, &log, false).queue.recipient())
}

async fn cycle(
    reserve: Recipient<Reserve>,
    ids: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let session = SessionId(ids.fetch_add(1, Ordering::Relaxed));
        let (reply, replies) = oneshot::channel();
        reserve.do_send(Reserve {
            session,
            key: QueueKey::fifo(session),
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            pin: None,
            avoid: None,
            reply,
        });
        match replies.await {
            // Dropping the slot sends Release to its Server.
            Ok(ReserveReply::Granted { slot, .. }) => drop(slot),
            other => return Err(anyhow!("unexpected reply to Reserve: {other:?}")),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
