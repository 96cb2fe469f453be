//! Where a listener hands each client it accepted.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use crate::admission::gauge::{GaugeTicket, SessionGauge};
use crate::admission::protocol::AdmissionGuard;

/// What a session holds from its admission until it ends: the watchdog's
/// count (returned by dropping the guard) and the live-session gauges.
pub struct Admitted {
    pub guard: AdmissionGuard,
    /// Process, listener and frontend gauges.
    pub live: [GaugeTicket; 3],
    /// Accepted while the frontend was in stress mode: the session gets the
    /// frontend's stress timeouts for its whole life.
    pub stress: bool,
}

/// Where a listener hands each client it accepted: the session layer
/// implements it, so admission knows nothing of what a session does.
pub trait SessionStarter: Send + Sync + 'static {
    /// Live sessions of the frontend the client is accepted for.
    fn frontend_gauge(&self) -> &Arc<SessionGauge>;

    /// Runs the client's session (on the data plane) until it ends. The
    /// stream is already non-blocking (accepted with `SOCK_NONBLOCK`) and
    /// has `TCP_NODELAY` (from its listener, or set by the accept loop).
    fn start(self: Arc<Self>, stream: TcpStream, client: SocketAddr, admitted: Admitted);
}
