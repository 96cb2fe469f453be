//! Balancing algorithms registered by name, on real sockets: a backend
//! names one (`balance = "last-free"`), it picks, and it hears of every
//! grant, release and connect time; a reload keeps it (and what it learnt)
//! while its servers and keys stay, and builds a new one when they change;
//! a hostile one cannot put a server over its maxconn or strand a waiter.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::http::get;
use integration_tests::{seated, Behavior, ConfigFile, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usher_core::extension::{Balancer, BalancerSetup, Choice, Registries, ServerEvent, Servers};
use usher_core::ids::ServerId;

/// What the recording balancer heard, shared with the test.
#[derive(Default)]
struct Heard {
    built: AtomicU64,
    granted: AtomicU64,
    released: AtomicU64,
    connected: AtomicU64,
    changes: AtomicU64,
}

/// Picks the last available server, and counts what it hears.
struct LastFree(Arc<Heard>);

impl Balancer for LastFree {
    fn pick(&mut self, servers: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        let last_free = servers.iter().filter(|c| c.available).last();
        last_free.map(|c| Choice::Balanced(c.id))
    }

    fn granted(&mut self, _: ServerId) {
        self.0.granted.fetch_add(1, Ordering::Relaxed);
    }

    fn released(&mut self, _: ServerId, sessions: u32) {
        self.0.released.fetch_add(sessions.into(), Ordering::Relaxed);
    }

    fn server_changed(&mut self, _: ServerId, _: ServerEvent) {
        self.0.changes.fetch_add(1, Ordering::Relaxed);
    }

    fn wants_connect_times(&self) -> bool {
        true
    }

    fn connected(&mut self, _: ServerId, connect_time: Duration) {
        assert!(connect_time < DEADLINE, "a connect time as measured: {connect_time:?}");
        self.0.connected.fetch_add(1, Ordering::Relaxed);
    }
}

fn registries(heard: &Arc<Heard>) -> Registries {
    let mut r = Registries::default();
    let heard = heard.clone();
    r.balancer("last-free", move |_: &BalancerSetup<'_>| {
        heard.built.fetch_add(1, Ordering::Relaxed);
        Box::new(LastFree(heard.clone())) as Box<dyn Balancer>
    });
    r
}

fn config(servers: &[SocketAddr], balance: &str, maxqueue: u32) -> String {
    let mut toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nbalance = \"{balance}\"\nmaxqueue = {maxqueue}\n"
    );
    for (i, addr) in servers.iter().enumerate() {
        toml.push_str(&format!("[backends.app.servers.s{i}]\naddress = \"{addr}\"\nmaxconn = 1\n"));
    }
    toml
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_balancer_picks_and_hears_every_session() {
    let (a, b) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let heard = Arc::new(Heard::default());
    let file = ConfigFile::new("balancer-picks", &config(&[a.addr, b.addr], "last-free", 0));
    let broker = TestBroker::start_with_registries(&file.0, registries(&heard), false);
    let web = broker.addr("web");
    for n in 0..5u8 {
        let session = seated(web, n).await;
        drop(session);
        broker.logs.wait_sessions(usize::from(n) + 1).await;
    }
    assert_eq!((a.accepted(), b.accepted()), (0, 5), "the last free server took every session");
    until("every release heard", || heard.released.load(Ordering::Relaxed) == 5).await;
    assert_eq!(heard.granted.load(Ordering::Relaxed), 5);
    assert_eq!(heard.connected.load(Ordering::Relaxed), 5, "each session reported its connect");
    assert!(heard.changes.load(Ordering::Relaxed) >= 2, "each server's first status was heard");
    assert_eq!(heard.built.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_balancer_until_its_servers_or_keys_change() {
    let (a, b, c) =
        (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let heard = Arc::new(Heard::default());
    let file = ConfigFile::new("balancer-reload", &config(&[a.addr, b.addr], "last-free", 0));
    let mut broker = TestBroker::start_with_registries(&file.0, registries(&heard), false);
    assert_eq!(heard.built.load(Ordering::Relaxed), 1);

    // Same servers and balancing keys: the balancer and what it learnt stay.
    file.write(&config(&[a.addr, b.addr], "last-free", 10));
    broker.reload().await.expect("reload");
    drop(seated(broker.addr("web"), 1).await);
    assert_eq!(heard.built.load(Ordering::Relaxed), 1, "kept through a reload that left its servers alone");

    // A server added: a new one, sized for it.
    file.write(&config(&[a.addr, b.addr, c.addr], "last-free", 10));
    broker.reload().await.expect("reload");
    assert_eq!(heard.built.load(Ordering::Relaxed), 2);
    drop(seated(broker.addr("web"), 2).await);
    assert_eq!(c.accepted(), 1, "the new balancer knows the new last server");
    until("the connect to the added server heard", || heard.connected.load(Ordering::Relaxed) == 2).await;

    // A name nobody registered is refused, as at start; the running
    // configuration stays.
    file.write(&config(&[a.addr, b.addr, c.addr], "fastest", 10));
    let err = broker.reload().await.expect_err("an unknown balancer is refused");
    let text = err.to_string();
    assert!(text.contains("backends.app.balance") && text.contains("\"last-free\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_a_balancer_that_wants_connect_times_has_every_server_report_them() {
    let (a, b) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let heard = Arc::new(Heard::default());
    let file = ConfigFile::new("balancer-connect-times", &config(&[a.addr, b.addr], "roundrobin", 0));
    let mut broker = TestBroker::start_with_registries(&file.0, registries(&heard), false);

    // The same servers, kept: only the balancer asks for connect times now.
    file.write(&config(&[a.addr, b.addr], "last-free", 0));
    broker.reload().await.expect("reload");
    drop(seated(broker.addr("web"), 1).await);
    assert_eq!(b.accepted(), 1);
    until("the kept server's connect heard", || heard.connected.load(Ordering::Relaxed) == 1).await;
}

/// Always names server 0 (full or not), and panics every third pick.
struct Hostile(u64);

impl Balancer for Hostile {
    fn pick(&mut self, _: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        self.0 += 1;
        if self.0.is_multiple_of(3) {
            panic!("a hostile balancer panics");
        }
        Some(Choice::Balanced(ServerId(0)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_balancer_cannot_overfill_a_server_or_strand_a_client() {
    let (a, b) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let mut r = Registries::default();
    r.balancer("hostile", |_: &BalancerSetup<'_>| Box::new(Hostile(0)) as Box<dyn Balancer>);
    let file = ConfigFile::new("balancer-hostile", &config(&[a.addr, b.addr], "hostile", 0));
    let broker = TestBroker::start_with_registries(&file.0, r, true);
    let web = broker.addr("web");
    let mut clients = Vec::new();
    for n in 0..6u8 {
        let mut c = tokio::net::TcpStream::connect(web).await.expect("connect");
        c.write_all(&[n]).await.expect("write");
        clients.push(c);
    }
    // Two are seated (one per server), four wait — in whatever order their
    // sessions reached the queue; each leaves once served, which seats the
    // next.
    let served: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut echo = [0u8; 1];
                tokio::time::timeout(DEADLINE, c.read_exact(&mut echo)).await.expect("served in time").expect("echo");
            })
        })
        .collect();
    for client in served {
        client.await.expect("client served");
    }
    broker.logs.wait_sessions(6).await;
    println!("peaks: a {}, b {}", a.peak(), b.peak());
    assert!(a.peak() <= 1 && b.peak() <= 1, "maxconn 1 held: peaks {} and {}", a.peak(), b.peak());
    assert_eq!(a.accepted() + b.accepted(), 6);
    let stats = get(broker.admin_addr.expect("admin API"), "/stats", None).await.json();
    let bad = stats["backends"][0]["balancer_bad_picks"].as_u64().expect("counted");
    assert!(bad > 0, "{stats}");
}
