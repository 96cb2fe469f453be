//! The load generator (tokio): session loops, ping-pong connections, bulk
//! readers and idle connections. Latencies go into HDR histograms (µs).
//!
//! Every run has a [`Window`]: a warm-up, then the measured interval. Only
//! what completes inside the measured interval counts towards rates and
//! latencies; errors and stuck sessions count over the whole run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

/// Limit of one ping-pong or idle-connection step before it counts as an error.
const STEP_LIMIT: Duration = Duration::from_secs(10);
/// Read buffer of the bulk reader.
const BULK_READ: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub measure: Instant,
    pub end: Instant,
}

impl Window {
    /// Starts now: `warmup`, then `duration` measured.
    pub fn new(warmup: Duration, duration: Duration) -> Window {
        let measure = Instant::now() + warmup;
        Window { measure, end: measure + duration }
    }

    fn counts(&self, t: Instant) -> bool {
        t >= self.measure && t < self.end
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.measure).as_secs_f64()
    }
}

/// What one run of load produced.
pub struct Outcome {
    /// Operations completed in the measured interval.
    pub count: u64,
    /// Bytes received in the measured interval.
    pub bytes: u64,
    /// Failed operations (connect, reset, short reply), whole run.
    pub errors: u64,
    /// Sessions that failed or took at least the `slow` limit, whole run.
    pub stuck: u64,
    /// Latency of each counted operation, µs.
    pub latency: Histogram<u64>,
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome::new()
    }
}

impl Outcome {
    fn new() -> Outcome {
        let latency = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
        Outcome { count: 0, bytes: 0, errors: 0, stuck: 0, latency }
    }

    fn record(&mut self, latency: Duration) {
        self.count += 1;
        self.latency.saturating_record(latency.as_micros() as u64);
    }

    pub fn merge(&mut self, other: Outcome) {
        self.count += other.count;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.stuck += other.stuck;
        self.latency.add(&other.latency).expect("same histogram bounds");
    }

    pub fn rate(&self, w: &Window) -> f64 {
        self.count as f64 / w.seconds()
    }

    /// Latency quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

/// The bytes a session's request is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Opaque filler.
    Filler,
    /// A TLS ClientHello naming [`crate::tls_hello::SERVER_NAME`], so that
    /// proxies can route on it.
    ClientHello,
}

impl Payload {
    pub fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Payload::Filler => vec![b'q'; len],
            Payload::ClientHello => crate::tls_hello::client_hello(crate::tls_hello::SERVER_NAME, len),
        }
    }
}

async fn join(mut set: JoinSet<Outcome>) -> Outcome {
    let mut total = Outcome::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(out) => total.merge(out),
            Err(_) => total.errors += 1,
        }
    }
    total
}

/// Short sessions: a new connection per request.
#[derive(Debug, Clone, Copy)]
pub struct Sessions {
    pub clients: usize,
    pub request: usize,
    /// What the `request` bytes are.
    pub payload: Payload,
    pub reply: usize,
    /// A session taking this long is counted as stuck (the queue timeout).
    pub slow: Duration,
    /// A session is abandoned (and counted as stuck) after this long.
    pub limit: Duration,
}

/// Where the client loops connect from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Wherever the kernel picks (127.0.0.1).
    One,
    /// Each loop from its own loopback address (127.1.x.y): for balancing
    /// by client address, which would put every session of `One` on one
    /// server.
    PerClient,
}

impl Sources {
    fn of(self, client: usize) -> Option<IpAddr> {
        let n = client + 1;
        (self == Sources::PerClient).then(|| IpAddr::V4(Ipv4Addr::new(127, 1, (n >> 8) as u8, n as u8)))
    }
}

/// `clients` loops of connect → request → reply → server closes, until the
/// window ends; a session started before the end is finished and counted
/// for errors and stuck, not for rate.
pub async fn sessions(addr: SocketAddr, spec: Sessions, w: Window) -> Outcome {
    sessions_from(addr, spec, w, Sources::One).await
}

/// [`sessions`], each loop connecting from where `sources` says.
pub async fn sessions_from(addr: SocketAddr, spec: Sessions, w: Window, sources: Sources) -> Outcome {
    let mut set = JoinSet::new();
    for client in 0..spec.clients {
        let from = sources.of(client);
        set.spawn(async move {
            let mut out = Outcome::new();
            let request = spec.payload.bytes(spec.request);
            while Instant::now() < w.end {
                let start = Instant::now();
                let ok = matches!(timeout(spec.limit, session(addr, from, &request, spec.reply)).await, Ok(Ok(())));
                let done = Instant::now();
                let took = done - start;
                if !ok {
                    out.errors += 1;
                }
                if !ok || took >= spec.slow {
                    out.stuck += 1;
                }
                if ok && w.counts(done) {
                    out.record(took);
                }
                if !ok {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            out
        });
    }
    join(set).await
}

/// Exactly `total` sessions spread over `spec.clients` loops, all counted
/// (no window): for costs per session, measured around the whole batch.
pub async fn session_batch(addr: SocketAddr, spec: Sessions, total: u64) -> Outcome {
    let tickets = Arc::new(std::sync::atomic::AtomicU64::new(total));
    let take = |t: &std::sync::atomic::AtomicU64| {
        t.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    };
    let mut set = JoinSet::new();
    for _ in 0..spec.clients {
        let tickets = tickets.clone();
        set.spawn(async move {
            let mut out = Outcome::new();
            let request = spec.payload.bytes(spec.request);
            while take(&tickets) {
                let start = Instant::now();
                match timeout(spec.limit, session(addr, None, &request, spec.reply)).await {
                    Ok(Ok(())) => out.record(start.elapsed()),
                    _ => out.errors += 1,
                }
            }
            out
        });
    }
    join(set).await
}

/// One session of `spec`, tried until it succeeds or `limit` passes: the
/// proxy serves (a proxy may accept on its listener before its backends are
/// ready, and a measured window must not start with its start-up).
pub async fn first_session(addr: SocketAddr, spec: Sessions, limit: Duration) -> std::io::Result<()> {
    let request = spec.payload.bytes(spec.request);
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = timeout(left, session(addr, None, &request, spec.reply)).await;
        match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) if Instant::now() >= deadline => return Err(err),
            Err(_) => return Err(std::io::Error::other(format!("no session served within {limit:?}"))),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn session(addr: SocketAddr, from: Option<IpAddr>, request: &[u8], reply: usize) -> std::io::Result<()> {
    let mut stream = match from {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut buf = [0u8; 512];
    let mut got = 0;
    loop {
        match stream.read(&mut buf).await? {
            0 => break,
            n => got += n,
        }
    }
    if got == reply {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("reply of {got} bytes, expected {reply}")))
    }
}

/// `conns` long connections, each sending `size` bytes and reading the echo
/// back, in a loop until the window ends.
pub async fn pingpong(addr: SocketAddr, conns: usize, size: usize, w: Window) -> Outcome {
    let mut set = JoinSet::new();
    for _ in 0..conns {
        set.spawn(async move {
            let mut out = Outcome::new();
            if pingpong_loop(addr, size, w, &mut out).await.is_err() {
                out.errors += 1;
            }
            out
        });
    }
    join(set).await
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream =
        timeout(STEP_LIMIT, TcpStream::connect(addr)).await.map_err(|_| std::io::Error::other("connect"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn pingpong_loop(addr: SocketAddr, size: usize, w: Window, out: &mut Outcome) -> std::io::Result<()> {
    let mut stream = connect(addr).await?;
    let ping = vec![b'p'; size];
    let mut pong = vec![0u8; size];
    while Instant::now() < w.end {
        let start = Instant::now();
        timeout(STEP_LIMIT, async {
            stream.write_all(&ping).await?;
            stream.read_exact(&mut pong).await.map(|_| ())
        })
        .await
        .map_err(|_| std::io::Error::other("round trip timed out"))??;
        let done = Instant::now();
        if w.counts(done) {
            out.record(done - start);
        }
    }
    Ok(())
}

/// `streams` connections reading what the server sends until the window ends.
pub async fn bulk(addr: SocketAddr, streams: usize, w: Window) -> Outcome {
    let mut set = JoinSet::new();
    for _ in 0..streams {
        set.spawn(async move {
            let mut out = Outcome::new();
            if bulk_read(addr, w, &mut out).await.is_err() {
                out.errors += 1;
            }
            out
        });
    }
    join(set).await
}

async fn bulk_read(addr: SocketAddr, w: Window, out: &mut Outcome) -> std::io::Result<()> {
    let mut stream = connect(addr).await?;
    let mut buf = vec![0u8; BULK_READ];
    loop {
        let n = timeout(STEP_LIMIT, stream.read(&mut buf)).await.map_err(|_| std::io::Error::other("stalled"))??;
        let now = Instant::now();
        if n == 0 {
            return Err(std::io::Error::other("server closed"));
        }
        if w.counts(now) {
            out.bytes += n as u64;
        } else if now >= w.end {
            return Ok(());
        }
    }
}

/// Opens `n` connections (at most `parallel` being set up at once), each
/// doing one 64-byte echo round trip, and returns them open and idle.
pub async fn open_idle(addr: SocketAddr, n: usize, parallel: usize) -> anyhow::Result<Vec<TcpStream>> {
    let gate = Arc::new(Semaphore::new(parallel));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        set.spawn(async move {
            let _permit = permit;
            timeout(STEP_LIMIT, async {
                let mut stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let mut buf = [b'i'; 64];
                stream.write_all(&buf).await?;
                stream.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(stream)
            })
            .await
            .map_err(|_| std::io::Error::other("idle connection set-up timed out"))?
        });
    }
    let mut open = Vec::with_capacity(n);
    while let Some(done) = set.join_next().await {
        open.push(done??);
    }
    Ok(open)
}

/// One phase of an open-loop run: new sessions at `rate` per second for
/// `duration`, whether or not earlier ones have finished.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub rate: f64,
    pub duration: Duration,
}

/// What became of one open-loop arrival.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// When it connected, from the start of the run.
    pub at: Duration,
    pub end: ArrivalEnd,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArrivalEnd {
    /// The whole reply came, `took` after connecting.
    Served { took: Duration },
    /// The proxy closed (or reset) it before a full reply, `took` after
    /// connecting: refused, shed or timed out in its queue.
    Refused { took: Duration },
    /// Could not connect, or nothing happened within the limit.
    Failed,
}

/// Open-loop arrivals through `phases`, each session sending `request` and
/// expecting `reply` bytes then the server's close; every session ends
/// within `limit`. Returns every arrival, in arrival order.
pub async fn open_loop(
    addr: SocketAddr,
    phases: &[Phase],
    request: Vec<u8>,
    reply: usize,
    limit: Duration,
) -> Vec<Arrival> {
    let request: Arc<[u8]> = request.into();
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut phase_start = Duration::ZERO;
    for phase in phases {
        let count = (phase.rate * phase.duration.as_secs_f64()).round() as u64;
        for k in 0..count {
            let at = phase_start + Duration::from_secs_f64(k as f64 / phase.rate);
            tokio::time::sleep_until(start + at).await;
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let connected = Instant::now();
                let end = match timeout(limit, served(addr, &request, reply)).await {
                    Ok(Ok(true)) => ArrivalEnd::Served { took: connected.elapsed() },
                    Ok(Ok(false)) => ArrivalEnd::Refused { took: connected.elapsed() },
                    Ok(Err(_)) | Err(_) => ArrivalEnd::Failed,
                };
                Arrival { at: connected - start, end }
            }));
        }
        phase_start += phase.duration;
    }
    let mut arrivals = Vec::with_capacity(tasks.len());
    for task in tasks {
        arrivals.push(task.await.unwrap_or(Arrival { at: Duration::ZERO, end: ArrivalEnd::Failed }));
    }
    arrivals
}

/// One session: `Ok(true)` with the whole reply, `Ok(false)` when the proxy
/// closed or reset it first; `Err` when it could not connect.
async fn served(addr: SocketAddr, request: &[u8], reply: usize) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    if stream.write_all(request).await.is_err() {
        return Ok(false);
    }
    let mut buf = [0u8; 512];
    let mut got = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return Ok(false),
        }
    }
    Ok(got == reply)
}
