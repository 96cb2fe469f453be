//! Issue test 9: global and frontend maxconn. Excess clients wait in the
//! kernel backlog (connected, not accepted), are served when slots free, and
//! a paused listener resumes on the release itself: the periodic re-check is
//! set to an hour, so only the event-driven path can resume it.

use integration_tests::{Behavior, TestBackend, TestBroker};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn client(addr: std::net::SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect (kernel backlog)");
    c.write_all(b"x").await.expect("write");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_maxconn_pauses_listeners_and_resumes_on_release() {
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&format!(
        "[global]\nmaxconn = 3\n[watchdog]\nmaxconn_recheck = \"1h\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let addr = broker.addr("web");
    let mut seated = Vec::new();
    for _ in 0..3 {
        seated.push(client(addr).await);
    }
    server.wait_until("3 seated", |s| s.current() == 3).await;

    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(client(addr).await);
    }
    let paused = broker.logs.wait_for("listener paused", |_| true).await;
    assert_eq!(paused.get("reason"), "global maxconn");
    assert_eq!(paused.int("global_used"), 3);
    assert_eq!(server.accepted(), 3, "a client beyond global maxconn reached the server");

    for (released, holder) in seated.drain(..).enumerate() {
        drop(holder);
        let want = 4 + released as u64;
        server.wait_until("one more seated after a release", |s| s.accepted() == want).await;
        assert!(server.peak() <= 3, "global maxconn exceeded");
    }
    broker.logs.wait_for("listener resumed", |_| true).await;
    drop(waiting);
    broker.logs.wait_sessions(6).await;
    assert_eq!(server.peak(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_frontend_never_blocks_another() {
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&format!(
        "[watchdog]\nmaxconn_recheck = \"1h\"\n\
         [frontends.small]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nmaxconn = 2\n\
         [frontends.large]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let small = broker.addr("small");
    let large = broker.addr("large");
    let first = client(small).await;
    let _second = client(small).await;
    server.wait_until("2 seated", |s| s.current() == 2).await;
    let _third = client(small).await;
    let paused = broker.logs.wait_for("listener paused", |_| true).await;
    assert_eq!(paused.get("reason"), "frontend maxconn");
    assert_eq!(paused.get("frontend"), "small");

    // The other frontend keeps accepting while `small` is paused.
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(client(large).await);
    }
    server.wait_until("large frontend served", |s| s.current() == 6).await;
    assert_eq!(server.accepted(), 6);

    drop(first);
    server.wait_until("third small client seated", |s| s.accepted() == 7).await;
    broker.logs.wait_for("listener resumed", |r| r.get("frontend") == "small").await;
}
