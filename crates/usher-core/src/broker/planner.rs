//! The first half of a reload: from the running topology's view and the new
//! settings, a [`Plan`] of every step, decided without touching anything.
//! Binding the new addresses ([`super::bind`]) is the only other fallible
//! step; the Topology then commits the bound plan, which cannot fail. So a
//! rejected reload changes nothing.
//!
//! Ids are planned here too: what a reload adds comes after every id in
//! use, removed things keep theirs (their sessions may still report to it).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{ReloadChange, RestartKey};
use super::reload_plan::{self as rules, ServerPlan};
use crate::config::{BackendSettings, FrontendSettings, ServerSettings, Settings};
use crate::ids::{BackendId, FrontendId, ListenerId, ServerId};

/// Listeners are matched by configured address; the same address listed
/// twice (e.g. `127.0.0.1:0`) is told apart by its occurrence.
pub type ListenerKey = (SocketAddr, usize);

/// What runs, by id; `None` marks a slot a reload removed.
pub struct Running<'a> {
    /// The settings in force.
    pub settings: &'a Settings,
    pub frontends: Vec<Option<&'a FrontendSettings>>,
    pub backends: Vec<Option<RunningBackend<'a>>>,
    /// Open listeners' keys and addresses.
    pub listeners: Vec<Option<(ListenerKey, SocketAddr)>>,
}

pub struct RunningBackend<'a> {
    pub settings: &'a BackendSettings,
    /// By server id; `None` once retired.
    pub servers: Vec<Option<&'a ServerSettings>>,
}

/// An owned copy of what runs, taken on the actor thread in time linear in
/// the number of slots (the settings are shared, not copied), so a big
/// reload is planned on another thread while the actors keep running.
pub struct RunningSnapshot {
    pub settings: Arc<Settings>,
    pub frontends: Vec<Option<Arc<FrontendSettings>>>,
    pub backends: Vec<Option<SharedBackend>>,
    pub listeners: Vec<Option<(ListenerKey, SocketAddr)>>,
}

/// A live backend's settings and its servers' by id (`None` once retired).
pub type SharedBackend = (Arc<BackendSettings>, Vec<Option<Arc<ServerSettings>>>);

impl RunningSnapshot {
    /// The planner's view of it.
    pub fn view(&self) -> Running<'_> {
        Running {
            settings: &self.settings,
            frontends: self.frontends.iter().map(Option::as_deref).collect(),
            backends: self
                .backends
                .iter()
                .map(|b| {
                    b.as_ref().map(|(settings, servers)| RunningBackend {
                        settings,
                        servers: servers.iter().map(Option::as_deref).collect(),
                    })
                })
                .collect(),
            listeners: self.listeners.clone(),
        }
    }
}

impl Running<'_> {
    /// Nothing runs yet: the plan is the first start.
    fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.backends.is_empty() && self.listeners.is_empty()
    }

    fn live_frontend(&self, name: &str) -> Option<(FrontendId, &FrontendSettings)> {
        self.frontends.iter().enumerate().find_map(|(i, f)| f.filter(|f| f.name == name).map(|f| (FrontendId(i), f)))
    }
}

/// Every step of a reload, in the order the commit takes them.
#[derive(Debug)]
pub struct Plan {
    /// The settings to run with (keys that need a restart keep their values).
    pub settings: Settings,
    /// The first start: nothing is reported as a change.
    pub first: bool,
    pub restart_needed: Vec<RestartKey>,
    /// New and changed backends in configuration order, then removed ones.
    pub backends: Vec<BackendStep>,
    /// New and changed frontends in configuration order, then removed ones.
    pub frontends: Vec<FrontendStep>,
    pub listeners: ListenerPlan,
    /// `[hooks.NAME]` tables added, changed or removed: the frontends pick
    /// their hooks anew at every reload, so these apply at once.
    pub hooks: Vec<ReloadChange>,
}

#[derive(Debug)]
pub enum BackendStep {
    Add { id: BackendId, settings: BackendSettings },
    Update(BackendUpdate),
    Remove { id: BackendId, name: String },
}

/// A backend that stays: its servers retired, changed and added.
#[derive(Debug)]
pub struct BackendUpdate {
    pub id: BackendId,
    pub settings: BackendSettings,
    /// Removed servers, and replaced ones (a new server takes the name).
    pub retire: Vec<RetiredServer>,
    /// Changed and new servers, in configuration order.
    pub servers: Vec<ServerStep>,
    /// Settings other than its servers changed.
    pub settings_changed: bool,
    /// The BackendQueue must hear of it (settings, servers or their order).
    pub reconfigure: bool,
}

#[derive(Debug)]
pub struct RetiredServer {
    pub id: ServerId,
    pub name: String,
    /// A new server under the same name follows (not reported as removed).
    pub replaced: bool,
}

#[derive(Debug)]
pub enum ServerStep {
    Update { id: ServerId, settings: ServerSettings },
    Add { id: ServerId, settings: ServerSettings },
}

#[derive(Debug)]
pub enum FrontendStep {
    Add { id: FrontendId, settings: FrontendSettings },
    Change { id: FrontendId, settings: FrontendSettings },
    Remove { id: FrontendId, name: String },
}

#[derive(Debug, Default)]
pub struct ListenerPlan {
    /// Open listeners that stay, with the frontend they serve from now on.
    pub keep: Vec<(ListenerId, FrontendId)>,
    pub close: Vec<(ListenerId, SocketAddr)>,
    /// New addresses, given ids in this order.
    pub open: Vec<NewListener>,
}

#[derive(Debug)]
pub struct NewListener {
    pub id: ListenerId,
    pub key: ListenerKey,
    pub frontend: FrontendId,
    pub frontend_name: String,
    pub backlog: u32,
}

/// Decides every step of going from `running` to `new`.
pub fn plan(running: &Running<'_>, new: Settings) -> Plan {
    let first = running.is_empty();
    let restart_needed = if first { Vec::new() } else { rules::restart_needed(running.settings, &new) };
    let settings = if first { new } else { rules::applicable(running.settings, new) };
    let frontends = plan_frontends(running, &settings);
    let ids = frontend_ids(running, &frontends);
    let hooks = if first { Vec::new() } else { hook_changes(running.settings, &settings) };
    Plan {
        hooks,
        backends: plan_backends(running, &settings),
        listeners: plan_listeners(running, &settings, &ids),
        frontends,
        settings,
        first,
        restart_needed,
    }
}

fn plan_backends(running: &Running<'_>, new: &Settings) -> Vec<BackendStep> {
    let mut next = running.backends.len();
    let mut steps = Vec::new();
    // By name, once: hundreds of backends are planned in linear time.
    let live: HashMap<&str, (BackendId, &RunningBackend<'_>)> = running
        .backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.as_ref().map(|b| (b.settings.name.as_str(), (BackendId(i), b))))
        .collect();
    let wanted: HashSet<&str> = new.backends.iter().map(|b| b.name.as_str()).collect();
    for b in &new.backends {
        match live.get(b.name.as_str()).copied() {
            Some((id, old)) => steps.push(BackendStep::Update(plan_backend_update(id, old, b))),
            None => {
                steps.push(BackendStep::Add { id: BackendId(next), settings: b.clone() });
                next += 1;
            }
        }
    }
    for (i, b) in running.backends.iter().enumerate() {
        let Some(b) = b else { continue };
        if !wanted.contains(b.settings.name.as_str()) {
            steps.push(BackendStep::Remove { id: BackendId(i), name: b.settings.name.clone() });
        }
    }
    steps
}

fn plan_backend_update(id: BackendId, old: &RunningBackend<'_>, new: &BackendSettings) -> BackendUpdate {
    let mut retire = Vec::new();
    let mut kept: HashMap<&str, ServerId> = HashMap::with_capacity(old.servers.len());
    // By name, once: a backend of thousands of servers (a fleet behind one
    // name) is planned in linear time, not by a scan per old server.
    let wanted: HashMap<&str, &ServerSettings> = new.servers.iter().map(|s| (s.name.as_str(), s)).collect();
    for (i, server) in old.servers.iter().enumerate() {
        let Some(server) = server else { continue };
        let plan = wanted.get(server.name.as_str()).map(|s| rules::server_plan(server, s));
        match plan {
            None | Some(ServerPlan::Replace) => {
                retire.push(RetiredServer { id: ServerId(i), name: server.name.clone(), replaced: plan.is_some() })
            }
            Some(ServerPlan::Keep | ServerPlan::Update) => {
                kept.insert(&server.name, ServerId(i));
            }
        }
    }
    let mut next = old.servers.len();
    let mut servers = Vec::new();
    for s in &new.servers {
        match kept.get(s.name.as_str()) {
            Some(&id) if old.servers[id.0] == Some(s) => {}
            Some(&id) => servers.push(ServerStep::Update { id, settings: s.clone() }),
            None => {
                servers.push(ServerStep::Add { id: ServerId(next), settings: s.clone() });
                next += 1;
            }
        }
    }
    let settings_changed = !same_backend_settings(old.settings, new);
    let order_changed = old.settings.servers.iter().map(|s| &s.name).ne(new.servers.iter().map(|s| &s.name));
    let reconfigure = settings_changed || order_changed || !retire.is_empty() || !servers.is_empty();
    BackendUpdate { id, settings: new.clone(), retire, servers, settings_changed, reconfigure }
}

/// Backend settings other than its servers. Compared field by field, not
/// by cloning both without their servers: a clone copies every server
/// first (twice 10 000 of them for one big backend, on the plan's thread
/// while the sessions need the cores). Destructured whole, so that a field
/// added to `BackendSettings` cannot be left out of the comparison.
fn same_backend_settings(a: &BackendSettings, b: &BackendSettings) -> bool {
    let BackendSettings {
        name,
        balance,
        maxqueue,
        retries,
        redispatch,
        draws,
        hash_balance_factor,
        fullconn,
        maxconn,
        queue,
        timeout,
        servers: _,
        dns,
        spawn,
    } = a;
    *name == b.name
        && *balance == b.balance
        && *maxqueue == b.maxqueue
        && *retries == b.retries
        && *redispatch == b.redispatch
        && *draws == b.draws
        && *hash_balance_factor == b.hash_balance_factor
        && *fullconn == b.fullconn
        && *maxconn == b.maxconn
        && *queue == b.queue
        && *timeout == b.timeout
        && *dns == b.dns
        && *spawn == b.spawn
}

fn plan_frontends(running: &Running<'_>, new: &Settings) -> Vec<FrontendStep> {
    let mut next = running.frontends.len();
    let mut steps = Vec::new();
    for f in &new.frontends {
        match running.live_frontend(&f.name) {
            Some((_, old)) if old == f => {}
            Some((id, _)) => steps.push(FrontendStep::Change { id, settings: f.clone() }),
            None => {
                steps.push(FrontendStep::Add { id: FrontendId(next), settings: f.clone() });
                next += 1;
            }
        }
    }
    for (i, f) in running.frontends.iter().enumerate() {
        let Some(f) = f else { continue };
        if new.frontend(&f.name).is_none() {
            steps.push(FrontendStep::Remove { id: FrontendId(i), name: f.name.clone() });
        }
    }
    steps
}

/// The id every frontend of the new settings runs under.
fn frontend_ids(running: &Running<'_>, steps: &[FrontendStep]) -> HashMap<String, FrontendId> {
    let mut ids: HashMap<String, FrontendId> = running
        .frontends
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|f| (f.name.clone(), FrontendId(i))))
        .collect();
    for step in steps {
        match step {
            FrontendStep::Add { id, settings } => ids.insert(settings.name.clone(), *id),
            FrontendStep::Remove { name, .. } => ids.remove(name),
            FrontendStep::Change { .. } => None,
        };
    }
    ids
}

fn plan_listeners(running: &Running<'_>, new: &Settings, ids: &HashMap<String, FrontendId>) -> ListenerPlan {
    let wanted = listener_keys(new);
    let mut plan = ListenerPlan::default();
    for (i, slot) in running.listeners.iter().enumerate() {
        let Some((key, address)) = slot else { continue };
        match wanted.iter().find(|(k, _, _)| k == key) {
            Some((_, f, _)) => plan.keep.push((ListenerId(i), ids[f.as_str()])),
            None => plan.close.push((ListenerId(i), *address)),
        }
    }
    let mut next = running.listeners.len();
    for (key, f, backlog) in wanted {
        if running.listeners.iter().flatten().any(|(k, _)| *k == key) {
            continue;
        }
        plan.open.push(NewListener { id: ListenerId(next), key, frontend: ids[f.as_str()], frontend_name: f, backlog });
        next += 1;
    }
    plan
}

/// Every configured listening address: its key, frontend and backlog.
fn listener_keys(settings: &Settings) -> Vec<(ListenerKey, String, u32)> {
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut keys = Vec::new();
    for f in &settings.frontends {
        for addr in &f.bind {
            let n = seen.entry(*addr).or_default();
            keys.push(((*addr, *n), f.name.clone(), f.backlog));
            *n += 1;
        }
    }
    keys
}

impl Plan {
    /// The changes this plan makes, in order; `opened` holds the address
    /// each new listener got (a configured port 0 becomes a real port).
    /// The commit composes them the same way (`StagedCommit::new`), from
    /// parts it takes on two threads.
    #[cfg(test)]
    pub fn changes(&self, opened: &[SocketAddr]) -> Vec<ReloadChange> {
        if self.first {
            return Vec::new();
        }
        let mut changes = self.changes_before_listeners();
        changes.extend(self.listener_changes(opened));
        changes.extend(self.hooks.iter().cloned());
        changes
    }

    /// The backends' and frontends' changes, which come first; they need
    /// no bound address, so a reload decides them off the actor thread.
    pub fn changes_before_listeners(&self) -> Vec<ReloadChange> {
        if self.first {
            return Vec::new();
        }
        let mut changes = Vec::new();
        for step in &self.backends {
            backend_changes(step, &mut changes);
        }
        for step in &self.frontends {
            changes.push(match step {
                FrontendStep::Add { settings, .. } => ReloadChange::FrontendAdded { frontend: settings.name.clone() },
                FrontendStep::Change { settings, .. } => {
                    ReloadChange::FrontendChanged { frontend: settings.name.clone() }
                }
                FrontendStep::Remove { name, .. } => ReloadChange::FrontendRemoved { frontend: name.clone() },
            });
        }
        changes
    }

    /// Listeners opened (at the address each got: a configured port 0
    /// becomes a real port) and closed.
    pub fn listener_changes(&self, opened: &[SocketAddr]) -> Vec<ReloadChange> {
        if self.first {
            return Vec::new();
        }
        let added = self.listeners.open.iter().zip(opened);
        let added = added.map(|(new, address)| ReloadChange::ListenerAdded { frontend: new.frontend_name.clone(), address: *address });
        let removed = self.listeners.close.iter().map(|(_, address)| ReloadChange::ListenerRemoved { address: *address });
        added.chain(removed).collect()
    }
}

/// Hook option tables added, changed or removed, by name.
fn hook_changes(old: &Settings, new: &Settings) -> Vec<ReloadChange> {
    let mut changes = Vec::new();
    for (name, settings) in &new.hooks {
        match old.hooks.get(name) {
            None => changes.push(ReloadChange::HookAdded { hook: name.clone() }),
            Some(before) if before != settings => changes.push(ReloadChange::HookChanged { hook: name.clone() }),
            Some(_) => {}
        }
    }
    let removed = old.hooks.keys().filter(|name| !new.hooks.contains_key(*name));
    changes.extend(removed.map(|name| ReloadChange::HookRemoved { hook: name.clone() }));
    changes
}

fn backend_changes(step: &BackendStep, changes: &mut Vec<ReloadChange>) {
    let update = match step {
        BackendStep::Add { settings, .. } => {
            return changes.push(ReloadChange::BackendAdded { backend: settings.name.clone() });
        }
        BackendStep::Remove { name, .. } => return changes.push(ReloadChange::BackendRemoved { backend: name.clone() }),
        BackendStep::Update(update) => update,
    };
    let backend = &update.settings.name;
    for retired in update.retire.iter().filter(|r| !r.replaced) {
        changes.push(ReloadChange::ServerRemoved { backend: backend.clone(), server: retired.name.clone() });
    }
    for step in &update.servers {
        changes.push(match step {
            ServerStep::Update { settings, .. } => {
                ReloadChange::ServerChanged { backend: backend.clone(), server: settings.name.clone() }
            }
            ServerStep::Add { settings, .. } => {
                ReloadChange::ServerAdded { backend: backend.clone(), server: settings.name.clone() }
            }
        });
    }
    if update.settings_changed {
        changes.push(ReloadChange::BackendChanged { backend: backend.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        crate::config::from_toml_str(toml).expect("valid")
    }

    const BASE: &str = "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
                        [backends.app.servers.s1]\naddress = \"127.0.0.1:1\"\nmaxconn = 4\n";

    /// What runs after `settings` started: every id live, listeners open
    /// on their configured addresses.
    fn running(settings: &Settings) -> Running<'_> {
        Running {
            settings,
            frontends: settings.frontends.iter().map(Some).collect(),
            backends: settings
                .backends
                .iter()
                .map(|b| Some(RunningBackend { settings: b, servers: b.servers.iter().map(Some).collect() }))
                .collect(),
            listeners: listener_keys(settings).into_iter().map(|(key, _, _)| Some((key, key.0))).collect(),
        }
    }

    fn empty(settings: &Settings) -> Running<'_> {
        Running { settings, frontends: Vec::new(), backends: Vec::new(), listeners: Vec::new() }
    }

    #[test]
    fn the_first_start_adds_everything_and_reports_nothing() {
        let base = settings(BASE);
        let plan = plan(&empty(&base), base.clone());
        assert!(plan.first);
        assert!(matches!(plan.backends[..], [BackendStep::Add { id: BackendId(0), .. }]));
        assert!(matches!(plan.frontends[..], [FrontendStep::Add { id: FrontendId(0), .. }]));
        assert_eq!(plan.listeners.open.len(), 1);
        assert_eq!(plan.listeners.open[0].id, ListenerId(0));
        assert_eq!(plan.changes(&["127.0.0.1:80".parse().unwrap()]), Vec::new());
    }

    #[test]
    fn a_server_a_backend_change_and_a_listener_are_planned_in_order() {
        let base = settings(BASE);
        let new = settings(&format!(
            "{BASE}[backends.app]\nmaxqueue = 9\n[backends.app.servers.s2]\naddress = \"127.0.0.1:2\"\n\
             [frontends.extra]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n"
        ));
        let plan = plan(&running(&base), new);
        let BackendStep::Update(update) = &plan.backends[0] else { panic!("{:?}", plan.backends) };
        assert!(update.retire.is_empty() && update.settings_changed && update.reconfigure);
        assert!(matches!(update.servers[..], [ServerStep::Add { id: ServerId(1), .. }]));
        // Same configured address as web's: the second occurrence is a new key.
        assert_eq!(plan.listeners.keep, vec![(ListenerId(0), FrontendId(0))]);
        assert_eq!(plan.listeners.open[0].key.1, 1);
        assert_eq!((plan.listeners.open[0].id, plan.listeners.open[0].frontend), (ListenerId(1), FrontendId(1)));
        let opened: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(
            plan.changes(&[opened]),
            vec![
                ReloadChange::ServerAdded { backend: "app".into(), server: "s2".into() },
                ReloadChange::BackendChanged { backend: "app".into() },
                ReloadChange::FrontendAdded { frontend: "extra".into() },
                ReloadChange::ListenerAdded { frontend: "extra".into(), address: opened },
            ]
        );
    }

    #[test]
    fn moved_servers_are_replaced_and_removed_ones_keep_their_ids() {
        let base = settings(&format!("{BASE}[backends.app.servers.s2]\naddress = \"127.0.0.1:2\"\n"));
        let new = settings(&BASE.replace("127.0.0.1:1", "127.0.0.1:3"));
        let plan = plan(&running(&base), new);
        let BackendStep::Update(update) = &plan.backends[0] else { panic!("{:?}", plan.backends) };
        let retired: Vec<_> = update.retire.iter().map(|r| (r.id, r.name.as_str(), r.replaced)).collect();
        assert_eq!(retired, vec![(ServerId(0), "s1", true), (ServerId(1), "s2", false)]);
        assert!(matches!(update.servers[..], [ServerStep::Add { id: ServerId(2), .. }]));
        assert_eq!(
            plan.changes(&[]),
            vec![
                ReloadChange::ServerRemoved { backend: "app".into(), server: "s2".into() },
                ReloadChange::ServerAdded { backend: "app".into(), server: "s1".into() },
            ]
        );
    }

    #[test]
    fn an_unchanged_configuration_plans_nothing_but_keeping() {
        let base = settings(BASE);
        let plan = plan(&running(&base), base.clone());
        let BackendStep::Update(update) = &plan.backends[0] else { panic!("{:?}", plan.backends) };
        assert!(!update.reconfigure && update.servers.is_empty() && update.retire.is_empty());
        assert!(plan.frontends.is_empty() && plan.listeners.open.is_empty() && plan.listeners.close.is_empty());
        assert_eq!(plan.changes(&[]), Vec::new());
    }

    #[test]
    fn a_removed_frontend_closes_its_listeners_and_ids_stay() {
        let two = settings(&format!("{BASE}[frontends.extra]\nbind = [\"127.0.0.1:7\"]\nbackend = \"app\"\n"));
        let new = settings(&BASE.replace("[frontends.web]", "[frontends.other]"));
        let plan = plan(&running(&two), new);
        assert!(matches!(
            plan.frontends[..],
            [FrontendStep::Add { id: FrontendId(2), .. }, FrontendStep::Remove { id: FrontendId(0), .. }, FrontendStep::Remove {
                id: FrontendId(1),
                ..
            }]
        ));
        // web's address is wanted again (by `other`): the listener stays.
        assert_eq!(plan.listeners.keep, vec![(ListenerId(0), FrontendId(2))]);
        assert_eq!(plan.listeners.close, vec![(ListenerId(1), "127.0.0.1:7".parse().unwrap())]);
        assert!(plan.listeners.open.is_empty());
    }
}
