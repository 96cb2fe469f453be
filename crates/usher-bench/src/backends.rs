//! Built-in backends on 127.0.0.1 port 0, on the load generator's runtime.
//! Each does the least work its case needs and counts the connections it
//! holds at once (the peak must stay ≤ the server's maxconn in `queue`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Chunk written by [`Behavior::Source`].
const SOURCE_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
pub enum Behavior {
    /// Reads `request` bytes, writes `reply` bytes, closes (server closes first).
    Reply { request: usize, reply: usize },
    /// As `Reply`, after working `service` on the request: a server whose
    /// capacity is its maxconn / `service` sessions per second.
    Slow { request: usize, reply: usize, service: Duration },
    /// Writes back whatever it reads until the client closes.
    Echo,
    /// Writes one byte (the client knows it is seated), then holds the
    /// connection until the client closes.
    Greet,
    /// Writes as fast as the peer reads until the connection breaks.
    Source,
}

#[derive(Default)]
pub struct Stats {
    current: AtomicU64,
    pub peak: AtomicU64,
    pub accepted: AtomicU64,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn start(rt: &Handle, behavior: Behavior) -> std::io::Result<Backend> {
        let std = bind_backend_port()?;
        let addr = std.local_addr()?;
        let _enter = rt.enter();
        let listener = TcpListener::from_std(std)?;
        let stats = Arc::new(Stats::default());
        let task = rt.spawn(serve(listener, behavior, stats.clone()));
        Ok(Backend { addr, stats, task })
    }

    pub fn peak(&self) -> u64 {
        self.stats.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on a free port: one the kernel picks, or, when it has none
/// left, one below its ephemeral range. A bench of 10 000 servers binds
/// 10 000 fresh ports per run while the run before left tens of thousands
/// of sockets in TIME_WAIT on ephemeral ports, and `bind(0)` then fails
/// with "Address already in use" (seen in about one run in two).
fn bind_backend_port() -> std::io::Result<std::net::TcpListener> {
    match usher_core::net::bind_listener(([127, 0, 0, 1], 0).into(), 4096) {
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {}
        bound => return bound,
    }
    // Below the ephemeral range (32768 on Linux by default), above the
    // commonly configured ports; a cursor shared by every backend of the
    // process, so no port is tried twice in a row.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    const FIRST: u64 = 10_000;
    const SPAN: u64 = 22_000;
    let mut last = None;
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        match usher_core::net::bind_listener(([127, 0, 0, 1], port as u16).into(), 4096) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

async fn serve(listener: TcpListener, behavior: Behavior, stats: Arc<Stats>) {
    // Only a source writes it: a chunk per listener would be 512 MB to fill
    // for the 2 000 servers of `backends` before their first accept.
    let chunk = if matches!(behavior, Behavior::Source) { SOURCE_CHUNK } else { 0 };
    let source: Arc<[u8]> = vec![0x5a; chunk].into();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of fds or similar: let connections close, then go on.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let now = stats.current.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let held = Held(stats.clone());
        let source = source.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match behavior {
                Behavior::Reply { request, reply } => serve_reply(stream, request, reply, None, held).await,
                Behavior::Slow { request, reply, service } => {
                    serve_reply(stream, request, reply, Some(service), held).await
                }
                Behavior::Echo => serve_echo(stream, held).await,
                Behavior::Greet => serve_greet(stream, held).await,
                Behavior::Source => serve_source(stream, &source, held).await,
            }
        });
    }
}

/// One connection counted in `current`. It is uncounted just before the
/// server's final FIN: a proxy can release the slot as soon as that FIN
/// arrives, so counting until the task ends would report an overlap no proxy
/// could have seen.
struct Held(Arc<Stats>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_reply(mut stream: TcpStream, request: usize, reply: usize, service: Option<Duration>, held: Held) {
    let mut buf = [0u8; 512];
    let mut got = 0;
    while got < request {
        let want = (request - got).min(buf.len());
        match stream.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n,
        }
    }
    if let Some(service) = service {
        tokio::time::sleep(service).await;
    }
    let answer = [b'r'; 512];
    let mut sent = 0;
    while sent < reply {
        let n = (reply - sent).min(answer.len());
        if stream.write_all(&answer[..n]).await.is_err() {
            return;
        }
        sent += n;
    }
    drop(held);
    drop(stream);
}

async fn serve_echo(mut stream: TcpStream, held: Held) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    drop(held);
}

async fn serve_greet(mut stream: TcpStream, held: Held) {
    if stream.write_all(b"g").await.is_ok() {
        let mut buf = [0u8; 64];
        while let Ok(1..) = stream.read(&mut buf).await {}
    }
    drop(held);
}

async fn serve_source(mut stream: TcpStream, chunk: &[u8], held: Held) {
    while stream.write_all(chunk).await.is_ok() {}
    drop(held);
}
