//! A server's health and administrative state, as a plain struct on an
//! injected clock (the Server actor runs the checks and the timers).
//!
//! - Operational: UP, DOWN, STARTING (slowstart ramp after coming back).
//!   `fall` consecutive failed checks take an UP server DOWN; `rise`
//!   consecutive good ones bring a DOWN server back. `error_limit`
//!   consecutive failed connections of live traffic count as one failed
//!   check (HAProxy's `observe layer4` with `on-error fail-check`).
//! - Live traffic teaches the state even without checks:
//!   `down_after_failed_connects` consecutive failed connects (refused or
//!   timed out, no success between) take the server DOWN at once (HAProxy's
//!   `on-error mark-down`). A server taken down this way while active
//!   checks are off is *probed*: a plain TCP connect every `downinter`,
//!   and the first that succeeds brings it back. With checks on, the
//!   checks bring it back (`rise`).
//! - Administrative: `ready`, `drain` (weight 0: no new balanced sessions,
//!   own queue still served), `maint` (no traffic, no checks).
//! - Slowstart: after coming back (never at process start), weight and
//!   maxconn ramp from 0 to full over `slowstart`, in whole-second steps as
//!   in HAProxy, never below 1.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::core::ServerStatus;
use super::limit::Limit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    Up,
    Down,
    Starting,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Up => "UP",
            OpState::Down => "DOWN",
            OpState::Starting => "STARTING",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    pub fn parse(s: &str) -> Option<AdminState> {
        match s {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maint" => Some(AdminState::Maint),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub checks: bool,
    pub inter: Duration,
    pub fastinter: Duration,
    pub downinter: Duration,
    pub rise: u32,
    pub fall: u32,
    pub error_limit: u32,
    /// Consecutive failed connects of live traffic that take the server
    /// DOWN at once (`None` = never).
    pub down_after_failed_connects: Option<NonZeroU32>,
    pub slowstart: Duration,
    pub weight: u32,
    /// 0 = unlimited.
    pub maxconn: u32,
    /// Cluster mode: this instance may use only the share of `maxconn`
    /// the cluster gives it, none until the first allocation.
    pub clustered: bool,
}

/// The result of one active check, in HAProxy's words (logs and the admin
/// API show exactly these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CheckResult {
    /// Connected (and, if the check sends or expects, did so).
    #[serde(rename = "L4OK")]
    L4Ok,
    /// Could not connect, or the connection failed while sending.
    #[serde(rename = "L4CON")]
    L4Con,
    /// Did not finish within the check's timeout.
    #[serde(rename = "L4TOUT")]
    L4Tout,
    /// The reply was short or not the expected one.
    #[serde(rename = "L7RSP")]
    L7Rsp,
}

impl CheckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::L4Ok => "L4OK",
            CheckResult::L4Con => "L4CON",
            CheckResult::L4Tout => "L4TOUT",
            CheckResult::L7Rsp => "L7RSP",
        }
    }

    /// The check passed.
    pub fn passed(self) -> bool {
        self == CheckResult::L4Ok
    }
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change worth a log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: OpState,
    pub to: OpState,
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct ServerHealth {
    cfg: HealthConfig,
    op: OpState,
    admin: AdminState,
    /// Consecutive good and failed checks.
    good: u32,
    bad: u32,
    /// Consecutive failed connections of live traffic, toward `error_limit`.
    passive_errors: u32,
    /// Consecutive failed connects of live traffic, toward
    /// `down_after_failed_connects`.
    failed_connects: u32,
    /// Taken DOWN by failed connects while checks are off: probes run
    /// until one succeeds.
    probing: bool,
    /// When the slowstart ramp began.
    ramp_from: Option<Instant>,
    weight: u32,
    maxconn: u32,
    /// In cluster mode, this instance's share of `maxconn`.
    share: Option<u32>,
    last_change: Instant,
}

impl ServerHealth {
    /// Starts UP (as HAProxy does), without slowstart.
    pub fn new(cfg: HealthConfig, now: Instant) -> ServerHealth {
        let (weight, maxconn, share) = (cfg.weight, cfg.maxconn, Self::first_share(&cfg));
        ServerHealth {
            cfg,
            op: OpState::Up,
            admin: AdminState::Ready,
            good: 0,
            bad: 0,
            passive_errors: 0,
            failed_connects: 0,
            probing: false,
            ramp_from: None,
            weight,
            maxconn,
            share,
            last_change: now,
        }
    }

    /// A limited server in cluster mode starts with no share: it seats no
    /// one until the cluster has given it slots.
    fn first_share(cfg: &HealthConfig) -> Option<u32> {
        (cfg.clustered && cfg.maxconn > 0).then_some(0)
    }

    /// A reload changed the configuration: its values replace run-time
    /// changes (admin state ready, configured weight and maxconn, no ramp).
    /// The operational state carries on, except that a server without
    /// checks any more is up.
    pub fn reconfigure(&mut self, cfg: HealthConfig, now: Instant) -> Option<Transition> {
        self.weight = cfg.weight;
        self.maxconn = cfg.maxconn;
        self.admin = AdminState::Ready;
        self.ramp_from = None;
        self.passive_errors = 0;
        self.failed_connects = 0;
        self.probing = false;
        // A share carries over a reload; one that starts or ends with
        // cluster mode or a limit follows it.
        self.share = match Self::first_share(&cfg) {
            Some(none_yet) => Some(self.share.unwrap_or(none_yet)),
            None => None,
        };
        let checks = cfg.checks;
        self.cfg = cfg;
        match self.op {
            OpState::Up => None,
            _ if !checks => self.change(OpState::Up, "reconfigured without checks", now),
            OpState::Starting => self.change(OpState::Up, "reconfigured", now),
            OpState::Down => None,
        }
    }

    pub fn op(&self) -> OpState {
        self.op
    }

    pub fn admin(&self) -> AdminState {
        self.admin
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn maxconn(&self) -> u32 {
        self.maxconn
    }

    pub fn last_change(&self) -> Instant {
        self.last_change
    }

    /// Consecutive good and failed checks (for logs and stats).
    pub fn counts(&self) -> (u32, u32) {
        (self.good, self.bad)
    }

    /// Active checks or probes run now (not in maintenance).
    pub fn checking(&self) -> bool {
        (self.cfg.checks || self.probing) && self.admin != AdminState::Maint
    }

    /// The checks that run now are probes: a plain connect, whatever the
    /// configured check sends or expects (checks are off).
    pub fn probing(&self) -> bool {
        self.probing
    }

    /// Time to the next check: `fastinter` while changing state, `downinter`
    /// while down, `inter` otherwise.
    pub fn next_interval(&self) -> Duration {
        let or_inter = |d: Duration| if d.is_zero() { self.cfg.inter } else { d };
        match self.op {
            OpState::Down if self.good > 0 => or_inter(self.cfg.fastinter),
            OpState::Down => or_inter(self.cfg.downinter),
            _ if self.bad > 0 => or_inter(self.cfg.fastinter),
            _ => self.cfg.inter,
        }
    }

    fn change(&mut self, to: OpState, reason: &'static str, now: Instant) -> Option<Transition> {
        if self.op == to {
            return None;
        }
        let from = self.op;
        self.op = to;
        self.last_change = now;
        Some(Transition { from, to, reason })
    }

    fn come_back(&mut self, reason: &'static str, now: Instant) -> Option<Transition> {
        self.probing = false;
        self.failed_connects = 0;
        if self.cfg.slowstart.is_zero() {
            self.ramp_from = None;
            self.change(OpState::Up, reason, now)
        } else {
            self.ramp_from = Some(now);
            self.change(OpState::Starting, reason, now)
        }
    }

    /// The result of one active check.
    pub fn check_result(&mut self, ok: bool, now: Instant) -> Option<Transition> {
        if ok {
            self.bad = 0;
            self.good = self.good.saturating_add(1);
            self.passive_errors = 0;
            if self.op == OpState::Down && self.probing {
                return self.come_back("probe passed", now);
            }
            if self.op == OpState::Down && self.good >= self.cfg.rise {
                return self.come_back("check passed", now);
            }
        } else {
            self.good = 0;
            self.bad = self.bad.saturating_add(1);
            if self.op != OpState::Down && self.bad >= self.cfg.fall {
                self.ramp_from = None;
                return self.change(OpState::Down, "check failed", now);
            }
        }
        None
    }

    /// The result of one connection attempt of live traffic.
    pub fn observe(&mut self, ok: bool, now: Instant) -> Option<Transition> {
        if ok {
            self.passive_errors = 0;
            self.failed_connects = 0;
            return None;
        }
        if self.op == OpState::Down {
            // Attempts that were under way when it went down.
            return None;
        }
        self.failed_connects = self.failed_connects.saturating_add(1);
        if self.cfg.down_after_failed_connects.is_some_and(|n| self.failed_connects >= n.get()) {
            return self.mark_down_by_failed_connects(now);
        }
        if !self.cfg.checks || self.cfg.error_limit == 0 {
            return None;
        }
        self.passive_errors += 1;
        if self.passive_errors < self.cfg.error_limit {
            return None;
        }
        self.passive_errors = 0;
        let t = self.check_result(false, now);
        t.map(|t| Transition { reason: "live traffic errors", ..t })
    }

    fn mark_down_by_failed_connects(&mut self, now: Instant) -> Option<Transition> {
        self.failed_connects = 0;
        self.passive_errors = 0;
        self.good = 0;
        self.ramp_from = None;
        self.probing = !self.cfg.checks;
        self.change(OpState::Down, "connect failures", now)
    }

    pub fn set_admin(&mut self, admin: AdminState, now: Instant) -> Option<Transition> {
        let leaving_maint = self.admin == AdminState::Maint && admin != AdminState::Maint;
        self.admin = admin;
        self.last_change = now;
        if leaving_maint && self.op != OpState::Down {
            // Back from maintenance counts as coming back (slowstart).
            let from = self.op;
            self.op = OpState::Down;
            return self.come_back("left maintenance", now).map(|t| Transition { from, ..t });
        }
        None
    }

    pub fn set_weight(&mut self, weight: u32) {
        self.weight = weight;
    }

    pub fn set_maxconn(&mut self, maxconn: u32) {
        self.maxconn = maxconn;
    }

    /// Cluster mode: the share of maxconn this instance may use now.
    /// Ignored for a server without a limit or outside cluster mode.
    pub fn set_share(&mut self, share: u32) {
        if self.share.is_some() {
            self.share = Some(share);
        }
    }

    pub fn share(&self) -> Option<u32> {
        self.share
    }

    /// Slowstart progress in percent, in whole-second steps.
    fn ramp_percent(&self, now: Instant) -> Option<u64> {
        let from = self.ramp_from?;
        let total = self.cfg.slowstart.as_secs().max(1);
        let elapsed = now.saturating_duration_since(from).as_secs();
        (elapsed < total).then(|| elapsed * 100 / total)
    }

    /// Ends the ramp when it is over; the caller then reports the status.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        if self.op == OpState::Starting && self.ramp_percent(now).is_none() {
            self.ramp_from = None;
            return self.change(OpState::Up, "slowstart done", now);
        }
        None
    }

    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn ramping(&self) -> bool {
        self.op == OpState::Starting
    }

    /// What the BackendQueue should know now.
    pub fn status(&self, now: Instant) -> ServerStatus {
        let up = self.op != OpState::Down && self.admin != AdminState::Maint;
        let mut weight = if self.admin == AdminState::Drain { 0 } else { self.weight };
        let maxconn = Limit::from_config(self.maxconn).get();
        let mut cap = None;
        if let Some(pct) = self.ramp_percent(now) {
            if weight > 0 {
                weight = ((u64::from(weight) * pct / 100) as u32).max(1);
            }
            if let Some(maxconn) = maxconn {
                cap = Some(((u64::from(maxconn) * pct / 100) as u32).max(1));
            }
        }
        if let Some(maxconn) = maxconn.filter(|&m| m != self.cfg.maxconn) {
            // Changed at run time. Lowered: slots already lent drain down to
            // it. Raised: the BackendQueue learns the new bound.
            cap = Some(cap.map_or(maxconn, |c| c.min(maxconn)));
        }
        if let Some(share) = self.share {
            // Below maxconn, like a slowstart cap: the credits already lent
            // stay with the BackendQueue, which grants none above it.
            cap = Some(cap.map_or(share, |c| c.min(share)));
        }
        ServerStatus { up, weight, cap }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthConfig {
        HealthConfig {
            checks: true,
            inter: Duration::from_secs(2),
            fastinter: Duration::from_millis(500),
            downinter: Duration::from_secs(5),
            rise: 2,
            fall: 3,
            error_limit: 4,
            down_after_failed_connects: None,
            slowstart: Duration::from_secs(10),
            weight: 10,
            maxconn: 100,
            clustered: false,
        }
    }

    #[test]
    fn fall_rise_and_intervals() {
        let t = Instant::now();
        let mut h = ServerHealth::new(cfg(), t);
        assert_eq!(h.next_interval(), Duration::from_secs(2));
        assert_eq!(h.check_result(false, t), None);
        assert_eq!(h.next_interval(), Duration::from_millis(500), "fastinter while going down");
        assert_eq!(h.check_result(false, t), None);
        let down = h.check_result(false, t).expect("down after fall");
        assert_eq!((down.from, down.to), (OpState::Up, OpState::Down));
        assert_eq!(h.next_interval(), Duration::from_secs(5), "downinter");
        assert!(!h.status(t).up);
        assert_eq!(h.check_result(true, t), None);
        assert_eq!(h.next_interval(), Duration::from_millis(500), "fastinter while coming back");
        let back = h.check_result(true, t).expect("back after rise");
        assert_eq!(back.to, OpState::Starting, "slowstart after being down");
    }

    #[test]
    fn slowstart_ramps_weight_and_maxconn_in_seconds() {
        let t = Instant::now();
        let mut h = ServerHealth::new(cfg(), t);
        for _ in 0..3 {
            h.check_result(false, t);
        }
        h.check_result(true, t);
        h.check_result(true, t);
        let s0 = h.status(t);
        assert_eq!((s0.weight, s0.cap), (1, Some(1)), "never below 1");
        let s5 = h.status(t + Duration::from_millis(5_500));
        assert_eq!((s5.weight, s5.cap), (5, Some(50)));
        assert_eq!(h.tick(t + Duration::from_secs(9)), None);
        assert_eq!(h.tick(t + Duration::from_secs(10)).map(|t| t.to), Some(OpState::Up));
        assert_eq!(h.status(t + Duration::from_secs(10)).cap, None);
    }

    #[test]
    fn passive_errors_count_as_a_failed_check() {
        let t = Instant::now();
        let mut h = ServerHealth::new(cfg(), t);
        for round in 0..3 {
            for _ in 0..3 {
                assert_eq!(h.observe(false, t), None);
            }
            let r = h.observe(false, t);
            assert_eq!(r.is_some(), round == 2, "fall = 3 failed checks, one per error_limit errors");
        }
        assert_eq!(h.op(), OpState::Down);
    }

    fn without_checks(down_after: u32) -> HealthConfig {
        HealthConfig {
            checks: false,
            slowstart: Duration::ZERO,
            down_after_failed_connects: NonZeroU32::new(down_after),
            ..cfg()
        }
    }

    #[test]
    fn failed_connects_take_a_server_down_without_checks_and_a_probe_brings_it_back() {
        let t = Instant::now();
        let mut h = ServerHealth::new(without_checks(3), t);
        assert!(!h.checking(), "no checks while up");
        assert_eq!(h.observe(false, t), None);
        assert_eq!(h.observe(false, t), None);
        assert_eq!(h.observe(true, t), None, "a success in between starts the count again");
        assert_eq!(h.observe(false, t), None);
        assert_eq!(h.observe(false, t), None);
        let down = h.observe(false, t).expect("down after 3 consecutive failed connects");
        assert_eq!((down.from, down.to, down.reason), (OpState::Up, OpState::Down, "connect failures"));
        assert!(!h.status(t).up);
        assert!(h.checking() && h.probing(), "probed while down");
        assert_eq!(h.next_interval(), Duration::from_secs(5), "probes every downinter");
        assert_eq!(h.observe(false, t), None, "attempts under way when it went down change nothing");
        assert_eq!(h.check_result(false, t), None);
        let back = h.check_result(true, t).expect("the first passing probe brings it back");
        assert_eq!((back.to, back.reason), (OpState::Up, "probe passed"));
        assert!(!h.checking() && !h.probing(), "probes stop once up");
    }

    #[test]
    fn failed_connects_can_be_turned_off() {
        let t = Instant::now();
        let mut h = ServerHealth::new(without_checks(0), t);
        for _ in 0..100 {
            assert_eq!(h.observe(false, t), None);
        }
        assert_eq!(h.op(), OpState::Up);
    }

    #[test]
    fn with_checks_a_server_down_by_failed_connects_needs_rise_checks() {
        let t = Instant::now();
        let mut h = ServerHealth::new(
            HealthConfig { down_after_failed_connects: NonZeroU32::new(2), slowstart: Duration::ZERO, ..cfg() },
            t,
        );
        h.observe(false, t);
        assert_eq!(h.observe(false, t).map(|t| t.reason), Some("connect failures"));
        assert!(!h.probing(), "the configured checks run, not probes");
        assert_eq!(h.check_result(true, t), None, "rise = 2");
        assert_eq!(h.check_result(true, t).map(|t| t.to), Some(OpState::Up));
    }

    #[test]
    fn check_results_keep_haproxy_words() {
        for (r, word) in [
            (CheckResult::L4Ok, "L4OK"),
            (CheckResult::L4Con, "L4CON"),
            (CheckResult::L4Tout, "L4TOUT"),
            (CheckResult::L7Rsp, "L7RSP"),
        ] {
            assert_eq!(r.to_string(), word);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{word}\""));
            assert_eq!(r.passed(), word == "L4OK");
        }
    }

    #[test]
    fn admin_states() {
        let t = Instant::now();
        let mut h = ServerHealth::new(HealthConfig { slowstart: Duration::ZERO, ..cfg() }, t);
        h.set_admin(AdminState::Drain, t);
        assert_eq!(h.status(t), ServerStatus { up: true, weight: 0, cap: None });
        h.set_admin(AdminState::Maint, t);
        assert!(!h.status(t).up && !h.checking());
        h.set_admin(AdminState::Ready, t);
        assert_eq!(h.status(t), ServerStatus { up: true, weight: 10, cap: None });
        h.set_maxconn(20);
        assert_eq!(h.status(t).cap, Some(20), "lowered maxconn is a cap");
    }
}
