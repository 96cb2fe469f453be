//! `leastconn`: the server with the fewest sessions — served plus queued —
//! relative to its weight; smooth weighted round robin among equals, so idle
//! traffic (every load 0) still follows the weights.

use std::net::IpAddr;

use super::{Balancer, Candidate, Choice, SmoothRoundRobin};

#[derive(Default)]
pub struct LeastConn {
    among_equals: Option<SmoothRoundRobin>,
}

impl Balancer for LeastConn {
    fn pick(&mut self, candidates: &[Candidate], client: Option<IpAddr>) -> Option<Choice> {
        let open = |c: &&Candidate| c.available && c.weight > 0;
        // load / weight, compared without division.
        let less = |a: &Candidate, b: &Candidate| {
            u64::from(a.load) * u64::from(b.weight) < u64::from(b.load) * u64::from(a.weight)
        };
        let best = candidates.iter().filter(open).fold(None::<&Candidate>, |best, c| match best {
            Some(b) if !less(c, b) => Some(b),
            _ => Some(c),
        })?;
        let equals: Vec<Candidate> =
            candidates.iter().map(|c| Candidate { available: open(&c) && !less(best, c), ..*c }).collect();
        self.among_equals.get_or_insert_with(|| SmoothRoundRobin::new(candidates.len())).pick(&equals, client)
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
