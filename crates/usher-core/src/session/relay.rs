//! Relay: the server first gets the PROXY header (`send_proxy`) and the
//! bytes the client sent while it waited, then bytes flow both ways
//! ([`duplex`]) until both sides closed, one reset or idled, the session
//! outlived `timeout.session_max`, or shutdown (in its turn of
//! `global.close_spread`).

mod duplex;

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{stagger, BackendTarget, FrontendContext, Session, Termination};
use crate::backend::Slot;
use crate::config::ProxyVersion;
use crate::ids::SessionId;
use crate::proxy_protocol::send_header;
use duplex::{relay, FixedEnds, RelayEnd, RelayLimits};

impl Session<'_> {
    /// Relays between the client and `server`, seated on `slot`, to the end.
    pub(super) async fn relay(&mut self, slot: &Slot, server: &mut TcpStream) -> Termination {
        let front = self.front;
        let limits = RelayLimits {
            client_idle: self.timeouts.client,
            server_idle: self.backend.server_idle,
            bufsize: front.settings.buffers.first,
            bufsize_max: front.settings.buffers.max,
        };
        let fixed = fixed_ends(front, self.backend, self.id, self.record.accepted, &slot.server.shut_down);
        let outcome = relay(&mut self.client, server, self.watch.half_closed, &limits, &slot.server.sessions, fixed).await;
        self.record.bytes_from_client += outcome.from_client;
        self.record.bytes_from_server += outcome.from_server;
        match outcome.end {
            RelayEnd::Done => Termination::Normal,
            RelayEnd::ClientReset => Termination::ClientAbortInData,
            RelayEnd::ServerReset => Termination::ServerAbortInData,
            RelayEnd::ClientIdle => Termination::ClientTimeoutInData,
            RelayEnd::ServerIdle => Termination::ServerTimeoutInData,
            RelayEnd::SessionMax => Termination::SessionMaxInData,
            // The server's token is a child of the broker's kill token:
            // one future in the relay hears both (the session's future stays
            // small), and the kill token says which it was.
            RelayEnd::Killed if front.handles.kill.is_cancelled() => Termination::KilledInData,
            // Its server went away (a spawned process exited): server-side.
            RelayEnd::Killed | RelayEnd::ShutDown if slot.server.exited.load(std::sync::atomic::Ordering::Acquire) => {
                Termination::ServerAbortInData
            }
            RelayEnd::Killed | RelayEnd::ShutDown => Termination::ShutDownInData,
        }
    }

    /// Writes what the server gets before the relay: the PROXY header its
    /// settings ask for, then the client's early bytes. `proxied_to` is the
    /// frontend address the client's own PROXY header named, if any.
    pub(super) async fn forward_to_server(
        &mut self,
        slot: &Slot,
        server: &mut TcpStream,
        proxied_to: Option<SocketAddr>,
    ) -> Result<(), Termination> {
        if slot.server.send_proxy != ProxyVersion::None {
            let frontend_addr = proxied_to.or_else(|| self.client.local_addr().ok());
            if send_header(server, slot.server.send_proxy, self.record.client, frontend_addr).await.is_err() {
                return Err(Termination::ServerAbortInData);
            }
        }
        // The early bytes' buffer is freed before the relay: a long idle
        // session keeps no memory for its first request.
        let early = self.watch.take_early();
        if !early.is_empty() {
            if server.write_all(&early).await.is_err() {
                return Err(Termination::ServerAbortInData);
            }
            self.record.bytes_from_client += early.len() as u64;
        }
        Ok(())
    }
}

/// The ends that come whatever the session `id` does, if it has any: its
/// own `timeout.session_max` (counted from its accept, queueing included)
/// and its share of `global.close_spread`.
fn fixed_ends<'a>(
    front: &'a FrontendContext,
    backend: &BackendTarget,
    id: SessionId,
    accepted: Instant,
    shut_down: &'a CancellationToken,
) -> Option<Box<FixedEnds<'a>>> {
    let session_max = backend.session_max;
    let close_spread = front.settings.close_spread;
    if session_max.is_none() && close_spread.is_none() {
        return None;
    }
    let session_end = session_max.and_then(|max| accepted.checked_add(stagger::session_max(id, max)));
    Some(Box::new(FixedEnds {
        next: session_end.map(|at| (at, RelayEnd::SessionMax)),
        close_delay: close_spread.map(|spread| stagger::close_delay(id, spread)),
        stop: &front.handles.kill,
        shut_down,
    }))
}
