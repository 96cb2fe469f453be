//! A daemon with one session hook, `cidr-route`: clients from configured
//! networks go to another backend and priority class; the others pass, or
//! are denied (`PR`). Everything else is the stock daemon.
//!
//! ```toml
//! [frontends.web]
//! hooks = ["cidr-route"]
//!
//! [hooks.cidr-route]
//! cidrs = ["10.0.0.0/8", "192.0.2.0/24"]
//! backend = "office"
//! priority_class = -1   # optional: served first
//! others = "pass"       # or "deny"
//! ```

use std::process::ExitCode;

use ipnet::IpNet;
use serde::Deserialize;
use usher::daemon::Builder;
use usher::extension::{Answer, Decision, HookContext, QueuePriority, RouteTo, SessionHook};

/// `[hooks.cidr-route]`, checked by `usher check` and every reload.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    cidrs: Vec<IpNet>,
    backend: String,
    priority_class: Option<i32>,
    #[serde(default)]
    others: Others,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Others {
    #[default]
    Pass,
    Deny,
}

pub struct CidrRoute {
    cidrs: Vec<IpNet>,
    route: RouteTo,
    others: Others,
}

impl CidrRoute {
    pub fn new(options: Options) -> CidrRoute {
        let priority = options.priority_class.map(|class| QueuePriority { class, offset_ms: 0 });
        let route = RouteTo { backend: Some(options.backend.into()), priority, pin: None };
        CidrRoute { cidrs: options.cidrs, route, others: options.others }
    }
}

impl SessionHook for CidrRoute {
    fn on_accept(&self, session: &mut HookContext) -> Answer {
        let client = session.client.ip();
        Answer::Now(if self.cidrs.iter().any(|net| net.contains(&client)) {
            Decision::Route(self.route.clone())
        } else if self.others == Others::Deny {
            Decision::Deny { reason: "not from a configured network".into() }
        } else {
            Decision::Pass
        })
    }
}

/// The daemon with this hook registered.
pub fn builder() -> Builder {
    Builder::new().hook_with("cidr-route", CidrRoute::new)
}

fn main() -> ExitCode {
    usher::daemon::main(builder())
}
