//! `random`: power of `draws` choices. Draw `draws` available servers at
//! random (weighted), keep the least loaded. Two draws already cut the
//! maximum load sharply compared with one (a purely random pick).
//!
//! Cost per pick: O(draws · log n) — the weights of the ready servers of
//! each group are kept in a Fenwick tree, so a weighted draw is a descent
//! of the tree, and the server a retry avoids is left out of the draw
//! arithmetically. A server lowered by dynamic maxconn is drawn again (up
//! to [`REDRAWS`] times, then the ready servers are walked in id order:
//! the worst case, O(n), only with `minconn`/`fullconn`).

use std::net::IpAddr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Balancer, Choice, Servers};
use crate::ids::ServerId;

/// Draws that may land on a server without room before a pick walks.
const REDRAWS: u32 = 16;

/// Sums of weights by prefix of server ids (a Fenwick tree).
#[derive(Debug, Clone, Default)]
struct WeightTree {
    /// 1-based; the length is a power of two (or 0).
    tree: Vec<u64>,
    total: u64,
}

impl WeightTree {
    fn add(&mut self, i: usize, delta: i64) {
        let mut k = i + 1;
        while k < self.tree.len() {
            self.tree[k] = self.tree[k].wrapping_add_signed(delta);
            k += k & k.wrapping_neg();
        }
        self.total = self.total.wrapping_add_signed(delta);
    }

    /// Sum of the weights of the servers before `i`.
    fn prefix(&self, i: usize) -> u64 {
        let mut k = i;
        let mut sum = 0;
        while k > 0 {
            sum += self.tree[k];
            k &= k - 1;
        }
        sum
    }

    /// The server whose share of the line `[0, total)` holds `point`.
    fn find(&self, mut point: u64) -> usize {
        let mut at = 0;
        let mut step = (self.tree.len() / 2).max(1);
        while step > 0 {
            let next = at + step;
            if next < self.tree.len() && self.tree[next] <= point {
                point -= self.tree[next];
                at = next;
            }
            step /= 2;
        }
        at
    }

    /// Room for ids below `n`, keeping the weights in `weights`.
    fn grow(&mut self, n: usize, weights: impl Iterator<Item = (usize, u32)>) {
        let size = (n + 1).next_power_of_two();
        *self = WeightTree { tree: vec![0; size], total: 0 };
        for (i, w) in weights {
            self.add(i, i64::from(w));
        }
    }
}

pub struct PowerOfChoices {
    draws: u32,
    rng: SmallRng,
    /// Ready servers' weights, per group (0 actives, 1 backups).
    trees: [WeightTree; 2],
    /// Each server's entry in `trees`, if it has one: (group, weight).
    indexed: Vec<Option<(usize, u32)>>,
}

impl PowerOfChoices {
    pub fn new(draws: u32, seed: u64) -> PowerOfChoices {
        PowerOfChoices { draws: draws.max(1), rng: SmallRng::seed_from_u64(seed), trees: Default::default(), indexed: Vec::new() }
    }

    /// One weighted draw among the ready servers of `group`, the avoided
    /// one left out; redrawn while it lands on a server without room.
    fn draw(&mut self, servers: &Servers<'_>, group: usize) -> Option<usize> {
        let tree = &self.trees[group];
        let avoided = servers
            .avoided()
            .and_then(|a| self.indexed.get(a.0).copied().flatten().filter(|&(g, _)| g == group).map(|(_, w)| (a.0, w)));
        let (skip_from, skip) = avoided.map_or((u64::MAX, 0), |(a, w)| (tree.prefix(a), u64::from(w)));
        let total = tree.total - skip;
        if total == 0 {
            return None;
        }
        for _ in 0..REDRAWS {
            let mut point = self.rng.gen_range(0..total);
            if point >= skip_from {
                point += skip;
            }
            let i = self.trees[group].find(point);
            if servers.get(ServerId(i)).is_some_and(|c| c.available) {
                return Some(i);
            }
        }
        let indexed = &self.indexed;
        (0..indexed.len())
            .filter(|&i| indexed[i].is_some_and(|(g, _)| g == group))
            .find(|&i| servers.get(ServerId(i)).is_some_and(|c| c.available))
    }
}

impl Balancer for PowerOfChoices {
    // Picks only among available servers, never pins.
    fn only_balances(&self) -> bool {
        true
    }

    fn follows_server_changes(&self) -> bool {
        true
    }

    fn pick(&mut self, servers: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        if servers.blocked() {
            return None;
        }
        let group = servers.group_in_use();
        let mut best = self.draw(servers, group)?;
        for _ in 1..self.draws {
            let Some(other) = self.draw(servers, group) else { break };
            let (Some(b), Some(o)) = (servers.get(ServerId(best)), servers.get(ServerId(other))) else { break };
            // Strictly less loaded relative to weight; on a tie the first
            // (weighted) draw stands, so idle traffic still follows weights.
            if u64::from(o.load) * u64::from(b.weight) < u64::from(b.load) * u64::from(o.weight) {
                best = other;
            }
        }
        Some(Choice::Balanced(ServerId(best)))
    }

    fn candidate_changed(&mut self, server: ServerId, servers: &Servers<'_>) {
        let Some(standing) = servers.standing(server) else { return };
        let i = server.0;
        if self.indexed.len() <= i {
            self.indexed.resize(i + 1, None);
        }
        if let Some((group, weight)) = self.indexed[i].take() {
            self.trees[group].add(i, -i64::from(weight));
        }
        if !standing.ready {
            return;
        }
        let group = standing.group();
        if self.trees[group].tree.len() <= i + 1 {
            let weights: Vec<(usize, u32)> = (0..self.indexed.len())
                .filter_map(|k| self.indexed[k].filter(|&(g, _)| g == group).map(|(_, w)| (k, w)))
                .collect();
            self.trees[group].grow(self.indexed.len().max(i + 1), weights.into_iter());
        }
        self.trees[group].add(i, i64::from(standing.weight));
        self.indexed[i] = Some((group, standing.weight));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Table;
    use super::*;

    /// Balls into bins: sessions arrive and stay; the fuller the worst bin,
    /// the worse the algorithm. Two draws must beat one.
    fn max_load(draws: u32) -> u32 {
        let mut b = PowerOfChoices::new(draws, 7);
        let mut t = Table::new(&[1; 10], &mut b);
        let mut load = [0u32; 10];
        for _ in 0..1000 {
            if let Some(Choice::Balanced(id)) = b.pick(&t.view(), None) {
                load[id.0] += 1;
                t.set_load(id.0, load[id.0], &mut b);
            }
        }
        load.into_iter().max().unwrap()
    }

    #[test]
    fn two_draws_beat_one() {
        let (one, two) = (max_load(1), max_load(2));
        assert!(two < one, "max load with 2 draws {two} not below 1 draw {one}");
        assert!(two <= 105, "2 draws should stay near the mean of 100: {two}");
    }

    #[test]
    fn draws_follow_weights_and_skip_the_full() {
        let mut b = PowerOfChoices::new(1, 3);
        let mut t = Table::new(&[3, 1, 1], &mut b);
        t.set_full(2, true, &mut b);
        let mut count = [0u32; 3];
        for _ in 0..4000 {
            if let Some(Choice::Balanced(id)) = b.pick(&t.view(), None) {
                count[id.0] += 1;
            }
        }
        assert_eq!(count[2], 0, "a full server is never drawn");
        assert!((2_800..=3_200).contains(&count[0]), "weight 3 of 4: {count:?}");
    }
}
