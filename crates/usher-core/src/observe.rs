//! Observing the broker: the logger, and the Stats actor with its plain
//! counters ([`stats_book`]).

pub mod logger;
pub mod stats;
pub mod stats_book;

pub use logger::{logger, LogGuard};
pub use stats::Stats;
