//! Servers from DNS: a server configured by host name, and server templates
//! that make one server per address a name resolves to (HAProxy's
//! `server-template` with `resolvers`, Envoy's STRICT_DNS clusters).
//!
//! - [`answer`]: what one resolution found (`Answer`, `Target`).
//! - [`resolution`]: the last known answer of every name and the stable
//!   slot of every address (so an address keeps its server's name, and with
//!   it its live sessions and stats), and the expansion of the declared
//!   settings into the settings in force. A plain struct, no actix.
//! - [`schedule`]: when each name is resolved next (the interval, or the
//!   record's TTL when shorter, never below `schedule::TTL_FLOOR`). Plain too.
//! - [`resolver`] and [`task`]: the resolutions themselves, through
//!   hickory-resolver, on a thread of their own with a timeout each, so a
//!   DNS server that answers garbage, slowly or not at all never holds up
//!   a session or an actor. The task only reports answers; the broker's
//!   Topology applies them exactly as a reload of the backend.

pub mod answer;
pub mod resolution;
pub mod resolver;
pub mod schedule;
pub mod task;

pub use resolution::{Resolutions, SourceReport, SourceState};
pub use task::{start, DiscoveryPlan, Resolved};
