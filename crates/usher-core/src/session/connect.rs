//! Connect: reach the server of the slot, with retries. After a failed
//! attempt the session gives its slot back at once, then either asks for
//! one on another server (`redispatch`) or, refused, pauses (HAProxy's
//! turn-around) and asks for one on the same server again. Its retry goes
//! ahead of the sessions waiting for the first time, but the slot is never
//! held through a pause: the next waiter may try meanwhile, and each
//! failure it sees teaches the server's state (a dead server goes DOWN
//! after a few failed connects and its queue is refused or redispatched at
//! once instead of draining one retry at a time).

use std::future::Future;
use std::pin::{pin, Pin};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use super::seat::Want;
use super::{Session, Termination};
use crate::backend::{ConnectTimed, Slot};
use crate::net::connect_nodelay;

/// Longest pause before retrying a server that refused (HAProxy's turn-around).
const MAX_TURNAROUND: Duration = Duration::from_secs(1);

impl Session<'_> {
    /// Connects to the server of `slot`, retrying as the backend says; the
    /// slot returned is the one whose server answered. The time it took,
    /// retries included, is the session's connect time.
    pub(super) async fn connect(&mut self, mut slot: Slot) -> Result<(Slot, TcpStream), Termination> {
        let policy = self.backend.connect;
        let started = Instant::now();
        let mut retries_left = policy.retries;
        loop {
            self.record.server = Some(slot.server.name.clone());
            self.record.server_id = Some(slot.server.id);
            // Timed only for a balancer that learns from connect times.
            let attempt_started = slot.server.connect_times.as_ref().map(|_| Instant::now());
            let attempt = self.watching_client(pin!(attempt(slot.server.address, policy.timeout))).await?;
            if let Some(observe) = &slot.server.observe {
                // Passive health; a success is sent only when it resets.
                observe.report(attempt.is_ok());
            }
            let failure = match attempt {
                Ok(server) => {
                    if let (Some(report), Some(at)) = (&slot.server.connect_times, attempt_started) {
                        // One per session: bounded like its Release.
                        report.do_send(ConnectTimed { server: slot.server.id, connect_time: at.elapsed() });
                    }
                    self.record.connect_time = Some(started.elapsed());
                    return Ok((slot, server));
                }
                Err(failure) => failure,
            };
            if retries_left == 0 {
                return Err(failure);
            }
            retries_left -= 1;
            self.record.retries += 1;
            let failed = slot.server.id;
            // The session still counts for its source while it retries
            // (`queue.per_source.max_live`): the ticket outlives the slot
            // until the retry is answered, so a new session of that source
            // cannot take its place in between.
            let _counted = slot.take_ticket();
            drop(slot);
            let want = if policy.redispatch {
                self.record.redispatched = true;
                Want::Elsewhere(failed)
            } else {
                if failure == Termination::ConnectRefused {
                    let pause = policy.timeout.map_or(MAX_TURNAROUND, |limit| limit.min(MAX_TURNAROUND));
                    self.watching_client(pin!(sleep(pause))).await?;
                }
                Want::Again(failed)
            };
            slot = self.reserve(want).await.map_err(|end| retry_refused(end, failure))?;
        }
    }

    /// Runs one step of connecting unless the client leaves or shutdown
    /// comes first. The step comes pinned by the caller: taken by value,
    /// it would be stored twice in this future (as its argument, and moved
    /// into the `select!`), and the seated phases' box — what an idle
    /// session keeps — is as large as this state.
    async fn watching_client<T>(&mut self, step: Pin<&mut impl Future<Output = T>>) -> Result<T, Termination> {
        tokio::select! {
            done = step => Ok(done),
            _ = self.watch.gone(&mut self.client) => Err(self.client_left(Termination::ClientAbortInConnect)),
            _ = self.front.handles.kill.cancelled() => Err(Termination::KilledInConnect),
        }
    }
}

/// How a retry that got no slot ends, in connect terms: with no usable
/// server left (the failed one went DOWN meanwhile) the session ends with
/// its own last failure; a client that left or a shutdown while it waited
/// for the retry's slot ended it while connecting.
fn retry_refused(end: Termination, failure: Termination) -> Termination {
    match end {
        Termination::NoServer => failure,
        Termination::ClientAbortInQueue => Termination::ClientAbortInConnect,
        Termination::KilledInQueue => Termination::KilledInConnect,
        other => other,
    }
}

/// One connection attempt, within `limit`; the socket has `TCP_NODELAY`.
async fn attempt(address: SocketAddr, limit: Option<Duration>) -> Result<TcpStream, Termination> {
    let connecting = connect_nodelay(address);
    let result = match limit {
        None => connecting.await,
        Some(limit) => match timeout(limit, connecting).await {
            Ok(result) => result,
            Err(_) => return Err(Termination::ConnectTimeout),
        },
    };
    result.map_err(|_| Termination::ConnectRefused)
}
