//! Watching a client that waits (queued or connecting).
//!
//! HAProxy's TCP default (`option abortonclose` off): a client that resets,
//! or closes without having sent anything, has left — it leaves the queue at
//! once (`CQ`). A client that sent data and then half-closed still wants its
//! answer: it stays queued, its bytes are kept (up to `bufsize`) and
//! forwarded, and the half-close is passed on once connected.
//!
//! Once no more may be read — `bufsize` bytes kept, or the half-close seen —
//! the client is still watched, for a reset only: its socket's error
//! readiness, without reading. So a client that filled the buffer and then
//! reset leaves at once rather than at `timeout.queue`.

use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

/// Most a waiting client's bytes grow `early` by at a time: requests are
/// usually small, and the buffer lives until the bytes are forwarded.
const EARLY_CHUNK: usize = 2048;

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

    /// Resolves only when the client has left; reads what it sends meanwhile,
    /// up to the bound. Cancel-safe: bytes read are kept in `early`.
    ///
    /// `read_buf` fills spare capacity without zeroing it, and a short read
    /// clears the socket's readiness, so a request costs one `recv`, not a
    /// second one that only returns EAGAIN. Waiting for readiness before the
    /// first read costs no system call either: it is the same wait the read
    /// would have made.
    pub async fn gone(&mut self, client: &mut TcpStream) {
        loop {
            if self.half_closed || self.early.len() >= self.limit {
                return reset(client).await;
            }
            // Grow only when full: a request read into the first chunk
            // leaves room for more, and growing it again would copy it
            // (and could take the buffer past `limit`).
            if self.early.len() == self.early.capacity() {
                if self.early.is_empty() {
                    // A client that sends nothing while it waits holds no
                    // buffer: readiness first, the buffer once bytes (or its
                    // close) are there. In a queue of thousands of silent
                    // clients this is most of what each one costs.
                    if client.readable().await.is_err() {
                        return;
                    }
                }
                let room = self.limit - self.early.len();
                self.early.reserve_exact(room.min(EARLY_CHUNK));
            }
            match client.read_buf(&mut self.early).await {
                Ok(0) if self.early.is_empty() => return,
                Ok(0) => self.half_closed = true,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// Whether the client has sent no byte so far (nothing read, no
    /// half-close after data). Meaningful until `take_early`.
    pub fn sent_nothing(&self) -> bool {
        self.early.is_empty()
    }

    /// The bytes read so far, leaving the watch without a buffer.
    pub fn take_early(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.early)
    }
}

/// Resolves when the client resets, reading nothing: an RST sets the
/// socket's error readiness (EPOLLERR) even while bytes it sent wait unread
/// in the kernel, whereas a half-close (FIN) does not, so a client that sent
/// data and half-closed keeps its place.
async fn reset(client: &TcpStream) {
    // Only an error wakes this (or a failure to wait at all, which is as
    // fatal for the socket).
    let _ = client.ready(Interest::ERROR).await;
}
