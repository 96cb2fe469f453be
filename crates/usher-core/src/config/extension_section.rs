//! The keys through which extensions are configured, checked in the same
//! pass as core keys: `frontends.NAME.hooks` (names of registered session
//! hooks), `[hooks.NAME]` (the core's `timeout` and `on_timeout`, then the
//! hook's own options, checked by the hook). What is registered is the embedder's
//! [`ExtensionCatalog`]; the stock daemon registers nothing ([`NoExtensions`]).

use std::collections::BTreeMap;
use std::time::Duration;

use config::{Map, Value, ValueKind};
use serde::Serialize;

use super::reader::{Report, Section};

/// What an embedder registered, as far as checking a configuration needs.
pub trait ExtensionCatalog: Send + Sync {
    /// Names of the registered session hooks.
    fn hook_names(&self) -> Vec<String>;
    /// Checks the options of hook `name` (its `[hooks.NAME]` table without
    /// the core keys); every problem names its key relative to the table.
    fn check_hook(&self, name: &str, options: &toml::Table) -> Vec<OptionProblem>;
    /// Names of the registered balancing algorithms, for
    /// `backends.NAME.balance`: the six built in unless told otherwise.
    fn balancer_names(&self) -> Vec<String> {
        BUILT_IN_BALANCERS.iter().map(|name| (*name).to_owned()).collect()
    }
    /// Checks the `[actors.NAME]` tables extensions registered a check
    /// for; each problem comes with its actor's name, its key relative to
    /// that table. Unregistered tables are free-form.
    fn check_actors(&self, _actors: &toml::Table) -> Vec<(String, OptionProblem)> {
        Vec::new()
    }
}

/// The balancing algorithms built in (HAProxy's names); the backend's
/// registry builds them.
pub const BUILT_IN_BALANCERS: [&str; 6] = ["roundrobin", "static-rr", "leastconn", "first", "source", "random"];

/// One problem an extension found in its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    /// Dotted key relative to the extension's table, e.g. `cidrs` or
    /// `cidrs.2`; empty for the table as a whole.
    pub key: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

/// Nothing registered: no hook name is valid.
pub struct NoExtensions;

impl ExtensionCatalog for NoExtensions {
    fn hook_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn check_hook(&self, _: &str, _: &toml::Table) -> Vec<OptionProblem> {
        Vec::new()
    }
}

/// `[hooks.NAME]`: how the session treats one hook, and its own options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookSettings {
    /// Longest wait for a hook that answers later (an actor); the session
    /// then does as `on_timeout` says.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub on_timeout: OnHookTimeout,
    /// The hook's own keys, as checked by the hook.
    #[serde(flatten)]
    pub options: toml::Table,
}

/// A hook that did not answer in time: the session passes it, or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnHookTimeout {
    Pass,
    Refuse,
}

const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(1);

/// `frontends.NAME.hooks`: registered hook names, in the order they run.
pub(super) fn frontend_hooks(s: &mut Section, catalog: &dyn ExtensionCatalog, report: &mut Report<'_>) -> Vec<String> {
    let Some((path, value)) = s.optional("hooks") else { return Vec::new() };
    let registered = catalog.hook_names();
    let expected = || match registered.is_empty() {
        true => "a list of registered hook names (this program registers none)".to_owned(),
        false => format!("a list of registered hook names: {}", registered.join(", ")),
    };
    let ValueKind::Array(items) = &value.kind else {
        report.error(&path, format!("found {}; expected {}", super::reader::describe(&value.kind), expected()));
        return Vec::new();
    };
    let mut names = Vec::new();
    for item in items {
        match &item.kind {
            ValueKind::String(name) if registered.contains(name) => names.push(name.clone()),
            other => report.error(&path, format!("found {}; expected {}", super::reader::describe(other), expected())),
        }
    }
    names
}

/// `[hooks]`: one table per hook that some frontend names (or that is
/// configured), each checked by the core for its keys and by the hook
/// for the rest.
pub(super) fn hooks(
    root: &Map<String, Value>,
    used: &[&str],
    catalog: &dyn ExtensionCatalog,
    report: &mut Report<'_>,
) -> BTreeMap<String, HookSettings> {
    let table = Section::new("hooks", root.get("hooks"), report);
    let registered = catalog.hook_names();
    let mut tables: BTreeMap<String, Option<Value>> = used.iter().map(|name| ((*name).to_owned(), None)).collect();
    for (name, value) in table.entries() {
        if registered.contains(&name) {
            tables.insert(name, Some(value));
        } else {
            report.error(
                &format!("hooks.{name}"),
                format!("no hook of this name is registered; expected one of: {}", registered.join(", ")),
            );
        }
    }
    let mut out = BTreeMap::new();
    for (name, value) in tables {
        let path = format!("hooks.{name}");
        let mut s = Section::new(path.clone(), value.as_ref(), report);
        let timeout = match s.optional("timeout") {
            None => Some(DEFAULT_HOOK_TIMEOUT),
            Some(_) => s.duration("timeout", report),
        };
        let on_timeout = match s.optional("on_timeout") {
            None => Some(OnHookTimeout::Pass),
            Some(_) => {
                s.choice("on_timeout", &[("pass", OnHookTimeout::Pass), ("refuse", OnHookTimeout::Refuse)], report)
            }
        };
        let mut options = match value.as_ref().map(|v| &v.kind) {
            Some(ValueKind::Table(t)) => t.iter().map(|(k, v)| (k.clone(), super::build::to_toml(v))).collect(),
            _ => toml::Table::new(),
        };
        options.remove("timeout");
        options.remove("on_timeout");
        for problem in catalog.check_hook(&name, &options) {
            let key = if problem.key.is_empty() { path.clone() } else { format!("{path}.{}", problem.key) };
            report.error_near(&key, problem.problem);
        }
        if let (Some(timeout), Some(on_timeout)) = (timeout, on_timeout) {
            out.insert(name, HookSettings { timeout, on_timeout, options });
        }
    }
    out
}
