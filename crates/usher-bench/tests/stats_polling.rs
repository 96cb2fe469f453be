//! The `usher-dashboard` proxy's plumbing: usher starts with its admin API
//! and a poller reads `/stats` from it once a second; plain `usher` has
//! neither. The figures it serves to compare are the benchmark's, not
//! checked here.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use usher_bench::proxies::{Launcher, ProxyKind, Tune};
use usher_bench::stats_poller;

#[test]
fn usher_dashboard_polls_stats_once_a_second_and_usher_does_not() {
    let workdir = std::env::temp_dir().join(format!("usher-bench-polling-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).expect("workdir");
    let launcher = Launcher {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_usher-bench")),
        haproxy: None,
        nginx: None,
        workdir: workdir.clone(),
        spent: Rc::new(Cell::new(0.0)),
    };
    // A server address that stays bound; no session goes to it.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("server");
    let servers = [server.local_addr().expect("address")];
    let tune = Tune {
        threads: 1,
        cpus: None,
        maxconn: 100,
        server_maxconn: 0,
        queue_timeout: Duration::from_secs(1),
        balance: "roundrobin",
        layout: usher_bench::layout::Layout::SINGLE,
    };

    assert_eq!(ProxyKind::parse("usher-dashboard").expect("named"), ProxyKind::UsherDashboard);
    assert!(!ProxyKind::ALL.contains(&ProxyKind::UsherDashboard), "run only when asked for");

    let plain = launcher.start(ProxyKind::Usher, &servers, &tune, 1).expect("usher");
    assert_eq!(plain.stats_polls(), None, "plain usher is not polled");
    drop(plain);

    let polled = launcher.start(ProxyKind::UsherDashboard, &servers, &tune, 2).expect("usher-dashboard");
    let started = Instant::now();
    let deadline = Duration::from_secs(20);
    // Two answered polls: the first may come before the admin API listens.
    while polled.stats_polls().expect("a poller").0 < 2 {
        assert!(started.elapsed() < deadline, "polls {:?} within {deadline:?}", polled.stats_polls());
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let (answered, failed) = polled.stats_polls().expect("a poller");
    println!("{answered} polls answered, {failed} failed, in {took:?}");
    assert!(failed <= 1, "only a poll before the admin API listened may fail: {failed}");
    assert!(took >= stats_poller::EVERY.mul_f64(0.9), "polls a second apart, not back to back: {took:?}");
    drop(polled);
    let _ = std::fs::remove_dir_all(&workdir);
}
