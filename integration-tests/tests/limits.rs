//! Global and frontend maxconn. Excess clients wait in the
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

/// Global maxconn 10 with 20 clients holding: exactly 10
/// reach a backend, 10 are connected but unread, each release lets the next
/// one in (event-driven: the periodic re-check is an hour away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_maxconn_pauses_listeners_and_resumes_on_release() {
    const MAX: usize = 10;
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&format!(
        "[global]\nmaxconn = {MAX}\n[watchdog]\nmaxconn_recheck = \"1h\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let addr = broker.addr("web");
    let mut seated = Vec::new();
    for _ in 0..MAX {
        seated.push(client(addr).await);
    }
    server.wait_until("10 seated", |s| s.current() == MAX as u64).await;

    let mut waiting = Vec::new();
    for _ in 0..MAX {
        waiting.push(client(addr).await);
    }
    let paused = broker.logs.wait_for("listener paused", |_| true).await;
    assert_eq!(paused.get("reason"), "global maxconn");
    assert_eq!(paused.int("global_used"), MAX as i64);
    assert_eq!(server.accepted(), MAX as u64, "a client beyond global maxconn reached the server");
    broker.logs.wait_for("process reached global maxconn; new clients wait in the kernel backlog", |_| true).await;

    for (released, holder) in seated.drain(..).enumerate() {
        drop(holder);
        let want = (MAX + 1 + released) as u64;
        server.wait_until("one more seated after a release", |s| s.accepted() == want).await;
        assert!(server.peak() <= MAX as u64, "global maxconn exceeded");
    }
    broker.logs.wait_for("listener resumed", |_| true).await;
    drop(waiting);
    broker.logs.wait_sessions(2 * MAX).await;
    assert_eq!(server.peak(), MAX as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_frontend_never_blocks_another() {
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&format!(
        "[watchdog]\nmaxconn_recheck = \"1h\"\n\
         [frontends.small]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nmaxconn = 5\n\
         [frontends.large]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let small = broker.addr("small");
    let large = broker.addr("large");
    let mut seated = Vec::new();
    for _ in 0..5 {
        seated.push(client(small).await);
    }
    server.wait_until("5 seated", |s| s.current() == 5).await;
    let _sixth = client(small).await;
    let paused = broker.logs.wait_for("listener paused", |_| true).await;
    assert_eq!(paused.get("reason"), "frontend maxconn");
    assert_eq!(paused.get("frontend"), "small");

    // The other frontend keeps accepting while `small` is paused.
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(client(large).await);
    }
    server.wait_until("large frontend served", |s| s.current() == 9).await;
    assert_eq!(server.accepted(), 9);

    drop(seated.remove(0));
    server.wait_until("sixth small client seated", |s| s.accepted() == 10).await;
    broker.logs.wait_for("listener resumed", |r| r.get("frontend") == "small").await;
}

/// bind_maxconn: one address of a frontend is FULL at its own limit while
/// the frontend's other address keeps accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_maxconn_limits_one_address() {
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&format!(
        "[watchdog]\nmaxconn_recheck = \"1h\"\n\
         [frontends.a]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nbind_maxconn = 2\n\
         [frontends.b]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let mut held = vec![client(broker.addr("a")).await, client(broker.addr("a")).await];
    server.wait_until("2 seated", |s| s.current() == 2).await;
    let _third = client(broker.addr("a")).await;
    let paused = broker.logs.wait_for("listener paused", |_| true).await;
    assert_eq!(paused.get("reason"), "listener maxconn");
    let _other = client(broker.addr("b")).await;
    server.wait_until("frontend b still accepts", |s| s.accepted() == 3).await;
    drop(held.pop());
    server.wait_until("third client of a seated", |s| s.accepted() == 4).await;
}
