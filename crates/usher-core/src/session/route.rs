//! Route: with routing rules, pick the backend before reserving a slot, so
//! a routed session counts only against its own backend's limits.
//!
//! When a rule matches on SNI or ALPN the session first reads the client's
//! ClientHello — bounded in bytes ([`MAX_CLIENT_HELLO`]) and in time
//! (`timeout.inspect`) — into the watch's early bytes, which the relay
//! forwards to the server first and unchanged: TLS is peeked, never
//! terminated. A frontend without rules skips this phase entirely.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::time::{sleep_until, Instant};

use super::routes::Routes;
use super::{BackendTarget, HelloStatus, Session, Termination};
use crate::routing::client_hello::{self, ClientHello, HelloRead, Inspection};
use crate::routing::{ConnectionFacts, QueueSnapshot};

/// Most bytes one read of the ClientHello takes: a usual hello fits in one
/// such read, and the early bytes grow by no more at a time.
const READ_CHUNK: usize = 2048;

impl<'a> Session<'a> {
    /// Picks the session's backend. `proxied_to` is the destination of the
    /// client's PROXY header, if it sent one.
    pub(super) async fn route(&mut self, proxied_to: Option<SocketAddr>) -> Result<(), Termination> {
        let front: &'a super::FrontendContext = self.front;
        let Some(routes) = front.routes.as_deref() else { return Ok(()) };
        if self.hooked.as_ref().is_some_and(|h| h.routed) {
            // A session hook chose the backend: it overrides the rules.
            return Ok(());
        }
        let hello = if routes.needs_client_hello { self.read_client_hello(routes).await? } else { None };
        let destination =
            if routes.needs_destination { proxied_to.or_else(|| self.client.local_addr().ok()) } else { None };
        let facts = ConnectionFacts { source: self.record.client.ip(), destination, hello: hello.as_ref() };
        let Some(rule) = routes.table.choose(&facts) else { return Ok(()) };
        let target = &routes.targets[rule];
        self.record.route = Some(rule);
        let mut backend = &target.backend;
        if let Some((overflow, spill_when)) = &target.overflow {
            let load = backend.load.read(Instant::now());
            let load = QueueSnapshot { queued: load.queued, served_per_second: load.served_per_second };
            if let Some(reason) = spill_when.reason(&load) {
                self.record.spilled = Some(reason);
                backend = overflow;
            }
        }
        self.seat_on(backend);
        Ok(())
    }

    /// From here on the session is seated on `backend`, with its timeouts.
    pub(super) fn seat_on(&mut self, backend: &'a BackendTarget) {
        self.backend = backend;
        self.timeouts = self.front.settings.timeouts(self.record.stress, backend);
        self.record.backend = backend.name.clone();
        self.record.backend_id = backend.id;
    }

    /// Reads the client's first bytes until they make a ClientHello, or
    /// are not one, or `timeout.inspect` passed. `None`: no ClientHello,
    /// and the frontend routes such clients without one.
    async fn read_client_hello(&mut self, routes: &Routes) -> Result<Option<ClientHello>, Termination> {
        let deadline = Instant::now() + routes.inspect;
        let kill = &self.front.handles.kill;
        let status = loop {
            let room = match client_hello::inspect(&self.watch.early) {
                Inspection::ReadMore(room) => room.min(READ_CHUNK),
                Inspection::Done(HelloRead::Hello(hello)) => {
                    self.record.client_hello = HelloStatus::Read;
                    return Ok(Some(hello));
                }
                Inspection::Done(HelloRead::NotTls) => break HelloStatus::NotTls,
                Inspection::Done(HelloRead::Malformed | HelloRead::NeedMore) => break HelloStatus::Malformed,
            };
            // Read into the early bytes themselves, never more than `room`:
            // a stack buffer here would grow every session's future (and
            // past tokio's threshold, box it), routed or not.
            self.watch.early.reserve(room);
            let mut limited = (&mut self.client).take(room as u64);
            let read = tokio::select! {
                read = limited.read_buf(&mut self.watch.early) => read,
                _ = sleep_until(deadline) => break HelloStatus::Late,
                _ = kill.cancelled() => return Err(Termination::KilledInInspect),
            };
            match read {
                Ok(0) if self.watch.early.is_empty() => return Err(Termination::Probe),
                Ok(0) => {
                    // Sent part of something, then half-closed: its FIN is
                    // passed on once connected, as for a waiting client.
                    self.watch.half_closed = true;
                    break HelloStatus::Closed;
                }
                Ok(_) => {}
                Err(_) if self.watch.early.is_empty() => return Err(Termination::Probe),
                Err(_) => return Err(Termination::NoClientHello),
            }
        };
        self.record.client_hello = status;
        if routes.refuses_without_client_hello() {
            return Err(if status == HelloStatus::Late { Termination::ClientHelloTimeout } else { Termination::NoClientHello });
        }
        Ok(None)
    }
}
