//! Observers: a typed stream of what happened, delivered to each
//! subscriber through a bounded mailbox — its own thread's, or an actor's
//! reached by a `Recipient`. A slow observer loses events — counted as
//! `lost` in `/stats` under its name — and never slows a session or an
//! actor: the publisher only tries to post, it never waits.
//!
//! The stream: every ended session (its whole access record), server
//! state changes, listeners paused and resumed (and why), frontends
//! entering and leaving stress mode, and each reload, done (with its typed
//! changes) or rejected (with its errors).

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use actix::{Message, Recipient};

use crate::admission::AdmissionEvent;
use crate::backend::ServerStateChange;
use crate::config::{ReloadError, ReloadSummary};
use crate::notify::Notify;
use crate::session::{AccessRecord, HookContext, HookCounters, SessionHook, Termination};

/// What an observer is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A session ended (`end`); its access record was written.
    SessionEnded { record: AccessRecord, end: Termination },
    /// A server of `backend` changed operational state.
    ServerStateChanged { backend: Arc<str>, change: ServerStateChange },
    /// A listener paused or resumed; a frontend entered or left stress.
    Admission(AdmissionEvent),
    /// A reload (SIGHUP, `POST /reload`) applied these changes.
    ReloadDone(Arc<ReloadSummary>),
    /// A reload was refused; the running configuration stays.
    ReloadRejected(Arc<ReloadError>),
}

/// Receives the broker's events, one at a time, on a thread of its own.
pub trait Observer: Send + 'static {
    fn observe(&mut self, event: Event);
}

/// An event, as an actor subscribed with [`Subscription::actor`] receives it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Observed(pub Event);

/// Events an observer's mailbox holds before further ones are lost.
pub const DEFAULT_MAILBOX: usize = 1024;

enum Target {
    Thread { observer: Box<dyn Observer>, mailbox: usize },
    Actor(Recipient<Observed>),
}

/// An observer to subscribe, with its name (in `/stats`).
pub struct Subscription {
    pub name: String,
    target: Target,
}

impl Subscription {
    /// `observer` on a thread of its own, behind a mailbox of
    /// [`DEFAULT_MAILBOX`] events.
    pub fn new(name: &str, observer: impl Observer) -> Subscription {
        Subscription {
            name: name.to_owned(),
            target: Target::Thread { observer: Box::new(observer), mailbox: DEFAULT_MAILBOX },
        }
    }

    /// An actor: each event is an [`Observed`] message posted with
    /// `try_send`, so the actor's own mailbox capacity bounds it (actix's
    /// default is 16; set it with `Context::set_mailbox_capacity` in
    /// `started`) and a full mailbox loses the event.
    pub fn actor(name: &str, recipient: Recipient<Observed>) -> Subscription {
        Subscription { name: name.to_owned(), target: Target::Actor(recipient) }
    }

    /// A mailbox of `events` (at least one) for a thread observer; an
    /// actor's mailbox is its own.
    pub fn with_mailbox(mut self, events: usize) -> Subscription {
        if let Target::Thread { mailbox, .. } = &mut self.target {
            *mailbox = events.max(1);
        }
        self
    }

    /// Starts a thread observer's thread; returns where its events go.
    pub(crate) fn start(self, counters: Arc<HookCounters>) -> std::io::Result<Posting> {
        let mailbox = match self.target {
            Target::Thread { mut observer, mailbox } => {
                let (tx, rx) = sync_channel::<Event>(mailbox);
                std::thread::Builder::new().name(format!("observer {}", self.name)).spawn(move || {
                    for event in rx {
                        observer.observe(event);
                    }
                })?;
                Mailbox::Thread(tx)
            }
            Target::Actor(recipient) => Mailbox::Actor(recipient),
        };
        Ok(Posting { mailbox, counters })
    }
}

enum Mailbox {
    Thread(SyncSender<Event>),
    Actor(Recipient<Observed>),
}

/// One observer's mailbox and its counters: posting never waits.
pub(crate) struct Posting {
    mailbox: Mailbox,
    counters: Arc<HookCounters>,
}

impl Posting {
    fn post(&self, event: Event) {
        let posted = match &self.mailbox {
            // Full, or the observer's thread is gone: the event is lost.
            Mailbox::Thread(tx) => {
                !matches!(tx.try_send(event), Err(TrySendError::Full(_) | TrySendError::Disconnected(_)))
            }
            Mailbox::Actor(recipient) => recipient.try_send(Observed(event)).is_ok(),
        };
        if !posted {
            HookCounters::count(&self.counters.lost);
        }
    }
}

/// Every observer's mailbox: the broker publishes what its actors tell it.
#[derive(Clone, Default)]
pub struct ObserverBus {
    observers: Arc<[Arc<Posting>]>,
}

impl ObserverBus {
    pub(crate) fn new(observers: Vec<Arc<Posting>>) -> ObserverBus {
        ObserverBus { observers: observers.into() }
    }

    /// Nobody observes: publishers skip building the event.
    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }

    /// What the servers of `backend` tell the observers.
    pub fn server_state_changes(&self, backend: &str) -> Notify<ServerStateChange> {
        if self.is_empty() {
            return Notify::none();
        }
        let (bus, backend) = (self.clone(), Arc::<str>::from(backend));
        Notify::new(move |change| bus.publish(Event::ServerStateChanged { backend: backend.clone(), change }))
    }

    /// What the ResourceWatchdog tells the observers.
    pub fn admission_events(&self) -> Notify<AdmissionEvent> {
        if self.is_empty() {
            return Notify::none();
        }
        let bus = self.clone();
        Notify::new(move |event| bus.publish(Event::Admission(event)))
    }

    /// Posts `event` to every observer; a full mailbox loses it (counted).
    pub fn publish(&self, event: Event) {
        if let Some((last, others)) = self.observers.split_last() {
            for observer in others {
                observer.post(event.clone());
            }
            last.post(event);
        }
    }
}

/// The session hook through which ended sessions reach an observer.
pub(crate) struct PostSessions(pub(crate) Arc<Posting>);

impl SessionHook for PostSessions {
    fn on_end(&self, _: &mut HookContext, record: &AccessRecord, end: Termination) {
        self.0.post(Event::SessionEnded { record: record.clone(), end });
    }
}
