//! Servers from DNS against a real DNS server on 127.0.0.1 (hickory-server,
//! `integration_tests::dns`): a template's servers appear and go as the
//! records change, keep their names, serve clients, and a removed one
//! finishes its live session; a DNS server that stops answering keeps the
//! last servers, and so does a reload; a name that never resolved shows
//! DOWN with its reason, and comes up once it resolves.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use integration_tests::dns::DnsServer;
use integration_tests::http::{get, post};
use integration_tests::{request, seated, Behavior, ConfigFile, TestBackend, TestBroker, DEADLINE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dns_server() -> DnsServer {
    DnsServer::start(UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0"), "usher.test.")
}

fn resolvers(dns: &DnsServer) -> String {
    format!("[resolvers]\nnameservers = [\"{}\"]\nresolve_interval = \"200ms\"\ntimeout = \"300ms\"\n", dns.addr)
}

/// The servers of backend 0 in `/stats`: name, address, status.
async fn servers(admin: SocketAddr) -> Vec<Value> {
    let stats = get(admin, "/stats", None).await.json();
    stats["backends"][0]["servers"].as_array().expect("servers").clone()
}

/// Waits (bounded) until the servers in `/stats` satisfy `what`.
async fn wait_servers(admin: SocketAddr, label: &str, what: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = servers(admin).await;
        if what(&now) {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{label}: servers in /stats are {now:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names_and_addresses(servers: &[Value]) -> Vec<(String, String)> {
    servers
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["address"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_follows_its_srv_records_and_keeps_the_last_servers_when_dns_goes_quiet() {
    let dns = dns_server();
    let one = TestBackend::start(Behavior::Echo);
    let two = TestBackend::start(Behavior::Echo);
    dns.set_addresses("host", &["127.0.0.1".parse().unwrap()], 1).await;
    dns.set_srv("_app._tcp", &[(256, one.addr.port(), "host")], 1).await;
    let toml = format!(
        "[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 0\n[backends.app.timeout]\nqueue = \"30s\"\n\
         [backends.app.server_templates.web]\nquery = \"_app._tcp.usher.test\"\nkind = \"srv\"\ncount_max = 4\nmaxconn = 1\n\
         {}",
        resolvers(&dns)
    );
    let file = ConfigFile::new("topology-dns-srv", &toml);
    let broker = TestBroker::start_reloadable(&file.0, true);
    let (web, admin) = (broker.addr("web"), broker.admin_addr.expect("admin API"));
    let at = |b: &TestBackend| b.addr.to_string();

    let up = wait_servers(admin, "first resolution", |s| s.len() == 1 && s[0]["status"] == "UP").await;
    assert_eq!(names_and_addresses(&up), vec![("web1".into(), at(&one))]);
    assert_eq!(up[0]["weight"], 2, "SRV weight 256 scales to 2");
    assert_eq!(up[0]["resolution"]["state"], "resolved");
    assert_eq!(up[0]["resolution"]["query"], "_app._tcp.usher.test");

    // web1 (maxconn 1) holds a live session.
    let mut live = seated(web, 1).await;

    // A second record: a second server, and the first keeps its name.
    dns.set_srv("_app._tcp", &[(256, one.addr.port(), "host"), (256, two.addr.port(), "host")], 1).await;
    let both = wait_servers(admin, "second record", |s| s.len() == 2).await;
    assert_eq!(names_and_addresses(&both), vec![("web1".into(), at(&one)), ("web2".into(), at(&two))]);
    assert_eq!(request(web, b"to two").await.expect("served"), b"to two");
    assert_eq!(two.accepted(), 1, "the new server took the client web1 had no room for");

    // The first record goes: web1 goes, its live session finishes, new
    // clients go to web2 (still named web2).
    dns.set_srv("_app._tcp", &[(256, two.addr.port(), "host")], 1).await;
    let left = wait_servers(admin, "first record removed", |s| s.len() == 1).await;
    assert_eq!(names_and_addresses(&left), vec![("web2".into(), at(&two))]);
    live.write_all(&[2]).await.expect("write");
    let mut byte = [0u8; 1];
    live.read_exact(&mut byte).await.expect("the removed server's session still relays");
    assert_eq!(byte, [2]);
    drop(live);
    assert_eq!(request(web, b"again").await.expect("served"), b"again");
    assert_eq!((one.accepted(), two.accepted()), (1, 2), "nobody new reached the removed server");

    // The DNS server stops answering: the servers stay, the name is stale,
    // one warning.
    dns.set_silent(true);
    let warning = broker.logs.wait_for("name resolution failed", |r| r.get("query") == "_app._tcp.usher.test").await;
    println!("warning: {:?}", warning.get("error"));
    let stale = wait_servers(admin, "stale", |s| s.len() == 1 && s[0]["resolution"]["state"] == "stale").await;
    assert!(stale[0]["resolution"]["error"].is_string(), "{stale:#?}");
    assert_eq!(names_and_addresses(&stale), vec![("web2".into(), at(&two))]);
    assert_eq!(request(web, b"quiet").await.expect("served while DNS is quiet"), b"quiet");

    // A reload re-reads the files and keeps the servers of the last
    // resolution that worked (DNS is still quiet).
    let reply = post(admin, "/reload", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(names_and_addresses(&servers(admin).await), vec![("web2".into(), at(&two))]);
    assert_eq!(request(web, b"reloaded").await.expect("served after a reload"), b"reloaded");
    dns.wait_queries(2, DEADLINE).await;
    let warnings = broker.logs.all().iter().filter(|r| r.msg == "name resolution failed").count();
    assert_eq!(warnings, 1, "the warning is throttled");
    broker.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolved_is_down_with_its_reason_until_it_resolves() {
    let dns = dns_server();
    let db = TestBackend::start(Behavior::Echo);
    let toml = format!(
        "[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 0\n[backends.app.timeout]\nqueue = \"30s\"\n\
         [backends.app.servers.db]\naddress = \"db.usher.test:{}\"\nmaxconn = 2\n\
         {}",
        db.addr.port(),
        resolvers(&dns)
    );
    let file = ConfigFile::new("topology-dns-unresolved", &toml);
    let broker = TestBroker::start_reloadable(&file.0, true);
    let (web, admin) = (broker.addr("web"), broker.admin_addr.expect("admin API"));

    let down =
        wait_servers(admin, "tried and failed", |s| s.len() == 1 && s[0]["resolution"]["error"].is_string()).await;
    let server = &down[0];
    assert_eq!((server["name"].as_str(), server["status"].as_str()), (Some("db"), Some("DOWN")), "{server:#?}");
    assert_eq!(server["down_reason"], "unresolved");
    assert_eq!(server["resolution"]["state"], "unresolved");
    assert_eq!(server["address"], format!("db.usher.test:{}", db.addr.port()));
    println!("unresolved: {}", server["resolution"]["error"]);

    // No server to take it: a client now is refused at once (SC), as with
    // every server DOWN.
    let refused = request(web, b"too early").await.unwrap_or_default();
    assert!(refused.is_empty(), "nothing to serve it: {refused:?}");
    dns.set_addresses("db", &["127.0.0.1".parse().unwrap()], 1).await;
    let up = wait_servers(admin, "resolved", |s| s.len() == 1 && s[0]["status"] == "UP").await;
    assert_eq!(up[0]["address"], db.addr.to_string());
    assert!(up[0].get("down_reason").is_none(), "{up:#?}");
    assert_eq!(request(web, b"resolved").await.expect("served"), b"resolved");
    assert_eq!(db.accepted(), 1);
    broker.stop().await.expect("stop");
}
