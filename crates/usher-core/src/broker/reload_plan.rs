//! Hot reload decisions, with no actix in them: what a new configuration
//! changes, what must wait for a restart, and how each server is carried
//! over. [`super::planner`] turns them into a plan the Topology commits.
//!
//! The rules, as an operator coming from HAProxy or Envoy expects them:
//! - things are matched by name (frontends, backends, servers in their
//!   backend) and listeners by configured address;
//! - a server the new configuration does not change keeps its actor, its
//!   slots, its health and every run-time change made through the admin API
//!   (drain, maint, weight, maxconn);
//! - a changed server keeps its actor and its slots (so `maxconn` holds
//!   across the reload) but takes the configured values: the configuration
//!   wins over run-time changes for what it changed;
//! - a server whose address changed, or that switched between limited and
//!   unlimited `maxconn`, is a new server: the old one finishes its sessions;
//! - process-wide settings fixed at start (threads, fd budget, logger,
//!   admin listener, watchdog timers) keep their running values and the
//!   reload names them.

use crate::config::RestartKey;
use crate::config::{ServerSettings, Settings};

/// How a server is carried over by a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPlan {
    /// Unchanged: untouched, run-time changes survive.
    Keep,
    /// Same server, new settings applied to the running actor.
    Update,
    /// A different server under the same name: the old one is retired and a
    /// new one starts.
    Replace,
}

pub fn server_plan(old: &ServerSettings, new: &ServerSettings) -> ServerPlan {
    if old.address != new.address || old.maxconn.is_none() != new.maxconn.is_none() {
        ServerPlan::Replace
    } else if old == new {
        ServerPlan::Keep
    } else {
        ServerPlan::Update
    }
}

/// Keys whose change needs a restart, changed between `old` and `new`.
pub fn restart_needed(old: &Settings, new: &Settings) -> Vec<RestartKey> {
    let (o, n) = (&old.global, &new.global);
    let changed = [
        (RestartKey::GlobalWorkers, o.workers != n.workers),
        (RestartKey::GlobalMaxconn, o.maxconn != n.maxconn),
        (RestartKey::GlobalMaxaccept, o.maxaccept != n.maxaccept),
        (RestartKey::Watchdog, old.watchdog != new.watchdog),
        (RestartKey::Log, old.log != new.log),
        (RestartKey::Admin, old.admin != new.admin),
        (RestartKey::Actors, old.actors != new.actors),
        (RestartKey::Cluster, old.cluster != new.cluster),
    ];
    changed.into_iter().filter(|(_, changed)| *changed).map(|(key, _)| key).collect()
}

/// `new`, with the keys that need a restart set back to their running
/// values (`old`): what a reload actually applies.
pub fn applicable(old: &Settings, mut new: Settings) -> Settings {
    new.global.workers = old.global.workers;
    new.global.maxconn = old.global.maxconn;
    new.global.maxaccept = old.global.maxaccept;
    new.watchdog = old.watchdog.clone();
    new.log = old.log.clone();
    new.admin = old.admin.clone();
    new.actors = old.actors.clone();
    new.cluster = old.cluster.clone();
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let toml = format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\n[backends.app.servers.a]\n\
             address = \"127.0.0.1:1\"\nmaxconn = 4\n{extra}"
        );
        crate::config::from_toml_str(&toml).expect("valid")
    }

    fn server(s: &Settings) -> &ServerSettings {
        &s.backends[0].servers[0]
    }

    #[test]
    fn servers_are_kept_updated_or_replaced() {
        let base = settings("");
        assert_eq!(server_plan(server(&base), server(&settings(""))), ServerPlan::Keep);
        assert_eq!(server_plan(server(&base), server(&settings("weight = 7"))), ServerPlan::Update);
        assert_eq!(
            server_plan(server(&base), server(&settings("[backends.app.servers.a.check]\nenabled = true"))),
            ServerPlan::Update
        );
        let moved = settings("").to_toml().replace("127.0.0.1:1", "127.0.0.1:2");
        let moved = crate::config::from_toml_str(&moved).expect("valid");
        assert_eq!(server_plan(server(&base), server(&moved)), ServerPlan::Replace);
        let unlimited = settings("").to_toml().replace("maxconn = 4", "maxconn = 0");
        let unlimited = crate::config::from_toml_str(&unlimited).expect("valid");
        assert_eq!(server_plan(server(&base), server(&unlimited)), ServerPlan::Replace);
    }

    #[test]
    fn process_settings_wait_for_a_restart() {
        let old = settings("");
        let mut new = settings("");
        new.global.workers = std::num::NonZeroU32::new(7);
        new.global.bufsize = 65536;
        new.log.level = crate::config::LogLevel::Debug;
        assert_eq!(restart_needed(&old, &new), vec![RestartKey::GlobalWorkers, RestartKey::Log]);
        let applied = applicable(&old, new);
        assert_eq!(applied.global.workers, old.global.workers);
        assert_eq!(applied.log, old.log);
        assert_eq!(applied.global.bufsize, 65536, "bufsize applies to new sessions");
    }
}
