//! Observing the broker: the logger, and the Stats actor with its plain
//! counters ([`stats_book`]), recent rates and queue-wait histograms.

pub mod chunked_table;
pub mod logger;
pub mod queue_waits;
pub mod recent;
pub mod session_rate;
pub mod stats;
pub mod stats_book;
pub mod wait_histogram;

pub use logger::{logger, LogGuard};
pub use stats::Stats;
