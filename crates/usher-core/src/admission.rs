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
pub mod fd_budget;
pub mod gauge;
pub mod hits;
pub mod listener;
pub mod protocol;
pub mod rate;
pub mod stress;
pub mod throttle;
pub mod watchdog;

pub use core::{
    AdmissionConfig, AdmissionState, Admitted, FrontendLimits, LimitHit, ListenerLimits, ListenerState, PauseReason,
    Resumed,
};

pub use gauge::{GaugeTicket, SessionGauge};
pub use hits::{HitBook, HitEffects};
pub use listener::Listener;
pub use protocol::{AdmissionGuard, Admit, AdmitGrant, GiveBack, SessionClosed, Shortage, StopAccepting};
pub use stress::{StressChange, StressState};
pub use throttle::WarningThrottle;
pub use watchdog::ResourceWatchdog;
