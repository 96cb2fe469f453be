//! Admission: which clients are accepted, and when listeners pause.
//!
//! - [`listener`]: the Listener actor, which owns one bound socket and its
//!   accept loop, and what it hands accepted clients to.
//! - [`watchdog`]: the ResourceWatchdog actor (global, frontend and listener
//!   limits, rates, shortages, stress mode) over its plain core ([`core`],
//!   [`rate`], and [`hits`] over [`stress`] and [`throttle`]).
//! - [`protocol`]: what listeners, sessions and the watchdog say to each other.
//! - [`fd_budget`]: how many sessions the process's fd limit allows.
//! - [`gauge`]: live sessions per process, frontend and listener.

pub mod core;
pub mod events;
pub mod fd_budget;
pub mod gauge;
pub mod hits;
pub mod listener;
pub mod protocol;
pub mod rate;
pub mod stress;
pub mod throttle;
pub mod watchdog;

pub use core::{AdmissionConfig, FrontendLimits, ListenerLimits, ListenerState, PauseReason};
pub use events::AdmissionEvent;
pub use gauge::{GaugeTicket, SessionGauge};
pub use listener::Listener;
pub use protocol::StopAccepting;
pub use watchdog::ResourceWatchdog;

// The plain cores and the protocol, named at the root for white-box tests.
#[cfg(feature = "internals")]
pub use {
    core::{AdmissionState, Admitted, LimitHit, Resumed},
    hits::{HitBook, HitEffects},
    protocol::{AdmissionGuard, Admit, AdmitGrant, GiveBack, SessionClosed, Shortage},
    stress::{StressChange, StressState},
    throttle::WarningThrottle,
};
