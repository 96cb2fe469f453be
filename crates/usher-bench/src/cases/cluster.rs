//! `cluster`: one server whose maxconn is shared through a real etcd, by
//! two usher instances with the client loops split evenly between them,
//! against one instance alone (also in cluster mode, so the two differ
//! only in the number of instances). Aggregate sessions/s, p99 wait, stuck
//! sessions, the peak the server saw (never above its maxconn), and the
//! rebalancing time: once the second instance's clients stop, how long
//! until the first holds every slot the allocation leaves it (all but the
//! idle instance's floor of one). Default cluster timings (period 1 s,
//! lease 5 s), as an operator would run them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use integration_tests::etcd::{etcd_binary, EtcdServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Harness, SHARED};
use crate::backends::{Backend, Behavior};
use crate::load::{self, Outcome, Payload, Sessions, Window};
use crate::proxies::ProxyKind;
use crate::report::{self, CaseResult, Metric};

const SERVER_MAXCONN: u32 = 10;
const CLIENTS: usize = 200;
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST: usize = 64;
const REPLY: usize = 64;
/// Longest the instances may take to join, or the slots to move.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let etcd = match etcd_binary() {
        Ok(binary) => EtcdServer::start(&binary),
        Err(why) => {
            eprintln!("cluster: skipped: {why}");
            return Vec::new();
        }
    };
    let p = SHARED;
    let title = format!(
        "cluster: 1 server with maxconn {SERVER_MAXCONN} shared through etcd, {CLIENTS} client loops of short \
         sessions split over the instances, queue timeout {}s; each instance {}",
        QUEUE_TIMEOUT.as_secs(),
        h.describe(&p)
    );
    let metrics = vec![
        Metric::higher("sessions/s", 0),
        Metric::lower("p99 wait ms", 2),
        Metric::zero("stuck"),
        Metric::lower("peak/server", 0),
        Metric::lower("rebalance ms", 0),
    ];
    let spec = Sessions {
        clients: CLIENTS,
        request: REQUEST,
        payload: Payload::Filler,
        reply: REPLY,
        slow: QUEUE_TIMEOUT,
        limit: QUEUE_TIMEOUT * 2,
    };
    let mut run_no = 0;
    let result = h.alternate("cluster", title, metrics, vec![ProxyKind::UsherCluster, ProxyKind::UsherPair], |kind| {
        run_no += 1;
        let instances = if kind == ProxyKind::UsherPair { 2 } else { 1 };
        let rt = h.load_runtime(&p)?;
        let backend = Backend::start(rt.handle(), Behavior::Reply { request: REQUEST, reply: REPLY })?;
        let cluster =
            format!("etcd = [\"{}\"]\nprefix = \"/usher-bench/{}-{run_no}\"\n", etcd.endpoint(), std::process::id());
        let proxies =
            h.start_clustered(kind, instances, &[backend.addr], &h.tune(&p, SERVER_MAXCONN, QUEUE_TIMEOUT), &cluster)?;
        let admins: Vec<SocketAddr> =
            proxies.iter().map(|r| r.admin.ok_or_else(|| anyhow!("no admin API"))).collect::<anyhow::Result<_>>()?;
        rt.block_on(async {
            let everyone = |views: &[View]| {
                views.iter().all(|v| v.members == instances)
                    && views.iter().map(|v| v.share).sum::<u32>() == SERVER_MAXCONN
            };
            settle(&admins, "the instances share every slot", everyone).await?;
            let w = h.window();
            let per_instance = Sessions { clients: CLIENTS / instances, ..spec };
            let loads = proxies.iter().map(|r| load::sessions(r.addr, per_instance, w));
            let mut out = Outcome::default();
            for one in futures_join(loads).await {
                out.merge(one);
            }
            let rebalance = if instances == 2 {
                // The second instance's clients have stopped with the window;
                // the first keeps its load until it holds all but the floor.
                let w2 = Window::new(Duration::ZERO, SETTLE_LIMIT);
                let keep = tokio::spawn(load::sessions(proxies[0].addr, per_instance, w2));
                let took = settle(&admins[..1], "the busy instance takes the idle one's slots", |v: &[View]| {
                    v[0].share >= SERVER_MAXCONN - 1
                })
                .await;
                keep.abort();
                took?.as_secs_f64() * 1000.0
            } else {
                f64::NAN
            };
            let peak = backend.peak() as f64;
            Ok(vec![out.rate(&w), out.quantile_ms(0.99), out.stuck as f64, peak, rebalance])
        })
    });
    let ratios = result.paired_ratios_of(ProxyKind::UsherPair, ProxyKind::UsherCluster, "sessions/s");
    println!("   usher-pair / usher-cluster sessions/s, paired by round: {}", report::ratio_cell(&ratios));
    vec![result]
}

/// Both loads at once; their outcomes in order.
async fn futures_join(
    loads: impl Iterator<Item = impl std::future::Future<Output = Outcome> + Send + 'static>,
) -> Vec<Outcome> {
    let handles: Vec<_> = loads.map(tokio::spawn).collect();
    let mut outs = Vec::new();
    for h in handles {
        outs.push(h.await.unwrap_or_default());
    }
    outs
}

/// One instance's cluster view of the server, from its `/stats`.
#[derive(Debug, Clone, Copy)]
struct View {
    members: usize,
    share: u32,
}

/// Polls the instances' `/stats` until `done` holds; how long it took.
async fn settle(admins: &[SocketAddr], what: &str, done: impl Fn(&[View]) -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut views = Vec::new();
        for a in admins {
            views.push(view(*a).await?);
        }
        if done(&views) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > SETTLE_LIMIT {
            bail!("{what}: not within {SETTLE_LIMIT:?}; views {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn view(admin: SocketAddr) -> anyhow::Result<View> {
    let mut stream = tokio::net::TcpStream::connect(admin).await?;
    stream.write_all(b"GET /stats HTTP/1.1\r\nHost: usher-bench\r\nConnection: close\r\n\r\n").await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).ok_or_else(|| anyhow!("no body in /stats"))?;
    let stats: serde_json::Value = serde_json::from_str(body)?;
    let members = stats["cluster"]["members"].as_u64().unwrap_or(0) as usize;
    let share = stats["backends"][0]["servers"][0]["cluster_share"].as_u64().unwrap_or(0) as u32;
    Ok(View { members, share })
}
