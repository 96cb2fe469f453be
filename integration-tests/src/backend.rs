//! Backend servers for tests. Each counts the connections it holds at
//! once, at the server itself, and keeps the peak.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a test backend does with each connection.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Copies everything back; on EOF, half-closes and ends.
    Echo,
    /// Reads the first bytes, waits `hold`, writes `reply`, closes.
    Reply { hold: Duration, reply: &'static [u8] },
    /// Reads until the client closes, then closes.
    Drain,
    /// Writes `data`, half-closes, then reads until EOF into `received`.
    SendFirst { data: Arc<Vec<u8>> },
    /// Reads until the client half-closes, keeps every byte of the
    /// connection raw (PROXY header included) in `captured`, writes `reply`
    /// and closes.
    Capture { reply: &'static [u8] },
}

#[derive(Default)]
pub struct BackendStats {
    pub current: AtomicU64,
    pub peak: AtomicU64,
    pub accepted: AtomicU64,
    /// The first bytes of each connection, in accept order.
    pub first_bytes: Mutex<Vec<Vec<u8>>>,
    /// Everything received by `SendFirst` connections.
    pub received: Mutex<Vec<u8>>,
    /// Every byte of each `Capture` connection, in completion order.
    pub captured: Mutex<Vec<Vec<u8>>>,
    /// Woken on every change above, for [`TestBackend::wait_until`].
    changed: tokio::sync::Notify,
}

pub struct TestBackend {
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    behavior: Behavior,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    /// Starts on the current tokio runtime.
    pub fn start(behavior: Behavior) -> TestBackend {
        let std = crate::listener();
        let addr = std.local_addr().expect("addr");
        std.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(std).expect("tokio listener");
        let stats = Arc::new(BackendStats::default());
        let task = tokio::spawn(serve(listener, behavior.clone(), stats.clone()));
        TestBackend { addr, stats, behavior, task }
    }

    /// Kills the server: its listening socket closes, so connections (and
    /// health checks) are refused. Open connections stay until they end.
    pub async fn kill(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Brings a killed server back on the same address. Test-only: the port
    /// is free for the instant between `kill` and this call.
    pub fn revive(&mut self) {
        let std = usher_core::net::bind_listener(self.addr, 4096).expect("rebind the same port");
        let listener = TcpListener::from_std(std).expect("tokio listener");
        self.task = tokio::spawn(serve(listener, self.behavior.clone(), self.stats.clone()));
    }

    pub fn peak(&self) -> u64 {
        self.stats.peak.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    pub fn current(&self) -> u64 {
        self.stats.current.load(Ordering::SeqCst)
    }

    /// Waits until `cond` holds for this backend; panics after [`crate::DEADLINE`].
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&TestBackend) -> bool) {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let notified = self.stats.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for the backend: {what}");
            }
        }
    }

    pub fn received(&self) -> Vec<u8> {
        self.stats.received.lock().expect("stats").clone()
    }

    pub fn first_bytes(&self) -> Vec<Vec<u8>> {
        self.stats.first_bytes.lock().expect("stats").clone()
    }

    /// What each `Capture` connection received, raw.
    pub fn captured(&self) -> Vec<Vec<u8>> {
        self.stats.captured.lock().expect("stats").clone()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, behavior: Behavior, stats: Arc<BackendStats>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let now = stats.current.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        stats.accepted.fetch_add(1, Ordering::SeqCst);
        stats.changed.notify_waiters();
        let stats = stats.clone();
        let behavior = behavior.clone();
        tokio::spawn(async move {
            let mut held = Held { stats: &stats, counted: true };
            handle(stream, &behavior, &mut held).await;
        });
    }
}

/// One connection counted in `current`. The count drops when the server's
/// part is over — just before it sends its final FIN — because the broker can
/// release the slot as soon as that FIN arrives: counting until the handler
/// returns would report an overlap the broker could not have seen.
struct Held<'a> {
    stats: &'a BackendStats,
    counted: bool,
}

impl Held<'_> {
    fn done(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.stats.current.fetch_sub(1, Ordering::SeqCst);
            self.stats.changed.notify_waiters();
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

async fn handle(mut stream: TcpStream, behavior: &Behavior, held: &mut Held<'_>) {
    let stats = held.stats;
    let mut buf = vec![0u8; 64 * 1024];
    match behavior {
        Behavior::Echo => {
            let mut first = true;
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if first {
                    stats.first_bytes.lock().expect("stats").push(buf[..n].to_vec());
                    first = false;
                }
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            held.done();
            let _ = stream.shutdown().await;
        }
        Behavior::Reply { hold, reply } => {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            stats.first_bytes.lock().expect("stats").push(buf[..n].to_vec());
            tokio::time::sleep(*hold).await;
            let _ = stream.write_all(reply).await;
            held.done();
            let _ = stream.shutdown().await;
        }
        Behavior::Drain => {
            while let Ok(1..) = stream.read(&mut buf).await {}
            held.done();
        }
        Behavior::SendFirst { data } => {
            if stream.write_all(data).await.is_err() || stream.shutdown().await.is_err() {
                return;
            }
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got).await;
            stats.received.lock().expect("stats").extend_from_slice(&got);
            stats.changed.notify_waiters();
        }
        Behavior::Capture { reply } => {
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got).await;
            stats.captured.lock().expect("stats").push(got);
            stats.changed.notify_waiters();
            let _ = stream.write_all(reply).await;
            held.done();
            let _ = stream.shutdown().await;
        }
    }
}
