//! The whole process around the broker: start it, serve the admin API on
//! its handle, wait for shutdown, drain. The broker knows nothing of the
//! admin API; the admin API knows the broker only by its handle.

use std::future::Future;

use slog::{info, o, Logger};

use crate::broker::{self, BoundListeners, Extensions};
use crate::config::Settings;
use crate::extension::PluggedHooks;

/// Runs the broker until `shutdown` resolves, then stops accepting, lets
/// sessions finish for up to `global.grace`, closes the rest and returns.
/// Must be awaited inside an actix `System`.
pub async fn run(
    settings: Settings,
    listeners: BoundListeners,
    log: Logger,
    mut extensions: Extensions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (frontends, admin_listener) = listeners.into_parts();
    let admin_settings = settings.admin.clone();
    let hooks = PluggedHooks::new(
        std::mem::take(&mut extensions.hooks),
        std::mem::take(&mut extensions.admission),
        std::mem::take(&mut extensions.observers),
    )?;
    let balancers = std::mem::take(&mut extensions.balancers);
    let broker = broker::start(settings, frontends, log.clone(), hooks, balancers, extensions.reload.take()).await?;
    if let Some(on_start) = extensions.on_start.take() {
        on_start(broker.handle().clone());
    }
    let cluster = start_cluster(broker.handle(), &log);
    let admin = match admin_listener {
        Some(listener) => Some(crate::admin::start(
            listener,
            &admin_settings,
            broker.handle().clone(),
            cluster.as_ref().map(ClusterAgent::status),
            log.new(o!("actor" => "admin")),
        )?),
        None => None,
    };
    broker.announce();
    if let Some(on_ready) = extensions.on_ready.take() {
        on_ready();
    }

    shutdown.await;
    if let Some(admin) = &admin {
        admin.stopping();
    }
    broker.drain().await?;
    // Every session has ended: the slots this instance held go to the
    // others now rather than when its lease ends.
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    // The admin API stays up through the grace, so the drain can be watched.
    if let Some(admin) = admin {
        admin.stop().await;
    }
    drop(broker);
    info!(log, "stopped");
    Ok(())
}

#[cfg(feature = "cluster")]
use crate::cluster::ClusterAgent;

/// Starts the cluster agent when `[cluster]` is on.
#[cfg(feature = "cluster")]
fn start_cluster(handle: &crate::broker::BrokerHandle, log: &Logger) -> Option<ClusterAgent> {
    let settings = handle.settings().cluster.clone()?;
    Some(ClusterAgent::start(settings, handle.clone(), log.new(o!("actor" => "cluster"))))
}

/// Without the feature, `[cluster]` is refused by the configuration check.
#[cfg(not(feature = "cluster"))]
fn start_cluster(_: &crate::broker::BrokerHandle, _: &Logger) -> Option<ClusterAgent> {
    None
}

/// Stands in for the agent in a build without cluster mode.
#[cfg(not(feature = "cluster"))]
enum ClusterAgent {}

#[cfg(not(feature = "cluster"))]
impl ClusterAgent {
    fn status(&self) -> tokio::sync::watch::Receiver<crate::cluster::ClusterStatus> {
        match *self {}
    }

    async fn leave(self) {}
}
