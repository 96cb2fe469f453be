//! The Listener actor: owns one bound socket from "listening" to "listener
//! closed". Its accept loop runs as a task on the data plane; the actor
//! starts it and stops it, and always knows which of the two happened.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{info, Logger};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::accept_loop::AcceptLoop;
use super::handoff::SessionStarter;
use crate::admission::gauge::SessionGauge;
use crate::admission::protocol::{Admit, GiveBack, SessionClosed, Shortage, StopAccepting};
use crate::ids::ListenerId;

/// What a listener talks to and how it accepts.
pub struct ListenerWiring {
    /// The frontend's current settings: a reload publishes new ones, and
    /// sessions accepted from then on use them (earlier ones keep theirs).
    pub front: watch::Receiver<Arc<dyn SessionStarter>>,
    pub admit: Recipient<Admit>,
    /// Told when each admitted session ends (through its admission guard,
    /// which shares it rather than cloning it).
    pub closed: Arc<Recipient<SessionClosed>>,
    pub give_back: Recipient<GiveBack>,
    pub shortage: Recipient<Shortage>,
    /// Most accepts asked for at once.
    pub maxaccept: u32,
    /// Pause after an unexpected accept error.
    pub error_pause: Duration,
    /// Live sessions of the process and of this listener (stats); the
    /// frontend's gauge is in `front`.
    pub gauges: [Arc<SessionGauge>; 2],
    pub log: Logger,
}

/// Where a listener is in its life.
enum Lifecycle {
    /// Bound, its accept loop not started yet (the actor has not started).
    Bound(Box<AcceptLoop>, TcpListener),
    /// The accept loop runs on the data plane; it pauses on its own while
    /// the watchdog holds its admission back or after an accept error.
    Listening,
    /// Told to stop: the accept loop closes the socket (and only then logs
    /// "listener closed"); sessions it started run on.
    Closed,
}

pub struct Listener {
    address: SocketAddr,
    lifecycle: Lifecycle,
    data_plane: Handle,
    stop: CancellationToken,
    log: Logger,
}

impl Listener {
    /// A listener for a bound socket whose local `address` was already read:
    /// nothing here can fail, so a reload plans every fallible step before.
    pub fn new(
        id: ListenerId,
        socket: TcpListener,
        address: SocketAddr,
        wiring: ListenerWiring,
        data_plane: Handle,
    ) -> Listener {
        let stop = CancellationToken::new();
        let log = wiring.log.clone();
        let accept = Box::new(AcceptLoop { id, address, wiring, stop: stop.clone() });
        Listener { address, lifecycle: Lifecycle::Bound(accept, socket), data_plane, stop, log }
    }

    /// Starts the accept loop of a bound listener.
    fn listen(&mut self) {
        match std::mem::replace(&mut self.lifecycle, Lifecycle::Listening) {
            Lifecycle::Bound(accept, socket) => {
                info!(self.log, "listening"; "address" => %self.address);
                self.data_plane.spawn((*accept).run(socket));
            }
            other => self.lifecycle = other,
        }
    }

    /// Stops accepting: a running accept loop closes the socket; a socket
    /// whose loop never started closes here.
    fn close(&mut self) {
        self.stop.cancel();
        self.lifecycle = Lifecycle::Closed;
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.listen();
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.close();
    }
}

impl Handler<StopAccepting> for Listener {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, ctx: &mut Self::Context) {
        // The accept loop closes the socket and logs "listener closed".
        self.close();
        ctx.stop();
    }
}
