//! Every backend's and server's figures for the broker's report
//! ([`BrokerHandle::stats`](super::BrokerHandle::stats)), asked of their
//! actors from the reader's thread (the admin API's worker) with a bounded
//! number of asks in flight.
//!
//! Each ask is a round trip to the actors' thread. One at a time, a read
//! with 10 000 servers was 10 000 cross-thread round trips, each paying the
//! wake-ups of both threads; asked all at once, the actors' thread would be
//! handed 10 000 messages in one go and every session's message would wait
//! behind them. [`ASKS_IN_FLIGHT`] sits between the two.

use actix::Addr;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};

use super::handle::{BackendControl, BackendReport, ControlError};
use crate::backend::backend_queue::GetQueueReport;
use crate::backend::server::{GetServerReport, ServerReport};
use crate::backend::spawn_gate::GetSpawnReporter;
use crate::backend::Server;
use crate::ids::{BackendId, ServerId};
use crate::spawn::GetSpawnReport;

/// Asks in flight at once. Each wakes one actor on the actors' thread, and
/// a session's message that arrives meanwhile waits behind the ones queued
/// there: with 64, a message during a read of 10 000 servers waits about
/// 0.4 ms at p99 (0.06 ms with nothing else running), where 10 000 at once
/// would be milliseconds. The reader gets its answers in batches, so a read
/// costs about servers / 64 wake-ups of each thread instead of one per
/// server: about 10 ms per read instead of ~330. 16 took twice as long;
/// 256 was no faster and makes the burst four times longer (`usher-bench
/// stats`, docs/benchmarks.md).
pub(super) const ASKS_IN_FLIGHT: usize = 64;

/// One ask: a backend's own figures (its queue, its processes) or one
/// server's report.
enum Ask<'a> {
    Backend(&'a BackendControl),
    Server { backend: usize, id: ServerId, actor: &'a Addr<Server> },
}

enum Answer {
    /// With no servers yet: they follow.
    Backend(BackendReport),
    Server { backend: usize, id: ServerId, report: ServerReport },
}

/// The figures of `backends`, backends and their servers in the order
/// given (configuration order), each server's report paired with its id.
pub(super) async fn backend_reports(backends: &[BackendControl]) -> Result<Vec<BackendReport>, ControlError> {
    // A backend's own ask, then one per server: a backend's queue is read
    // just before its servers, as when they were asked one by one.
    let asks = backends.iter().enumerate().flat_map(|(backend, control)| {
        let servers = control.servers.iter().map(move |(_, id, actor)| Ask::Server { backend, id: *id, actor });
        std::iter::once(Ask::Backend(control)).chain(servers)
    });
    // `buffered` yields the answers in the asks' order, whatever order they
    // come back in: a backend's answer comes before its servers'.
    let mut answers = stream::iter(asks).map(ask).buffered(ASKS_IN_FLIGHT);
    let mut reports: Vec<BackendReport> = Vec::with_capacity(backends.len());
    while let Some(answer) = answers.try_next().await? {
        match answer {
            Answer::Backend(report) => reports.push(report),
            Answer::Server { backend, id, report } => reports[backend].servers.push((id, report)),
        }
    }
    Ok(reports)
}

async fn ask(ask: Ask<'_>) -> Result<Answer, ControlError> {
    match ask {
        Ask::Backend(control) => {
            let queue = control.queue.send(GetQueueReport).await?;
            let spawn = match control.queue.send(GetSpawnReporter).await? {
                Some(supervisor) => Some(supervisor.send(GetSpawnReport).await?),
                None => None,
            };
            Ok(Answer::Backend(BackendReport {
                name: control.name.clone(),
                id: BackendId(control.index),
                queue,
                servers: Vec::with_capacity(control.servers.len()),
                spawn,
            }))
        }
        Ask::Server { backend, id, actor } => {
            Ok(Answer::Server { backend, id, report: actor.send(GetServerReport).await? })
        }
    }
}
