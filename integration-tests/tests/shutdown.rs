//! Graceful stop: stop accepting, let sessions finish within `global.grace`,
//! then close the rest (termination `KD`) and return.

use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(server: std::net::SocketAddr, grace: &str) -> String {
    format!(
        "[global]\ngrace = \"{grace}\"\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{server}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_finish_within_the_grace() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&config(server.addr, "30s"));
    let addr = broker.addr("web");
    let logs = broker.logs.clone();
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(b"a").await.expect("write");
    let mut b = [0u8; 1];
    client.read_exact(&mut b).await.expect("seated");

    let stopping = tokio::spawn(broker.stop());
    logs.wait_for("listener closed", |_| true).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting after stop");

    // The live session carries on and ends normally.
    client.write_all(b"b").await.expect("write during grace");
    client.read_exact(&mut b).await.expect("echo during grace");
    assert_eq!(&b, b"b");
    client.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("eof");
    tokio::time::timeout(DEADLINE, stopping).await.expect("stopped in time").expect("join").expect("clean stop");
    let record = logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "--");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_grace_are_closed() {
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&config(server.addr, "200ms"));
    let logs = broker.logs.clone();
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    client.write_all(b"a").await.expect("write");
    server.wait_until("seated", |s| s.current() == 1).await;

    tokio::time::timeout(DEADLINE, broker.stop()).await.expect("stopped in time").expect("clean stop");
    let record = logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "KD");
    logs.wait_for("grace expired, closing sessions", |_| true).await;
    let mut rest = Vec::new();
    let n = client.read_to_end(&mut rest).await.unwrap_or(0);
    assert_eq!(n, 0);
    server.wait_until("server side closed", |s| s.current() == 0).await;
}
