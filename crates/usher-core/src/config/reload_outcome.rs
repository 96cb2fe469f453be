//! What a reload did or why it was refused: the answer of `POST /reload`,
//! SIGHUP's status line and the `reload done` record.

use std::fmt;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};
use slog::{info, Logger};

use crate::config::ConfigErrors;

/// One change a reload applied. Shown (and serialized) as the sentence
/// operators read in `POST /reload`, e.g. `backend app: server s3 added`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadChange {
    BackendAdded {
        backend: String,
    },
    BackendChanged {
        backend: String,
    },
    BackendRemoved {
        backend: String,
    },
    ServerAdded {
        backend: String,
        server: String,
    },
    ServerChanged {
        backend: String,
        server: String,
    },
    ServerRemoved {
        backend: String,
        server: String,
    },
    FrontendAdded {
        frontend: String,
    },
    FrontendChanged {
        frontend: String,
    },
    FrontendRemoved {
        frontend: String,
    },
    ListenerAdded {
        frontend: String,
        address: SocketAddr,
    },
    ListenerRemoved {
        address: SocketAddr,
    },
    /// A `[hooks.NAME]` table: the frontends naming the hook run it with
    /// the new options from their next session.
    HookAdded {
        hook: String,
    },
    HookChanged {
        hook: String,
    },
    HookRemoved {
        hook: String,
    },
}

impl ReloadChange {
    /// The change's own record (`server added`, `listener removed`, ...).
    pub fn log(&self, log: &Logger) {
        match self {
            ReloadChange::BackendAdded { backend } => info!(log, "backend added"; "backend" => backend),
            ReloadChange::BackendChanged { backend } => info!(log, "backend changed"; "backend" => backend),
            ReloadChange::BackendRemoved { backend } => info!(log, "backend removed"; "backend" => backend),
            ReloadChange::ServerAdded { backend, server } => {
                info!(log, "server added"; "backend" => backend, "server" => server)
            }
            ReloadChange::ServerChanged { backend, server } => {
                info!(log, "server changed"; "backend" => backend, "server" => server)
            }
            ReloadChange::ServerRemoved { backend, server } => {
                info!(log, "server removed"; "backend" => backend, "server" => server)
            }
            ReloadChange::FrontendAdded { frontend } => info!(log, "frontend added"; "frontend" => frontend),
            ReloadChange::FrontendChanged { frontend } => info!(log, "frontend changed"; "frontend" => frontend),
            ReloadChange::FrontendRemoved { frontend } => info!(log, "frontend removed"; "frontend" => frontend),
            ReloadChange::ListenerAdded { frontend, address } => {
                info!(log, "listener added"; "frontend" => frontend, "address" => %address)
            }
            ReloadChange::ListenerRemoved { address } => info!(log, "listener removed"; "address" => %address),
            ReloadChange::HookAdded { hook } => info!(log, "hook options added"; "hook" => hook),
            ReloadChange::HookChanged { hook } => info!(log, "hook options changed"; "hook" => hook),
            ReloadChange::HookRemoved { hook } => info!(log, "hook options removed"; "hook" => hook),
        }
    }
}

impl fmt::Display for ReloadChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadChange::BackendAdded { backend } => write!(f, "backend {backend} added"),
            ReloadChange::BackendChanged { backend } => write!(f, "backend {backend} changed"),
            ReloadChange::BackendRemoved { backend } => write!(f, "backend {backend} removed"),
            ReloadChange::ServerAdded { backend, server } => write!(f, "backend {backend}: server {server} added"),
            ReloadChange::ServerChanged { backend, server } => write!(f, "backend {backend}: server {server} changed"),
            ReloadChange::ServerRemoved { backend, server } => write!(f, "backend {backend}: server {server} removed"),
            ReloadChange::FrontendAdded { frontend } => write!(f, "frontend {frontend} added"),
            ReloadChange::FrontendChanged { frontend } => write!(f, "frontend {frontend} changed"),
            ReloadChange::FrontendRemoved { frontend } => write!(f, "frontend {frontend} removed"),
            ReloadChange::ListenerAdded { frontend, address } => {
                write!(f, "frontend {frontend}: listener {address} added")
            }
            ReloadChange::ListenerRemoved { address } => write!(f, "listener {address} removed"),
            ReloadChange::HookAdded { hook } => write!(f, "hook {hook}: options added"),
            ReloadChange::HookChanged { hook } => write!(f, "hook {hook}: options changed"),
            ReloadChange::HookRemoved { hook } => write!(f, "hook {hook}: options removed"),
        }
    }
}

impl Serialize for ReloadChange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A setting fixed at start: a reload that changes it keeps the running
/// value and names it, until a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartKey {
    GlobalWorkers,
    GlobalMaxconn,
    GlobalMaxaccept,
    Watchdog,
    Log,
    Admin,
    Actors,
    Cluster,
}

impl RestartKey {
    /// The configuration key, as operators write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartKey::GlobalWorkers => "global.workers",
            RestartKey::GlobalMaxconn => "global.maxconn",
            RestartKey::GlobalMaxaccept => "global.maxaccept",
            RestartKey::Watchdog => "watchdog",
            RestartKey::Log => "log",
            RestartKey::Admin => "admin",
            RestartKey::Actors => "actors",
            RestartKey::Cluster => "cluster",
        }
    }
}

impl fmt::Display for RestartKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RestartKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What a reload did, for its log record and `POST /reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    /// Every change applied, in the order applied.
    pub changes: Vec<ReloadChange>,
    /// Changed keys that keep their running value until a restart.
    pub restart_needed: Vec<RestartKey>,
}

impl ReloadSummary {
    /// `restart_needed` as the `reload done` record shows it: `a,b`.
    pub fn restart_needed_list(&self) -> String {
        self.restart_needed.iter().map(|key| key.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, Clone)]
pub enum ReloadError {
    /// The broker was started without a configuration source to re-read.
    NoSource,
    /// The new configuration has errors (all of them).
    Config(ConfigErrors),
    /// A new listening address cannot be bound.
    Bind(String),
    /// The configuration loader panicked (an embedder's loader: the
    /// daemon's returns errors); its message.
    LoaderPanicked(String),
    /// The broker is shutting down.
    Stopping,
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoSource => write!(f, "no configuration source to re-read"),
            ReloadError::Config(errors) => write!(f, "{}", errors.to_string().trim_end()),
            ReloadError::Bind(err) => write!(f, "{err}"),
            ReloadError::LoaderPanicked(message) => write!(f, "the configuration loader panicked: {message}"),
            ReloadError::Stopping => write!(f, "shutting down"),
        }
    }
}

impl std::error::Error for ReloadError {}
