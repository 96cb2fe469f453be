//! The ResourceWatchdog's admission bookkeeping: global and frontend
//! `maxconn`, and the listeners paused on them.
//!
//! A listener that has clients waiting in its backlog asks for admission
//! *before* it calls `accept()` (HAProxy reserves its counters before
//! accepting too). Admission hands out credits; a credit becomes a session
//! when a connection is accepted with it, or goes back unused. `used` counts
//! both, so the limits hold even while credits are in flight. A listener that
//! gets nothing is parked: it stops polling its socket and clients wait in
//! the kernel backlog. Every closed session and every returned credit first
//! serves parked listeners, in the order they parked — so a paused listener
//! resumes on the release itself, not at a periodic check.

use std::collections::VecDeque;

use crate::ids::{FrontendId, ListenerId};

/// Why a listener is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// `global.maxconn` reached.
    Global,
    /// The frontend's `maxconn` reached.
    Frontend,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Global => "global maxconn",
            PauseReason::Frontend => "frontend maxconn",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Limit {
    /// 0 = unlimited.
    max: u32,
    used: u32,
}

impl Limit {
    fn free(&self) -> u32 {
        if self.max == 0 {
            u32::MAX
        } else {
            self.max.saturating_sub(self.used)
        }
    }
}

#[derive(Debug)]
struct Parked<W> {
    listener: ListenerId,
    frontend: FrontendId,
    want: u32,
    waiter: W,
}

/// The answer to an admission request.
#[derive(Debug)]
pub enum Admitted<W> {
    /// `n >= 1` connections may be accepted now.
    Granted(u32, W),
    /// Nothing now; the waiter is kept and served on a later release.
    Parked(PauseReason),
}

/// A parked listener that got credits.
#[derive(Debug)]
pub struct Resumed<W> {
    pub listener: ListenerId,
    pub frontend: FrontendId,
    pub granted: u32,
    pub waiter: W,
}

pub struct AdmissionState<W> {
    global: Limit,
    frontends: Vec<Limit>,
    parked: VecDeque<Parked<W>>,
}

impl<W> AdmissionState<W> {
    pub fn new(global_maxconn: u32, frontend_maxconn: &[u32]) -> AdmissionState<W> {
        AdmissionState {
            global: Limit { max: global_maxconn, used: 0 },
            frontends: frontend_maxconn.iter().map(|&max| Limit { max, used: 0 }).collect(),
            parked: VecDeque::new(),
        }
    }

    fn room(&self, frontend: FrontendId) -> Result<u32, PauseReason> {
        let global = self.global.free();
        let front = self.frontends[frontend.0].free();
        match (global, front) {
            (0, _) => Err(PauseReason::Global),
            (_, 0) => Err(PauseReason::Frontend),
            (g, f) => Ok(g.min(f)),
        }
    }

    fn take(&mut self, frontend: FrontendId, n: u32) {
        self.global.used += n;
        self.frontends[frontend.0].used += n;
    }

    /// A listener with clients in its backlog asks for up to `want` credits.
    pub fn admit(&mut self, listener: ListenerId, frontend: FrontendId, want: u32, waiter: W) -> Admitted<W> {
        match self.room(frontend) {
            Ok(room) => {
                let n = room.min(want.max(1));
                self.take(frontend, n);
                Admitted::Granted(n, waiter)
            }
            Err(reason) => {
                self.parked.push_back(Parked { listener, frontend, want: want.max(1), waiter });
                Admitted::Parked(reason)
            }
        }
    }

    /// Unused credits come back; parked listeners are served from them.
    pub fn give_back(&mut self, frontend: FrontendId, n: u32) -> Vec<Resumed<W>> {
        self.untake(frontend, n);
        self.serve_parked()
    }

    /// A session ended; parked listeners are served from its place.
    pub fn session_closed(&mut self, frontend: FrontendId) -> Vec<Resumed<W>> {
        self.untake(frontend, 1);
        self.serve_parked()
    }

    /// The periodic safety net: serves parked listeners if there is room;
    /// does nothing while still at the limit.
    pub fn recheck(&mut self) -> Vec<Resumed<W>> {
        self.serve_parked()
    }

    fn untake(&mut self, frontend: FrontendId, n: u32) {
        debug_assert!(self.global.used >= n && self.frontends[frontend.0].used >= n);
        self.global.used = self.global.used.saturating_sub(n);
        let f = &mut self.frontends[frontend.0];
        f.used = f.used.saturating_sub(n);
    }

    /// Grants to parked listeners in park order, skipping those whose
    /// frontend is still full (one full frontend never blocks another).
    fn serve_parked(&mut self) -> Vec<Resumed<W>> {
        let mut resumed = Vec::new();
        let mut i = 0;
        while i < self.parked.len() && self.global.free() > 0 {
            let frontend = self.parked[i].frontend;
            match self.room(frontend) {
                Ok(room) => {
                    let p = self.parked.remove(i).expect("index in range");
                    let n = room.min(p.want);
                    self.take(frontend, n);
                    resumed.push(Resumed { listener: p.listener, frontend, granted: n, waiter: p.waiter });
                }
                Err(_) => i += 1,
            }
        }
        resumed
    }

    /// Forgets a parked request whose listener stopped.
    pub fn unpark(&mut self, listener: ListenerId) -> Option<W> {
        let i = self.parked.iter().position(|p| p.listener == listener)?;
        self.parked.remove(i).map(|p| p.waiter)
    }

    pub fn global_used(&self) -> u32 {
        self.global.used
    }

    pub fn frontend_used(&self, frontend: FrontendId) -> u32 {
        self.frontends[frontend.0].used
    }

    pub fn parked(&self) -> impl Iterator<Item = ListenerId> + '_ {
        self.parked.iter().map(|p| p.listener)
    }

    /// Invariants: no limit exceeded; nobody parked while it could be served.
    pub fn check(&self) -> Result<(), String> {
        if self.global.max > 0 && self.global.used > self.global.max {
            return Err(format!("global used {} > maxconn {}", self.global.used, self.global.max));
        }
        for (i, f) in self.frontends.iter().enumerate() {
            if f.max > 0 && f.used > f.max {
                return Err(format!("frontend {i} used {} > maxconn {}", f.used, f.max));
            }
        }
        for p in &self.parked {
            if self.room(p.frontend).is_ok() {
                return Err(format!("listener {:?} parked while its frontend has room", p.listener));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_frontend_does_not_block_another() {
        let mut a: AdmissionState<()> = AdmissionState::new(10, &[1, 0]);
        assert!(matches!(a.admit(ListenerId(0), FrontendId(0), 4, ()), Admitted::Granted(1, ())));
        assert!(matches!(a.admit(ListenerId(0), FrontendId(0), 4, ()), Admitted::Parked(PauseReason::Frontend)));
        assert!(matches!(a.admit(ListenerId(1), FrontendId(1), 4, ()), Admitted::Granted(4, ())));
        assert!(a.give_back(FrontendId(1), 4).is_empty());
        let resumed = a.session_closed(FrontendId(0));
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].granted, 1);
        a.check().unwrap();
    }
}
