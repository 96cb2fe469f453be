//! L4 routing: which backend serves a session of a frontend with several.
//!
//! Decisions only, in plain structs without actors or sockets, so each is
//! unit-tested on its own:
//!
//! - [`pattern`]: what one condition of a rule matches (SNI names with
//!   `*.suffix` wildcards, destination addresses);
//! - [`table`]: a frontend's rules in order, first match wins, else its
//!   default backend;
//! - [`client_hello`]: reading SNI and ALPN from the bytes a TLS client
//!   sent first, without terminating TLS (the bytes go on to the server);
//! - [`spill`]: whether a rule's backend is too busy, so its session goes
//!   to the rule's overflow backend instead.
//!
//! The session runs them in its `route` phase (`session/route.rs`), before
//! it reserves a slot: a routed client counts only against its own
//! backend's limits.

pub mod client_hello;
pub mod pattern;
pub mod spill;
pub mod table;

pub use client_hello::{ClientHello, HelloRead, MAX_CLIENT_HELLO};
pub use pattern::{DestinationPattern, SniPattern};
pub use spill::{QueueSnapshot, SpillReason, SpillWhen};
pub use table::{ConnectionFacts, NoClientHello, Overflow, RouteRule, RouteTable};
