//! Cluster mode when an instance dies: two `usher` processes share one
//! server's maxconn through a real etcd; one is killed with SIGKILL (no
//! goodbye, no lease revoked). Its lease ends in etcd, and the survivor
//! takes its slots within the lease TTL and one allocation period, while
//! the server never sees more than maxconn.

#![cfg(feature = "cluster")]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::daemon::Daemon;
use integration_tests::etcd::{cluster_toml, etcd_or_skip, EtcdServer};
use integration_tests::http::get;
use integration_tests::{request, Behavior, ConfigFile, TestBackend, DEADLINE};

const USHER: &str = env!("CARGO_BIN_EXE_usher");
const MAXCONN: u64 = 10;
const LEASE_TTL: Duration = Duration::from_secs(2);
const PERIOD: Duration = Duration::from_millis(200);

/// One instance's view: (members, its share of the server).
async fn view(admin: SocketAddr) -> (u64, u64) {
    let stats = get(admin, "/stats", None).await.json();
    let share = stats["backends"][0]["servers"][0]["cluster_share"].as_u64().unwrap_or(0);
    (stats["cluster"]["members"].as_u64().unwrap_or(0), share)
}

/// Waits (bounded) until `done` holds for the instances' views.
async fn wait_views(admins: &[SocketAddr], what: &str, done: impl Fn(&[(u64, u64)]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let mut views = Vec::new();
        for a in admins {
            views.push(view(*a).await);
        }
        if done(&views) {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not reached in {DEADLINE:?}; views {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(name: &str, etcd: &str, server: SocketAddr) -> (ConfigFile, Daemon, SocketAddr, SocketAddr) {
    let prefix = format!("/usher-kill-{}", std::process::id());
    let toml = "[log]\nformat = \"json\"\n[admin]\nbind = \"127.0.0.1:0\"\n".to_owned()
        + &cluster_toml(etcd, &prefix, name, server, MAXCONN as u32, LEASE_TTL, PERIOD);
    let config = ConfigFile::new(&format!("kill-{name}"), &toml);
    let mut daemon = Daemon::start(Path::new(USHER), &config.0, &[]);
    let (frontend, admin) =
        tokio::task::block_in_place(|| (daemon.address("listening"), daemon.address("admin API listening")));
    (config, daemon, frontend, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_hands_its_share_over_at_its_lease_end() {
    let Some(binary) = etcd_or_skip("a_killed_instance_hands_its_share_over_at_its_lease_end") else { return };
    let etcd = EtcdServer::start(&binary);
    let server = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"ok" });
    let (_config_a, victim, victim_web, victim_admin) = start("victim", &etcd.endpoint(), server.addr);
    let (_config_b, survivor, survivor_web, survivor_admin) = start("survivor", &etcd.endpoint(), server.addr);
    wait_views(&[victim_admin, survivor_admin], "two members sharing every slot", |v| {
        v.iter().all(|(m, _)| *m == 2) && v.iter().map(|(_, s)| s).sum::<u64>() == MAXCONN
    })
    .await;

    // Both busy: 20 clients each, so each wants more than its half.
    let stop = Arc::new(AtomicBool::new(false));
    let survivor_served = Arc::new(AtomicU64::new(0));
    let survivor_failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for k in 0..40 {
        let at_survivor = k % 2 == 0;
        let addr = if at_survivor { survivor_web } else { victim_web };
        let (stop, served, failed) = (stop.clone(), survivor_served.clone(), survivor_failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let answer = request(addr, b"hello").await;
                // The victim's clients fail when it dies: only the
                // survivor's must all be served.
                if at_survivor {
                    match answer {
                        Ok(answer) if answer == b"ok" => served.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                } else if answer.is_err() {
                    break;
                }
            }
        }));
    }
    server.wait_until("sessions flow through both", |s| s.accepted() > 200).await;
    let (_, before) = view(survivor_admin).await;

    victim.signal("KILL");
    let killed = Instant::now();
    let took = wait_views(&[survivor_admin], "the survivor holds every slot", |v| v[0] == (1, MAXCONN)).await;
    println!(
        "after SIGKILL, the survivor went from {before} to all {MAXCONN} slots in {took:?} \
         (lease_ttl {LEASE_TTL:?}, period {PERIOD:?})"
    );
    // The lease ends TTL after the victim's last keep-alive (sent at most a
    // period before the kill); the survivor sees it at its next round.
    // Generous: a busy machine delays rounds.
    assert!(took < LEASE_TTL + PERIOD * 2 + Duration::from_secs(2), "took {took:?}");
    assert!(killed.elapsed() >= LEASE_TTL / 2, "the slots moved before the victim's lease could end");

    let before = survivor_served.load(Ordering::SeqCst);
    server.wait_until("the survivor serves on", |s| s.accepted() > 200 + before).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    println!(
        "survivor served {} sessions, {} failed; server peak {} (maxconn {MAXCONN})",
        survivor_served.load(Ordering::SeqCst),
        survivor_failed.load(Ordering::SeqCst),
        server.peak()
    );
    assert_eq!(survivor_failed.load(Ordering::SeqCst), 0, "the survivor's clients are all served");
    assert!(server.peak() <= MAXCONN, "server peak {} > maxconn {MAXCONN}", server.peak());
    survivor.signal("TERM");
    drop(survivor);
    drop(etcd);
}
