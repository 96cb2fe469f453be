//! `actors`: Reserve → grant → Release cycles per second through one
//! BackendQueue and its Servers, in process, wired as the broker wires them
//! (`broker.rs` `start_backend`), with the actors on the actix System
//! thread. The requesting tasks run either on one separate tokio worker
//! thread, as sessions do (every message crosses threads), or on the System
//! thread itself (the actors' own capacity, without thread hops). A granted
//! `Slot` is dropped at once, which sends `Release`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::anyhow;
use tokio::sync::oneshot;
use usher_core::backend::server::CheckSpec;
use usher_core::backend::ServerSetup;
use usher_core::backend::{BackendQueue, Server};
use usher_core::backend::{BackendSetup, HealthConfig, QueueKey};
use usher_core::backend::{Reserve, ReserveReply, ServerInfo};
use usher_core::config::Balance;
use usher_core::ids::{ServerId, SessionId};

use super::{Harness, SHARED};
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

const SERVERS: usize = 2;
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
    // (tasks, maxconn per server): 1000/100 always queued, 100/1000 never queued.
    [(1000, 100, Tasks::DataThread), (100, 1000, Tasks::DataThread), (1000, 100, Tasks::SameThread)]
        .into_iter()
        .map(|(tasks, maxconn, place)| {
            let (short, place_text) = match place {
                Tasks::DataThread => {
                    ("across threads", "tasks on 1 tokio thread, actors on the System thread (as in usher)")
                }
                Tasks::SameThread => ("one thread", "tasks and actors on the System thread (no thread hops)"),
            };
            let title = format!(
                "actors ({short}): {tasks} tasks cycling Reserve→grant→Release through 1 BackendQueue, \
                 {SERVERS} Servers × maxconn {maxconn}; in process, {place_text}"
            );
            let metrics = vec![Metric::higher("cycles/s", 0)];
            h.alternate("actors", title, metrics, vec![ProxyKind::Usher], |_| {
                if h.pinned {
                    crate::sys::pin_self(SHARED.load_cpus)?;
                }
                Ok(vec![cycles_per_second(tasks, maxconn, place, warmup, duration)?])
            })
        })
        .collect()
}

fn cycles_per_second(
    tasks: usize,
    maxconn: u32,
    place: Tasks,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<f64> {
    let data = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let spawner = data.handle().clone();
    let system = actix_rt::System::new();
    let rate = system.block_on(async move {
        let reserve = start_backend(maxconn);
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

/// One BackendQueue and its Servers, as `broker.rs` starts them.
fn start_backend(maxconn: u32) -> Recipient<Reserve> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let ctx: Context<BackendQueue> = Context::new();
    let queue = ctx.address();
    let mut servers = Vec::new();
    let mut setups = Vec::new();
    for i in 0..SERVERS {
        let id = ServerId(i);
        let address: SocketAddr = ([127, 0, 0, 1], 9).into();
        let health = HealthConfig {
            checks: false,
            inter: Duration::from_secs(2),
            fastinter: Duration::ZERO,
            downinter: Duration::ZERO,
            rise: 2,
            fall: 3,
            error_limit: 0,
            slowstart: Duration::ZERO,
            weight: 1,
            maxconn,
        };
        let spec = CheckSpec {
            timeout: Duration::from_secs(2),
            proxy_header: Vec::new(),
            send: Vec::new(),
            expect: Vec::new(),
        };
        let server = Server::new(
            id,
            format!("s{i}"),
            address,
            health,
            spec,
            queue.clone().recipient(),
            queue.clone().recipient(),
            log.clone(),
        )
        .start();
        let info = Arc::new(ServerInfo {
            id,
            name: Arc::from(format!("s{i}")),
            backend: Arc::from("bench"),
            address,
            send_proxy: Default::default(),
            observe: None,
            release: server.recipient(),
        });
        servers.push(info);
        setups.push(ServerSetup { maxconn, weight: 1, maxqueue: 0, backup: false, minconn: 0 });
    }
    let balancer = usher_core::backend::balance::for_kind(Balance::Roundrobin, &[1; SERVERS], 2, 0);
    let setup = BackendSetup { maxqueue: 0, redispatch: false, fullconn: 0 };
    ctx.run(BackendQueue::new(&setups, servers, setup, balancer, log)).recipient()
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
