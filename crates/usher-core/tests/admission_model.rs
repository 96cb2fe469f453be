//! Model-based test of `AdmissionState` (the ResourceWatchdog's core), with
//! no actix and no sockets.
//!
//! `AdmissionState` is driven by listeners that follow the protocol of the
//! accept loop and the watchdog (at most one `Admit` outstanding per
//! listener; `Shortage` then `GiveBack` when `accept()` runs out of fds), on
//! a fake clock: a base `tokio::time::Instant` advanced by random
//! durations, with the watchdog's timer (`next_wakeup`) fired on time or
//! late. Global, frontend and listener `maxconn`, global and frontend rates
//! (token buckets) and shortage pauses are all modelled. The simulator keeps
//! the messages in flight in an explicit pool, lets proptest choose which
//! happens next, and checks its own record against the struct after every
//! step.
//!
//! proptest seeds randomly and saves failing seeds next to this file
//! (`admission_model.proptest-regressions`, replayed first on later runs);
//! set `PROPTEST_CASES` to run more than the 1024 cases per property.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::{proptest_config as config, MAX_OPS};
use proptest::prelude::*;
use tokio::time::Instant;
use usher_core::admission::{
    AdmissionConfig, AdmissionState, Admitted, FrontendLimits, HitBook, HitEffects, LimitHit, ListenerLimits,
    ListenerState, PauseReason, Resumed,
};
use usher_core::ids::{FrontendId, ListenerId};

/// One second in ns; also one token in nano-tokens.
const NANO: i128 = 1_000_000_000;
/// `RateLimiter` counts tokens in f64: at an exact token boundary it may see
/// 0.999… or 1.000…, so the model allows either within this many
/// nano-tokens (1e-6 token).
const TOKEN_SLACK: i128 = 1_000;
/// Slack for instants computed through f64, in ns.
const TIME_SLACK: u64 = 1_000;
/// `RateLimiter::next_token` rounds its wait up to the next whole ms.
const WAKEUP_ROUNDING: u64 = 1_000_000;

/// One rate limiter (`global.maxconnrate` or a frontend's `rate_limit`) as
/// the model sees it: an exact token bucket with burst = rate, in nano-tokens
/// on the fake clock, and the net number of sessions it let through (credits
/// granted minus credits given back), checked against the bucket bound.
#[derive(Debug)]
struct RateModel {
    /// Sessions per second; 0 = unlimited.
    rate: i128,
    /// Tokens × 1e9 at `at` (ns since the start).
    level: i128,
    at: u64,
    /// Credits granted minus credits given back.
    net: i128,
    /// Minimum over every past moment `a` of `net(a)·1e9 − rate·a`.
    lowest: i128,
}

impl RateModel {
    fn new(rate: u32) -> RateModel {
        let rate = i128::from(rate);
        RateModel { rate, level: rate * NANO, at: 0, net: 0, lowest: 0 }
    }

    /// A reload: a changed rate starts a fresh, full bucket at `t`.
    fn reconfigure(&mut self, rate: u32, t: u64) {
        if i128::from(rate) != self.rate {
            *self = RateModel::new(rate);
            self.settle(t);
        }
    }

    fn limited(&self) -> bool {
        self.rate > 0
    }

    fn level_at(&self, t: u64) -> i128 {
        let elapsed = i128::from(t - self.at);
        (self.level + elapsed * self.rate).min(self.rate * NANO)
    }

    /// Whole tokens at `t`: the lowest and highest count the struct may see.
    fn available(&self, t: u64) -> (u32, u32) {
        if !self.limited() {
            return (u32::MAX, u32::MAX);
        }
        let level = self.level_at(t);
        let whole = |x: i128| (x.max(0) / NANO) as u32;
        (whole(level - TOKEN_SLACK), whole(level + TOKEN_SLACK))
    }

    /// When the next whole token is there, exactly (ns since the start).
    fn next_token(&self, t: u64) -> u64 {
        let level = self.level_at(t);
        if level >= NANO {
            t
        } else {
            t + ((NANO - level + self.rate - 1) / self.rate) as u64
        }
    }

    fn mark(&mut self, t: u64) {
        self.lowest = self.lowest.min(self.net * NANO - self.rate * i128::from(t));
    }

    fn settle(&mut self, t: u64) {
        self.level = self.level_at(t);
        self.at = t;
        // The moment just before this event starts a window too.
        self.mark(t);
    }

    fn take(&mut self, n: u32, t: u64, name: &str) {
        if !self.limited() {
            return;
        }
        self.settle(t);
        self.level -= i128::from(n) * NANO;
        self.net += i128::from(n);
        // The token-bucket bound, with burst = rate: over any window [a, t]
        // the net number granted is at most rate·(t − a) + rate, i.e.
        // `net(t)·1e9 − rate·t ≤ min_a (net(a)·1e9 − rate·a) + rate·1e9`.
        // (a = the start gives the bound over the whole run.)
        let value = self.net * NANO - self.rate * i128::from(t);
        assert!(
            value - self.lowest <= self.rate * NANO + TOKEN_SLACK,
            "{name}: {} sessions net by {t} ns exceed the bucket bound (rate {}/s, burst {})",
            self.net,
            self.rate,
            self.rate
        );
        self.mark(t);
    }

    fn give_back(&mut self, n: u32, t: u64) {
        if !self.limited() {
            return;
        }
        self.settle(t);
        self.level = (self.level + i128::from(n) * NANO).min(self.rate * NANO);
        self.net -= i128::from(n);
        self.mark(t);
    }
}

#[derive(Debug, Clone)]
enum AOp {
    /// Listener `l` (if idle) asks for up to `want` credits.
    Admit { l: usize, want: u32 },
    /// Listener `l` (if holding credits) accepts up to `k` connections and
    /// gives the rest back.
    Accept { l: usize, k: u32 },
    /// Listener `l` (if holding `n` credits) accepts `k % n`, then
    /// `accept()` fails for lack of fds: `Shortage` (paused for `recheck_ms`)
    /// then `GiveBack` of the rest, as the accept loop sends them.
    AcceptFails { l: usize, k: u32, recheck_ms: u64 },
    /// An open session (chosen by `pick`) ends.
    Close(usize),
    /// The clock moves `us` microseconds on. `fire`: the watchdog's timer
    /// runs at each `next_wakeup` on the way; otherwise it is late.
    Advance { us: u64, fire: bool },
    /// The watchdog's timer fires: the clock goes to `next_wakeup` (if it
    /// is later), then `recheck`.
    Wake,
    /// The periodic `maxconn_recheck` tick: `recheck` now.
    Tick,
    /// Listener `l` stops and its parked request is forgotten (`unpark`).
    Unpark(usize),
    /// Listener `l` stops silently (drops its reply channel): credits it
    /// holds, or gets later, come back through `give_back`.
    Stop(usize),
    /// The admin API sets frontend `f`'s `maxconn` (never below its count:
    /// see `clamp`).
    SetMaxconn { f: usize, maxconn: u32 },
    /// A reload with new limits for the same frontends and listeners.
    Reload(ReloadLimits),
}

/// Limits a reload brings, by id; only the first frontends and listeners
/// that exist are used.
#[derive(Debug, Clone)]
struct ReloadLimits {
    /// Ignored by a reload (needs a restart): the model keeps the old one.
    global_maxconn: u32,
    global_rate: u32,
    /// `maxconn`, `rate_limit` and stress cooldown (ms) per frontend.
    frontends: Vec<(u32, u32, u64)>,
    /// `bind_maxconn` per listener.
    listeners: Vec<u32>,
}

/// The model's cooldowns (zero: no stress mode) as the settings carry them.
fn configured_cooldowns(cooldowns: &[Duration]) -> Vec<Option<Duration>> {
    cooldowns.iter().map(|c| (!c.is_zero()).then_some(*c)).collect()
}

/// Stress cooldowns: often none, so stress mode is both on and off.
fn cooldown_ms() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1u64..=2_000]
}

fn reload_limits() -> impl Strategy<Value = ReloadLimits> {
    (0u32..=5, rate(), prop::collection::vec((0u32..=3, rate(), cooldown_ms()), 3), prop::collection::vec(0u32..=3, 6))
        .prop_map(|(global_maxconn, global_rate, frontends, listeners)| ReloadLimits {
            global_maxconn,
            global_rate,
            frontends,
            listeners,
        })
}

/// A limit set at run time never goes below the sessions and credits it
/// already counts: `AdmissionState::check` (asserted by the watchdog after
/// every message) takes a count over its limit for an error.
fn clamp(maxconn: u32, used: u32) -> u32 {
    if maxconn == 0 {
        0
    } else {
        maxconn.max(used)
    }
}

/// Rates: often unlimited, so count limits and rates both get exercised.
fn rate() -> impl Strategy<Value = u32> {
    prop_oneof![2 => Just(0u32), 3 => 1u32..=5]
}

fn admission_cfg() -> impl Strategy<Value = AdmissionConfig> {
    (
        0u32..=5,
        rate(),
        prop::collection::vec((0u32..=3, rate()), 1..=3),
        prop::collection::vec((0usize..3, 0u32..=3), 1..=6),
    )
        .prop_map(|(global_maxconn, global_rate, frontends, listeners)| {
            let nf = frontends.len();
            AdmissionConfig {
                global_maxconn,
                global_rate,
                frontends: frontends.into_iter().map(|(maxconn, rate)| FrontendLimits { maxconn, rate }).collect(),
                listeners: listeners
                    .into_iter()
                    .map(|(f, maxconn)| ListenerLimits { frontend: FrontendId(f % nf), maxconn })
                    .collect(),
            }
        })
}

fn advance_us() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Within the rounding of a wake-up (next_token rounds up to the ms).
        2 => 0u64..=3_000,
        // Whole milliseconds: lands on exact token boundaries.
        2 => (0u64..=1_000).prop_map(|ms| ms * 1_000),
        1 => 0u64..=2_500_000,
    ]
}

fn admission_op() -> impl Strategy<Value = AOp> {
    prop_oneof![
        6 => (0usize..6, 1u32..=4).prop_map(|(l, want)| AOp::Admit { l, want }),
        5 => (0usize..6, 0u32..=4).prop_map(|(l, k)| AOp::Accept { l, k }),
        1 => (0usize..6, 0u32..=4, 1u64..=300).prop_map(|(l, k, recheck_ms)| AOp::AcceptFails { l, k, recheck_ms }),
        5 => (0usize..64).prop_map(AOp::Close),
        4 => (advance_us(), prop::bool::weighted(0.7)).prop_map(|(us, fire)| AOp::Advance { us, fire }),
        2 => Just(AOp::Wake),
        1 => Just(AOp::Tick),
        1 => (0usize..6).prop_map(AOp::Unpark),
        1 => (0usize..6).prop_map(AOp::Stop),
        1 => (0usize..3, 0u32..=4).prop_map(|(f, maxconn)| AOp::SetMaxconn { f, maxconn }),
        1 => reload_limits().prop_map(AOp::Reload),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lst {
    /// Polling; may send an `Admit`.
    Idle,
    /// Got `n` credits, accepting.
    Holding(u32),
    /// Waiting for credits; `dead`: stopped meanwhile (its reply channel is
    /// closed, so a later grant comes back).
    Parked { want: u32, dead: bool },
    /// Resumed after it stopped: `hand_out` is to give these credits back.
    Returning(u32),
    /// Stopped for good.
    Gone,
}

fn ms_to(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn free(max: u32, used: u32) -> u32 {
    if max == 0 {
        u32::MAX
    } else {
        max.saturating_sub(used)
    }
}

/// What `AdmissionState` may answer for one listener now, per the model.
#[derive(Debug)]
struct RoomModel {
    /// Pause reasons it may give.
    reasons: Vec<PauseReason>,
    /// If it may grant: the lowest and highest room it may see.
    grant: Option<(u32, u32)>,
}

/// What the state shows of its listeners at one moment of `hand_out`.
#[derive(Debug)]
struct Snapshot {
    parked: Vec<usize>,
    shown: Vec<ListenerState>,
    used: Vec<u32>,
}

impl Snapshot {
    fn of(state: &AdmissionState<usize>, listeners: usize) -> Snapshot {
        Snapshot {
            parked: state.parked().map(|l| l.0).collect(),
            shown: (0..listeners).map(|l| state.listener_state(ListenerId(l))).collect(),
            used: (0..listeners).map(|l| state.listener_used(ListenerId(l))).collect(),
        }
    }
}

/// One call of `hand_out`'s `send`: the credits offered, the stress flag the
/// watchdog puts in the grant, and the state as `send` sees it.
#[derive(Debug)]
struct Offer {
    resumed: Resumed<usize>,
    stress: bool,
    seen: Snapshot,
}

/// Why parked listener `l` waits, per what the state shows of it.
fn pause_reason(l: usize, shown: ListenerState) -> PauseReason {
    match shown {
        ListenerState::Full => PauseReason::Listener,
        ListenerState::Paused(reason) => {
            assert_ne!(reason, PauseReason::Listener, "listener {l} at bind_maxconn shows as Paused, not Full");
            reason
        }
        ListenerState::Open => panic!("parked listener {l} shows as Open"),
    }
}

/// The ResourceWatchdog and its listeners, simulated.
struct AdmissionSim {
    cfg: AdmissionConfig,
    state: AdmissionState<usize>,
    /// The fake clock: `base` + `t` ns.
    base: Instant,
    t: u64,
    listeners: Vec<Lst>,
    /// Parked listeners in park order.
    parked: VecDeque<usize>,
    /// Listener of each open session.
    sessions: Vec<usize>,
    /// End of each listener's shortage pause (ns); any close ends them all.
    shortage: Vec<Option<u64>>,
    global_rate: RateModel,
    frontend_rates: Vec<RateModel>,
    /// Limit hits the state must report at the next `take_hits`.
    hits: Vec<LimitHit>,
    /// Frontend limits as last configured (a run-time `maxconn` survives a
    /// reload that leaves them alone); `cfg` holds the ones in force.
    configured: Vec<FrontendLimits>,
    /// The watchdog's hit book, fed the state's hits as the watchdog does.
    book: HitBook,
    /// Per frontend: stress cooldown (ns, 0 = none) and the last hit while
    /// in stress.
    stress: Vec<(u64, Option<u64>)>,
    /// Hits seen per (reason, owner): the first of each warns.
    warned: std::collections::HashSet<(PauseReason, usize)>,
    /// Hits seen: (count limits, rate limits, shortages).
    counted: (u64, u64, u64),
    /// Resumed listeners whose credits `hand_out` has not offered yet.
    unoffered: Vec<usize>,
}

impl AdmissionSim {
    fn new(cfg: AdmissionConfig, cooldowns: &[u64]) -> AdmissionSim {
        let base = Instant::now();
        let cooldowns: Vec<Duration> = cfg.frontends.iter().zip(cooldowns).map(|(_, &ms)| ms_to(ms)).collect();
        let sim = AdmissionSim {
            configured: cfg.frontends.clone(),
            book: HitBook::new(Duration::from_secs(3600), &configured_cooldowns(&cooldowns)),
            stress: cooldowns.iter().map(|c| (c.as_nanos() as u64, None)).collect(),
            warned: Default::default(),
            counted: (0, 0, 0),
            unoffered: Vec::new(),
            state: AdmissionState::new(&cfg, base),
            base,
            t: 0,
            listeners: vec![Lst::Idle; cfg.listeners.len()],
            parked: VecDeque::new(),
            sessions: Vec::new(),
            shortage: vec![None; cfg.listeners.len()],
            global_rate: RateModel::new(cfg.global_rate),
            frontend_rates: cfg.frontends.iter().map(|f| RateModel::new(f.rate)).collect(),
            hits: Vec::new(),
            cfg,
        };
        sim.check_wakeup();
        sim
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.t)
    }

    /// An instant of the struct's, in ns on the fake clock.
    fn ns(&self, at: Instant) -> u64 {
        let since = at.checked_duration_since(self.base).expect("an instant before the start");
        u64::try_from(since.as_nanos()).expect("fits")
    }

    fn frontend(&self, l: usize) -> usize {
        self.cfg.listeners[l].frontend.0
    }

    /// The simulator's own count: sessions + credits out, on the listeners
    /// that `on` selects.
    fn used_on(&self, on: impl Fn(usize) -> bool) -> u32 {
        let sessions = self.sessions.iter().filter(|&&l| on(l)).count() as u32;
        let credits: u32 = self
            .listeners
            .iter()
            .enumerate()
            .filter(|&(l, _)| on(l))
            .map(|(_, s)| match *s {
                Lst::Holding(n) | Lst::Returning(n) => n,
                _ => 0,
            })
            .sum();
        sessions + credits
    }

    fn global_used(&self) -> u32 {
        self.used_on(|_| true)
    }

    fn frontend_used(&self, f: usize) -> u32 {
        self.used_on(|l| self.frontend(l) == f)
    }

    fn listener_used(&self, l: usize) -> u32 {
        self.used_on(|x| x == l)
    }

    fn is_parked(&self, l: usize) -> bool {
        matches!(self.listeners[l], Lst::Parked { .. })
    }

    /// Why the state says parked listener `l` waits.
    fn pause_reason(&self, l: usize) -> PauseReason {
        pause_reason(l, self.state.listener_state(ListenerId(l)))
    }

    /// What `admit` (or a resume) may answer for `l` now. The state checks,
    /// in order: shortage, global, frontend and listener maxconn, global
    /// rate, frontend rate; a rate at an exact token boundary may go either
    /// way (f64).
    fn room(&self, l: usize) -> RoomModel {
        if self.shortage[l].is_some_and(|until| until > self.t) {
            return RoomModel { reasons: vec![PauseReason::Shortage], grant: None };
        }
        let f = self.frontend(l);
        let count = |max: u32, used: u32| (free(max, used), free(max, used));
        let checks = [
            (count(self.cfg.global_maxconn, self.global_used()), PauseReason::Global),
            (count(self.cfg.frontends[f].maxconn, self.frontend_used(f)), PauseReason::Frontend),
            (count(self.cfg.listeners[l].maxconn, self.listener_used(l)), PauseReason::Listener),
            (self.global_rate.available(self.t), PauseReason::GlobalRate),
            (self.frontend_rates[f].available(self.t), PauseReason::FrontendRate),
        ];
        let mut reasons = Vec::new();
        let (mut lo, mut hi) = (u32::MAX, u32::MAX);
        for ((low, high), reason) in checks {
            if low == 0 {
                reasons.push(reason);
            }
            if high == 0 {
                return RoomModel { reasons, grant: None };
            }
            lo = lo.min(low.max(1));
            hi = hi.min(high);
        }
        RoomModel { reasons, grant: Some((lo, hi)) }
    }

    fn step(&mut self, op: &AOp) {
        let nl = self.listeners.len();
        match *op {
            AOp::Admit { l, want } => self.admit(l % nl, want),
            AOp::Accept { l, k } => self.accept(l % nl, k),
            AOp::AcceptFails { l, k, recheck_ms } => self.accept_fails(l % nl, k, recheck_ms),
            AOp::Close(pick) => self.close(pick),
            AOp::Advance { us, fire } => self.advance(us, fire),
            AOp::Wake => {
                self.wake();
            }
            // Paused listeners resume: a listener paused on a count limit resumes on the
            // release itself, so the safety-net tick can only find time-based
            // pauses that are over (`served` checks every resume against the
            // model, and `check` that count pauses are still at their limit).
            AOp::Tick => self.recheck(),
            AOp::Unpark(l) => {
                let l = l % nl;
                let got = self.state.unpark(ListenerId(l));
                if self.is_parked(l) {
                    assert_eq!(got, Some(l), "unpark of parked listener {l}");
                    self.parked.retain(|&p| p != l);
                    self.listeners[l] = Lst::Gone;
                } else {
                    assert_eq!(got, None, "unpark of listener {l} in state {:?}", self.listeners[l]);
                }
            }
            AOp::Stop(l) => {
                let l = l % nl;
                match self.listeners[l] {
                    Lst::Idle | Lst::Gone => self.listeners[l] = Lst::Gone,
                    Lst::Holding(n) => {
                        self.listeners[l] = Lst::Gone;
                        self.give_back(l, n);
                    }
                    Lst::Parked { want, .. } => self.listeners[l] = Lst::Parked { want, dead: true },
                    Lst::Returning(_) => unreachable!("only inside resume"),
                }
            }
            AOp::SetMaxconn { f, maxconn } => {
                let f = f % self.cfg.frontends.len();
                let maxconn = clamp(maxconn, self.frontend_used(f));
                let (from, resumed) =
                    self.state.set_frontend_maxconn(FrontendId(f), maxconn, self.now()).expect("a frontend");
                assert_eq!(from, self.cfg.frontends[f].maxconn, "frontend {f}'s previous maxconn");
                self.cfg.frontends[f].maxconn = maxconn;
                self.resume(resumed);
            }
            AOp::Reload(ref limits) => self.reload(limits),
        }
        self.check();
    }

    /// A reload amid the traffic: the state's own `reload`, then the
    /// watchdog's `reconfigure_stress` and `resume`. Frontends whose
    /// configured limits did not change keep a run-time `maxconn`; a changed
    /// rate starts a fresh bucket; `global_maxconn` stays.
    fn reload(&mut self, limits: &ReloadLimits) {
        let mut next = self.cfg.clone();
        next.global_maxconn = limits.global_maxconn;
        next.global_rate = limits.global_rate;
        for (l, &maxconn) in limits.listeners.iter().enumerate().take(next.listeners.len()) {
            next.listeners[l].maxconn = clamp(maxconn, self.listener_used(l));
        }
        let mut cooldowns = Vec::new();
        for (f, &(maxconn, rate, ms)) in limits.frontends.iter().enumerate().take(next.frontends.len()) {
            next.frontends[f] = FrontendLimits { maxconn: clamp(maxconn, self.frontend_used(f)), rate };
            cooldowns.push(ms_to(ms));
        }
        for (f, configured) in next.frontends.iter().enumerate() {
            if *configured != self.configured[f] {
                self.cfg.frontends[f].maxconn = configured.maxconn;
            }
            self.cfg.frontends[f].rate = configured.rate;
            self.frontend_rates[f].reconfigure(configured.rate, self.t);
            let (cooldown, last) = &mut self.stress[f];
            *cooldown = cooldowns[f].as_nanos() as u64;
            if *cooldown == 0 {
                *last = None;
            }
        }
        self.configured.clone_from(&next.frontends);
        self.cfg.listeners.clone_from(&next.listeners);
        self.cfg.global_rate = next.global_rate;
        self.global_rate.reconfigure(next.global_rate, self.t);
        let resumed = self.state.reload(&next, self.now());
        self.book.reconfigure_stress(&configured_cooldowns(&cooldowns));
        self.resume(resumed);
    }

    /// `Admit` handler: grant `min(want, room)` at once, or park.
    fn admit(&mut self, l: usize, want: u32) {
        // One Admit in flight per listener (the accept loop).
        if self.listeners[l] != Lst::Idle {
            return;
        }
        let room = self.room(l);
        match self.state.admit(ListenerId(l), want, l, self.now()) {
            Admitted::Granted(n, waiter) => {
                assert_eq!(waiter, l);
                let Some((lo, hi)) = room.grant else {
                    panic!("listener {l} granted {n}; the model has it blocked by {:?}", room.reasons);
                };
                assert!(
                    n >= want.min(lo) && n <= want.min(hi),
                    "listener {l} granted {n} of {want}; the model's room is {lo}..={hi}"
                );
                self.grant(l, n, false);
            }
            Admitted::Parked(reason) => {
                // Shortage: parked until the recheck or any close; limits:
                // the first one reached, in the state's order.
                assert!(room.reasons.contains(&reason), "listener {l} parked on {reason:?}; the model allows {room:?}");
                if reason != PauseReason::Shortage {
                    let frontend = FrontendId(self.frontend(l));
                    self.hits.push(LimitHit { frontend, listener: ListenerId(l), reason });
                }
                self.listeners[l] = Lst::Parked { want, dead: false };
                self.parked.push_back(l);
            }
        }
    }

    /// `n` credits go to `l` (at `admit` or on a resume): the model's counts
    /// and buckets, and Postfix's rule that reaching a limit is a hit.
    fn grant(&mut self, l: usize, n: u32, returning: bool) {
        let f = self.frontend(l);
        self.listeners[l] = if returning { Lst::Returning(n) } else { Lst::Holding(n) };
        self.global_rate.take(n, self.t, "global rate");
        self.frontend_rates[f].take(n, self.t, &format!("frontend {f} rate"));
        let reached = [
            (self.cfg.global_maxconn, self.global_used(), PauseReason::Global),
            (self.cfg.frontends[f].maxconn, self.frontend_used(f), PauseReason::Frontend),
            (self.cfg.listeners[l].maxconn, self.listener_used(l), PauseReason::Listener),
        ];
        if let Some(&(_, _, reason)) = reached.iter().find(|&&(max, used, _)| max > 0 && used >= max) {
            self.hits.push(LimitHit { frontend: FrontendId(f), listener: ListenerId(l), reason });
        }
    }

    /// The accept loop: use `k` of the credits, give the rest back.
    fn accept(&mut self, l: usize, k: u32) {
        let Lst::Holding(n) = self.listeners[l] else {
            return;
        };
        let used = k.min(n);
        self.sessions.extend(std::iter::repeat_n(l, used as usize));
        self.listeners[l] = Lst::Idle;
        if used < n {
            self.give_back(l, n - used);
        }
    }

    /// The accept loop when `accept()` fails with EMFILE & co.: `Shortage`,
    /// then `GiveBack` of the unused credits.
    fn accept_fails(&mut self, l: usize, k: u32, recheck_ms: u64) {
        let Lst::Holding(n) = self.listeners[l] else {
            return;
        };
        let used = k % n;
        self.sessions.extend(std::iter::repeat_n(l, used as usize));
        self.listeners[l] = Lst::Idle;
        self.state.shortage(ListenerId(l), self.now(), Duration::from_millis(recheck_ms));
        self.shortage[l] = Some(self.t + recheck_ms * 1_000_000);
        let frontend = FrontendId(self.frontend(l));
        self.hits.push(LimitHit { frontend, listener: ListenerId(l), reason: PauseReason::Shortage });
        self.give_back(l, n - used);
    }

    /// `GiveBack`: `n` credits of `l`, no longer counted by the model, come
    /// back (to the buckets too: the sessions never happened).
    fn give_back(&mut self, l: usize, n: u32) {
        self.refund(l, n);
        let resumed = self.state.give_back(ListenerId(l), n, self.now());
        self.resume(resumed);
    }

    /// Credits of `l` that were never used go back to the model's buckets.
    fn refund(&mut self, l: usize, n: u32) {
        let f = self.frontend(l);
        self.global_rate.give_back(n, self.t);
        self.frontend_rates[f].give_back(n, self.t);
    }

    fn close(&mut self, pick: usize) {
        if self.sessions.is_empty() {
            return;
        }
        let l = self.sessions.remove(pick % self.sessions.len());
        // Its fds are free: every shortage pause ends.
        self.shortage.fill(None);
        let resumed = self.state.session_closed(ListenerId(l), self.now());
        self.resume(resumed);
    }

    /// `ResourceWatchdog::resume`: the state's own `hand_out`, with a
    /// `send` that fails for listeners that stopped (their reply channel is
    /// closed). The batch is checked against the model of `serve_parked`
    /// first; a refused offer makes the state take the credits back and
    /// serve the parked listeners again, and that pass is checked from what
    /// the state shows at the next offer (or after `hand_out`). Every resumed
    /// listener must be offered its credits exactly once.
    fn resume(&mut self, resumed: Vec<Resumed<usize>>) {
        let nl = self.listeners.len();
        self.served(&resumed, &Snapshot::of(&self.state, nl));
        let stopped: Vec<bool> =
            self.listeners.iter().map(|s| matches!(s, Lst::Parked { dead: true, .. } | Lst::Returning(_))).collect();
        let mut offers = Vec::new();
        let book = &self.book;
        self.state.hand_out(resumed, self.now(), |resumed, state| {
            let stress = book.in_stress(resumed.frontend);
            let accepted = !stopped[resumed.listener.0];
            offers.push(Offer { resumed, stress, seen: Snapshot::of(state, nl) });
            accepted
        });
        let mut refused = false;
        for offer in offers {
            if refused {
                self.resumed_after_refusal(&offer.seen);
            }
            refused = self.offered(offer);
        }
        if refused {
            self.resumed_after_refusal(&Snapshot::of(&self.state, nl));
        }
        assert!(self.unoffered.is_empty(), "listeners {:?} resumed but never offered credits", self.unoffered);
    }

    /// One offer of `hand_out`: to a listener resumed and not offered yet,
    /// with the credits it was resumed with, and the stress flag of its
    /// frontend. Answers whether it was refused: a stopped listener's
    /// credits go back.
    fn offered(&mut self, offer: Offer) -> bool {
        let r = offer.resumed;
        let l = r.listener.0;
        assert_eq!(r.waiter, l, "credits offered to another listener's waiter");
        let i = self.unoffered.iter().position(|&x| x == l);
        assert!(i.is_some(), "listener {l} offered credits it was not resumed with (or twice)");
        self.unoffered.remove(i.unwrap_or_default());
        let f = self.frontend(l);
        assert_eq!(r.frontend, FrontendId(f), "listener {l} offered credits for another frontend");
        assert_eq!(offer.stress, self.stress[f].1.is_some(), "stress flag of frontend {f}'s grant");
        match self.listeners[l] {
            Lst::Holding(n) => {
                assert_eq!(r.granted, n, "listener {l} offered another count than resumed with");
                false
            }
            Lst::Returning(n) => {
                assert_eq!(r.granted, n, "listener {l} offered another count than resumed with");
                self.listeners[l] = Lst::Gone;
                self.refund(l, n);
                true
            }
            other => panic!("listener {l} offered credits while {other:?}"),
        }
    }

    /// After a refused offer the state served its parked listeners again:
    /// those no longer parked in `seen` were resumed with what they count
    /// now beyond the model's record. Checked as one `serve_parked` pass.
    fn resumed_after_refusal(&mut self, seen: &Snapshot) {
        let resumed: Vec<Resumed<usize>> = self
            .parked
            .iter()
            .filter(|l| !seen.parked.contains(l))
            .map(|&l| Resumed {
                listener: ListenerId(l),
                frontend: FrontendId(self.frontend(l)),
                granted: seen.used[l] - self.listener_used(l),
                waiter: l,
            })
            .collect();
        self.served(&resumed, seen);
        assert_eq!(seen.parked, self.parked.iter().copied().collect::<Vec<_>>(), "parked listeners, in order");
    }

    /// One `serve_parked` pass, replayed on the model: parked listeners are
    /// tried in park order (resumed listeners come in park order); each gets
    /// `min(want, room)` credits or stays parked on a reason the model
    /// allows — so nobody is skipped while it has room. `seen`: the state
    /// right after the pass.
    fn served(&mut self, resumed: &[Resumed<usize>], seen: &Snapshot) {
        let mut resumed = resumed.iter().peekable();
        let order: Vec<usize> = self.parked.iter().copied().collect();
        for l in order {
            let Lst::Parked { want, dead } = self.listeners[l] else {
                unreachable!("the model's parked list holds parked listeners");
            };
            let room = self.room(l);
            match resumed.next_if(|r| r.listener.0 == l) {
                Some(r) => {
                    let Some((lo, hi)) = room.grant else {
                        panic!(
                            "listener {l} resumed with {}; the model has it blocked by {:?}",
                            r.granted, room.reasons
                        );
                    };
                    assert!(
                        r.granted >= want.min(lo) && r.granted <= want.min(hi),
                        "listener {l} resumed with {} of {want}; the model's room is {lo}..={hi}",
                        r.granted
                    );
                    self.parked.retain(|&p| p != l);
                    self.grant(l, r.granted, dead);
                    self.unoffered.push(l);
                }
                None => {
                    let reason = pause_reason(l, seen.shown[l]);
                    assert!(
                        room.reasons.contains(&reason),
                        "listener {l} left parked on {reason:?}; the model allows {room:?}"
                    );
                }
            }
        }
        if let Some(r) = resumed.next() {
            panic!("listener {} resumed out of park order, or not parked", r.listener.0);
        }
    }

    /// `recheck(now)`: the watchdog's timer or its `maxconn_recheck` tick.
    fn recheck(&mut self) {
        let resumed = self.state.recheck(self.now());
        self.resume(resumed);
        // Every time-based pause over by now was served (or is blocked
        // anew): the next one ends strictly later.
        if let Some(w) = self.state.next_wakeup(self.now()) {
            assert!(self.ns(w) > self.t, "after recheck at {} ns, next_wakeup is {} ns", self.t, self.ns(w));
        }
    }

    /// The watchdog's timer fires at `next_wakeup` (or now, if late): a
    /// listener parked on a rate or shortage is resumed there, or is blocked
    /// again on a reason the model allows (`served`).
    fn wake(&mut self) -> bool {
        let Some(w) = self.state.next_wakeup(self.now()) else {
            return false;
        };
        self.check_wakeup();
        self.t = self.t.max(self.ns(w));
        self.recheck();
        true
    }

    fn advance(&mut self, us: u64, fire: bool) {
        let target = self.t + us * 1_000;
        if fire {
            // Each recheck moves next_wakeup strictly later (by at least a
            // ms for a rate), so this ends.
            while let Some(w) = self.state.next_wakeup(self.now()) {
                if self.ns(w) > target {
                    break;
                }
                self.wake();
                self.check();
            }
        }
        self.t = target;
    }

    /// `next_wakeup` (the watchdog's timer) is set exactly while a listener
    /// is parked on a rate or a shortage, for when the first such pause ends:
    /// never early, late only by `next_token`'s rounding up to the ms.
    fn check_wakeup(&self) {
        let ends: Vec<u64> = self
            .parked
            .iter()
            .filter_map(|&l| match self.pause_reason(l) {
                PauseReason::GlobalRate => Some(self.global_rate.next_token(self.t)),
                PauseReason::FrontendRate => Some(self.frontend_rates[self.frontend(l)].next_token(self.t)),
                PauseReason::Shortage => Some(self.shortage[l].expect("a shortage pause the model knows")),
                _ => None,
            })
            .collect();
        let wakeup = self.state.next_wakeup(self.now()).map(|w| self.ns(w));
        match (ends.iter().min(), wakeup) {
            (None, None) => {}
            (Some(&end), Some(w)) => assert!(
                w + TIME_SLACK >= end && w <= end + WAKEUP_ROUNDING + TIME_SLACK,
                "next_wakeup at {w} ns; the first time-based pause ends at {end} ns (now {} ns)",
                self.t
            ),
            (end, w) => {
                panic!("next_wakeup {w:?} ns; first time-based pause ends at {end:?} ns (parked {:?})", self.parked)
            }
        }
    }

    fn check(&mut self) {
        let now = self.now();
        let hits = self.state.take_hits();
        assert_eq!(hits, std::mem::take(&mut self.hits), "limit hits");
        self.account_hits(hits);
        assert_eq!(self.state.global_max(), self.cfg.global_maxconn, "global maxconn in force");
        assert_eq!(self.state.global_rate(), self.cfg.global_rate, "global maxconnrate in force");
        for (f, limits) in self.cfg.frontends.iter().enumerate() {
            let id = FrontendId(f);
            assert_eq!((self.state.frontend_max(id), self.state.frontend_rate(id)), (limits.maxconn, limits.rate));
        }
        for (l, limits) in self.cfg.listeners.iter().enumerate() {
            assert_eq!(self.state.listener_max(ListenerId(l)), limits.maxconn, "listener {l}'s bind_maxconn");
        }
        // Never over a count limit: the simulator's count (sessions + credits out) is
        // what the state counts, and never exceeds a limit: global, frontend
        // or listener (bind_maxconn).
        let global = self.global_used();
        assert_eq!(self.state.global_used(), global, "global used");
        if self.cfg.global_maxconn > 0 {
            assert!(global <= self.cfg.global_maxconn, "global {global} > maxconn {}", self.cfg.global_maxconn);
        }
        for (f, limits) in self.cfg.frontends.iter().enumerate() {
            let used = self.frontend_used(f);
            assert_eq!(self.state.frontend_used(FrontendId(f)), used, "frontend {f} used");
            if limits.maxconn > 0 {
                assert!(used <= limits.maxconn, "frontend {f}: {used} > maxconn {}", limits.maxconn);
            }
        }
        for (l, limits) in self.cfg.listeners.iter().enumerate() {
            let used = self.listener_used(l);
            assert_eq!(self.state.listener_used(ListenerId(l)), used, "listener {l} used");
            if limits.maxconn > 0 {
                assert!(used <= limits.maxconn, "listener {l}: {used} > bind_maxconn {}", limits.maxconn);
            }
        }
        let parked: Vec<usize> = self.state.parked().map(|l| l.0).collect();
        assert_eq!(parked, self.parked.iter().copied().collect::<Vec<_>>(), "parked listeners, in order");
        for l in 0..self.listeners.len() {
            if !self.is_parked(l) {
                assert!(!self.parked.contains(&l), "listener {l} in the parked list but {:?}", self.listeners[l]);
                assert_eq!(self.state.listener_state(ListenerId(l)), ListenerState::Open, "listener {l}");
                continue;
            }
            assert!(self.parked.contains(&l), "listener {l} parked in the model only");
            let f = self.frontend(l);
            let at_max = |max: u32, used: u32| max > 0 && used >= max;
            match self.pause_reason(l) {
                // Paused listeners resume: paused listeners resume as soon as capacity
                // returns, so one parked on a count limit still has it
                // reached.
                PauseReason::Global => assert!(
                    at_max(self.cfg.global_maxconn, global),
                    "listener {l} paused on global maxconn with {global} of {} used",
                    self.cfg.global_maxconn
                ),
                PauseReason::Frontend => assert!(
                    at_max(self.cfg.frontends[f].maxconn, self.frontend_used(f)),
                    "listener {l} paused on frontend {f}'s maxconn with room"
                ),
                PauseReason::Listener => assert!(
                    at_max(self.cfg.listeners[l].maxconn, self.listener_used(l)),
                    "listener {l} FULL below its bind_maxconn"
                ),
                // Time-based pauses end on the timer (`check_wakeup`), which
                // may not have run yet (it is late, or `next_token` rounded
                // it up): a rate pause may be over already.
                PauseReason::GlobalRate | PauseReason::FrontendRate => {}
                PauseReason::Shortage => {
                    assert!(self.shortage[l].is_some(), "listener {l} paused on a shortage the model ended");
                }
            }
        }
        // The struct's own check: limits, nobody parked on a count limit
        // while it has room (time-based pauses wait for `recheck`).
        if let Err(e) = self.state.check(now) {
            panic!("AdmissionState::check: {e}");
        }
        self.check_wakeup();
    }

    /// The watchdog's `account_hits`: each hit goes to the `HitBook`, which
    /// counts it, warns the first time for its cause and owner, and puts a
    /// frontend with a stress cooldown in stress; then stress periods over
    /// by now end.
    fn account_hits(&mut self, hits: Vec<LimitHit>) {
        let now = self.now();
        for hit in hits {
            let counted = &mut self.counted;
            match hit.reason {
                PauseReason::Global | PauseReason::Frontend | PauseReason::Listener => counted.0 += 1,
                PauseReason::GlobalRate | PauseReason::FrontendRate => counted.1 += 1,
                PauseReason::Shortage => counted.2 += 1,
            }
            let first = self.warned.insert((hit.reason, hit.owner()));
            let (cooldown, last) = &mut self.stress[hit.frontend.0];
            let entered = *cooldown > 0 && last.is_none();
            if *cooldown > 0 {
                *last = Some(self.t);
            }
            let effects = self.book.hit(hit, now);
            assert_eq!(effects.stress_entered, entered, "{hit:?} entering stress");
            if first {
                assert_eq!(effects, HitEffects { warn: Some(1), stress_entered: entered }, "first {hit:?}");
            }
        }
        let mut left: Vec<FrontendId> = Vec::new();
        for (f, (cooldown, last)) in self.stress.iter_mut().enumerate() {
            if last.is_some_and(|at| self.t - at >= *cooldown) {
                *last = None;
                left.push(FrontendId(f));
            }
        }
        assert_eq!(self.book.expire_stress(now), left, "frontends leaving stress");
        let counters = self.book.counters();
        let counted = (counters.limit_reached, counters.rate_limited, counters.shortages);
        assert_eq!(counted, self.counted, "watchdog counters (count limits, rates, shortages)");
        for (f, (_, last)) in self.stress.iter().enumerate() {
            assert_eq!(self.book.in_stress(FrontendId(f)), last.is_some(), "frontend {f} in stress");
        }
    }

    fn holding_any(&self) -> bool {
        self.listeners.iter().any(|s| matches!(s, Lst::Holding(_)))
    }

    /// End of a case: give every credit back and close every session, round
    /// after round, letting the clock run to each `next_wakeup` when nothing
    /// is in use; every parked listener must get served and everything must
    /// come back to zero.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            for l in 0..self.listeners.len() {
                if let Lst::Holding(_) = self.listeners[l] {
                    self.accept(l, 0);
                    self.check();
                }
            }
            while !self.sessions.is_empty() {
                self.close(self.sessions.len() - 1);
                self.check();
            }
            if self.holding_any() {
                continue;
            }
            if self.parked.is_empty() {
                break;
            }
            // Nothing in use: only a time-based pause can hold a listener
            // back, and the timer must be set for it.
            assert!(self.wake(), "listeners {:?} parked with nothing in use and no timer", self.parked);
            self.check();
        }
        assert!(self.parked.is_empty(), "listeners still parked: {:?}", self.parked);
        assert!(!self.holding_any());
        assert_eq!(self.state.global_used(), 0, "global used after draining");
        for f in 0..self.cfg.frontends.len() {
            assert_eq!(self.state.frontend_used(FrontendId(f)), 0, "frontend {f} used after draining");
        }
        for l in 0..self.cfg.listeners.len() {
            assert_eq!(self.state.listener_used(ListenerId(l)), 0, "listener {l} used after draining");
        }
        assert_eq!(self.state.next_wakeup(self.now()), None);
        assert_eq!(self.state.check(self.now()), Ok(()));
    }
}

proptest! {
    #![proptest_config(config())]

    /// Model 2: random limits (global, frontend and listener maxconn;
    /// global and frontend rates; stress cooldowns) and listeners, random
    /// interleavings of admits, accepts, shortages, closes, clock moves,
    /// timer wake-ups, rechecks, stops, run-time maxconn changes and
    /// reloads.
    #[test]
    fn admission(
        cfg in admission_cfg(),
        cooldowns in prop::collection::vec(cooldown_ms(), 3),
        ops in prop::collection::vec(admission_op(), 0..MAX_OPS),
    ) {
        let mut sim = AdmissionSim::new(cfg, &cooldowns);
        for op in &ops {
            sim.step(op);
        }
        sim.drain();
    }
}

/// A rate pause that is over but not yet rechecked is no error for `check`
/// (which the ResourceWatchdog asserts after every message): `next_token`
/// sets the timer up to a millisecond after the token is back, and the timer
/// may be late, so another listener's message can be handled in between.
#[test]
fn check_excepts_time_based_pauses() {
    let t = Instant::now();
    let config = AdmissionConfig::from_limits(0, &[(0, 3), (0, 0)], &[(0, 0), (1, 0)]);
    let mut a: AdmissionState<()> = AdmissionState::new(&config, t);
    assert!(matches!(a.admit(ListenerId(0), 3, (), t), Admitted::Granted(3, ())));
    assert!(matches!(a.admit(ListenerId(0), 1, (), t), Admitted::Parked(PauseReason::FrontendRate)));
    // 3/s: the next token is back at t + 333.3 ms; the timer is for 334 ms.
    let wake = a.next_wakeup(t).expect("a timer for the rate pause");
    let now = t + Duration::from_micros(333_500);
    assert!(now < wake, "timer at {:?}", wake - t);
    // Listener 1 (another frontend) is admitted meanwhile; the watchdog
    // then asserts check(now).
    assert!(matches!(a.admit(ListenerId(1), 1, (), now), Admitted::Granted(1, ())));
    assert_eq!(a.check(now), Ok(()));
    // The timer resumes it.
    let resumed = a.recheck(wake);
    assert_eq!(resumed.iter().map(|r| (r.listener, r.granted)).collect::<Vec<_>>(), vec![(ListenerId(0), 1)]);
    assert_eq!(a.check(wake), Ok(()));
}
