//! Listener: one bound socket, from "listening" to "listener closed".
//!
//! - [`actor`]: the Listener actor, which owns the socket's lifecycle
//!   (bound, listening, closed) and stops it on `StopAccepting`.
//! - [`accept_loop`]: what accepts clients — a task on the data plane, where
//!   the sessions it starts run too, so accepting never hops threads.
//! - [`handoff`]: what an accepted client is handed to ([`SessionStarter`],
//!   implemented by the session layer) and what it holds ([`Admitted`]).

mod accept_loop;
mod actor;
mod handoff;

pub use actor::{Listener, ListenerWiring};
pub use handoff::{Admitted, SessionStarter};
