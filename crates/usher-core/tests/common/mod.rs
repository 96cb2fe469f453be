//! Shared by the backend tests: waiters that record what the BackendQueue's
//! core answered, and that a test can make "gone" (the session left before
//! its answer came), so the tests run the core's own delivery, re-offer and
//! settle code rather than a copy of it.

#![allow(dead_code)] // each test file uses its own part

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use usher_core::backend::balance::Balancer;
use usher_core::backend::discipline::SourceKey;
use usher_core::backend::{Answer, BackendSetup, Gone, QueueCore, QueuePlace, ServerSetup, Waiter};

/// An answer as a session hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `ticket`: the source the slot counts for (`max_live`).
    Granted {
        server: usize,
        queued: Option<QueuePlace>,
        ticket: Option<SourceKey>,
    },
    Full,
    SourceFull,
    SourceBusy,
    Shed {
        queued: QueuePlace,
    },
    NoServer {
        queued: Option<QueuePlace>,
    },
    Left {
        queued: QueuePlace,
    },
}

/// One answer the core sent, in order. `delivered`: the session was still
/// there to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub session: u64,
    pub reply: Reply,
    pub delivered: bool,
}

#[derive(Debug, Default)]
struct Inbox {
    gone: BTreeSet<u64>,
    heard: Vec<Heard>,
}

/// The sessions' side of the reply channels: which sessions are gone, and
/// every answer sent so far.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Rc<RefCell<Inbox>>);

impl Sessions {
    /// The reply channel of session `session`.
    pub fn waiter(&self, session: u64) -> TestWaiter {
        TestWaiter { session, sessions: self.clone() }
    }

    /// Session `session` is gone: answers to it are not heard from now on.
    pub fn leave(&self, session: u64) {
        self.0.borrow_mut().gone.insert(session);
    }

    /// The answers sent since the last call, in order.
    pub fn heard(&self) -> Vec<Heard> {
        std::mem::take(&mut self.0.borrow_mut().heard)
    }
}

/// A session's reply channel.
#[derive(Debug)]
pub struct TestWaiter {
    session: u64,
    sessions: Sessions,
}

impl Waiter for TestWaiter {
    type Server = ();

    fn answer(self, answer: Answer<'_, ()>) -> Result<(), Gone> {
        let reply = match answer {
            Answer::Granted { server, queued, ticket, .. } => Reply::Granted { server: server.0, queued, ticket },
            Answer::Full => Reply::Full,
            Answer::SourceFull => Reply::SourceFull,
            Answer::SourceBusy => Reply::SourceBusy,
            Answer::Shed { queued } => Reply::Shed { queued },
            Answer::NoServer { queued } => Reply::NoServer { queued },
            Answer::Left { queued } => Reply::Left { queued },
        };
        let mut inbox = self.sessions.0.borrow_mut();
        let delivered = !inbox.gone.contains(&self.session);
        inbox.heard.push(Heard { session: self.session, reply, delivered });
        if delivered {
            Ok(())
        } else {
            Err(Gone)
        }
    }
}

/// A backend's queue core over test waiters, logging nowhere.
pub fn queue_core(servers: &[ServerSetup], setup: BackendSetup, balancer: Box<dyn Balancer>) -> QueueCore<TestWaiter> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    QueueCore::new(servers, vec![(); servers.len()], setup, balancer, log)
}

/// At least 1024 cases (a case takes well under a millisecond);
/// `PROPTEST_CASES` may ask for more.
pub fn proptest_config() -> proptest::prelude::ProptestConfig {
    let default = proptest::prelude::ProptestConfig::default();
    proptest::prelude::ProptestConfig { cases: default.cases.max(1024), ..default }
}

/// Longest op sequence per case.
pub const MAX_OPS: usize = 200;
