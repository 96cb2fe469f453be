//! One client session, from accept to its access record. Its life is a
//! short sequence of phases, each a method of `Session` in its own file
//! under `session/`:
//!
//! 1. `handshake`: with `accept_proxy`, the client's PROXY header names the
//!    real client (`CR` if it is bad or late);
//! 2. `admission_hooks`: every session hook of the frontend passes the
//!    client, or routes it (backend, priority, hashing key), or the session
//!    ends (`PR` denied, `IR` a hook failed); without hooks, nothing;
//! 3. `route`: with routing rules, pick the backend — reading the
//!    ClientHello first if a rule needs SNI or ALPN (`CI`, `cI`) — and
//!    maybe spill to a rule's overflow backend; without rules, nothing;
//! 4. `seat`: reserve a slot on a server, maybe waiting in a queue while
//!    the client is watched (`CQ`, `sQ`, `SQ`, `SC`);
//! 5. `connect`: connect to that server, retrying, pausing after a refusal,
//!    or moving to another server (`CC`, `SC`, `sC`);
//!
//! A client that leaves during 3 to 5 having sent nothing and never queued
//! is a probe (`CN`, [`Session::client_left`]).
//! 6. `relay`: first `forward_to_server`, the PROXY header and the bytes
//!    the client sent meanwhile (`SD`), then bytes flow both ways until an
//!    end (`--`, `CD`, `SD`, `cD`, `sD`);
//! 7. `finish`: one `SessionEnded` for the stats, one access record, then
//!    the hooks' `on_end`.
//!
//! Shutdown (`global.grace` ran out) ends any phase with `K?`; a relaying
//! session may first wait its turn in `global.close_spread`. A session older
//! than its backend's `timeout.session_max` ends `PD`.
//!
//! Every slot taken is a [`Slot`](crate::backend::Slot) value: dropping it
//! releases it, so every exit path — return, `?`, timeout, kill, panic —
//! releases exactly once. Leaving a queue is a `QueueTicket` value for the
//! same reason.

mod access;
mod admission_hooks;
mod client_watch;
mod connect;
mod finish;
pub mod frontend;
mod handshake;
pub mod hook;
mod relay;
mod route;
mod routes;
mod seat;
mod stagger;
mod summary;
pub mod termination;
mod threads;

pub use access::AccessRecord;
pub use access::HelloStatus;
pub use hook::{
    Answer, ConfiguredHook, Decision, FrontendHooks, HookContext, HookCounters, HookCountersReport, HookFailure,
    PendingDecision, RouteTo, SessionHook,
};
pub use frontend::{BackendParams, BackendTarget, FrontendContext, QueuePriority, SessionHandles, SessionSettings};
pub use routes::Routes;
pub use summary::{Holdings, SessionEnded, SessionSummary};
pub use termination::Termination;
pub use threads::SessionThreads;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::admission::listener::{Admitted, SessionStarter};
use crate::admission::{GaugeTicket, SessionGauge};
use crate::backend::Slot;
use crate::ids::SessionId;
use client_watch::ClientWatch;
use finish::finish;
use frontend::Timeouts;

impl SessionStarter for FrontendContext {
    fn frontend_gauge(&self) -> &Arc<SessionGauge> {
        &self.handles.gauge
    }

    fn start(self: Arc<Self>, stream: std::net::TcpStream, client: SocketAddr, admitted: Admitted) {
        // The session future is spawned as it is: wrapping it in another
        // async block would store it twice in the task (an async block keeps
        // its captures beside its awaited future), doubling every idle
        // session's memory.
        // One reference count for the future, where cloning the threads
        // (a tracker, runtime handles and gauges) would cost five.
        let front = Arc::clone(&self);
        self.handles.threads.spawn(|on_actors| run(front, stream, client, admitted, on_actors));
    }
}

/// Runs one accepted client to its end and writes its access record.
/// `on_actors` counts it on the actors' thread while it runs there
/// ([`SessionThreads`]).
///
/// A plain function returning an `async move` block, not an `async fn`:
/// an async fn re-binds each argument as a local, and its future keeps
/// room for both, in every state (a hundred bytes of every session's
/// task, queued or idle). The block uses what it captures in place.
pub fn run(
    front: Arc<FrontendContext>,
    stream: std::net::TcpStream,
    client: SocketAddr,
    admitted: Admitted,
    on_actors: Option<GaugeTicket>,
) -> impl std::future::Future<Output = ()> {
    // Made before the block, which then holds the record and not the
    // client's address as well.
    let id = front.next_session();
    let (frontend_name, backend) = (front.settings.frontend_name.clone(), &front.default);
    let mut record = AccessRecord::new(id.0, client, frontend_name, backend.name.clone(), backend.id);
    record.stress = admitted.stress;
    async move {
        let settings = &front.settings;
        let backend = &front.default;
        let Ok(client) = prepare(stream) else {
            return close(&front, &record, Termination::ClientAbortInQueue, None, None, admitted, on_actors);
        };
        let timeouts = settings.timeouts(admitted.stress, backend);
        let watch = ClientWatch::default();
        let priority = settings.priority;
        let mut session =
            Session { front: &front, backend, id, timeouts, priority, client, watch, record: &mut record, hooked: None };
        let (end, slot) = match session.phases().await {
            Ok((end, slot)) => (end, Some(slot)),
            Err(end) => (end, None),
        };
        let hooked = session.hooked.take();
        // The client's socket closes here, before the session is counted
        // and logged, and before its slot goes back.
        drop(session);
        close(&front, &record, end, hooked, slot, admitted, on_actors);
    }
}

/// A session's end: `SessionEnded` with its slot and admission, the
/// hooks' `on_end`, its access record; then it no longer counts as live.
fn close(
    front: &FrontendContext,
    record: &AccessRecord,
    end: Termination,
    hooked: Option<Box<admission_hooks::HookedSession>>,
    slot: Option<Slot>,
    admitted: Admitted,
    on_actors: Option<GaugeTicket>,
) {
    let Admitted { guard, live, .. } = admitted;
    finish(front, record, end, hooked, Holdings { slot, admission: guard });
    drop(live);
    drop(on_actors);
}

/// The accept loop hands the stream over non-blocking (`accept4` with
/// `SOCK_NONBLOCK`) and with `TCP_NODELAY` (inherited from the listener),
/// so registering it is the only system call left here.
fn prepare(stream: std::net::TcpStream) -> io::Result<TcpStream> {
    TcpStream::from_std(stream)
}

/// One session between accept and finish: what every phase works on.
struct Session<'a> {
    front: &'a FrontendContext,
    /// The backend it is seated on: the frontend's default until routing
    /// picks another.
    backend: &'a BackendTarget,
    id: SessionId,
    timeouts: Timeouts,
    /// Where it falls in the queues: the frontend's, unless a hook chose.
    priority: QueuePriority,
    client: TcpStream,
    /// Reads what the client sends while it waits for its server.
    watch: ClientWatch,
    record: &'a mut AccessRecord,
    /// The hooks' contexts; `None` when its frontend runs no hook.
    hooked: Option<Box<admission_hooks::HookedSession>>,
}

impl Session<'_> {
    /// How the session ends when the watch saw its client leave during
    /// `phase` (`CQ` while seating, `CC` while connecting). A client that
    /// sent nothing and never waited in a queue only checked that the port
    /// answers — a port probe or a balancer's TCP health check — and ends
    /// `CN`, so that probes are not counted as clients giving up on a queue.
    fn client_left(&self, phase: Termination) -> Termination {
        let queued = self.record.server_queue_pos.is_some() || self.record.backend_queue_pos.is_some();
        if self.watch.sent_nothing() && !queued {
            Termination::Probe
        } else {
            phase
        }
    }

    /// The phases in order, and the slot the session relayed on; `Err` is
    /// how the phase that ended the session early ended it.
    ///
    /// A task is as large as the largest state of its future, whichever
    /// state it is in. The two halves of a session's life are boxed, each
    /// for as long as it runs, so that the task itself keeps only what
    /// every phase shares: a client waiting in a queue holds the task and
    /// the phases up to its seat, and an idle seated session the task and
    /// the relay — never room for the other half as well.
    async fn phases(&mut self) -> Result<(Termination, Slot), Termination> {
        let (slot, proxied_to) = Box::pin(self.until_seated()).await?;
        Box::pin(self.seated(slot, proxied_to)).await
    }

    /// Handshake, admission hooks, routing and the seat: the slot, and the
    /// frontend address a PROXY header named.
    async fn until_seated(&mut self) -> Result<(Slot, Option<SocketAddr>), Termination> {
        let proxied_to = self.handshake().await?;
        self.admission_hooks().await?;
        self.route(proxied_to).await?;
        let slot = self.seat().await?;
        Ok((slot, proxied_to))
    }

    /// The phases of a session holding a slot: connect, forward, relay. The
    /// slot is handed back to `run`, which sends it with the session's end
    /// (`SessionEnded`), so that it goes back to its server in the same
    /// wake-up of the actors' thread as the rest of the session's end.
    async fn seated(&mut self, slot: Slot, proxied_to: Option<SocketAddr>) -> Result<(Termination, Slot), Termination> {
        let (slot, mut server) = self.connect(slot).await?;
        self.after_connect_hooks()?;
        self.forward_to_server(&slot, &mut server, proxied_to).await?;
        let end = self.relay(&slot, &mut server).await;
        // The server's socket closes before its slot goes back: a session
        // granted that slot next must never find the server still holding
        // this connection (never over maxconn at the server, even with
        // several data-plane threads).
        drop(server);
        Ok((end, slot))
    }
}
