//! Run-time topology changes: a server added to or removed from a backend,
//! a backend added or removed, through the handle (and the admin API). Each is an edit of the settings
//! in force, made inside the Topology actor ([`Amend`]) so two changes never
//! overwrite each other, then applied by the very plan → commit path a
//! reload takes: a new server starts and lends its slots, a removed one
//! finishes its sessions while its queue moves to the others, maxconn holds.
//!
//! How they meet a reload: a reload re-reads the configuration files and
//! applies them whole, so a server added at run time and absent from the
//! files is removed by the next reload, and a server removed at run time
//! comes back if the files still list it. Run-time changes last until the
//! next reload or restart; put them in the files to keep them.

use actix::prelude::*;

use super::handle::{BrokerHandle, ControlError};
use crate::config::ReloadSummary;
use crate::config::{BackendSettings, DefaultTables, ServerSettings, Settings};

/// An edit of the settings in force, applied as a reload.
pub(super) type Edit = Box<dyn FnOnce(&Settings) -> Result<Settings, ControlError> + Send>;

/// Edits the settings in force and applies the result as a reload would.
#[derive(Message)]
#[rtype(result = "Result<ReloadSummary, ControlError>")]
pub(super) struct Amend {
    pub(super) edit: Edit,
}

impl BrokerHandle {
    /// Adds server `server` to `backend`, its settings read from `body` (a
    /// JSON object with the keys of a `[backends.B.servers.S]` table)
    /// through the same validation as the configuration: every problem is
    /// reported at once, each naming its key. Keys not given take the
    /// configuration's `[defaults.server]`, as a server of the files would.
    pub async fn add_server(
        &self,
        backend: &str,
        server: &str,
        body: serde_json::Value,
    ) -> Result<ReloadSummary, ControlError> {
        // An unknown backend is named as such, before its server is read.
        if self.settings().backend(backend).is_none() {
            return Err(ControlError::UnknownBackend(backend.to_owned()));
        }
        let new = server_settings(backend, server, body, &self.settings().defaults)?;
        let backend = backend.to_owned();
        self.amend(Box::new(move |current| with_server_added(current, &backend, new))).await
    }

    /// Removes server `server` from `backend`: its queue moves to the other
    /// servers, its live sessions finish.
    pub async fn remove_server(&self, backend: &str, server: &str) -> Result<ReloadSummary, ControlError> {
        let (backend, server) = (backend.to_owned(), server.to_owned());
        self.amend(Box::new(move |current| with_server_removed(current, &backend, &server))).await
    }
}

impl BrokerHandle {
    /// Adds backend `backend`, its settings and servers read from `body` (a
    /// JSON object with the keys of a `[backends.B]` table, `servers`
    /// included), validated as the configuration, over its
    /// `[defaults.backend]` and `[defaults.server]`. Frontends reach it
    /// once a reload or a routing rule names it.
    pub async fn add_backend(&self, backend: &str, body: serde_json::Value) -> Result<ReloadSummary, ControlError> {
        let defaults = &self.settings().defaults;
        let new = backend_settings(backend, body, &format!("[backends.{backend}]"), defaults)?;
        self.amend(Box::new(move |current| with_backend_added(current, new))).await
    }

    /// Removes backend `backend`, which no frontend or routing rule may
    /// name: its queued clients are still served, its sessions finish.
    pub async fn remove_backend(&self, backend: &str) -> Result<ReloadSummary, ControlError> {
        let backend = backend.to_owned();
        self.amend(Box::new(move |current| with_backend_removed(current, &backend))).await
    }
}

/// Reads a server's settings from a JSON object, as the configuration
/// reads a `[backends.B.servers.S]` table, over `defaults`.
fn server_settings(
    backend: &str,
    server: &str,
    body: serde_json::Value,
    defaults: &DefaultTables,
) -> Result<ServerSettings, ControlError> {
    if !body.is_object() {
        return Err(ControlError::Rejected(format!(
            "expected a JSON object with the keys of [backends.{backend}.servers.{server}]"
        )));
    }
    let mut servers = serde_json::Map::new();
    servers.insert(server.to_owned(), body);
    let wrapped = serde_json::json!({ "servers": servers });
    let parsed = backend_settings(backend, wrapped, &format!("[backends.{backend}.servers.{server}]"), defaults)?;
    if parsed.dns.iter().any(|d| d.name == server) {
        return Err(ControlError::Rejected(format!(
            "backends.{backend}.servers.{server}.address: a host name; expected \"IP:PORT\" for a server added at \
             run time (servers by host name and templates go in the configuration files)"
        )));
    }
    parsed
        .servers
        .into_iter()
        .find(|s| s.name == server)
        .ok_or_else(|| ControlError::Rejected(format!("no settings read for server {server:?}")))
}

/// Reads a backend's settings (servers included) from a JSON object, as the
/// configuration reads a `[backends.B]` table: one validation pass over a
/// document holding only it and the configuration's defaults tables
/// (`defaults`), every problem reported at once with its key. `table`
/// names the table for the "expected an object" error.
fn backend_settings(
    backend: &str,
    body: serde_json::Value,
    table: &str,
    defaults: &DefaultTables,
) -> Result<BackendSettings, ControlError> {
    let not_a_table = || ControlError::Rejected(format!("expected a JSON object with the keys of {table}"));
    if !body.is_object() || body.get("servers").is_some_and(|s| !s.is_object()) {
        return Err(not_a_table());
    }
    let value = toml::Value::try_from(&body)
        .map_err(|err| ControlError::Rejected(format!("the settings are not a configuration table: {err}")))?;
    let mut backends = toml::Table::new();
    backends.insert(backend.to_owned(), value);
    let mut root = toml::Table::new();
    root.insert("backends".into(), toml::Value::Table(backends));
    let mut tables = toml::Table::new();
    tables.insert("backend".into(), toml::Value::Table(defaults.backend.clone()));
    tables.insert("server".into(), toml::Value::Table(defaults.server.clone()));
    root.insert("defaults".into(), toml::Value::Table(tables));
    let text = toml::to_string(&root)
        .map_err(|err| ControlError::Rejected(format!("the settings are not a configuration table: {err}")))?;
    let parsed = crate::config::from_toml_str(&text).map_err(|errors| {
        // Every problem at once, each naming its key; they all come from
        // the request body.
        let problems: Vec<String> = errors.0.iter().map(|e| format!("{}: {}", e.key, e.problem)).collect();
        ControlError::Rejected(format!("invalid settings in the request body: {}", problems.join("; ")))
    })?;
    parsed.backends.into_iter().find(|b| b.name == backend).ok_or_else(not_a_table)
}

fn with_backend_added(current: &Settings, backend: BackendSettings) -> Result<Settings, ControlError> {
    if current.backend(&backend.name).is_some() {
        return Err(ControlError::Rejected(format!(
            "backends.{}: a backend of that name exists; expected a new name",
            backend.name
        )));
    }
    let mut new = current.clone();
    new.backends.push(backend);
    Ok(new)
}

/// A backend a frontend or a routing rule still names cannot go: every
/// such reference is named at once.
fn with_backend_removed(current: &Settings, backend: &str) -> Result<Settings, ControlError> {
    if current.backend(backend).is_none() {
        return Err(ControlError::UnknownBackend(backend.to_owned()));
    }
    let mut users = Vec::new();
    for f in &current.frontends {
        if f.backend == backend {
            users.push(format!("frontends.{}.backend", f.name));
        }
        for (i, rule) in f.routes.iter().enumerate() {
            if rule.backend == backend || rule.overflow.as_ref().is_some_and(|o| o.backend == backend) {
                users.push(format!("frontends.{}.routes[{i}]", f.name));
            }
        }
    }
    if !users.is_empty() {
        return Err(ControlError::Rejected(format!(
            "backend {backend:?} is still used by {}; expected no frontend or route to name it",
            users.join(", ")
        )));
    }
    let mut new = current.clone();
    new.backends.retain(|b| b.name != backend);
    Ok(new)
}

fn with_server_added(current: &Settings, backend: &str, server: ServerSettings) -> Result<Settings, ControlError> {
    let mut new = current.clone();
    let b = new.backends.iter_mut().find(|b| b.name == backend);
    let b = b.ok_or_else(|| ControlError::UnknownBackend(backend.to_owned()))?;
    if b.servers.iter().any(|s| s.name == server.name) {
        return Err(ControlError::Rejected(format!(
            "backends.{backend}.servers.{}: a server of that name exists; expected a new name \
             (PUT changes a server, DELETE removes it)",
            server.name
        )));
    }
    b.servers.push(server);
    Ok(new)
}

fn with_server_removed(current: &Settings, backend: &str, server: &str) -> Result<Settings, ControlError> {
    let mut new = current.clone();
    let b = new.backends.iter_mut().find(|b| b.name == backend);
    let b = b.ok_or_else(|| ControlError::UnknownBackend(backend.to_owned()))?;
    let before = b.servers.len();
    b.servers.retain(|s| s.name != server);
    if b.servers.len() == before {
        return Err(ControlError::UnknownServer { backend: backend.to_owned(), server: server.to_owned() });
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
                        [backends.app.servers.s1]\naddress = \"127.0.0.1:1\"\nmaxconn = 4\n";

    /// The defaults tables of the built-in configuration.
    fn builtin() -> DefaultTables {
        crate::config::from_toml_str("").unwrap().defaults
    }

    #[test]
    fn a_server_added_at_run_time_takes_the_files_defaults() {
        let files = crate::config::from_toml_str(&format!(
            "{BASE}[defaults.server]\nmaxconn = 7\nweight = 3\n[defaults.server.check]\nrise = 5\n\
             [defaults.backend]\nretries = 9\n"
        ))
        .unwrap();
        let s2 = server_settings("app", "s2", serde_json::json!({"address": "127.0.0.1:2", "weight": 4}), &files.defaults)
            .unwrap();
        assert_eq!((s2.maxconn.map(|m| m.get()), s2.weight, s2.check.rise), (Some(7), 4, 5));
        let body = serde_json::json!({"servers": {"a": {"address": "127.0.0.1:3"}}});
        let db = backend_settings("db", body, "[backends.db]", &files.defaults).unwrap();
        assert_eq!((db.retries, db.servers[0].maxconn.map(|m| m.get())), (9, Some(7)));
        let named = server_settings("app", "s3", serde_json::json!({"address": "db.test:5432"}), &files.defaults);
        assert!(named.unwrap_err().to_string().contains("backends.app.servers.s3.address"));
    }

    #[test]
    fn a_server_body_is_validated_as_the_configuration_with_every_problem_named() {
        let ok = server_settings("app", "s2", serde_json::json!({"address": "127.0.0.1:2", "maxconn": 3}), &builtin()).unwrap();
        assert_eq!((ok.name.as_str(), ok.address.port(), ok.maxconn.map(|m| m.get())), ("s2", 2, Some(3)));
        let bad = server_settings("app", "s2", serde_json::json!({"address": "nowhere", "weight": 9999, "colour": 1}), &builtin())
            .unwrap_err()
            .to_string();
        for key in ["backends.app.servers.s2.address", "backends.app.servers.s2.weight", "backends.app.servers.s2.colour"]
        {
            assert!(bad.contains(key), "{key} not named in {bad}");
        }
        assert!(bad.contains("request body") && !bad.contains("inline"), "{bad}");
        assert!(server_settings("app", "s2", serde_json::json!([1]), &builtin()).unwrap_err().to_string().contains("JSON object"));
    }

    #[test]
    fn backends_are_added_validated_and_removed_only_when_nothing_names_them() {
        let current = crate::config::from_toml_str(BASE).unwrap();
        let body = serde_json::json!({"balance": "leastconn", "servers": {"a": {"address": "127.0.0.1:3"}}});
        let db = backend_settings("db", body, "[backends.db]", &builtin()).unwrap();
        assert_eq!((db.name.as_str(), db.servers.len()), ("db", 1));
        let added = with_backend_added(&current, db.clone()).unwrap();
        assert!(with_backend_added(&added, db).unwrap_err().to_string().contains("exists"));
        let bad = backend_settings("db", serde_json::json!({"balance": "dice", "servers": {"a": {}}}), "[backends.db]", &builtin())
            .unwrap_err()
            .to_string();
        assert!(bad.contains("backends.db.balance") && bad.contains("backends.db.servers.a.address"), "{bad}");
        let used = with_backend_removed(&added, "app").unwrap_err().to_string();
        assert!(used.contains("frontends.web.backend"), "{used}");
        assert_eq!(with_backend_removed(&added, "db").unwrap().backends.len(), 1);
        assert_eq!(with_backend_removed(&current, "nope").unwrap_err(), ControlError::UnknownBackend("nope".into()));
    }

    #[test]
    fn edits_name_what_is_unknown_or_taken() {
        let current = crate::config::from_toml_str(BASE).unwrap();
        let s2 = server_settings("app", "s2", serde_json::json!({"address": "127.0.0.1:2"}), &builtin()).unwrap();
        let added = with_server_added(&current, "app", s2.clone()).unwrap();
        assert_eq!(added.backend("app").unwrap().servers.len(), 2);
        assert!(with_server_added(&added, "app", s2.clone()).unwrap_err().to_string().contains("exists"));
        assert_eq!(with_server_added(&current, "nope", s2).unwrap_err(), ControlError::UnknownBackend("nope".into()));
        let removed = with_server_removed(&added, "app", "s1").unwrap();
        assert_eq!(removed.backend("app").unwrap().servers[0].name, "s2");
        assert!(matches!(with_server_removed(&current, "app", "s9"), Err(ControlError::UnknownServer { .. })));
    }
}
