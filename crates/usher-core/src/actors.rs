//! The control plane: one actor type per owner of state. All of them run on
//! the System arbiter (one thread), so actor-to-actor hops are same-thread;
//! each is a thin shell around a plain struct in [`crate::bookkeeping`].

pub mod backend_queue;
pub mod listener;
pub mod server;
pub mod stats;
pub mod topology;
pub mod watchdog;

pub use backend_queue::BackendQueue;
pub use listener::Listener;
pub use server::Server;
pub use stats::Stats;
pub use topology::Topology;
pub use watchdog::ResourceWatchdog;

/// Mailbox capacity set on every actor. actix only enforces it for
/// `try_send`; the real bound is by construction (see [`crate::messages`]).
pub const MAILBOX_CAPACITY: usize = 1024;
