//! A frontend's routing rules with the backends they name, as its sessions
//! use them: made once per frontend and reload, next to its default backend.

use std::time::Duration;

use super::frontend::BackendTarget;
use crate::config::FrontendSettings;
use crate::routing::{NoClientHello, RouteTable, SpillWhen};

/// The rules of one frontend and, per rule, where its sessions go.
pub struct Routes {
    pub(super) table: RouteTable,
    /// By rule index.
    pub(super) targets: Vec<RuleTarget>,
    /// Some rule matches on SNI or ALPN: sessions read the ClientHello.
    pub(super) needs_client_hello: bool,
    /// Some rule matches on the destination: sessions look it up.
    pub(super) needs_destination: bool,
    /// `timeout.inspect`: time a client has to send its ClientHello.
    pub(super) inspect: Duration,
}

/// Where the sessions of one rule go.
pub(super) struct RuleTarget {
    pub(super) backend: BackendTarget,
    /// `overflow` and `spill_when`: where they go while `backend` is too busy.
    pub(super) overflow: Option<(BackendTarget, SpillWhen)>,
}

impl Routes {
    /// `None` for a frontend without rules: its sessions skip routing.
    /// `target` gives a live backend by name; validated settings only name
    /// live ones, and a frontend whose rules would not all resolve routes
    /// nothing rather than half its rules.
    pub fn new(frontend: &FrontendSettings, target: impl Fn(&str) -> Option<BackendTarget>) -> Option<Routes> {
        if frontend.routes.is_empty() {
            return None;
        }
        let mut targets = Vec::with_capacity(frontend.routes.len());
        for rule in &frontend.routes {
            let backend = target(&rule.backend)?;
            let overflow = match &rule.overflow {
                Some(overflow) => {
                    // Its queue publishes its load from now on.
                    backend.load.watch();
                    Some((target(&overflow.backend)?, overflow.spill_when))
                }
                None => None,
            };
            targets.push(RuleTarget { backend, overflow });
        }
        let table = RouteTable { rules: frontend.routes.clone(), no_client_hello: frontend.no_client_hello };
        Some(Routes {
            needs_client_hello: table.needs_client_hello(),
            needs_destination: table.rules.iter().any(|rule| !rule.destination.is_empty()),
            table,
            targets,
            inspect: frontend.timeout.inspect,
        })
    }

    pub(super) fn refuses_without_client_hello(&self) -> bool {
        self.table.no_client_hello == NoClientHello::Refuse
    }
}
