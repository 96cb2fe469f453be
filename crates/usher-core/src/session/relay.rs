//! Relay: the server first gets the PROXY header (`send_proxy`) and the
//! bytes the client sent while it waited, then bytes flow both ways
//! ([`duplex`]) until both sides closed, one reset or idled, or shutdown.

mod duplex;

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Session, Termination};
use crate::backend::Slot;
use crate::config::ProxyVersion;
use crate::proxy_protocol::send_header;
use duplex::{relay, RelayEnd, RelayLimits};

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
        let outcome = relay(&mut self.client, server, self.watch.half_closed, limits, &slot.server.sessions).await;
        self.record.bytes_from_client += outcome.from_client;
        self.record.bytes_from_server += outcome.from_server;
        match outcome.end {
            RelayEnd::Done => Termination::Normal,
            RelayEnd::ClientReset => Termination::ClientAbortInData,
            RelayEnd::ServerReset => Termination::ServerAbortInData,
            RelayEnd::ClientIdle => Termination::ClientTimeoutInData,
            RelayEnd::ServerIdle => Termination::ServerTimeoutInData,
            // The server's token is a child of the broker's kill token:
            // one future in the relay hears both (the session's future stays
            // small), and the kill token says which it was.
            RelayEnd::Killed if front.handles.kill.is_cancelled() => Termination::KilledInData,
            RelayEnd::Killed => Termination::ShutDownInData,
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
