//! The BackendQueue's bookkeeping: free slots (credits) lent by its servers,
//! the backend queue, each server's own queue, and the balancing choice.
//!
//! Why this is race-free: a session is queued only inside [`reserve`], after
//! seeing in the same call that no credit it could use is held here; a freed
//! slot reaches this struct only through [`credit`], which hands it to the
//! best waiter before anything else runs. The actor calls both from one
//! mailbox, one message at a time, so "no slot, so queue" and "slot arrived,
//! so grant" can never interleave — the lost wake-up of HAProxy's
//! `assign_server_and_queue` TOCTOU (a session queued just after the last
//! slot was released, stuck until `timeout queue`) has no window here.
//!
//! Invariants kept at every step (checked by [`BackendState::check`]):
//! - a held credit for server S implies S's own queue is empty and, if S can
//!   take balanced traffic, the backend queue is empty (work conservation);
//! - a server with sessions queued for it is never picked for a newcomer;
//! - queues never exceed their `maxqueue`.
//!
//! [`reserve`]: BackendState::reserve
//! [`credit`]: BackendState::credit

use std::collections::HashMap;
use std::net::IpAddr;

use super::wait_queue::{QueueKey, WaitQueue};
use crate::balance::{Balancer, Candidate};
use crate::ids::{ServerId, SessionId};

/// A request for a slot.
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest {
    pub session: SessionId,
    pub key: QueueKey,
    /// The client's address, for hash-based balancing (`source`).
    pub client: Option<IpAddr>,
    /// Only this server may serve the session (its own queue when full).
    pub pin: Option<ServerId>,
    /// Prefer any other server (a redispatched retry leaving this one).
    pub avoid: Option<ServerId>,
}

/// The answer to a [`ReserveRequest`].
#[derive(Debug)]
pub enum Reserved<W> {
    /// A slot on `server` is the waiter's now.
    Granted { server: ServerId, waiter: W },
    /// The waiter waits; `server` is set for a server queue. `position` is
    /// the number of sessions already waiting in that queue.
    Queued { server: Option<ServerId>, position: u32 },
    /// The queue it would join is at its `maxqueue`.
    Full { waiter: W },
    /// No server can ever take it (none configured, or all weights 0).
    NoServer { waiter: W },
}

/// A queued session that just got a slot.
#[derive(Debug)]
pub struct Grant<W> {
    pub server: ServerId,
    pub session: SessionId,
    pub waiter: W,
}

#[derive(Debug)]
struct ServerSlots<W> {
    /// `None` = unlimited server: always has room, credits do not circulate.
    held: Option<u32>,
    weight: u32,
    maxqueue: u32,
    queue: WaitQueue<W>,
}

impl<W> ServerSlots<W> {
    fn has_credit(&self) -> bool {
        self.held.is_none_or(|n| n > 0)
    }

    /// Can take balanced (non-pinned) traffic at all.
    fn balanced(&self) -> bool {
        self.weight > 0
    }
}

pub struct BackendState<W> {
    servers: Vec<ServerSlots<W>>,
    queue: WaitQueue<W>,
    maxqueue: u32,
    balancer: Box<dyn Balancer>,
    /// Which queue each waiting session is in (`None` = backend queue).
    location: HashMap<SessionId, Option<ServerId>>,
}

/// How a server is set up in the backend.
#[derive(Debug, Clone, Copy)]
pub struct ServerSetup {
    /// 0 = unlimited.
    pub maxconn: u32,
    pub weight: u32,
    pub maxqueue: u32,
}

impl<W> BackendState<W> {
    /// Limited servers start with no credit: their Server lends them.
    pub fn new(servers: &[ServerSetup], maxqueue: u32, balancer: Box<dyn Balancer>) -> BackendState<W> {
        let servers = servers
            .iter()
            .map(|s| ServerSlots {
                held: if s.maxconn == 0 { None } else { Some(0) },
                weight: s.weight,
                maxqueue: s.maxqueue,
                queue: WaitQueue::default(),
            })
            .collect();
        BackendState { servers, queue: WaitQueue::default(), maxqueue, balancer, location: HashMap::new() }
    }

    /// Decides at once: grant from a held credit, or queue, or refuse.
    pub fn reserve(&mut self, req: ReserveRequest, waiter: W) -> Reserved<W> {
        if let Some(pin) = req.pin {
            return self.reserve_pinned(pin, req, waiter);
        }
        if !self.servers.iter().any(|s| s.balanced()) {
            return Reserved::NoServer { waiter };
        }
        // Nobody overtakes the backend queue: while it is non-empty, no
        // balanced server holds a credit (see `credit`), so pick finds none.
        if let Some(server) = self.pick(req.avoid) {
            self.take_credit(server);
            return Reserved::Granted { server, waiter };
        }
        if self.maxqueue > 0 && self.queue.len() >= self.maxqueue as usize {
            return Reserved::Full { waiter };
        }
        let position = self.queue.push(req.key, req.session, waiter);
        self.location.insert(req.session, None);
        Reserved::Queued { server: None, position }
    }

    fn reserve_pinned(&mut self, pin: ServerId, req: ReserveRequest, waiter: W) -> Reserved<W> {
        let Some(s) = self.servers.get_mut(pin.0) else {
            return Reserved::NoServer { waiter };
        };
        if s.has_credit() && s.queue.is_empty() {
            self.take_credit(pin);
            return Reserved::Granted { server: pin, waiter };
        }
        if s.maxqueue > 0 && s.queue.len() >= s.maxqueue as usize {
            return Reserved::Full { waiter };
        }
        let position = s.queue.push(req.key, req.session, waiter);
        self.location.insert(req.session, Some(pin));
        Reserved::Queued { server: Some(pin), position }
    }

    fn pick(&mut self, avoid: Option<ServerId>) -> Option<ServerId> {
        let mut candidates: Vec<Candidate> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Candidate {
                id: ServerId(i),
                weight: s.weight,
                available: s.balanced() && s.has_credit() && s.queue.is_empty(),
            })
            .collect();
        if let Some(avoid) = avoid.filter(|a| a.0 < candidates.len()) {
            let others = candidates.iter().any(|c| c.available && c.id != avoid);
            if others {
                candidates[avoid.0].available = false;
            }
        }
        self.balancer.pick(&candidates)
    }

    fn take_credit(&mut self, server: ServerId) {
        if let Some(held) = &mut self.servers[server.0].held {
            debug_assert!(*held > 0);
            *held -= 1;
        }
    }

    /// A session left its queue (client gone, queue timeout). Returns its
    /// waiter if it was still queued.
    pub fn cancel(&mut self, session: SessionId) -> Option<W> {
        match self.location.remove(&session)? {
            None => self.queue.remove(session),
            Some(server) => self.servers[server.0].queue.remove(session),
        }
    }

    /// A freed slot of `server` arrived (`Dequeue`). The best waiter that can
    /// use it gets it: the head of the server's own queue or, if the server
    /// takes balanced traffic, the head of the backend queue — the lower key
    /// wins, a tie goes to the server queue. With no waiter, it is held.
    ///
    /// If the waiter turns out to be gone when the actor delivers, the actor
    /// calls `credit` again for the same slot.
    pub fn credit(&mut self, server: ServerId) -> Option<Grant<W>> {
        let s = self.servers.get_mut(server.0)?;
        let own = s.queue.head_key();
        let shared = if s.balanced() { self.queue.head_key() } else { None };
        let from_own = match (own, shared) {
            (None, None) => {
                if let Some(held) = &mut s.held {
                    *held += 1;
                }
                return None;
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(own), Some(shared)) => own <= shared,
        };
        let waiting = if from_own { s.queue.pop_front() } else { self.queue.pop_front() }?;
        self.location.remove(&waiting.session);
        Some(Grant { server, session: waiting.session, waiter: waiting.waiter })
    }

    pub fn backend_queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn server_queue_len(&self, server: ServerId) -> usize {
        self.servers.get(server.0).map_or(0, |s| s.queue.len())
    }

    /// Free credits held for `server` (`None` for an unlimited server).
    pub fn held(&self, server: ServerId) -> Option<u32> {
        self.servers.get(server.0).and_then(|s| s.held)
    }

    pub fn is_queued(&self, session: SessionId) -> bool {
        self.location.contains_key(&session)
    }

    pub fn servers(&self) -> usize {
        self.servers.len()
    }

    /// Checks the invariants listed in the module doc; returns the first
    /// violation. Used by tests after every step.
    pub fn check(&self) -> Result<(), String> {
        if self.maxqueue > 0 && self.queue.len() > self.maxqueue as usize {
            return Err(format!("backend queue {} > maxqueue {}", self.queue.len(), self.maxqueue));
        }
        for (i, s) in self.servers.iter().enumerate() {
            if s.maxqueue > 0 && s.queue.len() > s.maxqueue as usize {
                return Err(format!("server {i} queue {} > maxqueue {}", s.queue.len(), s.maxqueue));
            }
            if s.held.is_some_and(|n| n > 0) {
                if !s.queue.is_empty() {
                    return Err(format!("server {i} holds a credit while its own queue waits"));
                }
                if s.balanced() && !self.queue.is_empty() {
                    return Err(format!("server {i} holds a credit while the backend queue waits"));
                }
            }
            if s.held.is_none() && !s.queue.is_empty() {
                return Err(format!("unlimited server {i} has a queue"));
            }
        }
        let queued = self.queue.len() + self.servers.iter().map(|s| s.queue.len()).sum::<usize>();
        if queued != self.location.len() {
            return Err(format!("{queued} queued but {} located", self.location.len()));
        }
        Ok(())
    }
}
