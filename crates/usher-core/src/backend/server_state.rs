//! A Server's slot ledger: how many of its `maxconn` slots are out.
//!
//! A slot is *out* while the BackendQueue holds it as a free credit or a
//! session holds it. The Server lends every free slot to its BackendQueue
//! (`Dequeue`) and gets it back only through `Release`, so
//! `out <= maxconn` at every step and a slot is never in two places.

use super::limit::Limit;

#[derive(Debug, Clone)]
pub struct ServerState {
    /// Unlimited: no credits circulate.
    maxconn: Limit,
    /// Slots lent to the BackendQueue or held by sessions.
    out: u32,
}

impl ServerState {
    /// `maxconn`: 0 = unlimited.
    pub fn new(maxconn: u32) -> ServerState {
        ServerState { maxconn: Limit::from_config(maxconn), out: 0 }
    }

    pub fn unlimited(&self) -> bool {
        self.maxconn.is_unlimited()
    }

    /// As configured, for logs: 0 = unlimited.
    pub fn maxconn(&self) -> u32 {
        self.maxconn.get().unwrap_or(0)
    }

    pub fn out(&self) -> u32 {
        self.out
    }

    /// Credits to lend now: every slot not yet out.
    pub fn lend_free(&mut self) -> u32 {
        let Some(maxconn) = self.maxconn.get() else { return 0 };
        let free = maxconn.saturating_sub(self.out);
        self.out += free;
        free
    }

    /// Changes `maxconn` at run time. Raising it lends the new slots at once
    /// (returned); lowering it lends nothing back until `out` is below it.
    pub fn set_maxconn(&mut self, maxconn: u32) -> u32 {
        debug_assert!(maxconn > 0, "a limited server stays limited");
        self.maxconn = Limit::from_config(maxconn);
        self.lend_free()
    }

    /// A session gave its slot back. Returns the credits to lend again.
    pub fn release(&mut self) -> u32 {
        if self.unlimited() {
            return 0;
        }
        debug_assert!(self.out > 0, "release without a slot out");
        self.out = self.out.saturating_sub(1);
        self.lend_free()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_maxconn_out() {
        let mut s = ServerState::new(2);
        assert_eq!(s.lend_free(), 2);
        assert_eq!(s.lend_free(), 0);
        assert_eq!(s.release(), 1);
        assert_eq!(s.out(), 2);
        let mut u = ServerState::new(0);
        assert_eq!(u.lend_free(), 0);
        assert_eq!(u.release(), 0);
    }
}
