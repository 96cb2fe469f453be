//! What a session reports when it ends, besides its access record.

use std::time::Duration;

use actix::prelude::*;

use super::termination::Termination;
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
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SessionEnded(pub SessionSummary);
