//! The data plane: tokio tasks on `global.workers` threads. Bytes live here
//! only; actors see messages about slots, never data.
//!
//! - [`accept`]: one accept loop per listener, admitted by the watchdog.
//! - [`session`]: one task per client: reserve → queue → connect → relay.
//! - [`client_watch`]: notices a client leaving while it waits.
//! - [`relay`]: byte-exact copy both ways with half-close and idle timeouts.
//! - [`proxy_protocol`]: PROXY v1/v2 headers read from clients, sent to servers.

pub mod accept;
pub mod client_watch;
pub mod frontend;
pub mod proxy_protocol;
pub mod relay;
pub mod session;

pub use frontend::{BackendParams, FrontendContext};
