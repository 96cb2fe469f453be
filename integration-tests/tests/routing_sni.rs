//! Routing by TLS SNI and ALPN on real sockets, with real TLS clients and
//! TLS servers (rustls): usher reads the ClientHello without terminating
//! TLS, so a handshake that completes end to end through it proves the
//! peeked bytes reached the server unchanged and first.

mod routing_common;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use routing_common::{backend, connect, tls_line, TestPki};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConnection;

/// A frontend `tls` with the default backend `default` and four rules:
/// two names (one with a wildcard) to `api`, one to `web`, one to `mail`,
/// then ALPN `h2` to `h2`.
fn config(servers: &[(&str, std::net::SocketAddr)]) -> String {
    let mut toml = "[frontends.tls]\nbind = [\"127.0.0.1:0\"]\nbackend = \"default\"\n\
                    [[frontends.tls.routes]]\nsni = [\"api.test\", \"*.api.test\"]\nbackend = \"api\"\n\
                    [[frontends.tls.routes]]\nsni = [\"WEB.test\"]\nbackend = \"web\"\n\
                    [[frontends.tls.routes]]\nsni = [\"mail.test\"]\nbackend = \"mail\"\n\
                    [[frontends.tls.routes]]\nalpn = [\"h2\"]\nbackend = \"h2\"\n"
        .to_owned();
    for (name, addr) in servers {
        toml.push_str(&backend(name, *addr));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_names_to_three_backends_alpn_to_a_fourth_and_the_rest_to_the_default() {
    let pki = TestPki::new();
    let servers: Vec<_> = ["default", "api", "web", "mail", "h2"].into_iter().map(|n| (n, pki.server(n))).collect();
    let addrs: Vec<_> = servers.iter().map(|(n, s)| (*n, s.addr)).collect();
    let broker = TestBroker::start(&config(&addrs));
    let front = broker.addr("tls");

    // (server name, ALPN offered, backend expected, rule index expected)
    let cases = [
        ("api.test", &["http/1.1"][..], "api", 0),
        ("v2.api.test", &["http/1.1"][..], "api", 0),
        ("web.test", &["h2"][..], "web", 1),
        ("mail.test", &[][..], "mail", 2),
        ("other.test", &["h2", "http/1.1"][..], "h2", 3),
        ("other.test", &["http/1.1"][..], "default", -1),
    ];
    for (i, (sni, alpn, expected, _)) in cases.iter().enumerate() {
        let reply = timeout(DEADLINE, tls_line(&pki.connector(alpn), connect(front).await, sni, &format!("hello {i}")))
            .await
            .expect("in time");
        assert_eq!(reply, format!("{expected}:hello {i}"), "{sni} with {alpn:?}");
    }

    let records = broker.logs.wait_sessions(cases.len()).await;
    for (record, (sni, _, expected, rule)) in records.iter().zip(cases) {
        assert_eq!(record.termination(), "--", "{sni}: {record:?}");
        assert_eq!(record.get("backend"), expected, "{sni}: {record:?}");
        assert_eq!(record.int("route"), rule, "{sni}: {record:?}");
        assert_eq!(record.get("client_hello"), "read", "{sni}: {record:?}");
        assert_eq!(record.get("spill"), "-", "{sni}: {record:?}");
    }
}

/// Writes at most one byte per write: with `TCP_NODELAY` each is its own
/// TCP segment, so usher sees the ClientHello trickle in.
struct OneByteWrites(TcpStream);

impl AsyncRead for OneByteWrites {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneByteWrites {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let one = &buf[..buf.len().min(1)];
        Pin::new(&mut self.0).poll_write(cx, one)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_in_one_byte_segments_is_routed_and_the_handshake_completes() {
    let pki = TestPki::new();
    let servers: Vec<_> = ["default", "api", "web", "mail", "h2"].into_iter().map(|n| (n, pki.server(n))).collect();
    let addrs: Vec<_> = servers.iter().map(|(n, s)| (*n, s.addr)).collect();
    let broker = TestBroker::start(&config(&addrs));

    let stream = OneByteWrites(connect(broker.addr("tls")).await);
    let reply =
        timeout(DEADLINE, tls_line(&pki.connector(&[]), stream, "mail.test", "trickled")).await.expect("in time");
    assert_eq!(reply, "mail:trickled");
    let record = broker.logs.wait_for("session", |r| r.is_session()).await;
    assert_eq!((record.get("backend"), record.int("route"), record.termination()), ("mail", 2, "--"), "{record:?}");
}

/// A real ClientHello (rustls's, for `sni`), its handshake message cut
/// into TLS records of at most `fragment` bytes.
fn client_hello_in_records(pki: &TestPki, sni: &str, fragment: usize) -> Vec<u8> {
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let mut conn = ClientConnection::new(pki.client_config(&["h2"]), name).expect("client connection");
    let mut first = Vec::new();
    conn.write_tls(&mut first).expect("ClientHello");
    // One record as rustls wrote it: type, version, length, then the message.
    assert_eq!(first[0], 0x16, "a handshake record");
    let length = usize::from(u16::from_be_bytes([first[3], first[4]]));
    assert_eq!(first.len(), 5 + length, "rustls writes its ClientHello in one record");
    let mut out = Vec::new();
    for chunk in first[5..].chunks(fragment) {
        out.extend_from_slice(&first[..3]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_over_several_records_reaches_the_server_byte_for_byte() {
    let pki = TestPki::new();
    let api = TestBackend::start(Behavior::Capture { reply: b"api" });
    let other = TestBackend::start(Behavior::Capture { reply: b"other" });
    let addrs =
        [("default", other.addr), ("api", api.addr), ("web", other.addr), ("mail", other.addr), ("h2", other.addr)];
    let broker = TestBroker::start(&config(&addrs));

    let mut sent = client_hello_in_records(&pki, "v2.api.test", 40);
    assert!(sent.len() > 5 * 45, "several records: {} bytes", sent.len());
    sent.extend_from_slice(b"\x17\x03\x03\x00\x04more");
    let mut client = connect(broker.addr("tls")).await;
    // Several writes: the records arrive over several reads too.
    for part in sent.chunks(97) {
        client.write_all(part).await.expect("write");
    }
    client.shutdown().await.expect("half-close");
    let mut reply = Vec::new();
    timeout(DEADLINE, client.read_to_end(&mut reply)).await.expect("in time").expect("read");
    assert_eq!(reply, b"api");
    assert_eq!(api.captured(), vec![sent.clone()], "the server got every byte, unchanged, in order");
    let record = broker.logs.wait_for("session", |r| r.is_session()).await;
    assert_eq!(record.int("bytes_from_client"), sent.len() as i64, "{record:?}");
    assert_eq!((record.get("backend"), record.int("route")), ("api", 0), "{record:?}");
}
