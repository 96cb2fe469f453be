//! Watching a client that waits (queued or connecting).
//!
//! HAProxy's TCP default (`option abortonclose` off): a client that resets,
//! or closes without having sent anything, has left — it leaves the queue at
//! once (`CQ`). A client that sent data and then half-closed still wants its
//! answer: it stays queued, its bytes are kept (up to `bufsize`) and
//! forwarded, and the half-close is passed on once connected.

use std::future::pending;
use std::io;

use tokio::net::TcpStream;

/// Bytes read from a waiting client, and whether it half-closed.
pub struct ClientWatch {
    pub early: Vec<u8>,
    pub half_closed: bool,
    limit: usize,
}

impl ClientWatch {
    pub fn new(limit: usize) -> ClientWatch {
        ClientWatch { early: Vec::new(), half_closed: false, limit }
    }

    /// Resolves only when the client has left; reads what it sends meanwhile.
    /// Cancel-safe: bytes read are kept in `early`.
    pub async fn gone(&mut self, client: &TcpStream) {
        loop {
            if self.half_closed || self.early.len() >= self.limit {
                return pending().await;
            }
            if client.readable().await.is_err() {
                return;
            }
            let room = self.limit - self.early.len();
            let mut chunk = vec![0u8; room.min(16 * 1024)];
            match client.try_read(&mut chunk) {
                Ok(0) if self.early.is_empty() => return,
                Ok(0) => self.half_closed = true,
                Ok(n) => self.early.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    }
}
