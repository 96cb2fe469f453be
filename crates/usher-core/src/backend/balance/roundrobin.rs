//! Smooth weighted round robin (as in nginx): over any window, each server
//! gets picks in proportion to its weight, interleaved rather than in bursts.
//! Servers that cannot take a session now are skipped without accumulating
//! credit, so a full server is not "owed" a burst when it frees up.
//!
//! `roundrobin` follows weight changes at run time (slowstart, the admin
//! API); `static-rr` keeps the configured weights.

use std::net::IpAddr;

use super::{Balancer, Candidate, Choice};

pub struct SmoothRoundRobin {
    current: Vec<i64>,
    /// `static-rr`: the configured weights, used instead of the live ones.
    fixed: Option<Vec<u32>>,
}

impl SmoothRoundRobin {
    pub fn new(servers: usize) -> SmoothRoundRobin {
        SmoothRoundRobin { current: vec![0; servers], fixed: None }
    }

    pub fn with_static_weights(weights: &[u32]) -> SmoothRoundRobin {
        SmoothRoundRobin { current: vec![0; weights.len()], fixed: Some(weights.to_vec()) }
    }
}

impl Balancer for SmoothRoundRobin {
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        if self.current.len() < candidates.len() {
            self.current.resize(candidates.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            // static-rr keeps the configured weight while the live one is
            // non-zero (0 still takes a server out); a server configured at
            // weight 0 has nothing to keep and follows the live weight, or
            // raising it at run time would never bring it traffic.
            let weight = match &self.fixed {
                Some(fixed) if c.weight > 0 => fixed.get(i).copied().filter(|&w| w > 0).unwrap_or(c.weight),
                _ => c.weight,
            };
            if !c.available || weight == 0 {
                continue;
            }
            self.current[i] += i64::from(weight);
            total += i64::from(weight);
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(Choice::Balanced(candidates[best].id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates as cands;
    use super::*;
    use crate::ids::ServerId;

    fn pick(rr: &mut SmoothRoundRobin, c: &[Candidate]) -> Option<usize> {
        match rr.pick(c, None) {
            Some(Choice::Balanced(ServerId(i))) => Some(i),
            _ => None,
        }
    }

    #[test]
    fn follows_weights_smoothly() {
        let mut rr = SmoothRoundRobin::new(3);
        let c = cands(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| pick(&mut rr, &c).unwrap()).collect();
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
            assert_eq!(pick(&mut rr, &c), Some(1));
        }
        c[1].available = false;
        assert_eq!(pick(&mut rr, &c), None);
    }

    #[test]
    fn static_rr_ignores_weight_changes() {
        let mut rr = SmoothRoundRobin::with_static_weights(&[1, 1]);
        let mut c = cands(&[1, 1]);
        c[0].weight = 9;
        let picks: Vec<usize> = (0..10).map(|_| pick(&mut rr, &c).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5);
    }

    #[test]
    fn static_rr_serves_a_server_configured_at_weight_zero_once_raised() {
        let mut rr = SmoothRoundRobin::with_static_weights(&[1, 0]);
        let mut c = cands(&[1, 0]);
        assert!((0..4).all(|_| pick(&mut rr, &c) == Some(0)), "weight 0: no traffic");
        c[1] = cands(&[1, 1])[1];
        let picks: Vec<usize> = (0..10).map(|_| pick(&mut rr, &c).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 5);
        c[0] = cands(&[0])[0];
        assert!((0..4).all(|_| pick(&mut rr, &c) == Some(1)), "live weight 0 still takes a server out");
    }
}
