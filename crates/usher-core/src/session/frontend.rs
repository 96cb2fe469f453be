//! What every session of one frontend shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use slog::Logger;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::SessionEnded;
use crate::admission::SessionGauge;
use crate::config::StressTimeouts;
use crate::extension::CheckClient;
use crate::ids::{BackendId, FrontendId, SessionId};
use crate::backend::{CancelReserve, Reserve};

/// The backend settings a session needs, copied once per frontend.
#[derive(Debug, Clone)]
pub struct BackendParams {
    pub name: Arc<str>,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    pub server_timeout: Duration,
    pub retries: u32,
    pub redispatch: bool,
    pub servers: usize,
}

pub struct FrontendContext {
    pub id: FrontendId,
    pub name: Arc<str>,
    pub client_timeout: Duration,
    /// Timeouts of sessions accepted in stress mode.
    pub stress: StressTimeouts,
    pub bufsize: usize,
    /// Most a streaming direction's relay buffer grows to (≥ `bufsize`).
    pub bufsize_max: usize,
    pub backend: BackendParams,
    /// The backend's id: its sessions count there in stats even if a
    /// reload points the frontend at another backend meanwhile.
    pub backend_id: BackendId,
    pub reserve: Recipient<Reserve>,
    pub cancel: Recipient<CancelReserve>,
    /// The Stats actor: one `SessionEnded` per session.
    pub stats: Recipient<SessionEnded>,
    /// Live sessions of this frontend (and their peak), for stats.
    pub sessions: Arc<SessionGauge>,
    pub admission: Vec<Recipient<CheckClient>>,
    pub log: Logger,
    /// Cancelled when `global.grace` ran out: live sessions close.
    pub kill: CancellationToken,
    /// Every session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub session_ids: Arc<AtomicU64>,
    /// When the broker started: queue keys count time from here.
    pub epoch: tokio::time::Instant,
    /// `frontends.X.priority_class`: lower classes are served first.
    pub priority_class: i32,
    /// `frontends.X.priority_offset` in ms: added to the arrival time.
    pub priority_offset_ms: i64,
    /// `frontends.X.accept_proxy`: clients start with a PROXY header.
    pub accept_proxy: bool,
    /// `frontends.X.timeout.proxy`: time to read that header (zero = none).
    pub proxy_timeout: Duration,
}

impl FrontendContext {
    pub fn next_session(&self) -> SessionId {
        SessionId(self.session_ids.fetch_add(1, Ordering::Relaxed))
    }
}
