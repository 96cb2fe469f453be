//! The last known answer of every name, the stable slot of every address,
//! and the expansion of the declared settings into the settings in force.
//! A plain struct on an injected clock; the Topology owns it.
//!
//! - A source's servers are its answer's addresses, each in a *slot*; the
//!   slot gives the server its name (`web1` is slot 0 of template `web`).
//!   An address keeps its slot for as long as answers hold it, so the same
//!   address is the same server across re-resolutions: a re-resolution that
//!   changes nothing plans nothing, and run-time changes (drain, weight)
//!   and stats stay with it. A new address takes the lowest free slot;
//!   addresses beyond `count_max` wait for a slot to free.
//! - A failed resolution (timeout, SERVFAIL, garbage, no records) keeps the
//!   last answer that worked: the servers stay. Its warning is throttled to
//!   one per [`WARN_EVERY`] per name.
//! - A name that never resolved makes no server: nothing could be connected
//!   to. `/stats` shows it DOWN, `down_reason` `unresolved`.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use super::answer::{Answer, QueryKey, Target};
use crate::config::{DnsForm, DnsOrigin, DnsSource, Settings};

/// Shortest time between two warnings about one name that keeps failing.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// What is known of one name.
#[derive(Debug, Default)]
struct QueryState {
    /// The last answer that worked.
    last: Option<Answer>,
    /// Why the last resolution failed; `None` once one works.
    error: Option<String>,
    last_warned: Option<Instant>,
}

/// A slot's identity: an address and, with SRV, its port. The weight may
/// change under it.
type SlotKey = (IpAddr, Option<u16>);

#[derive(Debug)]
struct SourceSlots {
    /// The name the slots were filled from: another name starts afresh.
    key: QueryKey,
    slots: Vec<Option<Target>>,
}

/// How a source's name stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// Its last resolution worked.
    Resolved,
    /// Its last resolution failed: the servers of the last one that worked stay.
    Stale { error: String },
    /// It never resolved: no server (`error` is `None` before the first try).
    Unresolved { error: Option<String> },
}

impl SourceState {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceState::Resolved => "resolved",
            SourceState::Stale { .. } => "stale",
            SourceState::Unresolved { .. } => "unresolved",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            SourceState::Resolved | SourceState::Unresolved { error: None } => None,
            SourceState::Stale { error } | SourceState::Unresolved { error: Some(error) } => Some(error),
        }
    }
}

/// One source of one backend, for `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReport {
    pub backend: String,
    /// The server's name, or the template's.
    pub source: String,
    pub template: bool,
    pub query: String,
    /// The configured port (0 with SRV).
    pub port: u16,
    pub state: SourceState,
}

/// What [`Resolutions::record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The answer's targets differ from the last known ones: the servers change.
    pub changed: bool,
    /// A failure to log now (the first, or the first after [`WARN_EVERY`]).
    pub warn: bool,
}

/// The settings in force made from declared ones.
#[derive(Debug)]
pub struct Expanded {
    pub settings: Settings,
}

#[derive(Debug, Default)]
pub struct Resolutions {
    answers: HashMap<QueryKey, QueryState>,
    /// By backend and source name.
    slots: HashMap<(String, String), SourceSlots>,
}

impl Resolutions {
    pub fn new() -> Resolutions {
        Resolutions::default()
    }

    /// Records the outcome of one resolution of `key`.
    pub fn record(&mut self, key: &QueryKey, outcome: Result<Answer, String>, now: Instant) -> Recorded {
        let state = self.answers.entry(key.clone()).or_default();
        match outcome {
            Ok(answer) => {
                let changed = state.last.as_ref().is_none_or(|last| last.targets != answer.targets);
                state.last = Some(answer);
                state.error = None;
                // The next failure is news again.
                state.last_warned = None;
                Recorded { changed, warn: false }
            }
            Err(error) => {
                state.error = Some(error);
                let warn = state.last_warned.is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY);
                if warn {
                    state.last_warned = Some(now);
                }
                Recorded { changed: false, warn }
            }
        }
    }

    /// The servers the last known answers give `declared`: each backend's
    /// configured servers, then one per filled slot of each source, in
    /// declaration and slot order. Slots are assigned here, so the same
    /// address keeps its name; answers no source asks for any more are
    /// forgotten.
    pub fn expand(&mut self, declared: &Settings) -> Expanded {
        let mut settings = declared.clone();
        let mut in_use = BTreeSet::new();
        let mut sources = BTreeSet::new();
        for backend in &mut settings.backends {
            if backend.dns.is_empty() {
                // Nothing to expand: no copy of its server names either.
                continue;
            }
            let mut taken: BTreeSet<String> = backend.servers.iter().map(|s| s.name.clone()).collect();
            for source in &backend.dns {
                let key = QueryKey::of(source);
                in_use.insert(key.clone());
                let id = (backend.name.clone(), source.name.clone());
                sources.insert(id.clone());
                let Some(answer) = self.answers.get(&key).and_then(|q| q.last.as_ref()) else {
                    continue;
                };
                let slots = self.slots.entry(id).or_insert_with(|| SourceSlots { key: key.clone(), slots: Vec::new() });
                if slots.key != key {
                    *slots = SourceSlots { key: key.clone(), slots: Vec::new() };
                }
                assign(&mut slots.slots, &answer.targets, source.count_max() as usize);
                for (slot, target) in slots.slots.iter().enumerate() {
                    let Some(target) = target else { continue };
                    let server = server_of(source, slot, target);
                    // One name, one server: a name taken since (a server
                    // added at run time) keeps its server.
                    if taken.insert(server.name.clone()) {
                        backend.servers.push(server);
                    }
                }
            }
        }
        self.answers.retain(|key, _| in_use.contains(key));
        self.slots.retain(|id, _| sources.contains(id));
        Expanded { settings }
    }

    /// The state of every source of `declared`, backend by backend.
    pub fn report(&self, declared: &Settings) -> Vec<SourceReport> {
        let mut out = Vec::new();
        for backend in &declared.backends {
            for source in &backend.dns {
                let known = self.answers.get(&QueryKey::of(source));
                let state = match known {
                    Some(QueryState { last: Some(_), error: None, .. }) => SourceState::Resolved,
                    Some(QueryState { last: Some(_), error: Some(error), .. }) => {
                        SourceState::Stale { error: error.clone() }
                    }
                    Some(QueryState { last: None, error, .. }) => SourceState::Unresolved { error: error.clone() },
                    None => SourceState::Unresolved { error: None },
                };
                out.push(SourceReport {
                    backend: backend.name.clone(),
                    source: source.name.clone(),
                    template: matches!(source.form, DnsForm::Template { .. }),
                    query: source.query.clone(),
                    port: source.port,
                    state,
                });
            }
        }
        out
    }
}

/// Every name `declared` asks for, each once.
pub fn queries(declared: &Settings) -> Vec<QueryKey> {
    let keys: BTreeSet<QueryKey> = declared.backends.iter().flat_map(|b| b.dns.iter().map(QueryKey::of)).collect();
    keys.into_iter().collect()
}

/// Fills `slots` (at most `count_max`) from `targets`: a target already in
/// a slot stays there (its weight updated), a slot whose target is gone
/// frees, and new targets take the lowest free slots in sorted order.
fn assign(slots: &mut Vec<Option<Target>>, targets: &[Target], count_max: usize) {
    let identity = |t: &Target| -> SlotKey { (t.ip, t.port) };
    slots.resize(count_max, None);
    let current: HashMap<SlotKey, &Target> = targets.iter().map(|t| (identity(t), t)).collect();
    let mut placed = BTreeSet::new();
    for slot in slots.iter_mut() {
        *slot = slot.and_then(|old| current.get(&identity(&old)).map(|t| **t));
        if let Some(t) = slot {
            placed.insert(identity(t));
        }
    }
    let mut free = (0..slots.len()).filter(|i| slots[*i].is_none()).collect::<Vec<_>>().into_iter();
    for target in targets.iter().filter(|t| !placed.contains(&identity(t))) {
        let Some(i) = free.next() else { break };
        slots[i] = Some(*target);
    }
}

fn server_of(source: &DnsSource, slot: usize, target: &Target) -> crate::config::ServerSettings {
    let mut server = source.server.clone();
    server.name = source.server_name(slot);
    server.address = SocketAddr::new(target.ip, target.port.unwrap_or(source.port));
    if let Some(weight) = target.weight {
        server.weight = Target::server_weight(weight);
    }
    let template = matches!(source.form, DnsForm::Template { .. }).then(|| source.name.clone());
    server.dns = Some(DnsOrigin { query: source.query.clone(), template });
    server
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecordKind;

    fn settings() -> Settings {
        crate::config::from_toml_str(
            "[backends.app.servers.s0]\naddress = \"127.0.0.1:1\"\n\
             [backends.app.servers.db]\naddress = \"db.test:5432\"\n\
             [backends.app.server_templates.web]\nquery = \"web.test\"\nkind = \"a\"\nport = 80\ncount_max = 2\n",
        )
        .expect("valid")
    }

    fn a(ips: &[&str]) -> Answer {
        Answer::new(
            ips.iter().map(|ip| Target { ip: ip.parse().unwrap(), port: None, weight: None }).collect(),
            Duration::from_secs(30),
        )
    }

    fn servers(expanded: &Expanded) -> Vec<(String, String)> {
        expanded.settings.backends[0].servers.iter().map(|s| (s.name.clone(), s.address.to_string())).collect()
    }

    fn key(query: &str) -> QueryKey {
        QueryKey { query: query.into(), kind: RecordKind::A }
    }

    #[test]
    fn addresses_keep_their_names_across_answers() {
        let declared = settings();
        let mut r = Resolutions::new();
        let now = Instant::now();
        assert_eq!(servers(&r.expand(&declared)), vec![("s0".into(), "127.0.0.1:1".into())]);
        assert!(r.record(&key("web.test"), Ok(a(&["10.0.0.2", "10.0.0.1"])), now).changed);
        let two = servers(&r.expand(&declared));
        assert_eq!(&two[1..], &[("web1".into(), "10.0.0.1:80".into()), ("web2".into(), "10.0.0.2:80".into())]);
        // 10.0.0.1 goes, 10.0.0.3 comes: 10.0.0.2 stays web2, the newcomer takes web1.
        r.record(&key("web.test"), Ok(a(&["10.0.0.3", "10.0.0.2"])), now);
        let next = servers(&r.expand(&declared));
        assert_eq!(&next[1..], &[("web1".into(), "10.0.0.3:80".into()), ("web2".into(), "10.0.0.2:80".into())]);
        // More addresses than count_max: the extra waits for a free slot.
        r.record(&key("web.test"), Ok(a(&["10.0.0.3", "10.0.0.2", "10.0.0.0"])), now);
        assert_eq!(servers(&r.expand(&declared)), next);
        assert!(!r.record(&key("web.test"), Ok(a(&["10.0.0.3", "10.0.0.2", "10.0.0.0"])), now).changed);
    }

    #[test]
    fn a_failure_keeps_the_last_servers_and_warns_once_a_minute() {
        let declared = settings();
        let mut r = Resolutions::new();
        let now = Instant::now();
        r.record(&key("db.test"), Ok(a(&["10.0.1.1", "10.0.1.2"])), now);
        let before = servers(&r.expand(&declared));
        assert_eq!(before[1], ("db".into(), "10.0.1.1:5432".into()));
        assert_eq!(r.record(&key("db.test"), Err("timed out".into()), now), Recorded { changed: false, warn: true });
        assert!(!r.record(&key("db.test"), Err("timed out".into()), now + Duration::from_secs(59)).warn);
        assert!(r.record(&key("db.test"), Err("timed out".into()), now + WARN_EVERY).warn);
        assert_eq!(servers(&r.expand(&declared)), before);
        let report = r.report(&declared);
        assert_eq!(report[0].state, SourceState::Stale { error: "timed out".into() });
        assert_eq!(report[1].state, SourceState::Unresolved { error: None });
        // The named server keeps its address while the answer still holds it.
        r.record(&key("db.test"), Ok(a(&["10.0.1.0", "10.0.1.1"])), now);
        assert_eq!(servers(&r.expand(&declared))[1], ("db".into(), "10.0.1.1:5432".into()));
        assert_eq!(r.report(&declared)[0].state, SourceState::Resolved);
    }

    #[test]
    fn srv_records_give_port_and_weight_and_names_nobody_asks_for_are_forgotten() {
        let declared = crate::config::from_toml_str(
            "[backends.app.server_templates.api]\nquery = \"_api._tcp.test\"\nkind = \"srv\"\ncount_max = 3\n",
        )
        .expect("valid");
        let mut r = Resolutions::new();
        let srv = QueryKey { query: "_api._tcp.test".into(), kind: RecordKind::Srv };
        let target = |ip: &str, port, weight| Target { ip: ip.parse().unwrap(), port: Some(port), weight: Some(weight) };
        let answer = Answer::new(vec![target("10.0.0.1", 8001, 0), target("10.0.0.1", 8002, 65535)], Duration::ZERO);
        r.record(&srv, Ok(answer), Instant::now());
        let expanded = r.expand(&declared);
        let got: Vec<_> = expanded.settings.backends[0].servers.iter().map(|s| (s.address.port(), s.weight)).collect();
        assert_eq!(got, vec![(8001, 1), (8002, 256)]);
        assert_eq!(queries(&declared), vec![srv.clone()]);
        r.expand(&settings());
        assert!(r.report(&declared).iter().all(|s| s.state == SourceState::Unresolved { error: None }));
    }
}
