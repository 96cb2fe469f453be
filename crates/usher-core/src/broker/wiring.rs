//! From settings to the runtime values the actors take: a server's health
//! and check setup, a backend's queue setup and session parameters, and the
//! start of a whole backend (its BackendQueue and a Server per server).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use actix::prelude::*;
use slog::{o, Logger};

use crate::backend::balance::{Balancer, BalancerRegistry, BalancerSetup};
use crate::backend::spawn_gate::{SpawnGate, SpawnLink};
use crate::backend::server::CheckSpec;
use crate::backend::{
    BackendLoad, BackendQueue, BackendSetup, ConnectReports, HealthConfig, Server, ServerInfo, ServerSetup, ServerStateChange,
};
use crate::config::{BackendSettings, ServerSettings, ZeroForNone};
use crate::ids::ServerId;
use crate::notify::Notify;
use crate::proxy_protocol;
use crate::session::BackendParams;
use crate::spawn::{StressSource, Supervisor, ThrottleFlag};

/// `clustered`: the broker runs in cluster mode (`[cluster]`).
pub fn health_config(s: &ServerSettings, clustered: bool) -> HealthConfig {
    let c = &s.check;
    HealthConfig {
        checks: c.enabled,
        inter: c.inter,
        fastinter: c.fastinter_or_inter(),
        downinter: c.downinter_or_inter(),
        rise: c.rise,
        fall: c.fall,
        error_limit: c.error_limit.or_zero(),
        down_after_failed_connects: c.down_after_failed_connects,
        slowstart: s.slowstart.or_zero(),
        weight: s.weight,
        maxconn: s.maxconn.or_zero(),
        clustered,
    }
}

pub fn check_spec(s: &ServerSettings) -> CheckSpec {
    let c = &s.check;
    CheckSpec {
        timeout: c.timeout_or_inter(),
        proxy_header: proxy_protocol::encode_unknown(s.send_proxy).unwrap_or_default(),
        send: c.send.clone().into_bytes(),
        expect: c.expect.clone().into_bytes(),
    }
}

pub fn server_setup(s: &ServerSettings) -> ServerSetup {
    ServerSetup {
        maxconn: s.maxconn.or_zero(),
        weight: s.weight,
        maxqueue: s.maxqueue.or_zero(),
        backup: s.backup,
        minconn: s.minconn.or_zero(),
    }
}

pub fn backend_setup(b: &BackendSettings) -> BackendSetup {
    BackendSetup {
        maxqueue: b.maxqueue.or_zero(),
        redispatch: b.redispatch,
        fullconn: b.fullconn.or_zero(),
        maxconn: b.maxconn.or_zero(),
        queue: b.queue,
    }
}

/// The balancer of `backends.NAME.balance` over servers of these weights.
pub fn balancer(b: &BackendSettings, weights: &[u32], registry: &BalancerRegistry) -> Box<dyn Balancer> {
    let setup = BalancerSetup { weights, draws: b.draws, hash_balance_factor: b.hash_balance_factor.or_zero() };
    registry.build(&b.balance, &setup)
}

pub fn backend_params(b: &BackendSettings) -> BackendParams {
    BackendParams {
        name: Arc::from(b.name.as_str()),
        queue_timeout: b.timeout.queue,
        connect_timeout: b.timeout.connect,
        server_timeout: b.timeout.server,
        session_max: b.timeout.session_max,
        retries: b.retries,
        redispatch: b.redispatch,
        servers: b.servers.len(),
        spawn_throttled: None,
    }
}

/// `kill`: the broker's kill token, parent of the server's sessions token.
pub fn server_info(
    id: ServerId,
    s: &ServerSettings,
    actor: &Addr<Server>,
    queue: &Addr<BackendQueue>,
    kill: &CancellationToken,
) -> Arc<ServerInfo> {
    // Every setting read here is compared by `carries_same_info`: a reload
    // that changes one and not the other would leave grants stale.
    Arc::new(ServerInfo {
        id,
        name: Arc::from(s.name.as_str()),
        address: s.address,
        send_proxy: s.send_proxy,
        observe: learns_from_traffic(s).then(|| ConnectReports::new(actor.clone().recipient())),
        release: actor.clone().recipient(),
        source_left: queue.clone().recipient(),
        connect_times: None,
        sessions: kill.child_token(),
        kill: kill.clone(),
        shut_down: CancellationToken::new(),
        exited: Arc::default(),
    })
}

/// Whether a server with settings `new` gives its grants what one with
/// `old` gave ([`server_info`] would build the same, but for the tokens and
/// recipients it keeps). A reload that changes a fleet's maxconn or weight
/// then builds, sends and swaps no `ServerInfo`: each took about a dozen
/// allocations and a lock on the kill token's children, twice.
pub fn carries_same_info(old: &ServerSettings, new: &ServerSettings) -> bool {
    old.name == new.name
        && old.address == new.address
        && old.send_proxy == new.send_proxy
        && learns_from_traffic(old) == learns_from_traffic(new)
}

/// Passive health: the server learns from its sessions' connects.
fn learns_from_traffic(s: &ServerSettings) -> bool {
    let c = &s.check;
    c.down_after_failed_connects.is_some() || (c.enabled && c.error_limit.is_some())
}

/// A Server actor (not started) lending its slots to `queue`.
/// `clustered`: the server's slots are shared with other instances.
pub fn new_server(id: ServerId, s: &ServerSettings, queue: &Addr<BackendQueue>, log: &Logger, clustered: bool) -> Server {
    Server::new(
        id,
        s.name.clone(),
        s.address,
        health_config(s, clustered),
        check_spec(s),
        queue.clone().recipient(),
        queue.clone().recipient(),
        log.new(o!("server" => s.name.clone())),
    )
}

/// The actors of one running backend.
pub struct BackendActors {
    pub queue: Addr<BackendQueue>,
    /// The load the queue publishes for routing's spill-over.
    pub load: Arc<BackendLoad>,
    /// By server id (declaration order).
    pub servers: Vec<Addr<Server>>,
    /// A spawned backend's supervisor and the flag its sessions read.
    pub spawn: Option<(Addr<Supervisor>, ThrottleFlag)>,
}

/// How long a "process limit reached" warning keeps the next one quiet:
/// as the watchdog's warnings, once a minute with a count.
const PROCESS_LIMIT_WARN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts one backend as the broker does: its BackendQueue, which knows
/// every server before any of them lends it a slot, and a Server per
/// configured server. Must run inside an actix System.
/// `clustered`: its servers' slots are shared with other instances.
/// Used by the benchmark, which has no broker and so no kill token.
#[cfg(feature = "internals")]
pub fn start_backend(b: &BackendSettings, log: &Logger, clustered: bool) -> BackendActors {
    start_backend_under(b, log, clustered, &CancellationToken::new(), &BalancerRegistry::default(), None, &Notify::none())
}

/// [`start_backend`] in a broker whose kill token is `kill`: its sessions
/// end when it fires.
pub fn start_backend_under(
    b: &BackendSettings,
    log: &Logger,
    clustered: bool,
    kill: &CancellationToken,
    balancers: &BalancerRegistry,
    stress: Option<StressSource>,
    state_changes: &Notify<ServerStateChange>,
) -> BackendActors {
    let log = log.new(o!("backend" => b.name.clone()));
    let ctx: Context<BackendQueue> = Context::new();
    let queue = ctx.address();
    let mut infos = Vec::with_capacity(b.servers.len());
    let mut setups = Vec::with_capacity(b.servers.len());
    let mut servers = Vec::with_capacity(b.servers.len());
    for (i, s) in b.servers.iter().enumerate() {
        let id = ServerId(i);
        let server = new_server(id, s, &queue, &log, clustered).with_state_changes(state_changes.clone()).start();
        infos.push(server_info(id, s, &server, &queue, kill));
        setups.push(server_setup(s));
        servers.push(server);
    }
    let weights: Vec<u32> = b.servers.iter().map(|s| s.weight).collect();
    let load = Arc::new(BackendLoad::new());
    let balancer = balancer(b, &weights, balancers);
    let mut backend = BackendQueue::new(&setups, infos, backend_setup(b), balancer, log.clone(), load.clone());
    let mut spawn = None;
    if let Some(settings) = &b.spawn {
        // The queue knows its gate before its first message: no slot is
        // ever granted before a process serves there.
        let supervisor: Context<Supervisor> = Context::new();
        let address = supervisor.address();
        let gate = SpawnGate::new(b.servers.len(), settings.max_use.map(|m| m.get()));
        backend = backend.with_spawn(SpawnLink {
            gate,
            activity: address.clone().recipient(),
            reports: address.clone().recipient(),
        });
        let throttle = ThrottleFlag::default();
        supervisor.run(Supervisor::new(
            settings.clone(),
            queue.clone(),
            throttle.clone(),
            stress,
            PROCESS_LIMIT_WARN_INTERVAL,
            log.new(o!("actor" => "spawn")),
        ));
        spawn = Some((address, throttle));
    }
    ctx.run(backend);
    BackendActors { queue, load, servers, spawn }
}

#[cfg(test)]
mod tests {
    use super::carries_same_info;
    use crate::config::ServerSettings;

    fn server(keys: &str) -> ServerSettings {
        let toml = format!(
            "[frontends.f]\nbind = [\"127.0.0.1:0\"]\nbackend = \"b\"\n\
             [backends.b.servers.s]\naddress = \"127.0.0.1:9\"\n{keys}"
        );
        let settings = crate::config::from_toml_str(&toml).expect("test config");
        settings.backends[0].servers[0].clone()
    }

    /// What grants carry is rebuilt only when a key it is made of changed:
    /// a new maxconn or weight keeps it, a new PROXY version or passive
    /// health switched off (it is on by default) does not.
    #[test]
    fn a_servers_info_is_kept_through_changes_grants_do_not_carry() {
        let base = server("maxconn = 5\n");
        assert!(carries_same_info(&base, &server("maxconn = 6\nweight = 3\n")));
        assert!(!carries_same_info(&base, &server("maxconn = 5\nsend_proxy = \"v2\"\n")));
        assert!(!carries_same_info(&base, &server("maxconn = 5\ncheck = { down_after_failed_connects = 0 }\n")));
    }
}
