//! The supervisor's decisions, as plain data with no actix and no clock of
//! its own: when to start a process, which to reap or recycle, when a
//! crashing command throttles the backend and when the throttle ends.
//! Postfix's master takes the same decisions (`master_avail.c`,
//! `master_spawn.c`): a process is created when a client waits and none is
//! free, up to the process limit; a process exits after `max_idle` or
//! `max_use`; a service that keeps failing is throttled.
//!
//! The supervisor feeds it events (demand, a slot's load, a process ready,
//! exited or not ready in time, the time passing) and carries out the
//! [`Action`]s it returns. `tests/spawn_model.rs` drives it at random and
//! checks what must hold: never more processes than `max_procs`, never
//! more starts in flight than the waiters need, never a stop of a process
//! that serves a session, nothing started while throttled.

use std::time::{Duration, Instant};

use crate::backend::spawn_gate::SlotLoad;

/// The figures of `backends.X.spawn` the decisions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    pub min_procs: u32,
    pub max_procs: u32,
    pub sessions_per_proc: u32,
    pub max_use: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub throttle_time: Duration,
    pub max_start_failures: u32,
}

/// Where a slot's process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// No process.
    Empty,
    /// Started, not ready yet.
    Starting,
    /// Takes sessions.
    Ready,
    /// Served `max_use` sessions: takes no new one, stops when idle.
    Draining,
    /// Asked to stop; the slot is free once it exited.
    Stopping,
}

impl ProcState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Empty => "empty",
            ProcState::Starting => "starting",
            ProcState::Ready => "ready",
            ProcState::Draining => "draining",
            ProcState::Stopping => "stopping",
        }
    }
}

/// Why a process is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No session for `idle_timeout`, more than `min_procs` running.
    Idle,
    /// Served `max_use` sessions and the last one ended.
    Recycled,
    /// Not ready within `start_timeout`.
    StartTimeout,
    /// A reload removed the backend and its queue is gone.
    Retired,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::Recycled => "max_use",
            StopReason::StartTimeout => "start_timeout",
            StopReason::Retired => "backend_removed",
        }
    }
}

/// What the supervisor must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a process in slot `usize`.
    Start(usize),
    /// Close the slot to new sessions and, once it serves none, stop its
    /// process (an idle reap the supervisor confirms with the queue first).
    Stop(usize, StopReason),
    /// Throttle the backend until then: refuse its clients at once.
    Throttle { until: Instant },
    /// The throttle ended: clients queue again and demand starts processes.
    Unthrottle,
    /// Clients wait and every slot holds a process (warned at most once per
    /// interval by the supervisor).
    LimitReached,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    state: ProcState,
    load: SlotLoad,
    /// Since when it serves no session (Ready only).
    idle_since: Option<Instant>,
    restarts: u32,
}

/// One slot as `/stats` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    pub state: ProcState,
    pub sessions: u32,
    pub uses: u32,
    /// Processes started in this slot after its first.
    pub restarts: u32,
}

#[derive(Debug)]
pub struct SpawnPolicy {
    cfg: PolicyConfig,
    slots: Vec<Slot>,
    waiting: usize,
    /// Failed starts in a row (reset by a process that became ready).
    failures: u32,
    throttled_until: Option<Instant>,
    /// Processes ever started per slot (restarts = started - 1).
    started: Vec<u32>,
}

impl SpawnPolicy {
    pub fn new(cfg: PolicyConfig) -> SpawnPolicy {
        let n = cfg.max_procs as usize;
        let empty = Slot { state: ProcState::Empty, load: SlotLoad::default(), idle_since: None, restarts: 0 };
        SpawnPolicy { cfg, slots: vec![empty; n], waiting: 0, failures: 0, throttled_until: None, started: vec![0; n] }
    }

    pub fn state(&self, slot: usize) -> ProcState {
        self.slots[slot].state
    }

    pub fn view(&self) -> Vec<SlotView> {
        self.slots
            .iter()
            .map(|s| SlotView { state: s.state, sessions: s.load.sessions, uses: s.load.uses, restarts: s.restarts })
            .collect()
    }

    pub fn throttled_until(&self) -> Option<Instant> {
        self.throttled_until
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn count(&self, state: ProcState) -> usize {
        self.slots.iter().filter(|s| s.state == state).count()
    }

    /// Processes that run or start, whatever their state.
    #[cfg(feature = "internals")]
    pub fn processes(&self) -> usize {
        self.slots.iter().filter(|s| s.state != ProcState::Empty).count()
    }

    // === events ===

    /// Sessions waiting in the backend's queues, and each slot's load.
    pub fn activity(&mut self, waiting: usize, loads: &[SlotLoad], now: Instant) -> Vec<Action> {
        self.waiting = waiting;
        for (slot, load) in self.slots.iter_mut().zip(loads) {
            slot.load = *load;
            if slot.state == ProcState::Ready {
                if self.cfg.max_use.is_some_and(|max| load.uses >= max) {
                    slot.state = ProcState::Draining;
                    slot.idle_since = None;
                } else if load.sessions > 0 {
                    slot.idle_since = None;
                } else if slot.idle_since.is_none() {
                    slot.idle_since = Some(now);
                }
            }
        }
        self.decide(now)
    }

    /// The process of `slot` accepted a connection: it takes sessions.
    pub fn ready(&mut self, slot: usize, now: Instant) -> Vec<Action> {
        let s = &mut self.slots[slot];
        if s.state == ProcState::Starting {
            s.state = ProcState::Ready;
            s.load = SlotLoad::default();
            s.idle_since = Some(now);
            self.failures = 0;
        }
        self.decide(now)
    }

    /// The process of `slot` was not ready within `start_timeout`.
    pub fn start_timed_out(&mut self, slot: usize, now: Instant) -> Vec<Action> {
        if self.slots[slot].state != ProcState::Starting {
            return Vec::new();
        }
        self.slots[slot].state = ProcState::Stopping;
        let mut actions = vec![Action::Stop(slot, StopReason::StartTimeout)];
        actions.extend(self.failed_start(now));
        actions.extend(self.decide(now));
        actions
    }

    /// The supervisor asked the process of `slot` to stop (an idle reap it
    /// confirmed, a recycle).
    pub fn stopping(&mut self, slot: usize) {
        if self.slots[slot].state != ProcState::Empty {
            self.slots[slot].state = ProcState::Stopping;
        }
    }

    /// A recycle found the process serving still: it drains on, and is
    /// stopped when the policy hears its last session ended.
    pub fn recycle_deferred(&mut self, slot: usize) {
        if self.slots[slot].state == ProcState::Stopping {
            self.slots[slot].state = ProcState::Draining;
        }
    }

    /// An idle reap found the process serving after all: it stays.
    pub fn reap_cancelled(&mut self, slot: usize, now: Instant) {
        let s = &mut self.slots[slot];
        if s.state == ProcState::Stopping {
            s.state = ProcState::Ready;
            s.idle_since = Some(now);
        }
    }

    /// The process of `slot` exited. `early`: it was still starting, or
    /// died within `start_timeout` of its start — a failed start.
    pub fn exited(&mut self, slot: usize, early: bool, now: Instant) -> Vec<Action> {
        let was = self.slots[slot].state;
        self.slots[slot].state = ProcState::Empty;
        self.slots[slot].idle_since = None;
        let mut actions = Vec::new();
        if early && was != ProcState::Stopping {
            actions.extend(self.failed_start(now));
        }
        actions.extend(self.decide(now));
        actions
    }

    /// Time passed: reaps, the end of a throttle.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.decide(now)
    }

    fn failed_start(&mut self, now: Instant) -> Vec<Action> {
        self.failures += 1;
        if self.failures >= self.cfg.max_start_failures && self.throttled_until.is_none() {
            let until = now + self.cfg.throttle_time;
            self.throttled_until = Some(until);
            return vec![Action::Throttle { until }];
        }
        Vec::new()
    }

    /// The next moment a decision may change with no event: an idle reap
    /// falling due, the end of the throttle.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let reap = self.cfg.idle_timeout.and_then(|idle| {
            self.slots.iter().filter(|s| s.state == ProcState::Ready).filter_map(|s| s.idle_since).min().map(|t| t + idle)
        });
        [reap, self.throttled_until].into_iter().flatten().min()
    }

    fn decide(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(until) = self.throttled_until {
            if now < until {
                return actions;
            }
            self.throttled_until = None;
            self.failures = 0;
            actions.push(Action::Unthrottle);
        }
        // Recycle: a drained process with no session left.
        for i in 0..self.slots.len() {
            if self.slots[i].state == ProcState::Draining && self.slots[i].load.sessions == 0 {
                self.slots[i].state = ProcState::Stopping;
                actions.push(Action::Stop(i, StopReason::Recycled));
            }
        }
        // Start: as many processes as the waiters need beyond the room of
        // those ready (a process that just became ready has not been
        // granted its waiters yet) and those starting; and up to min_procs.
        let starting = self.count(ProcState::Starting);
        let serving = starting + self.count(ProcState::Ready);
        let spp = self.cfg.sessions_per_proc.max(1) as usize;
        let room: usize = self
            .slots
            .iter()
            .filter(|s| s.state == ProcState::Ready)
            .map(|s| spp.saturating_sub(s.load.sessions as usize))
            .sum();
        let for_waiters = self.waiting.saturating_sub(room).div_ceil(spp).saturating_sub(starting);
        let for_minimum = (self.cfg.min_procs as usize).saturating_sub(serving);
        let mut wanted = for_waiters.max(for_minimum);
        for i in 0..self.slots.len() {
            if wanted == 0 {
                break;
            }
            if self.slots[i].state == ProcState::Empty {
                self.slots[i].state = ProcState::Starting;
                self.slots[i].load = SlotLoad::default();
                self.started[i] += 1;
                self.slots[i].restarts = self.started[i].saturating_sub(1);
                actions.push(Action::Start(i));
                wanted -= 1;
            }
        }
        if wanted > 0 && for_waiters > 0 {
            actions.push(Action::LimitReached);
        }
        // Reap: idle past idle_timeout, above min_procs, nobody waiting.
        if let Some(idle) = self.cfg.idle_timeout {
            let mut serving = self.count(ProcState::Starting) + self.count(ProcState::Ready);
            for i in 0..self.slots.len() {
                let s = &self.slots[i];
                if serving <= self.cfg.min_procs as usize || self.waiting > 0 {
                    break;
                }
                if s.state == ProcState::Ready && s.load.sessions == 0 && s.idle_since.is_some_and(|t| t + idle <= now) {
                    self.slots[i].state = ProcState::Stopping;
                    actions.push(Action::Stop(i, StopReason::Idle));
                    serving -= 1;
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            min_procs: 0,
            max_procs: 3,
            sessions_per_proc: 2,
            max_use: Some(3),
            idle_timeout: Some(Duration::from_secs(10)),
            throttle_time: Duration::from_secs(60),
            max_start_failures: 2,
        }
    }

    #[test]
    fn starts_what_the_waiters_need_then_warns_at_the_limit() {
        let now = Instant::now();
        let mut p = SpawnPolicy::new(cfg());
        let loads = [SlotLoad::default(); 3];
        assert_eq!(p.activity(3, &loads, now), vec![Action::Start(0), Action::Start(1)]);
        // Still starting: nothing more for the same waiters.
        assert_eq!(p.activity(3, &loads, now), vec![]);
        assert_eq!(p.activity(9, &loads, now), vec![Action::Start(2), Action::LimitReached]);
    }

    #[test]
    fn failed_starts_throttle_then_the_throttle_ends() {
        let now = Instant::now();
        let mut p = SpawnPolicy::new(cfg());
        p.activity(1, &[SlotLoad::default(); 3], now);
        assert_eq!(p.exited(0, true, now), vec![Action::Start(0)]);
        let until = now + Duration::from_secs(60);
        assert_eq!(p.exited(0, true, now), vec![Action::Throttle { until }]);
        assert_eq!(p.tick(until), vec![Action::Unthrottle, Action::Start(0)]);
    }
}
