//! The ResourceWatchdog's admission bookkeeping: every process-wide limit on
//! accepting — global `maxconn` (capped by the fd budget), each frontend's
//! `maxconn` and `rate_limit`, each listener's `bind_maxconn`, the global
//! `maxconnrate` — and the listeners paused on them.
//!
//! A listener that has clients waiting in its backlog asks for admission
//! *before* it calls `accept()` (HAProxy reserves its counters before
//! accepting too). Admission hands out credits; a credit becomes a session
//! when a connection is accepted with it, or goes back unused. `used` counts
//! both, so the limits hold even while credits are in flight. A listener
//! that gets nothing is parked: it stops polling its socket and clients wait
//! in the kernel backlog. Every closed session and every returned credit
//! first serves parked listeners, in the order they parked — so a listener
//! paused on a limit resumes on the release itself, not at a periodic check.
//! Only time-based pauses (rate, resource shortage) wait for [`next_wakeup`].
//!
//! Time is passed in (`now`), so tests drive it with a fake clock.
//!
//! [`next_wakeup`]: AdmissionState::next_wakeup

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

use super::rate::RateLimiter;
use crate::ids::{FrontendId, ListenerId};

/// Why a listener is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseReason {
    /// `global.maxconn`, or the fd budget, reached.
    Global,
    /// The frontend's `maxconn` reached.
    Frontend,
    /// The listener's own `bind_maxconn` reached (HAProxy's FULL state).
    Listener,
    /// `global.maxconnrate` exhausted for now.
    GlobalRate,
    /// The frontend's `rate_limit` exhausted for now.
    FrontendRate,
    /// `accept()` failed for lack of fds or memory.
    Shortage,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Global => "global maxconn",
            PauseReason::Frontend => "frontend maxconn",
            PauseReason::Listener => "listener maxconn",
            PauseReason::GlobalRate => "global maxconnrate",
            PauseReason::FrontendRate => "frontend rate_limit",
            PauseReason::Shortage => "resource shortage",
        }
    }

    /// Limits on a count (as opposed to a rate or a shortage).
    pub fn is_count_limit(self) -> bool {
        matches!(self, PauseReason::Global | PauseReason::Frontend | PauseReason::Listener)
    }
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Limit {
    /// `None`: unlimited.
    max: Option<NonZeroU32>,
    used: u32,
    /// Sessions over `max` that were admitted before it was lowered below
    /// them, or that came with their listener from another frontend on a
    /// reload. They may stay until they end (lowering a limit only delays
    /// new accepts); the count never grows past `max` by an admission.
    carried: u32,
}

impl Limit {
    /// A limit as configured: 0 = unlimited.
    fn new(max: u32) -> Limit {
        Limit { max: NonZeroU32::new(max), used: 0, carried: 0 }
    }

    /// Sessions above the limit now.
    fn over(&self) -> u32 {
        self.max.map_or(0, |max| self.used.saturating_sub(max.get()))
    }

    /// `n` sessions ended (or their credits came back unused).
    fn release(&mut self, n: u32) {
        self.used = self.used.saturating_sub(n);
        self.carried = self.carried.min(self.over());
    }

    /// `n` live sessions join this count from another one (a reload moved
    /// their listener): they are carried, whatever the limit.
    fn carry_in(&mut self, n: u32) {
        self.used += n;
        self.carried = self.over();
    }

    fn free(&self) -> u32 {
        self.max.map_or(u32::MAX, |max| max.get().saturating_sub(self.used))
    }

    /// At the limit (Postfix's rule: reaching it counts as a hit).
    fn reached(&self) -> bool {
        self.max.is_some_and(|max| self.used >= max.get())
    }

    /// Over the limit by more than the sessions it carries: an admission
    /// went past it.
    fn exceeded(&self) -> bool {
        self.over() > self.carried
    }

    /// The limit as configured: 0 = unlimited.
    fn max(&self) -> u32 {
        self.max.map_or(0, NonZeroU32::get)
    }

    /// Sets a new limit (0 = unlimited); returns the previous one.
    fn set_max(&mut self, max: u32) -> u32 {
        let from = self.max();
        self.max = NonZeroU32::new(max);
        self.carried = self.over();
        from
    }
}

/// Limits of one frontend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendLimits {
    /// Concurrent sessions; 0 = unlimited.
    pub maxconn: u32,
    /// New sessions per second; 0 = unlimited.
    pub rate: u32,
}

/// Limits of one listener (one bound address).
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub frontend: FrontendId,
    /// Concurrent sessions accepted on this address; 0 = unlimited.
    pub maxconn: u32,
}

/// Everything the admission state is configured with.
#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {
    /// Effective global limit (already capped by the fd budget); 0 = unlimited.
    pub global_maxconn: u32,
    /// New sessions per second in the process; 0 = unlimited.
    pub global_rate: u32,
    pub frontends: Vec<FrontendLimits>,
    pub listeners: Vec<ListenerLimits>,
}

impl AdmissionConfig {
    /// Concurrency limits from plain numbers (0 = unlimited), no process
    /// rate: frontends as `(maxconn, rate)`, listeners as `(frontend index,
    /// maxconn)`. For tests.
    #[cfg(any(test, feature = "internals"))]
    pub fn from_limits(global_maxconn: u32, frontends: &[(u32, u32)], listeners: &[(usize, u32)]) -> AdmissionConfig {
        AdmissionConfig {
            global_maxconn,
            global_rate: 0,
            frontends: frontends.iter().map(|&(maxconn, rate)| FrontendLimits { maxconn, rate }).collect(),
            listeners: listeners
                .iter()
                .map(|&(f, maxconn)| ListenerLimits { frontend: FrontendId(f), maxconn })
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Parked<W> {
    listener: ListenerId,
    want: u32,
    waiter: W,
    reason: PauseReason,
}

/// The answer to an admission request.
#[derive(Debug)]
pub enum Admitted<W> {
    /// `n >= 1` connections may be accepted now.
    Granted(u32, W),
    /// Nothing now; the waiter is kept and served later.
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

/// A limit was reached (for warnings and stress mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHit {
    pub frontend: FrontendId,
    pub listener: ListenerId,
    pub reason: PauseReason,
}

impl LimitHit {
    /// Whose limit it is: the process (0), the frontend or the listener, by
    /// id. Warnings are throttled per reason and owner, so one busy
    /// frontend's warnings never hide another's.
    pub fn owner(&self) -> usize {
        match self.reason {
            PauseReason::Global | PauseReason::GlobalRate => 0,
            PauseReason::Frontend | PauseReason::FrontendRate => self.frontend.0,
            PauseReason::Listener | PauseReason::Shortage => self.listener.0,
        }
    }
}

/// What the watchdog reports about one listener; shown (logs, admin API)
/// as `OPEN`, `PAUSED(reason)` or `FULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    Open,
    /// Parked on a process, frontend, rate or resource limit.
    Paused(PauseReason),
    /// At its own `bind_maxconn`.
    Full,
}

impl fmt::Display for ListenerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenerState::Open => f.write_str("OPEN"),
            ListenerState::Paused(reason) => write!(f, "PAUSED({reason})"),
            ListenerState::Full => f.write_str("FULL"),
        }
    }
}

impl serde::Serialize for ListenerState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

pub struct AdmissionState<W> {
    global: Limit,
    global_rate: RateLimiter,
    frontends: Vec<Limit>,
    frontend_rates: Vec<RateLimiter>,
    listeners: Vec<(FrontendId, Limit)>,
    parked: VecDeque<Parked<W>>,
    /// Listeners paused after an accept failed for lack of resources, until
    /// when (`None`: a recheck past what the clock can hold, so until a
    /// session ends).
    shortage: HashMap<ListenerId, Option<Instant>>,
    hits: Vec<LimitHit>,
    /// Frontend limits as last configured (a `maxconn` changed at run time
    /// survives a reload that leaves its frontend's configured limits alone).
    configured: Vec<FrontendLimits>,
}

impl<W> AdmissionState<W> {
    pub fn new(config: &AdmissionConfig, now: Instant) -> AdmissionState<W> {
        AdmissionState {
            global: Limit::new(config.global_maxconn),
            global_rate: RateLimiter::new(config.global_rate, now),
            frontends: config.frontends.iter().map(|f| Limit::new(f.maxconn)).collect(),
            frontend_rates: config.frontends.iter().map(|f| RateLimiter::new(f.rate, now)).collect(),
            listeners: config.listeners.iter().map(|l| (l.frontend, Limit::new(l.maxconn))).collect(),
            parked: VecDeque::new(),
            shortage: HashMap::new(),
            hits: Vec::new(),
            configured: config.frontends.clone(),
        }
    }

    pub fn frontend_of(&self, listener: ListenerId) -> FrontendId {
        self.listeners[listener.0].0
    }

    /// How many `listener` may accept now, or why none.
    fn room(&mut self, listener: ListenerId, now: Instant) -> Result<u32, PauseReason> {
        if self.shortage.get(&listener).is_some_and(|until| until.is_none_or(|until| until > now)) {
            return Err(PauseReason::Shortage);
        }
        let (frontend, own) = self.listeners[listener.0];
        let checks = [
            (self.global.free(), PauseReason::Global),
            (self.frontends[frontend.0].free(), PauseReason::Frontend),
            (own.free(), PauseReason::Listener),
            (self.global_rate.available(now), PauseReason::GlobalRate),
            (self.frontend_rates[frontend.0].available(now), PauseReason::FrontendRate),
        ];
        let mut room = u32::MAX;
        for (free, reason) in checks {
            if free == 0 {
                return Err(reason);
            }
            room = room.min(free);
        }
        Ok(room)
    }

    fn take(&mut self, listener: ListenerId, n: u32, now: Instant) {
        let frontend = self.frontend_of(listener);
        self.global.used += n;
        self.frontends[frontend.0].used += n;
        self.listeners[listener.0].1.used += n;
        self.global_rate.take(n, now);
        self.frontend_rates[frontend.0].take(n, now);
        // Postfix's rule: reaching a limit (count + 1 == limit) is a hit too.
        let reached = [
            (self.global, PauseReason::Global),
            (self.frontends[frontend.0], PauseReason::Frontend),
            (self.listeners[listener.0].1, PauseReason::Listener),
        ];
        if let Some((_, reason)) = reached.iter().find(|(l, _)| l.reached()) {
            self.hits.push(LimitHit { frontend, listener, reason: *reason });
        }
    }

    fn untake(&mut self, listener: ListenerId, n: u32, now: Instant) {
        let frontend = self.frontend_of(listener);
        debug_assert!(self.global.used >= n && self.frontends[frontend.0].used >= n);
        self.global.release(n);
        self.frontends[frontend.0].release(n);
        self.listeners[listener.0].1.release(n);
        self.global_rate.give_back(n, now);
        self.frontend_rates[frontend.0].give_back(n, now);
    }

    /// A listener with clients in its backlog asks for up to `want` credits.
    pub fn admit(&mut self, listener: ListenerId, want: u32, waiter: W, now: Instant) -> Admitted<W> {
        match self.room(listener, now) {
            Ok(room) => {
                let n = room.min(want.max(1));
                self.take(listener, n, now);
                Admitted::Granted(n, waiter)
            }
            Err(reason) => {
                let frontend = self.frontend_of(listener);
                if reason != PauseReason::Shortage {
                    self.hits.push(LimitHit { frontend, listener, reason });
                }
                self.parked.push_back(Parked { listener, want: want.max(1), waiter, reason });
                Admitted::Parked(reason)
            }
        }
    }

    /// Unused credits come back; parked listeners are served from them.
    pub fn give_back(&mut self, listener: ListenerId, n: u32, now: Instant) -> Vec<Resumed<W>> {
        self.untake(listener, n, now);
        self.serve_parked(now)
    }

    /// A session ended: its fds are free too, so shortage pauses end, and
    /// parked listeners are served from its place.
    pub fn session_closed(&mut self, listener: ListenerId, now: Instant) -> Vec<Resumed<W>> {
        let frontend = self.frontend_of(listener);
        debug_assert!(self.global.used >= 1 && self.frontends[frontend.0].used >= 1);
        self.global.release(1);
        self.frontends[frontend.0].release(1);
        self.listeners[listener.0].1.release(1);
        self.shortage.clear();
        self.serve_parked(now)
    }

    /// `accept()` on `listener` failed for lack of fds or memory: pause it
    /// until `now + recheck` or until a session closes, whichever is first.
    /// A recheck the clock cannot add (set in code past the configuration's
    /// bound) leaves only the session end: never a panic.
    pub fn shortage(&mut self, listener: ListenerId, now: Instant, recheck: Duration) {
        self.shortage.insert(listener, now.checked_add(recheck));
        let frontend = self.frontend_of(listener);
        self.hits.push(LimitHit { frontend, listener, reason: PauseReason::Shortage });
    }

    /// Timers: serves parked listeners whose rate or shortage pause is over.
    /// Does nothing for listeners still at a count limit.
    pub fn recheck(&mut self, now: Instant) -> Vec<Resumed<W>> {
        self.shortage.retain(|_, until| until.is_none_or(|until| until > now));
        self.serve_parked(now)
    }

    /// When the next time-based pause ends (for the actor's timer).
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for p in &self.parked {
            match p.reason {
                PauseReason::Shortage => {
                    if let Some(Some(until)) = self.shortage.get(&p.listener) {
                        consider(*until);
                    }
                }
                PauseReason::GlobalRate => consider(self.global_rate.next_token(now)),
                PauseReason::FrontendRate => {
                    let f = self.frontend_of(p.listener);
                    consider(self.frontend_rates[f.0].next_token(now));
                }
                _ => {}
            }
        }
        next
    }

    /// Grants to parked listeners in park order, skipping those still
    /// blocked (one full frontend never blocks another).
    fn serve_parked(&mut self, now: Instant) -> Vec<Resumed<W>> {
        let mut resumed = Vec::new();
        let mut i = 0;
        while i < self.parked.len() {
            let listener = self.parked[i].listener;
            match self.room(listener, now) {
                Ok(room) => {
                    let p = self.parked.remove(i).expect("index in range");
                    let n = room.min(p.want);
                    self.take(listener, n, now);
                    resumed.push(Resumed {
                        listener,
                        frontend: self.frontend_of(listener),
                        granted: n,
                        waiter: p.waiter,
                    });
                }
                Err(reason) => {
                    self.parked[i].reason = reason;
                    i += 1;
                }
            }
        }
        resumed
    }

    /// Changes a frontend's `maxconn` at run time (0 = only the global
    /// limit). Raising it serves parked listeners at once (returned);
    /// lowering it below the current count only delays new accepts. Returns
    /// the previous limit too.
    pub fn set_frontend_maxconn(
        &mut self,
        frontend: FrontendId,
        maxconn: u32,
        now: Instant,
    ) -> Option<(u32, Vec<Resumed<W>>)> {
        let limit = self.frontends.get_mut(frontend.0)?;
        let from = limit.set_max(maxconn);
        Some((from, self.serve_parked(now)))
    }

    /// A reload: new limits for every frontend and listener, by id (ids of
    /// kept ones are kept, new ones come after). Counts carry on — sessions
    /// admitted before still count against their frontend and listener. A
    /// changed rate starts a fresh token bucket. Parked listeners are served
    /// from whatever the new limits allow (returned).
    pub fn reconfigure(&mut self, config: &AdmissionConfig, now: Instant) -> Vec<Resumed<W>> {
        self.global_rate.reconfigure(config.global_rate, now);
        for (i, f) in config.frontends.iter().enumerate() {
            match self.frontends.get_mut(i) {
                Some(limit) => {
                    limit.set_max(f.maxconn);
                    self.frontend_rates[i].reconfigure(f.rate, now);
                }
                None => {
                    self.frontends.push(Limit::new(f.maxconn));
                    self.frontend_rates.push(RateLimiter::new(f.rate, now));
                }
            }
        }
        for (i, l) in config.listeners.iter().enumerate() {
            match self.listeners.get_mut(i) {
                Some((frontend, limit)) => {
                    if *frontend != l.frontend {
                        // Moved to another frontend: its live sessions move too.
                        let used = limit.used;
                        self.frontends[frontend.0].release(used);
                        self.frontends[l.frontend.0].carry_in(used);
                        *frontend = l.frontend;
                    }
                    limit.set_max(l.maxconn);
                }
                None => self.listeners.push((l.frontend, Limit::new(l.maxconn))),
            }
        }
        self.serve_parked(now)
    }

    /// A reload of the configuration: like [`reconfigure`], except that a
    /// frontend whose configured limits did not change keeps a `maxconn` set
    /// at run time. `global_maxconn` is ignored: it needs a restart.
    ///
    /// [`reconfigure`]: AdmissionState::reconfigure
    pub fn reload(&mut self, config: &AdmissionConfig, now: Instant) -> Vec<Resumed<W>> {
        let mut in_force = config.clone();
        for (i, limits) in in_force.frontends.iter_mut().enumerate() {
            if self.configured.get(i) == Some(&*limits) {
                limits.maxconn = self.frontend_max(FrontendId(i));
            }
        }
        self.configured.clone_from(&config.frontends);
        self.reconfigure(&in_force, now)
    }

    /// Hands resumed credits to their waiters with `send` (which answers
    /// `false` when the waiter is gone). A gone waiter's credits come back
    /// at once and may resume other parked listeners, handed out in turn —
    /// so credits are never lost to a listener that stopped.
    pub fn hand_out(
        &mut self,
        mut resumed: Vec<Resumed<W>>,
        now: Instant,
        mut send: impl FnMut(Resumed<W>, &Self) -> bool,
    ) {
        while let Some(r) = resumed.pop() {
            let (listener, granted) = (r.listener, r.granted);
            if !send(r, self) {
                resumed.extend(self.give_back(listener, granted, now));
            }
        }
    }

    /// `listener`'s own `bind_maxconn` (0 = none).
    pub fn listener_max(&self, listener: ListenerId) -> u32 {
        self.listeners.get(listener.0).map_or(0, |(_, l)| l.max())
    }

    /// `global.maxconnrate` in force (0 = unlimited).
    pub fn global_rate(&self) -> u32 {
        self.global_rate.rate()
    }

    /// A frontend's `rate_limit` in force (0 = unlimited).
    pub fn frontend_rate(&self, frontend: FrontendId) -> u32 {
        self.frontend_rates.get(frontend.0).map_or(0, RateLimiter::rate)
    }

    /// A frontend's `maxconn` in force (0 = only the global limit).
    pub fn frontend_max(&self, frontend: FrontendId) -> u32 {
        self.frontends.get(frontend.0).map_or(0, Limit::max)
    }

    /// Forgets a parked request whose listener stopped.
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn unpark(&mut self, listener: ListenerId) -> Option<W> {
        let i = self.parked.iter().position(|p| p.listener == listener)?;
        self.parked.remove(i).map(|p| p.waiter)
    }

    /// Limits reached since the last call (for warnings and stress mode).
    pub fn take_hits(&mut self) -> Vec<LimitHit> {
        std::mem::take(&mut self.hits)
    }

    pub fn global_used(&self) -> u32 {
        self.global.used
    }

    pub fn global_max(&self) -> u32 {
        self.global.max()
    }

    pub fn frontend_used(&self, frontend: FrontendId) -> u32 {
        self.frontends[frontend.0].used
    }

    pub fn listener_used(&self, listener: ListenerId) -> u32 {
        self.listeners[listener.0].1.used
    }

    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn parked(&self) -> impl Iterator<Item = ListenerId> + '_ {
        self.parked.iter().map(|p| p.listener)
    }

    /// OPEN / PAUSED(reason) / FULL for one listener.
    pub fn listener_state(&self, listener: ListenerId) -> ListenerState {
        match self.parked.iter().find(|p| p.listener == listener) {
            Some(p) if p.reason == PauseReason::Listener => ListenerState::Full,
            Some(p) => ListenerState::Paused(p.reason),
            None => ListenerState::Open,
        }
    }

    /// Invariants: no count limit exceeded; nobody parked while it could be
    /// served (time-based pauses excepted: they wait for `recheck`).
    pub fn check(&mut self, now: Instant) -> Result<(), String> {
        if self.global.exceeded() {
            return Err(format!("global used {} > maxconn {}", self.global.used, self.global.max()));
        }
        for (i, f) in self.frontends.iter().enumerate() {
            if f.exceeded() {
                return Err(format!("frontend {i} used {} > maxconn {}", f.used, f.max()));
            }
        }
        for (i, (_, l)) in self.listeners.iter().enumerate() {
            if l.exceeded() {
                return Err(format!("listener {i} used {} > maxconn {}", l.used, l.max()));
            }
        }
        // Time-based pauses (rate, shortage) end at `recheck`, not at once.
        let parked: Vec<ListenerId> =
            self.parked.iter().filter(|p| p.reason.is_count_limit()).map(|p| p.listener).collect();
        for listener in parked {
            if self.room(listener, now).is_ok() {
                return Err(format!("listener {listener:?} parked while it has room"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(global: u32, frontends: &[(u32, u32)], listeners: &[(usize, u32)]) -> AdmissionConfig {
        AdmissionConfig::from_limits(global, frontends, listeners)
    }

    #[test]
    fn a_full_frontend_does_not_block_another() {
        let t = Instant::now();
        let mut a: AdmissionState<()> = AdmissionState::new(&config(10, &[(1, 0), (0, 0)], &[(0, 0), (1, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Granted(1, ())));
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Parked(PauseReason::Frontend)));
        assert!(matches!(a.admit(ListenerId(1), 4, (), t), Admitted::Granted(4, ())));
        assert!(a.give_back(ListenerId(1), 4, t).is_empty());
        let resumed = a.session_closed(ListenerId(0), t);
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].granted, 1);
        a.check(t).unwrap();
    }

    #[test]
    fn listener_maxconn_reports_full() {
        let t = Instant::now();
        let mut a: AdmissionState<()> = AdmissionState::new(&config(0, &[(0, 0)], &[(0, 2), (0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Granted(2, ())));
        assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Parked(PauseReason::Listener)));
        assert_eq!(a.listener_state(ListenerId(0)), ListenerState::Full);
        assert!(matches!(a.admit(ListenerId(1), 4, (), t), Admitted::Granted(4, ())));
        assert_eq!(a.session_closed(ListenerId(0), t).len(), 1);
        assert_eq!(a.listener_state(ListenerId(0)), ListenerState::Open);
    }

    #[test]
    fn rate_limit_parks_until_the_next_token() {
        let t = Instant::now();
        let mut a: AdmissionState<()> = AdmissionState::new(&config(0, &[(0, 10)], &[(0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 100, (), t), Admitted::Granted(10, ())));
        assert!(matches!(a.admit(ListenerId(0), 100, (), t), Admitted::Parked(PauseReason::FrontendRate)));
        let wake = a.next_wakeup(t).expect("a timer");
        assert!(wake > t && wake <= t + Duration::from_millis(102), "{:?}", wake - t);
        assert!(a.recheck(t + Duration::from_millis(50)).is_empty());
        let resumed = a.recheck(wake);
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].granted, 1);
    }

    #[test]
    fn shortage_pauses_until_recheck_or_a_release() {
        let t = Instant::now();
        let recheck = Duration::from_millis(100);
        let mut a: AdmissionState<()> = AdmissionState::new(&config(0, &[(0, 0)], &[(0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Granted(1, ())));
        a.shortage(ListenerId(0), t, recheck);
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Parked(PauseReason::Shortage)));
        assert_eq!(a.next_wakeup(t), Some(t + recheck));
        assert!(a.recheck(t + Duration::from_millis(99)).is_empty());
        assert_eq!(a.recheck(t + recheck).len(), 1);
        // Or at once on a release.
        a.shortage(ListenerId(0), t, recheck);
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Parked(PauseReason::Shortage)));
        assert_eq!(a.session_closed(ListenerId(0), t).len(), 1);
    }

    #[test]
    fn a_recheck_the_clock_cannot_hold_pauses_until_a_release() {
        let t = Instant::now();
        let mut a: AdmissionState<()> = AdmissionState::new(&config(0, &[(0, 0)], &[(0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Granted(1, ())));
        a.shortage(ListenerId(0), t, Duration::MAX);
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Parked(PauseReason::Shortage)));
        assert_eq!(a.next_wakeup(t), None, "no timer for a recheck past the clock");
        let years = Duration::from_secs(100 * 365 * 24 * 3600);
        assert!(a.recheck(t + years).is_empty(), "still paused a century later");
        assert_eq!(a.session_closed(ListenerId(0), t + years).len(), 1);
    }

    #[test]
    fn raising_a_frontend_maxconn_resumes_at_once() {
        let t = Instant::now();
        let mut a: AdmissionState<()> = AdmissionState::new(&config(0, &[(1, 0)], &[(0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Granted(1, ())));
        assert!(matches!(a.admit(ListenerId(0), 4, (), t), Admitted::Parked(PauseReason::Frontend)));
        let (from, resumed) = a.set_frontend_maxconn(FrontendId(0), 3, t).expect("frontend");
        assert_eq!(from, 1);
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].granted, 2);
        assert_eq!(a.frontend_max(FrontendId(0)), 3);
        // Lowering below the count only delays new accepts.
        let (_, resumed) = a.set_frontend_maxconn(FrontendId(0), 1, t).expect("frontend");
        assert!(resumed.is_empty());
        assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Parked(PauseReason::Frontend)));
        assert!(a.session_closed(ListenerId(0), t).is_empty());
        assert!(a.session_closed(ListenerId(0), t).is_empty());
        assert_eq!(a.session_closed(ListenerId(0), t).len(), 1);
        assert!(a.set_frontend_maxconn(FrontendId(5), 1, t).is_none());
        a.check(t).unwrap();
    }

    #[test]
    fn a_reload_keeps_a_run_time_maxconn_where_the_frontend_is_unchanged() {
        let t = Instant::now();
        let start = config(5, &[(2, 0), (2, 0)], &[(0, 0), (1, 0)]);
        let mut a: AdmissionState<()> = AdmissionState::new(&start, t);
        a.set_frontend_maxconn(FrontendId(0), 4, t).expect("frontend");
        a.set_frontend_maxconn(FrontendId(1), 4, t).expect("frontend");
        let mut next = config(1, &[(2, 0), (3, 7)], &[(0, 0), (1, 1)]);
        assert!(a.reload(&next, t).is_empty());
        assert_eq!(a.frontend_max(FrontendId(0)), 4, "configured limits unchanged: the run-time value stays");
        assert_eq!(a.frontend_max(FrontendId(1)), 3, "configured limits changed: the new value");
        assert_eq!((a.frontend_rate(FrontendId(1)), a.listener_max(ListenerId(1))), (7, 1));
        assert_eq!(a.global_max(), 5, "global maxconn needs a restart");
        next.frontends[0].maxconn = 6;
        a.reload(&next, t);
        assert_eq!(a.frontend_max(FrontendId(0)), 6);
    }

    #[test]
    fn credits_of_a_gone_waiter_resume_the_next_parked_listener() {
        let t = Instant::now();
        let mut a: AdmissionState<u8> = AdmissionState::new(&config(1, &[(0, 0)], &[(0, 0), (0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 1, 0, t), Admitted::Granted(1, 0)));
        assert!(matches!(a.admit(ListenerId(0), 1, 1, t), Admitted::Parked(PauseReason::Global)));
        assert!(matches!(a.admit(ListenerId(1), 1, 2, t), Admitted::Parked(PauseReason::Global)));
        let resumed = a.session_closed(ListenerId(0), t);
        let mut sent = Vec::new();
        // Waiter 1 is gone: its credit comes back and goes to waiter 2.
        a.hand_out(resumed, t, |r, state| {
            assert_eq!(state.global_used(), 1, "the credit is counted while it is handed out");
            sent.push(r.waiter);
            r.waiter != 1
        });
        assert_eq!(sent, vec![1, 2]);
        assert_eq!((a.global_used(), a.listener_used(ListenerId(1))), (1, 1));
        a.check(t).unwrap();
    }

    #[test]
    fn a_limit_lowered_below_its_count_carries_the_sessions_it_has() {
        let t = Instant::now();
        let mut a: AdmissionState<u8> = AdmissionState::new(&config(0, &[(4, 0)], &[(0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 4, 0, t), Admitted::Granted(4, 0)));
        a.set_frontend_maxconn(FrontendId(0), 2, t).expect("frontend 0");
        a.check(t).expect("sessions admitted before the limit was lowered may stay");
        assert!(matches!(a.admit(ListenerId(0), 1, 1, t), Admitted::Parked(PauseReason::Frontend)));
        assert!(a.session_closed(ListenerId(0), t).is_empty(), "3 live, limit 2");
        assert!(a.session_closed(ListenerId(0), t).is_empty(), "2 live, limit 2");
        let resumed = a.session_closed(ListenerId(0), t);
        assert_eq!(resumed.iter().map(|r| r.granted).sum::<u32>(), 1, "one place under the lowered limit");
        a.check(t).unwrap();
        // An admission past the limit is still caught.
        a.frontends[0].used += 1;
        assert!(a.check(t).is_err());
    }

    #[test]
    fn reaching_a_limit_is_a_hit() {
        let t = Instant::now();
        let mut a: AdmissionState<()> = AdmissionState::new(&config(0, &[(2, 0)], &[(0, 0)]), t);
        assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Granted(1, ())));
        assert!(a.take_hits().is_empty());
        assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Granted(1, ())));
        assert_eq!(
            a.take_hits(),
            vec![LimitHit { frontend: FrontendId(0), listener: ListenerId(0), reason: PauseReason::Frontend }]
        );
    }
}
