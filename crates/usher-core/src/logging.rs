//! Logs are an API: constant messages, key-value fields.
//!
//! - [`logger`] builds the root logger from `[log]`.
//! - [`termination`] is the table of termination codes.
//! - [`access`] is the one access record written per session.

pub mod access;
pub mod logger;
pub mod termination;

pub use access::AccessRecord;
pub use logger::{logger, LogGuard};
pub use termination::Termination;
