//! What a client waiting in a queue keeps on the broker's heap. One server
//! with maxconn 1 is held by one client; many more connect, send nothing
//! and wait. The bytes the broker holds per queued client are counted by a
//! global allocator that keeps, for each allocation size, how many such
//! blocks are live — so the test prints what each queued client holds (the
//! session task, any buffer, the queue entry, the oneshot, …) and holds
//! the total to a ceiling.
//!
//! This test binary counts every allocation of the process, so it is alone
//! in its file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use std::net::{SocketAddr, TcpStream};

use integration_tests::{seated, Behavior, TestBackend, DEADLINE};
use usher_core::{BrokerHandle, Extensions};

/// Sizes counted one by one; larger blocks share the last counter.
const SIZES: usize = 8192;

/// The system allocator, with the number of live blocks of each size.
struct LiveBySize {
    live: [AtomicI64; SIZES + 1],
    /// Live bytes, all sizes.
    bytes: AtomicI64,
}

impl LiveBySize {
    fn counted(&self, size: usize, blocks: i64) {
        self.live[size.min(SIZES)].fetch_add(blocks, Ordering::Relaxed);
        self.bytes.fetch_add(blocks * size as i64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<i64> {
        self.live.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

// A global allocator is unsafe by its trait's contract; this one only
// counts and forwards every call to the system allocator unchanged.
// (stats_alloc, used elsewhere, counts totals, not sizes.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for LiveBySize {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.counted(layout.size(), 1);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.counted(layout.size(), -1);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.counted(layout.size(), -1);
        self.counted(new_size, 1);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: LiveBySize = LiveBySize { live: [const { AtomicI64::new(0) }; SIZES + 1], bytes: AtomicI64::new(0) };

/// Clients queued before counting: the queue's first growth, the first
/// sessions' one-time allocations.
const WARM_UP: usize = 100;
/// Clients counted.
const COUNTED: usize = 1_000;
/// Most heap bytes one queued client may hold (the test prints the figure).
const CEILING: f64 = 2_400.0;

/// Sessions waiting in `app`'s queues.
async fn waiting(broker: &BrokerHandle) -> usize {
    let report = broker.stats().await.expect("stats");
    let queue = &report.backends[0].queue;
    queue.backend_queue + queue.servers.iter().map(|s| s.queued).sum::<usize>()
}

/// Connects `n` silent clients and waits (bounded) until `total` wait.
/// The clients are plain blocking sockets: nothing of theirs is on this
/// process's heap, which the broker shares.
async fn queue_clients(broker: &BrokerHandle, addr: SocketAddr, n: usize, total: usize, clients: &mut Vec<TcpStream>) {
    for _ in 0..n {
        clients.push(TcpStream::connect(addr).expect("connect"));
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = waiting(broker).await;
        if now == total {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now} waiting, expected {total}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a broker whose log drops every record, as the daemon's drops
/// those under its level before formatting them (a capturing log would
/// count its own copies of per-session debug records here).
fn start_broker(toml: &str) -> (BrokerHandle, SocketAddr) {
    let settings = usher_core::config::from_toml_str(toml).expect("valid configuration");
    let listeners = usher_core::bind_all(&settings).expect("bind the frontend");
    let addr = listeners.0.values().flatten().next().expect("one listener").local_addr().expect("address");
    let (started, handle) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let extensions = Extensions {
            on_start: Some(Box::new(move |handle: BrokerHandle| {
                let _ = started.send(handle);
            })),
            ..Extensions::default()
        };
        let log = slog::Logger::root(slog::Discard, slog::o!());
        actix_rt::System::new().block_on(usher_core::run(settings, listeners, log, extensions, std::future::pending()))
    });
    (handle.recv_timeout(DEADLINE).expect("the broker started"), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_holds_little_heap() {
    let server = TestBackend::start(Behavior::Echo);
    let (broker, addr) = start_broker(&format!(
        "[global]\nworkers = 1\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nbacklog = 2048\n\
         [backends.app.timeout]\nqueue = \"60s\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\nmaxconn = 1\n",
        server.addr
    ));
    let _holder = seated(addr, b'h').await;
    let mut clients = Vec::new();
    queue_clients(&broker, addr, WARM_UP, WARM_UP, &mut clients).await;
    let before = GLOBAL.snapshot();
    let bytes_before = GLOBAL.bytes.load(Ordering::Relaxed);
    queue_clients(&broker, addr, COUNTED, WARM_UP + COUNTED, &mut clients).await;
    let after = GLOBAL.snapshot();
    let bytes = (GLOBAL.bytes.load(Ordering::Relaxed) - bytes_before) as f64 / COUNTED as f64;

    // Blocks live per queued client (shown from one in a hundred clients:
    // the queue's tree nodes are shared by a few clients each).
    println!("live blocks per queued client, by size:");
    for (size, (a, b)) in after.iter().zip(&before).enumerate() {
        let blocks = (a - b) as f64 / COUNTED as f64;
        if blocks.abs() >= 0.01 {
            let shown = if size == SIZES { format!(">={SIZES}") } else { size.to_string() };
            println!("  {shown:>6} B × {blocks:.2}");
        }
    }
    println!("heap per queued client: {bytes:.0} B ({COUNTED} clients)");
    assert!(bytes <= CEILING, "a queued client holds {bytes:.0} B of heap, more than {CEILING}");
}
