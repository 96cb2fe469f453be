//! Model test of the spawned servers' decisions: proptest drives the real
//! `SpawnPolicy` with random interleavings of what its supervisor tells it
//! (demand, a slot's load, a process ready, exited early or late, not
//! ready in time, time passing), carries out its actions as the supervisor
//! does, and checks after every step what must hold:
//!
//! - never more processes than `max_procs`;
//! - never more starts in flight than the waiters need (or `min_procs`);
//! - never a stop (idle reap, recycle) of a process that serves a session;
//! - an idle reap leaves `min_procs` processes;
//! - nothing starts while throttled, and a throttle comes only after
//!   `max_start_failures` failed starts in a row;
//! - a process that served `max_use` sessions never takes sessions again.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use usher_core::backend::spawn_gate::SlotLoad;
use usher_core::spawn::policy::{Action, PolicyConfig, ProcState, SpawnPolicy, StopReason};

#[derive(Debug, Clone)]
enum Event {
    /// Clients waiting now.
    Demand(usize),
    /// Sessions on a slot's process now (if it takes sessions) and one
    /// more use when `grant`.
    Load {
        slot: usize,
        sessions: u32,
        grant: bool,
    },
    Ready(usize),
    /// The process exited (early: within start_timeout of its start).
    Exit {
        slot: usize,
        early: bool,
    },
    StartTimeout(usize),
    /// Milliseconds pass.
    Wait(u64),
}

fn event(max_procs: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        (0usize..12).prop_map(Event::Demand),
        (0..max_procs, 0u32..3, any::<bool>()).prop_map(|(slot, sessions, grant)| Event::Load {
            slot,
            sessions,
            grant
        }),
        (0..max_procs).prop_map(Event::Ready),
        (0..max_procs, any::<bool>()).prop_map(|(slot, early)| Event::Exit { slot, early }),
        (0..max_procs).prop_map(Event::StartTimeout),
        (0u64..3000).prop_map(Event::Wait),
    ]
}

fn config() -> impl Strategy<Value = PolicyConfig> {
    (1u32..5, 0u32..3, 1u32..4, prop::option::of(1u32..5), prop::option::of(100u64..2000), 1u32..4).prop_map(
        |(max_procs, min_procs, spp, max_use, idle, failures)| PolicyConfig {
            min_procs: min_procs.min(max_procs),
            max_procs,
            sessions_per_proc: spp,
            max_use,
            idle_timeout: idle.map(Duration::from_millis),
            throttle_time: Duration::from_millis(1500),
            max_start_failures: failures,
        },
    )
}

/// What the test knows independently of the policy.
struct World {
    cfg: PolicyConfig,
    now: Instant,
    waiting: usize,
    loads: Vec<SlotLoad>,
    throttled_until: Option<Instant>,
    failures_in_a_row: u32,
}

impl World {
    fn serving(policy: &SpawnPolicy, n: usize) -> usize {
        (0..n).filter(|&i| matches!(policy.state(i), ProcState::Starting | ProcState::Ready)).count()
    }

    /// Checks the actions of one step and carries them out.
    fn apply(&mut self, policy: &mut SpawnPolicy, actions: Vec<Action>) -> Result<(), TestCaseError> {
        let n = self.cfg.max_procs as usize;
        for action in actions {
            match action {
                Action::Start(slot) => {
                    prop_assert!(self.throttled_until.is_none_or(|t| self.now >= t), "start while throttled");
                    prop_assert_eq!(policy.state(slot), ProcState::Starting);
                    let starting = (0..n).filter(|&i| policy.state(i) == ProcState::Starting).count();
                    // Ready processes' free room absorbs waiters first.
                    let spp = self.cfg.sessions_per_proc as usize;
                    let room: usize = (0..n)
                        .filter(|&i| policy.state(i) == ProcState::Ready)
                        .map(|i| spp.saturating_sub(self.loads[i].sessions as usize))
                        .sum();
                    let need = self.waiting.saturating_sub(room).div_ceil(spp).max(self.cfg.min_procs as usize);
                    prop_assert!(starting <= need, "{starting} starts in flight for {} waiters", self.waiting);
                    self.loads[slot] = SlotLoad::default();
                }
                Action::Stop(slot, reason) => {
                    if reason != StopReason::StartTimeout {
                        prop_assert_eq!(self.loads[slot].sessions, 0, "stopped a process serving sessions");
                    }
                    if reason == StopReason::Idle {
                        prop_assert!(
                            World::serving(policy, n) >= self.cfg.min_procs as usize,
                            "reaped below min_procs"
                        );
                    }
                    policy.stopping(slot);
                }
                Action::Throttle { until } => {
                    prop_assert!(self.failures_in_a_row >= self.cfg.max_start_failures);
                    self.throttled_until = Some(until);
                }
                Action::Unthrottle => {
                    prop_assert!(self.throttled_until.is_some_and(|t| self.now >= t));
                    self.throttled_until = None;
                    self.failures_in_a_row = 0;
                }
                Action::LimitReached => {
                    prop_assert!((0..n).all(|i| policy.state(i) != ProcState::Empty), "limit warned with a free slot");
                }
            }
        }
        prop_assert!(policy.processes() <= n);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn spawn_policy(cfg in config(), events in prop::collection::vec(event(4), 1..80)) {
        let n = cfg.max_procs as usize;
        let mut policy = SpawnPolicy::new(cfg);
        let mut world = World {
            cfg,
            now: Instant::now(),
            waiting: 0,
            loads: vec![SlotLoad::default(); n],
            throttled_until: None,
            failures_in_a_row: 0,
        };
        let actions = policy.tick(world.now);
        world.apply(&mut policy, actions)?;
        for event in events {
            let now = world.now;
            let actions = match event {
                Event::Demand(waiting) => {
                    // Clients wait only while no ready process has room.
                    world.waiting = waiting;
                    policy.activity(waiting, &world.loads, now)
                }
                Event::Load { slot, sessions, grant } if slot < n => {
                    let state = policy.state(slot);
                    let takes = state == ProcState::Ready;
                    let load = &mut world.loads[slot];
                    if takes {
                        if grant && cfg.max_use.is_none_or(|m| load.uses < m) {
                            load.uses += 1;
                            load.sessions = (load.sessions + 1).min(cfg.sessions_per_proc);
                        } else {
                            load.sessions = sessions.min(cfg.sessions_per_proc);
                        }
                    } else if matches!(state, ProcState::Draining | ProcState::Stopping) {
                        // Sessions only end there.
                        load.sessions = load.sessions.min(sessions);
                    }
                    policy.activity(world.waiting, &world.loads, now)
                }
                Event::Ready(slot) if slot < n => {
                    if policy.state(slot) == ProcState::Starting {
                        // A process that became ready ends the streak.
                        world.failures_in_a_row = 0;
                    }
                    policy.ready(slot, now)
                }
                Event::Exit { slot, early } if slot < n && policy.state(slot) != ProcState::Empty => {
                    let failed = early && policy.state(slot) != ProcState::Stopping;
                    if failed {
                        world.failures_in_a_row += 1;
                    }
                    world.loads[slot] = SlotLoad::default();
                    policy.exited(slot, early, now)
                }
                Event::StartTimeout(slot) if slot < n => {
                    if policy.state(slot) == ProcState::Starting {
                        world.failures_in_a_row += 1;
                    }
                    policy.start_timed_out(slot, now)
                }
                Event::Wait(ms) => {
                    world.now += Duration::from_millis(ms);
                    policy.tick(world.now)
                }
                _ => Vec::new(),
            };
            world.apply(&mut policy, actions)?;
            // A process past max_use never takes sessions again.
            for i in 0..n {
                if cfg.max_use.is_some_and(|m| world.loads[i].uses >= m) {
                    prop_assert_ne!(policy.state(i), ProcState::Ready, "slot {} past max_use still ready", i);
                }
            }
        }
    }
}
