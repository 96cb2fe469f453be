//! The typed configuration the broker runs on. Every field is documented in
//! `configs/default.toml`, which holds its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::extension_section::HookSettings;

pub use crate::routing::{NoClientHello, RouteRule};

/// Things configured as tables keyed by name (`[backends.app]`).
trait Named {
    fn name(&self) -> &str;
}

/// Renders a list of named things as the input shape, `[kind.NAME]`, in
/// declaration order, so `usher check` output can be read back.
fn by_name<T: Named + Serialize, S: Serializer>(items: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(items.iter().map(|item| (item.name(), item)))
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}
named!(FrontendSettings, BackendSettings, ServerSettings);

/// The configuration writes "no limit" and "no timeout" as 0; the settings
/// hold `None` instead. This is the way back to the written form, for
/// `usher check` output and for the run-time structs that still take the
/// configuration's 0 (admission and backend setups, the admin API).
pub trait ZeroForNone {
    type Written;
    fn or_zero(self) -> Self::Written;
}

impl ZeroForNone for Option<NonZeroU32> {
    type Written = u32;
    fn or_zero(self) -> u32 {
        self.map_or(0, NonZeroU32::get)
    }
}

impl ZeroForNone for Option<Duration> {
    type Written = Duration;
    fn or_zero(self) -> Duration {
        self.unwrap_or(Duration::ZERO)
    }
}

/// A bound that may be absent, printed as written: 0 for none.
fn limit_or_zero<S: Serializer>(limit: &Option<NonZeroU32>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u32(limit.or_zero())
}

/// A duration that may be absent, printed as written: `0s` for none.
fn duration_or_zero<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    humantime_serde::serialize(&duration.or_zero(), serializer)
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub global: GlobalSettings,
    pub watchdog: WatchdogSettings,
    pub log: LogSettings,
    pub admin: AdminSettings,
    /// Frontends in declaration order.
    #[serde(serialize_with = "by_name")]
    pub frontends: Vec<FrontendSettings>,
    /// Backends in declaration order.
    #[serde(serialize_with = "backends_by_name")]
    pub backends: Vec<BackendSettings>,
    /// Free-form tables of extension actors, `[actors.NAME]`.
    pub actors: toml::Table,
    /// `[hooks.NAME]` of every hook a frontend names, checked by the hook.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, HookSettings>,
    /// Cluster mode; `None` (`cluster.etcd = []`) runs alone.
    #[serde(serialize_with = "cluster_or_off")]
    pub cluster: Option<ClusterSettings>,
    /// How host names of servers are resolved (`[resolvers]`).
    pub resolvers: super::ResolverSettings,
    /// `[defaults.backend]` and `[defaults.server]` as merged from every
    /// layer: what a backend or server added at run time starts from.
    pub defaults: DefaultTables,
}

/// The defaults tables as written (every built-in key, with the layers'
/// changes), so `usher check` output reads back the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DefaultTables {
    pub backend: toml::Table,
    pub server: toml::Table,
}

/// `[cluster]`: share every limited server's maxconn with other usher
/// instances through etcd.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterSettings {
    /// etcd endpoints, `http://HOST:PORT`.
    pub etcd: Vec<String>,
    /// This instance's name, unique in the cluster.
    pub name: String,
    /// Key prefix in etcd; instances with the same prefix share servers.
    pub prefix: String,
    /// The instance's etcd lease: how long after its last keep-alive the
    /// others take its slots.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often demand is published and shares are recomputed.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Instances the operator runs (0 = not said).
    pub expected_instances: u32,
    pub fallback: ClusterFallback,
}

/// What an instance cut off from etcd keeps once its lease may have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterFallback {
    /// maxconn ÷ `expected_instances` (nothing when that is 0).
    Even,
    /// Nothing.
    None,
}

/// Cluster mode off is written `etcd = []`, so `usher check` output reads back.
fn cluster_or_off<S: Serializer>(cluster: &Option<ClusterSettings>, serializer: S) -> Result<S::Ok, S::Error> {
    match cluster {
        Some(cluster) => cluster.serialize(serializer),
        None => {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(1))?;
            map.serialize_entry("etcd", &Vec::<String>::new())?;
            map.end()
        }
    }
}

impl Settings {
    pub fn backend(&self, name: &str) -> Option<&BackendSettings> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn frontend(&self, name: &str) -> Option<&FrontendSettings> {
        self.frontends.iter().find(|f| f.name == name)
    }

    /// The effective configuration as TOML (what `usher check` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|err| format!("# cannot render settings: {err}\n"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalSettings {
    /// Concurrent client sessions in the process. `None` (written 0) is not
    /// "unlimited" but "what the fd limit allows", which the fd budget
    /// resolves at start.
    #[serde(serialize_with = "limit_or_zero")]
    pub maxconn: Option<NonZeroU32>,
    /// New sessions per second in the process (`None` = unlimited, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub maxconnrate: Option<NonZeroU32>,
    /// Data-plane threads; `None` (written 0) = one per core: read it
    /// through [`GlobalSettings::worker_threads`].
    #[serde(serialize_with = "limit_or_zero")]
    pub workers: Option<NonZeroU32>,
    /// Time live sessions get to finish after a stop signal.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// After the grace, the rest close spread over this (`None` = all at once, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub close_spread: Option<Duration>,
    /// Relay buffer per direction and session, in bytes.
    pub bufsize: u32,
    /// Most a streaming direction's buffer grows to (below `bufsize` = no growth).
    pub bufsize_max: u32,
    /// Accepts in a row per listener wake-up.
    pub maxaccept: u32,
}

impl CheckSettings {
    /// Interval while changing state: `fastinter`, else `inter`.
    pub fn fastinter_or_inter(&self) -> Duration {
        self.fastinter.unwrap_or(self.inter)
    }

    /// Interval while down: `downinter`, else `inter`.
    pub fn downinter_or_inter(&self) -> Duration {
        self.downinter.unwrap_or(self.inter)
    }

    /// Limit for one check: `timeout`, else `inter`.
    pub fn timeout_or_inter(&self) -> Duration {
        self.timeout.unwrap_or(self.inter)
    }
}

impl GlobalSettings {
    /// `workers`, with "one per core" resolved to the number of cores.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            Some(n) => n.get() as usize,
        }
    }

    /// The most a relay buffer grows to: `bufsize_max`, never below
    /// `bufsize` (so 0 or a smaller value means no growth).
    pub fn relay_buffer_max(&self) -> usize {
        self.bufsize_max.max(self.bufsize) as usize
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchdogSettings {
    #[serde(with = "humantime_serde")]
    pub maxconn_recheck: Duration,
    #[serde(with = "humantime_serde")]
    pub shortage_recheck: Duration,
    #[serde(with = "humantime_serde")]
    pub warn_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Term,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Critical,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Every spelling `log.level` accepts. Operators bring the words of the
    /// tools they know (`warn` from env_logger and nginx, `crit` and `err`
    /// from syslog), so each level takes its common short form too.
    const SPELLINGS: &'static [(&'static str, LogLevel)] = &[
        ("critical", LogLevel::Critical),
        ("crit", LogLevel::Critical),
        ("error", LogLevel::Error),
        ("err", LogLevel::Error),
        ("warning", LogLevel::Warning),
        ("warn", LogLevel::Warning),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];

    /// The level a configured word names, in any case (`"WARN"`, `"Info"`).
    pub fn from_spelling(word: &str) -> Option<LogLevel> {
        let word = word.trim();
        Self::SPELLINGS.iter().find(|(name, _)| name.eq_ignore_ascii_case(word)).map(|(_, level)| *level)
    }
}

/// What happens when records come faster than stderr takes them and the
/// log buffer is full (`log.overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogOverflow {
    /// Drop the record and report how many were dropped (HAProxy's way):
    /// relays never wait for the log.
    Drop,
    /// Wait for room: no access record is ever lost, and a stalled stderr
    /// stalls the sessions that log.
    Block,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: LogLevel,
    pub overflow: LogOverflow,
}

/// The admin HTTP API (`[admin]`).
#[derive(Clone, PartialEq, Serialize)]
pub struct AdminSettings {
    /// Listening address; `None` (`bind = ""`) disables the API.
    #[serde(serialize_with = "address_or_empty")]
    pub bind: Option<SocketAddr>,
    /// Bearer token every request must carry (empty = none; required when
    /// `bind` is not a loopback address).
    pub token: String,
    /// Open connections one client address may hold (an IPv6 client counts
    /// by its /64); more are closed at once. At most
    /// [`ADMIN_MAX_CONNECTIONS`].
    pub maxconn_per_client: NonZeroU32,
    pub timeout: AdminTimeouts,
}

/// The admin API's total of open connections (every client together); a
/// client's `admin.maxconn_per_client` fits in it, so one client address can
/// never hold them all.
pub const ADMIN_MAX_CONNECTIONS: u32 = 1024;

/// `[admin.timeout]`. Never zero: the admin API has no "no limit" here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminTimeouts {
    /// From a connection's opening to the last byte of its request (head
    /// and body); a request not in by then is answered 408 and closed.
    #[serde(with = "humantime_serde")]
    pub request: Duration,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in debug output.
        let token = if self.token.is_empty() { "" } else { "<set>" };
        f.debug_struct("AdminSettings")
            .field("bind", &self.bind)
            .field("token", &token)
            .field("maxconn_per_client", &self.maxconn_per_client)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `""` for a disabled address, so `usher check` output reads back the same.
fn address_or_empty<S: Serializer>(addr: &Option<SocketAddr>, serializer: S) -> Result<S::Ok, S::Error> {
    match addr {
        Some(addr) => serializer.collect_str(addr),
        None => serializer.serialize_str(""),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontendSettings {
    #[serde(skip)]
    pub name: String,
    /// Listening addresses.
    pub bind: Vec<SocketAddr>,
    /// Name of the backend that serves this frontend.
    pub backend: String,
    /// Concurrent sessions of this frontend (`None` = only the global limit, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub maxconn: Option<NonZeroU32>,
    /// listen() backlog.
    pub backlog: u32,
    /// Concurrent sessions per bind address (`None` = unlimited, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub bind_maxconn: Option<NonZeroU32>,
    /// New sessions per second (`None` = unlimited, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub rate_limit: Option<NonZeroU32>,
    /// Queue priority class of its sessions (-2047..=2047; lower first).
    pub priority_class: i32,
    /// Added to its sessions' arrival time in the queues, in ms (negative = earlier).
    pub priority_offset: i64,
    /// Clients start with a PROXY protocol header (v1 or v2) from an upstream balancer.
    pub accept_proxy: bool,
    /// Clients whose ClientHello cannot be read, when some rule needs it:
    /// routed without it, or refused.
    pub no_client_hello: NoClientHello,
    pub timeout: FrontendTimeouts,
    pub stress: StressSettings,
    /// Routing rules, first match wins; none matching: `backend`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteRule>,
    /// Registered session hooks its sessions run, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StressSettings {
    /// Time without a limit hit before stress ends (`None` = stress disabled, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub cooldown: Option<Duration>,
    pub timeout: StressTimeouts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StressTimeouts {
    /// `timeout.client` of sessions accepted in stress mode (`None` = none, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub client: Option<Duration>,
    /// `timeout.queue` of sessions accepted in stress mode (`None` = none, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub queue: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontendTimeouts {
    /// Client-side inactivity limit while relaying (`None` = none, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub client: Option<Duration>,
    /// Limit for reading the PROXY header with `accept_proxy`; always set
    /// (never "no limit"): a client sending its header holds a maxconn place.
    #[serde(with = "humantime_serde")]
    pub proxy: Duration,
    /// Limit for reading a ClientHello when routing rules need one; always
    /// set: a client still sending it holds a maxconn place.
    #[serde(with = "humantime_serde")]
    pub inspect: Duration,
}

/// `backends.NAME.balance`: the name of a registered balancing algorithm,
/// checked against the registry when the configuration is read. Built in
/// (`backend::balance`): `roundrobin` (weighted round robin by
/// virtual-time deadlines, following weight changes), `static-rr` (on the configured weights),
/// `leastconn` (fewest served + queued relative to weight), `first` (first
/// server in declaration order with a free slot), `source` (consistent hash
/// of the client address; pinned sessions queue on their server) and
/// `random` (power of `draws` random choices).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Balance(String);

impl Balance {
    pub fn new(name: &str) -> Balance {
        Balance(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSettings {
    #[serde(skip)]
    pub name: String,
    pub balance: Balance,
    /// Backend queue bound (`None` = unbounded, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub maxqueue: Option<NonZeroU32>,
    /// Further attempts after a failed connection.
    pub retries: u32,
    /// Retries go to another server when there is one.
    pub redispatch: bool,
    /// Random draws for `balance = "random"`.
    pub draws: u32,
    /// Bounded-load consistent hashing, percent of the average load, at least
    /// 100 (`None` = off, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub hash_balance_factor: Option<NonZeroU32>,
    /// Backend load at which servers with `minconn` reach `maxconn` (`None` = off, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub fullconn: Option<NonZeroU32>,
    /// Sessions its servers serve at once, together; more wait in the
    /// backend queue even when a server has a free slot (`None` = no
    /// bound, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub maxconn: Option<NonZeroU32>,
    /// Queue discipline, fair share and per-source caps.
    pub queue: super::QueueSettings,
    pub timeout: BackendTimeouts,
    /// Servers in declaration order; in the settings in force, the
    /// servers made from DNS follow (see `dns`). Written by `WrittenBackend`.
    #[serde(skip)]
    pub servers: Vec<ServerSettings>,
    /// Servers whose addresses come from DNS: servers configured by host
    /// name and `[backends.B.server_templates.T]`, in declaration order.
    /// Written back under `servers` and `server_templates`.
    #[serde(skip)]
    pub dns: Vec<super::DnsSource>,
    /// usher starts the servers' processes itself (`backends.X.spawn`);
    /// its servers are then the process slots `proc1`, `proc2`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn: Option<super::SpawnSettings>,
}

/// The backends as written, in declaration order, each with its servers
/// from DNS as declared (`usher check` output reads back).
fn backends_by_name<S: Serializer>(backends: &[BackendSettings], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(backends.len()))?;
    for backend in backends {
        map.serialize_entry(&backend.name, &WrittenBackend::of(backend))?;
    }
    map.end()
}

/// A backend's table as written: its keys, then `servers` (a server
/// configured by host name shows its `HOST:PORT`), then
/// `server_templates`.
#[derive(Serialize)]
struct WrittenBackend<'a> {
    #[serde(flatten)]
    keys: &'a BackendSettings,
    servers: WrittenServers<'a>,
    #[serde(skip_serializing_if = "WrittenTemplates::is_empty")]
    server_templates: WrittenTemplates<'a>,
}

impl WrittenBackend<'_> {
    fn of(b: &BackendSettings) -> WrittenBackend<'_> {
        WrittenBackend { keys: b, servers: WrittenServers(b), server_templates: WrittenTemplates(b) }
    }
}

struct WrittenServers<'a>(&'a BackendSettings);

impl Serialize for WrittenServers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let b = self.0;
        let mut map = serializer.serialize_map(None)?;
        // A spawned backend's servers are its process slots, made again
        // from its `spawn` table when the output is read back.
        let declared = if b.spawn.is_some() { &[][..] } else { &b.servers[..] };
        for server in declared {
            let address = match &server.dns {
                // A template's server: written as its template.
                Some(origin) if origin.template.is_some() => continue,
                Some(origin) => format!("{}:{}", origin.query, server.address.port()),
                None => server.address.to_string(),
            };
            map.serialize_entry(&server.name, &WrittenServer { address, server })?;
        }
        for source in &b.dns {
            // Settings in force already hold it, resolved.
            if source.form == super::DnsForm::Server && !b.servers.iter().any(|s| s.name == source.name) {
                let address = format!("{}:{}", source.query, source.port);
                map.serialize_entry(&source.name, &WrittenServer { address, server: &source.server })?;
            }
        }
        map.end()
    }
}

struct WrittenTemplates<'a>(&'a BackendSettings);

impl WrittenTemplates<'_> {
    fn is_empty(&self) -> bool {
        !self.0.dns.iter().any(|d| matches!(d.form, super::DnsForm::Template { .. }))
    }
}

impl Serialize for WrittenTemplates<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for source in &self.0.dns {
            if let super::DnsForm::Template { kind, count_max } = source.form {
                let template = WrittenTemplate {
                    query: &source.query,
                    kind,
                    port: source.port,
                    count_max,
                    server: &source.server,
                };
                map.serialize_entry(&source.name, &template)?;
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct WrittenServer<'a> {
    address: String,
    #[serde(flatten)]
    server: &'a ServerSettings,
}

#[derive(Serialize)]
struct WrittenTemplate<'a> {
    query: &'a str,
    kind: super::RecordKind,
    port: u16,
    count_max: u32,
    #[serde(flatten)]
    server: &'a ServerSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendTimeouts {
    /// Longest wait in a queue (`None` = unbounded, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub queue: Option<Duration>,
    /// Limit for one connection attempt (`None` = none, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub connect: Option<Duration>,
    /// Server-side inactivity limit while relaying (`None` = none, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub server: Option<Duration>,
    /// Longest life of a session, ±10 % (`None` = none, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub session_max: Option<Duration>,
}

/// Which PROXY protocol header usher sends a server (`servers.X.send_proxy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// No header: the server sees usher's address.
    #[default]
    None,
    /// Text header, `PROXY TCP4 … \r\n`.
    V1,
    /// Binary header.
    V2,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSettings {
    #[serde(skip)]
    pub name: String,
    /// The address usher connects to; for a server from DNS, the address
    /// its name resolved to. Written by `WrittenServer`.
    #[serde(skip)]
    pub address: SocketAddr,
    /// Set on a server made from DNS: the name and template it comes from.
    #[serde(skip)]
    pub dns: Option<super::DnsOrigin>,
    pub weight: u32,
    /// Concurrent sessions (`None` = unlimited, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub maxconn: Option<NonZeroU32>,
    /// Own queue bound (`None` = unbounded, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub maxqueue: Option<NonZeroU32>,
    /// PROXY protocol header written after connecting, before any client byte.
    pub send_proxy: ProxyVersion,
    /// Takes traffic only while no active server is usable.
    pub backup: bool,
    /// Dynamic maxconn floor with `fullconn` (`None` = off, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub minconn: Option<NonZeroU32>,
    /// Ramp of weight and maxconn after coming back up (`None` = none, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub slowstart: Option<Duration>,
    pub check: CheckSettings,
}

/// Active health checks of one server, and passive observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSettings {
    /// Run active checks.
    pub enabled: bool,
    /// Interval between checks (never zero).
    #[serde(with = "humantime_serde")]
    pub inter: Duration,
    /// Interval while changing state (`None` = `inter`, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub fastinter: Option<Duration>,
    /// Interval while down (`None` = `inter`, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub downinter: Option<Duration>,
    pub rise: u32,
    pub fall: u32,
    /// Limit for one check (`None` = `inter`, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub timeout: Option<Duration>,
    /// Bytes sent after connecting (empty = connect only).
    pub send: String,
    /// Expected prefix of the reply (empty = none).
    pub expect: String,
    /// Consecutive failed connections from live traffic that count as a
    /// failed check (`None` = off, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub error_limit: Option<NonZeroU32>,
    /// Consecutive failed connects from live traffic (no success between)
    /// that take the server DOWN at once, checks or not; probed back up
    /// when checks are off (`None` = off, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub down_after_failed_connects: Option<NonZeroU32>,
}
