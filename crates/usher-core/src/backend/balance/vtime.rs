//! Virtual-time deadlines: weighted round robin as earliest deadline first.
//!
//! Each server has a deadline on a virtual clock; a pick takes the server
//! with the earliest deadline (ties to the lower id), moves the clock to
//! that deadline and sets the server's next one a step of `1 / weight`
//! later. Over any window each server gets picks in proportion to its
//! weight, interleaved. A server that could not be picked for a while (full,
//! down) keeps its old deadline but is rescheduled from the clock, not from
//! that deadline, so it is owed at most one pick, never a burst. Unlike
//! nginx's smooth round robin (which adds every server's weight at every
//! pick), a pick changes one server's deadline, so an ordered index finds
//! the next one in O(log n).

/// Virtual time per pick of a server of weight 1. `u128` so that the
/// clock cannot wrap in the life of a process.
const STEP: u128 = 1 << 64;

#[derive(Debug, Clone, Default)]
pub(crate) struct Deadlines {
    next: Vec<u128>,
    clock: u128,
}

impl Deadlines {
    /// The deadline of server `i` (0 until it is first picked). Makes
    /// room for it, so that its first pick allocates nothing.
    pub fn of(&mut self, i: usize) -> u128 {
        if self.next.len() <= i {
            self.next.resize(i + 1, 0);
        }
        self.next[i]
    }

    /// Server `i`, of weight `weight` (> 0), was picked: returns its next
    /// deadline.
    pub fn picked(&mut self, i: usize, weight: u32) -> u128 {
        if self.next.len() <= i {
            self.next.resize(i + 1, 0);
        }
        self.clock = self.clock.max(self.next[i]);
        self.next[i] = self.clock + STEP / u128::from(weight.max(1));
        self.next[i]
    }
}
