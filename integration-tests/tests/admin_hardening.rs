//! The admin API against clients that hold connections or trickle bytes, on
//! real sockets: idle connections from one address neither starve `/health`
//! nor outlive the request timeout, connections over the per-client cap are
//! closed at once, a body that does not arrive in time is cut off (and the
//! change it carried is not applied), and oversized bodies and header blocks
//! are refused without hurting the server.
//!
//! The figures below are the shipped defaults of `configs/default.toml`
//! (`admin.timeout.request`, `admin.maxconn_per_client`); the tests run on
//! the defaults so that what ships is what is tested.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use integration_tests::http::{get, HttpReply};
use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// `admin.timeout.request` by default.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// `admin.maxconn_per_client` by default.
const PER_CLIENT: usize = 16;
/// Slack on top of the request timeout for "cut off at the timeout": the
/// timers of a loaded test machine, never a second request timeout.
const SLACK: Duration = Duration::from_millis(1500);
/// How long the API keeps discarding what a client still sends after a
/// refusal (408, 413) before it closes, so the client reads the reply.
const LINGER: Duration = Duration::from_secs(1);

const TOKEN: &str = "hardening-token";

fn config(server: SocketAddr, admin: &str) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{server}\"\nmaxconn = 5\n\
         [admin]\n{admin}\n"
    )
}

fn admin(broker: &TestBroker) -> SocketAddr {
    broker.admin_addr.expect("started with the admin API")
}

/// A connection to `api` from `source` (any 127/8 address is loopback on
/// Linux, so a second client address needs no setup).
async fn connect_from(source: Ipv4Addr, api: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).expect("bind the client address");
    tokio::time::timeout(DEADLINE, socket.connect(api)).await.expect("connected in time").expect("connect")
}

/// How a connection the test holds ended: when (from `since`) and what the
/// server wrote before closing it.
#[derive(Debug)]
struct Ended {
    after: Duration,
    /// When the first byte of the reply arrived, if any did.
    replied: Option<Duration>,
    reply: Vec<u8>,
}

impl Ended {
    fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(&self.reply).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

/// Reads `stream` until the server closes it (EOF or reset), within
/// [`DEADLINE`].
fn watch_end(stream: TcpStream, since: Instant) -> JoinHandle<Ended> {
    tokio::spawn(read_until_closed(stream, since))
}

async fn read_until_closed(mut stream: impl AsyncReadExt + Unpin, since: Instant) -> Ended {
    let mut reply = Vec::new();
    let mut replied = None;
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    replied.get_or_insert_with(|| since.elapsed());
                    reply.extend_from_slice(&chunk[..n]);
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_all).await.expect("the server closed the connection");
    Ended { after: since.elapsed(), replied, reply }
}

async fn stats(api: SocketAddr) -> Value {
    let reply = get(api, "/stats", Some(TOKEN)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

/// Sends `head`, then `body` one byte every `pace` until the server closes
/// the connection; returns how it ended.
async fn trickle(api: SocketAddr, head: String, body: &'static [u8], pace: Duration) -> Ended {
    let stream = connect_from(Ipv4Addr::LOCALHOST, api).await;
    let since = Instant::now();
    let (reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for byte in body {
            // Pacing the sender, not waiting for anything.
            tokio::time::sleep(pace).await;
            writer.write_all(std::slice::from_ref(byte)).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let ended = read_until_closed(reader, since).await;
    writing.abort();
    ended
}

/// A trickled request was cut off at the request timeout: answered 408 by
/// then (or closed without a reply), and closed once the linger is over.
fn assert_cut_off(what: &str, ended: &Ended) {
    println!("{what}: replied after {:?}, closed after {:?}", ended.replied, ended.after);
    if let Some(replied) = ended.replied {
        assert!(replied < REQUEST_TIMEOUT + SLACK, "{what}: answered after {replied:?}");
        assert_eq!(ended.status(), Some(408), "{what}: {:?}", String::from_utf8_lossy(&ended.reply));
    }
    assert!(ended.after < REQUEST_TIMEOUT + LINGER + SLACK, "{what}: held for {:?}", ended.after);
}

/// 300 connections from 127.0.0.2 that never send a byte: the ones over
/// the per-client cap are closed at once, `/health` from another address
/// answers at once meanwhile, and the ones under the cap are closed by the
/// request timeout (with a 408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_client_leave_health_answering() {
    const IDLE: usize = 300;
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config(s1.addr, ""));
    let api = admin(&broker);
    let flooder = Ipv4Addr::new(127, 0, 0, 2);

    let opened = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(watch_end(connect_from(flooder, api).await, opened));
    }
    println!("{IDLE} idle connections opened in {:?}", opened.elapsed());

    let asked = Instant::now();
    let health = tokio::time::timeout(DEADLINE, get(api, "/health", None)).await.expect("/health answered");
    let took = asked.elapsed();
    println!("GET /health under the flood answered {} in {took:?}", health.status);
    assert_eq!(health.status, 200, "{health:?}");
    assert!(took < Duration::from_secs(1), "/health took {took:?} behind {IDLE} idle connections");

    let mut ends = Vec::with_capacity(IDLE);
    for watcher in idle {
        ends.push(watcher.await.expect("watcher"));
    }
    ends.sort_by_key(|e| e.after);
    let (at_once, held): (Vec<&Ended>, Vec<&Ended>) = ends.iter().partition(|e| e.after < REQUEST_TIMEOUT / 2);
    println!(
        "over the cap: {} closed, the last after {:?}; under the cap: {} closed between {:?} and {:?}",
        at_once.len(),
        at_once.last().map(|e| e.after),
        held.len(),
        held.first().map(|e| e.after),
        held.last().map(|e| e.after),
    );
    assert_eq!(at_once.len(), IDLE - PER_CLIENT, "connections over the per-client cap must be closed at once");
    assert!(at_once.iter().all(|e| e.reply.is_empty()), "an over-cap connection got a reply");
    assert_eq!(held.len(), PER_CLIENT);
    for ended in held {
        assert!(
            ended.after >= REQUEST_TIMEOUT - Duration::from_millis(100),
            "closed before the request timeout: {ended:?}"
        );
        assert!(ended.after < REQUEST_TIMEOUT + SLACK, "held past the request timeout: {ended:?}");
        assert_eq!(ended.status(), Some(408), "{ended:?}");
    }
    // The cap counts live connections: the client may connect again.
    let again = tokio::time::timeout(DEADLINE, get(api, "/health", None)).await.expect("answered");
    assert_eq!(again.status, 200, "{again:?}");
}

/// A connection carries one request: the reply says `connection: close`
/// and the server closes right after it, even for an HTTP/1.1 client that
/// would keep the connection (a kept-alive connection would hold one of its
/// client's slots idle, and a second request's head has no deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_one_request() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config(s1.addr, ""));
    let api = admin(&broker);
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, api).await;
    let since = Instant::now();
    stream.write_all(format!("GET /health HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes()).await.expect("request");
    let ended = read_until_closed(stream, since).await;
    println!("kept-alive GET /health: replied after {:?}, closed after {:?}", ended.replied, ended.after);
    assert_eq!(ended.status(), Some(200), "{:?}", String::from_utf8_lossy(&ended.reply));
    assert!(String::from_utf8_lossy(&ended.reply).contains("connection: close"), "{ended:?}");
    assert!(ended.after < Duration::from_secs(1), "the connection stayed open for {:?} after its request", ended.after);
}

/// A PUT whose body arrives one byte every 500 ms, with a valid token: it
/// is answered 408 (or closed) at the request timeout, and the change it
/// carried is not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_at_the_request_timeout_and_changes_nothing() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config(s1.addr, &format!("token = \"{TOKEN}\"")));
    let api = admin(&broker);
    let body: &'static [u8] = br#"{"state": "maint"}"#;
    let head = format!(
        "PUT /backends/app/servers/s1 HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let ended = trickle(api, head, body, Duration::from_millis(500)).await;
    assert_cut_off("slow-body PUT", &ended);

    let s = stats(api).await;
    assert_eq!(s["backends"][0]["servers"][0]["admin"], "ready", "the cut-off change was applied: {s}");
    let logs = broker.logs.all();
    assert!(
        logs.iter().all(|r| r.msg != "server change requested" && r.msg != "server admin state changed"),
        "a cut-off request reached the broker"
    );
}

/// Chunked bodies trickled where nobody reads a body (`GET /health`) or
/// where the token is missing are bounded by the request timeout too: the
/// server does not wait on the rest of a body it will never use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_chunked_bodies_are_cut_everywhere() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config(s1.addr, &format!("token = \"{TOKEN}\"")));
    let api = admin(&broker);
    // Every byte a chunk of its own, so the stream never ends by itself.
    let chunks: &'static [u8] = b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n1\r\nd\r\n1\r\ne\r\n1\r\nf\r\n1\r\ng\r\n";
    let cases = [
        ("GET /health", Some(TOKEN)),
        ("PUT /backends/app/servers/s1", None),
        ("PUT /backends/app/servers/s1", Some(TOKEN)),
    ];
    let trickles = cases.map(|(request, token)| {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!("{request} HTTP/1.1\r\nHost: {api}\r\n{auth}Transfer-Encoding: chunked\r\n\r\n");
        tokio::spawn(trickle(api, head, chunks, Duration::from_millis(100)))
    });
    for ((request, token), trickling) in cases.into_iter().zip(trickles) {
        let ended = trickling.await.expect("trickle");
        assert_cut_off(&format!("{request} (token: {}) with a slow chunked body", token.is_some()), &ended);
    }
    assert_eq!(stats(api).await["backends"][0]["servers"][0]["admin"], "ready");
}

/// Sends `head` and then `body_len` zero bytes (in the background, errors
/// ignored: the server may close before taking them all) and returns the
/// status of the reply.
async fn send_raw(api: SocketAddr, head: String, body_len: usize) -> HttpReply {
    let stream = connect_from(Ipv4Addr::LOCALHOST, api).await;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let block = vec![0u8; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(block.len());
            writer.write_all(&block[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let mut raw = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_all).await.expect("the server answered and closed");
    writing.abort();
    let text = String::from_utf8_lossy(&raw);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|s| s.parse().ok());
    HttpReply {
        status: status.unwrap_or_else(|| panic!("no HTTP status in {text:?}")),
        headers: Vec::new(),
        body: text.into_owned(),
    }
}

/// A 10 MB body is refused with 413 and a head with 500 header lines with
/// 431; the server keeps answering `/health` after both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_header_blocks_are_refused() {
    let s1 = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&config(s1.addr, ""));
    let api = admin(&broker);

    let big = 10 << 20;
    let head = format!(
        "PUT /backends/app/servers/s1 HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Content-Length: {big}\r\n\r\n"
    );
    let reply = send_raw(api, head, big).await;
    assert_eq!(reply.status, 413, "{reply:?}");

    let mut head = format!("GET /health HTTP/1.1\r\nHost: {api}\r\n");
    for i in 0..500 {
        head.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    let reply = send_raw(api, head, 0).await;
    assert_eq!(reply.status, 431, "{reply:?}");

    let health = get(api, "/health", None).await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(stats_open(api).await["backends"][0]["servers"][0]["admin"], "ready");
}

async fn stats_open(api: SocketAddr) -> Value {
    let reply = get(api, "/stats", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}
