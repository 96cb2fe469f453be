//! One validation pass from the merged tree to [`Settings`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use config::{Map, Value, ValueKind};

use super::discovery_section::{DnsForm, DnsSource};
use super::errors::{ConfigErrorKind, ConfigErrors};
use super::extension_section::ExtensionCatalog;
use super::queue_section::{queue_keys, QueueSettings};
use super::reader::{Report, Section};
use super::settings::*;
use super::sources::Merged;

/// Sections whose keys are checked; `actors` is free-form for extensions,
/// `hooks` is checked by the core and by the registered hooks.
const SECTIONS: &[&str] = &[
    "global",
    "watchdog",
    "log",
    "admin",
    "defaults",
    "frontends",
    "backends",
    "actors",
    "hooks",
    "cluster",
    "resolvers",
];

pub(super) fn settings(merged: &Merged, catalog: &dyn ExtensionCatalog) -> Result<Settings, ConfigErrors> {
    let mut report = Report { origins: &merged.origins, errors: Vec::new() };
    let root = &merged.root;

    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            report.error(key, format!("unknown section; expected one of: {}", SECTIONS.join(", ")));
        }
    }

    let global = global(root, &mut report);
    let watchdog = watchdog(root, &mut report);
    let log = log(root, &mut report);
    let admin = admin(root, &mut report);
    let balancers = catalog.balancer_names();
    let defaults = defaults(root, &balancers, &mut report);
    let backends = backends(root, &defaults, &balancers, &mut report);
    // Every declared backend counts, valid or not: a frontend naming a backend
    // that has its own errors must not also get "not defined".
    let declared: Vec<&str> = match root.get("backends").map(|v| &v.kind) {
        Some(ValueKind::Table(table)) => table.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let frontends = frontends(root, &defaults, &declared, catalog, &mut report);
    cross_check(&frontends, &declared, &mut report);
    let actors = actors(root, catalog, &mut report);
    let used: Vec<&str> = frontends.iter().flat_map(|f| f.hooks.iter().map(String::as_str)).collect();
    let hooks = super::extension_section::hooks(root, &used, catalog, &mut report);
    let cluster = super::cluster_section::cluster(root, &mut report);
    let resolvers = super::discovery_section::resolvers(root, &mut report);

    match (global, watchdog, log, admin, cluster, resolvers) {
        (Some(global), Some(watchdog), Some(log), Some(admin), Some(cluster), Some(resolvers))
            if report.errors.is_empty() =>
        {
            let table = |v: Option<&Value>| match v.map(to_toml) {
                Some(toml::Value::Table(table)) => table,
                _ => toml::Table::new(),
            };
            let defaults =
                DefaultTables { backend: table(defaults.backend.as_ref()), server: table(defaults.server.as_ref()) };
            Ok(Settings {
                global,
                watchdog,
                log,
                admin,
                frontends,
                backends,
                actors,
                hooks,
                cluster,
                resolvers,
                defaults,
            })
        }
        _ => {
            // Entries that read the same bad default report it once each.
            let mut seen = std::collections::HashSet::new();
            report.errors.retain(|err| seen.insert((err.key.clone(), err.problem.clone())));
            Err(ConfigErrors(report.errors))
        }
    }
}

fn global(root: &Map<String, Value>, report: &mut Report<'_>) -> Option<GlobalSettings> {
    let mut s = Section::new("global", root.get("global"), report);
    let maxconn = s.limit_up_to("maxconn", 10_000_000, report);
    let maxconnrate = s.limit_up_to("maxconnrate", 10_000_000, report);
    let workers = s.limit_up_to("workers", 1024, report);
    let grace = s.duration("grace", report);
    let close_spread = s.duration_or_none("close_spread", report);
    let bufsize = s.u32_in("bufsize", 1024, 16 << 20, report);
    let bufsize_max = s.u32_in("bufsize_max", 0, 64 << 20, report);
    let maxaccept = s.u32_in("maxaccept", 1, 1024, report);
    s.finish(report);
    Some(GlobalSettings {
        maxconn: maxconn?,
        maxconnrate: maxconnrate?,
        workers: workers?,
        grace: grace?,
        close_spread: close_spread?,
        bufsize: bufsize?,
        bufsize_max: bufsize_max?,
        maxaccept: maxaccept?,
    })
}

fn watchdog(root: &Map<String, Value>, report: &mut Report<'_>) -> Option<WatchdogSettings> {
    let mut s = Section::new("watchdog", root.get("watchdog"), report);
    let maxconn_recheck = s.duration("maxconn_recheck", report);
    let shortage_recheck = s.duration("shortage_recheck", report);
    let warn_interval = s.duration("warn_interval", report);
    s.finish(report);
    Some(WatchdogSettings {
        maxconn_recheck: maxconn_recheck?,
        shortage_recheck: shortage_recheck?,
        warn_interval: warn_interval?,
    })
}

fn log(root: &Map<String, Value>, report: &mut Report<'_>) -> Option<LogSettings> {
    let mut s = Section::new("log", root.get("log"), report);
    let format = s.choice("format", &[("term", LogFormat::Term), ("json", LogFormat::Json)], report);
    let level = s.get(
        "level",
        "a log level: \"critical\" (or \"crit\"), \"error\" (\"err\"), \"warning\" (\"warn\"), \"info\", \"debug\" or \"trace\", in any case",
        report,
        |v| match v {
            ValueKind::String(text) => LogLevel::from_spelling(text),
            _ => None,
        },
    );
    let overflow = s.choice("overflow", &[("drop", LogOverflow::Drop), ("block", LogOverflow::Block)], report);
    s.finish(report);
    Some(LogSettings { format: format?, level: level?, overflow: overflow? })
}

fn admin(root: &Map<String, Value>, report: &mut Report<'_>) -> Option<AdminSettings> {
    let mut s = Section::new("admin", root.get("admin"), report);
    let bind = s.get(
        "bind",
        "a listening address \"IP:PORT\" such as \"127.0.0.1:9900\", or \"\" to disable the admin API",
        report,
        |v| match v {
            ValueKind::String(text) if text.trim().is_empty() => Some(None),
            ValueKind::String(text) => text.trim().parse::<std::net::SocketAddr>().ok().map(Some),
            _ => None,
        },
    );
    let token = s.text("token", report);
    let maxconn_per_client = s.u32_in("maxconn_per_client", 1, ADMIN_MAX_CONNECTIONS, report).and_then(NonZeroU32::new);
    let mut timeout = s.sub("timeout", report);
    let request = admin_limit_duration(&mut timeout, "request", report);
    timeout.finish(report);
    s.finish(report);
    let (bind, token, maxconn_per_client) = (bind?, token?, maxconn_per_client?);
    let timeout = AdminTimeouts { request: request? };
    // Beyond loopback, anyone who reaches the port could drain servers.
    if let Some(addr) = bind.filter(|a| !a.ip().to_canonical().is_loopback()) {
        if token.is_empty() {
            report.error(
                "admin.token",
                format!(
                    "empty while admin.bind = \"{addr}\" is not a loopback address; expected a bearer token \
                     (e.g. USHER__ADMIN__TOKEN), or a loopback admin.bind such as \"127.0.0.1:9900\""
                ),
            );
            return None;
        }
    }
    Some(AdminSettings { bind, token, maxconn_per_client, timeout })
}

/// An admin time limit: a duration above zero. Unlike most timeouts, "0"
/// cannot disable it — an API without it is what lets idle or trickling
/// clients hold every connection.
fn admin_limit_duration(s: &mut Section, key: &'static str, report: &mut Report<'_>) -> Option<Duration> {
    const EXPECTED: &str = "a duration above zero such as \"500ms\" or \"2s\" (this limit cannot be disabled)";
    s.get(key, EXPECTED, report, |v| match v {
        ValueKind::String(text) => humantime::parse_duration(text.trim()).ok().filter(|d| !d.is_zero()),
        _ => None,
    })
}

/// The `[defaults.*]` tables, checked for unknown kinds only; their keys are
/// checked where entries read them (a bad default is reported under its own
/// dotted key, `defaults.backend.retries`).
struct Defaults {
    frontend: Option<Value>,
    backend: Option<Value>,
    server: Option<Value>,
}

fn defaults(root: &Map<String, Value>, balancers: &[String], report: &mut Report<'_>) -> Defaults {
    let s = Section::new("defaults", root.get("defaults"), report);
    let mut out = Defaults { frontend: None, backend: None, server: None };
    for (name, value) in s.entries() {
        match name.as_str() {
            "frontend" => out.frontend = Some(value),
            "backend" => out.backend = Some(value),
            "server" => out.server = Some(value),
            _ => report.error(
                &format!("defaults.{name}"),
                "unknown defaults table; expected one of: frontend, backend, server",
            ),
        }
    }
    // Check the defaults tables on their own (unknown keys, bad values), so a
    // bad default is reported even when no entry uses it. A missing key is
    // fine there: defaults need not set every key.
    let mut probe = Report { origins: report.origins, errors: Vec::new() };
    let mut f = Section::new("defaults.frontend", out.frontend.as_ref(), &mut probe);
    frontend_keys(&mut f, &mut probe);
    f.finish(&mut probe);
    let mut b = Section::new("defaults.backend", out.backend.as_ref(), &mut probe);
    backend_keys(&mut b, balancers, &mut probe);
    super::spawn_section::spawn_keys(&mut b, &mut probe);
    b.finish(&mut probe);
    let mut s = Section::new("defaults.server", out.server.as_ref(), &mut probe);
    s.server_address("address", &mut probe);
    server_keys(&mut s, &mut probe);
    s.finish(&mut probe);
    report.errors.extend(probe.errors.into_iter().filter(|err| err.kind != ConfigErrorKind::Missing));
    out
}

struct FrontendKeys {
    bind: Option<Vec<std::net::SocketAddr>>,
    backend: Option<String>,
    maxconn: Option<Option<NonZeroU32>>,
    backlog: Option<u32>,
    bind_maxconn: Option<Option<NonZeroU32>>,
    rate_limit: Option<Option<NonZeroU32>>,
    priority_class: Option<i64>,
    priority_offset: Option<i64>,
    accept_proxy: Option<bool>,
    no_client_hello: Option<NoClientHello>,
    client: Option<Option<Duration>>,
    proxy: Option<Duration>,
    inspect: Option<Duration>,
    stress: Option<StressSettings>,
}

/// Longest `timeout.proxy` and `timeout.inspect`. A client still sending
/// its PROXY header or its ClientHello holds a place of its frontend's
/// maxconn; both come at once from a real peer, so a minute is already
/// generous, and a slow or silent peer must not keep the place longer.
const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

fn frontend_keys(s: &mut Section, report: &mut Report<'_>) -> FrontendKeys {
    let bind = s.bind_list("bind", report);
    let backend = s.string("backend", report);
    let maxconn = s.limit_up_to("maxconn", 10_000_000, report);
    let backlog = s.u32_in("backlog", 1, 65_535, report);
    let bind_maxconn = s.limit_up_to("bind_maxconn", 10_000_000, report);
    let rate_limit = s.limit_up_to("rate_limit", 10_000_000, report);
    let priority_class = s.i64_in("priority_class", -2047, 2047, report);
    let priority_offset = s.i64_in("priority_offset", -524_287, 524_287, report);
    let accept_proxy = s.bool("accept_proxy", report);
    let no_client_hello =
        s.choice("no_client_hello", &[("default", NoClientHello::Default), ("refuse", NoClientHello::Refuse)], report);
    let mut t = s.sub("timeout", report);
    let client = t.duration_or_none("client", report);
    let proxy = t.duration_set_up_to(
        "proxy",
        MAX_HANDSHAKE_TIMEOUT,
        "a client still sending its header holds a place of the frontend's maxconn, and would hold it forever",
        report,
    );
    let inspect = t.duration_set_up_to(
        "inspect",
        MAX_HANDSHAKE_TIMEOUT,
        "a client still sending its ClientHello holds a place of the frontend's maxconn, and would hold it forever",
        report,
    );
    t.finish(report);
    let mut st = s.sub("stress", report);
    let cooldown = st.duration_or_none("cooldown", report);
    let mut stt = st.sub("timeout", report);
    let stress_client = stt.duration_or_none("client", report);
    let stress_queue = stt.duration_or_none("queue", report);
    stt.finish(report);
    st.finish(report);
    let stress = match (cooldown, stress_client, stress_queue) {
        (Some(cooldown), Some(client), Some(queue)) => {
            Some(StressSettings { cooldown, timeout: StressTimeouts { client, queue } })
        }
        _ => None,
    };
    FrontendKeys {
        bind,
        backend,
        maxconn,
        backlog,
        bind_maxconn,
        rate_limit,
        priority_class,
        priority_offset,
        accept_proxy,
        no_client_hello,
        client,
        proxy,
        inspect,
        stress,
    }
}

struct BackendKeys {
    balance: Option<Balance>,
    draws: Option<u32>,
    hash_balance_factor: Option<Option<NonZeroU32>>,
    fullconn: Option<Option<NonZeroU32>>,
    maxqueue: Option<Option<NonZeroU32>>,
    retries: Option<u32>,
    redispatch: Option<bool>,
    maxconn: Option<Option<NonZeroU32>>,
    discipline: Option<QueueSettings>,
    queue: Option<Option<Duration>>,
    connect: Option<Option<Duration>>,
    server: Option<Option<Duration>>,
    session_max: Option<Option<Duration>>,
}

/// `balancers`: the registered balancing algorithms' names.
fn backend_keys(s: &mut Section, balancers: &[String], report: &mut Report<'_>) -> BackendKeys {
    let names: Vec<String> = balancers.iter().map(|n| format!("\"{n}\"")).collect();
    let expected = format!("the name of a registered balancing algorithm: one of {}", names.join(", "));
    let balance = s.get("balance", &expected, report, |v| match v {
        ValueKind::String(name) => balancers.iter().find(|n| *n == name).map(|n| Balance::new(n)),
        _ => None,
    });
    let draws = s.u32_in("draws", 1, 16, report);
    let hash_balance_factor = s.limit_up_to("hash_balance_factor", 10_000, report);
    let fullconn = s.limit_up_to("fullconn", 10_000_000, report);
    let maxqueue = s.limit_up_to("maxqueue", 10_000_000, report);
    let retries = s.u32_in("retries", 0, 100, report);
    let redispatch = s.bool("redispatch", report);
    let maxconn = s.limit_up_to("maxconn", 10_000_000, report);
    let discipline = queue_keys(s, report);
    let mut t = s.sub("timeout", report);
    let queue = t.duration_or_none("queue", report);
    let connect = t.duration_or_none("connect", report);
    let server = t.duration_or_none("server", report);
    let session_max = t.duration_or_none("session_max", report);
    t.finish(report);
    if hash_balance_factor.flatten().is_some_and(|f| f.get() < 100) {
        report.error(
            &format!("{}.hash_balance_factor", s.path()),
            "below 100; expected 0 (off) or a percent of the average load of at least 100, such as 125",
        );
    }
    BackendKeys {
        balance,
        draws,
        hash_balance_factor,
        fullconn,
        maxqueue,
        retries,
        redispatch,
        maxconn,
        discipline,
        queue,
        connect,
        server,
        session_max,
    }
}

/// Every server key but `address` (a template has none).
struct ServerKeys {
    weight: Option<u32>,
    maxconn: Option<Option<NonZeroU32>>,
    maxqueue: Option<Option<NonZeroU32>>,
    send_proxy: Option<ProxyVersion>,
    backup: Option<bool>,
    minconn: Option<Option<NonZeroU32>>,
    slowstart: Option<Option<Duration>>,
    check: Option<CheckSettings>,
}

fn server_keys(s: &mut Section, report: &mut Report<'_>) -> ServerKeys {
    let weight = s.u32_in("weight", 0, 256, report);
    let maxconn = s.limit_up_to("maxconn", 10_000_000, report);
    let maxqueue = s.limit_up_to("maxqueue", 10_000_000, report);
    let send_proxy = s.choice(
        "send_proxy",
        &[("none", ProxyVersion::None), ("v1", ProxyVersion::V1), ("v2", ProxyVersion::V2)],
        report,
    );
    let backup = s.bool("backup", report);
    let minconn = s.limit_up_to("minconn", 10_000_000, report);
    let slowstart = s.duration_or_none("slowstart", report);
    let mut c = s.sub("check", report);
    let check = (|| {
        let enabled = c.bool("enabled", report);
        let inter = c.duration("inter", report);
        let fastinter = c.duration_or_none("fastinter", report);
        let downinter = c.duration_or_none("downinter", report);
        let rise = c.u32_in("rise", 1, 1000, report);
        let fall = c.u32_in("fall", 1, 1000, report);
        let timeout = c.duration_or_none("timeout", report);
        let send = c.text("send", report);
        let expect = c.text("expect", report);
        let error_limit = c.limit_up_to("error_limit", 1_000_000, report);
        let down_after_failed_connects = c.limit_up_to("down_after_failed_connects", 1_000_000, report);
        Some(CheckSettings {
            enabled: enabled?,
            inter: inter?,
            fastinter: fastinter?,
            downinter: downinter?,
            rise: rise?,
            fall: fall?,
            timeout: timeout?,
            send: send?,
            expect: expect?,
            error_limit: error_limit?,
            down_after_failed_connects: down_after_failed_connects?,
        })
    })();
    if check.as_ref().is_some_and(|c| c.inter.is_zero()) {
        report.error(&format!("{}.inter", c.path()), "zero; expected a check interval such as \"2s\"");
    }
    c.finish(report);
    ServerKeys { weight, maxconn, maxqueue, send_proxy, backup, minconn, slowstart, check }
}

fn frontends(
    root: &Map<String, Value>,
    defaults: &Defaults,
    declared: &[&str],
    catalog: &dyn ExtensionCatalog,
    report: &mut Report<'_>,
) -> Vec<FrontendSettings> {
    let table = Section::new("frontends", root.get("frontends"), report);
    let mut out = Vec::new();
    for (name, value) in table.entries() {
        let mut s = Section::new(format!("frontends.{name}"), Some(&value), report)
            .with_defaults("defaults.frontend", defaults.frontend.as_ref());
        let k = frontend_keys(&mut s, report);
        // Not in frontend_keys: routes are a frontend's own, never a default.
        let routes = super::routes_section::routes(&mut s, declared, report);
        // Not in frontend_keys either: which hooks run is a frontend's choice.
        let hooks = super::extension_section::frontend_hooks(&mut s, catalog, report);
        s.finish(report);
        if let (
            Some(bind),
            Some(backend),
            Some(maxconn),
            Some(backlog),
            Some(bind_maxconn),
            Some(rate_limit),
            Some(priority_class),
            Some(priority_offset),
            Some(accept_proxy),
            Some(no_client_hello),
            Some(client),
            Some(proxy),
            Some(inspect),
            Some(stress),
            Some(routes),
        ) = (
            k.bind,
            k.backend,
            k.maxconn,
            k.backlog,
            k.bind_maxconn,
            k.rate_limit,
            k.priority_class,
            k.priority_offset,
            k.accept_proxy,
            k.no_client_hello,
            k.client,
            k.proxy,
            k.inspect,
            k.stress,
            routes,
        ) {
            out.push(FrontendSettings {
                name,
                bind,
                backend,
                maxconn,
                backlog,
                bind_maxconn,
                rate_limit,
                priority_class: priority_class as i32,
                priority_offset,
                accept_proxy,
                no_client_hello,
                timeout: FrontendTimeouts { client, proxy, inspect },
                stress,
                routes,
                hooks,
            });
        }
    }
    out
}

fn backends(
    root: &Map<String, Value>,
    defaults: &Defaults,
    balancers: &[String],
    report: &mut Report<'_>,
) -> Vec<BackendSettings> {
    let table = Section::new("backends", root.get("backends"), report);
    let mut out = Vec::new();
    for (name, value) in table.entries() {
        let mut s = Section::new(format!("backends.{name}"), Some(&value), report)
            .with_defaults("defaults.backend", defaults.backend.as_ref());
        let k = backend_keys(&mut s, balancers, report);
        let spawn = super::spawn_section::spawn_keys(&mut s, report);
        let (servers, mut dns) = match &spawn {
            Some(Some(spawn)) => (spawned_servers(&mut s, spawn, defaults, report), Vec::new()),
            _ => servers(&mut s, defaults, report),
        };
        let templates = super::discovery_section::server_templates(
            &mut s,
            defaults.server.as_ref(),
            |t, report| {
                let k = server_keys(t, report);
                server_from_keys(String::new(), std::net::SocketAddr::from(([0, 0, 0, 0], 0)), k)
            },
            report,
        );
        let names: Vec<String> =
            servers.iter().map(|s| s.name.clone()).chain(dns.iter().map(|d| d.name.clone())).collect();
        super::discovery_section::check_names(&name, &names, &templates, report);
        dns.extend(templates);
        s.finish(report);
        let built = (|| {
            Some(BackendSettings {
                name,
                balance: k.balance?,
                draws: k.draws?,
                hash_balance_factor: k.hash_balance_factor?,
                fullconn: k.fullconn?,
                maxqueue: k.maxqueue?,
                retries: k.retries?,
                redispatch: k.redispatch?,
                maxconn: k.maxconn?,
                queue: k.discipline?,
                timeout: BackendTimeouts {
                    queue: k.queue?,
                    connect: k.connect?,
                    server: k.server?,
                    session_max: k.session_max?,
                },
                servers,
                dns,
                spawn: spawn?,
            })
        })();
        out.extend(built);
    }
    out
}

/// A spawned backend's servers: one per process slot, each taking
/// `sessions_per_proc` sessions, with the `defaults.server` keys for the
/// rest. Checks are off: the supervisor knows whether a process serves,
/// and a slot with no process is held at no room rather than taken down,
/// so clients queue while a process starts. The address is a placeholder
/// until a process runs there.
fn spawned_servers(
    backend: &mut Section,
    spawn: &super::SpawnSettings,
    defaults: &Defaults,
    report: &mut Report<'_>,
) -> Vec<ServerSettings> {
    let table = backend.sub("servers", report);
    if !table.entries().is_empty() {
        report.error(
            table.path(),
            "set beside spawn; expected no servers: a spawned backend's servers are the processes usher starts",
        );
        return Vec::new();
    }
    // The keys of each slot come from `defaults.server` alone.
    let placeholder = Value::new(None, ValueKind::Table(Map::new()));
    (0..spawn.max_procs.get() as usize)
        .filter_map(|i| {
            let name = super::slot_name(i);
            let mut s = Section::new(format!("{}.{name}", table.path()), Some(&placeholder), report)
                .with_defaults("defaults.server", defaults.server.as_ref());
            let k = server_keys(&mut s, report);
            s.finish(report);
            let mut check = k.check?;
            check.enabled = false;
            check.down_after_failed_connects = None;
            check.error_limit = None;
            Some(ServerSettings {
                name,
                // A placeholder until a process runs there.
                address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                dns: None,
                weight: k.weight?,
                maxconn: Some(spawn.sessions_per_proc),
                maxqueue: k.maxqueue?,
                send_proxy: k.send_proxy?,
                backup: false,
                minconn: None,
                slowstart: None,
                check,
            })
        })
        .collect()
}

/// A backend's `[servers]`: those configured by IP address, and those
/// configured by host name (servers from DNS, resolved while running).
fn servers(
    backend: &mut Section,
    defaults: &Defaults,
    report: &mut Report<'_>,
) -> (Vec<ServerSettings>, Vec<DnsSource>) {
    use super::discovery_section::ConfiguredAddress;
    let table = backend.sub("servers", report);
    let (mut out, mut named) = (Vec::new(), Vec::new());
    for (name, value) in table.entries() {
        let mut s = Section::new(format!("{}.{name}", table.path()), Some(&value), report)
            .with_defaults("defaults.server", defaults.server.as_ref());
        let address = s.server_address("address", report);
        let k = server_keys(&mut s, report);
        s.finish(report);
        match address {
            Some(ConfiguredAddress::Ip(address)) => out.extend(server_from_keys(name, address, k)),
            Some(ConfiguredAddress::Name { host, port }) => {
                // Its address comes from DNS; until then it has none.
                let placeholder = std::net::SocketAddr::from(([0, 0, 0, 0], port));
                if let Some(server) = server_from_keys(name.clone(), placeholder, k) {
                    named.push(DnsSource { name, query: host, form: DnsForm::Server, port, server });
                }
            }
            None => {}
        }
    }
    (out, named)
}

fn server_from_keys(name: String, address: std::net::SocketAddr, k: ServerKeys) -> Option<ServerSettings> {
    Some(ServerSettings {
        name,
        address,
        dns: None,
        weight: k.weight?,
        maxconn: k.maxconn?,
        maxqueue: k.maxqueue?,
        send_proxy: k.send_proxy?,
        backup: k.backup?,
        minconn: k.minconn?,
        slowstart: k.slowstart?,
        check: k.check?,
    })
}

fn cross_check(frontends: &[FrontendSettings], backends: &[&str], report: &mut Report<'_>) {
    let mut bound: HashMap<std::net::SocketAddr, &str> = HashMap::new();
    for f in frontends {
        if !backends.contains(&f.backend.as_str()) {
            report.error(
                &format!("frontends.{}.backend", f.name),
                format!(
                    "backend {:?} is not defined; expected one of the backends: {}",
                    f.backend,
                    if backends.is_empty() { "(none defined)".to_owned() } else { backends.join(", ") }
                ),
            );
        }
        for addr in &f.bind {
            if addr.port() != 0 {
                if let Some(other) = bound.insert(*addr, &f.name) {
                    report.error(
                        &format!("frontends.{}.bind", f.name),
                        format!("address {addr} is already bound by frontend {other:?}; expected distinct addresses"),
                    );
                }
            }
        }
    }
}

fn actors(root: &Map<String, Value>, catalog: &dyn ExtensionCatalog, report: &mut Report<'_>) -> toml::Table {
    let actors = match root.get("actors").map(|v| &v.kind) {
        None | Some(ValueKind::Nil) => toml::Table::new(),
        Some(ValueKind::Table(t)) => t.iter().map(|(k, v)| (k.clone(), to_toml(v))).collect(),
        Some(other) => {
            report.error("actors", format!("found {}; expected a table", super::reader::describe(other)));
            return toml::Table::new();
        }
    };
    for (name, problem) in catalog.check_actors(&actors) {
        let table = format!("actors.{name}");
        let key = if problem.key.is_empty() { table } else { format!("{table}.{}", problem.key) };
        report.error_near(&key, problem.problem);
    }
    actors
}

pub(super) fn to_toml(v: &Value) -> toml::Value {
    match &v.kind {
        ValueKind::Nil => toml::Value::String(String::new()),
        ValueKind::Boolean(b) => toml::Value::Boolean(*b),
        ValueKind::I64(n) => toml::Value::Integer(*n),
        ValueKind::I128(n) => toml::Value::Integer(*n as i64),
        ValueKind::U64(n) => toml::Value::Integer(*n as i64),
        ValueKind::U128(n) => toml::Value::Integer(*n as i64),
        ValueKind::Float(n) => toml::Value::Float(*n),
        ValueKind::String(s) => toml::Value::String(s.clone()),
        ValueKind::Table(t) => toml::Value::Table(t.iter().map(|(k, v)| (k.clone(), to_toml(v))).collect()),
        ValueKind::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect()),
    }
}
