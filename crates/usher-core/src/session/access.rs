//! The access record: one per session, written when it ends, message
//! `"session"`. Field names are an API (README, "Log fields").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use slog::{info, Logger};
use tokio::time::Instant;

use super::termination::Termination;
use super::summary::SessionSummary;
use crate::ids::{BackendId, FrontendId, ServerId};
use crate::routing::SpillReason;

/// Collected along a session's life, logged once at its end.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub session: u64,
    pub client: SocketAddr,
    pub frontend: Arc<str>,
    /// The backend that served it: the frontend's, or the one routing chose.
    pub backend: Arc<str>,
    pub backend_id: BackendId,
    /// The routing rule that chose the backend (`None`: no rule matched,
    /// or the frontend has none).
    pub route: Option<usize>,
    /// The rule's backend was too busy: the session went to its overflow.
    pub spilled: Option<SpillReason>,
    /// What became of the ClientHello routing read.
    pub client_hello: HelloStatus,
    /// Final server, if one was reached.
    pub server: Option<Arc<str>>,
    /// Its index in the backend (not logged; for the stats).
    pub server_id: Option<ServerId>,
    pub accepted: Instant,
    /// Time spent waiting for a slot, if it asked for one (`queue_ms`).
    pub queue_wait: Option<Duration>,
    /// The priority class it asked for slots in (not logged; for the stats).
    pub priority_class: i32,
    /// The server of its first slot (not logged; for the stats' per-server
    /// waits).
    pub seated_on: Option<ServerId>,
    /// Time to connect to the final server, retries included, if it
    /// connected (`connect_ms`).
    pub connect_time: Option<Duration>,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    pub retries: u32,
    pub redispatched: bool,
    /// Sessions already waiting in the server queue when it joined, if it
    /// was queued there.
    pub server_queue_pos: Option<u32>,
    /// Sessions already waiting in the backend queue when it joined, if it
    /// was queued there.
    pub backend_queue_pos: Option<u32>,
    /// Accepted while its frontend was in stress mode (stress timeouts).
    pub stress: bool,
}

impl AccessRecord {
    pub fn new(
        session: u64,
        client: SocketAddr,
        frontend: Arc<str>,
        backend: Arc<str>,
        backend_id: BackendId,
    ) -> AccessRecord {
        AccessRecord {
            session,
            client,
            frontend,
            backend,
            backend_id,
            route: None,
            spilled: None,
            client_hello: HelloStatus::NotRead,
            server: None,
            server_id: None,
            accepted: Instant::now(),
            queue_wait: None,
            priority_class: 0,
            seated_on: None,
            connect_time: None,
            bytes_from_client: 0,
            bytes_from_server: 0,
            retries: 0,
            redispatched: false,
            server_queue_pos: None,
            backend_queue_pos: None,
            stress: false,
        }
    }

    /// What the Stats actor counts of this session.
    pub fn summary(&self, frontend: FrontendId, end: Termination) -> SessionSummary {
        SessionSummary {
            frontend,
            backend: self.backend_id,
            server: self.server_id,
            bytes_from_client: self.bytes_from_client,
            bytes_from_server: self.bytes_from_server,
            retries: self.retries,
            redispatched: self.redispatched,
            termination: end,
            queue_wait: self.queue_wait,
            priority_class: self.priority_class,
            seated_on: self.seated_on,
            route: self.route,
            spilled: self.spilled.is_some(),
        }
    }

    pub fn write(&self, log: &Logger, end: Termination) {
        let total_ms = millis(self.accepted.elapsed());
        // slog-term prints fields last-to-first: listed in reverse so that
        // people read them session → termination. JSON order is irrelevant.
        info!(log, "session";
            "termination" => end.code(),
            "client_hello" => self.client_hello.as_str(),
            "spill" => self.spilled.map_or("-", SpillReason::as_str),
            "route" => or_minus_one(self.route.map(|i| i as i64)),
            "stress" => self.stress,
            "backend_queue_pos" => or_minus_one(self.backend_queue_pos.map(i64::from)),
            "server_queue_pos" => or_minus_one(self.server_queue_pos.map(i64::from)),
            "redispatched" => self.redispatched,
            "retries" => self.retries,
            "bytes_from_server" => self.bytes_from_server,
            "bytes_from_client" => self.bytes_from_client,
            "total_ms" => total_ms,
            "connect_ms" => or_minus_one(self.connect_time.map(millis)),
            "queue_ms" => or_minus_one(self.queue_wait.map(millis)),
            "server" => self.server.as_deref().unwrap_or("-"),
            "backend" => &*self.backend,
            "frontend" => &*self.frontend,
            "client" => %self.client,
            "session" => self.session,
        );
    }
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis() as i64
}

/// The log's way of saying "never": -1.
fn or_minus_one(value: Option<i64>) -> i64 {
    value.unwrap_or(-1)
}

/// What became of the ClientHello a routed session read (`client_hello`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloStatus {
    /// Not read: the frontend has no rule that needs it (`-`).
    NotRead,
    /// A complete ClientHello was read.
    Read,
    /// The client's first byte was not a TLS handshake record.
    NotTls,
    /// TLS records that make no ClientHello, or one over the bound.
    Malformed,
    /// `timeout.inspect` expired first.
    Late,
    /// The client half-closed before its ClientHello was complete.
    Closed,
}

impl HelloStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HelloStatus::NotRead => "-",
            HelloStatus::Read => "read",
            HelloStatus::NotTls => "not_tls",
            HelloStatus::Malformed => "malformed",
            HelloStatus::Late => "timeout",
            HelloStatus::Closed => "closed",
        }
    }
}
