//! The fallible half of a reload: a socket for every address the plan
//! opens, with its local address read, before anything changes.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use anyhow::Context as _;

use super::planner::NewListener;
use crate::config::ReloadError;

/// A listening socket ready for its Listener actor.
pub struct OpenedSocket {
    pub socket: TcpListener,
    /// Its local address (the real port where the configuration says 0).
    pub address: SocketAddr,
}

/// Opens every new listener of a plan, in order: the sockets the caller
/// bound for its frontend first (`bound`, the first start), else a fresh
/// bind. A socket given for a frontend that is not configured is an error.
pub fn open_listeners(
    new: &[NewListener],
    mut bound: HashMap<String, Vec<TcpListener>>,
) -> Result<Vec<OpenedSocket>, ReloadError> {
    let mut opened = Vec::with_capacity(new.len());
    for listener in new {
        let given = bound.get_mut(&listener.frontend_name).and_then(|list| (!list.is_empty()).then(|| list.remove(0)));
        opened.push(open(listener, given)?);
    }
    if let Some((name, _)) = bound.iter().find(|(_, list)| !list.is_empty()) {
        return Err(ReloadError::Bind(format!("a listener was given for frontend {name:?}, which is not configured")));
    }
    Ok(opened)
}

fn open(listener: &NewListener, given: Option<TcpListener>) -> Result<OpenedSocket, ReloadError> {
    let configured = listener.key.0;
    let socket = match given {
        Some(socket) => socket,
        None => crate::net::bind_listener(configured, listener.backlog)
            .with_context(|| format!("frontends.{}.bind: cannot listen on {configured}", listener.frontend_name))
            .map_err(|err| ReloadError::Bind(format!("{err:#}")))?,
    };
    socket.set_nonblocking(true).map_err(|err| ReloadError::Bind(err.to_string()))?;
    let address = socket.local_addr().map_err(|err| ReloadError::Bind(err.to_string()))?;
    Ok(OpenedSocket { socket, address })
}
