//! Extension seam: new actor types join through typed messages and
//! `Recipient<M>`, without editing core internals. They are plugged in
//! through [`crate::Extensions`] when the broker starts.
//!
//! Today's hook is admission: every accepted client is shown to each
//! registered `Recipient<CheckClient>` before it may reserve a slot; any
//! `Verdict::Deny` closes it (termination `PR`). An extension actor reads
//! its settings from its own free-form table, `[actors.NAME]`
//! (`Settings::actors`). See `examples/deny_list.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;

/// Asked of admission actors for every new client.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Verdict")]
pub struct CheckClient {
    pub client: SocketAddr,
    pub frontend: Arc<str>,
}

/// An admission actor's answer.
#[derive(MessageResponse, Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny { reason: String },
}
