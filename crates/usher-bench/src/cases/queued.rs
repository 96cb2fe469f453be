//! `queued`: what a client waiting in a queue costs each proxy, and how
//! fast the queue drains. One server with maxconn 1, held by one client;
//! N more clients connect and send nothing (they wait for their server);
//! the proxy's RSS before and after gives the bytes per queued client.
//! Then the holder leaves and the slot frees one session at a time: each
//! queued client is seated in turn, reads the server's greeting and
//! closes, and the time until the last one is served gives the sessions/s
//! draining the queue.
//!
//! RLIMIT_NOFILE is raised here to what [`MOST_QUEUED`] clients need
//! (children inherit it): beyond the hard limit when the bench may (root),
//! else to the hard limit. usher counts two fds per session in its budget
//! (a queued client will need its server's), so the largest N is half the
//! limit, for both proxies alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Harness, FD_OVERHEAD, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::proxies::{ProxyKind, Running};
use crate::report::{CaseResult, Metric};
use crate::sys;

/// Connections being opened at once (keeps the listen backlog from overflowing).
const PARALLEL: usize = 128;
/// Longest a queued client waits: the whole run fits well within it.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for the proxy to accept every client, and for the drain.
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// Queued clients of the warm-up round (first allocations, queue growth).
const WARM_CLIENTS: usize = 64;
/// The largest queue measured, when the fd limit allows it.
const MOST_QUEUED: usize = 20_000;
/// RSS is read this often until two readings agree.
const RSS_POLL: Duration = Duration::from_millis(200);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    // usher's fd budget: two per session; the holder is one more session,
    // the warm-up round's clients are still closing when the round starts.
    let needed = 2 * (MOST_QUEUED + 1 + WARM_CLIENTS) as u64 + FD_OVERHEAD;
    let limit = sys::raise_fd_limit(needed.max(sys::hard_fd_limit()));
    let most = ((limit.saturating_sub(FD_OVERHEAD) / 2).saturating_sub(1) as usize).min(MOST_QUEUED);
    if most < MOST_QUEUED {
        eprintln!("queued: RLIMIT_NOFILE {limit} allows {most} queued clients, not {MOST_QUEUED} (needs {needed})");
    }
    let sizes: Vec<usize> = if h.opts.quick { vec![200.min(most)] } else { vec![5_000.min(most), most] };
    let mut results = Vec::new();
    for n in sizes {
        let title = format!(
            "queued: {n} silent clients queued behind one server with maxconn 1 (RLIMIT_NOFILE {limit}), \
             then drained one by one; {}",
            h.describe(&p)
        );
        let metrics = vec![
            Metric::lower("B/queued client", 0),
            Metric::lower("RSS MiB queued", 1),
            Metric::higher("drain sessions/s", 0),
            Metric::zero("errors"),
        ];
        let proxies = h.only(&[ProxyKind::Usher, ProxyKind::Haproxy]);
        results.push(h.alternate("queued", title, metrics, proxies, |kind| {
            let rt = h.load_runtime(&p)?;
            let backend = Backend::start(rt.handle(), Behavior::Greet)?;
            let mut tune = h.tune(&p, 1, QUEUE_TIMEOUT);
            tune.maxconn = (n + 1 + WARM_CLIENTS) as u32;
            let proxy = h.start_proxy(kind, &[backend.addr], &tune)?;
            rt.block_on(async {
                // Warm-up round: the same cycle, small.
                let warm = queue_behind_holder(&proxy, WARM_CLIENTS).await?;
                drain(warm).await?;
                let round = queue_behind_holder(&proxy, n).await?;
                let per_client = round.after_kib.saturating_sub(round.before_kib) as f64 * 1024.0 / n as f64;
                let queued_mib = round.after_kib as f64 / 1024.0;
                let drained = drain(round).await?;
                Ok(vec![per_client, queued_mib, n as f64 / drained.took.as_secs_f64(), drained.errors as f64])
            })
        }));
    }
    results
}

/// One server slot held, `clients` queued behind it.
struct Queued {
    holder: TcpStream,
    clients: Vec<TcpStream>,
    /// The proxy's RSS with the holder seated, before the others came.
    before_kib: u64,
    /// With every client accepted and queued.
    after_kib: u64,
}

/// Seats one holder, then connects `clients` silent clients and waits until
/// the proxy holds every one of their sockets and its RSS has settled.
async fn queue_behind_holder(proxy: &Running, clients: usize) -> anyhow::Result<Queued> {
    let pid = proxy.pid().context("the proxy has no process")?;
    let mut holder = TcpStream::connect(proxy.addr).await?;
    let mut greeting = [0u8; 1];
    tokio::time::timeout(STEP_LIMIT, holder.read_exact(&mut greeting)).await.context("the holder was not seated")??;
    let fds_before = fd_count(pid)?;
    let before_kib = settled_rss(proxy).await?;
    let opened = open_silent(proxy.addr, clients).await?;
    // Each accepted client is one more fd in the proxy: all of them are
    // in when the count is up by `clients` (nothing else opens meanwhile).
    let deadline = Instant::now() + STEP_LIMIT;
    while fd_count(pid)? < fds_before + clients {
        if Instant::now() > deadline {
            bail!("the proxy accepted {} of {clients} clients", fd_count(pid)?.saturating_sub(fds_before));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after_kib = settled_rss(proxy).await?;
    Ok(Queued { holder, clients: opened, before_kib, after_kib })
}

struct Drained {
    took: Duration,
    errors: usize,
}

/// Lets the holder go and times until every queued client has been seated
/// (has read its server's greeting) and left.
async fn drain(queued: Queued) -> anyhow::Result<Drained> {
    let started = Instant::now();
    drop(queued.holder);
    let mut set = JoinSet::new();
    for mut client in queued.clients {
        set.spawn(async move {
            let mut greeting = [0u8; 1];
            matches!(tokio::time::timeout(STEP_LIMIT, client.read(&mut greeting)).await, Ok(Ok(1)))
        });
    }
    let mut errors = 0;
    while let Some(served) = set.join_next().await {
        if !served? {
            errors += 1;
        }
    }
    Ok(Drained { took: started.elapsed(), errors })
}

/// `n` connections that send nothing.
async fn open_silent(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        set.spawn(async move {
            let _permit = permit;
            tokio::time::timeout(STEP_LIMIT, TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))?
        });
    }
    let mut open = Vec::with_capacity(n);
    while let Some(done) = set.join_next().await {
        open.push(done??);
    }
    Ok(open)
}

/// The proxy's RSS once two readings [`RSS_POLL`] apart agree (bounded).
async fn settled_rss(proxy: &Running) -> anyhow::Result<u64> {
    let mut last = proxy.rss_kib().context("proxy RSS")?;
    for _ in 0..50 {
        tokio::time::sleep(RSS_POLL).await;
        let now = proxy.rss_kib().context("proxy RSS")?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Open fds of process `pid`.
fn fd_count(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
