//! Byte-exact relay between client and server.
//!
//! Both directions run in the session's own task. A FIN read on one side is
//! passed on as a write shutdown to the other, and the other direction
//! carries on (half-close). A side is idle when nothing was read from it or
//! written to it for its timeout (`timeout.client`, `timeout.server`); the
//! first side to go idle ends the session.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Zero = no client idle timeout.
    pub client_idle: Duration,
    /// Zero = no server idle timeout.
    pub server_idle: Duration,
    pub bufsize: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions finished with a FIN.
    Done,
    ClientReset,
    ServerReset,
    ClientIdle,
    ServerIdle,
    Killed,
}

#[derive(Debug)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub from_client: u64,
    pub from_server: u64,
}

enum PumpError {
    Read,
    Write,
}

/// Last activity per side, in ms since the relay started.
struct Activity {
    start: Instant,
    client: AtomicU64,
    server: AtomicU64,
}

impl Activity {
    fn touch(&self, side: &AtomicU64) {
        side.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_deadline(&self, side: &AtomicU64, timeout: Duration) -> Option<Instant> {
        if timeout.is_zero() {
            return None;
        }
        Some(self.start + Duration::from_millis(side.load(Ordering::Relaxed)) + timeout)
    }
}

/// Copies one direction until EOF (then half-closes `to`) or an error.
///
/// The buffer exists only while data is in flight: the pump waits for
/// readability with no buffer, allocates `bufsize` (uninitialised, filled by
/// `try_read_buf`), and frees it as soon as the socket has nothing more to
/// read. An idle session therefore holds no relay buffer at all.
async fn pump<W>(
    from: ReadHalf<'_>,
    mut to: W,
    bufsize: usize,
    activity: &Activity,
    read_side: &AtomicU64,
    write_side: &AtomicU64,
    bytes: &AtomicU64,
) -> Result<(), PumpError>
where
    W: AsyncWrite + Unpin,
{
    let source: &TcpStream = from.as_ref();
    let mut buf: Option<Vec<u8>> = None;
    loop {
        if buf.is_none() {
            source.readable().await.map_err(|_| PumpError::Read)?;
        }
        let chunk = buf.get_or_insert_with(|| Vec::with_capacity(bufsize));
        chunk.clear();
        match source.try_read_buf(chunk) {
            Ok(0) => {
                activity.touch(read_side);
                return match to.shutdown().await {
                    Ok(()) => Ok(()),
                    Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(()),
                    Err(_) => Err(PumpError::Write),
                };
            }
            Ok(n) => {
                activity.touch(read_side);
                to.write_all(chunk).await.map_err(|_| PumpError::Write)?;
                activity.touch(write_side);
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            // Drained: free the buffer while waiting for more.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => buf = None,
            Err(_) => return Err(PumpError::Read),
        }
    }
}

/// Relays until both directions are finished, a side resets or idles, or
/// `kill` fires. `client_done` means the client already half-closed (its FIN
/// is passed on to the server first).
pub async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    client_done: bool,
    limits: RelayLimits,
    kill: &CancellationToken,
) -> RelayOutcome {
    let activity = Activity { start: Instant::now(), client: AtomicU64::new(0), server: AtomicU64::new(0) };
    let from_client = AtomicU64::new(0);
    let from_server = AtomicU64::new(0);
    let (cr, mut cw) = client.split();
    let (sr, mut sw) = server.split();

    let mut c2s_done = client_done;
    if client_done && sw.shutdown().await.is_err() {
        return RelayOutcome { end: RelayEnd::ServerReset, from_client: 0, from_server: 0 };
    }
    let c2s = pump(cr, &mut sw, limits.bufsize, &activity, &activity.client, &activity.server, &from_client);
    let s2c = pump(sr, &mut cw, limits.bufsize, &activity, &activity.server, &activity.client, &from_server);
    tokio::pin!(c2s, s2c);
    let mut s2c_done = false;

    let end = loop {
        if c2s_done && s2c_done {
            break RelayEnd::Done;
        }
        let client_deadline = activity.idle_deadline(&activity.client, limits.client_idle);
        let server_deadline = activity.idle_deadline(&activity.server, limits.server_idle);
        let next = [client_deadline, server_deadline].into_iter().flatten().min();
        tokio::select! {
            r = &mut c2s, if !c2s_done => match r {
                Ok(()) => c2s_done = true,
                Err(PumpError::Read) => break RelayEnd::ClientReset,
                Err(PumpError::Write) => break RelayEnd::ServerReset,
            },
            r = &mut s2c, if !s2c_done => match r {
                Ok(()) => s2c_done = true,
                Err(PumpError::Read) => break RelayEnd::ServerReset,
                Err(PumpError::Write) => break RelayEnd::ClientReset,
            },
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                // Deadlines move with activity: re-read them before judging.
                let now = Instant::now();
                if activity.idle_deadline(&activity.client, limits.client_idle).is_some_and(|d| d <= now) {
                    break RelayEnd::ClientIdle;
                }
                if activity.idle_deadline(&activity.server, limits.server_idle).is_some_and(|d| d <= now) {
                    break RelayEnd::ServerIdle;
                }
            },
            _ = kill.cancelled() => break RelayEnd::Killed,
        }
    };
    RelayOutcome {
        end,
        from_client: from_client.load(Ordering::Relaxed),
        from_server: from_server.load(Ordering::Relaxed),
    }
}
