//! What a session reports when it ends, besides its access record.

use std::time::Duration;

use actix::prelude::*;

use super::termination::Termination;
use crate::admission::protocol::AdmissionGuard;
use crate::backend::Slot;
use crate::ids::{BackendId, FrontendId, ServerId};

/// What the Stats actor learns of one ended session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSummary {
    pub frontend: FrontendId,
    /// The backend it was admitted to.
    pub backend: BackendId,
    /// The server it ended on, if one was reached (index in its backend).
    pub server: Option<ServerId>,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    pub retries: u32,
    pub redispatched: bool,
    pub termination: Termination,
    /// Time it waited for its first slot, if it asked for one (the access
    /// record's `queue_ms`).
    pub queue_wait: Option<Duration>,
    /// The priority class it queued in (`frontends.X.priority_class`).
    pub priority_class: i32,
    /// The server its first slot was on, if it got one: its queue wait
    /// counts in that server's waits too (the pinned waits of hashing).
    pub seated_on: Option<ServerId>,
    /// The routing rule that chose its backend, if one did.
    pub route: Option<usize>,
    /// That rule's backend was too busy: it went to the rule's overflow.
    pub spilled: bool,
}

/// One session ended (sent once per session, before its access record).
///
/// It carries what the session still holds, so that the holdings are let
/// go where the message is handled — on the actors' thread — and their
/// `Release` and `SessionClosed` are sent from there. Sent from a
/// data-plane thread, each message to another actor wakes the actors'
/// thread again (one eventfd write and often one context switch each); in
/// one message, a session's end wakes it once. Wherever the message is
/// dropped instead (a closed mailbox), the holdings are let go there:
/// exactly once either way.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionEnded {
    pub summary: SessionSummary,
    pub(crate) holdings: Holdings,
}

/// What a session holds until it has ended: dropping it gives back the
/// slot (one `Release`, and its source's `SourceLeft`) and the admission
/// (one `SessionClosed`).
pub struct Holdings {
    /// The slot it relayed on; `None` when it ended before being seated or
    /// gave its slot back on the way (a failed connect).
    pub(super) slot: Option<Slot>,
    pub(super) admission: AdmissionGuard,
}

impl Holdings {
    /// Gives back the slot (the server's next client may be seated), then
    /// the admission (the listener may accept one more).
    pub(crate) fn let_go(self) {
        let Holdings { slot, admission } = self;
        drop(slot);
        drop(admission);
    }
}

impl std::fmt::Debug for Holdings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holdings").field("slot", &self.slot).finish_non_exhaustive()
    }
}
