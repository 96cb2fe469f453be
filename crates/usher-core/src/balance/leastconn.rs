//! `leastconn`: the server with the fewest sessions — served plus queued —
//! relative to its weight; round robin among equals (HAProxy's leastconn).

use std::net::IpAddr;

use super::{least_loaded, Balancer, Candidate, Choice};

#[derive(Default)]
pub struct LeastConn {
    next: usize,
}

impl Balancer for LeastConn {
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        if candidates.is_empty() {
            return None;
        }
        let i = least_loaded(candidates, self.next % candidates.len(), |_| true)?;
        self.next = i + 1;
        Some(Choice::Balanced(candidates[i].id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::*;
    use crate::ids::ServerId;

    #[test]
    fn follows_load_and_rotates_ties() {
        let mut lc = LeastConn::default();
        let mut c = candidates(&[1, 1, 1]);
        c[0].load = 3;
        c[1].load = 1;
        c[2].load = 1;
        let a = lc.pick(&c, None);
        let b = lc.pick(&c, None);
        assert_ne!(a, b, "ties rotate");
        assert!(matches!(a, Some(Choice::Balanced(ServerId(1 | 2)))));
        c[1].load = 0;
        assert_eq!(lc.pick(&c, None), Some(Choice::Balanced(ServerId(1))));
        // Relative to weight: 4 sessions on weight 4 beat 2 on weight 1.
        let mut w = candidates(&[4, 1]);
        w[0].load = 4;
        w[1].load = 2;
        assert_eq!(LeastConn::default().pick(&w, None), Some(Choice::Balanced(ServerId(0))));
    }
}
