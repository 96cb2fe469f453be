//! `GET /stats`: one [`Snapshot`] of every frontend, listener, backend and
//! server, gathered by message from the actors that own the figures, and
//! the watchdog's global figures. `/metrics` renders the same snapshot.
//!
//! Sessions figures: `sessions_current`/`sessions_max` are live sessions
//! now and the most at once; `sessions_limit` is the limit in force (0 =
//! none); totals and bytes count ended sessions. Queue figures likewise.
//! `sessions_per_second` is ended sessions per second over the last ten
//! whole seconds; a backend's `queue_wait_ms` sums up the waits for a first
//! slot of the sessions that ended in the last minute (see
//! [`crate::observe::stats_book`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use serde::Serialize;

use super::{Admin, Layout};
use crate::admission::fd_budget::FdBudget;
use crate::admission::watchdog::WatchdogCounters;
use crate::backend::{AdminState, OpState};
use crate::broker::ControlError;
use crate::config::{Balance, ZeroForNone};
use crate::discovery::{SourceReport, SourceState};
use crate::observe::stats_book::Counters;
use crate::observe::wait_histogram::{WaitHistogram, WaitSummary};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub global: GlobalStats,
    pub frontends: Vec<FrontendStats>,
    pub listeners: Vec<ListenerStats>,
    pub backends: Vec<BackendStats>,
    /// Cluster mode's status; `null` when running alone.
    pub cluster: Option<crate::cluster::ClusterStatus>,
    /// Each session hook's timeouts, failures, denials and routings.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub hooks: std::collections::BTreeMap<String, crate::broker::HookCountersReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GlobalStats {
    /// The crate version.
    pub version: &'static str,
    /// RFC 3339, UTC, to the second.
    pub started_at: String,
    pub uptime_s: u64,
    /// `started_at` in seconds since the Unix epoch, for `/metrics`.
    #[serde(skip)]
    pub started_at_unix_s: u64,
    pub sessions_current: u32,
    pub sessions_max: u32,
    /// `global.maxconn` in force (the fd budget when it is 0).
    pub sessions_limit: u32,
    /// Counted by the watchdog: live sessions plus accept credits in flight.
    pub admitted: u32,
    pub fd_budget: Option<FdBudget>,
    /// Frontends in stress mode.
    pub stressed: Vec<String>,
    pub watchdog: WatchdogCounters,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrontendStats {
    pub name: String,
    pub backend: String,
    pub sessions_current: u32,
    pub sessions_max: u32,
    /// `maxconn` in force (0 = only the global limit).
    pub sessions_limit: u32,
    /// New sessions per second (0 = unlimited).
    pub rate_limit: u32,
    /// Ended sessions per second over the last ten seconds.
    pub sessions_per_second: f64,
    pub stress: bool,
    #[serde(flatten)]
    pub totals: Counters,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerStats {
    pub frontend: String,
    pub address: SocketAddr,
    /// `OPEN`, `PAUSED(reason)` or `FULL`.
    pub state: String,
    pub sessions_current: u32,
    pub sessions_max: u32,
    /// `bind_maxconn` (0 = none).
    pub sessions_limit: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendStats {
    pub name: String,
    pub balance: Balance,
    /// Sessions holding a slot of one of its servers.
    pub sessions_current: u32,
    pub sessions_max: u32,
    /// `fullconn` (0 = off), as HAProxy reports for a backend.
    pub sessions_limit: u32,
    /// Sessions in the backend queue (not those in server queues).
    pub queue_current: usize,
    pub queue_max: usize,
    /// `maxqueue` (0 = unbounded).
    pub queue_limit: u32,
    /// Paused by an operator (`POST /backends/{b}/pause`): no slot is
    /// granted until it is resumed.
    pub paused: bool,
    /// Since when, in seconds since the Unix epoch (`null` while not paused).
    pub paused_since: Option<u64>,
    /// Picks of its balancer the core did not follow (a server that does
    /// not exist or cannot take balanced traffic, or a panic): an
    /// extension balancer's bug, seen without breaking anything.
    pub balancer_bad_picks: u64,
    /// Ended sessions per second over the last ten seconds.
    pub sessions_per_second: f64,
    /// Waits for a first slot, in ms, of the sessions that ended in the
    /// last minute.
    pub queue_wait_ms: WaitSummary,
    /// Every wait since start, for `/metrics`.
    #[serde(skip)]
    pub queue_waits_since_start: WaitHistogram,
    /// The same waits of the last minute per priority class
    /// (`frontends.X.priority_class`), for the classes that have waited.
    pub queue_wait_ms_by_class: BTreeMap<i32, WaitSummary>,
    #[serde(skip)]
    pub queue_waits_by_class_since_start: BTreeMap<i32, WaitHistogram>,
    #[serde(flatten)]
    pub totals: Counters,
    pub servers: Vec<ServerStats>,
    /// A spawned backend's throttle (absent for other backends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn: Option<super::spawn_stats::SpawnStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    pub name: String,
    /// `IP:PORT`; `HOST:PORT` for a server whose name never resolved.
    pub address: String,
    /// HAProxy-style summary: `MAINT`, `DOWN`, `DRAIN`, `STARTING` or `UP`.
    pub status: &'static str,
    /// Operational state: `UP`, `DOWN` or `STARTING`.
    pub op: &'static str,
    /// Administrative state: `ready`, `drain` or `maint`.
    pub admin: &'static str,
    pub weight: u32,
    pub backup: bool,
    /// Sessions holding one of its slots.
    pub sessions_current: u32,
    pub sessions_max: u32,
    /// `maxconn` in force (0 = unlimited); in cluster mode, the bound of
    /// every instance together.
    pub sessions_limit: u32,
    /// Cluster mode: the share of `sessions_limit` this instance may use
    /// now; `null` when running alone or for an unlimited server.
    pub cluster_share: Option<u32>,
    /// What the limit is right now when slowstart, dynamic maxconn or a
    /// run-time change moved it; `null` otherwise.
    pub sessions_limit_effective: Option<u32>,
    /// Sessions in its own queue.
    pub queue_current: usize,
    pub queue_max: usize,
    /// `maxqueue` (0 = unbounded).
    pub queue_limit: u32,
    pub check: CheckStats,
    /// A spawned backend's process in this slot (absent for other servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<super::spawn_stats::ProcessStats>,
    /// Seconds since its state last changed.
    pub last_change_seconds: u64,
    /// Waits for a first slot, in ms, of the sessions seated on it that
    /// ended in the last minute: with hashing, the waits of the sessions
    /// pinned to it.
    pub queue_wait_ms: WaitSummary,
    #[serde(skip)]
    pub queue_waits_since_start: WaitHistogram,
    #[serde(flatten)]
    pub totals: Counters,
    /// Why it is DOWN when its health does not say: `unresolved` for a
    /// server from DNS whose name never resolved (it has no address, so
    /// no actor runs for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_reason: Option<&'static str>,
    /// For a server from DNS: the name asked for and how it resolves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionStats>,
}

/// How the name of a server from DNS resolves.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionStats {
    pub query: String,
    /// `resolved`; `stale` (the last resolution failed: the servers of the
    /// one before stay); `unresolved` (never resolved).
    pub state: &'static str,
    /// Why the last resolution failed; `null` when it worked.
    pub error: Option<String>,
}

impl ResolutionStats {
    fn of(source: &SourceReport) -> ResolutionStats {
        ResolutionStats {
            query: source.query.clone(),
            state: source.state.as_str(),
            error: source.state.error().map(str::to_owned),
        }
    }
}

/// A server from DNS whose name never resolved: DOWN, with the reason.
fn unresolved_server(source: &SourceReport) -> ServerStats {
    let address = if source.port == 0 { source.query.clone() } else { format!("{}:{}", source.query, source.port) };
    ServerStats {
        name: source.source.clone(),
        address,
        status: status_word(OpState::Down, AdminState::Ready),
        op: OpState::Down.as_str(),
        admin: AdminState::Ready.as_str(),
        weight: 0,
        backup: false,
        sessions_current: 0,
        sessions_max: 0,
        sessions_limit: 0,
        cluster_share: None,
        sessions_limit_effective: None,
        queue_current: 0,
        queue_max: 0,
        queue_limit: 0,
        check: CheckStats { enabled: false, status: None, good: 0, failed: 0 },
        process: None,
        last_change_seconds: 0,
        queue_wait_ms: WaitSummary::default(),
        queue_waits_since_start: WaitHistogram::default(),
        totals: Counters::default(),
        down_reason: Some("unresolved"),
        resolution: Some(ResolutionStats::of(source)),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckStats {
    pub enabled: bool,
    /// Result of the last active check (`L4OK`, `L4CON`, `L4TOUT`, `L7RSP`); `null` before the first.
    pub status: Option<crate::backend::CheckResult>,
    /// Consecutive good and failed checks.
    pub good: u32,
    pub failed: u32,
}

/// HAProxy's status word for a server.
fn status_word(op: OpState, admin: AdminState) -> &'static str {
    match (admin, op) {
        (AdminState::Maint, _) => "MAINT",
        (_, OpState::Down) => "DOWN",
        (AdminState::Drain, _) => "DRAIN",
        (_, OpState::Starting) => "STARTING",
        (_, OpState::Up) => "UP",
    }
}

/// A rate to one decimal: an average over ten seconds is no finer.
fn unix_seconds(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn tenths(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

/// Asks the broker for every actor's figures. Fails only when an actor is
/// gone (the broker is stopping).
pub(super) async fn collect(admin: &Admin) -> Result<Snapshot, ControlError> {
    let report = admin.broker.stats().await?;
    let layout = Layout::of(&report.settings);
    let (status, stats) = (&report.admission, &report.traffic);

    let process = &stats.process;
    let global = GlobalStats {
        version: process.version,
        started_at: humantime::format_rfc3339_seconds(process.started_at).to_string(),
        uptime_s: process.uptime.as_secs(),
        started_at_unix_s: process.started_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        sessions_current: stats.global.current,
        sessions_max: stats.global.max,
        sessions_limit: status.global_max,
        admitted: status.global_used,
        fd_budget: status.fd_budget,
        stressed: status.stressed.clone(),
        watchdog: status.counters,
    };

    let frontends = layout
        .frontends
        .iter()
        .enumerate()
        .map(|(i, f)| {
            // Stats and the watchdog count by frontend id.
            let i = report.frontends.get(i).map_or(usize::MAX, |(_, id)| id.0);
            let gauge = stats.frontend_sessions.get(i).copied().unwrap_or_default();
            let limits = status.frontends.get(i);
            FrontendStats {
                name: f.name.clone(),
                backend: f.backend.clone(),
                sessions_current: gauge.current,
                sessions_max: gauge.max,
                sessions_limit: limits.map_or(0, |l| l.maxconn),
                rate_limit: limits.map_or(0, |l| l.rate_limit),
                sessions_per_second: tenths(stats.frontend_rates.get(i).copied().unwrap_or_default()),
                stress: status.stressed.contains(&f.name),
                totals: stats.frontends.get(i).cloned().unwrap_or_default(),
            }
        })
        .collect();

    let listeners = status
        .listeners
        .iter()
        .map(|l| {
            let gauge = stats.listener_sessions.get(l.id.0).copied().unwrap_or_default();
            ListenerStats {
                frontend: l.frontend.clone(),
                address: l.address,
                state: l.state.to_string(),
                sessions_current: gauge.current,
                sessions_max: gauge.max,
                sessions_limit: layout.bind_maxconn(&l.frontend).or_zero(),
            }
        })
        .collect();

    let (in_force, dns) = (&report.settings, &report.dns);
    let mut backends = Vec::new();
    for (backend, layout) in report.backends.iter().zip(&layout.backends) {
        // Stats count by backend id and server id.
        let bi = backend.id.0;
        let queue = &backend.queue;
        let waits = stats.queue_waits.get(bi);
        let classes = stats.class_waits.get(bi);
        let mut servers = Vec::new();
        // By name, once: a backend of 10 000 servers is listed in linear time.
        let configured: HashMap<&str, _> = in_force
            .backend(&layout.name)
            .map(|b| b.servers.iter().map(|c| (c.name.as_str(), c)).collect())
            .unwrap_or_default();
        for ((id, report), s) in backend.servers.iter().zip(&layout.servers) {
            let si = id.0;
            let q = queue.servers.get(si).copied();
            let server_waits = stats.server_waits(bi, si);
            let process = backend.spawn.as_ref().and_then(|r| super::spawn_stats::process(r, si));
            // A process slot's address is its process's port, when it runs.
            let address = match process.as_ref().and_then(|p| p.port) {
                Some(port) => SocketAddr::new(s.address.ip(), port),
                None => s.address,
            };
            // A server from DNS: how its name resolves.
            let origin = configured.get(s.name.as_str());
            let resolution = origin.and_then(|c| c.dns.as_ref()).and_then(|origin| {
                let source = origin.template.as_deref().unwrap_or(&s.name);
                dns.iter().find(|d| d.backend == layout.name && d.source == source)
            });
            servers.push(ServerStats {
                name: s.name.clone(),
                address: address.to_string(),
                process,
                status: status_word(report.op, report.admin),
                op: report.op.as_str(),
                admin: report.admin.as_str(),
                weight: report.weight,
                backup: s.backup,
                sessions_current: q.map_or(0, |q| q.served),
                sessions_max: q.map_or(0, |q| q.max_served),
                sessions_limit: report.maxconn,
                cluster_share: report.share,
                sessions_limit_effective: q.and_then(|q| q.effective_maxconn),
                queue_current: q.map_or(0, |q| q.queued),
                queue_max: q.map_or(0, |q| q.max_queued),
                queue_limit: s.maxqueue.or_zero(),
                check: CheckStats {
                    enabled: s.checks,
                    status: report.last_check,
                    good: report.checks.0,
                    failed: report.checks.1,
                },
                last_change_seconds: report.since_change.as_secs(),
                queue_wait_ms: server_waits.as_ref().map(|w| w.recent).unwrap_or_default(),
                queue_waits_since_start: server_waits.map(|w| w.since_start).unwrap_or_default(),
                totals: stats.servers.get(bi).and_then(|b| b.get(si)).cloned().unwrap_or_default(),
                down_reason: None,
                resolution: resolution.map(ResolutionStats::of),
            });
        }
        let never_resolved = dns.iter().filter(|d| d.backend == layout.name);
        servers.extend(
            never_resolved.filter(|d| matches!(d.state, SourceState::Unresolved { .. })).map(unresolved_server),
        );
        backends.push(BackendStats {
            name: layout.name.clone(),
            balance: layout.balance.clone(),
            sessions_current: queue.servers.iter().map(|s| s.served).sum(),
            sessions_max: queue.max_served,
            sessions_limit: layout.fullconn.or_zero(),
            queue_current: queue.backend_queue,
            queue_max: queue.max_backend_queue,
            queue_limit: layout.maxqueue.or_zero(),
            paused: queue.paused_since.is_some(),
            paused_since: queue.paused_since.map(unix_seconds),
            balancer_bad_picks: queue.balancer_bad_picks,
            sessions_per_second: tenths(stats.backend_rates.get(bi).copied().unwrap_or_default()),
            queue_wait_ms: waits.map(|w| w.recent).unwrap_or_default(),
            queue_waits_since_start: waits.map(|w| w.since_start.clone()).unwrap_or_default(),
            queue_wait_ms_by_class: classes.into_iter().flatten().map(|(c, w)| (*c, w.recent)).collect(),
            queue_waits_by_class_since_start: classes.into_iter().flatten().map(|(c, w)| (*c, w.since_start.clone())).collect(),
            totals: stats.backends.get(bi).cloned().unwrap_or_default(),
            servers,
            spawn: backend.spawn.as_ref().map(super::spawn_stats::backend),
        });
    }
    let cluster = admin.cluster.as_ref().map(|status| status.borrow().clone());
    Ok(Snapshot { global, frontends, listeners, backends, cluster, hooks: report.hooks.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_follow_haproxy() {
        assert_eq!(status_word(OpState::Up, AdminState::Ready), "UP");
        assert_eq!(status_word(OpState::Down, AdminState::Drain), "DOWN");
        assert_eq!(status_word(OpState::Up, AdminState::Drain), "DRAIN");
        assert_eq!(status_word(OpState::Down, AdminState::Maint), "MAINT");
        assert_eq!(status_word(OpState::Starting, AdminState::Ready), "STARTING");
    }
}
