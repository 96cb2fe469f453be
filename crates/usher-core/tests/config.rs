//! Integration tests of the configuration pipeline: layers (defaults, inline
//! documents, files, environment) → one validation pass → `Settings`, and the
//! errors an operator sees (key, layer, what was expected).
//!
//! No sockets, no process environment: the environment layer is always given
//! as `EnvLayer::Vars` or `EnvLayer::None`, so tests can run in parallel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use usher_core::config::{
    self, ConfigError, ConfigErrorKind, ConfigErrors, ConfigSources, EnvLayer, LogFormat, LogLevel, LogOverflow,
    Settings, ZeroForNone,
};

const DEMO_TOML: &str = include_str!("../../../configs/demo.toml");

/// A small valid configuration: one frontend, one backend, two servers.
const GOOD: &str = r#"
[frontends.web]
bind = ["127.0.0.1:0"]
backend = "app"

[backends.app.servers.s1]
address = "127.0.0.1:9"
weight = 2
maxconn = 1

[backends.app.servers.s2]
address = "127.0.0.1:10"
"#;

// ---------------------------------------------------------------- helpers

/// A temporary file that is removed when dropped.
struct TempToml {
    path: PathBuf,
}

impl TempToml {
    fn new(contents: &str) -> TempToml {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("usher-config-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, contents).expect("write temp config");
        TempToml { path }
    }

    fn origin(&self) -> String {
        format!("file {}", self.path.display())
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn no_layers() -> ConfigSources {
    ConfigSources { inline: vec![], files: vec![], env: EnvLayer::None }
}

fn files(files: &[&TempToml]) -> ConfigSources {
    ConfigSources { inline: vec![], files: files.iter().map(|f| f.path.clone()).collect(), env: EnvLayer::None }
}

fn vars(pairs: &[(&str, &str)]) -> EnvLayer {
    EnvLayer::Vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>())
}

fn ok(sources: &ConfigSources) -> Settings {
    match config::load(sources) {
        Ok(settings) => settings,
        Err(errors) => panic!("expected a valid configuration, got:\n{errors}"),
    }
}

fn errors(sources: &ConfigSources) -> ConfigErrors {
    match config::load(sources) {
        Ok(settings) => panic!("expected configuration errors, got a valid configuration:\n{}", settings.to_toml()),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err(ConfigErrors) with no error in it");
            errors
        }
    }
}

fn inline_errors(toml: &str) -> ConfigErrors {
    errors(&ConfigSources::inline(toml))
}

/// The single error about `key`; fails when there is none or several.
fn error_for<'a>(errors: &'a ConfigErrors, key: &str) -> &'a ConfigError {
    let found: Vec<&ConfigError> = errors.0.iter().filter(|e| e.key == key).collect();
    assert_eq!(found.len(), 1, "expected exactly one error for {key:?}, got:\n{errors}");
    found[0]
}

/// Asserts there is an error for `key` from `origin` whose problem contains
/// every one of `needles`.
fn assert_error(errors: &ConfigErrors, key: &str, origin: &str, needles: &[&str]) {
    let err = error_for(errors, key);
    assert_eq!(err.origin, origin, "origin of the error for {key:?} in:\n{errors}");
    for needle in needles {
        assert!(err.problem.contains(needle), "problem for {key:?} should mention {needle:?}: {:?}", err.problem);
    }
    // The rendered form carries all three parts too.
    let shown = errors.to_string();
    assert!(shown.contains(key) && shown.contains(origin), "rendered errors lack key/origin:\n{shown}");
}

const INLINE: &str = "inline document #1";

// ------------------------------------------------------ 1. defaults alone

#[test]
fn embedded_defaults_alone_load() {
    let s = ok(&no_layers());
    assert!(s.frontends.is_empty(), "defaults declare no frontend");
    assert!(s.backends.is_empty(), "defaults declare no backend");
    assert!(s.actors.is_empty(), "defaults declare no actor table");

    assert_eq!(s.global.maxconn.or_zero(), 0, "0 = derived from the fd budget");
    assert_eq!(s.global.maxconnrate.or_zero(), 0);
    assert_eq!(s.watchdog.warn_interval, Duration::from_secs(60));
    assert_eq!(s.global.workers.or_zero(), 0);
    assert_eq!(s.global.grace, Duration::from_secs(30));
    assert_eq!(s.global.bufsize, 32_768);
    assert_eq!((s.global.bufsize_max, s.global.relay_buffer_max()), (262_144, 262_144));
    assert_eq!(s.global.maxaccept, 16);
    assert_eq!(s.watchdog.maxconn_recheck, Duration::from_secs(1));
    assert_eq!(s.watchdog.shortage_recheck, Duration::from_millis(100));
    assert_eq!(s.log.format, LogFormat::Term);
    assert_eq!((s.log.level, s.log.overflow), (LogLevel::Info, LogOverflow::Drop));
}

#[test]
fn defaults_apply_to_new_entries() {
    let s = ok(&ConfigSources::inline(GOOD));

    let f = s.frontend("web").expect("frontend web");
    assert_eq!(f.bind, vec!["127.0.0.1:0".parse().unwrap()]);
    assert_eq!(f.backend, "app");
    assert_eq!(f.maxconn.or_zero(), 0);
    assert_eq!(f.backlog, 4096);
    assert_eq!(f.timeout.client.or_zero(), Duration::from_secs(60));

    let b = s.backend("app").expect("backend app");
    assert_eq!(b.balance, config::Balance::new("roundrobin"));
    assert_eq!(b.maxqueue.or_zero(), 0);
    assert_eq!(b.retries, 3);
    assert!(b.redispatch);
    assert_eq!(b.timeout.queue.or_zero(), Duration::from_secs(30));
    assert_eq!(b.timeout.connect.or_zero(), Duration::from_secs(5));
    assert_eq!(b.timeout.server.or_zero(), Duration::from_secs(60));

    assert_eq!(b.servers.len(), 2);
    let s1 = &b.servers[0];
    assert_eq!((s1.name.as_str(), s1.weight, s1.maxconn.or_zero(), s1.maxqueue.or_zero()), ("s1", 2, 1, 0));
    assert_eq!(s1.address, "127.0.0.1:9".parse().unwrap());
    let s2 = &b.servers[1];
    assert_eq!((s2.name.as_str(), s2.weight, s2.maxconn.or_zero(), s2.maxqueue.or_zero()), ("s2", 1, 0, 0));
}

/// Every key of default.toml is read by some Settings field: changing any of
/// them through a layer changes the result (and none is reported unknown).
#[test]
fn every_default_key_maps_to_a_field() {
    let doc = r#"
[global]
maxconn = 11
workers = 2
grace = "7s"
bufsize = 4096
bufsize_max = 1000
maxaccept = 3
[watchdog]
maxconn_recheck = "2s"
shortage_recheck = "50ms"
[log]
format = "json"
level = "debug"
overflow = "block"
[defaults.frontend]
maxconn = 12
backlog = 13
[defaults.frontend.timeout]
client = "14s"
[defaults.backend]
balance = "roundrobin"
maxqueue = 15
retries = 16
redispatch = false
[defaults.backend.timeout]
queue = "17s"
connect = "18s"
server = "19s"
[defaults.server]
weight = 20
maxconn = 21
maxqueue = 22
"#;
    let s =
        ok(&ConfigSources { inline: vec![doc.into(), GOOD.replace("weight = 2\nmaxconn = 1\n", "")], ..no_layers() });
    assert_eq!(
        (s.global.maxconn.or_zero(), s.global.workers.or_zero(), s.global.grace, s.global.bufsize, s.global.maxaccept),
        (11, 2, Duration::from_secs(7), 4096, 3)
    );
    assert_eq!(s.global.bufsize_max, 1000);
    assert_eq!(s.global.relay_buffer_max(), 4096, "a bufsize_max below bufsize means no growth");
    assert_eq!(s.watchdog.maxconn_recheck, Duration::from_secs(2));
    assert_eq!(s.watchdog.shortage_recheck, Duration::from_millis(50));
    assert_eq!((s.log.format, s.log.level, s.log.overflow), (LogFormat::Json, LogLevel::Debug, LogOverflow::Block));
    let f = s.frontend("web").unwrap();
    assert_eq!((f.maxconn.or_zero(), f.backlog, f.timeout.client.or_zero()), (12, 13, Duration::from_secs(14)));
    let b = s.backend("app").unwrap();
    assert_eq!((b.maxqueue.or_zero(), b.retries, b.redispatch), (15, 16, false));
    assert_eq!(
        (b.timeout.queue.or_zero(), b.timeout.connect.or_zero(), b.timeout.server.or_zero()),
        (Duration::from_secs(17), Duration::from_secs(18), Duration::from_secs(19))
    );
    for server in &b.servers {
        assert_eq!(
            (server.weight, server.maxconn.or_zero(), server.maxqueue.or_zero()),
            (20, 21, 22),
            "server {}",
            server.name
        );
    }
}

/// The embedded text is exactly configs/default.toml.
#[test]
fn embedded_defaults_are_the_shipped_file() {
    assert_eq!(config::DEFAULT_TOML, include_str!("../../../configs/default.toml"));
}

// ------------------------------------------------------------- 2. the demo

#[test]
fn demo_config_parses_and_validates() {
    let s = ok(&ConfigSources::inline(DEMO_TOML));
    assert_eq!(s.global.maxconn.or_zero(), 200);
    let f = s.frontend("demo").expect("frontend demo");
    assert_eq!(f.bind, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(f.backend, "demo");
    let b = s.backend("demo").expect("backend demo");
    assert_eq!((b.maxqueue.or_zero(), b.retries), (50, 1));
    assert_eq!(b.timeout.queue.or_zero(), Duration::from_secs(20));
    assert_eq!(b.timeout.connect.or_zero(), Duration::from_secs(1));
    let names: Vec<&str> = b.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["demo-1", "demo-2"]);
    assert!(b.servers.iter().all(|s| s.maxconn.or_zero() == 2 && s.weight == 1));
}

// ------------------------------------------------------ 3. kinds of errors

#[test]
fn unknown_key_lists_expected_keys() {
    let errs = inline_errors(&GOOD.replace("backend = \"app\"", "backend = \"app\"\nmaxcon = 5"));
    assert_error(&errs, "frontends.web.maxcon", INLINE, &["unknown key", "maxconn", "backlog", "bind", "timeout"]);
    assert_eq!(errs.0.len(), 1, "only the unknown key is wrong:\n{errs}");
}

#[test]
fn unknown_key_in_a_file_names_the_file() {
    let file = TempToml::new(&format!("{GOOD}\n[backends.app.timeout]\nqueu = \"1s\"\n"));
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "backends.app.timeout.queu", &file.origin(), &["unknown key", "queue", "connect", "server"]);
}

#[test]
fn unknown_key_in_a_core_section() {
    let errs = inline_errors("[global]\nmaxconns = 5\n");
    assert_error(&errs, "global.maxconns", INLINE, &["unknown key", "maxconn", "workers"]);
}

#[test]
fn unknown_section() {
    let file = TempToml::new("[globl]\nmaxconn = 5\n");
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "globl", &file.origin(), &["unknown section", "global", "backends"]);
}

#[test]
fn unknown_defaults_table() {
    let errs = inline_errors("[defaults.servers]\nweight = 2\n");
    assert_error(&errs, "defaults.servers", INLINE, &["frontend", "backend", "server"]);
}

#[test]
fn wrong_type() {
    let file = TempToml::new(&format!("{GOOD}\n[backends.app]\nretries = \"three\"\n"));
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "backends.app.retries", &file.origin(), &["\"three\"", "integer"]);
}

#[test]
fn out_of_range() {
    let file = TempToml::new(&GOOD.replace("weight = 2", "weight = 999"));
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "backends.app.servers.s1.weight", &file.origin(), &["999", "0 to 256"]);
}

#[test]
fn bad_duration() {
    let file = TempToml::new(&format!("{GOOD}\n[backends.app.timeout]\nqueue = \"5 parsecs\"\n"));
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "backends.app.timeout.queue", &file.origin(), &["5 parsecs", "duration"]);
}

/// Every duration key, as `section`, `key` of the TOML that sets it.
const DURATION_KEYS: &[(&str, &str)] = &[
    ("global", "grace"),
    ("watchdog", "maxconn_recheck"),
    ("watchdog", "shortage_recheck"),
    ("watchdog", "warn_interval"),
    ("frontends.web.timeout", "client"),
    ("frontends.web.stress", "cooldown"),
    ("frontends.web.stress.timeout", "client"),
    ("frontends.web.stress.timeout", "queue"),
    ("backends.app.timeout", "queue"),
    ("backends.app.timeout", "connect"),
    ("backends.app.timeout", "server"),
    ("backends.app.servers.s1", "slowstart"),
    ("backends.app.servers.s1.check", "inter"),
    ("backends.app.servers.s1.check", "fastinter"),
    ("backends.app.servers.s1.check", "downinter"),
    ("backends.app.servers.s1.check", "timeout"),
];

/// A layer over `GOOD` that sets every duration key to `value`.
fn every_duration_set_to(value: &str) -> String {
    let mut doc = String::new();
    let mut table = "";
    for (section, key) in DURATION_KEYS {
        if *section != table {
            doc.push_str(&format!("\n[{section}]\n"));
            table = section;
        }
        doc.push_str(&format!("{key} = \"{value}\"\n"));
    }
    doc
}

/// A duration the clock cannot add (centuries) would pass a lax parser and
/// then panic every session that meets it: each key refuses it by name.
#[test]
fn huge_durations_are_refused_for_every_key() {
    let (good, file) = (TempToml::new(GOOD), TempToml::new(&every_duration_set_to("500000000000y")));
    let errs = errors(&files(&[&good, &file]));
    for (section, key) in DURATION_KEYS {
        assert_error(&errs, &format!("{section}.{key}"), &file.origin(), &["500000000000y", "at most 30days"]);
    }
    assert_eq!(errs.0.len(), DURATION_KEYS.len(), "{errs}");
}

#[test]
fn durations_are_bounded_at_thirty_days() {
    assert_eq!(config::MAX_DURATION, Duration::from_secs(30 * 24 * 3600));
    let over_good =
        |value: &str| ConfigSources { inline: vec![GOOD.into(), every_duration_set_to(value)], ..no_layers() };
    let settings = ok(&over_good("30days"));
    assert_eq!(settings.backend("app").unwrap().timeout.queue, Some(config::MAX_DURATION));
    let errs = errors(&over_good("30days 1ms"));
    assert_error(&errs, "watchdog.shortage_recheck", "inline document #2", &["\"30days 1ms\"", "at most 30days"]);
    assert_eq!(errs.0.len(), DURATION_KEYS.len(), "{errs}");
}

#[test]
fn huge_environment_duration_names_the_variable() {
    let file = TempToml::new(GOOD);
    let sources = ConfigSources {
        env: vars(&[
            ("USHER__BACKENDS__APP__TIMEOUT__QUEUE", "500000000000y"),
            ("USHER__FRONTENDS__WEB__TIMEOUT__CLIENT", "1000000000000000s"),
        ]),
        ..files(&[&file])
    };
    let errs = errors(&sources);
    assert_error(
        &errs,
        "backends.app.timeout.queue",
        "environment variable USHER__BACKENDS__APP__TIMEOUT__QUEUE",
        &["500000000000y", "at most 30days"],
    );
    assert_error(
        &errs,
        "frontends.web.timeout.client",
        "environment variable USHER__FRONTENDS__WEB__TIMEOUT__CLIENT",
        &["1000000000000000s", "at most 30days"],
    );
    assert_eq!(errs.0.len(), 2, "{errs}");
}

#[test]
fn missing_backend_reference() {
    let file = TempToml::new(&GOOD.replace("backend = \"app\"", "backend = \"nope\""));
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "frontends.web.backend", &file.origin(), &["\"nope\"", "not defined", "app"]);
}

#[test]
fn bad_bind_address() {
    let file = TempToml::new(&GOOD.replace("bind = [\"127.0.0.1:0\"]", "bind = [\"nonsense\"]"));
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "frontends.web.bind", &file.origin(), &["IP:PORT"]);
}

#[test]
fn empty_bind_list() {
    let errs = inline_errors(&GOOD.replace("bind = [\"127.0.0.1:0\"]", "bind = []"));
    assert_error(&errs, "frontends.web.bind", INLINE, &["non-empty", "IP:PORT"]);
}

#[test]
fn bad_server_address() {
    // No port: rejected without any name lookup.
    let file = TempToml::new(&GOOD.replace("address = \"127.0.0.1:9\"", "address = \"not-an-address\""));
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "backends.app.servers.s1.address", &file.origin(), &["not-an-address", "HOST:PORT"]);
}

#[test]
fn bad_log_format() {
    let file = TempToml::new("[log]\nformat = \"xml\"\n");
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "log.format", &file.origin(), &["\"xml\"", "\"term\"", "\"json\""]);
}

/// `log.level` takes the spellings operators bring from other tools, in any
/// case; every one names the level it should.
#[test]
fn log_level_accepts_common_spellings() {
    let cases = [
        ("critical", LogLevel::Critical),
        ("crit", LogLevel::Critical),
        ("CRIT", LogLevel::Critical),
        ("error", LogLevel::Error),
        ("err", LogLevel::Error),
        ("Error", LogLevel::Error),
        ("warning", LogLevel::Warning),
        ("warn", LogLevel::Warning),
        ("WARN", LogLevel::Warning),
        ("info", LogLevel::Info),
        ("INFO", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("Debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
        ("TRACE", LogLevel::Trace),
    ];
    for (word, level) in cases {
        let s = ok(&ConfigSources { inline: vec![format!("[log]\nlevel = \"{word}\"\n"), GOOD.into()], ..no_layers() });
        assert_eq!(s.log.level, level, "log.level = {word:?}");
    }
    // The environment layer goes through the same parsing.
    let s =
        ok(&ConfigSources { inline: vec![GOOD.into()], files: vec![], env: vars(&[("USHER__LOG__LEVEL", "warn")]) });
    assert_eq!(s.log.level, LogLevel::Warning, "USHER__LOG__LEVEL=warn");
}

#[test]
fn bad_log_level_lists_the_spellings() {
    let file = TempToml::new("[log]\nlevel = \"verbose\"\n");
    let errs = errors(&files(&[&file]));
    assert_error(
        &errs,
        "log.level",
        &file.origin(),
        &["\"verbose\"", "\"warning\"", "\"warn\"", "\"crit\"", "any case"],
    );
}

#[test]
fn bad_log_overflow() {
    let file = TempToml::new("[log]\noverflow = \"sometimes\"\n");
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "log.overflow", &file.origin(), &["\"sometimes\"", "\"drop\"", "\"block\""]);
}

#[test]
fn missing_required_key() {
    let errs = inline_errors(&GOOD.replace("address = \"127.0.0.1:10\"", ""));
    let err = error_for(&errs, "backends.app.servers.s2.address");
    assert!(err.problem.contains("missing") && err.problem.contains("HOST:PORT"), "{err}");
    assert_eq!(err.kind, ConfigErrorKind::Missing);
}

#[test]
fn duplicate_bind_address_across_frontends() {
    let doc = r#"
[frontends.a]
bind = ["127.0.0.1:7001"]
backend = "app"

[frontends.b]
bind = ["127.0.0.1:7002", "127.0.0.1:7001"]
backend = "app"

[backends.app.servers.s1]
address = "127.0.0.1:9"
"#;
    let file = TempToml::new(doc);
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "frontends.b.bind", &file.origin(), &["127.0.0.1:7001", "\"a\"", "already bound"]);
    assert_eq!(errs.0.len(), 1, "{errs}");
}

#[test]
fn port_zero_may_repeat() {
    let doc = GOOD.to_owned() + "\n[frontends.other]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n";
    let s = ok(&ConfigSources::inline(&doc));
    assert_eq!(s.frontends.len(), 2);
}

#[test]
fn invalid_toml_file_is_named() {
    let good = TempToml::new(GOOD);
    let bad = TempToml::new("[global\nmaxconn = ");
    let errs = errors(&files(&[&good, &bad]));
    assert_error(&errs, "(document)", &bad.origin(), &["not valid TOML"]);
}

#[test]
fn unreadable_file_is_named() {
    let path = std::env::temp_dir().join(format!("usher-config-test-{}-does-not-exist.toml", std::process::id()));
    let errs = errors(&ConfigSources { files: vec![path.clone()], ..no_layers() });
    let err = error_for(&errs, "(file)");
    assert_eq!(err.origin, format!("file {}", path.display()));
    assert!(err.problem.contains("cannot read"), "{err}");
    assert_eq!(err.kind, ConfigErrorKind::Unreadable);
}

// ------------------------------------------------ 4. every problem at once

#[test]
fn one_pass_reports_every_problem() {
    let doc = r#"
[global]
maxconn = -1

[log]
format = "xml"

[frontends.web]
bind = ["127.0.0.1:0"]
backend = "nope"
maxcon = 5

[backends.app]
retries = "three"

[backends.app.timeout]
queue = "5 parsecs"

[backends.app.servers.s1]
address = "127.0.0.1:9"
weight = 999

[backends.ok.servers.s1]
address = "127.0.0.1:9"
"#;
    let file = TempToml::new(doc);
    let errs = errors(&files(&[&file]));
    let expected = [
        "global.maxconn",
        "log.format",
        "frontends.web.maxcon",
        "frontends.web.backend",
        "backends.app.retries",
        "backends.app.timeout.queue",
        "backends.app.servers.s1.weight",
    ];
    for key in expected {
        assert_eq!(error_for(&errs, key).origin, file.origin(), "{errs}");
    }
    assert_eq!(errs.0.len(), expected.len(), "unexpected extra errors:\n{errs}");
    assert!(errs.to_string().starts_with(&format!("invalid configuration: {} problems", expected.len())), "{errs}");
}

#[test]
fn invalid_backend_reference_is_checked_alongside_other_errors() {
    let doc = GOOD.replace("backend = \"app\"", "backend = \"nope\"") + "\n[watchdog]\nshortage_recheck = \"soon\"\n";
    let errs = inline_errors(&doc);
    error_for(&errs, "frontends.web.backend");
    error_for(&errs, "watchdog.shortage_recheck");
    assert_eq!(errs.0.len(), 2, "{errs}");
}

/// A frontend naming a backend that is declared but has errors of its own
/// gets no extra "not defined" error: only the backend's real problem shows.
#[test]
fn invalid_backend_does_not_count_as_undefined() {
    let errs = inline_errors(&format!("{GOOD}\n[backends.app]\nretries = \"three\"\n"));
    error_for(&errs, "backends.app.retries");
    assert!(!errs.mentions("frontends.web.backend"), "spurious reference error:\n{errs}");
    assert_eq!(errs.0.len(), 1, "{errs}");

    // An undefined name still lists every declared backend, valid or not.
    let doc = GOOD.replace("backend = \"app\"", "backend = \"nope\"") + "\n[backends.app]\nretries = \"three\"\n";
    let errs = inline_errors(&doc);
    assert_error(&errs, "frontends.web.backend", INLINE, &["\"nope\"", "not defined", "app"]);
}

// --------------------------------------------------- 5. bad defaults once

#[test]
fn bad_default_is_reported_once_under_its_own_key() {
    let doc = r#"
[defaults.backend]
retries = "three"

[defaults.backend.timeout]
connect = "fast"

[backends.a.servers.s1]
address = "127.0.0.1:9"

[backends.b.servers.s1]
address = "127.0.0.1:9"

[backends.c.servers.s1]
address = "127.0.0.1:9"
"#;
    let file = TempToml::new(doc);
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "defaults.backend.retries", &file.origin(), &["\"three\"", "integer"]);
    assert_error(&errs, "defaults.backend.timeout.connect", &file.origin(), &["\"fast\"", "duration"]);
    assert_eq!(errs.0.len(), 2, "each bad default once, nothing per backend:\n{errs}");
    assert!(!errs.0.iter().any(|e| e.key.starts_with("backends.")), "{errs}");
}

#[test]
fn bad_default_is_reported_even_when_unused() {
    let errs = inline_errors("[defaults.server]\nweight = 999\n");
    assert_error(&errs, "defaults.server.weight", INLINE, &["999", "0 to 256"]);
    assert_eq!(errs.0.len(), 1, "{errs}");
}

#[test]
fn unknown_key_in_defaults_is_reported_once() {
    let errs = inline_errors(&format!("{GOOD}\n[defaults.backend]\nretris = 1\n"));
    assert_error(&errs, "defaults.backend.retris", INLINE, &["unknown key", "retries"]);
    assert_eq!(errs.0.len(), 1, "{errs}");
}

#[test]
fn entry_value_overrides_its_default() {
    let doc = format!("{GOOD}\n[defaults.backend]\nretries = 7\n\n[backends.other]\nretries = 0\n[backends.other.servers.x]\naddress = \"127.0.0.1:9\"\n");
    let s = ok(&ConfigSources::inline(&doc));
    assert_eq!(s.backend("app").unwrap().retries, 7);
    assert_eq!(s.backend("other").unwrap().retries, 0);
}

// --------------------------------------------------------------- 6. layers

#[test]
fn later_file_overrides_one_key_and_keeps_the_rest() {
    let first = TempToml::new(GOOD);
    let second = TempToml::new("[backends.app.servers.s1]\nmaxconn = 5\n");
    let s = ok(&files(&[&first, &second]));
    let b = s.backend("app").unwrap();
    let s1 = &b.servers[0];
    assert_eq!(s1.name, "s1");
    assert_eq!(s1.maxconn.or_zero(), 5, "overridden by the second file");
    assert_eq!(s1.weight, 2, "kept from the first file");
    assert_eq!(s1.address, "127.0.0.1:9".parse().unwrap(), "kept from the first file");
    assert_eq!(b.servers.len(), 2, "s2 kept from the first file");
    assert_eq!(s.frontend("web").unwrap().backend, "app");

    // The other order: the first file's value loses.
    let s = ok(&files(&[&second, &first]));
    assert_eq!(s.backend("app").unwrap().servers[0].maxconn.or_zero(), 1);
}

#[test]
fn error_names_the_layer_that_set_the_value_last() {
    let first = TempToml::new(GOOD);
    let second = TempToml::new("[backends.app.servers.s1]\nmaxconn = \"many\"\n");
    let errs = errors(&files(&[&first, &second]));
    assert_error(&errs, "backends.app.servers.s1.maxconn", &second.origin(), &["\"many\""]);

    // A bad value in the first file that a later file fixes is no error.
    let bad_first = TempToml::new(&GOOD.replace("maxconn = 1", "maxconn = \"many\""));
    let fix = TempToml::new("[backends.app.servers.s1]\nmaxconn = 4\n");
    let s = ok(&files(&[&bad_first, &fix]));
    assert_eq!(s.backend("app").unwrap().servers[0].maxconn.or_zero(), 4);
}

#[test]
fn inline_documents_come_before_files() {
    let file = TempToml::new("[global]\nmaxconn = 42\n");
    let sources = ConfigSources { inline: vec!["[global]\nmaxconn = 41\n".into()], ..files(&[&file]) };
    assert_eq!(ok(&sources).global.maxconn.or_zero(), 42);
}

#[test]
fn environment_overrides_files() {
    let file = TempToml::new(&format!("{GOOD}\n[global]\nmaxconn = 100\n\n[backends.app.timeout]\nqueue = \"9s\"\n"));
    let sources = ConfigSources {
        env: vars(&[
            ("USHER__GLOBAL__MAXCONN", "500"),
            ("USHER__BACKENDS__APP__TIMEOUT__QUEUE", "2s"),
            ("USHER__FRONTENDS__WEB__BIND", "127.0.0.1:7001,127.0.0.1:7002"),
            ("USHER__WATCHDOG__SHORTAGE_RECHECK", "250ms"),
            ("USHER__BACKENDS__APP__REDISPATCH", "false"),
        ]),
        ..files(&[&file])
    };
    let s = ok(&sources);
    assert_eq!(s.global.maxconn.or_zero(), 500);
    assert_eq!(s.watchdog.shortage_recheck, Duration::from_millis(250));
    let b = s.backend("app").unwrap();
    assert_eq!(b.timeout.queue.or_zero(), Duration::from_secs(2));
    assert!(!b.redispatch);
    assert_eq!(b.timeout.connect.or_zero(), Duration::from_secs(5), "untouched keys keep their defaults");
    assert_eq!(b.servers.len(), 2, "servers kept from the file");
    let f = s.frontend("web").unwrap();
    assert_eq!(f.bind, vec!["127.0.0.1:7001".parse().unwrap(), "127.0.0.1:7002".parse().unwrap()]);
    assert_eq!(f.backend, "app", "kept from the file");
}

#[test]
fn variables_without_the_prefix_are_ignored() {
    let sources = ConfigSources {
        env: vars(&[("GLOBAL__MAXCONN", "1"), ("USHERX__GLOBAL__MAXCONN", "2"), ("PATH", "/bin")]),
        ..no_layers()
    };
    assert_eq!(ok(&sources).global.maxconn.or_zero(), 0);
}

#[test]
fn bad_environment_value_names_the_variable() {
    let file = TempToml::new(GOOD);
    let sources = ConfigSources {
        env: vars(&[("USHER__BACKENDS__APP__RETRIES", "three"), ("USHER__GLOBAL__MAXCONN", "500")]),
        ..files(&[&file])
    };
    let errs = errors(&sources);
    assert_error(
        &errs,
        "backends.app.retries",
        "environment variable USHER__BACKENDS__APP__RETRIES",
        &["\"three\"", "integer"],
    );
    assert_eq!(errs.0.len(), 1, "{errs}");
}

#[test]
fn bad_environment_duration_and_bind() {
    let sources = ConfigSources {
        inline: vec![GOOD.into()],
        files: vec![],
        env: vars(&[("USHER__WATCHDOG__SHORTAGE_RECHECK", "soon"), ("USHER__FRONTENDS__WEB__BIND", "127.0.0.1:1,x")]),
    };
    let errs = errors(&sources);
    assert_error(
        &errs,
        "watchdog.shortage_recheck",
        "environment variable USHER__WATCHDOG__SHORTAGE_RECHECK",
        &["duration"],
    );
    assert_error(&errs, "frontends.web.bind", "environment variable USHER__FRONTENDS__WEB__BIND", &["IP:PORT"]);
}

// ----------------------------------------------------------- 7. to_toml()

#[test]
fn to_toml_shows_effective_values() {
    let sources = ConfigSources {
        inline: vec![GOOD.into()],
        files: vec![],
        env: vars(&[("USHER__GLOBAL__MAXCONN", "500"), ("USHER__BACKENDS__APP__TIMEOUT__QUEUE", "2s")]),
    };
    let text = ok(&sources).to_toml();
    for needle in [
        "maxconn = 500",
        "shortage_recheck = \"100ms\"",
        "format = \"term\"",
        "level = \"info\"",
        "[frontends.web]",
        "\"127.0.0.1:0\"",
        "backend = \"app\"",
        "[backends.app]",
        "balance = \"roundrobin\"",
        "retries = 3",
        "redispatch = true",
        "queue = \"2s\"",
        "connect = \"5s\"",
        "[backends.app.servers.s1]",
        "address = \"127.0.0.1:9\"",
        "weight = 2",
    ] {
        assert!(text.contains(needle), "to_toml() lacks {needle:?}:\n{text}");
    }
    // It is valid TOML.
    let parsed: toml::Table = text.parse().unwrap_or_else(|err| panic!("to_toml() is not TOML: {err}\n{text}"));
    assert_eq!(parsed["global"]["maxconn"].as_integer(), Some(500));
}

#[test]
fn to_toml_of_defaults_is_valid_toml() {
    let text = ok(&no_layers()).to_toml();
    assert!(text.contains("maxconn = 0") && text.contains("warn_interval = \"1m\""), "{text}");
    assert!(!text.starts_with("# cannot render"), "{text}");
    let _: toml::Table = text.parse().unwrap_or_else(|err| panic!("to_toml() is not TOML: {err}\n{text}"));
}

// ---------------------------------------------------------- 8. declaration order

#[test]
fn declaration_order_is_preserved() {
    let doc = r#"
[frontends.zeta]
bind = ["127.0.0.1:0"]
backend = "second"

[frontends.alpha]
bind = ["127.0.0.1:0"]
backend = "first"

[frontends.mid]
bind = ["127.0.0.1:0"]
backend = "first"

[backends.second.servers.s3]
address = "127.0.0.1:9"

[backends.second.servers.s1]
address = "127.0.0.1:9"

[backends.second.servers.s2]
address = "127.0.0.1:9"

[backends.first.servers.b]
address = "127.0.0.1:9"

[backends.first.servers.a]
address = "127.0.0.1:9"
"#;
    let check = |s: &Settings| {
        let frontends: Vec<&str> = s.frontends.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(frontends, ["zeta", "alpha", "mid"]);
        let backends: Vec<&str> = s.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(backends, ["second", "first"]);
        let servers: Vec<&str> = s.backend("second").unwrap().servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(servers, ["s3", "s1", "s2"]);
        let servers: Vec<&str> = s.backend("first").unwrap().servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(servers, ["b", "a"]);
    };
    check(&ok(&ConfigSources::inline(doc)));

    // Same through a file, with a later layer touching a server in the middle.
    let file = TempToml::new(doc);
    let patch = TempToml::new("[backends.second.servers.s1]\nweight = 3\n");
    let s = ok(&files(&[&file, &patch]));
    check(&s);
    assert_eq!(s.backend("second").unwrap().servers[1].weight, 3);

    // to_toml() keeps the order too.
    let text = s.to_toml();
    let pos = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle:?} missing in:\n{text}"));
    let (s3, s1, s2) =
        (pos("[backends.second.servers.s3]"), pos("[backends.second.servers.s1]"), pos("[backends.second.servers.s2]"));
    assert!(s3 < s1 && s1 < s2, "{text}");
}

/// `usher check` output is valid input: loading it gives the same settings.
#[test]
fn effective_config_round_trips() {
    let first = usher_core::config::from_toml_str(include_str!("../../../configs/demo.toml")).expect("demo");
    let printed = first.to_toml();
    assert!(printed.contains("[backends.demo.servers.demo-1]"), "{printed}");
    let second = usher_core::config::from_toml_str(&printed).expect("printed config loads");
    assert_eq!(second.to_toml(), printed);
}

/// Watchdog and stress-mode keys: their defaults, and per-frontend overrides of stress mode.
#[test]
fn watchdog_and_stress_keys() {
    let s = usher_core::config::from_toml_str(
        "[global]\nmaxconnrate = 300\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nbind_maxconn = 7\n\
         [frontends.web.stress]\ncooldown = \"0\"\n\
         [frontends.api]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nrate_limit = 50\n\
         [backends.app.servers.s1]\naddress = \"127.0.0.1:9\"\n",
    )
    .expect("valid");
    assert_eq!(s.global.maxconnrate.or_zero(), 300);
    let web = s.frontend("web").unwrap();
    assert_eq!((web.bind_maxconn.or_zero(), web.rate_limit.or_zero()), (7, 0));
    assert_eq!(web.stress.cooldown.or_zero(), Duration::ZERO, "stress disabled for web");
    let api = s.frontend("api").unwrap();
    assert_eq!(api.rate_limit.or_zero(), 50);
    assert_eq!(api.stress.cooldown.or_zero(), Duration::from_secs(60));
    assert_eq!(api.stress.timeout.client.or_zero(), Duration::from_secs(10));
    assert_eq!(api.stress.timeout.queue.or_zero(), Duration::from_secs(5));
    let err = usher_core::config::from_toml_str(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n[frontends.web.stress]\ncoldown = \"1s\"\n\
         [backends.app.servers.s1]\naddress = \"127.0.0.1:9\"\n",
    )
    .unwrap_err();
    assert!(err.mentions("frontends.web.stress.coldown"), "{err}");
}

/// `admin.maxconn_per_client` and `admin.timeout.request`: their defaults,
/// overrides from a file and the environment, `usher check` output that
/// reads back, and every bad value (zero, negative, wrong type, unknown
/// key) reported with the key and its layer.
#[test]
fn admin_hardening_keys() {
    let defaults = ok(&no_layers());
    assert_eq!(defaults.admin.maxconn_per_client.get(), 16);
    assert_eq!(defaults.admin.timeout.request, Duration::from_secs(2));

    let file = TempToml::new("[admin]\nmaxconn_per_client = 4\n[admin.timeout]\nrequest = \"750ms\"\n");
    let s = ok(&files(&[&file]));
    assert_eq!(s.admin.maxconn_per_client.get(), 4);
    assert_eq!(s.admin.timeout.request, Duration::from_millis(750));
    let printed = s.to_toml();
    assert!(printed.contains("maxconn_per_client = 4"), "{printed}");
    assert!(printed.contains("[admin.timeout]"), "{printed}");
    let again = config::from_toml_str(&printed).expect("printed config loads");
    assert_eq!(again.admin, s.admin);

    let env = ConfigSources {
        inline: vec![],
        files: vec![],
        env: vars(&[("USHER__ADMIN__MAXCONN_PER_CLIENT", "32"), ("USHER__ADMIN__TIMEOUT__REQUEST", "5s")]),
    };
    let s = ok(&env);
    assert_eq!((s.admin.maxconn_per_client.get(), s.admin.timeout.request), (32, Duration::from_secs(5)));

    for (value, needle) in [("0", "0"), ("-3", "-3"), ("\"many\"", "\"many\""), ("1025", "1025"), ("true", "true")] {
        let file = TempToml::new(&format!("[admin]\nmaxconn_per_client = {value}\n"));
        let errs = errors(&files(&[&file]));
        assert_error(&errs, "admin.maxconn_per_client", &file.origin(), &[needle, "from 1 to 1024"]);
    }
    for value in ["\"0\"", "\"0s\"", "0", "\"-1s\"", "\"soon\"", "2", "true"] {
        let file = TempToml::new(&format!("[admin.timeout]\nrequest = {value}\n"));
        let errs = errors(&files(&[&file]));
        assert_error(&errs, "admin.timeout.request", &file.origin(), &["above zero", "cannot be disabled"]);
    }
    let env = ConfigSources { inline: vec![], files: vec![], env: vars(&[("USHER__ADMIN__TIMEOUT__REQUEST", "0")]) };
    let errs = errors(&env);
    let err = error_for(&errs, "admin.timeout.request");
    assert!(err.origin.contains("USHER__ADMIN__TIMEOUT__REQUEST"), "{errs}");

    let file = TempToml::new("[admin.timeout]\nrequets = \"1s\"\n");
    let errs = errors(&files(&[&file]));
    assert_error(&errs, "admin.timeout.requets", &file.origin(), &["unknown key", "request"]);
}

// ------------------------------------------------- queue disciplines, maxconn

#[test]
fn queue_discipline_defaults_to_fifo_and_reads_every_key() {
    let b = ok(&ConfigSources::inline(GOOD)).backend("app").cloned().expect("backend app");
    assert_eq!(b.queue, config::QueueSettings::default(), "fifo, codel 50ms/500ms, no fair share, no caps");
    assert_eq!(b.queue.codel.target, Duration::from_millis(50));
    assert_eq!(b.maxconn.or_zero(), 0);
    let doc = format!(
        "{GOOD}\n[backends.app]\nmaxconn = 7\n[backends.app.queue]\ndiscipline = \"adaptive_lifo\"\nfair = \"source/24\"\n\
         [backends.app.queue.codel]\ntarget = \"20ms\"\ninterval = \"300ms\"\n[backends.app.queue.per_source]\nmax_queued = 9\n"
    );
    let b = ok(&ConfigSources::inline(&doc)).backend("app").cloned().unwrap();
    assert_eq!(b.maxconn.or_zero(), 7);
    assert_eq!(b.queue.discipline, config::QueueDiscipline::AdaptiveLifo);
    assert_eq!(b.queue.fair, config::FairShare::Source { ipv4_prefix: 24 });
    assert_eq!((b.queue.codel.target, b.queue.codel.interval), (Duration::from_millis(20), Duration::from_millis(300)));
    assert_eq!(b.queue.per_source.max_queued.or_zero(), 9);
    // `usher check` prints it back in the written form.
    let printed = ok(&ConfigSources::inline(&doc)).to_toml();
    assert!(
        printed.contains("discipline = \"adaptive_lifo\"") && printed.contains("fair = \"source/24\""),
        "{printed}"
    );
}

#[test]
fn bad_queue_keys_name_the_key_and_what_was_expected() {
    let doc = format!(
        "{GOOD}\n[backends.app]\nmaxconn = -1\n[backends.app.queue]\ndiscipline = \"lifo\"\nfair = \"source/40\"\n\
         [backends.app.queue.codel]\ntarget = \"0\"\ninterval = \"2m\"\n[backends.app.queue.per_source]\nmax_queued = \"x\"\n"
    );
    let errors = inline_errors(&doc);
    assert_error(&errors, "backends.app.maxconn", INLINE, &["-1", "integer from 0"]);
    assert_error(&errors, "backends.app.queue.discipline", INLINE, &["\"fifo\", \"codel\", \"adaptive_lifo\""]);
    assert_error(&errors, "backends.app.queue.fair", INLINE, &["source/N", "8 to 32"]);
    assert_error(&errors, "backends.app.queue.codel.target", INLINE, &["not \"0\""]);
    assert_error(&errors, "backends.app.queue.codel.interval", INLINE, &["1m"]);
    assert_error(&errors, "backends.app.queue.per_source.max_queued", INLINE, &["integer"]);
    let errors = inline_errors(&format!("{GOOD}\n[backends.app.queue.per_source]\nmax_live = -2\n"));
    assert_error(&errors, "backends.app.queue.per_source.max_live", INLINE, &["integer from 0"]);
    let doc = format!("{GOOD}\n[backends.app.queue.codel]\ntarget = \"600ms\"\n");
    let errors = inline_errors(&doc);
    assert_error(&errors, "backends.app.queue.codel.target", INLINE, &["below the interval", "500ms"]);
    let errors = inline_errors(&format!("{GOOD}\n[backends.app.queue]\nshed = true\n"));
    assert_error(&errors, "backends.app.queue.shed", INLINE, &["discipline"]);
}

/// `balance` names a registered algorithm: the six built in, and those a
/// program registers; an unknown name is refused with the list.
#[test]
fn balance_names_a_registered_algorithm() {
    let doc = format!("{GOOD}\n[backends.app]\nbalance = \"fastest\"\n");
    let errors = inline_errors(&doc);
    assert_error(&errors, "backends.app.balance", INLINE, &["registered", "\"leastconn\"", "\"static-rr\""]);
    let mut registries = usher_core::extension::Registries::default();
    registries.balancer("fastest", |s: &usher_core::extension::BalancerSetup<'_>| {
        Box::new(usher_core::backend::balance::SmoothRoundRobin::new(s.weights.len()))
            as Box<dyn usher_core::extension::Balancer>
    });
    let settings = config::load_with(&ConfigSources::inline(&doc), &registries).expect("a registered name");
    assert_eq!(settings.backend("app").unwrap().balance, config::Balance::new("fastest"));
    assert!(settings.to_toml().contains("balance = \"fastest\""));
}

/// An extension actor's `[actors.NAME]` is checked like core keys when the
/// program registers its type: a bad value names the key and the file, a
/// missing required key is reported even with no table, and tables nobody
/// registered stay free-form.
#[test]
fn a_registered_actors_options_are_checked_like_core_keys() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct DenyOptions {
        deny: Vec<std::net::IpAddr>,
    }
    let mut registries = usher_core::extension::Registries::default();
    registries.actors.typed::<DenyOptions>("deny_list");

    let file = TempToml::new(&format!("{GOOD}\n[actors.deny_list]\ndeny = [\"192.0.2.7\", \"nine\"]\n"));
    let errs = config::load_with(&files(&[&file]), &registries).expect_err("a bad address is refused");
    assert_error(&errs, "actors.deny_list.deny", &file.origin(), &["IP address"]);

    let errs = config::load_with(&ConfigSources::inline(GOOD), &registries).expect_err("deny is required");
    let missing = errs.0.iter().find(|e| e.key == "actors.deny_list").unwrap_or_else(|| panic!("{errs}"));
    assert!(missing.problem.contains("missing field `deny`") && missing.problem.contains("no layer"), "{errs}");

    let doc = format!("{GOOD}\n[actors.deny_list]\ndeny = [\"192.0.2.7\"]\n[actors.other]\nanything = 1\n");
    let settings = config::load_with(&ConfigSources::inline(&doc), &registries).expect("good options");
    assert!(settings.actors.contains_key("other"), "an unregistered table stays free-form");
}
