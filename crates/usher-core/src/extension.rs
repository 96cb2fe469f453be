//! Extension seam: what an embedder plugs into the broker without editing
//! its internals.
//!
//! - Session hooks ([`SessionHook`]): code that runs on accept (pass, deny
//!   `PR`, or route), after connect and at the end of every session of the
//!   frontends that name it (`frontends.NAME.hooks = ["geo-route"]`). A
//!   hook is registered by name in a [`HookRegistry`], with a check of its
//!   `[hooks.NAME]` options, so that a configuration naming an unknown hook
//!   or giving it bad options is refused as a whole, like a bad core key.
//!   Frontends pick their hooks anew at every reload.
//! - Balancing algorithms ([`Balancer`]): registered by name in a
//!   [`BalancerRegistry`] beside the six built in, named by
//!   `backends.NAME.balance`; stateful ones hear of grants, releases,
//!   server changes and connect times. The core follows a pick only when
//!   the server can take the session, so no algorithm can overfill a
//!   server or strand a waiter.
//! - Observers ([`Observer`] on a thread of its own, or an actor through
//!   [`Subscription::actor`]): a typed stream of [`Event`]s — ended
//!   sessions, server state changes, listeners paused and resumed, stress,
//!   reloads done or rejected — delivered through bounded mailboxes; a
//!   slow observer loses events (counted), never slows a session.
//! - Admission actors: an actor answering [`CheckClient`] is one kind of
//!   hook ([`ActorHook`]); actors given in `Extensions::admission` run first
//!   on every frontend. An actor reads its settings from its own table,
//!   `[actors.NAME]` (`Settings::actors`), checked like core keys when the
//!   program registers its type or a check ([`ActorOptions`]). See
//!   `examples/deny_list.rs`.

mod actor_hook;
mod actor_options;
mod observer;
mod plugged;
mod registries;
mod registry;

pub use actor_hook::{ActorHook, CheckClient, Verdict};
pub use actor_options::ActorOptions;
pub use observer::{Event, Observed, Observer, ObserverBus, Subscription, DEFAULT_MAILBOX};
#[doc(hidden)]
pub use plugged::PluggedHooks;
pub use registries::Registries;
pub use registry::{read_options, HookFactory, HookRegistry};

pub use crate::backend::balance::{
    Balancer, BalancerFactory, BalancerRegistry, BalancerSetup, Candidate, Choice, ServerEvent, Servers,
};

pub use crate::admission::{AdmissionEvent, PauseReason};
pub use crate::backend::{OpState, ServerStateChange};
pub use crate::config::{HookSettings, OnHookTimeout, OptionProblem, ReloadChange, ReloadError, ReloadSummary};
pub use crate::ids::ServerId;
pub use crate::session::{
    AccessRecord, Answer, Decision, HelloStatus, HookContext, HookCountersReport, HookFailure, PendingDecision,
    QueuePriority, RouteTo, SessionHook, SessionSummary,
};
