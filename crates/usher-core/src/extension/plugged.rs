//! The hooks a running broker was given, and which of them one frontend runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;

use super::{ActorHook, CheckClient, HookRegistry, Subscription};
use crate::config::{FrontendSettings, OnHookTimeout, Settings, MAX_DURATION};
use crate::session::{ConfiguredHook, HookCounters, HookCountersReport, SessionHook};

/// Registered hooks, and the admission actors every frontend runs first.
#[derive(Clone, Default)]
pub struct PluggedHooks {
    pub registry: HookRegistry,
    admission: Vec<Recipient<CheckClient>>,
    admission_counters: Arc<HookCounters>,
    /// Observers' hooks, run last on every frontend, by name.
    observers: Vec<(Arc<str>, Arc<dyn SessionHook>, Arc<HookCounters>)>,
}

/// Admission actors have no `[hooks.NAME]`: they are waited for as long
/// as they take, as they always were, and a dead one fails the session.
const ADMISSION_TIMEOUT: Duration = MAX_DURATION;

impl PluggedHooks {
    /// Starts each observer's thread.
    pub fn new(
        registry: HookRegistry,
        admission: Vec<Recipient<CheckClient>>,
        subscriptions: Vec<Subscription>,
    ) -> std::io::Result<PluggedHooks> {
        let mut observers = Vec::new();
        for subscription in subscriptions {
            let counters = Arc::<HookCounters>::default();
            let name: Arc<str> = Arc::from(subscription.name.as_str());
            let hook = subscription.start(counters.clone())?;
            observers.push((name, Arc::new(hook) as Arc<dyn SessionHook>, counters));
        }
        Ok(PluggedHooks { registry, admission, admission_counters: Arc::default(), observers })
    }

    /// The hooks `frontend` runs, in order: admission actors, then its `hooks`.
    pub fn for_frontend(&self, frontend: &FrontendSettings, settings: &Settings) -> Vec<ConfiguredHook> {
        let actors = self.admission.iter().map(|actor| ConfiguredHook {
            name: Arc::from("admission"),
            hook: Arc::new(ActorHook::new(actor.clone())),
            timeout: ADMISSION_TIMEOUT,
            on_timeout: OnHookTimeout::Refuse,
            counters: self.admission_counters.clone(),
        });
        let observers = self.observers.iter().map(|(name, hook, counters)| ConfiguredHook {
            name: name.clone(),
            hook: hook.clone(),
            timeout: ADMISSION_TIMEOUT,
            on_timeout: OnHookTimeout::Pass,
            counters: counters.clone(),
        });
        actors.chain(self.registry.configure(&frontend.hooks, &settings.hooks)).chain(observers).collect()
    }

    /// Each hook's counters by name (admission actors as `admission`).
    pub fn counters(&self) -> BTreeMap<String, HookCountersReport> {
        let mut counters = self.registry.counters();
        if !self.admission.is_empty() {
            counters.insert("admission".to_owned(), self.admission_counters.read());
        }
        for (name, _, observer) in &self.observers {
            counters.insert(name.to_string(), observer.read());
        }
        counters
    }
}
