//! Queue control through the handle: pause and resume a backend, shut down
//! the sessions of a server, wait until a server is idle. Each goes to the
//! BackendQueue in force, which decides in its own mailbox — so a pause
//! and the grants it stops never race.

use std::time::{Duration, Instant, SystemTime};

use actix::Addr;

use super::handle::{Actors, BrokerHandle, ControlError};
use crate::backend::backend_queue::{SetPaused, ShutDownSessions, ShutdownCause, WatchIdle};
use crate::backend::BackendQueue;
use crate::ids::ServerId;

/// Longest a wait for an idle server may be asked for.
pub const MAX_IDLE_WAIT: Duration = Duration::from_secs(3600);

/// A backend's pause after a pause or resume request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseStatus {
    /// Paused since then; `None`: granting.
    pub since: Option<SystemTime>,
    /// The request changed it (pausing a paused backend does not).
    pub changed: bool,
    /// Sessions waiting in the backend's queues now.
    pub queued: usize,
}

/// How a wait for an idle server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleWait {
    /// The server served no session any more after `waited`.
    Idle { waited: Duration },
    /// The timeout came first; the server still served sessions.
    TimedOut { waited: Duration },
}

impl BrokerHandle {
    /// Pauses (`true`) or resumes (`false`) granting slots in `backend`.
    /// A paused backend connects nobody new to its servers: new and queued
    /// clients wait (their `timeout.queue` still runs); a resume serves
    /// them in queue order. Sessions already relaying are untouched. The
    /// pause lasts across reloads that keep the backend, until a resume or
    /// a restart.
    pub async fn set_backend_paused(&self, backend: &str, paused: bool) -> Result<PauseStatus, ControlError> {
        let actors = self.current_actors().await?;
        let queue = backend_queue(&actors, backend)?;
        let report = queue.send(SetPaused(paused)).await?;
        Ok(PauseStatus { since: report.since, changed: report.changed, queued: report.queued })
    }

    /// Closes every session relaying on `server` now (termination code
    /// `AD`); answers how many sessions held one of its slots. Queued
    /// sessions stay queued, and sessions seated later are not touched.
    pub async fn shut_down_server_sessions(&self, backend: &str, server: &str) -> Result<u32, ControlError> {
        let actors = self.current_actors().await?;
        let (queue, id) = server_of(&actors, backend, server)?;
        queue.send(ShutDownSessions { server: id, cause: ShutdownCause::Operator }).await?.ok_or(ControlError::Stopped)
    }

    /// Waits until `server` serves no session, or `timeout` (at most
    /// [`MAX_IDLE_WAIT`]) passed; answers which came first.
    pub async fn wait_server_idle(&self, backend: &str, server: &str, timeout: Duration) -> Result<IdleWait, ControlError> {
        if timeout > MAX_IDLE_WAIT {
            return Err(ControlError::Rejected(format!(
                "timeout {} ms is out of range; expected 0 to {} ms",
                timeout.as_millis(),
                MAX_IDLE_WAIT.as_millis()
            )));
        }
        let started = Instant::now();
        let actors = self.current_actors().await?;
        let (queue, id) = server_of(&actors, backend, server)?;
        let idle = queue.send(WatchIdle { server: id }).await?;
        match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), idle).await {
            Ok(Ok(())) => Ok(IdleWait::Idle { waited: started.elapsed() }),
            // The backend stopped (a reload removed it) before the server
            // went idle: no answer can come any more.
            Ok(Err(_)) => Err(ControlError::Stopped),
            Err(_) => Ok(IdleWait::TimedOut { waited: started.elapsed() }),
        }
    }
}

fn backend_queue<'a>(actors: &'a Actors, backend: &str) -> Result<&'a Addr<BackendQueue>, ControlError> {
    actors
        .backends
        .iter()
        .find(|b| b.name == backend)
        .map(|b| &b.queue)
        .ok_or_else(|| ControlError::UnknownBackend(backend.to_owned()))
}

fn server_of<'a>(actors: &'a Actors, backend: &str, server: &str) -> Result<(&'a Addr<BackendQueue>, ServerId), ControlError> {
    let control =
        actors.backends.iter().find(|b| b.name == backend).ok_or_else(|| ControlError::UnknownBackend(backend.to_owned()))?;
    let (_, id, _) = control
        .servers
        .iter()
        .find(|(name, _, _)| name == server)
        .ok_or_else(|| ControlError::UnknownServer { backend: backend.to_owned(), server: server.to_owned() })?;
    Ok((&control.queue, *id))
}
