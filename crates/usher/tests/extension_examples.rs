//! The example extensions of `crates/usher/examples/`: each is plugged into
//! a real broker on real sockets, and the example daemon checks its
//! configuration as `usher check` does.

#[allow(dead_code)]
#[path = "../examples/cidr_route.rs"]
mod cidr_route;

use integration_tests::{Behavior, TestBackend, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use usher_core::config::ConfigSources;
use usher_core::HookRegistry;

fn cidr_config(office: std::net::SocketAddr, main: std::net::SocketAddr, others: &str) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"main\"\nhooks = [\"cidr-route\"]\n\
         [backends.main.servers.m]\naddress = \"{main}\"\n\
         [backends.office.servers.o]\naddress = \"{office}\"\n\
         [hooks.cidr-route]\ncidrs = [\"127.0.0.2/32\"]\nbackend = \"office\"\npriority_class = -1\nothers = \"{others}\"\n"
    )
}

/// One request from the loopback address `from`; the reply, empty if refused.
async fn request_from(from: &str, addr: std::net::SocketAddr) -> Vec<u8> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("addr")).expect("bind a loopback address");
    let mut stream = socket.connect(addr).await.expect("connect");
    let _ = stream.write_all(b"hi").await;
    let _ = stream.shutdown().await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cidr_route_sends_listed_networks_elsewhere_and_passes_or_denies_the_others() {
    for (others, served) in [("pass", true), ("deny", false)] {
        let (office, main) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
        let mut hooks = HookRegistry::default();
        hooks.hook_with("cidr-route", cidr_route::CidrRoute::new);
        let broker = TestBroker::start_with_hooks(&cidr_config(office.addr, main.addr, others), hooks);
        assert_eq!(request_from("127.0.0.2", broker.addr("web")).await, b"hi");
        let routed = broker.logs.wait_for("session", |r| r.get("client").starts_with("127.0.0.2:")).await;
        assert_eq!(routed.get("backend"), "office");
        let reply = request_from("127.0.0.1", broker.addr("web")).await;
        assert_eq!(reply == b"hi", served, "others = {others}");
        let other = broker.logs.wait_for("session", |r| r.get("client").starts_with("127.0.0.1:")).await;
        assert_eq!(other.termination(), if served { "--" } else { "PR" });
        assert_eq!((office.accepted(), main.accepted()), (1, u64::from(served)));
    }
}

#[test]
fn the_example_daemon_checks_its_hook_options_like_core_keys() {
    let dir = std::env::temp_dir().join(format!("usher-ext-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = cidr_config("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap(), "pass");
    let good = dir.join("good.toml");
    std::fs::write(&good, &config).expect("write");
    let settings = cidr_route::builder().load(&ConfigSources::files(vec![good])).expect("valid");
    assert!(settings.to_toml().contains("[hooks.cidr-route]"));

    let bad = dir.join("bad.toml");
    let text = config
        .replace("\"127.0.0.2/32\"", "\"not-a-net\"")
        .replace("hooks = [\"cidr-route\"]", "hooks = [\"cidr-route\", \"geo\"]")
        .replace("[backends.office.servers.o]\n", "[backends.office.servers.o]\nweight = -1\n");
    std::fs::write(&bad, text).expect("write");
    let errors = cidr_route::builder().load(&ConfigSources::files(vec![bad.clone()])).expect_err("refused");
    println!("{errors}");
    // Extension keys and core keys, all in one report, each with its file.
    for key in ["hooks.cidr-route.cidrs", "frontends.web.hooks", "backends.office.servers.o.weight"] {
        assert!(errors.mentions(key), "{key} missing from: {errors}");
    }
    assert!(errors.0.iter().all(|e| e.origin == format!("file {}", bad.display())), "{errors}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[allow(dead_code)]
#[path = "../examples/access_csv.rs"]
mod access_csv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_csv_writes_one_line_per_session() {
    let server = TestBackend::start(Behavior::Echo);
    let path = std::env::temp_dir().join(format!("usher-access-{}.csv", std::process::id()));
    // Counters written after every event.
    let csv = access_csv::AccessCsv::create(&path, std::time::Duration::ZERO).expect("create the csv");
    let subscription = std::sync::Mutex::new(Some(usher_core::extension::Subscription::new("access-csv", csv)));
    let broker = TestBroker::start_with(
        &format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\n",
            server.addr
        ),
        move |_| usher_core::Extensions {
            observers: subscription.lock().unwrap().take().into_iter().collect(),
            ..usher_core::Extensions::default()
        },
    );
    for _ in 0..3 {
        assert_eq!(integration_tests::request(broker.addr("web"), b"hello").await.expect("served"), b"hello");
    }
    let deadline = std::time::Instant::now() + integration_tests::DEADLINE;
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 4 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], access_csv::HEADER);
    assert_eq!(lines.len(), 4, "{text}");
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 10, "{line}");
        assert_eq!((fields[2], fields[3], fields[4], fields[5]), ("web", "app", "s1", "--"), "{line}");
        assert_eq!((fields[8], fields[9]), ("5", "5"), "{line}");
    }
    // The counters are written after each line.
    let servers = loop {
        let servers = std::fs::read_to_string(format!("{}.servers", path.display())).unwrap_or_default();
        if servers.contains("sessions=3") || std::time::Instant::now() > deadline {
            break servers;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(servers, "app/s1 sessions=3 bytes=30 state=-\n");
    let _ = std::fs::remove_file(format!("{}.servers", path.display()));
    let _ = std::fs::remove_file(&path);
}

#[allow(dead_code)]
#[path = "../examples/ewma_connect.rs"]
mod ewma_connect;

/// The EWMA balancer prefers the server whose connects were fastest, tries
/// a server with no sample first, and forgets a server that went down.
#[test]
fn ewma_connect_prefers_the_fastest_server() {
    use std::time::Duration;
    use usher_core::extension::{Balancer, BalancerSetup, Candidate, Choice, ServerEvent, ServerId};
    // `choose` is the example's pick over candidates it is given, so the
    // test can hand it any view of the servers.
    let setup = BalancerSetup { weights: &[1, 1, 1], draws: 2, hash_balance_factor: 0 };
    let mut b = ewma_connect::EwmaConnect::new(&setup);
    let all: Vec<Candidate> =
        (0..3).map(|i| Candidate { id: ServerId(i), weight: 1, usable: true, available: true, load: 0 }).collect();
    b.connected(ServerId(0), Duration::from_millis(5));
    b.connected(ServerId(1), Duration::from_millis(1));
    assert_eq!(b.choose(all.clone()), Some(Choice::Balanced(ServerId(2))), "no sample yet: tried first");
    b.connected(ServerId(2), Duration::from_millis(9));
    assert_eq!(b.choose(all.clone()), Some(Choice::Balanced(ServerId(1))));
    // Server 1 slows down: its average follows, and 0 becomes the fastest.
    for _ in 0..10 {
        b.connected(ServerId(1), Duration::from_millis(20));
    }
    assert!(b.average(ServerId(1)).unwrap() > Duration::from_millis(15));
    assert_eq!(b.choose(all.clone()), Some(Choice::Balanced(ServerId(0))));
    // Only an available server is picked.
    let mut busy = all.clone();
    busy[0].available = false;
    assert_eq!(b.choose(busy), Some(Choice::Balanced(ServerId(2))));
    b.server_changed(ServerId(1), ServerEvent::Changed { up: false, weight: 1 });
    assert_eq!(b.average(ServerId(1)), None);
}

/// Plugged into a real broker: every session is served, each connect is
/// reported to the balancer, and `usher check` accepts its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_connect_serves_every_session_on_real_sockets() {
    let (a, b) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let dir = std::env::temp_dir().join(format!("usher-ewma-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("usher.toml");
    std::fs::write(
        &path,
        format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n[backends.app]\nbalance = \"ewma-connect\"\n\
             [backends.app.servers.a]\naddress = \"{}\"\n[backends.app.servers.b]\naddress = \"{}\"\n",
            a.addr, b.addr
        ),
    )
    .expect("write");
    let settings = ewma_connect::builder().load(&ConfigSources::files(vec![path.clone()])).expect("valid");
    assert_eq!(settings.backend("app").unwrap().balance.as_str(), "ewma-connect");
    let mut registries = usher_core::extension::Registries::default();
    registries.balancer("ewma-connect", |setup: &usher_core::extension::BalancerSetup<'_>| {
        Box::new(ewma_connect::EwmaConnect::new(setup)) as Box<dyn usher_core::extension::Balancer>
    });
    let broker = TestBroker::start_with_registries(&path, registries, false);
    for _ in 0..6 {
        assert_eq!(integration_tests::request(broker.addr("web"), b"hi").await.expect("served"), b"hi");
    }
    broker.logs.wait_sessions(6).await;
    assert_eq!(a.accepted() + b.accepted(), 6);
    // With no sample, each server was tried once before any had two.
    assert!(a.accepted() >= 1 && b.accepted() >= 1, "{} and {}", a.accepted(), b.accepted());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A daemon's admission actor declares its `[actors.NAME]` type: `load`
/// (what `check`, `run` and every reload call) refuses bad options with
/// their key and file, and requires the table's required keys.
#[test]
fn a_daemon_admission_actor_has_its_options_checked_like_core_keys() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct DenyOptions {
        deny: Vec<std::net::IpAddr>,
    }
    let builder = || {
        usher::daemon::Builder::new().admission_actor(
            "deny_list",
            |_: DenyOptions| -> actix::Recipient<usher_core::CheckClient> {
                unreachable!("load never starts an actor")
            },
        )
    };
    let dir = std::env::temp_dir().join(format!("usher-actor-options-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let base = "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"main\"\n\
                [backends.main.servers.m]\naddress = \"127.0.0.1:1\"\n";
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("{base}\n[actors.deny_list]\ndeny = [\"not-an-ip\"]\n")).expect("write");
    let errors = builder().load(&ConfigSources::files(vec![bad.clone()])).expect_err("refused");
    assert!(errors.mentions("actors.deny_list.deny"), "{errors}");
    assert!(errors.0.iter().all(|e| e.origin == format!("file {}", bad.display())), "{errors}");

    let good = dir.join("good.toml");
    std::fs::write(&good, format!("{base}\n[actors.deny_list]\ndeny = [\"192.0.2.7\"]\n")).expect("write");
    builder().load(&ConfigSources::files(vec![good])).expect("good options");
    let _ = std::fs::remove_dir_all(&dir);
}
