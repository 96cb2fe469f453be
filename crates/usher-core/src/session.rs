//! One client session: admission hooks → reserve a slot (maybe queue) →
//! connect (retries, redispatch) → relay → one access record.
//!
//! Every slot taken is a [`Slot`] value: dropping it releases it, so every
//! exit path — return, `?`, timeout, kill, panic — releases exactly once.
//! Leaving a queue is a [`QueueTicket`] value for the same reason.

mod access;
mod client_watch;
pub mod frontend;
pub mod relay;
mod summary;
pub mod termination;

pub use access::AccessRecord;
pub use frontend::{BackendParams, FrontendContext};
pub use summary::{SessionEnded, SessionSummary};
pub use termination::Termination;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use client_watch::ClientWatch;

use crate::proxy_protocol;
use relay::{relay, RelayEnd, RelayLimits};
use crate::backend::{QueueKey, QueuePlace};
use crate::config::ProxyVersion;
use crate::extension::{CheckClient, Verdict};
use crate::ids::{ServerId, SessionId};
use crate::admission::accept::{Admitted, SessionStarter};
use crate::admission::SessionGauge;
use crate::backend::{CancelReserve, ConnectOutcome, Reserve, ReserveReply, Slot};

/// Longest pause before retrying a server that refused (HAProxy's turn-around).
const MAX_TURNAROUND: Duration = Duration::from_secs(1);

impl SessionStarter for FrontendContext {
    fn frontend_gauge(&self) -> &Arc<SessionGauge> {
        &self.sessions
    }

    fn start(self: Arc<Self>, stream: std::net::TcpStream, client: SocketAddr, admitted: Admitted) {
        // The session future is spawned as it is: wrapping it in another
        // async block would store it twice in the task (an async block keeps
        // its captures beside its awaited future), doubling every idle
        // session's memory.
        self.tracker.clone().spawn(run(self, stream, client, admitted));
    }
}

/// Runs one accepted client to its end and writes its access record.
pub async fn run(front: Arc<FrontendContext>, stream: std::net::TcpStream, client: SocketAddr, admitted: Admitted) {
    let stress = admitted.stress;
    let id = front.next_session();
    let mut record = AccessRecord::new(id.0, client, front.name.clone(), front.backend.name.clone());
    record.stress = stress;
    let timeouts = if stress {
        Timeouts { client: front.stress.client, queue: front.stress.queue }
    } else {
        Timeouts { client: front.client_timeout, queue: front.backend.queue_timeout }
    };
    let end = match prepare(stream) {
        Ok(stream) => drive(&front, id, stream, &mut record, timeouts).await,
        Err(_) => Termination::ClientAbortInQueue,
    };
    // One SessionEnded per session (do_send: one message per session bounds
    // the Stats mailbox), sent before the record is written so that whoever
    // has read the record finds the session counted.
    front.stats.do_send(SessionEnded(record.summary(front.id, front.backend_id, end)));
    record.write(&front.log, end);
    let Admitted { guard, live, .. } = admitted;
    drop(guard);
    drop(live);
}

fn prepare(stream: std::net::TcpStream) -> io::Result<TcpStream> {
    stream.set_nonblocking(true)?;
    let stream = TcpStream::from_std(stream)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The timeouts one session runs with.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    client: Duration,
    queue: Duration,
}

async fn drive(
    front: &FrontendContext,
    id: SessionId,
    mut client: TcpStream,
    record: &mut AccessRecord,
    timeouts: Timeouts,
) -> Termination {
    // accept_proxy: the header's source is the client from here on.
    let mut proxied_to = None;
    if front.accept_proxy {
        // Boxed: the header reader holds a header-sized buffer, and inline it
        // would size every session's future (and idle memory) by it.
        match Box::pin(proxy_protocol::read_header(&mut client, (!front.proxy_timeout.is_zero()).then_some(front.proxy_timeout), &front.kill)).await {
            Ok(Some(addresses)) => {
                record.client = addresses.source;
                proxied_to = Some(addresses.destination);
            }
            Ok(None) => {}
            Err(err) => {
                slog::debug!(front.log, "bad PROXY header";
                    "session" => id.0, "client" => %record.client, "frontend" => &*front.name, "reason" => %err);
                return Termination::BadProxyHeader;
            }
        }
    }
    if let Some(end) = check_admission(front, record).await {
        return end;
    }
    let mut watch = ClientWatch::new(front.bufsize);
    let reserve_started = Instant::now();
    let reserved = reserve(front, id, None, timeouts.queue, &mut client, &mut watch, record).await;
    record.queue_ms = reserve_started.elapsed().as_millis() as i64;
    let mut slot = match reserved {
        Ok(slot) => slot,
        Err(end) => return end,
    };

    let connect_started = Instant::now();
    let mut retries_left = front.backend.retries;
    let mut server = loop {
        record.server = Some(slot.server.name.clone());
        record.server_id = Some(slot.server.id);
        let attempt = tokio::select! {
            r = connect(slot.server.address, front.backend.connect_timeout) => r,
            _ = watch.gone(&mut client) => return Termination::ClientAbortInConnect,
            _ = front.kill.cancelled() => return Termination::KilledInConnect,
        };
        if let Some(observe) = &slot.server.observe {
            // Passive health: one per attempt, bounded by retries + 1.
            observe.do_send(ConnectOutcome { ok: attempt.is_ok() });
        }
        let failure = match attempt {
            Ok(server) => break server,
            Err(failure) => failure,
        };
        if retries_left == 0 {
            return failure;
        }
        retries_left -= 1;
        record.retries += 1;
        if front.backend.redispatch && front.backend.servers > 1 {
            // Leave this server: its slot goes to the next waiter at once.
            let avoid = slot.server.id;
            drop(slot);
            record.redispatched = true;
            slot = match reserve(front, id, Some(avoid), timeouts.queue, &mut client, &mut watch, record).await {
                Ok(slot) => slot,
                Err(end) => return end,
            };
        } else if failure == Termination::ConnectRefused {
            let pause = front.backend.connect_timeout.min(MAX_TURNAROUND);
            let pause = if pause.is_zero() { MAX_TURNAROUND } else { pause };
            tokio::select! {
                _ = sleep(pause) => {}
                _ = watch.gone(&mut client) => return Termination::ClientAbortInConnect,
                _ = front.kill.cancelled() => return Termination::KilledInConnect,
            }
        }
    };
    record.connect_ms = connect_started.elapsed().as_millis() as i64;
    let _ = server.set_nodelay(true);

    if slot.server.send_proxy != ProxyVersion::None {
        let frontend_addr = proxied_to.or_else(|| client.local_addr().ok());
        if proxy_protocol::send_header(&mut server, slot.server.send_proxy, record.client, frontend_addr).await.is_err()
        {
            return Termination::ServerAbortInData;
        }
    }
    // The early bytes' buffer is freed before the relay: a long idle session
    // keeps no memory for its first request.
    let early = watch.take_early();
    if !early.is_empty() {
        if server.write_all(&early).await.is_err() {
            return Termination::ServerAbortInData;
        }
        record.bytes_from_client += early.len() as u64;
    }
    drop(early);
    let limits = RelayLimits {
        client_idle: timeouts.client,
        server_idle: front.backend.server_timeout,
        bufsize: front.bufsize,
        bufsize_max: front.bufsize_max,
    };
    let outcome = relay(&mut client, &mut server, watch.half_closed, limits, &front.kill).await;
    record.bytes_from_client += outcome.from_client;
    record.bytes_from_server += outcome.from_server;
    drop(slot);
    match outcome.end {
        RelayEnd::Done => Termination::Normal,
        RelayEnd::ClientReset => Termination::ClientAbortInData,
        RelayEnd::ServerReset => Termination::ServerAbortInData,
        RelayEnd::ClientIdle => Termination::ClientTimeoutInData,
        RelayEnd::ServerIdle => Termination::ServerTimeoutInData,
        RelayEnd::Killed => Termination::KilledInData,
    }
}

async fn check_admission(front: &FrontendContext, record: &AccessRecord) -> Option<Termination> {
    for checker in &front.admission {
        let check = CheckClient { client: record.client, frontend: front.name.clone() };
        match checker.send(check).await {
            Ok(Verdict::Allow) => {}
            Ok(Verdict::Deny { reason }) => {
                slog::debug!(front.log, "client denied"; "client" => %record.client, "reason" => reason);
                return Some(Termination::DeniedByPolicy);
            }
            // An admission actor that died fails closed: it was meant to filter.
            Err(_) => return Some(Termination::DeniedByPolicy),
        }
    }
    None
}

async fn connect(address: SocketAddr, limit: Duration) -> Result<TcpStream, Termination> {
    let attempt = TcpStream::connect(address);
    let result = if limit.is_zero() {
        attempt.await
    } else {
        match timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => return Err(Termination::ConnectTimeout),
        }
    };
    result.map_err(|_| Termination::ConnectRefused)
}

/// Removes the session from its queue when dropped while still armed (the
/// session was killed or its task aborted while waiting).
struct QueueTicket {
    session: SessionId,
    cancel: Option<Recipient<CancelReserve>>,
}

impl QueueTicket {
    fn disarm(&mut self) {
        self.cancel = None;
    }

    /// Leaves the queue now; the answer to the `Reserve` follows.
    fn leave(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            // do_send: one CancelReserve per Reserve bounds the mailbox.
            cancel.do_send(CancelReserve { session: self.session });
        }
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        // Drop cannot await: nobody hears the answer.
        self.leave();
    }
}

/// Keeps where the session waited in its access record (HAProxy's
/// `srv_queue`/`backend_queue`), however it left the queue.
fn record_place(record: &mut AccessRecord, queued: Option<QueuePlace>) {
    match queued {
        Some(QueuePlace { server_queue: true, position }) => record.server_queue_pos = i64::from(position),
        Some(QueuePlace { server_queue: false, position }) => record.backend_queue_pos = i64::from(position),
        None => {}
    }
}

/// Asks the backend for a slot and waits for it, watching the client, the
/// queue timeout and shutdown.
///
/// Exactly one answer comes per `Reserve`. A session that stops waiting on
/// its own (client gone, queue timeout) sends `CancelReserve` and still
/// reads that answer: `Left` with its place in the queue, or a grant or
/// refusal the backend sent first. A grant that raced the queue timeout is
/// used rather than wasted; one that raced a leaving client is released.
async fn reserve(
    front: &FrontendContext,
    id: SessionId,
    avoid: Option<ServerId>,
    queue_timeout: Duration,
    client: &mut TcpStream,
    watch: &mut ClientWatch,
    record: &mut AccessRecord,
) -> Result<Slot, Termination> {
    let (tx, mut rx) = oneshot::channel();
    // do_send on the per-connection path: at most one Reserve per session
    // is in flight, so the mailbox is bounded by live sessions.
    let key = QueueKey {
        class: front.priority_class,
        time_ms: record.accepted.duration_since(front.epoch).as_millis() as i64 + front.priority_offset_ms,
        seq: id.0,
    };
    let client_ip = record.client.ip();
    front.reserve.do_send(Reserve { session: id, key, client: client_ip, pin: None, avoid, reply: tx });
    let mut ticket = QueueTicket { session: id, cancel: Some(front.cancel.clone()) };
    let deadline = (!queue_timeout.is_zero()).then(|| Instant::now() + queue_timeout);

    let leaving = tokio::select! {
        reply = &mut rx => {
            ticket.disarm();
            return answered(record, reply, None);
        }
        _ = watch.gone(client) => Termination::ClientAbortInQueue,
        _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Termination::QueueTimeout,
        // The ticket's drop leaves the queue.
        _ = front.kill.cancelled() => return Err(Termination::KilledInQueue),
    };
    ticket.leave();
    let reply = tokio::select! {
        reply = rx => reply,
        _ = front.kill.cancelled() => return Err(Termination::KilledInQueue),
    };
    let result = answered(record, reply, Some(leaving));
    if leaving == Termination::ClientAbortInQueue {
        // A raced grant is dropped here: its slot goes back.
        return Err(leaving);
    }
    result
}

/// What an answer to `Reserve` means for the session; `leaving` is why it
/// had already left the queue, if it had.
fn answered(
    record: &mut AccessRecord,
    reply: Result<ReserveReply, oneshot::error::RecvError>,
    leaving: Option<Termination>,
) -> Result<Slot, Termination> {
    match reply {
        Ok(ReserveReply::Granted { slot, queued }) => {
            record_place(record, queued);
            Ok(slot)
        }
        Ok(ReserveReply::Left { queued }) => {
            record_place(record, Some(queued));
            Err(leaving.unwrap_or(Termination::Internal))
        }
        Ok(ReserveReply::Full) => Err(Termination::QueueFull),
        Ok(ReserveReply::NoServer { queued }) => {
            record_place(record, queued);
            Err(Termination::NoServer)
        }
        // The BackendQueue stopped (shutdown) without answering.
        Err(_) => Err(leaving.unwrap_or(Termination::Internal)),
    }
}

#[cfg(test)]
mod size_probe {
    use super::*;
    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<FrontendContext>, std::net::TcpStream, SocketAddr, Admitted) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }
    #[test]
    fn print_size() {
        eprintln!("SESSION FUTURE SIZE = {}", size_of_future(run));
    }
}
