//! What the ResourceWatchdog tells observers: listeners paused and resumed
//! (and why), frontends entering and leaving stress mode. The same moments
//! as its log records, typed.

use std::net::SocketAddr;

use super::PauseReason;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionEvent {
    /// A listener stopped accepting: new clients wait in the kernel backlog.
    ListenerPaused { frontend: String, address: SocketAddr, reason: PauseReason },
    /// A paused listener accepts again.
    ListenerResumed { frontend: String, address: SocketAddr },
    /// A frontend with a stress cooldown hit a limit: its sessions run with
    /// the stress timeouts.
    StressEntered { frontend: String, cause: PauseReason },
    /// Its cooldown passed with no new hit.
    StressLeft { frontend: String },
}
