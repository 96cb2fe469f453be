//! `first`: the first server in declaration order with a free slot. Weights
//! are ignored; servers fill one after the other, which lets idle ones be
//! powered down (use it with `maxconn`).

use std::net::IpAddr;

use super::{Balancer, Candidate, Choice};

pub struct First;

impl Balancer for First {
    fn pick(&mut self, candidates: &[Candidate], _: Option<IpAddr>) -> Option<Choice> {
        candidates.iter().find(|c| c.available).map(|c| Choice::Balanced(c.id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::*;
    use crate::ids::ServerId;

    #[test]
    fn fills_in_order() {
        let mut c = candidates(&[1, 5, 1]);
        assert_eq!(First.pick(&c, None), Some(Choice::Balanced(ServerId(0))));
        c[0].available = false;
        assert_eq!(First.pick(&c, None), Some(Choice::Balanced(ServerId(1))));
    }
}
