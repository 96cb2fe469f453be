//! The root logger: `log.format = "term" | "json"` on stderr, `log.level`.
//!
//! Records go through slog-async so data-plane threads never block on the
//! terminal. Its channel holds [`CHANNEL_SIZE`] records; beyond that records
//! are dropped and the number dropped is reported (HAProxy drops logs when
//! its log buffer is full too), rather than stalling relays. Keep the
//! returned [`LogGuard`] alive: dropping it flushes the last records.

use slog::{o, Drain, Level, Logger};

use crate::config::{LogFormat, LogLevel, LogSettings};

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
            async_drain(drain)
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stderr()).add_default_keys().build().fuse();
            async_drain(drain)
        }
    };
    let drain = drain.filter_level(level(settings.level)).fuse();
    (Logger::root(drain, o!()), LogGuard(guard))
}

fn async_drain<D>(drain: D) -> (slog_async::Async, slog_async::AsyncGuard)
where
    D: Drain<Err = slog::Never, Ok = ()> + Send + 'static,
{
    slog_async::Async::new(drain)
        .chan_size(CHANNEL_SIZE)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .thread_name("usher-log".into())
        .build_with_guard()
}
