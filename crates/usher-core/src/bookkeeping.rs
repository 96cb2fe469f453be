//! The bookkeeping of each actor as a plain struct with no actix in it.
//!
//! Actors are thin: they receive a message, call one method here, and send
//! what the method returns. Everything that decides — who gets a slot, who
//! waits, when a listener pauses — lives here, where seeded random
//! interleavings (proptest, `tests` below each module and in
//! `tests/bookkeeping_model.rs`) check the invariants of `design.md` after
//! every step.

pub mod admission_state;
pub mod backend_state;
pub mod rate;
pub mod server_health;
pub mod server_state;
pub mod stats;
pub mod stress;
pub mod throttle;
pub mod wait_queue;

pub use admission_state::{
    AdmissionConfig, AdmissionState, Admitted, FrontendLimits, LimitHit, ListenerLimits, ListenerState, PauseReason,
    Resumed,
};
pub use backend_state::{
    BackendSetup, BackendState, Grant, QueuePlace, Refusal, ReserveRequest, Reserved, ServerSetup, ServerStatus,
};
pub use server_health::{AdminState, HealthConfig, OpState, ServerHealth, Transition};
pub use server_state::ServerState;
pub use stress::{StressChange, StressState};
pub use throttle::WarningThrottle;
pub use wait_queue::{QueueKey, WaitQueue};
