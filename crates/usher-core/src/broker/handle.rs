//! The running broker as its embedders see it: the daemon, the admin API,
//! extensions and tests. Every method asks the Topology for the actors in
//! force at that moment, so a handle never talks to a server a reload
//! removed; only [`BrokerHandle::settings`] is a snapshot.

use std::fmt;
use std::num::NonZeroU32;
use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::config::{ReloadError, ReloadSummary};
use super::topology::{GetActors, GetHandle, Reload, Topology};
use crate::admission::watchdog::{GetStatus, SetFrontendMaxconn, WatchdogStatus};
use crate::admission::ResourceWatchdog;
use crate::extension::{HookCountersReport, PluggedHooks};
use crate::backend::backend_queue::QueueReport;
use crate::backend::server::{GetServerReport, ServerReport, SetAdminState, SetMaxconn, SetWeight};
use crate::backend::{AdminState, BackendQueue, OpState, Server};
use crate::config::Settings;
use crate::ids::{BackendId, FrontendId, ServerId};
use crate::observe::stats::{GetStats, StatsReport};
use crate::observe::Stats;

/// Largest server weight (HAProxy's absolute weights go from 0 to 256).
pub const MAX_WEIGHT: u32 = 256;
/// Largest maxconn, as in the configuration.
pub const MAX_MAXCONN: u32 = 10_000_000;

/// Reloads, run-time changes and reports of a running broker.
#[derive(Clone)]
pub struct BrokerHandle {
    topology: Addr<Topology>,
    settings: Arc<Settings>,
    /// Read for the hooks' counters in the stats.
    hooks: PluggedHooks,
}

/// Why a run-time change or report was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    UnknownBackend(String),
    UnknownServer { backend: String, server: String },
    UnknownFrontend(String),
    /// A value out of range, or a change the server cannot take.
    Rejected(String),
    /// The broker is stopping: its actors no longer answer.
    Stopped,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::UnknownBackend(backend) => write!(f, "no backend {backend:?}"),
            ControlError::UnknownServer { backend, server } => {
                write!(f, "no server {server:?} in backend {backend:?}")
            }
            ControlError::UnknownFrontend(frontend) => write!(f, "no frontend {frontend:?}"),
            ControlError::Rejected(reason) => f.write_str(reason),
            ControlError::Stopped => f.write_str("the broker is not answering (stopping?)"),
        }
    }
}

impl std::error::Error for ControlError {}

impl From<MailboxError> for ControlError {
    fn from(_: MailboxError) -> ControlError {
        ControlError::Stopped
    }
}

/// A run-time change of one server; absent fields stay. Applied in the
/// order maxconn, weight, state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerChange {
    pub state: Option<AdminState>,
    pub weight: Option<u32>,
    pub maxconn: Option<u32>,
}

/// A server's states and limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStatus {
    pub op: OpState,
    pub admin: AdminState,
    pub weight: u32,
    pub maxconn: u32,
}

/// Everything the stats report: the settings in force and every actor's
/// figures, backends and servers in declaration order.
#[derive(Debug, Clone)]
pub struct BrokerReport {
    pub settings: Arc<Settings>,
    pub admission: WatchdogStatus,
    pub traffic: StatsReport,
    /// Configured frontends in declaration order, with their ids.
    pub frontends: Vec<(String, FrontendId)>,
    pub backends: Vec<BackendReport>,
    /// What each session hook did, by name.
    pub hooks: BTreeMap<String, HookCountersReport>,
    /// How each server name and template of the configuration resolves.
    pub dns: Arc<Vec<crate::discovery::SourceReport>>,
}

#[derive(Debug, Clone)]
pub struct BackendReport {
    pub name: String,
    pub id: BackendId,
    pub queue: QueueReport,
    /// Configured servers in declaration order, with their ids.
    pub servers: Vec<(ServerId, ServerReport)>,
    /// A spawned backend's processes, one per server (process slot).
    pub spawn: Option<crate::spawn::SpawnReport>,
}

impl BrokerHandle {
    pub(super) fn new(topology: Addr<Topology>, settings: Arc<Settings>, hooks: PluggedHooks) -> BrokerHandle {
        BrokerHandle { topology, settings, hooks }
    }

    /// The configuration in force when this handle was made.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Re-reads the configuration from where the broker was started from
    /// (as SIGHUP does) and applies the difference.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        self.topology.send(Reload { settings: None }).await.unwrap_or(Err(ReloadError::Stopping))
    }

    /// Applies `settings` as a reload would.
    pub async fn reload_with(&self, settings: Settings) -> Result<ReloadSummary, ReloadError> {
        self.topology.send(Reload { settings: Some(settings) }).await.unwrap_or(Err(ReloadError::Stopping))
    }

    /// A fresh handle: the settings in force now (after a reload).
    pub async fn refreshed(&self) -> Option<BrokerHandle> {
        self.topology.send(GetHandle).await.ok()
    }

    pub async fn set_server_state(&self, backend: &str, server: &str, state: AdminState) -> Result<ServerStatus, ControlError> {
        self.change_server(backend, server, ServerChange { state: Some(state), ..ServerChange::default() }).await
    }

    pub async fn set_server_weight(&self, backend: &str, server: &str, weight: u32) -> Result<ServerStatus, ControlError> {
        self.change_server(backend, server, ServerChange { weight: Some(weight), ..ServerChange::default() }).await
    }

    pub async fn set_server_maxconn(&self, backend: &str, server: &str, maxconn: u32) -> Result<ServerStatus, ControlError> {
        self.change_server(backend, server, ServerChange { maxconn: Some(maxconn), ..ServerChange::default() }).await
    }

    /// A server's states and limits now.
    pub async fn server_status(&self, backend: &str, server: &str) -> Result<ServerStatus, ControlError> {
        self.change_server(backend, server, ServerChange::default()).await
    }

    /// Checks every field of `change` first (a bad value changes nothing),
    /// then applies it through the server's actor, which logs it.
    pub async fn change_server(
        &self,
        backend: &str,
        server: &str,
        change: ServerChange,
    ) -> Result<ServerStatus, ControlError> {
        let actors = self.current().await?;
        let (configured, actor) = actors.find_server(backend, server)?;
        change.check(configured)?;
        if let Some(maxconn) = change.maxconn {
            actor.send(SetMaxconn(maxconn)).await?;
        }
        if let Some(weight) = change.weight {
            actor.send(SetWeight(weight)).await?;
        }
        if let Some(state) = change.state {
            actor.send(SetAdminState(state)).await?;
        }
        let report = actor.send(GetServerReport).await?;
        Ok(ServerStatus { op: report.op, admin: report.admin, weight: report.weight, maxconn: report.maxconn })
    }

    /// Cluster mode: the share of `server`'s maxconn this instance may use.
    /// Only the cluster agent sets it: anyone else would break the
    /// cluster's bound.
    #[cfg(feature = "cluster")]
    pub(crate) async fn set_server_share(&self, backend: &str, server: &str, share: u32) -> Result<(), ControlError> {
        let actors = self.current().await?;
        let (_, actor) = actors.find_server(backend, server)?;
        // Awaited: the Server has told its BackendQueue the new bound before
        // this returns, so a report asked for after it reflects the share.
        Ok(actor.send(crate::backend::server::SetShare(share)).await?)
    }

    /// Changes a frontend's `maxconn` (0 = only the global limit); answers
    /// the previous value.
    pub async fn set_frontend_maxconn(&self, frontend: &str, maxconn: u32) -> Result<u32, ControlError> {
        if maxconn > MAX_MAXCONN {
            return Err(ControlError::Rejected(format!(
                "maxconn {maxconn} is out of range; expected 0 (only the global limit) to {MAX_MAXCONN}"
            )));
        }
        let actors = self.current().await?;
        let change = SetFrontendMaxconn { frontend: frontend.to_owned(), maxconn };
        actors.watchdog.send(change).await?.ok_or_else(|| ControlError::UnknownFrontend(frontend.to_owned()))
    }

    /// Every actor's figures, with the settings in force. Backends and
    /// servers are asked a bounded number at a time (`backend_reports.rs`):
    /// a read neither takes a round trip per server one after another nor
    /// hands the actors' thread every server's ask at once.
    pub async fn stats(&self) -> Result<BrokerReport, ControlError> {
        let actors = self.current().await?;
        let admission = actors.watchdog.send(GetStatus).await?;
        let traffic = actors.stats.send(GetStats).await?;
        let backends = super::backend_reports::backend_reports(&actors.backends).await?;
        let hooks = self.hooks.counters();
        Ok(BrokerReport {
            settings: actors.settings,
            admission,
            traffic,
            frontends: actors.frontends,
            backends,
            hooks,
            dns: actors.dns,
        })
    }

    /// The actors in force now.
    async fn current(&self) -> Result<Actors, ControlError> {
        Ok(self.topology.send(GetActors).await?)
    }

    /// Applies a run-time edit of the settings in force, as a reload.
    pub(super) async fn amend(&self, edit: super::runtime_topology::Edit) -> Result<ReloadSummary, ControlError> {
        self.topology.send(super::runtime_topology::Amend { edit }).await?
    }

    /// The actors in force now, for the handle's other files.
    pub(super) async fn current_actors(&self) -> Result<Actors, ControlError> {
        self.current().await
    }

    /// The actors in force now, for white-box tests and the benchmark.
    #[cfg(feature = "internals")]
    pub async fn actors(&self) -> Option<Actors> {
        self.current().await.ok()
    }
}

impl ServerChange {
    /// Every field in range; a server without `configured_maxconn` is
    /// unlimited, and a limit cannot be added at run time. The only check
    /// of a server change: the admin API runs it before logging a request.
    pub fn check(&self, configured_maxconn: Option<NonZeroU32>) -> Result<(), ControlError> {
        if let Some(weight) = self.weight.filter(|w| *w > MAX_WEIGHT) {
            return Err(ControlError::Rejected(format!("weight {weight} is out of range; expected 0 to {MAX_WEIGHT}")));
        }
        match self.maxconn {
            Some(_) if configured_maxconn.is_none() => Err(ControlError::Rejected(
                "the server has no maxconn (unlimited in the configuration); \
                 expected a maxconn in the configuration to change it at run time"
                    .to_owned(),
            )),
            Some(m) if !(1..=MAX_MAXCONN).contains(&m) => {
                Err(ControlError::Rejected(format!("maxconn {m} is out of range; expected 1 to {MAX_MAXCONN}")))
            }
            _ => Ok(()),
        }
    }
}

/// Addresses of the running actors, in declaration order of the settings
/// in force: what the handle's methods talk to. Reachable from outside the
/// crate only with the `internals` feature.
#[derive(Clone)]
pub struct Actors {
    pub watchdog: Addr<ResourceWatchdog>,
    /// Configured backends, in declaration order (shared: the Topology
    /// keeps the list until a reload changes it).
    pub backends: Arc<Vec<BackendControl>>,
    /// Configured frontends, in declaration order, with their ids.
    pub frontends: Vec<(String, FrontendId)>,
    /// Traffic counters and live-session gauges.
    pub stats: Addr<Stats>,
    /// The configuration in force.
    pub settings: Arc<Settings>,
    /// How each server name and template of the configuration resolves.
    pub dns: Arc<Vec<crate::discovery::SourceReport>>,
}

/// One backend's actors.
#[derive(Clone)]
pub struct BackendControl {
    pub name: String,
    /// Its stable id (index in the stats).
    pub index: usize,
    pub queue: Addr<BackendQueue>,
    /// Configured servers in declaration order: name, stable id, actor.
    pub servers: Vec<(String, ServerId, Addr<Server>)>,
}

impl Actors {
    pub fn server(&self, backend: &str, server: &str) -> Option<&Addr<Server>> {
        let b = self.backends.iter().find(|b| b.name == backend)?;
        b.servers.iter().find(|(name, _, _)| name == server).map(|(_, _, addr)| addr)
    }

    /// A server's configured maxconn and its actor.
    fn find_server(&self, backend: &str, server: &str) -> Result<(Option<NonZeroU32>, &Addr<Server>), ControlError> {
        let settings = self.settings.backend(backend).ok_or_else(|| ControlError::UnknownBackend(backend.to_owned()))?;
        let unknown = || ControlError::UnknownServer { backend: backend.to_owned(), server: server.to_owned() };
        let configured = settings.servers.iter().find(|s| s.name == server).ok_or_else(unknown)?.maxconn;
        Ok((configured, self.server(backend, server).ok_or_else(unknown)?))
    }
}
