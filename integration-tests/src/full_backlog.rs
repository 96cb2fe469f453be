//! A server whose listen backlog is full and which never accepts: a
//! connection to it neither completes nor is refused (the kernel drops the
//! SYN), so a connect can only time out.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a connect may take before the backlog counts as full; on
/// loopback a connect to a listener with room completes in microseconds.
const STALLED: Duration = Duration::from_millis(300);
/// Most plain connections it may take to fill a backlog of 0.
const MOST_FILLERS: usize = 8;

pub struct FullBacklogServer {
    pub addr: SocketAddr,
    /// Never accepted from; kept open so that its queue stays full.
    _listener: std::net::TcpListener,
    /// The connections that fill its accept queue.
    _fillers: Vec<TcpStream>,
}

impl FullBacklogServer {
    /// Listens with a backlog of 0 and fills its accept queue with plain
    /// connections until one stalls, which proves the queue full.
    pub async fn start() -> FullBacklogServer {
        let listener =
            usher_core::net::bind_listener("127.0.0.1:0".parse().expect("address"), 0).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        for _ in 0..MOST_FILLERS {
            match tokio::time::timeout(STALLED, TcpStream::connect(addr)).await {
                Ok(filler) => fillers.push(filler.expect("a connect to a backlog with room completes")),
                Err(_) => return FullBacklogServer { addr, _listener: listener, _fillers: fillers },
            }
        }
        panic!("{MOST_FILLERS} connections did not fill a listen backlog of 0 on {addr}");
    }
}
