//! The `usher` binary's command line: `check`, `run` on a bad configuration,
//! environment overrides and `--help`. No test here binds a socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const USHER: &str = env!("CARGO_BIN_EXE_usher");
const DEMO_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/demo.toml");
/// Exit status for a bad configuration (sysexits EX_USAGE).
const EXIT_CONFIG: i32 = 64;

const GOOD: &str = r#"
[global]
maxconn = 777

[frontends.web]
bind = ["127.0.0.1:0"]
backend = "app"

[backends.app]
retries = 2

[backends.app.servers.s1]
address = "127.0.0.1:9"
weight = 5
"#;

/// Valid except for one key: `backends.app.retries`.
const BAD: &str = r#"
[frontends.web]
bind = ["127.0.0.1:0"]
backend = "app"

[backends.app]
retries = "three"

[backends.app.servers.s1]
address = "127.0.0.1:9"
"#;

/// A temporary file that is removed when dropped.
struct TempToml {
    path: PathBuf,
}

impl TempToml {
    fn new(contents: &str) -> TempToml {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("usher-cli-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, contents).expect("write temp config");
        TempToml { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `usher ARGS…` without any inherited `USHER__*` variable.
fn usher(args: &[&str]) -> Command {
    let mut cmd = Command::new(USHER);
    cmd.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_uppercase().starts_with("USHER__") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn check(config: &Path) -> Command {
    let mut cmd = usher(&["check", "-c"]);
    cmd.arg(config);
    cmd
}

/// Runs `cmd` to completion with a bounded wait; kills it and fails when it
/// is still running after `limit`.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn usher");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for usher") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("usher still running after {limit:?}; killed it. stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn run_bounded(cmd: Command) -> (Option<i32>, String, String) {
    let out = output_within(cmd, Duration::from_secs(20));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_good_config_prints_effective_toml() {
    let file = TempToml::new(GOOD);
    let (code, stdout, stderr) = run_bounded(check(file.path()));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in [
        "maxconn = 777",
        "shortage_recheck = \"100ms\"",
        "[frontends.web]",
        "\"127.0.0.1:0\"",
        "backend = \"app\"",
        "retries = 2",
        "redispatch = true",
        "queue = \"30s\"",
        "address = \"127.0.0.1:9\"",
        "weight = 5",
    ] {
        assert!(stdout.contains(needle), "check output lacks {needle:?}:\n{stdout}");
    }
}

#[test]
fn check_bad_config_exits_64_naming_key_and_file() {
    let file = TempToml::new(BAD);
    let (code, stdout, stderr) = run_bounded(check(file.path()));
    assert_eq!(code, Some(EXIT_CONFIG), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("backends.app.retries"), "stderr lacks the key:\n{stderr}");
    assert!(stderr.contains(&format!("file {}", file.shown())), "stderr lacks the file:\n{stderr}");
    assert!(stderr.contains("\"three\"") && stderr.contains("integer"), "stderr lacks what was expected:\n{stderr}");
    assert!(!stdout.contains("[global]"), "no settings printed for a bad config:\n{stdout}");
}

/// A duration the clock cannot add passed `check` and then panicked every
/// session: it is refused up front, by key and file.
#[test]
fn check_refuses_a_duration_past_the_bound() {
    let file = TempToml::new(&format!("{GOOD}\n[backends.app.timeout]\nqueue = \"500000000000y\"\n"));
    let (code, stdout, stderr) = run_bounded(check(file.path()));
    assert_eq!(code, Some(EXIT_CONFIG), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("backends.app.timeout.queue"), "stderr lacks the key:\n{stderr}");
    assert!(stderr.contains(&format!("file {}", file.shown())), "stderr lacks the file:\n{stderr}");
    assert!(stderr.contains("at most 30days"), "stderr lacks what was expected:\n{stderr}");
}

/// Mutations of a good configuration, each a second `-c` layer: `usher
/// check` never panics on them and exits 64 naming the key and that file.
#[test]
fn mutated_configs_exit_64_naming_the_key() {
    let mutations: &[(&str, &str)] = &[
        ("global.maxconn", "[global]\nmaxconn = -1\n"),
        ("global.maxconn", "[global]\nmaxconn = 10000001\n"),
        ("global.bufsize", "[global]\nbufsize = 0\n"),
        ("global.grace", "[global]\ngrace = \"1e309s\"\n"),
        ("watchdog.shortage_recheck", "[watchdog]\nshortage_recheck = \"18446744073709551616s\"\n"),
        ("log.level", "[log]\nlevel = 7\n"),
        ("frontends.web.bind", "[frontends.web]\nbind = []\n"),
        ("frontends.web.bind", "[frontends.web]\nbind = [\"127.0.0.1:99999\"]\n"),
        ("frontends.web.backend", "[frontends.web]\nbackend = { name = \"app\" }\n"),
        ("frontends.web.priority_class", "[frontends.web]\npriority_class = 9223372036854775807\n"),
        ("frontends.web.timeout.proxy", "[frontends.web.timeout]\nproxy = \"0\"\n"),
        ("frontends.web.timeout.client", "[frontends.web.timeout]\nclient = \"-5s\"\n"),
        ("backends.app.balance", "[backends.app]\nbalance = [\"roundrobin\"]\n"),
        ("backends.app.retries", "[backends.app]\nretries = 1.5\n"),
        ("backends.app.timeout.queue", "[backends.app.timeout]\nqueue = \"500000000000y\"\n"),
        ("backends.app.servers.s1.address", "[backends.app.servers.s1]\naddress = \"\"\n"),
        ("backends.app.servers.s1.weight", "[backends.app.servers.s1]\nweight = \"heavy\"\n"),
    ];
    let good = TempToml::new(GOOD);
    for (key, mutation) in mutations {
        let bad = TempToml::new(mutation);
        let mut cmd = check(good.path());
        cmd.arg("-c").arg(bad.path());
        let (code, _, stderr) = run_bounded(cmd);
        assert!(!stderr.contains("panicked"), "{key}: usher panicked:\n{stderr}");
        assert_eq!(code, Some(EXIT_CONFIG), "{key}: {stderr}");
        assert!(stderr.contains(&format!("{key}: ")), "{key}: the key is not named:\n{stderr}");
        assert!(stderr.contains(&format!("file {}", bad.shown())), "{key}: the file is not named:\n{stderr}");
    }
}

#[test]
fn check_reports_every_problem_and_invalid_toml() {
    let file = TempToml::new(&BAD.replace("backend = \"app\"", "backend = \"app\"\nmaxcon = 1"));
    let (code, _, stderr) = run_bounded(check(file.path()));
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains("backends.app.retries") && stderr.contains("frontends.web.maxcon"), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");

    let broken = TempToml::new("[global\nmaxconn =");
    let (code, _, stderr) = run_bounded(check(broken.path()));
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains(&broken.shown()) && stderr.contains("not valid TOML"), "{stderr}");
}

#[test]
fn check_layers_files_in_order() {
    let first = TempToml::new(GOOD);
    let second = TempToml::new("[backends.app.servers.s1]\nmaxconn = 3\n");
    let mut cmd = check(first.path());
    cmd.arg("-c").arg(second.path());
    let (code, stdout, stderr) = run_bounded(cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("maxconn = 3") && stdout.contains("weight = 5"), "{stdout}");
}

#[test]
fn check_honours_environment_overrides() {
    let file = TempToml::new(GOOD);
    let mut cmd = check(file.path());
    cmd.env("USHER__GLOBAL__MAXCONN", "123").env("USHER__BACKENDS__APP__TIMEOUT__QUEUE", "2s");
    let (code, stdout, stderr) = run_bounded(cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("maxconn = 123"), "env override not applied:\n{stdout}");
    assert!(!stdout.contains("maxconn = 777"), "file value should lose to the environment:\n{stdout}");
    assert!(stdout.contains("queue = \"2s\""), "{stdout}");
}

#[test]
fn check_names_a_bad_environment_variable() {
    let file = TempToml::new(GOOD);
    let mut cmd = check(file.path());
    cmd.env("USHER__BACKENDS__APP__RETRIES", "three");
    let (code, stdout, stderr) = run_bounded(cmd);
    assert_eq!(code, Some(EXIT_CONFIG), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("backends.app.retries"), "{stderr}");
    assert!(stderr.contains("environment variable USHER__BACKENDS__APP__RETRIES"), "{stderr}");
}

#[test]
fn run_with_bad_config_exits_64_without_listening() {
    let file = TempToml::new(BAD);
    let mut cmd = usher(&["run", "-c"]);
    cmd.arg(file.path());
    let (code, stdout, stderr) = run_bounded(cmd);
    assert_eq!(code, Some(EXIT_CONFIG), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("backends.app.retries"), "{stderr}");
    assert!(stderr.contains(&format!("file {}", file.shown())), "{stderr}");
    assert!(!stderr.contains("listening") && !stdout.contains("listening"), "must not start listening:\n{stderr}");
}

/// An admin API beyond loopback without `admin.token` is refused
/// before anything is bound, naming the key.
#[test]
fn run_with_open_admin_and_no_token_exits_64() {
    let file = TempToml::new(&format!("{GOOD}\n[admin]\nbind = \"0.0.0.0:9900\"\n"));
    for sub in ["run", "check"] {
        let mut cmd = usher(&[sub, "-c"]);
        cmd.arg(file.path());
        let (code, stdout, stderr) = run_bounded(cmd);
        assert_eq!(code, Some(EXIT_CONFIG), "usher {sub}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stderr.contains("admin.token"), "usher {sub}: {stderr}");
        assert!(!stderr.contains("listening"), "usher {sub} must not start listening:\n{stderr}");
    }
    let mut cmd = check(file.path());
    cmd.env("USHER__ADMIN__TOKEN", "from-the-environment");
    let (code, stdout, stderr) = run_bounded(cmd);
    assert_eq!(code, Some(0), "a token from the environment is enough:\n{stderr}");
    assert!(stdout.contains("[admin]") && stdout.contains("bind = \"0.0.0.0:9900\""), "{stdout}");
}

#[test]
fn run_with_missing_file_exits_64() {
    let path = std::env::temp_dir().join(format!("usher-cli-test-{}-missing.toml", std::process::id()));
    let mut cmd = usher(&["run", "-c"]);
    cmd.arg(&path);
    let (code, _, stderr) = run_bounded(cmd);
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()) && stderr.contains("cannot read"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn check_accepts_the_demo_config() {
    let (code, stdout, stderr) = run_bounded(check(Path::new(DEMO_TOML)));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("maxconn = 200") && stdout.contains("\"127.0.0.1:8080\""), "{stdout}");
    assert!(
        stdout.contains("[backends.demo.servers.demo-1]") && stdout.contains("[backends.demo.servers.demo-2]"),
        "{stdout}"
    );
}

#[test]
fn help_lists_the_subcommands() {
    let (code, stdout, stderr) = run_bounded(usher(&["--help"]));
    assert_eq!(code, Some(0), "{stderr}");
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for sub in ["run", "check", "demo"] {
        assert!(commands.contains(&sub), "--help lacks {sub:?} under Commands:\n{stdout}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let (code, _, stderr) = run_bounded(usher(&["frobnicate"]));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("frobnicate"), "{stderr}");
}
