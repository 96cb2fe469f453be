//! Fair share between client sources: round robin across sources, kept in
//! each queue's order as a *round* number.
//!
//! A waiter's round is one past the round of its source's previous waiter
//! still queued, and never below the round being served: so one source
//! with 1 000 waiters has them in rounds r, r + 1, … r + 999, while
//! another source's single waiter joins round r and is served among the
//! first. Within a round, waiters keep their discipline's order. This is
//! start-time fair queueing with unit cost per session: no scan, no
//! per-source queue, one small map entry per source that has waiters.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::config::FairShare;

/// A client source as fair share and the per-source caps group them: the
/// address masked to the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    /// `client`'s source under `fair` (its whole address when fair share
    /// is off: the per-source caps count addresses then).
    pub fn of(client: IpAddr, fair: FairShare) -> SourceKey {
        let ipv4_prefix = match fair {
            FairShare::None => 32,
            FairShare::Source { ipv4_prefix } => ipv4_prefix,
        };
        let masked = match client {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(ipv4_prefix)).unwrap_or(0);
                IpAddr::from((u32::from(v4) & mask).to_be_bytes())
            }
            IpAddr::V6(v6) => {
                let bits = match fair {
                    FairShare::None => 128,
                    FairShare::Source { .. } => u32::from(FairShare::IPV6_PREFIX),
                };
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::from((u128::from(v6) & mask).to_be_bytes())
            }
        };
        SourceKey(masked)
    }
}

#[derive(Debug, Clone, Copy)]
struct SourceRounds {
    /// Round of its latest waiter.
    last: u64,
    /// Its waiters in this queue.
    queued: u32,
}

/// One queue's rounds.
#[derive(Debug, Default)]
pub struct FairRounds {
    /// The round being served: that of the last waiter served.
    serving: u64,
    sources: FxHashMap<SourceKey, SourceRounds>,
}

impl FairRounds {
    /// The round of a waiter of `source` joining now.
    pub fn join(&mut self, source: SourceKey) -> u64 {
        let serving = self.serving;
        let entry = self.sources.entry(source).or_insert(SourceRounds { last: serving, queued: 0 });
        let round = if entry.queued == 0 { serving.max(entry.last) } else { serving.max(entry.last + 1) };
        entry.last = round;
        entry.queued += 1;
        round
    }

    /// A waiter of `source` in `round` left the queue; `served`: it left
    /// because it was served (the round being served moves on).
    pub fn leave(&mut self, source: SourceKey, round: u64, served: bool) {
        if served {
            self.serving = self.serving.max(round);
        }
        if let Some(entry) = self.sources.get_mut(&source) {
            entry.queued = entry.queued.saturating_sub(1);
            if entry.queued == 0 {
                // Forgotten: a source that waits again starts at the round
                // being served, behind those already in it.
                self.sources.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_masked_to_their_prefix() {
        let fair = FairShare::Source { ipv4_prefix: 24 };
        let a = SourceKey::of("10.1.2.3".parse().unwrap(), fair);
        let b = SourceKey::of("10.1.2.200".parse().unwrap(), fair);
        let c = SourceKey::of("10.1.3.3".parse().unwrap(), fair);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v6 = |s: &str| SourceKey::of(s.parse().unwrap(), FairShare::Source { ipv4_prefix: 32 });
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::ffff:1"));
        assert_ne!(v6("2001:db8::1"), v6("2001:db8:0:1::1"));
        let whole = |s: &str| SourceKey::of(s.parse().unwrap(), FairShare::None);
        assert_ne!(whole("10.0.0.1"), whole("10.0.0.2"));
    }

    #[test]
    fn a_source_with_many_waiters_spreads_over_rounds() {
        let mut rounds = FairRounds::default();
        let many = SourceKey::of("10.0.0.1".parse().unwrap(), FairShare::None);
        let one = SourceKey::of("10.0.0.2".parse().unwrap(), FairShare::None);
        let got: Vec<u64> = (0..5).map(|_| rounds.join(many)).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(rounds.join(one), 0, "the lone waiter joins the round being served");
        rounds.leave(many, 0, true);
        rounds.leave(one, 0, true);
        rounds.leave(many, 1, true);
        assert_eq!(rounds.join(one), 1, "it comes back in the round being served");
    }
}
