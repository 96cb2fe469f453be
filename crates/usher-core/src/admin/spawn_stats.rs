//! Spawned servers in `/stats` and `/metrics`: per process slot its pid,
//! port, state, uses and restarts (its sessions are the slot's server
//! sessions), per spawned backend its throttle.

use serde::Serialize;

use crate::spawn::SpawnReport;

/// A spawned backend's own figures (`backends[].spawn` in `/stats`).
#[derive(Debug, Clone, Serialize)]
pub struct SpawnStats {
    /// Refusing its clients (`ST`) after failed starts.
    pub throttled: bool,
    /// Milliseconds until it tries again (`null` while not throttled).
    pub throttled_for_ms: Option<u64>,
    /// Failed starts in a row.
    pub start_failures: u32,
}

/// One process slot (`servers[].process` of a spawned backend).
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    /// `null` while the slot holds no process.
    pub pid: Option<u32>,
    pub port: Option<u16>,
    /// `empty`, `starting`, `ready`, `draining` (served `max_use`, stops
    /// once its last session ends) or `stopping`.
    pub state: &'static str,
    /// Sessions the current process was granted.
    pub uses: u32,
    /// Processes started in this slot after its first.
    pub restarts: u32,
}

/// Every state a process slot reports, for the `state` label.
pub const PROCESS_STATES: [&str; 5] = ["empty", "starting", "ready", "draining", "stopping"];

pub fn backend(report: &SpawnReport) -> SpawnStats {
    SpawnStats {
        throttled: report.throttled_for_ms.is_some(),
        throttled_for_ms: report.throttled_for_ms,
        start_failures: report.start_failures,
    }
}

/// Slot `index`'s process, if `report` has it.
pub fn process(report: &SpawnReport, index: usize) -> Option<ProcessStats> {
    report.processes.get(index).map(|p| ProcessStats {
        pid: p.pid,
        port: p.port,
        state: p.state,
        uses: p.uses,
        restarts: p.restarts,
    })
}
