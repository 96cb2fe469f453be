//! `backends.X.spawn`: usher starts the backend's server processes itself,
//! on demand, as Postfix's master starts a service's processes. Read like
//! every other section, so `usher check` names each bad key.
//!
//! A spawned backend declares no `servers`: it has `max_procs` process
//! slots, each a server of `sessions_per_proc` slots whose address is the
//! port usher picked for the process running in it.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use config::ValueKind;
use serde::Serialize;

use super::reader::{Report, Section};

/// Most processes one spawned backend may run: each is a server of the
/// backend, and every server costs a slot in each balancing decision.
pub const MAX_PROCS: u32 = 256;

/// How usher knows a started process serves (`spawn.ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyProbe {
    /// The process accepts a TCP connection on its address.
    Connect,
}

/// The signal that asks a process to stop (`spawn.stop_signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopSignal {
    #[serde(rename = "SIGTERM")]
    Term,
    #[serde(rename = "SIGINT")]
    Int,
    #[serde(rename = "SIGQUIT")]
    Quit,
    #[serde(rename = "SIGHUP")]
    Hup,
    #[serde(rename = "SIGUSR1")]
    Usr1,
    #[serde(rename = "SIGUSR2")]
    Usr2,
}

impl StopSignal {
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Term => libc::SIGTERM,
            StopSignal::Int => libc::SIGINT,
            StopSignal::Quit => libc::SIGQUIT,
            StopSignal::Hup => libc::SIGHUP,
            StopSignal::Usr1 => libc::SIGUSR1,
            StopSignal::Usr2 => libc::SIGUSR2,
        }
    }
}

/// `backends.X.spawn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpawnSettings {
    /// Program and arguments; `{port}` and `{address}` are replaced by the
    /// port and `127.0.0.1:port` usher picked for the process.
    pub command: Vec<String>,
    /// Added to usher's environment (placeholders replaced too).
    pub env: BTreeMap<String, String>,
    /// Where the process starts (`None`: usher's own directory, written "").
    pub working_dir: Option<PathBuf>,
    /// Processes kept running even with no demand (0 = scale to zero).
    pub min_procs: u32,
    pub max_procs: NonZeroU32,
    /// Each process is a server with this maxconn.
    pub sessions_per_proc: NonZeroU32,
    /// Longest a process may take to become ready; dying within it counts
    /// as a failed start.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    pub ready: ReadyProbe,
    /// A process with no session for this long is stopped, down to
    /// `min_procs` (`None` = never, written 0).
    #[serde(serialize_with = "duration_or_zero")]
    pub idle_timeout: Option<Duration>,
    /// Sessions a process serves in its life; then it takes no new one and
    /// is stopped once its last session ends (`None` = no limit, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub max_use: Option<NonZeroU32>,
    pub stop_signal: StopSignal,
    /// After the stop signal, how long before SIGKILL.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// How long a throttled backend refuses its clients before it tries
    /// to start a process again.
    #[serde(with = "humantime_serde")]
    pub throttle_time: Duration,
    /// Failed starts in a row that throttle the backend.
    pub max_start_failures: NonZeroU32,
}

fn duration_or_zero<S: serde::Serializer>(d: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&d.map_or("0".to_owned(), |d| humantime::format_duration(d).to_string()))
}

fn limit_or_zero<S: serde::Serializer>(limit: &Option<NonZeroU32>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u32(limit.map_or(0, NonZeroU32::get))
}

/// The placeholders a command or an environment value may hold.
pub const PORT_PLACEHOLDER: &str = "{port}";
pub const ADDRESS_PLACEHOLDER: &str = "{address}";

/// Reads `spawn` under a backend section: `Some(None)` when the backend
/// has no `spawn` table, `None` when it has one with errors (reported).
pub(super) fn spawn_keys(backend: &mut Section, report: &mut Report<'_>) -> Option<Option<SpawnSettings>> {
    // Only the backend's own table says it is spawned; the defaults
    // (`defaults.backend.spawn`) fill in the keys it leaves out.
    let declared = backend.entries().iter().any(|(key, _)| key == "spawn");
    let mut s = backend.sub("spawn", report);
    if !declared {
        return Some(None);
    }
    let path = s.path().to_owned();
    let command: Option<Vec<String>> =
        s.get("command", "a non-empty array of strings such as [\"my-server\", \"--port\", \"{port}\"]", report, |v| {
            match v {
                ValueKind::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| match &i.kind {
                        ValueKind::String(s) if !s.is_empty() => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            }
        });
    // Optional: an empty table may not survive the merge of the layers.
    let env = match s.optional("env") {
        None => Some(BTreeMap::new()),
        Some((key, value)) => {
            let read: Option<BTreeMap<String, String>> = match &value.kind {
                ValueKind::Table(t) => t
                    .iter()
                    .map(|(k, v)| match &v.kind {
                        ValueKind::String(s) => Some((k.clone(), s.clone())),
                        ValueKind::I64(n) => Some((k.clone(), n.to_string())),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            if read.is_none() {
                report.error(&key, "expected a table of strings such as { PORT = \"{port}\" }");
            }
            read
        }
    };
    let working_dir = s.text("working_dir", report).map(|d| (!d.is_empty()).then(|| PathBuf::from(d)));
    let min_procs = s.u32_in("min_procs", 0, MAX_PROCS, report);
    let max_procs = s.u32_in("max_procs", 1, MAX_PROCS, report).and_then(NonZeroU32::new);
    let sessions_per_proc = s.u32_in("sessions_per_proc", 1, 1_000_000, report).and_then(NonZeroU32::new);
    let start_timeout =
        s.duration_set_up_to("start_timeout", Duration::from_secs(3600), "a process would never be ready", report);
    let ready = s.choice("ready", &[("connect", ReadyProbe::Connect)], report);
    let idle_timeout = s.duration_or_none("idle_timeout", report);
    let max_use = s.limit_up_to("max_use", u32::MAX, report);
    let stop_signal = s.choice(
        "stop_signal",
        &[
            ("SIGTERM", StopSignal::Term),
            ("SIGINT", StopSignal::Int),
            ("SIGQUIT", StopSignal::Quit),
            ("SIGHUP", StopSignal::Hup),
            ("SIGUSR1", StopSignal::Usr1),
            ("SIGUSR2", StopSignal::Usr2),
        ],
        report,
    );
    let stop_timeout = s.duration("stop_timeout", report);
    let throttle_time = s.duration_set_up_to(
        "throttle_time",
        Duration::from_secs(86_400),
        "a crashing command would restart in a loop",
        report,
    );
    let max_start_failures = s.u32_in("max_start_failures", 1, 1000, report).and_then(NonZeroU32::new);
    s.finish(report);

    if let (Some(min), Some(max)) = (min_procs, max_procs) {
        if min > max.get() {
            report.error(
                &format!("{path}.min_procs"),
                format!("{min} is above max_procs ({max}); expected at most max_procs"),
            );
            return None;
        }
    }
    if let (Some(command), Some(env)) = (&command, &env) {
        let placed = |text: &String| text.contains(PORT_PLACEHOLDER) || text.contains(ADDRESS_PLACEHOLDER);
        if !command.iter().any(placed) && !env.values().any(placed) {
            report.error(
                &format!("{path}.command"),
                "names no address; expected {port} or {address} in command or env, so the process listens where usher \
                 sends its clients",
            );
            return None;
        }
    }
    Some(Some(SpawnSettings {
        command: command?,
        env: env?,
        working_dir: working_dir?,
        min_procs: min_procs?,
        max_procs: max_procs?,
        sessions_per_proc: sessions_per_proc?,
        start_timeout: start_timeout?,
        ready: ready?,
        idle_timeout: idle_timeout?,
        max_use: max_use?,
        stop_signal: stop_signal?,
        stop_timeout: stop_timeout?,
        throttle_time: throttle_time?,
        max_start_failures: max_start_failures?,
    }))
}

/// The name of process slot `index` (0-based) of a spawned backend: the
/// server name `/stats`, `/metrics` and the access records show.
pub fn slot_name(index: usize) -> String {
    format!("proc{}", index + 1)
}

#[cfg(test)]
mod tests {
    use crate::config::from_toml_str;

    const FRONT: &str = "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n";

    fn problems(spawn: &str) -> String {
        let toml = format!("{FRONT}[backends.app.spawn]\n{spawn}");
        match from_toml_str(&toml) {
            Ok(_) => String::new(),
            Err(errors) => errors.0.iter().map(|e| format!("{}: {}\n", e.key, e.problem)).collect(),
        }
    }

    #[test]
    fn a_spawn_table_makes_its_process_slots_servers() {
        let toml = format!(
            "{FRONT}[backends.app.spawn]\ncommand = [\"srv\", \"--listen\", \"{{address}}\"]\nmax_procs = 3\n\
             sessions_per_proc = 4\nmax_use = 100\nstop_signal = \"SIGINT\"\n"
        );
        let settings = from_toml_str(&toml).expect("valid");
        let app = settings.backend("app").expect("app");
        let spawn = app.spawn.as_ref().expect("spawned");
        assert_eq!(
            (spawn.max_procs.get(), spawn.sessions_per_proc.get(), spawn.max_use.map(|m| m.get())),
            (3, 4, Some(100))
        );
        assert_eq!(spawn.stop_signal.number(), libc::SIGINT);
        let names: Vec<&str> = app.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["proc1", "proc2", "proc3"]);
        assert!(app.servers.iter().all(|s| s.maxconn.map(|m| m.get()) == Some(4) && !s.check.enabled));
        // A backend without the table is not spawned.
        let plain = from_toml_str(&format!("{FRONT}[backends.app.servers.s1]\naddress = \"127.0.0.1:1\"\n")).unwrap();
        assert!(plain.backend("app").unwrap().spawn.is_none());
    }

    #[test]
    fn every_bad_key_is_named() {
        let bad = problems(
            "command = []\nmax_procs = 0\nsessions_per_proc = 0\nstart_timeout = \"0\"\nready = \"ping\"\n\
             stop_signal = \"SIGSTOP\"\nthrottle_time = \"0\"\nmax_start_failures = 0\nenv = { A = [1] }\ncolour = 1\n",
        );
        for key in [
            "backends.app.spawn.command",
            "backends.app.spawn.max_procs",
            "backends.app.spawn.sessions_per_proc",
            "backends.app.spawn.start_timeout",
            "backends.app.spawn.ready",
            "backends.app.spawn.stop_signal",
            "backends.app.spawn.throttle_time",
            "backends.app.spawn.max_start_failures",
            "backends.app.spawn.env",
            "backends.app.spawn.colour",
        ] {
            assert!(bad.contains(&format!("{key}:")), "{key} not named in:\n{bad}");
        }
        let no_port = problems("command = [\"srv\"]\n");
        assert!(no_port.contains("backends.app.spawn.command: names no address"), "{no_port}");
        let min = problems("command = [\"srv\", \"{port}\"]\nmin_procs = 3\nmax_procs = 2\n");
        assert!(min.contains("backends.app.spawn.min_procs: 3 is above max_procs"), "{min}");
        let both = format!(
            "{FRONT}[backends.app.spawn]\ncommand = [\"srv\", \"{{port}}\"]\n\
             [backends.app.servers.s1]\naddress = \"127.0.0.1:1\"\n"
        );
        let err = from_toml_str(&both).unwrap_err().to_string();
        assert!(err.contains("backends.app.servers") && err.contains("expected no servers"), "{err}");
        // The port may come through the environment only.
        assert_eq!(problems("command = [\"srv\"]\nenv = { PORT = \"{port}\" }\n"), "");
    }

    #[test]
    fn the_spawn_demo_is_valid() {
        let demo = from_toml_str(include_str!("../../../../configs/spawn-demo.toml")).expect("configs/spawn-demo.toml");
        let files = demo.backend("files").expect("files");
        assert_eq!(files.spawn.as_ref().map(|s| s.max_procs.get()), Some(3));
    }
}
