//! Listener: owns one bound socket and its accept loop (a task on the data
//! plane), and closes it on `StopAccepting`.

use std::net::SocketAddr;

use actix::prelude::*;
use slog::{info, Logger};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::admission::accept::AcceptLoop;
use crate::admission::StopAccepting;

pub struct Listener {
    accept: Option<AcceptLoop>,
    address: SocketAddr,
    data_plane: Handle,
    stop: CancellationToken,
    log: Logger,
}

impl Listener {
    pub fn new(accept: AcceptLoop, data_plane: Handle) -> std::io::Result<Listener> {
        let address = accept.listener.as_ref().ok_or_else(|| std::io::Error::other("no socket"))?.local_addr()?;
        let stop = accept.stop.clone();
        let log = accept.log.clone();
        Ok(Listener { accept: Some(accept), address, data_plane, stop, log })
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        if let Some(accept) = self.accept.take() {
            info!(self.log, "listening"; "address" => %self.address);
            self.data_plane.spawn(accept.run());
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stop.cancel();
    }
}

impl Handler<StopAccepting> for Listener {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, ctx: &mut Self::Context) {
        // The accept loop closes the socket and logs "listener closed".
        self.stop.cancel();
        ctx.stop();
    }
}
