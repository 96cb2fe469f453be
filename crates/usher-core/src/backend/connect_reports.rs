//! Where sessions report their connect attempts for passive health
//! (`check.down_after_failed_connects`, `check.error_limit`), and which of
//! those reports are worth a message.
//!
//! The Server counts failed connects in a row; a success only sets those
//! counts back to zero. So every failure is reported, but a success only
//! when a failure was reported since the last reported success: the
//! others would set zero counts to zero. On the data path that saves one
//! message to the actors' thread per session — one wake-up of that thread,
//! since a message sent from a data-plane thread writes its runtime's
//! eventfd — with passive health on by default.
//!
//! A success skipped while a failure is on its way in the mailbox is the
//! same as that success arriving first, an order the mailbox allows anyway
//! (sessions on different threads race to it): no count goes up that could
//! not have gone up without the skip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Recipient;

use super::protocol::ConnectOutcome;

/// Shared by every session of one server (cloned with its `ServerInfo`).
#[derive(Debug, Clone)]
pub struct ConnectReports {
    server: Recipient<ConnectOutcome>,
    /// A failure was reported and no success since.
    failing: Arc<AtomicBool>,
}

impl ConnectReports {
    pub fn new(server: Recipient<ConnectOutcome>) -> ConnectReports {
        ConnectReports { server, failing: Arc::default() }
    }

    /// One connect attempt ended: `ok` if the server answered.
    pub fn report(&self, ok: bool) {
        if ok {
            // A plain load first: the usual answer is "nothing to reset",
            // and it leaves the shared cache line unwritten.
            if !self.failing.load(Ordering::Acquire) || !self.failing.swap(false, Ordering::AcqRel) {
                return;
            }
        } else {
            self.failing.store(true, Ordering::Release);
        }
        // do_send: one per attempt, bounded by retries + 1 per session.
        self.server.do_send(ConnectOutcome { ok });
    }
}
