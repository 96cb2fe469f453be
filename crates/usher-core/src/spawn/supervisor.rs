//! The Supervisor actor of one spawned backend: it carries out what its
//! [`SpawnPolicy`] decides — starts processes, probes them until they
//! accept, opens and closes their slots in the BackendQueue, stops them
//! (stop signal, then SIGKILL after `stop_timeout`), throttles the backend
//! — and reports them for `/stats` and `/metrics`.
//!
//! Every process event carries its slot's generation: an event of a
//! process that was already replaced changes nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{info, warn, Logger};
use tokio::net::TcpStream;

use super::hygiene;
use super::policy::{Action, PolicyConfig, ProcState, SpawnPolicy, StopReason};
use super::process::{self, StderrTail};
use crate::backend::spawn_gate::{GetSpawnReport, ProcessReport, SetSlotGate, SetSpawnThrottled, SlotGate, SpawnActivity, SpawnReport};
use crate::admission::watchdog::{GetStatus, ResourceWatchdog};
use crate::backend::backend_queue::{ShutDownSessions, ShutdownCause};
use crate::backend::BackendQueue;
use crate::config::{slot_name, SpawnSettings};
use crate::ids::ServerId;

/// Longest wait, once a process exited, for the rest of its stderr.
const STDERR_DRAIN: Duration = Duration::from_millis(200);

/// How often the supervisor looks whether its backend's queue is gone.
const QUEUE_WATCH: Duration = Duration::from_secs(1);

/// How often a starting process is probed for readiness.
const READY_PROBE_EVERY: Duration = Duration::from_millis(20);

/// One process in a slot.
struct Running {
    generation: u64,
    pid: u32,
    address: SocketAddr,
    started: Instant,
    stderr: StderrTail,
    /// Its exit status, once reaped.
    exited: bool,
}

/// Starting, ready or gone: what a started process's probe found.
#[derive(Message)]
#[rtype(result = "()")]
struct Probed {
    slot: usize,
    generation: u64,
    ready: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Exited {
    slot: usize,
    generation: u64,
    status: Option<ExitStatus>,
}

/// Where a process about to start learns whether the frontends feeding
/// its backend are in stress mode (it then gets `USHER_STRESS=1`).
pub struct StressSource {
    pub watchdog: Addr<ResourceWatchdog>,
    /// The frontends whose sessions may come to this backend.
    pub frontends: Vec<String>,
}

/// Whether a spawned backend is throttled, read by its sessions: a refusal
/// while it is reads as its own termination code.
pub type ThrottleFlag = Arc<AtomicBool>;

pub struct Supervisor {
    spawn: SpawnSettings,
    policy: SpawnPolicy,
    queue: Addr<BackendQueue>,
    slots: Vec<Option<Running>>,
    /// Per slot, the generation of its last start (launched once the
    /// stress mode is known).
    pending: Vec<u64>,
    next_generation: u64,
    throttle: ThrottleFlag,
    stress: Option<StressSource>,
    warn_interval: Duration,
    last_limit_warning: Option<Instant>,
    limit_hits: u64,
    wakeup: Option<SpawnHandle>,
    /// Its own address while its backend runs: it then outlives the
    /// addresses others hold, and stops its processes itself once the
    /// backend's queue is gone (rather than in `Drop`, which blocks).
    keepalive: Option<Addr<Supervisor>>,
    log: Logger,
}

impl Supervisor {
    /// `log` carries the backend's name.
    pub fn new(
        spawn: SpawnSettings,
        queue: Addr<BackendQueue>,
        throttle: ThrottleFlag,
        stress: Option<StressSource>,
        warn_interval: Duration,
        log: Logger,
    ) -> Supervisor {
        let policy = SpawnPolicy::new(PolicyConfig {
            min_procs: spawn.min_procs,
            max_procs: spawn.max_procs.get(),
            sessions_per_proc: spawn.sessions_per_proc.get(),
            max_use: spawn.max_use.map(|m| m.get()),
            idle_timeout: spawn.idle_timeout,
            throttle_time: spawn.throttle_time,
            max_start_failures: spawn.max_start_failures.get(),
        });
        let slots: Vec<Option<Running>> = (0..spawn.max_procs.get()).map(|_| None).collect();
        Supervisor {
            spawn,
            policy,
            queue,
            pending: vec![0; slots.len()],
            slots,
            next_generation: 0,
            throttle,
            stress,
            warn_interval,
            last_limit_warning: None,
            limit_hits: 0,
            wakeup: None,
            keepalive: None,
            log,
        }
    }

    fn current(&self, slot: usize, generation: u64) -> bool {
        self.slots[slot].as_ref().is_some_and(|r| r.generation == generation)
    }

    fn run(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        for action in actions {
            match action {
                // A removed backend starts nothing more.
                Action::Start(_) if self.keepalive.is_none() => {}
                Action::Start(slot) => self.start(slot, ctx),
                Action::Stop(slot, reason) => self.stop(slot, reason, ctx),
                Action::Throttle { .. } => {
                    self.throttle.store(true, Ordering::Release);
                    self.queue.do_send(SetSpawnThrottled(true));
                }
                Action::Unthrottle => {
                    self.throttle.store(false, Ordering::Release);
                    self.queue.do_send(SetSpawnThrottled(false));
                    info!(self.log, "spawn throttle ended");
                }
                Action::LimitReached => self.limit_reached(),
            }
        }
        self.arm(ctx);
    }

    /// Wakes up when the policy names a moment (a reap, the throttle's end).
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.wakeup.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = self.policy.next_wakeup() {
            let wait = at.saturating_duration_since(Instant::now());
            self.wakeup = Some(ctx.run_later(wait, |act, ctx| {
                act.wakeup = None;
                let actions = act.policy.tick(Instant::now());
                act.run(actions, ctx);
            }));
        }
    }

    /// Starts a process in `slot`, once it knows whether a frontend that
    /// feeds the backend is in stress mode.
    fn start(&mut self, slot: usize, ctx: &mut Context<Self>) {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.pending[slot] = generation;
        let Some(source) = &self.stress else { return self.launch(slot, generation, false, ctx) };
        let frontends = source.frontends.clone();
        ctx.spawn(source.watchdog.send(GetStatus).into_actor(self).map(move |status, act, ctx| {
            // Still this slot's start (not throttled or stopped meanwhile)?
            if act.policy.state(slot) != ProcState::Starting || act.pending[slot] != generation {
                return;
            }
            let stress = status.is_ok_and(|s| s.stressed.iter().any(|f| frontends.contains(f)));
            act.launch(slot, generation, stress, ctx);
        }));
    }

    fn launch(&mut self, slot: usize, generation: u64, stress: bool, ctx: &mut Context<Self>) {
        let started = process::free_port().and_then(|port| {
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            process::start(&self.spawn, address, stress, &self.log).map(|p| (p, address))
        });
        let (started, address) = match started {
            Ok(ok) => ok,
            Err(err) => {
                // As a process that died at once: a failed start.
                warn!(self.log, "process start failed"; "server" => slot_name(slot),
                    "error" => %err, "command" => &self.spawn.command[0]);
                self.slots[slot] = None;
                let actions = self.policy.exited(slot, true, Instant::now());
                if actions.iter().any(|a| matches!(a, Action::Throttle { .. })) {
                    warn!(self.log, "spawn throttled"; "server" => slot_name(slot),
                        "status" => %err, "failures" => self.policy.failures(), "stderr" => "",
                        "throttle_time" => %humantime::format_duration(self.spawn.throttle_time));
                }
                self.run(actions, ctx);
                return;
            }
        };
        let pid = started.pid;
        info!(self.log, "process started"; "server" => slot_name(slot), "pid" => pid,
            "address" => %address, "stress" => stress);
        self.slots[slot] = Some(Running {
            generation,
            pid,
            address,
            started: Instant::now(),
            stderr: started.stderr,
            exited: false,
        });
        let mut child = started.child;
        let stderr_read = started.stderr_read;
        ctx.spawn(
            async move {
                let status = child.wait().await.ok();
                // Its last stderr lines are read before the exit is
                // handled (a child it left behind may hold the pipe open:
                // not for long).
                let _ = tokio::time::timeout(STDERR_DRAIN, stderr_read).await;
                status
            }
                .into_actor(self)
                .map(move |status, _, ctx| ctx.notify(Exited { slot, generation, status })),
        );
        let deadline = tokio::time::Instant::now() + self.spawn.start_timeout;
        ctx.spawn(
            async move {
                while tokio::time::Instant::now() < deadline {
                    let attempt = tokio::time::timeout_at(deadline, TcpStream::connect(address)).await;
                    if let Ok(Ok(_)) = attempt {
                        return true;
                    }
                    tokio::time::sleep(READY_PROBE_EVERY).await;
                }
                false
            }
            .into_actor(self)
            .map(move |ready, _, ctx| ctx.notify(Probed { slot, generation, ready })),
        );
    }

    fn stop(&mut self, slot: usize, reason: StopReason, ctx: &mut Context<Self>) {
        let Some(running) = &self.slots[slot] else { return };
        let generation = running.generation;
        if matches!(reason, StopReason::StartTimeout | StopReason::Retired) {
            self.signal(slot, generation, reason, ctx);
            return;
        }
        // Close the slot first and stop the process only if it then serves
        // no session: a session granted just before the close is not cut.
        let close = self.queue.send(SetSlotGate { server: ServerId(slot), gate: SlotGate::Closed });
        ctx.spawn(close.into_actor(self).map(move |served, act, ctx| {
            if !act.current(slot, generation) {
                return;
            }
            match served {
                Ok(0) | Err(_) => act.signal(slot, generation, reason, ctx),
                Ok(_) if reason == StopReason::Idle => {
                    let address = act.slots[slot].as_ref().map(|r| r.address).expect("current");
                    act.queue.do_send(SetSlotGate { server: ServerId(slot), gate: SlotGate::Open { address, fresh: false } });
                    act.policy.reap_cancelled(slot, Instant::now());
                    act.arm(ctx);
                }
                // Recycled: the slot serves sessions still (its bound let
                // none start); the policy asks again when the last one ends.
                Ok(_) => act.policy.recycle_deferred(slot),
            }
        }));
    }

    /// Sends the stop signal to the process group, and SIGKILL after
    /// `stop_timeout` if it is still there.
    fn signal(&mut self, slot: usize, generation: u64, reason: StopReason, ctx: &mut Context<Self>) {
        let Some(running) = &self.slots[slot] else { return };
        self.policy.stopping(slot);
        info!(self.log, "process stopping"; "server" => slot_name(slot),
            "pid" => running.pid, "reason" => reason.as_str());
        hygiene::signal_group(running.pid, self.spawn.stop_signal.number());
        ctx.run_later(self.spawn.stop_timeout, move |act, _| {
            if let Some(running) = act.slots[slot].as_ref().filter(|r| r.generation == generation) {
                warn!(act.log, "process killed"; "server" => slot_name(slot),
                    "pid" => running.pid, "stop_timeout" => %humantime::format_duration(act.spawn.stop_timeout));
                hygiene::signal_group(running.pid, libc::SIGKILL);
            }
        });
    }

    fn limit_reached(&mut self) {
        self.limit_hits += 1;
        let now = Instant::now();
        if self.last_limit_warning.is_some_and(|t| now.duration_since(t) < self.warn_interval) {
            return;
        }
        self.last_limit_warning = Some(now);
        warn!(self.log, "process limit reached";
            "max_procs" => self.spawn.max_procs.get(), "count" => std::mem::take(&mut self.limit_hits));
    }

    /// Stops every process: the stop signal to all, then up to
    /// `stop_timeout` for them to go, then SIGKILL. Blocks, so it runs only
    /// as usher stops.
    fn stop_all_now(&mut self) {
        let pids: Vec<u32> = self.slots.iter().flatten().filter(|r| !r.exited).map(|r| r.pid).collect();
        if pids.is_empty() {
            return;
        }
        for &pid in &pids {
            hygiene::signal_group(pid, self.spawn.stop_signal.number());
        }
        let deadline = Instant::now() + self.spawn.stop_timeout;
        while Instant::now() < deadline && pids.iter().any(|&pid| group_running(pid)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        for &pid in &pids {
            if group_running(pid) {
                hygiene::signal_group(pid, libc::SIGKILL);
            }
        }
        info!(self.log, "processes stopped"; "processes" => pids.len());
    }
}

/// Whether the group led by `pid` still has a process that is no zombie:
/// its leader is reaped by tokio only while the runtime runs, so a zombie
/// leader counts as gone.
fn group_running(pid: u32) -> bool {
    if !hygiene::group_alive(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the command's closing parenthesis.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.keepalive = Some(ctx.address());
        ctx.run_interval(QUEUE_WATCH, |act, ctx| act.watch_queue(ctx));
        // min_procs start at once.
        let actions = self.policy.tick(Instant::now());
        self.run(actions, ctx);
    }
}

impl Supervisor {
    /// A reload removed the backend and its queue stopped (nobody waited
    /// any more): its processes are stopped as any other, and the
    /// supervisor ends once they exited.
    fn watch_queue(&mut self, ctx: &mut Context<Self>) {
        if self.queue.connected() {
            return;
        }
        if self.keepalive.take().is_some() {
            info!(self.log, "spawned backend removed"; "processes" => self.slots.iter().flatten().count());
            for slot in 0..self.slots.len() {
                if self.slots[slot].is_some() && self.policy.state(slot) != ProcState::Stopping {
                    self.stop(slot, StopReason::Retired, ctx);
                }
            }
        }
        if self.slots.iter().all(Option::is_none) {
            ctx.stop();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all_now();
    }
}

impl Handler<SpawnActivity> for Supervisor {
    type Result = ();

    fn handle(&mut self, SpawnActivity(activity): SpawnActivity, ctx: &mut Self::Context) {
        let actions = self.policy.activity(activity.waiting, &activity.slots, Instant::now());
        self.run(actions, ctx);
    }
}

impl Handler<Probed> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Probed, ctx: &mut Self::Context) {
        if !self.current(msg.slot, msg.generation) || self.policy.state(msg.slot) != ProcState::Starting {
            return;
        }
        let now = Instant::now();
        let actions = if msg.ready {
            let running = self.slots[msg.slot].as_ref().expect("current");
            info!(self.log, "process ready"; "server" => slot_name(msg.slot),
                "pid" => running.pid, "start_ms" => running.started.elapsed().as_millis() as u64);
            let gate = SlotGate::Open { address: running.address, fresh: true };
            self.queue.do_send(SetSlotGate { server: ServerId(msg.slot), gate });
            self.policy.ready(msg.slot, now)
        } else {
            let actions = self.policy.start_timed_out(msg.slot, now);
            self.log_throttle(msg.slot, &actions, None);
            actions
        };
        self.run(actions, ctx);
    }
}

impl Supervisor {
    /// Logs the throttle once, when a failed start causes it, with the
    /// exit status and the last lines of the process's stderr.
    fn log_throttle(&self, slot: usize, actions: &[Action], status: Option<ExitStatus>) {
        if !actions.iter().any(|a| matches!(a, Action::Throttle { .. })) {
            return;
        }
        let stderr = self.slots[slot]
            .as_ref()
            .map(|r| r.stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        let status = status.map_or_else(|| "not ready within start_timeout".to_owned(), |s| s.to_string());
        warn!(self.log, "spawn throttled"; "server" => slot_name(slot),
            "status" => status, "failures" => self.policy.failures(), "stderr" => stderr,
            "throttle_time" => %humantime::format_duration(self.spawn.throttle_time));
    }
}

impl Handler<Exited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Exited, ctx: &mut Self::Context) {
        if !self.current(msg.slot, msg.generation) {
            return;
        }
        let now = Instant::now();
        let state = self.policy.state(msg.slot);
        let running = self.slots[msg.slot].as_mut().expect("current");
        running.exited = true;
        let early = state == ProcState::Starting || running.started.elapsed() < self.spawn.start_timeout;
        let status = msg.status.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        if state == ProcState::Stopping {
            info!(self.log, "process exited"; "server" => slot_name(msg.slot),
                "pid" => running.pid, "status" => &status);
        } else {
            warn!(self.log, "process exited unexpectedly"; "server" => slot_name(msg.slot),
                "pid" => running.pid, "status" => &status, "state" => state.as_str());
            // Its slot takes no new session, and those it served end now,
            // server-side (`SD`): a half-closed session would otherwise
            // wait on its client with nobody behind it.
            self.queue.do_send(SetSlotGate { server: ServerId(msg.slot), gate: SlotGate::Closed });
            self.queue.do_send(ShutDownSessions { server: ServerId(msg.slot), cause: ShutdownCause::ServerExited });
        }
        // Its group may still hold children of its own.
        let pid = running.pid;
        if hygiene::group_alive(pid) {
            hygiene::signal_group(pid, libc::SIGKILL);
        }
        let actions = self.policy.exited(msg.slot, early, now);
        self.log_throttle(msg.slot, &actions, msg.status);
        self.slots[msg.slot] = None;
        self.run(actions, ctx);
    }
}

impl Handler<GetSpawnReport> for Supervisor {
    type Result = SpawnReport;

    fn handle(&mut self, _: GetSpawnReport, _: &mut Self::Context) -> SpawnReport {
        let now = Instant::now();
        SpawnReport {
            throttled_for_ms: self
                .policy
                .throttled_until()
                .map(|t| u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)),
            start_failures: self.policy.failures(),
            processes: self
                .policy
                .view()
                .into_iter()
                .enumerate()
                .map(|(i, view)| {
                    let running = self.slots[i].as_ref();
                    ProcessReport {
                        server: slot_name(i),
                        pid: running.map(|r| r.pid),
                        port: running.map(|r| r.address.port()),
                        state: view.state.as_str(),
                        sessions: view.sessions,
                        uses: view.uses,
                        restarts: view.restarts,
                    }
                })
                .collect(),
        }
    }
}
