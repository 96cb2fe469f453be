//! Routing of clients that send no readable ClientHello (plain TCP, a
//! malformed or oversized one, silence until `timeout.inspect`), and by
//! source network and destination, on real sockets.

mod routing_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use routing_common::{backend, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Sends `bytes`, half-closes, reads to the end (a refused client may see
/// a reset: errors end the exchange quietly).
async fn exchange(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    timeout(DEADLINE, async {
        let mut reply = Vec::new();
        if stream.write_all(bytes).await.is_ok() && stream.shutdown().await.is_ok() {
            let _ = stream.read_to_end(&mut reply).await;
        }
        reply
    })
    .await
    .expect("exchange finished in time")
}

/// Frontends `soft` (`no_client_hello = "default"`) and `strict`
/// (`"refuse"`), each routing `api.test` to `api` and the rest to `default`.
fn two_policies(inspect: &str, api: SocketAddr, default: SocketAddr) -> String {
    let mut toml = String::new();
    for (name, policy) in [("soft", "default"), ("strict", "refuse")] {
        toml.push_str(&format!(
            "[frontends.{name}]\nbind = [\"127.0.0.1:0\"]\nbackend = \"default\"\nno_client_hello = \"{policy}\"\n\
             timeout.inspect = \"{inspect}\"\n\
             [[frontends.{name}.routes]]\nsni = [\"api.test\"]\nbackend = \"api\"\n"
        ));
    }
    toml + &backend("api", api) + &backend("default", default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_goes_to_the_default_backend_or_is_refused() {
    let api = TestBackend::start(Behavior::Capture { reply: b"api" });
    let default = TestBackend::start(Behavior::Capture { reply: b"default" });
    let broker = TestBroker::start(&two_policies("5s", api.addr, default.addr));
    let request = b"GET / HTTP/1.0\r\nHost: api.test\r\n\r\n";

    assert_eq!(exchange(connect(broker.addr("soft")).await, request).await, b"default");
    assert_eq!(default.captured(), vec![request.to_vec()], "forwarded whole, first bytes included");
    let soft = broker.logs.wait_for("session", |r| r.get("frontend") == "soft").await;
    assert_eq!((soft.termination(), soft.get("client_hello"), soft.int("route")), ("--", "not_tls", -1), "{soft:?}");

    assert_eq!(exchange(connect(broker.addr("strict")).await, request).await, b"");
    let strict = broker.logs.wait_for("session", |r| r.get("frontend") == "strict").await;
    assert_eq!((strict.termination(), strict.get("client_hello")), ("CI", "not_tls"), "{strict:?}");
    assert_eq!(strict.get("server"), "-", "{strict:?}");
    assert_eq!(default.accepted() + api.accepted(), 1, "the refused client reached no server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_oversized_client_hello_is_forwarded_whole_or_refused() {
    let api = TestBackend::start(Behavior::Capture { reply: b"api" });
    let default = TestBackend::start(Behavior::Capture { reply: b"default" });
    let broker = TestBroker::start(&two_policies("5s", api.addr, default.addr));

    // A ClientHello that announces 16 000 bytes, sent in records of 100:
    // with the records' headers it passes usher's 16 KiB bound unfinished.
    let mut oversized = Vec::new();
    let mut message = vec![0x01, 0x00, 0x3e, 0x80];
    message.resize(4 + 16_000, 0x41);
    for chunk in message.chunks(100) {
        oversized.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, chunk.len() as u8]);
        oversized.extend_from_slice(chunk);
    }
    assert!(oversized.len() > 16 * 1024);
    assert_eq!(exchange(connect(broker.addr("soft")).await, &oversized).await, b"default");
    assert_eq!(default.captured(), vec![oversized.clone()], "every byte forwarded, past the bound too");
    let record = broker.logs.wait_for("session", |r| r.get("frontend") == "soft").await;
    assert_eq!((record.get("client_hello"), record.termination()), ("malformed", "--"), "{record:?}");

    // A ServerHello where the ClientHello should be.
    let server_hello = b"\x16\x03\x03\x00\x04\x02\x00\x00\x00";
    assert_eq!(exchange(connect(broker.addr("strict")).await, server_hello).await, b"");
    let record = broker.logs.wait_for("session", |r| r.get("frontend") == "strict").await;
    assert_eq!((record.get("client_hello"), record.termination()), ("malformed", "CI"), "{record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_routed_at_timeout_inspect_or_refused() {
    let api = TestBackend::start(Behavior::Echo);
    let default = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&two_policies("300ms", api.addr, default.addr));

    // Routed without a ClientHello once timeout.inspect passed: the default
    // server's accept is the signal, then the session relays as usual.
    let started = Instant::now();
    let mut soft = connect(broker.addr("soft")).await;
    default.wait_until("the silent client reached the default server", |b| b.accepted() == 1).await;
    let waited = started.elapsed();
    println!("silent client routed after {waited:?} (timeout.inspect 300ms)");
    assert!(waited >= Duration::from_millis(250), "routed before timeout.inspect: {waited:?}");
    soft.write_all(b"late").await.expect("write");
    let mut echo = [0u8; 4];
    timeout(DEADLINE, soft.read_exact(&mut echo)).await.expect("in time").expect("echo");
    assert_eq!(&echo, b"late");
    drop(soft);
    let record = broker.logs.wait_for("session", |r| r.get("frontend") == "soft").await;
    assert_eq!((record.get("client_hello"), record.get("backend")), ("timeout", "default"), "{record:?}");

    // Refused at timeout.inspect: the client sees its connection close.
    let started = Instant::now();
    let mut strict = connect(broker.addr("strict")).await;
    let mut byte = [0u8; 1];
    let closed = timeout(DEADLINE, strict.read(&mut byte)).await.expect("closed in time");
    let waited = started.elapsed();
    println!("silent client refused after {waited:?} (timeout.inspect 300ms)");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(waited >= Duration::from_millis(250), "refused before timeout.inspect: {waited:?}");
    let record = broker.logs.wait_for("session", |r| r.get("frontend") == "strict").await;
    assert_eq!((record.termination(), record.get("client_hello")), ("cI", "timeout"), "{record:?}");
    assert_eq!(default.accepted(), 1, "the refused client reached no server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_networks_and_destinations_route_without_reading_anything() {
    let internal = TestBackend::start(Behavior::Capture { reply: b"internal" });
    let admin = TestBackend::start(Behavior::Capture { reply: b"admin" });
    let default = TestBackend::start(Behavior::Capture { reply: b"default" });
    // `edge` takes the client and destination from PROXY headers; `local`
    // sees the sockets' own addresses.
    let toml = "[frontends.edge]\nbind = [\"127.0.0.1:0\"]\nbackend = \"default\"\naccept_proxy = true\n\
                [[frontends.edge.routes]]\nsource = [\"10.0.0.0/8\"]\nbackend = \"internal\"\n\
                [[frontends.edge.routes]]\ndestination = [\"*:8443\"]\nsource = [\"192.0.2.0/24\"]\nbackend = \"admin\"\n\
                [frontends.local]\nbind = [\"127.0.0.1:0\"]\nbackend = \"default\"\n\
                [[frontends.local.routes]]\ndestination = [\"127.0.0.1\"]\nsource = [\"127.0.0.0/8\"]\nbackend = \"internal\"\n"
        .to_owned()
        + &backend("internal", internal.addr)
        + &backend("admin", admin.addr)
        + &backend("default", default.addr);
    let broker = TestBroker::start(&toml);
    let edge = broker.addr("edge");

    let cases: [(&[u8], &[u8], i64); 4] = [
        (b"PROXY TCP4 10.1.2.3 198.51.100.1 40001 443\r\nq1", b"internal", 0),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 40002 8443\r\nq2", b"admin", 1),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 40003 443\r\nq3", b"default", -1),
        (b"PROXY TCP4 198.18.0.1 198.51.100.1 40004 8443\r\nq4", b"default", -1),
    ];
    for (i, (sent, expected, rule)) in cases.iter().enumerate() {
        let reply = exchange(connect(edge).await, sent).await;
        assert_eq!(String::from_utf8_lossy(&reply), String::from_utf8_lossy(expected), "case {i}");
        let port = format!(":4000{}", i + 1);
        let record = broker.logs.wait_for("session", |r| r.get("client").ends_with(&port)).await;
        assert_eq!(record.int("route"), *rule, "case {i}: {record:?}");
        assert_eq!(record.get("client_hello"), "-", "no rule needs it: {record:?}");
    }
    assert_eq!(exchange(connect(broker.addr("local")).await, b"hi").await, b"internal");
    let record = broker.logs.wait_for("session", |r| r.get("frontend") == "local").await;
    assert_eq!((record.get("backend"), record.int("route")), ("internal", 0), "{record:?}");
    assert_eq!(internal.captured()[1], b"hi");
}
