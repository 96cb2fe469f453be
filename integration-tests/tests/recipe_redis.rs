//! The Redis recipe (docs/recipes/redis.md), checked against a real
//! `redis-server` (Debian `redis-server`): usher in front with a
//! `PING`/`+PONG` health check and `maxconn` per server; clients through
//! usher never put more than `maxconn` connections on Redis; Redis stopped
//! → the server goes DOWN and a newcomer is refused at once (`SC`) instead
//! of waiting; Redis started again → UP, and a client gets `+PONG`.
//!
//! Skips with a loud message when `redis-server` is missing, unless `CI`
//! is set (then it fails): `scripts/test` installs it as root.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::external::{self, poll_until, server_figure, server_op, ServerProcess, TempDir};
use integration_tests::{TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The recipe's server limit.
const MAXCONN: u64 = 4;
/// Clients at once through usher: twice the limit, so half of them queue.
const CLIENTS: usize = 8;
const PINGS_PER_CLIENT: usize = 50;
/// Tries for a free port Redis can bind (another process may take it first).
const PORT_TRIES: usize = 5;

/// Sends `PING` on `stream` and reads the reply line.
async fn ping(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"PING\r\n").await?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// A new connection to `addr`, one `PING`; the reply (empty when closed first).
async fn ping_once(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    ping(&mut stream).await
}

/// `redis-server` on `port`, answering `PING`; `None` when it exited
/// (the port was taken meanwhile).
async fn start_redis(program: &Path, dir: &Path, port: u16) -> Option<ServerProcess> {
    let log = dir.join(format!("redis-{port}.log"));
    let child = Command::new(program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--logfile", log.to_str().expect("utf-8 path")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    // SIGTERM: Redis closes its listener and exits at once (nothing to save).
    let mut redis = ServerProcess { child, name: "redis-server", stop_signal: "TERM" };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if redis.exited() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(log.contains("in use"), "redis-server exited at start:\n{log}");
            return None;
        }
        if matches!(ping_once(addr).await.as_deref(), Ok("+PONG\r\n")) {
            return Some(redis);
        }
        assert!(Instant::now() < deadline, "redis-server on {addr} never answered PING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis's own count of connected clients (`INFO clients`), less the asker.
async fn redis_clients(addr: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(addr).await.expect("connect to redis");
    s.write_all(b"INFO clients\r\n").await.expect("write");
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    while !text.contains("connected_clients:") || !text.ends_with("\r\n") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "redis closed during INFO");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let line = text.lines().find(|l| l.starts_with("connected_clients:")).expect("connected_clients");
    line["connected_clients:".len()..].trim().parse::<u64>().expect("a count") - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_behind_usher_goes_down_and_comes_back() {
    let Some(programs) = external::require("the Redis recipe test", "redis-server", &["redis-server"], &[]) else {
        return;
    };
    let redis_server = &programs[0];
    let dir = TempDir::new("redis");

    // Redis binds its own socket (it cannot be handed a bound listener):
    // pick a free port, and take another if it was taken meanwhile.
    let mut started = None;
    for _ in 0..PORT_TRIES {
        let port = external::unbound_port();
        if let Some(redis) = start_redis(redis_server, dir.path(), port).await {
            started = Some((redis, port));
            break;
        }
    }
    let (mut redis, port) = started.expect("redis-server found no free port");
    let redis_addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let broker = TestBroker::start_with_admin(&format!(
        r#"
        [frontends.cache]
        bind = ["127.0.0.1:0"]
        backend = "redis"
        [backends.redis.timeout]
        queue = "5s"
        [backends.redis.servers.r1]
        address = "{redis_addr}"
        maxconn = {MAXCONN}
        [backends.redis.servers.r1.check]
        enabled = true
        inter = "200ms"
        fall = 2
        rise = 2
        send = "PING\r\n"
        expect = "+PONG"
        "#
    ));
    let front = broker.addr("cache");
    let admin = broker.admin_addr.expect("admin");
    poll_until(DEADLINE, "r1 UP", || async {
        (server_op(admin, "redis", "r1").await.as_deref() == Some("UP")).then_some(())
    })
    .await;

    // Twice maxconn clients at once, each on one connection: all are
    // served, half after a wait, and Redis never holds more than maxconn
    // of them.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(front).await.expect("connect through usher");
            for _ in 0..PINGS_PER_CLIENT {
                assert_eq!(ping(&mut s).await.expect("PING through usher"), "+PONG\r\n");
            }
        }));
    }
    let mut redis_peak = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        redis_peak = redis_peak.max(redis_clients(redis_addr).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in clients {
        c.await.expect("client");
    }
    let usher_peak = server_figure(admin, "redis", "r1", "sessions_max").await;
    println!("peak connections on redis: {redis_peak} seen by INFO, {usher_peak} by usher (maxconn {MAXCONN})");
    assert_eq!(usher_peak, MAXCONN, "{CLIENTS} clients fill every slot and never more");
    // The health checks' own connections come and go on top of clients.
    assert!(redis_peak <= MAXCONN + 1, "redis saw {redis_peak} clients, maxconn {MAXCONN} (+1 check)");

    // Redis stops: the checks take r1 DOWN, and a newcomer is refused at
    // once rather than queued for a server that is not there.
    let stopped_at = Instant::now();
    redis.stop();
    poll_until(DEADLINE, "r1 DOWN after redis stopped", || async {
        (server_op(admin, "redis", "r1").await.as_deref() == Some("DOWN")).then_some(())
    })
    .await;
    println!("r1 DOWN {:?} after redis stopped", stopped_at.elapsed());
    let refused_at = Instant::now();
    let reply = ping_once(front).await.unwrap_or_default();
    assert_eq!(reply, "", "a client while redis is down gets no reply");
    assert!(refused_at.elapsed() < Duration::from_secs(2), "refused at once, not after the queue timeout");
    broker.logs.wait_for("session", |r| r.termination() == "SC").await;

    // Redis is back on the same address: UP after `rise` checks, served again.
    let mut redis = start_redis(redis_server, dir.path(), port).await.expect("redis-server restarted on its port");
    let back_at = Instant::now();
    poll_until(DEADLINE, "r1 UP after redis restarted", || async {
        (server_op(admin, "redis", "r1").await.as_deref() == Some("UP")).then_some(())
    })
    .await;
    println!("r1 UP {:?} after redis restarted", back_at.elapsed());
    assert_eq!(ping_once(front).await.expect("PING through usher"), "+PONG\r\n");
    redis.stop();
}
