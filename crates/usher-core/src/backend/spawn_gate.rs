//! The spawned backend's gate inside its BackendQueue: which process slots
//! may take sessions now, and what the supervisor must hear about demand.
//!
//! A process slot is an ordinary server of the backend. The gate only
//! lowers what its Server reports (`ServerStatus`) before the core sees it:
//! a slot with no ready process is held at a cap of 0 (no room, so clients
//! wait in the backend queue rather than being refused), a slot whose
//! process reached `max_use` is capped at the sessions it serves (no new
//! one), and a throttled backend's slots read as down (the core refuses its
//! queue at once). Every slot is granted, released and counted by the core
//! as any server's: maxconn, FIFO, "released once" and "no lost wake-up"
//! hold as they do for any backend.
//!
//! Plain data, no actix: the BackendQueue calls it inside its handlers.
//! The messages below are how the supervisor (`spawn/`) and the
//! BackendQueue speak.

use std::net::SocketAddr;

use actix::prelude::*;

use crate::backend::core::{BackendState, ServerStatus};
use crate::ids::ServerId;

/// The supervisor opens or closes a process slot. Answers the sessions the
/// slot serves once the change is in force: a slot closed while serving
/// none takes no session any more, so its process may be stopped.
#[derive(Message, Debug)]
#[rtype(result = "u32")]
pub struct SetSlotGate {
    pub server: ServerId,
    pub gate: SlotGate,
}

/// The supervisor throttles the backend (`true`) or lifts the throttle.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetSpawnThrottled(pub bool);

/// The BackendQueue tells its supervisor about demand and load, after a
/// message changed them.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SpawnActivity(pub Activity);

/// Asks for a [`SpawnReport`].
#[derive(Message, Debug)]
#[rtype(result = "SpawnReport")]
pub struct GetSpawnReport;

/// One spawned backend's processes, for `/stats` and `/metrics`.
#[derive(Debug, Clone, MessageResponse, serde::Serialize)]
pub struct SpawnReport {
    /// Refusing its clients until then (seconds from now), after failed starts.
    pub throttled_for_ms: Option<u64>,
    /// Failed starts in a row.
    pub start_failures: u32,
    pub processes: Vec<ProcessReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessReport {
    /// The server name of its slot (`proc1`…).
    pub server: String,
    /// `None` while the slot holds no process.
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub state: &'static str,
    pub sessions: u32,
    pub uses: u32,
    pub restarts: u32,
}

/// The supervisor that reports a spawned backend's processes, if this
/// backend is one (asked of its BackendQueue, which keeps it).
#[derive(Message, Debug)]
#[rtype(result = "Option<Recipient<GetSpawnReport>>")]
pub struct GetSpawnReporter;

/// What a spawned backend's BackendQueue holds of its supervisor.
pub struct SpawnLink {
    pub gate: SpawnGate,
    /// Hears about demand and load.
    pub activity: Recipient<SpawnActivity>,
    /// Answers for the processes.
    pub reports: Recipient<GetSpawnReport>,
}

/// What the supervisor says about one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotGate {
    /// A ready process listens at `address`. `fresh`: a new process, whose
    /// uses count from 0; otherwise the same one reopened (an idle reap
    /// that found a session after all).
    Open { address: SocketAddr, fresh: bool },
    /// No process takes sessions here (none runs, or it is being stopped).
    Closed,
}

/// One slot as the supervisor learns it after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotLoad {
    /// Sessions holding one of its slots now.
    pub sessions: u32,
    /// Sessions its current process was granted in its life.
    pub uses: u32,
}

/// What the supervisor hears after a message changed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Activity {
    /// Sessions waiting in the backend's queues.
    pub waiting: usize,
    /// Per slot, by server id.
    pub slots: Vec<SlotLoad>,
}

#[derive(Debug, Clone, Copy, Default)]
struct GateSlot {
    open: bool,
    /// What its Server last reported (`None` before its first report).
    reported: Option<ServerStatus>,
    /// What the core was last told.
    applied: Option<ServerStatus>,
    served: u32,
    uses: u32,
}

#[derive(Debug)]
pub struct SpawnGate {
    slots: Vec<GateSlot>,
    max_use: Option<u32>,
    throttled: bool,
    last: Option<Activity>,
}

impl SpawnGate {
    pub fn new(slots: usize, max_use: Option<u32>) -> SpawnGate {
        SpawnGate { slots: vec![GateSlot::default(); slots], max_use, throttled: false, last: None }
    }

    fn slot(&self, server: ServerId) -> Option<&GateSlot> {
        self.slots.get(server.0)
    }

    /// The status the core should hold for `server`, from what its Server
    /// reported and the gate's own bound.
    fn effective(&self, server: ServerId) -> Option<ServerStatus> {
        let slot = self.slot(server)?;
        let mut status = slot.reported?;
        if self.throttled {
            status.up = false;
            return Some(status);
        }
        let bound = if !slot.open {
            Some(0)
        } else {
            // Sessions it may still start: with each grant the bound comes
            // down, so one message's grants never pass max_use.
            self.max_use.map(|max| slot.served + max.saturating_sub(slot.uses))
        };
        if let Some(bound) = bound {
            status.cap = Some(status.cap.map_or(bound, |c| c.min(bound)));
        }
        Some(status)
    }

    /// A Server reported `status`: what the core is told instead (the
    /// status as it is for a server that is no process slot).
    pub fn reported(&mut self, server: ServerId, status: ServerStatus) -> ServerStatus {
        let Some(slot) = self.slots.get_mut(server.0) else { return status };
        slot.reported = Some(status);
        let effective = self.effective(server).unwrap_or(status);
        self.slots[server.0].applied = Some(effective);
        effective
    }

    /// The supervisor opened or closed a slot. Returns the status the core
    /// must now hold for it, if its Server reported one already.
    pub fn set(&mut self, server: ServerId, gate: SlotGate) -> Option<ServerStatus> {
        let slot = self.slots.get_mut(server.0)?;
        match gate {
            SlotGate::Open { fresh, .. } => {
                slot.open = true;
                if fresh {
                    slot.uses = 0;
                }
            }
            SlotGate::Closed => slot.open = false,
        }
        self.reapply(server)
    }

    /// Throttles (every slot down, the queue refused) or lifts it. Returns
    /// the statuses the core must now hold.
    pub fn set_throttled(&mut self, throttled: bool) -> Vec<(ServerId, ServerStatus)> {
        self.throttled = throttled;
        (0..self.slots.len()).filter_map(|i| self.reapply(ServerId(i)).map(|s| (ServerId(i), s))).collect()
    }

    fn reapply(&mut self, server: ServerId) -> Option<ServerStatus> {
        let effective = self.effective(server)?;
        self.slots[server.0].applied = Some(effective);
        Some(effective)
    }

    /// Before a `Dequeue` gives `released` slots of `server` back: the
    /// bound comes down with the sessions that ended, so the core cannot
    /// grant their slots past max_use in the same message. Returns the
    /// status the core must hold first, if it changed.
    pub fn before_release(&mut self, server: ServerId, released: u32) -> Option<ServerStatus> {
        let slot = self.slots.get_mut(server.0)?;
        slot.served = slot.served.saturating_sub(released);
        self.max_use?;
        let before = self.slots[server.0].applied;
        self.reapply(server).filter(|now| Some(*now) != before)
    }

    /// After a message: counts the grants it made from the core's served
    /// counts, and returns the slots whose bound came down with them
    /// (max_use), with the status the core must hold now.
    pub fn observe<W>(&mut self, state: &BackendState<W>) -> Vec<(ServerId, ServerStatus)> {
        let mut changed = Vec::new();
        for i in 0..self.slots.len() {
            let id = ServerId(i);
            let served = state.served(id);
            let slot = &mut self.slots[i];
            // Releases were taken off before the message (`before_release`):
            // what the count rose by since is grants.
            let grants = served.saturating_sub(slot.served);
            slot.served = served;
            slot.uses = slot.uses.saturating_add(grants);
            if self.max_use.is_some() {
                let before = self.slots[i].applied;
                if let Some(now) = self.reapply(id).filter(|now| Some(*now) != before) {
                    changed.push((id, now));
                }
            }
        }
        changed
    }

    /// What the supervisor should hear, when it changed since it last heard.
    pub fn activity<W>(&mut self, state: &BackendState<W>) -> Option<Activity> {
        let waiting =
            state.backend_queue_len() + (0..state.servers()).map(|i| state.server_queue_len(ServerId(i))).sum::<usize>();
        let now = Activity {
            waiting,
            slots: self.slots.iter().map(|s| SlotLoad { sessions: s.served, uses: s.uses }).collect(),
        };
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        self.last = Some(now.clone());
        Some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> ServerStatus {
        ServerStatus { up: true, weight: 1, cap: None }
    }

    #[test]
    fn a_closed_slot_has_no_room_and_a_throttled_one_is_down() {
        let mut gate = SpawnGate::new(2, None);
        assert_eq!(gate.reported(ServerId(0), up()).cap, Some(0));
        let open = SlotGate::Open { address: "127.0.0.1:9".parse().unwrap(), fresh: true };
        assert_eq!(gate.set(ServerId(0), open), Some(up()));
        // Not reported yet: nothing to tell the core.
        assert_eq!(gate.set(ServerId(1), open), None);
        let throttled = gate.set_throttled(true);
        assert_eq!(throttled, vec![(ServerId(0), ServerStatus { up: false, ..up() })]);
        assert_eq!(gate.set_throttled(false), vec![(ServerId(0), up())]);
    }
}
