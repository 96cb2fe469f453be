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

use integration_tests::{seated, Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::net::TcpStream;

/// Sizes counted one by one; larger blocks share the last counter.
const SIZES: usize = 8192;

/// The system allocator, with the number of live blocks of each size.
struct LiveBySize {
    live: [AtomicI64; SIZES + 1],
}

impl LiveBySize {
    fn slot(&self, size: usize) -> &AtomicI64 {
        &self.live[size.min(SIZES)]
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
        self.slot(layout.size()).fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.slot(layout.size()).fetch_sub(1, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.slot(layout.size()).fetch_sub(1, Ordering::Relaxed);
        self.slot(new_size).fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: LiveBySize = LiveBySize { live: [const { AtomicI64::new(0) }; SIZES + 1] };

/// Clients queued before counting: the queue's first growth, the first
/// sessions' one-time allocations.
const WARM_UP: usize = 100;
/// Clients counted.
const COUNTED: usize = 1_000;
/// Most heap bytes one queued client may hold (the test prints the figure).
const CEILING: f64 = 6_000.0;

/// Sessions waiting in `app`'s queues.
async fn waiting(broker: &TestBroker) -> usize {
    let report = broker.handle.stats().await.expect("stats");
    let queue = &report.backends[0].queue;
    queue.backend_queue + queue.servers.iter().map(|s| s.queued).sum::<usize>()
}

/// Connects `n` silent clients and waits (bounded) until `total` wait.
async fn queue_clients(broker: &TestBroker, n: usize, total: usize, clients: &mut Vec<TcpStream>) {
    let addr = broker.addr("web");
    for _ in 0..n {
        clients.push(TcpStream::connect(addr).await.expect("connect"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_holds_little_heap() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[global]\nworkers = 1\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nbacklog = 2048\n\
         [backends.app.timeout]\nqueue = \"60s\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\nmaxconn = 1\n",
        server.addr
    ));
    let _holder = seated(broker.addr("web"), b'h').await;
    let mut clients = Vec::new();
    queue_clients(&broker, WARM_UP, WARM_UP, &mut clients).await;
    let before = GLOBAL.snapshot();
    queue_clients(&broker, COUNTED, WARM_UP + COUNTED, &mut clients).await;
    let after = GLOBAL.snapshot();

    // Blocks that are live per queued client (at least one in two
    // clients holds one): the parts of a queued client.
    let mut per_client = 0.0;
    println!("live blocks per queued client, by size:");
    for (size, (a, b)) in after.iter().zip(&before).enumerate() {
        let blocks = (a - b) as f64 / COUNTED as f64;
        if blocks.abs() >= 0.01 {
            let shown = if size == SIZES { format!(">={SIZES}") } else { size.to_string() };
            println!("  {shown:>6} B × {blocks:.2}");
        }
        if size < SIZES {
            per_client += blocks * size as f64;
        }
    }
    println!("heap per queued client: {per_client:.0} B ({COUNTED} clients)");
    assert!(after[SIZES] - before[SIZES] < (COUNTED / 10) as i64, "blocks over {SIZES} B per queued client");
    assert!(per_client <= CEILING, "a queued client holds {per_client:.0} B of heap, more than {CEILING}");
}
