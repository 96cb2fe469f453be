//! Spawned servers and the end of the real `usher` process: stopped with
//! SIGTERM it stops its children (the stop signal, then SIGKILL after
//! `stop_timeout` for one that ignores it); killed with SIGKILL it leaves
//! none behind either, through the parent-death signal its children carry.

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::daemon::Daemon;
use integration_tests::spawn_registry::process_exists;
use integration_tests::{ConfigFile, DEADLINE};

const USHER: &str = env!("CARGO_BIN_EXE_usher");

/// One spawned process that never listens (so it stays "starting") and
/// ignores SIGTERM, started at once by `min_procs = 1`.
fn start(name: &str) -> (ConfigFile, Daemon, u32) {
    let toml = "[log]\nformat = \"json\"\n[admin]\nbind = \"\"\n[global]\ngrace = \"1s\"\n\
                [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
                [backends.app.spawn]\ncommand = [\"sh\", \"-c\", \"trap '' TERM; exec sleep 300\", \"{port}\"]\n\
                min_procs = 1\nstart_timeout = \"1h\"\nstop_timeout = \"1s\"\n";
    let config = ConfigFile::new(&format!("spawn-{name}"), toml);
    let mut daemon = Daemon::start(Path::new(USHER), &config.0, &[]);
    let line = daemon.wait_log("\"msg\":\"process started\"");
    let record: serde_json::Value = serde_json::from_str(&line).expect("JSON record");
    let pid = record["pid"].as_u64().expect("pid") as u32;
    assert!(process_exists(pid), "the child runs");
    (config, daemon, pid)
}

fn wait_gone(pid: u32) -> Duration {
    let started = Instant::now();
    while process_exists(pid) {
        assert!(started.elapsed() < DEADLINE, "child {pid} left behind");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[test]
fn usher_stopped_with_sigterm_stops_its_children_within_grace_and_stop_timeout() {
    let (_config, mut daemon, pid) = start("term");
    let asked = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    let stopped_in = asked.elapsed();
    wait_gone(pid);
    println!("usher exited {status} in {stopped_in:?}; child {pid} gone");
    assert!(status.success(), "{status}");
    // No session to drain: the stop is the child's stop_timeout (it
    // ignores SIGTERM, so SIGKILL ends it), within grace + stop_timeout.
    assert!(stopped_in < Duration::from_secs(2) + Duration::from_millis(1500), "{stopped_in:?}");
    let stopped = daemon.wait_log("\"msg\":\"processes stopped\"");
    assert!(stopped.contains("\"processes\":1"), "{stopped}");
}

#[test]
fn usher_killed_with_sigkill_leaves_no_child_behind() {
    let (_config, mut daemon, pid) = start("kill");
    daemon.signal("KILL");
    daemon.wait_exit();
    let gone_in = wait_gone(pid);
    println!("child {pid} gone {gone_in:?} after usher's SIGKILL");
}
