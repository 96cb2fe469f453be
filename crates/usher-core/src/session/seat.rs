//! Seat: a slot on a server, from the backend's queue. The session may
//! wait there; meanwhile the client is watched, and the queue timeout and
//! shutdown can end the wait.

use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

use actix::Recipient;

use super::{AccessRecord, Session, Termination};
use crate::backend::{CancelReserve, QueueKey, QueuePlace, Reserve, ReserveReply, Slot};
use crate::ids::{ServerId, SessionId};

impl Session<'_> {
    /// The session's first slot; the time it took is its queue wait.
    pub(super) async fn seat(&mut self) -> Result<Slot, Termination> {
        let started = Instant::now();
        let reserved = self.reserve(Want::First).await;
        self.record.queue_wait = Some(started.elapsed());
        self.record.seated_on = reserved.as_ref().ok().map(|slot| slot.server.id);
        reserved
    }

    /// Asks the backend for the slot the session wants and waits for it,
    /// watching the client, the queue timeout and shutdown.
    ///
    /// Exactly one answer comes per `Reserve`. A session that stops waiting
    /// on its own (client gone, queue timeout) sends `CancelReserve` and
    /// still reads that answer: `Left` with its place in the queue, or a
    /// grant or refusal the backend sent first. A grant that raced the
    /// queue timeout is used rather than wasted; one that raced a leaving
    /// client is released.
    pub(super) async fn reserve(&mut self, want: Want) -> Result<Slot, Termination> {
        let front = self.front;
        let (tx, mut rx) = oneshot::channel();
        let priority = self.priority;
        self.record.priority_class = priority.class;
        let key = QueueKey {
            class: priority.class,
            time_ms: self.record.accepted.duration_since(front.handles.epoch).as_millis() as i64 + priority.offset_ms,
            seq: self.id.0,
        };
        let (key, pin, avoid) = match want {
            Want::First => (key, None, None),
            Want::Again(server) => (key.for_retry(), Some(server), None),
            Want::Elsewhere(server) => (key.for_retry(), None, Some(server)),
        };
        // A hook may have named the address to hash and cap it under.
        let client = self.hooked.as_ref().and_then(|h| h.pin).unwrap_or(self.record.client.ip());
        // do_send on the per-connection path: at most one Reserve per
        // session is in flight, so the mailbox is bounded by live sessions.
        let backend = self.backend;
        backend.reserve.do_send(Reserve { session: self.id, key, client, pin, avoid, reply: tx });
        let mut ticket = QueueTicket { session: self.id, cancel: Some(&backend.cancel) };
        // Only whether there is one outlives the select's start: a deadline
        // kept in scope would be kept in every queued client's task.
        let (timed, timeout) = {
            let deadline = self.timeouts.queue.and_then(|limit| Instant::now().checked_add(limit));
            (deadline.is_some(), sleep_until(deadline.unwrap_or_else(Instant::now)))
        };

        let leaving = tokio::select! {
            reply = &mut rx => {
                ticket.disarm();
                return answered(self.record, reply, None).map_err(|t| backend.refusal(t));
            }
            _ = self.watch.gone(&mut self.client) => Termination::ClientAbortInQueue,
            _ = timeout, if timed => Termination::QueueTimeout,
            // The ticket's drop leaves the queue.
            _ = front.handles.kill.cancelled() => return Err(Termination::KilledInQueue),
        };
        ticket.leave();
        let reply = tokio::select! {
            reply = rx => reply,
            _ = front.handles.kill.cancelled() => return Err(Termination::KilledInQueue),
        };
        let result = answered(self.record, reply, Some(leaving)).map_err(|t| backend.refusal(t));
        if leaving == Termination::ClientAbortInQueue {
            // A raced grant is dropped here: its slot goes back. Decided
            // after the answer, which says whether the session had queued.
            return Err(self.client_left(leaving));
        }
        result
    }
}

/// Which slot a session asks for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Want {
    /// Its first slot, on whichever server balancing picks.
    First,
    /// A retry on the server whose connect failed (after its turn-around
    /// pause), ahead of the sessions waiting for the first time.
    Again(ServerId),
    /// A retry on any other usable server (`redispatch`), ahead of the
    /// sessions waiting for the first time.
    Elsewhere(ServerId),
}

/// Removes the session from its queue when dropped while still armed (the
/// session was killed or its task aborted while waiting). It borrows the
/// frontend's recipient: cloning an actix `Recipient` allocates twice, on
/// every session's path.
struct QueueTicket<'a> {
    session: SessionId,
    cancel: Option<&'a Recipient<CancelReserve>>,
}

impl QueueTicket<'_> {
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

impl Drop for QueueTicket<'_> {
    fn drop(&mut self) {
        // Drop cannot await: nobody hears the answer.
        self.leave();
    }
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
        Ok(ReserveReply::SourceFull) => Err(Termination::SourceQueueFull),
        Ok(ReserveReply::SourceBusy) => Err(Termination::SourceLiveFull),
        Ok(ReserveReply::Shed { queued }) => {
            record_place(record, Some(queued));
            Err(Termination::QueueShed)
        }
        Ok(ReserveReply::NoServer { queued }) => {
            record_place(record, queued);
            Err(Termination::NoServer)
        }
        // The BackendQueue stopped (shutdown) without answering.
        Err(_) => Err(leaving.unwrap_or(Termination::Internal)),
    }
}

/// Keeps where the session waited in its access record (HAProxy's
/// `srv_queue`/`backend_queue`), however it left the queue.
fn record_place(record: &mut AccessRecord, queued: Option<QueuePlace>) {
    match queued {
        Some(QueuePlace { server_queue: true, position }) => record.server_queue_pos = Some(position),
        Some(QueuePlace { server_queue: false, position }) => record.backend_queue_pos = Some(position),
        None => {}
    }
}
