//! Extension seam: new actor types join through typed messages and
//! `Recipient<M>`, without editing core internals.
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

/// Called once with the addresses of the running actors.
pub type OnStart = Box<dyn FnOnce(crate::broker::BrokerHandle) + Send>;

/// Called once every listener runs, right after the `started` record (the
/// daemon tells systemd `READY=1` from here).
pub type OnReady = Box<dyn FnOnce() + Send>;

/// Actors plugged into a broker at start.
#[derive(Default)]
pub struct Extensions {
    /// Consulted in order for each new client; the first denial wins.
    pub admission: Vec<Recipient<CheckClient>>,
    /// Receives the actors' addresses once they run (admin API, tests).
    pub on_start: Option<OnStart>,
    /// Fired once the broker is listening.
    pub on_ready: Option<OnReady>,
    /// Re-reads the configuration from where it came from, for `Reload`
    /// (SIGHUP, `POST /reload`). Without it a reload is refused.
    pub reload: Option<crate::actors::topology::ConfigLoader>,
}
