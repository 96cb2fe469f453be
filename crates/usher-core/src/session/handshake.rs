//! Handshake: with `accept_proxy`, a client starts with a PROXY header that
//! names the real client; the session ends with `CR` if it is bad or late.

use std::net::SocketAddr;

use super::{Session, Termination};
use crate::proxy_protocol::read_header;

impl Session<'_> {
    /// Reads the client's PROXY header if the frontend expects one. From
    /// here on its source is the client; returns its destination (the
    /// address the client reached upstream), if it names one.
    pub(super) async fn handshake(&mut self) -> Result<Option<SocketAddr>, Termination> {
        let front = self.front;
        let Some(accept) = front.settings.accept_proxy else { return Ok(None) };
        // Boxed: the header reader holds a header-sized buffer, and inline it
        // would size every session's future (and idle memory) by it.
        // Always a deadline: the client holds a place of the frontend's
        // maxconn until its header is read.
        let header = Box::pin(read_header(&mut self.client, accept.timeout, &front.handles.kill)).await;
        // Its last read may leave the socket's read readiness set with
        // nothing behind it: the client watch must not take that for a request.
        self.watch.read_before();
        match header {
            Ok(Some(addresses)) => {
                self.record.client = addresses.source;
                Ok(Some(addresses.destination))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                slog::debug!(front.handles.log, "bad PROXY header";
                    "session" => self.id.0, "client" => %self.record.client,
                    "frontend" => &*front.settings.frontend_name, "reason" => %err);
                Err(Termination::BadProxyHeader)
            }
        }
    }
}
