//! Run-time topology changes: a server added to or removed from a backend
//! through the handle (and the admin API). Each is an edit of the settings
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

use std::collections::BTreeMap;

use actix::prelude::*;

use super::handle::{BrokerHandle, ControlError};
use super::reload_outcome::ReloadSummary;
use crate::config::{ServerSettings, Settings};

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
    /// built-in defaults.
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
        let new = server_settings(backend, server, body)?;
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

/// Reads a server's settings from a JSON object, as the configuration
/// reads a `[backends.B.servers.S]` table.
fn server_settings(backend: &str, server: &str, body: serde_json::Value) -> Result<ServerSettings, ControlError> {
    if !body.is_object() {
        return Err(ControlError::Rejected(format!(
            "expected a JSON object with the keys of [backends.{backend}.servers.{server}]"
        )));
    }
    let table = toml::Value::try_from(&body)
        .map_err(|err| ControlError::Rejected(format!("the server's settings are not a configuration table: {err}")))?;
    let mut servers = BTreeMap::new();
    servers.insert(server.to_owned(), table);
    let mut one = BTreeMap::new();
    one.insert("servers", servers);
    let mut backends = BTreeMap::new();
    backends.insert(backend.to_owned(), one);
    let mut root = BTreeMap::new();
    root.insert("backends", backends);
    let text = toml::to_string(&root)
        .map_err(|err| ControlError::Rejected(format!("the server's settings are not a configuration table: {err}")))?;
    let parsed = crate::config::from_toml_str(&text).map_err(|errors| {
        // Every problem at once, each naming its key; they all come from
        // the request body.
        let problems: Vec<String> = errors.0.iter().map(|e| format!("{}: {}", e.key, e.problem)).collect();
        ControlError::Rejected(format!("invalid server in the request body: {}", problems.join("; ")))
    })?;
    parsed
        .backend(backend)
        .and_then(|b| b.servers.iter().find(|s| s.name == server))
        .cloned()
        .ok_or_else(|| ControlError::Rejected(format!("no settings read for server {server:?}")))
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

    #[test]
    fn a_server_body_is_validated_as_the_configuration_with_every_problem_named() {
        let ok = server_settings("app", "s2", serde_json::json!({"address": "127.0.0.1:2", "maxconn": 3})).unwrap();
        assert_eq!((ok.name.as_str(), ok.address.port(), ok.maxconn.map(|m| m.get())), ("s2", 2, Some(3)));
        let bad = server_settings("app", "s2", serde_json::json!({"address": "nowhere", "weight": 9999, "colour": 1}))
            .unwrap_err()
            .to_string();
        for key in ["backends.app.servers.s2.address", "backends.app.servers.s2.weight", "backends.app.servers.s2.colour"]
        {
            assert!(bad.contains(key), "{key} not named in {bad}");
        }
        assert!(bad.contains("request body") && !bad.contains("inline"), "{bad}");
        assert!(server_settings("app", "s2", serde_json::json!([1])).unwrap_err().to_string().contains("JSON object"));
    }

    #[test]
    fn edits_name_what_is_unknown_or_taken() {
        let current = crate::config::from_toml_str(BASE).unwrap();
        let s2 = server_settings("app", "s2", serde_json::json!({"address": "127.0.0.1:2"})).unwrap();
        let added = with_server_added(&current, "app", s2.clone()).unwrap();
        assert_eq!(added.backend("app").unwrap().servers.len(), 2);
        assert!(with_server_added(&added, "app", s2.clone()).unwrap_err().to_string().contains("exists"));
        assert_eq!(with_server_added(&current, "nope", s2).unwrap_err(), ControlError::UnknownBackend("nope".into()));
        let removed = with_server_removed(&added, "app", "s1").unwrap();
        assert_eq!(removed.backend("app").unwrap().servers[0].name, "s2");
        assert!(matches!(with_server_removed(&current, "app", "s9"), Err(ControlError::UnknownServer { .. })));
    }
}
