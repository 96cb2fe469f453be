//! What `usher status` reads of `GET /stats`: the fields its table shows,
//! by the names the admin API documents (README, "`/stats` fields"). Fields
//! it does not show are ignored, so the API may grow without breaking it.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct StatsView {
    pub global: GlobalView,
    pub frontends: Vec<FrontendView>,
    pub listeners: Vec<ListenerView>,
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Deserialize)]
pub struct GlobalView {
    /// Absent from the answers of daemons older than this field.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub uptime_s: Option<u64>,
    pub sessions_current: u64,
    pub sessions_max: u64,
    pub sessions_limit: u64,
    pub stressed: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct FrontendView {
    pub name: String,
    pub backend: String,
    pub sessions_current: u64,
    pub sessions_max: u64,
    /// 0: only the global limit.
    pub sessions_limit: u64,
    pub stress: bool,
}

#[derive(Debug, Deserialize)]
pub struct ListenerView {
    pub frontend: String,
    pub address: String,
    /// `OPEN`, `PAUSED(reason)` or `FULL`.
    pub state: String,
    pub sessions_current: u64,
    /// `bind_maxconn`; 0: none.
    pub sessions_limit: u64,
}

#[derive(Debug, Deserialize)]
pub struct BackendView {
    pub name: String,
    pub balance: String,
    pub sessions_current: u64,
    pub queue_current: u64,
    /// `maxqueue`; 0: unbounded.
    pub queue_limit: u64,
    /// Ended sessions per second over the last ten seconds.
    #[serde(default)]
    pub sessions_per_second: Option<f64>,
    /// Waits for a slot of the sessions that ended in the last minute.
    #[serde(default)]
    pub queue_wait_ms: Option<WaitView>,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Deserialize)]
pub struct WaitView {
    pub p99: u64,
    pub count: u64,
}

#[derive(Debug, Deserialize)]
pub struct ServerView {
    pub name: String,
    pub address: String,
    /// `UP`, `DOWN`, `DRAIN`, `MAINT` or `STARTING`.
    pub status: String,
    pub weight: u64,
    pub sessions_current: u64,
    /// `maxconn`; 0: unlimited.
    pub sessions_limit: u64,
    /// The limit in force when slowstart or dynamic maxconn moved it.
    pub sessions_limit_effective: Option<u64>,
    pub queue_current: u64,
    /// `maxqueue`; 0: unbounded.
    pub queue_limit: u64,
    /// Why it is DOWN when its health does not say (`unresolved`).
    #[serde(default)]
    pub down_reason: Option<String>,
    /// A server from DNS: how its name resolves.
    #[serde(default)]
    pub resolution: Option<ResolutionView>,
}

#[derive(Debug, Deserialize)]
pub struct ResolutionView {
    /// `resolved`, `stale` (the last resolution failed; the servers of the
    /// one before stay) or `unresolved`.
    pub state: String,
}
