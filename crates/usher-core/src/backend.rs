//! One backend: its servers' slots, its queues, its balancing and its health
//! checks.
//!
//! - [`protocol`]: what sessions, Servers and the BackendQueue say to each
//!   other (`Reserve`, `Release`, `Dequeue`, the [`Slot`] a grant hands out).
//! - [`core`]: the BackendQueue's bookkeeping as a plain struct, with no
//!   actix: who gets a slot, who waits, who is refused.
//! - [`queue_core`]: the BackendQueue's protocol over it, with no actix:
//!   answers each message's waiters (generic [`Waiter`]s), re-offers the
//!   slot of a gone one, settles, applies reloads, retires.
//! - [`backend_queue`]: the BackendQueue actor, which only forwards messages
//!   to the queue core.
//! - [`server`]: the Server actor (one upstream: its slot count, health,
//!   admin state) over [`server_state`] and [`health`].
//! - [`balance`]: the balancing algorithms; [`wait_queue`]: the queues;
//!   [`discipline`]: who they serve next and who they shed under overload;
//!   [`limit`]: the configuration's "0 means unlimited" as a type;
//!   [`spawn_gate`]: which process slots of a spawned backend take sessions;
//!   [`connect_reports`]: which connect outcomes sessions report for passive
//!   health.

pub mod backend_queue;
pub mod balance;
pub mod connect_reports;
pub mod core;
pub mod discipline;
pub mod health;
pub mod limit;
pub mod load;
pub mod protocol;
pub mod queue_core;
pub mod server;
pub mod server_queues;
pub mod server_state;
pub mod spawn_gate;
pub mod wait_queue;

pub use backend_queue::BackendQueue;
pub use connect_reports::ConnectReports;
pub use load::BackendLoad;
pub use core::{
    BackendSetup, BackendState, Grant, QueuePlace, Refusal, ReserveRequest, Reserved, ServerSetup, ServerStatus,
};
pub use health::{AdminState, CheckResult, HealthConfig, OpState, ServerHealth, Transition};
pub use queue_core::{After, Answer, BackendReconfig, BalancerUpdate, Gone, QueueCore, Waiter};
pub use protocol::{
    CancelReserve, ConnectOutcome, Dequeue, Release, Reserve, ReserveReply, ServerInfo, ServerStatusChanged, Slot,
    SourceLeft, ConnectTimed,
};
pub use server::{Server, ServerStateChange};
pub use server_state::ServerState;
pub use wait_queue::QueueKey;
