//! The accept loop of one listener.
//!
//! It waits until clients are in the backlog, asks the watchdog for
//! admission (`Admit`), and accepts at most what it was granted — so the
//! global and frontend limits hold before `accept()` is called, and a
//! listener at a limit simply stops polling: clients wait in the kernel
//! backlog, nobody is accepted-then-closed. Unused credits go back at once.

use std::net::{SocketAddr, TcpListener};

use slog::{error, info, warn};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::sync::oneshot;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use super::actor::ListenerWiring;
use super::handoff::Admitted;
use crate::admission::protocol::{AdmissionGuard, Admit, AdmitGrant, GiveBack, Shortage};
use crate::ids::ListenerId;
use crate::net::{accept_nonblocking, classify_accept_error, set_nodelay, set_nodelay_inherited, AcceptError};

/// One listener's loop; runs as a task on the data plane until `stop`.
pub(super) struct AcceptLoop {
    pub(super) id: ListenerId,
    pub(super) address: SocketAddr,
    pub(super) wiring: ListenerWiring,
    pub(super) stop: CancellationToken,
}

/// Where an accepted client's `TCP_NODELAY` comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nodelay {
    /// Set on the listener; every accepted socket inherits it.
    Inherited,
    /// The listener's could not be set: set on each accepted socket.
    PerSocket,
}

/// How a round of accepts ended.
enum RoundEnd {
    /// The credits are used up or the backlog is empty: wait for the next
    /// client.
    Done,
    /// An unexpected accept error: pause for `error_pause` before polling
    /// again.
    Failed,
}

impl AcceptLoop {
    /// Accepts until stopped, then closes the socket.
    pub(super) async fn run(self, socket: TcpListener) {
        let log = &self.wiring.log;
        // Sessions relay small messages as they come (Nagle off); set once
        // here rather than once per session.
        let nodelay = match set_nodelay_inherited(&socket) {
            Ok(()) => Nodelay::Inherited,
            Err(err) => {
                warn!(log, "listener cannot set TCP_NODELAY, setting it per client"; "address" => %self.address, "error" => %err);
                Nodelay::PerSocket
            }
        };
        // Readiness without accepting needs AsyncFd (tokio's TcpListener can
        // only accept). `new` is deprecated because a borrowed fd could be
        // closed under it; here the AsyncFd owns the listener, so that cannot
        // happen, and `register` would need `unsafe`.
        #[allow(deprecated)]
        let fd = match AsyncFd::new(socket) {
            Ok(fd) => fd,
            Err(err) => {
                error!(log, "listener cannot be polled"; "address" => %self.address, "error" => %err);
                return;
            }
        };
        self.accept_until_stopped(&fd, nodelay).await;
        // The socket closes here; only now is "closed" true for clients.
        drop(fd);
        info!(log, "listener closed"; "address" => %self.address);
    }

    async fn accept_until_stopped(&self, fd: &AsyncFd<TcpListener>, nodelay: Nodelay) {
        loop {
            let Some(mut ready) = self.backlog(fd).await else { return };
            let Some(grant) = self.admission().await else { return };
            if let RoundEnd::Failed = self.accept_granted(&mut ready, grant, nodelay) {
                tokio::select! {
                    _ = sleep(self.wiring.error_pause) => {}
                    _ = self.stop.cancelled() => return,
                }
            }
        }
    }

    /// Waits until clients are in the backlog; `None` when stopped or when
    /// the socket cannot be polled any more.
    async fn backlog<'a>(&self, fd: &'a AsyncFd<TcpListener>) -> Option<AsyncFdReadyGuard<'a, TcpListener>> {
        tokio::select! {
            r = fd.readable() => match r {
                Ok(ready) => Some(ready),
                Err(err) => {
                    error!(self.wiring.log, "listener poll failed"; "address" => %self.address, "error" => %err);
                    None
                }
            },
            _ = self.stop.cancelled() => None,
        }
    }

    /// Asks the watchdog for accept credits and waits for them (the
    /// listener is paused meanwhile); `None` when stopped.
    async fn admission(&self) -> Option<AdmitGrant> {
        let (tx, rx) = oneshot::channel();
        // One Admit in flight per listener.
        self.wiring.admit.do_send(Admit { listener: self.id, want: self.wiring.maxaccept, reply: tx });
        tokio::select! {
            r = rx => r.ok(),
            // Dropping rx: the watchdog takes back whatever it grants later.
            _ = self.stop.cancelled() => None,
        }
    }

    /// Accepts up to the granted credits and gives the unused ones back.
    fn accept_granted(
        &self,
        ready: &mut AsyncFdReadyGuard<'_, TcpListener>,
        grant: AdmitGrant,
        nodelay: Nodelay,
    ) -> RoundEnd {
        let w = &self.wiring;
        let front = w.front.borrow().clone();
        let mut used = 0;
        let mut end = RoundEnd::Done;
        while used < grant.credits {
            match ready.try_io(|inner| accept_nonblocking(inner.get_ref())) {
                Ok(Ok((stream, client))) => {
                    used += 1;
                    if nodelay == Nodelay::PerSocket {
                        let _ = set_nodelay(&stream);
                    }
                    let admitted = Admitted {
                        guard: AdmissionGuard::new(self.id, w.closed.clone()),
                        live: [w.gauges[0].enter(), w.gauges[1].enter(), front.frontend_gauge().enter()],
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
                        w.shortage.do_send(Shortage { listener: self.id, cause });
                        break;
                    }
                    AcceptError::Other => {
                        warn!(w.log, "accept failed"; "address" => %self.address, "error" => %err);
                        end = RoundEnd::Failed;
                        break;
                    }
                },
                Err(_would_block) => break,
            }
        }
        if used < grant.credits {
            w.give_back.do_send(GiveBack { listener: self.id, credits: grant.credits - used });
        }
        end
    }
}
