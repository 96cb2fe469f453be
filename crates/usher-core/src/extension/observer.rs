//! Observers: a typed stream of what happened, delivered to each
//! subscriber on its own thread through a bounded mailbox. A slow observer
//! loses events — counted as `lost` in `/stats` under its name — and never
//! slows a session: the session only tries to post, it never waits.
//!
//! Today's stream carries every ended session (its whole access record).

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use crate::session::{AccessRecord, HookContext, HookCounters, SessionHook, Termination};

/// What an observer is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A session ended (`end`); its access record was written.
    SessionEnded { record: AccessRecord, end: Termination },
}

/// Receives the broker's events, one at a time, on a thread of its own.
pub trait Observer: Send + 'static {
    fn observe(&mut self, event: Event);
}

/// Events an observer's mailbox holds before further ones are lost.
pub const DEFAULT_MAILBOX: usize = 1024;

/// An observer to subscribe, with its name (in `/stats`) and mailbox size.
pub struct Subscription {
    pub name: String,
    pub mailbox: usize,
    pub observer: Box<dyn Observer>,
}

impl Subscription {
    pub fn new(name: &str, observer: impl Observer) -> Subscription {
        Subscription { name: name.to_owned(), mailbox: DEFAULT_MAILBOX, observer: Box::new(observer) }
    }

    /// A mailbox of `events` (at least one).
    pub fn with_mailbox(mut self, events: usize) -> Subscription {
        self.mailbox = events.max(1);
        self
    }

    /// Starts the observer's thread; the hook posts every ended session to it.
    pub(crate) fn start(self, counters: Arc<HookCounters>) -> std::io::Result<PostSessions> {
        let (tx, rx) = sync_channel::<Event>(self.mailbox);
        let mut observer = self.observer;
        std::thread::Builder::new().name(format!("observer {}", self.name)).spawn(move || {
            for event in rx {
                observer.observe(event);
            }
        })?;
        Ok(PostSessions { mailbox: tx, counters })
    }
}

/// The session hook through which ended sessions reach an observer.
pub(crate) struct PostSessions {
    mailbox: SyncSender<Event>,
    counters: Arc<HookCounters>,
}

impl SessionHook for PostSessions {
    fn on_end(&self, _: &mut HookContext, record: &AccessRecord, end: Termination) {
        match self.mailbox.try_send(Event::SessionEnded { record: record.clone(), end }) {
            Ok(()) => {}
            // Full, or the observer's thread is gone: the event is lost.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => HookCounters::count(&self.counters.lost),
        }
    }
}
