//! One instance's decision for one server, from one reading of the cluster
//! store: the share it may use now, and the entry it writes.
//!
//! The store keeps, per server, the *holders* record: how many slots each
//! instance may be using (its entry). It is changed only by a
//! compare-and-swap on its revision, and a change that raises an entry is
//! made only if the entries then sum to at most the server's maxconn.
//! An instance's entry always covers both its share (the limit its Server
//! actor enforces) and the sessions it still has on that server:
//!
//! - to grow, it writes the bigger entry first and raises its share only
//!   once the write is in;
//! - to shrink, it lowers its share at once and lowers its entry only as
//!   its sessions end.
//!
//! So the entries always cover what every instance uses, and they never
//! sum above maxconn: the server never sees more than maxconn, and
//! capacity moves from one instance to another only after the first has
//! shrunk and written so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::allocation::allocate;

/// The holders record of one server, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holders {
    /// Instance name → slots it may be using.
    pub entries: BTreeMap<String, u32>,
}

impl Holders {
    pub fn total(&self) -> u64 {
        self.entries.values().map(|&n| u64::from(n)).sum()
    }

    pub fn of(&self, instance: &str) -> u32 {
        self.entries.get(instance).copied().unwrap_or(0)
    }
}

/// What one reading of the store says about one server.
#[derive(Debug, Clone, Copy)]
pub struct ServerView<'a> {
    /// The server's maxconn: the whole cluster's bound.
    pub maxconn: u32,
    /// Live instances (their store lease is alive), sorted by name, with
    /// their demand for this server (sessions live and queued).
    pub members: &'a [(String, u32)],
    pub holders: &'a Holders,
    /// Picks who gets the slots that do not divide evenly.
    pub rotation: u64,
    /// What an instance that has lost the store may still use after its
    /// lease ended; kept for every holder whose lease is gone.
    pub fallback: u32,
}

/// This instance's own state for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The share its Server actor enforces now.
    pub share: u32,
    /// Sessions holding a slot on the server, read while `share` was in
    /// force: until a lower share is in force, sessions may still be
    /// granted up to `share`, so the entry keeps covering it.
    pub served: u32,
    /// A write of this instance's has gone in under its current lease.
    /// Until then its entry in the record may be left over from an earlier
    /// lease that the others saw end, and they may be trimming it right
    /// now from a reading older than this one: the entry is relied on only
    /// to lower the share, and a write (even of the same record) must go
    /// in first — its compare-and-swap fails any such trim, or fails
    /// after it.
    pub confirmed: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The share to enforce at once: never above this instance's entry in
    /// the record read, never above its allocation.
    pub share_now: u32,
    /// A new record to compare-and-swap in, and the share to enforce once
    /// it is in.
    pub write: Option<(Holders, u32)>,
    /// This instance's allocation in the reading.
    pub target: u32,
}

/// Decides for instance `me`.
pub fn plan(me: &str, view: ServerView<'_>, local: Local) -> Plan {
    let live = |name: &str| view.members.iter().any(|(m, _)| m == name);
    // A holder whose lease is gone is either dead (it uses nothing) or cut
    // off from the store (it drops to `fallback` when its lease ends):
    // keep `fallback` for it, no more.
    let mut next = Holders::default();
    let mut ghosts = 0u64;
    for (name, &held) in &view.holders.entries {
        if name == me {
            continue;
        }
        let kept = if live(name) { held } else { held.min(view.fallback) };
        if !live(name) {
            ghosts += u64::from(kept);
        }
        if kept > 0 {
            next.entries.insert(name.clone(), kept);
        }
    }
    let capacity = u64::from(view.maxconn).saturating_sub(ghosts) as u32;
    let demands: Vec<u32> = view.members.iter().map(|(_, d)| *d).collect();
    let shares = allocate(capacity, &demands, view.rotation);
    let target = view.members.iter().position(|(m, _)| m == me).map_or(0, |i| shares[i]);

    let held = view.holders.of(me);
    let usable = if local.confirmed { held } else { held.min(local.share) };
    let share_now = target.min(usable);
    // The entry must cover every session still seated and, until a lower
    // share is in force and read back, the share in force when `served`
    // was read (grants up to it may have happened since).
    let want = target.max(local.served).max(local.share.min(held));
    let others = next.total();
    let entry = if want > held {
        let room = u64::from(view.maxconn).saturating_sub(others);
        (u64::from(want).min(room) as u32).max(held)
    } else {
        want
    };
    if entry > 0 {
        next.entries.insert(me.to_owned(), entry);
    }
    let write = (next != *view.holders || !local.confirmed).then(|| (next, target.min(entry)));
    Plan { share_now, write, target }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(entries: &[(&str, u32)]) -> Holders {
        Holders { entries: entries.iter().map(|(n, h)| ((*n).to_owned(), *h)).collect() }
    }

    fn members(m: &[(&str, u32)]) -> Vec<(String, u32)> {
        m.iter().map(|(n, d)| ((*n).to_owned(), *d)).collect()
    }

    fn view<'a>(members: &'a [(String, u32)], holders: &'a Holders) -> ServerView<'a> {
        ServerView { maxconn: 10, members, holders, rotation: 0, fallback: 0 }
    }

    #[test]
    fn a_newcomer_takes_only_what_is_free() {
        let m = members(&[("a", 50), ("b", 50)]);
        let h = holders(&[("a", 10)]);
        let p = plan("b", view(&m, &h), Local { share: 0, served: 0, confirmed: true });
        assert_eq!(p.target, 5);
        assert_eq!(p.share_now, 0, "nothing held yet");
        assert_eq!(p.write, None, "a holds all ten: no room, nothing to write");
        // a shrinks its share at once but keeps its entry while its sessions end.
        let p = plan("a", view(&m, &h), Local { share: 10, served: 10, confirmed: true });
        assert_eq!((p.share_now, p.write), (5, None));
        let p = plan("a", view(&m, &h), Local { share: 5, served: 7, confirmed: true });
        assert_eq!(p.write, Some((holders(&[("a", 7)]), 5)));
        // Now b can grow into the three freed slots, and no further.
        let h = holders(&[("a", 7)]);
        let p = plan("b", view(&m, &h), Local { share: 0, served: 0, confirmed: true });
        assert_eq!(p.write, Some((holders(&[("a", 7), ("b", 3)]), 3)));
    }

    #[test]
    fn a_share_within_the_entry_needs_no_write() {
        let m = members(&[("a", 0), ("b", 0)]);
        let h = holders(&[("a", 5), ("b", 5)]);
        let p = plan("a", view(&m, &h), Local { share: 2, served: 0, confirmed: true });
        assert_eq!((p.share_now, p.write), (5, None));
    }

    #[test]
    fn a_gone_holder_keeps_only_the_fallback() {
        let m = members(&[("a", 20)]);
        let h = holders(&[("a", 4), ("dead", 6)]);
        let p = plan("a", view(&m, &h), Local { share: 4, served: 4, confirmed: true });
        assert_eq!(p.write, Some((holders(&[("a", 10)]), 10)), "fallback 0: the dead one's slots are taken");
        let p = plan("a", ServerView { fallback: 3, ..view(&m, &h) }, Local { share: 4, served: 4, confirmed: true });
        assert_eq!(p.write, Some((holders(&[("a", 7), ("dead", 3)]), 7)));
    }

    #[test]
    fn an_entry_from_an_earlier_lease_is_written_again_before_it_is_used() {
        // b's lease ended and a new one began: its old entry of 5 may be
        // being trimmed by a, which saw it gone.
        let m = members(&[("a", 0), ("b", 0)]);
        let h = holders(&[("a", 5), ("b", 5)]);
        let p = plan("b", view(&m, &h), Local { share: 0, served: 0, confirmed: false });
        assert_eq!(p.share_now, 0, "not raised from the old entry");
        assert_eq!(p.write, Some((h.clone(), 5)), "the same record, written again to claim it");
        // Lowering on an unconfirmed entry needs no write first.
        let p = plan("b", view(&m, &h), Local { share: 8, served: 0, confirmed: false });
        assert_eq!(p.share_now, 5);
    }

    #[test]
    fn an_instance_not_yet_a_member_gets_nothing() {
        let m = members(&[("a", 0)]);
        let h = holders(&[("a", 10)]);
        let p = plan("new", view(&m, &h), Local { share: 0, served: 0, confirmed: true });
        assert_eq!((p.target, p.share_now, p.write), (0, 0, None));
    }
}
