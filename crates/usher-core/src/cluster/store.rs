//! The etcd side of the cluster protocol: one connection, one lease, the
//! member key published under it, the readings and the compare-and-swaps.
//! No decisions here: they are the keeper's.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp};
use std::time::Instant;

use super::keeper::{Reading, ServerKey, Write};
use super::plan::Holders;
use crate::config::ClusterSettings;

/// Keys under the cluster's prefix.
struct Keys {
    members: String,
    holders: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys { members: format!("{prefix}/members/"), holders: format!("{prefix}/holders/") }
    }
}

pub struct Store {
    client: Client,
    keys: Keys,
    name: String,
    lease: Option<Lease>,
    ttl: Duration,
}

struct Lease {
    id: i64,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

/// A keep-alive (or a new lease) was answered: the lease is alive for a
/// TTL from when it was sent.
pub struct Renewed {
    pub sent: Instant,
    /// A new lease: the old one ended (or there was none).
    pub fresh: bool,
}

impl Store {
    pub async fn connect(settings: &ClusterSettings) -> anyhow::Result<Store> {
        let options = ConnectOptions::new()
            .with_connect_timeout(settings.period)
            .with_timeout(settings.period)
            // A member cut off from its cluster's leader must not answer.
            .with_require_leader(true);
        let client = Client::connect(&settings.etcd, Some(options)).await.context("cannot connect to etcd")?;
        Ok(Store {
            client,
            keys: Keys::new(&settings.prefix),
            name: settings.name.clone(),
            lease: None,
            ttl: settings.lease_ttl,
        })
    }

    /// Keeps the lease alive, or takes a new one when it ended.
    pub async fn renew(&mut self) -> anyhow::Result<Renewed> {
        let sent = Instant::now();
        if let Some(lease) = &mut self.lease {
            lease.keeper.keep_alive().await.context("lease keep-alive")?;
            match lease.answers.message().await.context("lease keep-alive answer")? {
                Some(answer) if answer.ttl() > 0 => return Ok(Renewed { sent, fresh: false }),
                _ => self.lease = None,
            }
        }
        let sent = Instant::now();
        let granted = self.client.lease_grant(self.ttl.as_secs() as i64, None).await.context("lease grant")?;
        let (keeper, answers) = self.client.lease_keep_alive(granted.id()).await.context("lease keep-alive stream")?;
        self.lease = Some(Lease { id: granted.id(), keeper, answers });
        Ok(Renewed { sent, fresh: true })
    }

    /// Publishes this instance's demand per server under its lease.
    pub async fn publish(&mut self, demand: &BTreeMap<ServerKey, u32>) -> anyhow::Result<()> {
        let lease = self.lease.as_ref().ok_or_else(|| anyhow!("no lease"))?.id;
        let key = format!("{}{}", self.keys.members, self.name);
        let value = serde_json::to_vec(demand)?;
        self.client.put(key, value, Some(PutOptions::new().with_lease(lease))).await.context("publish demand")?;
        Ok(())
    }

    /// Live instances and every server's holders record.
    pub async fn read(&mut self) -> anyhow::Result<Reading> {
        let mut reading = Reading::default();
        let members = self.client.get(self.keys.members.as_str(), Some(GetOptions::new().with_prefix())).await?;
        for kv in members.kvs() {
            let name = String::from_utf8_lossy(&kv.key()[self.keys.members.len()..]).into_owned();
            // A member whose record does not parse still counts, asking nothing.
            let demand = serde_json::from_slice(kv.value()).unwrap_or_default();
            reading.members.insert(name, demand);
        }
        // The holders as of the same revision as the members: read later,
        // they could hold an entry a member wrote under a lease this
        // reading does not show yet, and this instance would trim it as a
        // gone holder's — with a compare-and-swap that would succeed.
        let at = members.header().map_or(0, |h| h.revision());
        let holders =
            self.client.get(self.keys.holders.as_str(), Some(GetOptions::new().with_prefix().with_revision(at))).await?;
        for kv in holders.kvs() {
            let server = String::from_utf8_lossy(&kv.key()[self.keys.holders.len()..]).into_owned();
            let record: Holders = serde_json::from_slice(kv.value())
                .with_context(|| format!("holders record of {server} is not one usher wrote"))?;
            reading.holders.insert(server, (record, kv.mod_revision()));
        }
        Ok(reading)
    }

    /// The write's record in place of its revision. `false`: the record
    /// changed since it was read; nothing was written.
    pub async fn swap(&mut self, write: &Write) -> anyhow::Result<bool> {
        let key = format!("{}{}", self.keys.holders, write.server);
        // Revision 0 compares as "no such key yet".
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, write.revision)])
            .and_then([TxnOp::put(key.as_str(), serde_json::to_vec(&write.holders)?, None)]);
        Ok(self.client.txn(txn).await.context("holders compare-and-swap")?.succeeded())
    }

    /// Ends the lease at once (a graceful stop): the member key goes with it.
    pub async fn revoke(&mut self) -> anyhow::Result<()> {
        if let Some(lease) = self.lease.take() {
            self.client.lease_revoke(lease.id).await.context("lease revoke")?;
        }
        Ok(())
    }
}
