//! What the admin API knows about each connection, decided when it is
//! accepted (actix-web's `on_connect`): whether its client address is within
//! `admin.maxconn_per_client`, and by when its request must be in.
//!
//! A connection over its client's cap is shut down at once — the client sees
//! it closed, no request on it is served — so one address cannot take the
//! connections every other client (a health check, an operator) needs. A
//! counted connection holds a [`ClientSlot`] in its extensions; actix drops
//! the extensions with the connection, and the slot with them, so the count
//! follows the connections that are really open.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::dev::{Extensions, Payload};
use slog::{debug, Logger};

/// What a client is counted by: its IPv4 address, or the /64 prefix of its
/// IPv6 address (one host commonly has a whole /64 to pick addresses from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ClientKey(IpAddr);

impl ClientKey {
    pub(super) fn of(addr: IpAddr) -> ClientKey {
        match addr.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey(IpAddr::V6(prefix.into()))
            }
            v4 => ClientKey(v4),
        }
    }
}

/// Open admin connections per client, shared by the accept callback and the
/// slots it hands out.
pub(super) struct ClientCounts {
    limit: NonZeroU32,
    /// A lock, not an actor's mailbox: actix-web's `on_connect` callback
    /// must be `Send + Sync` and cannot await. It guards only the admin
    /// API's own connection counts — never broker state — and the admin
    /// server runs one worker, so it is never contended.
    open: Mutex<HashMap<ClientKey, u32>>,
}

/// The client already holds `limit` connections.
#[derive(Debug)]
pub(super) struct OverCap {
    pub(super) limit: NonZeroU32,
}

impl ClientCounts {
    pub(super) fn new(limit: NonZeroU32) -> Arc<ClientCounts> {
        Arc::new(ClientCounts { limit, open: Mutex::new(HashMap::new()) })
    }

    /// Counts one more connection of `client`, unless it is at its cap.
    pub(super) fn admit(self: &Arc<Self>, client: ClientKey) -> Result<ClientSlot, OverCap> {
        // A panic while the lock was held cannot leave a count half-changed.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client).or_insert(0);
        if *count >= self.limit.get() {
            return Err(OverCap { limit: self.limit });
        }
        *count += 1;
        Ok(ClientSlot { counts: Arc::clone(self), client })
    }

    /// Connections `client` holds now.
    #[cfg(test)]
    fn open(&self, client: ClientKey) -> u32 {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).get(&client).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it (with the connection) uncounts it.
pub(super) struct ClientSlot {
    counts: Arc<ClientCounts>,
    client: ClientKey,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Forget clients without connections: the map stays as small as what is open.
                open.remove(&self.client);
            }
        }
    }
}

/// Stored in every admin connection's extensions by [`on_connect`].
pub(super) enum AdminConnection {
    /// Counted for its client; its request is due by `deadline`.
    Admitted(Admitted),
    /// Over its client's cap (or gone before it could be counted): already
    /// shut down; nothing on it is served.
    Refused,
}

pub(super) struct Admitted {
    /// `admin.timeout.request` after the connection opened: the whole
    /// request, head and body, must be in by then.
    pub(super) deadline: Instant,
    pub(super) timeout: Duration,
    /// A body the API gave up reading (too slow, too large). Kept, unread,
    /// for as long as the connection lives: actix-web closes a connection
    /// whose request body is unread once the reply is out, whereas a body
    /// dropped by its reader may be drained — waiting on a client that
    /// trickles it for as long as it likes.
    abandoned_body: RefCell<Option<Payload>>,
    _slot: ClientSlot,
}

impl Admitted {
    /// Gives up on the rest of the request body: the connection closes after
    /// the reply instead of waiting for it.
    pub(super) fn abandon(&self, body: Payload) {
        *self.abandoned_body.borrow_mut() = Some(body);
    }
}

/// actix-web's `on_connect` callback for the admin listener: counts the
/// connection for its client, or shuts it down when the client is at its
/// cap, and records the outcome in the connection's extensions.
pub(super) fn on_connect(
    counts: &Arc<ClientCounts>,
    request_timeout: Duration,
    log: &Logger,
    io: &dyn Any,
    extensions: &mut Extensions,
) {
    let opened = Instant::now();
    // The admin API listens on TCP only; anything else is refused outright.
    let Some(stream) = io.downcast_ref::<actix_rt::net::TcpStream>() else {
        extensions.insert(AdminConnection::Refused);
        return;
    };
    let Ok(peer) = stream.peer_addr() else {
        // Gone before it could be counted.
        extensions.insert(AdminConnection::Refused);
        return;
    };
    match counts.admit(ClientKey::of(peer.ip())) {
        Ok(slot) => {
            extensions.insert(AdminConnection::Admitted(Admitted {
                deadline: opened + request_timeout,
                timeout: request_timeout,
                abandoned_body: RefCell::new(None),
                _slot: slot,
            }));
        }
        Err(OverCap { limit }) => {
            // Both directions: the client sees the close at once, and no
            // request it already sent is read.
            let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Both);
            // Debug level: a flood would otherwise write a line per connection.
            debug!(log, "admin connection refused"; "client" => %peer, "reason" => "maxconn_per_client",
                "limit" => limit.get());
            extensions.insert(AdminConnection::Refused);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn a_client_is_capped_and_its_slots_come_back_on_drop() {
        let counts = ClientCounts::new(limit(2));
        let a = ClientKey::of("127.0.0.2".parse().unwrap());
        let b = ClientKey::of("127.0.0.3".parse().unwrap());
        let first = counts.admit(a).expect("under the cap");
        let _second = counts.admit(a).expect("under the cap");
        assert!(counts.admit(a).is_err(), "a third connection of the same client");
        let _other = counts.admit(b).expect("another client has its own cap");
        drop(first);
        assert_eq!(counts.open(a), 1);
        let _again = counts.admit(a).expect("room again once one closed");
    }

    #[test]
    fn ipv6_clients_count_by_their_slash_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:127.0.0.2"), key("127.0.0.2"));
        assert_ne!(key("127.0.0.2"), key("127.0.0.3"));
    }
}
