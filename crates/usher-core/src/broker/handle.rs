//! The running broker as its embedders see it: the daemon, the admin API,
//! extensions and tests.

use std::sync::Arc;

use actix::prelude::*;

use super::reload_plan::{ReloadError, ReloadSummary};
use super::topology::{GetHandle, Reload, Topology};
use crate::admission::ResourceWatchdog;
use crate::backend::{BackendQueue, Server};
use crate::config::Settings;
use crate::ids::{FrontendId, ServerId};
use crate::observe::Stats;

/// Addresses of the running actors, for the admin API, tests and
/// extensions: everything a control plane may talk to. A snapshot: after a
/// reload, ask the Topology for a fresh one.
#[derive(Clone)]
pub struct BrokerHandle {
    pub watchdog: Addr<ResourceWatchdog>,
    /// Configured backends, in declaration order.
    pub backends: Vec<BackendControl>,
    /// Configured frontends, in declaration order, with their ids.
    pub frontends: Vec<(String, FrontendId)>,
    /// Traffic counters and live-session gauges.
    pub stats: Addr<Stats>,
    /// Reloads, fresh handles.
    pub topology: Addr<Topology>,
    /// The configuration in force.
    pub settings: Arc<Settings>,
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

impl BrokerHandle {
    pub fn server(&self, backend: &str, server: &str) -> Option<&Addr<Server>> {
        let b = self.backends.iter().find(|b| b.name == backend)?;
        b.servers.iter().find(|(name, _, _)| name == server).map(|(_, _, addr)| addr)
    }
}

impl BrokerHandle {
    /// Re-reads the configuration from where the broker was started from
    /// (as SIGHUP does) and applies the difference.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        self.topology.send(Reload { settings: None }).await.unwrap_or(Err(ReloadError::Stopping))
    }

    /// Applies `settings` as a reload would.
    pub async fn reload_with(&self, settings: Settings) -> Result<ReloadSummary, ReloadError> {
        self.topology.send(Reload { settings: Some(settings) }).await.unwrap_or(Err(ReloadError::Stopping))
    }

    /// A fresh handle: the actors and settings in force now (after a reload).
    pub async fn refreshed(&self) -> Option<BrokerHandle> {
        self.topology.send(GetHandle).await.ok()
    }
}
