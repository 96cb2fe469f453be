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

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use integration_tests::heap_by_size::{start_quiet_broker, LiveBySize};
use integration_tests::{seated, Behavior, TestBackend, DEADLINE};
use usher_core::BrokerHandle;

#[global_allocator]
static GLOBAL: LiveBySize = LiveBySize::new();

/// Clients queued before counting: the queue's first growth, the first
/// sessions' one-time allocations.
const WARM_UP: usize = 100;
/// Clients counted.
const COUNTED: usize = 1_000;
/// Most heap bytes one queued client may hold (the test prints the figure).
const CEILING: f64 = 2_100.0;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_holds_little_heap() {
    let server = TestBackend::start(Behavior::Echo);
    let (broker, addr) = start_quiet_broker(&format!(
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
    queue_clients(&broker, addr, COUNTED, WARM_UP + COUNTED, &mut clients).await;
    // Blocks live per queued client (shown from one in a hundred clients:
    // the queue's tree nodes are shared by a few clients each).
    let bytes = GLOBAL.snapshot().per_session_since(&before, COUNTED, "queued client");
    assert!(bytes <= CEILING, "a queued client holds {bytes:.0} B of heap, more than {CEILING}");
}
