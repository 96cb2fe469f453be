//! The root logger: `log.format = "term" | "json"` on stderr, `log.level`.
//!
//! Records go through slog-async so data-plane threads do not wait on the
//! terminal. Its channel holds [`CHANNEL_SIZE`] records; beyond that,
//! `log.overflow` decides: `drop` (the default) drops records and reports
//! how many (HAProxy drops logs when its log buffer is full too) rather than
//! stalling relays; `block` waits for room, so no access record is ever
//! lost. Keep the returned [`LogGuard`] alive: dropping it flushes the last
//! records.

use slog::{o, Drain, Level, Logger};

use crate::config::{LogFormat, LogLevel, LogOverflow, LogSettings};

/// Records buffered between the data plane and the writer thread.
pub const CHANNEL_SIZE: usize = 65_536;

/// Flushes pending records when dropped.
pub struct LogGuard(#[allow(dead_code)] slog_async::AsyncGuard);

pub fn level(level: LogLevel) -> Level {
    match level {
        LogLevel::Critical => Level::Critical,
        LogLevel::Error => Level::Error,
        LogLevel::Warning => Level::Warning,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
        LogLevel::Trace => Level::Trace,
    }
}

pub fn logger(settings: &LogSettings) -> (Logger, LogGuard) {
    let (drain, guard) = match settings.format {
        LogFormat::Term => {
            let decorator = slog_term::PlainDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            async_drain(drain, settings.overflow)
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stderr()).add_default_keys().build().fuse();
            async_drain(drain, settings.overflow)
        }
    };
    let drain = drain.filter_level(level(settings.level)).fuse();
    (Logger::root(drain, o!()), LogGuard(guard))
}

fn async_drain<D>(drain: D, overflow: LogOverflow) -> (slog_async::Async, slog_async::AsyncGuard)
where
    D: Drain<Err = slog::Never, Ok = ()> + Send + 'static,
{
    let strategy = match overflow {
        LogOverflow::Drop => slog_async::OverflowStrategy::DropAndReport,
        LogOverflow::Block => slog_async::OverflowStrategy::Block,
    };
    slog_async::Async::new(drain)
        .chan_size(CHANNEL_SIZE)
        .overflow_strategy(strategy)
        .thread_name("usher-log".into())
        .build_with_guard()
}
