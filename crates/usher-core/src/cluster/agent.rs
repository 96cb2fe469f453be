//! The cluster agent: a task beside the broker that runs this instance's
//! [`ShareKeeper`] against etcd once a period and tells the Server actors
//! their shares through the broker's handle. Sessions never wait on it:
//! each Server enforces its last share whatever the agent is doing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use slog::{info, warn, Logger};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::keeper::{Fallback, Round, ServerKey, ShareKeeper, Usage};
use super::status::ClusterStatus;
use super::store::Store;
use crate::broker::BrokerHandle;
use crate::config::{ClusterFallback, ClusterSettings};

/// Allocations rotate who gets the slots that do not divide evenly this
/// often, the same on every instance (wall clock).
const ROTATE_EVERY_SECS: u64 = 10;
/// A graceful stop hands this instance's slots back within this long, or
/// leaves them to the lease's end.
const LEAVE_WITHIN: Duration = Duration::from_secs(2);

/// The running agent.
pub struct ClusterAgent {
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    status: watch::Receiver<ClusterStatus>,
}

impl ClusterAgent {
    /// Starts the agent on the current actix System.
    pub fn start(settings: ClusterSettings, handle: BrokerHandle, log: Logger) -> ClusterAgent {
        let stop = CancellationToken::new();
        let (publish, status) = watch::channel(ClusterStatus { name: settings.name.clone(), ..ClusterStatus::default() });
        let agent = Agent::new(settings, handle, log, publish);
        let done = actix::spawn(agent.run(stop.clone()));
        ClusterAgent { stop, done, status }
    }

    /// What the admin API shows.
    pub fn status(&self) -> watch::Receiver<ClusterStatus> {
        self.status.clone()
    }

    /// Called once every session has ended: hands this instance's slots to
    /// the others at once instead of at the lease's end.
    pub async fn leave(self) {
        self.stop.cancel();
        let _ = self.done.await;
    }
}

struct Agent {
    settings: ClusterSettings,
    handle: BrokerHandle,
    keeper: ShareKeeper,
    store: Option<Store>,
    /// Server key → (backend, server) names, for the handle.
    names: BTreeMap<ServerKey, (String, String)>,
    maxconn: BTreeMap<ServerKey, u32>,
    status: ClusterStatus,
    publish: watch::Sender<ClusterStatus>,
    /// The store was unreachable at the last round (logs once per change).
    failing: bool,
    log: Logger,
}

impl Agent {
    fn new(settings: ClusterSettings, handle: BrokerHandle, log: Logger, publish: watch::Sender<ClusterStatus>) -> Agent {
        let fallback = match (settings.fallback, settings.expected_instances) {
            (ClusterFallback::Even, expected) if expected > 0 => Fallback::Even { expected },
            _ => Fallback::Nothing,
        };
        let keeper = ShareKeeper::new(settings.name.clone(), fallback, settings.lease_ttl);
        let status = ClusterStatus { name: settings.name.clone(), ..ClusterStatus::default() };
        Agent {
            settings,
            handle,
            keeper,
            store: None,
            names: BTreeMap::new(),
            maxconn: BTreeMap::new(),
            status,
            publish,
            failing: false,
            log,
        }
    }

    async fn run(mut self, stop: CancellationToken) {
        info!(self.log, "cluster agent started"; "name" => &self.settings.name, "etcd" => self.settings.etcd.join(","),
            "prefix" => &self.settings.prefix, "lease_ttl" => ?self.settings.lease_ttl, "period" => ?self.settings.period);
        let mut next = Instant::now();
        loop {
            let deadline = self.keeper.lease_deadline().unwrap_or(next + self.settings.lease_ttl);
            tokio::select! {
                _ = stop.cancelled() => break,
                // The lease may end before a round gets through: the shares
                // drop to the fallback at its deadline, not a round later.
                _ = sleep_until(deadline.into()), if self.keeper.lease_deadline().is_some() => {
                    self.unreachable("lease deadline passed").await;
                }
                _ = sleep_until(next.into()) => {
                    next += self.settings.period;
                    let now = Instant::now();
                    if next < now {
                        next = now + self.settings.period;
                    }
                    // Never past the lease's deadline: a round that would be
                    // is cut short and counts as unreachable.
                    let limit = self.keeper.lease_deadline().map_or(self.settings.period * 2, |d| {
                        d.saturating_duration_since(now).min(self.settings.period * 2)
                    });
                    match timeout(limit, self.round()).await {
                        Ok(Ok(())) => self.reachable(),
                        Ok(Err(err)) => self.unreachable(&format!("{err:#}")).await,
                        Err(_) => self.unreachable("round timed out").await,
                    }
                }
            }
            self.status.members = self.keeper.members();
            self.status.in_lease = self.keeper.in_lease(Instant::now());
            self.publish.send_replace(self.status.clone());
        }
        self.leave().await;
    }

    /// One round: usage, lease, demand, reading, shares, writes.
    async fn round(&mut self) -> anyhow::Result<()> {
        let usage = self.usage().await?;
        if self.store.is_none() {
            self.store = Some(Store::connect(&self.settings).await?);
        }
        let store = self.store.as_mut().expect("connected above");
        let renewed = store.renew().await;
        let renewed = match renewed {
            Ok(renewed) => renewed,
            Err(err) => {
                // A broken connection: a new one next round.
                self.store = None;
                return Err(err);
            }
        };
        if renewed.fresh {
            self.keeper.lease_lost();
        }
        self.keeper.lease_renewed(renewed.sent);
        let demand = usage.iter().map(|(k, u)| (k.clone(), u.demand)).collect();
        store.publish(&demand).await?;
        let reading = store.read().await?;
        let round = self.keeper.on_reading(Instant::now(), &reading, &usage, rotation());
        self.enforce(&round).await;
        for write in &round.writes {
            let store = self.store.as_mut().expect("connected above");
            if store.swap(write).await? {
                if let Some(share) = self.keeper.committed(write, Instant::now()) {
                    self.set_share(&write.server, share).await;
                }
            }
        }
        Ok(())
    }

    /// Every limited server's figures, read after the last shares were in
    /// force (each was awaited).
    async fn usage(&mut self) -> anyhow::Result<BTreeMap<ServerKey, Usage>> {
        let report = self.handle.stats().await.map_err(|err| anyhow::anyhow!("broker report: {err}"))?;
        let mut usage = BTreeMap::new();
        self.names.clear();
        for backend in &report.backends {
            for (i, (_, server)) in backend.servers.iter().enumerate() {
                if server.maxconn == 0 || server.share.is_none() {
                    continue;
                }
                let key = format!("{}/{}", backend.name, server.name);
                let queue = backend.queue.servers.get(i);
                let served = queue.map_or(0, |q| q.served);
                let waiting = queue.map_or(0, |q| q.queued) + backend.queue.backend_queue;
                let demand = served.saturating_add(u32::try_from(waiting).unwrap_or(u32::MAX));
                usage.insert(key.clone(), Usage { maxconn: server.maxconn, served, demand });
                self.names.insert(key, (backend.name.clone(), server.name.clone()));
            }
        }
        self.maxconn = usage.iter().map(|(k, u)| (k.clone(), u.maxconn)).collect();
        Ok(usage)
    }

    async fn enforce(&mut self, round: &Round) {
        for (server, share) in &round.shares {
            self.set_share(server, *share).await;
        }
    }

    async fn set_share(&self, server: &ServerKey, share: u32) {
        if let Some((backend, name)) = self.names.get(server) {
            // A server a reload just removed has no share to take.
            let _ = self.handle.set_server_share(backend, name, share).await;
        }
    }

    fn reachable(&mut self) {
        if std::mem::take(&mut self.failing) {
            info!(self.log, "cluster store reachable again"; "members" => self.keeper.members());
        }
    }

    async fn unreachable(&mut self, why: &str) {
        self.status.store_errors += 1;
        if !std::mem::replace(&mut self.failing, true) {
            warn!(self.log, "cluster store unreachable; shares kept while the lease lasts, then the fallback";
                "error" => why, "lease_left_ms" => self.keeper.lease_deadline()
                    .map_or(0, |d| d.saturating_duration_since(Instant::now()).as_millis() as u64));
        }
        let was_in_lease = self.keeper.in_lease(Instant::now());
        let round = self.keeper.store_unreachable(Instant::now(), &self.maxconn);
        if was_in_lease && !self.keeper.in_lease(Instant::now()) || !round.shares.is_empty() {
            warn!(self.log, "cluster lease may have ended; shares down to the fallback"; "servers" => round.shares.len());
        }
        self.enforce(&round).await;
    }

    /// Gives this instance's entries back and ends its lease.
    async fn leave(&mut self) {
        let left = async {
            let store = match self.store.as_mut() {
                Some(store) => store,
                None => self.store.insert(Store::connect(&self.settings).await?),
            };
            for _ in 0..3 {
                let reading = store.read().await?;
                let writes = self.keeper.leave(&reading);
                let mut all = true;
                for write in &writes {
                    all &= store.swap(write).await?;
                }
                if all {
                    break;
                }
            }
            store.revoke().await
        };
        match timeout(LEAVE_WITHIN, left).await {
            Ok(Ok(())) => info!(self.log, "cluster left"; "name" => &self.settings.name),
            Ok(Err(err)) => warn!(self.log, "cluster leave failed; the others take the slots when the lease ends";
                "error" => format!("{err:#}")),
            Err(_) => warn!(self.log, "cluster leave timed out; the others take the slots when the lease ends"),
        }
    }
}

/// Changes every `ROTATE_EVERY_SECS`, the same on every instance.
fn rotation() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / ROTATE_EVERY_SECS)
}
