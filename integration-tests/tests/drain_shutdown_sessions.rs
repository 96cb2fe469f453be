//! At stop, sessions waiting their turn in `global.close_spread` still hear
//! an operator's "shut down the sessions of server S" (`AD`): they close at
//! once instead of relaying on until their turn.

use std::time::{Duration, Instant};

use integration_tests::http::post;
use integration_tests::{seated, Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::AsyncReadExt;

const SESSIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_shutdown_during_the_close_spread_closes_the_servers_sessions_at_once() {
    let server = TestBackend::start(Behavior::Echo);
    // A spread of ten minutes: without the shutdown, every session would
    // relay on for minutes after the grace.
    let broker = TestBroker::start_with_admin(&format!(
        "[global]\ngrace = \"100ms\"\nclose_spread = \"10m\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let (web, admin) = (broker.addr("web"), broker.admin_addr.expect("admin API"));
    let logs = broker.logs.clone();
    let mut closes = Vec::new();
    for i in 0..SESSIONS {
        let mut client = seated(web, i as u8).await;
        closes.push(tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = client.read_to_end(&mut rest).await;
            Instant::now()
        }));
    }

    let stopping = tokio::spawn(broker.stop());
    logs.wait_for("grace expired, closing sessions", |_| true).await;
    let reply = post(admin, "/backends/app/servers/s1/shutdown-sessions", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let asked = Instant::now();
    for close in closes {
        let at = tokio::time::timeout(DEADLINE, close).await.expect("closed in time, not at its turn").expect("join");
        let after = at.saturating_duration_since(asked);
        println!("closed {after:?} after the shutdown request");
        assert!(after < Duration::from_secs(5), "closed {after:?} after the shutdown request");
    }
    let records = logs.wait_sessions(SESSIONS).await;
    let codes: Vec<&str> = records.iter().map(|r| r.termination()).collect();
    assert!(codes.iter().all(|c| *c == "AD"), "{codes:?}");
    tokio::time::timeout(DEADLINE, stopping).await.expect("stopped in time").expect("join").expect("clean stop");
}
