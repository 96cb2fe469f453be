//! Stats: the traffic figures of the admin API. It counts every ended
//! session into its frontend, backend and server ([`StatsBook`]) and reads
//! the live-session gauges of the process, each frontend and each listener.
//!
//! Sessions tell it about themselves with one `SessionEnded` each, sent
//! with `do_send` just before the access record is written: one message per
//! session bounds its mailbox by the sessions ending at once, and whoever
//! has read a session's access record finds it counted in the next
//! `GetStats` (both go through this one mailbox, in order).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;

use crate::admission::SessionGauge;
use crate::observe::chunked_table::ChunkedTable;
use crate::observe::queue_waits::QueueWaits;
use crate::observe::stats_book::{Counters, StatsBook};
use crate::observe::wait_histogram::{WaitHistogram, WaitSummary};
use crate::session::SessionEnded;

/// A reload: counters for every frontend, backend and server id, and the
/// gauges of every frontend and listener id.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ResizeStats {
    /// Frontend ids.
    pub frontends: usize,
    /// Server ids per backend id.
    pub servers: Vec<usize>,
    pub gauges: Gauges,
}

/// Asks for a [`StatsReport`].
#[derive(Message, Debug)]
#[rtype(result = "StatsReport")]
pub struct GetStats;

/// Live sessions now and the most there were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GaugeReading {
    pub current: u32,
    pub max: u32,
}

impl GaugeReading {
    fn of(gauge: &SessionGauge) -> GaugeReading {
        GaugeReading { current: gauge.current(), max: gauge.max() }
    }
}

/// The live-session gauges the accept loops keep.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub global: Arc<SessionGauge>,
    /// Per frontend, in declaration order.
    pub frontends: Vec<Arc<SessionGauge>>,
    /// Per listener, by listener id.
    pub listeners: Vec<Arc<SessionGauge>>,
}

/// When the process started and what it is.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFacts {
    /// The crate version.
    pub version: &'static str,
    pub started_at: SystemTime,
    pub uptime: Duration,
}

/// One backend's queue waits: the last minute's, summed up, and every one
/// since start.
#[derive(Debug, Clone)]
pub struct QueueWaitReport {
    pub recent: WaitSummary,
    pub since_start: WaitHistogram,
}

impl QueueWaitReport {
    fn of(waits: &QueueWaits, now: Instant) -> QueueWaitReport {
        QueueWaitReport { recent: waits.recent(now).summary(), since_start: waits.since_start.clone() }
    }
}

/// Counters (ended sessions) and gauges (live sessions), by index.
#[derive(Debug, Clone, MessageResponse)]
pub struct StatsReport {
    pub process: ProcessFacts,
    pub frontends: Vec<Counters>,
    /// Ended sessions per second over the last ten seconds, per frontend.
    pub frontend_rates: Vec<f64>,
    pub backends: Vec<Counters>,
    /// Ended sessions per second over the last ten seconds, per backend.
    pub backend_rates: Vec<f64>,
    /// Per backend.
    pub queue_waits: Vec<QueueWaitReport>,
    /// Per backend, per priority class that has had a waiting session.
    pub class_waits: Vec<BTreeMap<i32, QueueWaitReport>>,
    /// Per backend, per server: waits of the sessions seated on it (`None`
    /// while no session waited for it), as the book held them at
    /// `taken_at`; read them with [`StatsReport::server_waits`].
    server_waits: Vec<ChunkedTable<Option<Arc<QueueWaits>>>>,
    /// Per backend, per server id (a snapshot sharing the book's chunks).
    pub servers: Vec<ChunkedTable<Counters>>,
    /// When the report was taken: the recent waits end here.
    pub taken_at: Instant,
    pub global: GaugeReading,
    pub frontend_sessions: Vec<GaugeReading>,
    pub listener_sessions: Vec<GaugeReading>,
}

impl StatsReport {
    /// Server `server` of backend `backend`: the waits of the sessions
    /// seated on it, when any has waited.
    pub fn server_waits(&self, backend: usize, server: usize) -> Option<QueueWaitReport> {
        let waits = self.server_waits.get(backend)?.get(server)?.as_deref()?;
        Some(QueueWaitReport::of(waits, self.taken_at))
    }
}

pub struct Stats {
    book: StatsBook,
    gauges: Gauges,
    started_at: SystemTime,
    started: Instant,
}

impl Stats {
    /// The process is taken to start now.
    pub fn new(book: StatsBook, gauges: Gauges) -> Stats {
        Stats { book, gauges, started_at: SystemTime::now(), started: Instant::now() }
    }
}

impl Actor for Stats {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<SessionEnded> for Stats {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, _: &mut Self::Context) {
        self.book.record(&msg.summary, Instant::now());
        // Here, on the actors' thread: see `SessionEnded`.
        msg.holdings.let_go();
    }
}

impl Handler<ResizeStats> for Stats {
    type Result = ();

    fn handle(&mut self, msg: ResizeStats, _: &mut Self::Context) {
        self.book.resize(msg.frontends, &msg.servers);
        self.gauges = msg.gauges;
    }
}

impl Handler<GetStats> for Stats {
    type Result = StatsReport;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> StatsReport {
        let g = &self.gauges;
        let now = Instant::now();
        let book = &self.book;
        StatsReport {
            process: ProcessFacts {
                version: env!("CARGO_PKG_VERSION"),
                started_at: self.started_at,
                uptime: now.duration_since(self.started),
            },
            frontends: book.frontends.clone(),
            frontend_rates: book.frontend_rates.iter().map(|r| r.per_second(now)).collect(),
            backends: book.backends.clone(),
            backend_rates: book.backend_rates.iter().map(|r| r.per_second(now)).collect(),
            queue_waits: book.queue_waits.iter().map(|w| QueueWaitReport::of(w, now)).collect(),
            class_waits: book
                .class_waits
                .iter()
                .map(|classes| classes.iter().map(|(class, w)| (*class, QueueWaitReport::of(w, now))).collect())
                .collect(),
            // Snapshots in time linear in the chunks, not the servers: a
            // backend of 10 000 servers is read without holding the actors'
            // thread; the reader sums their waits up on its own.
            server_waits: book.server_waits.clone(),
            servers: book.servers.clone(),
            taken_at: now,
            global: GaugeReading::of(&g.global),
            frontend_sessions: g.frontends.iter().map(|f| GaugeReading::of(f)).collect(),
            listener_sessions: g.listeners.iter().map(|l| GaugeReading::of(l)).collect(),
        }
    }
}
