//! The README recipe "Swap a server with zero failed clients": pause the
//! backend, wait until the old server is idle, point the server at its new
//! address (reload), resume. Clients keep connecting the whole time; every
//! one is served and none is refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::http::{call, post};
use integration_tests::{request, Behavior, ConfigFile, TestBackend, TestBroker, DEADLINE};

fn config(addr: SocketAddr) -> String {
    format!(
        "[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"db\"\n\
         [backends.db]\nretries = 0\n[backends.db.timeout]\nqueue = \"30s\"\n\
         [backends.db.servers.primary]\naddress = \"{addr}\"\nmaxconn = 20\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_server_under_load_fails_no_client() {
    let old = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"old" });
    let new = TestBackend::start(Behavior::Reply { hold: Duration::from_millis(20), reply: b"new" });
    let file = ConfigFile::new("swap", &config(old.addr));
    let mut broker = TestBroker::start_reloadable(&file.0, true);
    let web = broker.addr("web");
    let admin = broker.admin_addr.expect("admin API");

    // 600 clients, one every 3 ms, for the whole swap.
    let failures = Arc::new(AtomicU64::new(0));
    let (from_old, from_new) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (failures, from_old, from_new) = (failures.clone(), from_old.clone(), from_new.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(3));
            let mut clients = Vec::new();
            for i in 0..600u32 {
                tick.tick().await;
                let (failures, from_old, from_new) = (failures.clone(), from_old.clone(), from_new.clone());
                clients.push(tokio::spawn(async move {
                    match tokio::time::timeout(DEADLINE, request(web, b"query")).await {
                        Ok(Ok(reply)) if reply == b"old" => from_old.fetch_add(1, Ordering::Relaxed),
                        Ok(Ok(reply)) if reply == b"new" => from_new.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("client {i}: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }));
            }
            for c in clients {
                c.await.expect("client task");
            }
        })
    };
    old.wait_until("traffic on the old server", |b| b.accepted() >= 50).await;

    // 1. Pause: nobody new connects; clients queue.
    let reply = post(admin, "/backends/db/pause", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // 2. Wait until the old server finished its sessions.
    let idle = call(admin, "POST", "/backends/db/servers/primary/wait-idle", Some(r#"{"timeout_ms": 20000}"#), None)
        .await
        .expect("wait-idle");
    assert_eq!(idle.json()["idle"], true, "{idle:?}");
    println!("old server idle after {} ms", idle.json()["waited_ms"]);
    assert_eq!(old.current(), 0, "the old server holds no connection");
    let old_total = old.accepted();
    // 3. The new address, by a reload.
    file.write(&config(new.addr));
    broker.reload().await.expect("reload");
    // 4. Resume: the queued clients go to the new server.
    let reply = post(admin, "/backends/db/resume", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    println!("queued at the resume: {}", reply.json()["queued"]);

    load.await.expect("load");
    let (o, n) = (from_old.load(Ordering::Relaxed), from_new.load(Ordering::Relaxed));
    println!("served by the old server {o}, by the new one {n}");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "refused or failed clients");
    assert_eq!(o + n, 600);
    assert!(n > 0, "the new server served the rest");
    assert_eq!(old.accepted(), old_total, "nobody reached the old server after it went idle");
    let codes: Vec<String> = broker.logs.wait_sessions(600).await.iter().map(|r| r.termination().to_owned()).collect();
    assert!(codes.iter().all(|c| c == "--"), "{:?}", codes.iter().filter(|c| *c != "--").collect::<Vec<_>>());
    broker.stop().await.expect("stop");
}
