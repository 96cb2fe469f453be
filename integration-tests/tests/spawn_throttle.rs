//! A spawned backend whose command keeps failing: after
//! `max_start_failures` failed starts in a row it is throttled — its
//! clients are refused at once (`ST`), one record says why (exit status,
//! last stderr lines) — and after `throttle_time` it starts processes
//! again, serving clients once the command works.

use std::time::{Duration, Instant};

use integration_tests::external::TempDir;
use integration_tests::{request, TestBroker};

const ECHO: &str = env!("CARGO_BIN_EXE_spawn_echo");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_throttles_the_backend_then_it_recovers() {
    let dir = TempDir::new("spawn-throttle");
    let works = dir.path().join("works");
    // Fails at once until the file `works` exists, then runs the service.
    let script = format!(
        "if [ -f '{}' ]; then exec '{ECHO}' --port \"$0\"; fi; echo 'no luck today' >&2; exit 3",
        works.display()
    );
    let toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 0\n[backends.app.timeout]\nqueue = \"30s\"\n\
         [backends.app.spawn]\ncommand = [\"sh\", \"-c\", {script:?}, \"{{port}}\"]\n\
         max_start_failures = 2\nthrottle_time = \"1s\"\nstart_timeout = \"10s\"\n"
    );
    let broker = TestBroker::start(&toml);
    let addr = broker.addr("web");

    // The first client's wait ends with the throttle, not its queue timeout.
    let first = Instant::now();
    // Refused: closed with nothing sent back, or reset when the close
    // came before the broker read the request.
    let reply = request(addr, b"hello\n").await.unwrap_or_default();
    assert!(reply.is_empty(), "{reply:?}");
    let record = broker.logs.wait_sessions(1).await.remove(0);
    println!("first client refused after {:?}: {record:?}", first.elapsed());
    assert_eq!(record.termination(), "ST");
    let throttled = broker.logs.wait_for("spawn throttled", |_| true).await;
    assert_eq!(throttled.get("status"), "exit status: 3", "{throttled:?}");
    assert!(throttled.get("stderr").contains("no luck today"), "{throttled:?}");
    assert_eq!(throttled.int("failures"), 2);

    // While throttled: refused at once, nothing started.
    let started_before = broker.logs.all().iter().filter(|r| r.msg == "process started").count();
    let asked = Instant::now();
    let reply = request(addr, b"again\n").await.unwrap_or_default();
    let refused_in = asked.elapsed();
    assert!(reply.is_empty());
    let record = broker.logs.wait_sessions(2).await.remove(1);
    println!("refused in {refused_in:?} while throttled");
    assert_eq!(record.termination(), "ST");
    assert!(refused_in < Duration::from_millis(500), "{refused_in:?}");
    assert_eq!(broker.logs.all().iter().filter(|r| r.msg == "process started").count(), started_before);
    assert_eq!(broker.logs.all().iter().filter(|r| r.msg == "spawn throttled").count(), 1, "logged once");

    // The command works again; after the throttle the backend serves.
    std::fs::write(&works, b"").expect("create the flag file");
    broker.logs.wait_for("spawn throttle ended", |_| true).await;
    let reply = request(addr, b"served\n").await.expect("request");
    assert_eq!(reply, b"served\n");
    let record = broker.logs.wait_sessions(3).await.remove(2);
    assert_eq!(record.termination(), "--");
}
