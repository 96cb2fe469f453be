//! Connect: reach the server of the slot, with retries. After a failed
//! attempt the session either moves to another server (`redispatch`: its
//! slot goes to the next waiter at once) or, refused, pauses before trying
//! the same server again (HAProxy's turn-around).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use super::{Session, Termination};
use crate::backend::{ConnectOutcome, Slot};

/// Longest pause before retrying a server that refused (HAProxy's turn-around).
const MAX_TURNAROUND: Duration = Duration::from_secs(1);

impl Session<'_> {
    /// Connects to the server of `slot`, retrying as the backend says; the
    /// slot returned is the one whose server answered. The time it took,
    /// retries included, is the session's connect time.
    pub(super) async fn connect(&mut self, mut slot: Slot) -> Result<(Slot, TcpStream), Termination> {
        let policy = self.front.settings.connect;
        let started = Instant::now();
        let mut retries_left = policy.retries;
        loop {
            self.record.server = Some(slot.server.name.clone());
            self.record.server_id = Some(slot.server.id);
            let attempt = self.watching_client(attempt(slot.server.address, policy.timeout)).await?;
            if let Some(observe) = &slot.server.observe {
                // Passive health: one per attempt, bounded by retries + 1.
                observe.do_send(ConnectOutcome { ok: attempt.is_ok() });
            }
            let failure = match attempt {
                Ok(server) => {
                    self.record.connect_time = Some(started.elapsed());
                    let _ = server.set_nodelay(true);
                    return Ok((slot, server));
                }
                Err(failure) => failure,
            };
            if retries_left == 0 {
                return Err(failure);
            }
            retries_left -= 1;
            self.record.retries += 1;
            if policy.redispatch {
                let avoid = slot.server.id;
                drop(slot);
                self.record.redispatched = true;
                slot = self.reserve(Some(avoid)).await?;
            } else if failure == Termination::ConnectRefused {
                let pause = policy.timeout.map_or(MAX_TURNAROUND, |limit| limit.min(MAX_TURNAROUND));
                self.watching_client(sleep(pause)).await?;
            }
        }
    }

    /// Runs one step of connecting unless the client leaves or shutdown
    /// comes first.
    async fn watching_client<T>(&mut self, step: impl Future<Output = T>) -> Result<T, Termination> {
        tokio::select! {
            done = step => Ok(done),
            _ = self.watch.gone(&mut self.client) => Err(Termination::ClientAbortInConnect),
            _ = self.front.handles.kill.cancelled() => Err(Termination::KilledInConnect),
        }
    }
}

/// One connection attempt, within `limit`.
async fn attempt(address: SocketAddr, limit: Option<Duration>) -> Result<TcpStream, Termination> {
    let connecting = TcpStream::connect(address);
    let result = match limit {
        None => connecting.await,
        Some(limit) => match timeout(limit, connecting).await {
            Ok(result) => result,
            Err(_) => return Err(Termination::ConnectTimeout),
        },
    };
    result.map_err(|_| Termination::ConnectRefused)
}
