//! Watching a client that waits (queued or connecting).
//!
//! HAProxy's TCP default (`option abortonclose` off): a client that resets,
//! or closes without having sent anything, has left — it leaves the queue at
//! once (`CQ`). A client that sent data and then half-closed still wants its
//! answer: it stays queued, and its bytes and its half-close reach the
//! server once connected.
//!
//! The watch reads nothing: it waits for the socket's read readiness and
//! leaves the bytes in the socket, where the relay reads them like any
//! others. So a waiting client holds no buffer in the broker — in a queue
//! of thousands that is most of what each one would cost — and a client
//! that sends at once (the common case) costs no allocation for its first
//! bytes before it is seated. Once a byte was seen the client is still
//! watched, for a reset only: its socket's error readiness. So a client
//! that sent its request and then reset leaves at once rather than at
//! `timeout.queue`.
//!
//! Readiness alone tells "sent something" when the socket is readable and
//! not read-closed (no FIN, no RST: bytes are what woke it), and nothing
//! was read from it before: then no system call is made, which is the
//! common path (a client that sends its request and waits). A readiness
//! that also says closed (data then FIN, FIN alone, RST) is told apart by
//! peeking at one byte, as is any readiness once a PROXY header was read
//! (a read that took the header's last bytes leaves the readiness set
//! whether or not more came).

use std::future::poll_fn;

use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;

/// What a waiting client has sent so far: the bytes routing read (a
/// ClientHello), and whether it sent anything or half-closed.
#[derive(Default)]
pub struct ClientWatch {
    /// Bytes read before the session was seated (only routing reads them);
    /// forwarded to the server before the relay.
    pub early: Vec<u8>,
    pub half_closed: bool,
    /// The client sent bytes that are still in its socket, unread.
    pending: bool,
    /// Bytes were read from the socket before the watch (a PROXY header),
    /// so its read readiness may be left over from them.
    read_before: bool,
}

impl ClientWatch {
    /// Resolves only when the client has left. Cancel-safe: it reads
    /// nothing, and what it learnt (bytes are there) is kept.
    ///
    /// Waiting for readiness clears nothing, so the relay's first read
    /// finds the bytes at once.
    pub async fn gone(&mut self, client: &mut TcpStream) {
        if !self.sent_nothing() || self.half_closed {
            return reset(client).await;
        }
        // A failure to wait at all is as fatal for the socket as a reset.
        let Ok(ready) = client.ready(Interest::READABLE).await else { return };
        if !self.read_before && ready.is_readable() && !ready.is_read_closed() {
            self.pending = true;
            return reset(client).await;
        }
        // Through `poll_peek`, not `peek().await`: tokio's `peek` future
        // is most of this watch's size, and the watch is part of every
        // queued client's task.
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        match poll_fn(|cx| client.poll_peek(cx, &mut probe)).await {
            // Closed, or reset, having sent nothing: gone.
            Ok(0) | Err(_) => {}
            Ok(_) => {
                self.pending = true;
                reset(client).await
            }
        }
    }

    /// Bytes were read from the client's socket before it waits (its PROXY
    /// header): its readiness no longer says on its own that more came.
    pub fn read_before(&mut self) {
        self.read_before = true;
    }

    /// Whether the client has sent no byte so far. Meaningful until
    /// `take_early`.
    pub fn sent_nothing(&self) -> bool {
        self.early.is_empty() && !self.pending
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
