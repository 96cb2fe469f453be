//! Bytes are relayed exactly both ways, with half-close in
//! each direction; and the idle timeouts of each side.

use std::sync::Arc;

use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(server: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n{extra}\n\
         [backends.app.servers.s1]\naddress = \"{server}\"\n"
    )
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Client → server, then the client half-closes: the echo server sees EOF,
/// sends everything back and half-closes; the client reads it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_relays_every_byte_both_ways() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&config(server.addr, ""));
    let data = random_bytes(7, 6 * 1024 * 1024 + 123);

    let stream = TcpStream::connect(broker.addr("web")).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.expect("write");
        wr.shutdown().await.expect("half-close");
        wr
    });
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, rd.read_to_end(&mut back)).await.expect("in time").expect("read");
    let _wr = writer.await.expect("writer");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");

    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "--");
    assert_eq!(record.int("bytes_from_client"), data.len() as i64);
    assert_eq!(record.int("bytes_from_server"), data.len() as i64);
}

/// Server → client first, then the server half-closes: the client reads
/// everything and EOF, and can still send to the server afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_half_close_keeps_the_other_direction_open() {
    let down = Arc::new(random_bytes(11, 5 * 1024 * 1024 + 7));
    let up = random_bytes(13, 3 * 1024 * 1024 + 5);
    let server = TestBackend::start(Behavior::SendFirst { data: down.clone() });
    let broker = TestBroker::start(&config(server.addr, ""));

    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut got)).await.expect("in time").expect("read");
    assert!(got == *down, "downstream bytes differ");
    client.write_all(&up).await.expect("write after the server's half-close");
    client.shutdown().await.expect("half-close");

    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "--");
    server.wait_until("upstream bytes", |s| s.received().len() >= up.len()).await;
    assert!(server.received() == up, "upstream bytes differ");
    assert_eq!(record.int("bytes_from_server"), down.len() as i64);
    assert_eq!(record.int("bytes_from_client"), up.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_is_closed_with_cd() {
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&config(
        server.addr,
        "[frontends.web.timeout]\nclient = \"200ms\"\n[backends.app.timeout]\nserver = \"1h\"\n",
    ));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    client.write_all(b"x").await.expect("write");
    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "cD");
    assert!(record.int("total_ms") >= 200);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(DEADLINE, client.read_to_end(&mut rest)).await.expect("closed").unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_is_closed_with_sd() {
    let server = TestBackend::start(Behavior::Drain);
    let broker = TestBroker::start(&config(
        server.addr,
        "[frontends.web.timeout]\nclient = \"1h\"\n[backends.app.timeout]\nserver = \"200ms\"\n",
    ));
    // The client keeps talking; the server never answers.
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    client.write_all(b"x").await.expect("write");
    let record = broker.logs.wait_for("session", |_| true).await;
    assert!(matches!(record.termination(), "sD"), "{record:?}");
    drop(client);
}

/// Ping-pong, then bulk, then ping-pong again on one session, with one
/// worker (sessions on the actors' thread) and small buffers: every switch
/// between the stack read and the growing bulk buffer keeps the bytes exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_bulk_messages_relay_exactly_on_one_worker() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[global]\nworkers = 1\nbufsize = 1024\nbufsize_max = 8192\n{}",
        config(server.addr, "")
    ));
    let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
    let mut sent = 0u64;
    for (round, len) in [1usize, 64, 3000, 2 * 1024 * 1024 + 17, 5, 100_000, 2].into_iter().enumerate() {
        let data = random_bytes(100 + round as u64, len);
        let (mut rd, mut wr) = client.split();
        let write = async {
            wr.write_all(&data).await.expect("write");
        };
        let mut back = vec![0u8; len];
        let read = async {
            tokio::time::timeout(DEADLINE, rd.read_exact(&mut back)).await.expect("in time").expect("read");
        };
        tokio::join!(write, read);
        assert!(back == data, "round {round}: {len} echoed bytes differ");
        sent += len as u64;
    }
    client.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut rest)).await.expect("in time").expect("read");
    assert!(rest.is_empty());

    let record = broker.logs.wait_for("session", |_| true).await;
    assert_eq!(record.termination(), "--");
    assert_eq!(record.int("bytes_from_client"), sent as i64);
    assert_eq!(record.int("bytes_from_server"), sent as i64);
}
