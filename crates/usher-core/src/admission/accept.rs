//! The accept loop of one listener.
//!
//! It waits until clients are in the backlog, asks the watchdog for
//! admission (`Admit`), and accepts at most what it was granted — so the
//! global and frontend limits hold before `accept()` is called, and a
//! listener at a limit simply stops polling: clients wait in the kernel
//! backlog, nobody is accepted-then-closed. Unused credits go back at once.

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use slog::{error, info, warn, Logger};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use super::gauge::{GaugeTicket, SessionGauge};
use crate::ids::ListenerId;
use super::protocol::{AdmissionGuard, Admit, GiveBack, SessionClosed, Shortage};
use crate::net::{classify_accept_error, AcceptError};

/// What a session holds from its admission until it ends: the watchdog's
/// count (returned by dropping the guard) and the live-session gauges.
pub struct Admitted {
    pub guard: AdmissionGuard,
    /// Process, listener and frontend gauges.
    pub live: [GaugeTicket; 3],
    /// Accepted while the frontend was in stress mode: the session gets the
    /// frontend's stress timeouts for its whole life.
    pub stress: bool,
}

/// Where a listener hands each client it accepted: the session layer
/// implements it, so admission knows nothing of what a session does.
pub trait SessionStarter: Send + Sync + 'static {
    /// Live sessions of the frontend the client is accepted for.
    fn frontend_gauge(&self) -> &Arc<SessionGauge>;

    /// Runs the client's session (on the data plane) until it ends.
    fn start(self: Arc<Self>, stream: std::net::TcpStream, client: std::net::SocketAddr, admitted: Admitted);
}

pub struct AcceptLoop {
    pub id: ListenerId,
    /// Taken by `run`, which owns the socket from then on.
    pub listener: Option<std::net::TcpListener>,
    /// The frontend's current settings: a reload publishes new ones, and
    /// sessions accepted from then on use them (earlier ones keep theirs).
    pub front: watch::Receiver<Arc<dyn SessionStarter>>,
    pub admit: Recipient<Admit>,
    /// Told when each admitted session ends (through its [`AdmissionGuard`]).
    pub closed: Recipient<SessionClosed>,
    pub give_back: Recipient<GiveBack>,
    pub shortage: Recipient<Shortage>,
    pub maxaccept: u32,
    /// Pause after an unexpected accept error.
    pub error_pause: Duration,
    pub stop: CancellationToken,
    pub log: Logger,
    /// Live sessions of the process and of this listener (stats); the
    /// frontend's gauge is in `front`.
    pub gauges: [Arc<SessionGauge>; 2],
}

impl AcceptLoop {
    pub async fn run(mut self) {
        let Some(listener) = self.listener.take() else { return };
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        // Readiness without accepting needs AsyncFd (tokio's TcpListener can
        // only accept). `new` is deprecated because a borrowed fd could be
        // closed under it; here the AsyncFd owns the listener, so that cannot
        // happen, and `register` would need `unsafe`.
        #[allow(deprecated)]
        let fd = match AsyncFd::new(listener) {
            Ok(fd) => fd,
            Err(err) => {
                error!(self.log, "listener cannot be polled"; "address" => address, "error" => %err);
                return;
            }
        };
        self.accept_until_stopped(&fd, &address).await;
        // The socket closes here; only now is "closed" true for clients.
        drop(fd);
        info!(self.log, "listener closed"; "address" => address);
    }

    async fn accept_until_stopped(&self, fd: &AsyncFd<std::net::TcpListener>, address: &str) {
        loop {
            let mut ready = tokio::select! {
                r = fd.readable() => match r {
                    Ok(ready) => ready,
                    Err(err) => {
                        error!(self.log, "listener poll failed"; "address" => address, "error" => %err);
                        return;
                    }
                },
                _ = self.stop.cancelled() => return,
            };

            let (tx, rx) = oneshot::channel();
            // One Admit in flight per listener.
            self.admit.do_send(Admit { listener: self.id, want: self.maxaccept, reply: tx });
            let grant = tokio::select! {
                r = rx => match r { Ok(grant) => grant, Err(_) => return },
                // Dropping rx: the watchdog takes back whatever it grants later.
                _ = self.stop.cancelled() => return,
            };

            let granted = grant.credits;
            let front = self.front.borrow().clone();
            let mut used = 0;
            let mut pause = None;
            while used < granted {
                match ready.try_io(|inner| inner.get_ref().accept()) {
                    Ok(Ok((stream, client))) => {
                        used += 1;
                        let admitted = Admitted {
                            guard: AdmissionGuard::new(self.id, self.closed.clone()),
                            live: [self.gauges[0].enter(), self.gauges[1].enter(), front.frontend_gauge().enter()],
                            stress: grant.stress,
                        };
                        front.clone().start(stream, client, admitted);
                    }
                    Ok(Err(err)) => match classify_accept_error(&err) {
                        AcceptError::WouldBlock => break,
                        AcceptError::Transient => continue,
                        AcceptError::Shortage(cause) => {
                            // The watchdog pauses this listener (throttled
                            // warning, stress) until a release or the re-check.
                            self.shortage.do_send(Shortage { listener: self.id, cause });
                            break;
                        }
                        AcceptError::Other => {
                            warn!(self.log, "accept failed"; "address" => address, "error" => %err);
                            pause = Some(self.error_pause);
                            break;
                        }
                    },
                    Err(_would_block) => break,
                }
            }
            if used < granted {
                self.give_back.do_send(GiveBack { listener: self.id, credits: granted - used });
            }
            if let Some(pause) = pause {
                tokio::select! {
                    _ = sleep(pause) => {}
                    _ = self.stop.cancelled() => return,
                }
            }
        }
    }
}
