//! The hooks a running broker was given, and which of them one frontend runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;

use super::observer::{ObserverBus, PostSessions};
use super::{ActorHook, CheckClient, HookRegistry, Subscription};
use crate::config::{FrontendSettings, OnHookTimeout, Settings, MAX_DURATION};
use crate::session::{ConfiguredHook, HookCounters, HookCountersReport};

/// Registered hooks, and the admission actors every frontend runs first.
#[derive(Clone, Default)]
pub struct PluggedHooks {
    pub registry: HookRegistry,
    admission: Vec<Recipient<CheckClient>>,
    admission_counters: Arc<HookCounters>,
    /// Observers' hooks, run last on every frontend.
    observers: Vec<ConfiguredHook>,
    /// Every observer's mailbox, for events other than ended sessions.
    bus: ObserverBus,
}

/// Admission actors have no `[hooks.NAME]`: they are waited for as long
/// as they take, as they always were, and a dead one fails the session.
const ADMISSION_TIMEOUT: Duration = MAX_DURATION;

impl PluggedHooks {
    /// Starts each observer's thread.
    pub(crate) fn new(
        registry: HookRegistry,
        admission: Vec<Recipient<CheckClient>>,
        subscriptions: Vec<Subscription>,
    ) -> std::io::Result<PluggedHooks> {
        let mut observers = Vec::new();
        let mut postings = Vec::new();
        for subscription in subscriptions {
            let counters = Arc::<HookCounters>::default();
            let name: Arc<str> = Arc::from(subscription.name.as_str());
            let posting = Arc::new(subscription.start(counters.clone())?);
            postings.push(posting.clone());
            let hook = Arc::new(PostSessions(posting));
            // on_end never waits: the timeout and its outcome do not apply.
            let (timeout, on_timeout) = (ADMISSION_TIMEOUT, OnHookTimeout::Pass);
            observers.push(ConfiguredHook { name, hook, timeout, on_timeout, counters });
        }
        let bus = ObserverBus::new(postings);
        Ok(PluggedHooks { registry, admission, admission_counters: Arc::default(), observers, bus })
    }

    /// Where the broker publishes what its actors tell it.
    pub(crate) fn observers(&self) -> &ObserverBus {
        &self.bus
    }

    /// The hooks `frontend` runs, in order: admission actors, then its `hooks`.
    pub(crate) fn for_frontend(&self, frontend: &FrontendSettings, settings: &Settings) -> Vec<ConfiguredHook> {
        let actors = self.admission.iter().map(|actor| ConfiguredHook {
            name: Arc::from("admission"),
            hook: Arc::new(ActorHook::new(actor.clone())),
            timeout: ADMISSION_TIMEOUT,
            on_timeout: OnHookTimeout::Refuse,
            counters: self.admission_counters.clone(),
        });
        let hooks = actors.chain(self.registry.configure(&frontend.hooks, &settings.hooks));
        hooks.chain(self.observers.iter().cloned()).collect()
    }

    /// Each hook's counters by name (admission actors as `admission`).
    pub(crate) fn counters(&self) -> BTreeMap<String, HookCountersReport> {
        let mut counters = self.registry.counters();
        if !self.admission.is_empty() {
            counters.insert("admission".to_owned(), self.admission_counters.read());
        }
        for observer in &self.observers {
            counters.insert(observer.name.to_string(), observer.counters.read());
        }
        counters
    }
}
