//! A server that misbehaves on purpose, for the fault-injection tests: it
//! stays silent, resets mid-stream, closes at once, streams without end, or
//! is stopped outright with its connections reset. Like [`crate::TestBackend`]
//! it counts the connections it holds and keeps the peak, so a test can
//! check that usher never put more than `maxconn` on it.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// What a [`FaultyServer`] does with each connection.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Copies everything back; on EOF, half-closes and ends.
    Echo,
    /// Reads and discards everything, never answers; ends when the peer
    /// closes.
    Silent,
    /// Reads the first bytes, answers `bytes` bytes, then resets the
    /// connection (`SO_LINGER` 0, then close).
    ResetAfter { bytes: usize },
    /// Closes each connection as soon as it is accepted, reading and
    /// writing nothing: a plain FIN.
    CloseAtAccept,
    /// Reads until the client half-closes, then writes `answer` whole and
    /// closes.
    AnswerAfterEof { answer: Arc<Vec<u8>> },
    /// Reads the first bytes, then writes `total` bytes as fast as the
    /// socket takes them, counting them in [`FaultyServer::written`];
    /// `sndbuf` sets the connection's send buffer, so what the kernel holds
    /// on this side is known.
    Stream { total: u64, sndbuf: usize },
    /// The first byte of each connection picks its fault ([`Script`]).
    Scripted { reset_after: usize, answer: Arc<Vec<u8>> },
}

/// The faults a [`Fault::Scripted`] server plays, by the client's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Echo (the first byte included).
    Echo,
    /// Never answer.
    Silent,
    /// Answer some bytes, then reset.
    Reset,
    /// Close at once (the first byte read, nothing written).
    Close,
    /// Answer after the client's half-close.
    AnswerAfterEof,
}

impl Script {
    pub const ALL: [Script; 5] = [Script::Echo, Script::Silent, Script::Reset, Script::Close, Script::AnswerAfterEof];

    /// The byte a client sends first to ask for this fault.
    pub fn byte(self) -> u8 {
        match self {
            Script::Echo => b'e',
            Script::Silent => b's',
            Script::Reset => b'r',
            Script::Close => b'c',
            Script::AnswerAfterEof => b'h',
        }
    }

    pub fn from_byte(byte: u8) -> Option<Script> {
        Script::ALL.into_iter().find(|s| s.byte() == byte)
    }
}

/// Figures of one [`FaultyServer`], shared with its connection tasks.
#[derive(Default)]
struct Counts {
    /// Connections whose task still runs.
    current: AtomicU64,
    /// Most connections open at once, counted at each accept (see
    /// [`Registry::open_besides`]).
    peak: AtomicU64,
    accepted: AtomicU64,
    /// Bytes the `Stream` connections handed to the kernel.
    written: AtomicU64,
    /// Woken on every change above.
    changed: Notify,
}

impl Counts {
    fn touch(&self) {
        self.changed.notify_waiters();
    }
}

/// The live connections, so that an accept can tell which of them the peer
/// has already closed.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<TcpStream>>>,
}

impl Registry {
    /// How many live connections the peer has not closed yet.
    ///
    /// usher closes its server socket *before* it gives the slot back, so
    /// the FIN (or RST) of a finished session is in this server's kernel
    /// before the next session of that slot connects; but this server's
    /// task may not have read it yet. Counting tasks alone would then see
    /// an overlap that usher never caused. A peek asks the kernel: `Ok(0)`
    /// or an error means the peer is gone. A connection with unread data is
    /// counted as open (its FIN, if any, is behind the data), which can only
    /// over-count: the faults whose peer closes first (`Silent`, `Echo`)
    /// read everything they are sent.
    fn open_besides(&self) -> u64 {
        let live = self.live.lock().expect("registry");
        live.values().filter(|s| peer_still_open(s)).count() as u64
    }
}

fn peer_still_open(stream: &TcpStream) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    // The socket is non-blocking (tokio's): the peek never waits.
    match SockRef::from(stream).peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(err) => err.kind() == std::io::ErrorKind::WouldBlock,
    }
}

pub struct FaultyServer {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    accept: tokio::task::JoinHandle<()>,
    /// `true` resets every connection.
    stop: watch::Sender<bool>,
}

impl FaultyServer {
    /// Starts on the current tokio runtime, on a fresh 127.0.0.1:0 listener.
    pub fn start(fault: Fault) -> FaultyServer {
        let std = crate::listener();
        let addr = std.local_addr().expect("addr");
        std.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(std).expect("tokio listener");
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, fault, counts.clone(), stopped));
        FaultyServer { addr, counts, accept, stop }
    }

    /// Kills the server: its listening socket closes first (new connections
    /// are refused), then every connection it holds is reset. Returns once
    /// none is left.
    pub async fn stop(&mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        let _ = self.stop.send(true);
        self.wait_until("every connection reset", |s| s.current() == 0).await;
    }

    pub fn peak(&self) -> u64 {
        self.counts.peak.load(Ordering::SeqCst)
    }

    pub fn current(&self) -> u64 {
        self.counts.current.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Bytes the `Stream` connections handed to the kernel so far.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::SeqCst)
    }

    /// Waits until `cond` holds; panics after [`crate::DEADLINE`].
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&FaultyServer) -> bool) {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let notified = self.counts.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for the faulty server {}: {what} (current {}, accepted {})",
                    self.addr,
                    self.current(),
                    self.accepted()
                );
            }
        }
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        // On every path, a failed test included: nothing outlives the server.
        self.accept.abort();
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, fault: Fault, counts: Arc<Counts>, stopped: watch::Receiver<bool>) {
    let registry = Arc::new(Registry::default());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let open = registry.open_besides() + 1;
        counts.peak.fetch_max(open, Ordering::SeqCst);
        counts.current.fetch_add(1, Ordering::SeqCst);
        counts.accepted.fetch_add(1, Ordering::SeqCst);
        counts.touch();
        let stream = Arc::new(stream);
        let id = registry.next.fetch_add(1, Ordering::Relaxed);
        registry.live.lock().expect("registry").insert(id, stream.clone());
        let tracked = Tracked { id, registry: registry.clone(), counts: counts.clone() };
        tokio::spawn(connection(stream, tracked, fault.clone(), stopped.clone()));
    }
}

/// One connection counted in `current` and listed in the registry, until
/// dropped — before the connection's socket closes, so that nobody sees it
/// counted after its FIN.
struct Tracked {
    id: u64,
    registry: Arc<Registry>,
    counts: Arc<Counts>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.registry.live.lock().expect("registry").remove(&self.id);
        self.counts.current.fetch_sub(1, Ordering::SeqCst);
        self.counts.touch();
    }
}

/// How a connection ends.
enum End {
    /// A plain close: FIN (or RST if the peer's bytes are left unread).
    Close,
    /// `SO_LINGER` 0, then close: RST.
    Reset,
}

async fn connection(stream: Arc<TcpStream>, tracked: Tracked, fault: Fault, mut stopped: watch::Receiver<bool>) {
    let end = tokio::select! {
        end = play(&stream, &fault, &tracked.counts) => end,
        _ = stopped.wait_for(|stop| *stop) => End::Reset,
    };
    if let End::Reset = end {
        // Zero linger: the close below sends RST at once and never blocks.
        let _ = SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
    }
    // The registry's reference goes first, so this one closes the socket.
    drop(tracked);
    drop(stream);
}

async fn play(s: &TcpStream, fault: &Fault, counts: &Counts) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    match fault {
        Fault::Echo => echo(s, &mut buf).await,
        Fault::Silent => drain(s, &mut buf).await,
        Fault::ResetAfter { bytes } => {
            if read(s, &mut buf).await.unwrap_or(0) == 0 {
                return End::Close;
            }
            answer_then_reset(s, *bytes).await
        }
        Fault::CloseAtAccept => End::Close,
        Fault::AnswerAfterEof { answer } => answer_after_eof(s, &mut buf, answer).await,
        Fault::Stream { total, sndbuf } => {
            let _ = SockRef::from(s).set_send_buffer_size(*sndbuf);
            if read(s, &mut buf).await.unwrap_or(0) == 0 {
                return End::Close;
            }
            stream(s, &mut buf, *total, counts).await
        }
        Fault::Scripted { reset_after, answer } => {
            let mut first = [0u8; 1];
            if read(s, &mut first).await.unwrap_or(0) == 0 {
                return End::Close;
            }
            match Script::from_byte(first[0]) {
                Some(Script::Echo) => {
                    if write_all(s, &first).await.is_err() {
                        return End::Close;
                    }
                    echo(s, &mut buf).await
                }
                Some(Script::Silent) => drain(s, &mut buf).await,
                Some(Script::Reset) => answer_then_reset(s, *reset_after).await,
                Some(Script::Close) | None => End::Close,
                Some(Script::AnswerAfterEof) => answer_after_eof(s, &mut buf, answer).await,
            }
        }
    }
}

async fn echo(s: &TcpStream, buf: &mut [u8]) -> End {
    loop {
        match read(s, buf).await {
            Ok(0) => {
                let _ = SockRef::from(s).shutdown(Shutdown::Write);
                return End::Close;
            }
            Ok(n) => {
                if write_all(s, &buf[..n]).await.is_err() {
                    return End::Close;
                }
            }
            Err(_) => return End::Close,
        }
    }
}

async fn drain(s: &TcpStream, buf: &mut [u8]) -> End {
    while let Ok(1..) = read(s, buf).await {}
    End::Close
}

async fn answer_then_reset(s: &TcpStream, bytes: usize) -> End {
    let _ = write_all(s, &vec![b'r'; bytes]).await;
    End::Reset
}

async fn answer_after_eof(s: &TcpStream, buf: &mut [u8], answer: &[u8]) -> End {
    while let Ok(1..) = read(s, buf).await {}
    let _ = write_all(s, answer).await;
    End::Close
}

async fn stream(s: &TcpStream, chunk: &mut [u8], total: u64, counts: &Counts) -> End {
    chunk.fill(b's');
    let mut sent = 0u64;
    while sent < total {
        let n = chunk.len().min((total - sent) as usize);
        if s.writable().await.is_err() {
            return End::Close;
        }
        match s.try_write(&chunk[..n]) {
            Ok(written) => {
                sent += written as u64;
                counts.written.fetch_add(written as u64, Ordering::SeqCst);
                counts.touch();
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return End::Close,
        }
    }
    let _ = SockRef::from(s).shutdown(Shutdown::Write);
    drain(s, chunk).await
}

async fn read(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(s: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
