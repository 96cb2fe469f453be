//! `close`: how long a server-side connection outlives its client. Batches
//! of `BATCH` clients connect, each does one small round trip (so its
//! session is relayed end to end), then all close one after another, as a
//! load generator does between two tests. For each session the delay is
//! from the client's `close()` to the backend's read returning 0 (EOF).
//! `direct` is the floor: the kernel's own FIN delivery.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::{Harness, REFERENCE};
use crate::report::{CaseResult, Metric};

/// Clients open at once, then closed together (redis-benchmark's default `-c 50`).
const BATCH: usize = 50;
/// Longest wait for one step (a connect, a reply, every EOF of a batch).
const STEP_LIMIT: Duration = Duration::from_secs(10);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    let title =
        format!("close: {BATCH} clients seated, then all closed; client close() → server sees EOF; {}", h.describe(&p));
    let metrics = vec![
        Metric::lower("p50 µs", 0),
        Metric::lower("p99 µs", 0),
        Metric::lower("max µs", 0),
        Metric::higher("sessions", 0),
        Metric::zero("errors"),
    ];
    let result = h.alternate("close", title, metrics, h.proxies.clone(), |kind| {
        let rt = h.load_runtime(&p)?;
        let _enter = rt.enter();
        let listener = usher_core::net::bind_listener(([127, 0, 0, 1], 0).into(), 4096)?;
        let backend = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let proxy = h.start_proxy(kind, &[backend], &h.tune(&p, 0, STEP_LIMIT))?;
        let w = h.window();
        let (eofs, mut seen) = mpsc::unbounded_channel();
        let server = rt.spawn(serve(listener, eofs));
        let out = rt.block_on(async {
            let mut delays = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut sessions, mut errors, mut next_id) = (0u64, 0u64, 0u64);
            while Instant::now() < w.end {
                let counted = Instant::now() >= w.measure;
                match batch(proxy.addr, &mut next_id, &mut seen).await {
                    Ok(batch) if counted => {
                        for d in batch {
                            delays.saturating_record(d.as_micros().max(1) as u64);
                            sessions += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
            }
            (delays, sessions, errors)
        });
        server.abort();
        let (delays, sessions, errors) = out;
        anyhow::ensure!(sessions > 0, "no batch completed in the measured window");
        Ok(vec![
            delays.value_at_quantile(0.5) as f64,
            delays.value_at_quantile(0.99) as f64,
            delays.max() as f64,
            sessions as f64,
            errors as f64,
        ])
    });
    vec![result]
}

/// One batch: connect and seat `BATCH` clients, close them all, and return
/// each one's delay from its `close()` to the backend's EOF.
async fn batch(
    proxy: SocketAddr,
    next_id: &mut u64,
    seen: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
) -> anyhow::Result<Vec<Duration>> {
    let mut clients = Vec::with_capacity(BATCH);
    for _ in 0..BATCH {
        *next_id += 1;
        let id = *next_id;
        let mut c = timeout(STEP_LIMIT, TcpStream::connect(proxy)).await.context("connect timed out")??;
        c.set_nodelay(true)?;
        c.write_all(&id.to_le_bytes()).await?;
        let mut ack = [0u8; 1];
        // The echo proves the server side is connected and relaying.
        timeout(STEP_LIMIT, c.read_exact(&mut ack)).await.context("no reply")??;
        clients.push((id, c));
    }
    let mut closed = HashMap::with_capacity(BATCH);
    for (id, c) in clients {
        // Everything sent to the client was read: drop closes with a FIN.
        closed.insert(id, Instant::now());
        drop(c);
    }
    let mut delays = Vec::with_capacity(BATCH);
    let deadline = Instant::now() + STEP_LIMIT;
    while !closed.is_empty() {
        let (id, at) = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .context("the backend did not see every close")?
            .context("backend stopped")?;
        if let Some(close) = closed.remove(&id) {
            delays.push(at.saturating_duration_since(close));
        }
    }
    Ok(delays)
}

/// The backend: reads an 8-byte session id, answers one byte, then reports
/// `(id, when its read returned 0)`.
async fn serve(listener: TcpListener, eofs: mpsc::UnboundedSender<(u64, Instant)>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let eofs = eofs.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut id = [0u8; 8];
            if stream.read_exact(&mut id).await.is_err() || stream.write_all(b"k").await.is_err() {
                return;
            }
            let mut rest = [0u8; 64];
            loop {
                match stream.read(&mut rest).await {
                    Ok(0) => {
                        let _ = eofs.send((u64::from_le_bytes(id), Instant::now()));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
}
