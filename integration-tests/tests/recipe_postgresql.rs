//! The PostgreSQL recipe (docs/recipes/postgresql.md), checked against a
//! real PostgreSQL 15 (Debian `postgresql`): `max_connections = 20`, a
//! non-superuser role, usher in front with server `maxconn = 15` and
//! `timeout.queue = 30s`. A connection storm (`pgbench -C`, a new
//! connection per transaction, more clients than slots) through usher
//! completes with no aborted client, and the database never holds more
//! than 15 of the role's connections (the same storm straight at the
//! database is run after, and its aborted clients printed).
//!
//! Skips with a loud message when PostgreSQL's programs are missing,
//! unless `CI` is set (then it fails): `scripts/test` installs them as root.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::external::{self, server_figure, ServerProcess, TempDir};
use integration_tests::{TestBroker, DEADLINE};

const MAX_CONNECTIONS: u64 = 20;
const SUPERUSER_RESERVED: u64 = 3;
/// Under max_connections − superuser_reserved_connections, with room left
/// for the test's own watcher (a superuser in a reserved slot anyway).
const MAXCONN: u64 = 15;
const CLIENTS: usize = 40;
const STORM_SECONDS: u64 = 3;
/// The role the clients use: not a superuser, so reserved slots are not theirs.
const ROLE: &str = "app";
/// Tries for a free port PostgreSQL can bind (another process may take it first).
const PORT_TRIES: usize = 5;

/// Where Debian puts PostgreSQL 15's programs (not all are on PATH).
fn pg_bin_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/usr/lib/postgresql/15/bin")]
}

/// PostgreSQL refuses to run as root: as root, its programs run as the
/// `postgres` user (created by the Debian package), through `setpriv`,
/// which execs the program itself so the child's pid is the postmaster's.
fn as_db_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Gives `dir` to the `postgres` user when running as root.
fn hand_over(dir: &Path) {
    if is_root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status().expect("run chown");
        assert!(status.success(), "chown {} to postgres", dir.display());
    }
}

fn checked(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The postmaster on `port`, ready for connections; `None` when the port
/// was taken meanwhile.
fn start_postgres(postgres: &Path, data: &Path, sockets: &Path, port: u16) -> Option<ServerProcess> {
    let log = data.parent().expect("data dir parent").join(format!("postgres-{port}.log"));
    let log_file = std::fs::File::create(&log).expect("postgres log");
    let child = as_db_user(postgres)
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(sockets)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
        .args(["-c", &format!("superuser_reserved_connections={SUPERUSER_RESERVED}")])
        // A test database: durability is not what is tested.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn postgres");
    // SIGQUIT: immediate shutdown, the postmaster takes its backends along.
    let mut pg = ServerProcess { child, name: "postgres", stop_signal: "QUIT" };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("ready to accept connections") {
            return Some(pg);
        }
        if pg.exited() {
            assert!(text.contains("in use"), "postgres exited at start:\n{text}");
            return None;
        }
        assert!(Instant::now() < deadline, "postgres on port {port} not ready:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `sql` as the superuser on the database's own port.
fn psql(psql: &Path, port: u16, sql: &str) -> String {
    let out = Command::new(psql)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-XAtq", "-c", sql])
        .output()
        .expect("run psql");
    checked(sql, out)
}

/// Peak of the role's client backends in `pg_stat_activity`, and the
/// number of samples, until `storming` is cleared.
fn watch_connections(psql_bin: &Path, port: u16, storming: &AtomicBool) -> (u64, u32) {
    let mut session = Command::new(psql_bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-XAtq"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run psql");
    let mut input = session.stdin.take().expect("psql stdin");
    let mut output = BufReader::new(session.stdout.take().expect("psql stdout")).lines();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = '{ROLE}';\n"
    );
    let (mut peak, mut samples) = (0u64, 0u32);
    while storming.load(Ordering::SeqCst) {
        input.write_all(sql.as_bytes()).expect("query psql");
        let line = output.next().expect("psql answers").expect("read psql");
        peak = peak.max(line.trim().parse().unwrap_or_else(|_| panic!("psql answered {line:?}")));
        samples += 1;
    }
    drop(input);
    let _ = session.wait();
    (peak, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_through_usher_never_exceeds_maxconn() {
    let programs = ["initdb", "postgres", "psql", "pgbench"];
    let Some(found) = external::require("the PostgreSQL recipe test", "postgresql", &programs, &pg_bin_dirs()) else {
        return;
    };
    let [initdb, postgres, psql_bin, pgbench] = [&found[0], &found[1], &found[2], &found[3]];
    let dir = TempDir::new("postgresql");
    let data = dir.path().join("data");
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(&sockets).expect("socket dir");
    hand_over(dir.path());
    let out = as_db_user(initdb)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"])
        .output()
        .expect("run initdb");
    checked("initdb", out);

    // PostgreSQL binds its own socket: it cannot be handed a bound
    // listener, so this one place picks a free port, closes it and starts
    // postgres on it, taking another if it was taken meanwhile.
    let mut started = None;
    for _ in 0..PORT_TRIES {
        let port = external::unbound_port();
        if let Some(pg) = start_postgres(postgres, &data, &sockets, port) {
            started = Some((pg, port));
            break;
        }
    }
    let (mut pg, port) = started.expect("postgres found no free port");
    psql(psql_bin, port, &format!("CREATE ROLE {ROLE} LOGIN"));
    psql(psql_bin, port, &format!("CREATE DATABASE {ROLE} OWNER {ROLE}"));

    let broker = TestBroker::start_with_admin(&format!(
        r#"
        [frontends.db]
        bind = ["127.0.0.1:0"]
        backend = "pg"
        [backends.pg.timeout]
        queue = "30s"
        [backends.pg.servers.pg1]
        address = "127.0.0.1:{port}"
        maxconn = {MAXCONN}
        "#
    ));
    let front: SocketAddr = broker.addr("db");
    let admin = broker.admin_addr.expect("admin");
    let through_usher = |args: &[&str]| {
        let mut cmd = Command::new(pgbench);
        cmd.args(args).args(["-h", "127.0.0.1", "-p", &front.port().to_string(), "-U", ROLE, ROLE]);
        cmd
    };
    let out = through_usher(&["-i", "-q", "-s", "1"]).output().expect("run pgbench -i");
    checked("pgbench -i through usher", out);

    // The database's own count of the role's connections, polled while the
    // storm runs by one superuser session (a reserved slot) fed query after
    // query on its stdin: a new psql per sample would be too slow to see peaks.
    let storming = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (storming, psql_bin) = (storming.clone(), psql_bin.clone());
        std::thread::spawn(move || watch_connections(&psql_bin, port, &storming))
    };

    // One pgbench thread per client: a thread blocks in connect() while
    // its client waits in usher's queue, and with fewer threads the
    // clients it drives (seated ones included) would wait with it.
    let started_at = Instant::now();
    let (clients, seconds) = (CLIENTS.to_string(), STORM_SECONDS.to_string());
    let storm =
        through_usher(&["-c", &clients, "-j", &clients, "-C", "-S", "-T", &seconds]).output().expect("run pgbench");
    storming.store(false, Ordering::SeqCst);
    let (db_peak, samples) = watcher.join().expect("watcher");
    let elapsed = started_at.elapsed();
    let stdout = String::from_utf8_lossy(&storm.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&storm.stderr).into_owned();
    let usher_peak = server_figure(admin, "pg", "pg1", "sessions_max").await;
    println!("{stdout}{stderr}");
    println!(
        "storm of {CLIENTS} clients in {elapsed:?}: peak {db_peak} connections in pg_stat_activity ({samples} samples), \
         usher's server peak {usher_peak}, maxconn {MAXCONN}"
    );
    assert!(storm.status.success(), "pgbench exited {}:\n{stdout}\n{stderr}", storm.status);
    assert!(!stderr.contains("aborted"), "a client aborted:\n{stderr}");
    let processed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{stdout}"));
    assert!(processed > 0, "no transaction went through");
    assert!(samples > 0, "the watcher never sampled");
    assert!(db_peak <= MAXCONN, "the database held {db_peak} connections of {ROLE}, maxconn {MAXCONN}");
    assert!(usher_peak == MAXCONN, "a storm of {CLIENTS} fills all {MAXCONN} slots (usher's peak {usher_peak})");
    assert!(elapsed < Duration::from_secs(STORM_SECONDS + 10), "pgbench took {elapsed:?}: clients waited a queue out");

    // The same storm straight at the database, for the record: clients
    // beyond its free slots are turned away and pgbench aborts them. Not
    // asserted: whether 18 connections overlap in one second depends on
    // the machine's speed (a busy one serialises them).
    let direct = Command::new(pgbench)
        .args(["-c", &clients, "-j", &clients, "-C", "-S", "-T", "1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", ROLE, ROLE])
        .output()
        .expect("run pgbench");
    let direct_err = String::from_utf8_lossy(&direct.stderr);
    let aborted = direct_err.lines().filter(|l| l.contains("aborted")).count();
    println!("direct: pgbench exited {}, {aborted} clients aborted; first lines of its stderr:", direct.status);
    direct_err.lines().take(3).for_each(|l| println!("  {l}"));
    pg.stop();
}
