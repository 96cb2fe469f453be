//! Smooth weighted round robin (as in nginx): over any window, each server
//! gets picks in proportion to its weight, interleaved rather than in bursts.
//! Servers that cannot take a session now are skipped without accumulating
//! credit, so a full server is not "owed" a burst when it frees up.

use super::{Balancer, Candidate};
use crate::ids::ServerId;

pub struct SmoothRoundRobin {
    current: Vec<i64>,
}

impl SmoothRoundRobin {
    pub fn new(servers: usize) -> SmoothRoundRobin {
        SmoothRoundRobin { current: vec![0; servers] }
    }
}

impl Balancer for SmoothRoundRobin {
    fn pick(&mut self, candidates: &[Candidate]) -> Option<ServerId> {
        if self.current.len() < candidates.len() {
            self.current.resize(candidates.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if !c.available || c.weight == 0 {
                continue;
            }
            self.current[i] += i64::from(c.weight);
            total += i64::from(c.weight);
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(candidates[best].id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights.iter().enumerate().map(|(i, &w)| Candidate { id: ServerId(i), weight: w, available: true }).collect()
    }

    #[test]
    fn follows_weights_smoothly() {
        let mut rr = SmoothRoundRobin::new(3);
        let c = cands(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(&c).unwrap().0).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5);
        // Smooth: the heavy server never gets all five in a row.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn skips_unavailable() {
        let mut rr = SmoothRoundRobin::new(2);
        let mut c = cands(&[1, 1]);
        c[0].available = false;
        for _ in 0..4 {
            assert_eq!(rr.pick(&c), Some(ServerId(1)));
        }
        c[1].available = false;
        assert_eq!(rr.pick(&c), None);
    }
}
