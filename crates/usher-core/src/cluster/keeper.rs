//! One instance's side of the cluster protocol, with no store client and
//! no actix in it: the shares its Server actors enforce, when its lease
//! may have ended, and what each reading of the store makes it do. The
//! cluster agent runs it; the model tests drive this same struct against
//! a simulated store under random interleavings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::plan::{plan, Holders, Local, ServerView};

/// A server, cluster-wide: `backend/server`.
pub type ServerKey = String;

/// What an instance cut off from the store may still use, per server,
/// once its lease may have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Nothing: a cut-off instance seats no one new, and the others take
    /// its slots once its lease ends.
    Nothing,
    /// maxconn ÷ `expected` instances (rounded down), and every other
    /// instance keeps that much free for it.
    Even { expected: u32 },
}

impl Fallback {
    pub fn share_of(self, maxconn: u32) -> u32 {
        match self {
            Fallback::Nothing => 0,
            Fallback::Even { expected } => maxconn / expected.max(1),
        }
    }
}

/// One reading of the store: live instances with their demands, and every
/// server's holders record with its revision (0: none stored yet).
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Instance name → demand per server. Sorted by name.
    pub members: BTreeMap<String, BTreeMap<ServerKey, u32>>,
    pub holders: BTreeMap<ServerKey, (Holders, i64)>,
}

/// This instance's figures for one server, read after its shares were in
/// force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub maxconn: u32,
    /// Sessions holding a slot.
    pub served: u32,
    /// Sessions live and queued: what it asks for.
    pub demand: u32,
}

/// A compare-and-swap to make: `holders` in place of revision `revision`,
/// and `share` to enforce once it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub server: ServerKey,
    pub holders: Holders,
    pub revision: i64,
    pub share: u32,
    /// The lease it was decided under: a write that goes in after that
    /// lease may have ended raises nothing.
    pub lease: u64,
}

/// What a reading makes the instance do: shares to enforce at once, then
/// the writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub shares: Vec<(ServerKey, u32)>,
    pub writes: Vec<Write>,
}

#[derive(Debug)]
pub struct ShareKeeper {
    me: String,
    fallback: Fallback,
    lease_ttl: Duration,
    /// Shares in force (what the Server actors were told).
    shares: BTreeMap<ServerKey, u32>,
    /// Until when the lease is surely alive: the last keep-alive that was
    /// answered, counted from when it was *sent*, plus the TTL less a
    /// margin. `None`: no lease yet, or it may have ended.
    lease_until: Option<Instant>,
    /// Servers whose holders record took a write of this instance's under
    /// its current lease: only there is its entry surely its own (see
    /// [`Local::confirmed`](super::plan::Local)).
    confirmed: BTreeSet<ServerKey>,
    /// Per server, the revision its last write was decided on, while that
    /// write may still go in: a reading at that same revision does not yet
    /// show it, and it may lower this instance's entry after the reading —
    /// so the entry read is not used to raise the share (it is claimed by
    /// a write first, as an entry of an earlier lease is). Cleared once the
    /// write went in, or a reading shows a later revision (it went in, or
    /// never will).
    unsettled: BTreeMap<ServerKey, i64>,
    /// Counts the leases this instance has had: bumped each time one may
    /// have ended.
    lease: u64,
    /// Last allocation per server (reports).
    targets: BTreeMap<ServerKey, u32>,
    members: usize,
}

/// Clocks drift and the store's timer is not ours: count the lease as
/// over a little before its TTL has passed.
const LEASE_MARGIN_PERCENT: u32 = 10;

impl ShareKeeper {
    pub fn new(me: impl Into<String>, fallback: Fallback, lease_ttl: Duration) -> ShareKeeper {
        ShareKeeper {
            me: me.into(),
            fallback,
            lease_ttl,
            shares: BTreeMap::new(),
            lease_until: None,
            confirmed: BTreeSet::new(),
            unsettled: BTreeMap::new(),
            lease: 0,
            targets: BTreeMap::new(),
            members: 0,
        }
    }

    /// The share in force for `server` (0 until the first allocation).
    pub fn share(&self, server: &str) -> u32 {
        self.shares.get(server).copied().unwrap_or(0)
    }

    /// Its last allocation for `server` (the model tests check that shares
    /// settle on it).
    #[cfg(feature = "internals")]
    pub fn target(&self, server: &str) -> u32 {
        self.targets.get(server).copied().unwrap_or(0)
    }

    /// Live instances in the last reading.
    pub fn members(&self) -> usize {
        self.members
    }

    /// The lease is surely alive now.
    pub fn in_lease(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|until| now < until)
    }

    /// A keep-alive (or the grant) sent at `sent` was answered.
    pub fn lease_renewed(&mut self, sent: Instant) {
        let ttl = self.lease_ttl * (100 - LEASE_MARGIN_PERCENT) / 100;
        self.lease_until = Some(sent + ttl);
    }

    /// The lease is gone (the store said so, or it was revoked).
    pub fn lease_lost(&mut self) {
        self.lease_until = None;
        self.lease_may_have_ended();
    }

    /// Entries written under the old lease may be trimmed by the others
    /// from now on: each must be claimed again, and writes decided before
    /// raise nothing when they go in.
    fn lease_may_have_ended(&mut self) {
        self.confirmed.clear();
        self.lease += 1;
    }

    /// When the shares must drop to the fallback unless the lease is
    /// renewed first: the agent arms a timer for it, so a round stuck on a
    /// slow store cannot keep shares past the lease.
    pub fn lease_deadline(&self) -> Option<Instant> {
        self.lease_until
    }

    /// The store could not be read or written this round. While the lease
    /// is surely alive nobody takes this instance's slots, so its shares
    /// stay; after that each drops to the fallback.
    pub fn store_unreachable(&mut self, now: Instant, maxconn: &BTreeMap<ServerKey, u32>) -> Round {
        let mut round = Round::default();
        if self.in_lease(now) {
            return round;
        }
        if self.lease_until.take().is_some() {
            self.lease_may_have_ended();
        }
        for (server, share) in self.shares.iter_mut() {
            let fallback = maxconn.get(server).map_or(0, |&m| self.fallback.share_of(m));
            if *share > fallback {
                *share = fallback;
                round.shares.push((server.clone(), fallback));
            }
        }
        round
    }

    /// Decides from one reading. `usage` has every limited server this
    /// instance runs; a server absent from it is no longer ours. `rotation`
    /// is the same on every instance for a while (say, the wall clock in
    /// tens of seconds) plus anything stable per server.
    pub fn on_reading(&mut self, now: Instant, reading: &Reading, usage: &BTreeMap<ServerKey, Usage>, rotation: u64) -> Round {
        self.members = reading.members.len();
        if !self.in_lease(now) {
            // Not a member for sure: take nothing new (a write could race
            // with the others trimming this instance's entry as a ghost).
            return self.store_unreachable(now, &usage.iter().map(|(k, u)| (k.clone(), u.maxconn)).collect());
        }
        let mut round = Round::default();
        self.shares.retain(|server, _| usage.contains_key(server));
        let empty = (Holders::default(), 0);
        for (server, u) in usage {
            let members: Vec<(String, u32)> = reading
                .members
                .iter()
                .map(|(name, demands)| {
                    let demand = if *name == self.me { u.demand } else { demands.get(server).copied().unwrap_or(0) };
                    (name.clone(), demand)
                })
                .collect();
            let (holders, revision) = reading.holders.get(server).unwrap_or(&empty);
            if self.unsettled.get(server).is_some_and(|sent| sent < revision) {
                self.unsettled.remove(server);
            }
            let view = ServerView {
                maxconn: u.maxconn,
                members: &members,
                holders,
                rotation: rotation.wrapping_add(stable_hash(server)),
                fallback: self.fallback.share_of(u.maxconn),
            };
            let share = self.share(server);
            let confirmed = self.confirmed.contains(server) && !self.unsettled.contains_key(server);
            let p = plan(&self.me, view, Local { share, served: u.served, confirmed });
            self.targets.insert(server.clone(), p.target);
            if p.share_now != share || !self.shares.contains_key(server) {
                self.shares.insert(server.clone(), p.share_now);
                round.shares.push((server.clone(), p.share_now));
            }
            if let Some((holders, share)) = p.write {
                self.unsettled.insert(server.clone(), *revision);
                round.writes.push(Write { server: server.clone(), holders, revision: *revision, share, lease: self.lease });
            }
        }
        round
    }

    /// A write is in: the share it was made for may be enforced — while
    /// the lease is surely alive. Past that, the others may already be
    /// trimming this instance's entry as a gone holder's.
    pub fn committed(&mut self, write: &Write, now: Instant) -> Option<u32> {
        if self.unsettled.get(&write.server) == Some(&write.revision) {
            self.unsettled.remove(&write.server);
        }
        if !self.in_lease(now) || write.lease != self.lease {
            return None;
        }
        self.confirmed.insert(write.server.clone());
        let share = self.shares.entry(write.server.clone()).or_insert(0);
        if write.share > *share {
            *share = write.share;
            return Some(write.share);
        }
        None
    }

    /// This instance's entries to remove on a graceful stop, once every
    /// session has ended.
    pub fn leave(&mut self, reading: &Reading) -> Vec<Write> {
        self.shares.values_mut().for_each(|s| *s = 0);
        reading
            .holders
            .iter()
            .filter(|(_, (h, _))| h.entries.contains_key(&self.me))
            .map(|(server, (h, revision))| {
                let mut holders = h.clone();
                holders.entries.remove(&self.me);
                Write { server: server.clone(), holders, revision: *revision, share: 0, lease: self.lease }
            })
            .collect()
    }
}

/// The same number for the same server on every instance (std's hasher is
/// seeded per process, so it cannot be used).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
