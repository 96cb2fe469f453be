//! `random`: power of `draws` choices. Draw `draws` available servers at
//! random (weighted), keep the least loaded. Two draws already cut the
//! maximum load sharply compared with one (a purely random pick).

use std::net::IpAddr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Balancer, Candidate, Choice};

pub struct PowerOfChoices {
    draws: u32,
    rng: SmallRng,
}

impl PowerOfChoices {
    pub fn new(draws: u32, seed: u64) -> PowerOfChoices {
        PowerOfChoices { draws: draws.max(1), rng: SmallRng::seed_from_u64(seed) }
    }

    fn draw(&mut self, candidates: &[Candidate], total: u64) -> usize {
        let mut point = self.rng.gen_range(0..total);
        for (i, c) in candidates.iter().enumerate() {
            if !c.available || c.weight == 0 {
                continue;
            }
            if point < u64::from(c.weight) {
                return i;
            }
            point -= u64::from(c.weight);
        }
        unreachable!("point below the total weight")
    }
}

impl Balancer for PowerOfChoices {
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        let total: u64 = candidates.iter().filter(|c| c.available).map(|c| u64::from(c.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut best = self.draw(candidates, total);
        for _ in 1..self.draws {
            let other = self.draw(candidates, total);
            let (b, o) = (&candidates[best], &candidates[other]);
            // Strictly less loaded relative to weight; on a tie the first
            // (weighted) draw stands, so idle traffic still follows weights.
            if u64::from(o.load) * u64::from(b.weight) < u64::from(b.load) * u64::from(o.weight) {
                best = other;
            }
        }
        Some(Choice::Balanced(candidates[best].id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::*;

    /// Balls into bins: sessions arrive and stay; the fuller the worst bin,
    /// the worse the algorithm. Two draws must beat one.
    fn max_load(draws: u32) -> u32 {
        let mut b = PowerOfChoices::new(draws, 7);
        let mut c = candidates(&[1; 10]);
        for _ in 0..1000 {
            if let Some(Choice::Balanced(id)) = b.pick(&c, None) {
                c[id.0].load += 1;
            }
        }
        c.iter().map(|c| c.load).max().unwrap()
    }

    #[test]
    fn two_draws_beat_one() {
        let (one, two) = (max_load(1), max_load(2));
        assert!(two < one, "max load with 2 draws {two} not below 1 draw {one}");
        assert!(two <= 105, "2 draws should stay near the mean of 100: {two}");
    }
}
