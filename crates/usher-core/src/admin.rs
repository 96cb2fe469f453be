//! The admin HTTP API (actix-web), run inside the broker's actix System on
//! the listener the caller bound (`admin.bind`): reports and run-time
//! changes, all through the broker's handle — it owns no broker state.
//!
//! - `GET /stats` (JSON) and `GET /metrics` (Prometheus text) render one
//!   [`Snapshot`] of the broker's report ([`stats_json`], [`metrics`]).
//! - `PUT /backends/{b}/servers/{s}` and `PUT /frontends/{f}` validate
//!   first, then apply the change through the [`BrokerHandle`]; the owning
//!   actor logs it ([`routes`]).
//! - `POST /backends/{b}/pause`, `/resume`, and per server
//!   `shutdown-sessions` and `wait-idle` control the queues
//!   ([`queue_control`]).
//! - `POST` and `DELETE /backends/{b}/servers/{s}` add and remove a
//!   server at run time, applied as a reload ([`topology_routes`]).
//! - `POST /reload` re-reads the configuration and applies it (as SIGHUP).
//! - `GET /health` answers 200 while running, 503 once shutdown began.
//! - `GET /` and `GET /ui` serve the live dashboard, a page that reads
//!   `/stats` and changes servers through this same API ([`dashboard`]).
//! - With `admin.token`, every request needs `Authorization: Bearer
//!   TOKEN` ([`auth`]), except reading the dashboard page itself.
//!
//! Slow and idle clients are bounded: a connection carries one request,
//! which must be in whole (head and body) within `admin.timeout.request` of
//! the connection opening ([`request_body`]; actix-web's request timeout for
//! the head), and a client address holds at most `admin.maxconn_per_client`
//! connections — more are closed at once ([`connections`]) — so `/health`
//! stays answerable while one client floods the port.
//!
//! Errors are JSON, `{"error": "<reason>"}`; handlers never panic on what a
//! client sends.

mod auth;
mod connections;
mod dashboard;
mod metrics;
mod queue_control;
mod request_body;
mod routes;
mod spawn_stats;
mod stats_json;
mod topology_routes;

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::KeepAlive;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context as _;
use slog::{info, Logger};

use crate::broker::{BrokerHandle, ControlError};
use crate::config::{AdminSettings, Balance, Settings, ADMIN_MAX_CONNECTIONS};
use connections::ClientCounts;

/// Largest request body accepted (a PUT body is a few dozen bytes).
const MAX_BODY: usize = 16 * 1024;
/// How long in-flight admin requests get at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection closed after a refused request (408, 413) keeps
/// discarding what the client still sends, so the client reads the reply
/// rather than a reset; then it is closed regardless.
const LINGER: Duration = Duration::from_secs(1);

/// What the handlers share: the broker's handle, the token and the
/// shutdown flag.
pub(crate) struct Admin {
    /// Asked for the configuration in force on every request: a reload may
    /// have changed it.
    broker: BrokerHandle,
    access: auth::Access,
    stopping: AtomicBool,
    /// Cluster mode: the cluster agent's last published status.
    cluster: Option<tokio::sync::watch::Receiver<crate::cluster::ClusterStatus>>,
    log: Logger,
}

/// Configured facts that no actor reports, in declaration order (the same
/// order as the broker's reports).
struct Layout {
    frontends: Vec<FrontendLayout>,
    backends: Vec<BackendLayout>,
}

struct FrontendLayout {
    name: String,
    backend: String,
    bind_maxconn: Option<NonZeroU32>,
}

struct BackendLayout {
    name: String,
    balance: Balance,
    maxqueue: Option<NonZeroU32>,
    fullconn: Option<NonZeroU32>,
    servers: Vec<ServerLayout>,
}

struct ServerLayout {
    name: String,
    address: SocketAddr,
    /// Configured maxconn; `None` = unlimited (no run-time limit can be set).
    maxconn: Option<NonZeroU32>,
    maxqueue: Option<NonZeroU32>,
    backup: bool,
    checks: bool,
}

impl Layout {
    fn of(settings: &Settings) -> Layout {
        Layout {
            frontends: settings
                .frontends
                .iter()
                .map(|f| FrontendLayout {
                    name: f.name.clone(),
                    backend: f.backend.clone(),
                    bind_maxconn: f.bind_maxconn,
                })
                .collect(),
            backends: settings
                .backends
                .iter()
                .map(|b| BackendLayout {
                    name: b.name.clone(),
                    balance: b.balance.clone(),
                    maxqueue: b.maxqueue,
                    fullconn: b.fullconn,
                    servers: b
                        .servers
                        .iter()
                        .map(|s| ServerLayout {
                            name: s.name.clone(),
                            address: s.address,
                            maxconn: s.maxconn,
                            maxqueue: s.maxqueue,
                            backup: s.backup,
                            checks: s.check.enabled,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn backend(&self, name: &str) -> Option<(usize, &BackendLayout)> {
        self.backends.iter().enumerate().find(|(_, b)| b.name == name)
    }

    fn bind_maxconn(&self, frontend: &str) -> Option<NonZeroU32> {
        self.frontends.iter().find(|f| f.name == frontend).and_then(|f| f.bind_maxconn)
    }
}

impl Admin {
    /// A handle on the configuration in force, and its layout.
    async fn view(&self) -> Result<(BrokerHandle, Layout), ControlError> {
        let handle = self.broker.refreshed().await.ok_or(ControlError::Stopped)?;
        let layout = Layout::of(handle.settings());
        Ok((handle, layout))
    }
}

/// The running admin server.
pub struct AdminServer {
    handle: actix_web::dev::ServerHandle,
    admin: Arc<Admin>,
    address: SocketAddr,
}

impl AdminServer {
    /// Used by white-box tests only.
    #[cfg(feature = "internals")]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Shutdown began: `/health` answers 503 from now on; reports still work.
    pub fn stopping(&self) {
        self.admin.stopping.store(true, Ordering::Relaxed);
    }

    /// Stops accepting, lets in-flight requests finish (briefly) and waits.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        info!(self.admin.log, "admin API stopped"; "address" => %self.address);
    }
}

/// Serves the admin API on `listener`. Must be called inside the actix
/// System that runs the broker's actors.
pub fn start(
    listener: TcpListener,
    settings: &AdminSettings,
    broker: BrokerHandle,
    cluster: Option<tokio::sync::watch::Receiver<crate::cluster::ClusterStatus>>,
    log: Logger,
) -> anyhow::Result<AdminServer> {
    let address = listener.local_addr().context("admin listener without an address")?;
    listener.set_nonblocking(true).context("admin listener")?;
    let admin = Arc::new(Admin {
        broker,
        access: auth::Access::of(&settings.token),
        stopping: AtomicBool::new(false),
        cluster,
        log: log.clone(),
    });
    let data = web::Data::from(admin.clone());
    let counts = ClientCounts::new(settings.maxconn_per_client);
    let request_timeout = settings.timeout.request;
    let connection_log = log.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            // The last one wrapped runs first: the body is in before the token is checked.
            .wrap(middleware::from_fn(auth::require_token))
            .wrap(middleware::from_fn(request_body::read_whole_body))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .workers(1)
    .max_connections(ADMIN_MAX_CONNECTIONS as usize)
    .on_connect(move |io, extensions| {
        connections::on_connect(&counts, request_timeout, &connection_log, io, extensions)
    })
    // The head's share of the request deadline; the body's is read_whole_body's.
    .client_request_timeout(request_timeout)
    // One request per connection: a second request's head would have no
    // deadline (actix-web times only a connection's first), and an idle
    // kept-alive connection would hold a slot for nothing.
    .keep_alive(KeepAlive::Disabled)
    .client_disconnect_timeout(LINGER)
    .disable_signals()
    .shutdown_timeout(STOP_TIMEOUT.as_secs())
    .listen(listener)
    .with_context(|| format!("admin.bind: cannot serve on {address}"))?
    .run();
    let server_handle = server.handle();
    actix_rt::spawn(server);
    info!(log, "admin API listening"; "address" => %address, "auth" => admin.access.describe(),
        "maxconn_per_client" => settings.maxconn_per_client.get(),
        "request_timeout" => %humantime::format_duration(request_timeout));
    Ok(AdminServer { handle: server_handle, admin, address })
}
