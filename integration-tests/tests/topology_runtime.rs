//! Run-time topology through the admin API: a server added to a backend
//! serves clients, a removed one finishes its live session while new
//! clients go to the others, bad bodies are refused with every problem
//! named, and a reload re-applies the files (run-time changes not in them
//! are undone).

use std::net::SocketAddr;

use integration_tests::http::{call, get, post};
use integration_tests::{request, seated, Behavior, ConfigFile, TestBackend, TestBroker};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(s1: SocketAddr) -> String {
    format!(
        "[admin]\nbind = \"\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app]\nretries = 0\n[backends.app.timeout]\nqueue = \"30s\"\n\
         [backends.app.servers.s1]\naddress = \"{s1}\"\nmaxconn = 1\n"
    )
}

async fn server_names(admin: SocketAddr) -> Vec<String> {
    let stats = get(admin, "/stats", None).await.json();
    stats["backends"][0]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_added_and_removed_at_run_time_serve_and_finish_until_a_reload() {
    let one = TestBackend::start(Behavior::Echo);
    let two = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("runtime-topology", &config(one.addr));
    let broker = TestBroker::start_reloadable(&file.0, true);
    let (web, admin) = (broker.addr("web"), broker.admin_addr.expect("admin API"));

    // s1 (maxconn 1) is busy with a live session.
    let mut live = seated(web, 7).await;

    // Every problem of a bad server is named at once, and nothing changes.
    let bad = r#"{"address": "nowhere", "weight": 9999, "colour": "red"}"#;
    let reply = call(admin, "POST", "/backends/app/servers/s2", Some(bad), None).await.expect("POST");
    assert_eq!(reply.status, 400, "{reply:?}");
    let reason = reply.json()["error"].as_str().expect("reason").to_owned();
    for key in ["backends.app.servers.s2.address", "backends.app.servers.s2.weight", "backends.app.servers.s2.colour"] {
        assert!(reason.contains(key), "{key} not named in {reason}");
    }
    assert_eq!(server_names(admin).await, vec!["s1"]);
    let unknown = call(admin, "POST", "/backends/nope/servers/s2", Some("{}"), None).await.expect("POST");
    assert_eq!(unknown.status, 404, "{unknown:?}");

    // Added: it serves the next client at once.
    let body = format!(r#"{{"address": "{}", "maxconn": 5}}"#, two.addr);
    let reply = call(admin, "POST", "/backends/app/servers/s2", Some(&body), None).await.expect("POST");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(server_names(admin).await, vec!["s1", "s2"]);
    assert_eq!(request(web, b"to s2").await.expect("served"), b"to s2");
    assert_eq!(two.accepted(), 1, "the new server took the client s1 had no room for");
    // An edit the Topology rejects (the name is taken) changes nothing:
    // s2 keeps its maxconn; the next edit applies.
    let other = format!(r#"{{"address": "{}", "maxconn": 9}}"#, two.addr);
    let again = call(admin, "POST", "/backends/app/servers/s2", Some(&other), None).await.expect("POST");
    assert_eq!(again.status, 400, "{again:?}");
    assert!(again.json()["error"].as_str().expect("reason").contains("exists"), "{again:?}");
    let stats = get(admin, "/stats", None).await.json();
    assert_eq!(stats["backends"][0]["servers"][1]["sessions_limit"], 5, "{stats}");
    assert_eq!(server_names(admin).await, vec!["s1", "s2"]);

    // Removed with a live session: the session carries on to its end, new
    // clients go to s2.
    let reply = call(admin, "DELETE", "/backends/app/servers/s1", None, None).await.expect("DELETE");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(server_names(admin).await, vec!["s2"]);
    live.write_all(&[8]).await.expect("write");
    let mut byte = [0u8; 1];
    live.read_exact(&mut byte).await.expect("the removed server's session still relays");
    assert_eq!(byte, [8]);
    assert_eq!(request(web, b"again").await.expect("served"), b"again");
    assert_eq!(two.accepted(), 2);
    assert_eq!(one.accepted(), 1, "nobody new reached the removed server");
    drop(live);
    let gone = call(admin, "DELETE", "/backends/app/servers/s1", None, None).await.expect("DELETE");
    assert_eq!(gone.status, 404, "{gone:?}");

    // A reload re-applies the files: s1 is back, the run-time s2 is gone.
    let reply = post(admin, "/reload", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let changes: Value = reply.json();
    println!("reload after run-time changes: {changes}");
    assert_eq!(server_names(admin).await, vec!["s1"]);
    assert_eq!(request(web, b"files").await.expect("served"), b"files");
    assert_eq!(one.accepted(), 2, "served by the server of the files");
    broker.logs.wait_for("run-time change done", |_| true).await;
    broker.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_at_run_time_runs_and_one_in_use_cannot_be_removed() {
    let one = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("runtime-backends", &config(one.addr));
    let broker = TestBroker::start_reloadable(&file.0, true);
    let admin = broker.admin_addr.expect("admin API");
    let backends = |stats: Value| -> Vec<String> {
        stats["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| b["name"].as_str().expect("name").to_owned())
            .collect()
    };

    let bad = r#"{"balance": "dice", "servers": {"a": {"maxconn": -1}}}"#;
    let reply = call(admin, "POST", "/backends/db", Some(bad), None).await.expect("POST");
    assert_eq!(reply.status, 400, "{reply:?}");
    let reason = reply.json()["error"].as_str().expect("reason").to_owned();
    for key in ["backends.db.balance", "backends.db.servers.a.address", "backends.db.servers.a.maxconn"] {
        assert!(reason.contains(key), "{key} not named in {reason}");
    }

    let body = format!(r#"{{"balance": "leastconn", "servers": {{"a": {{"address": "{}"}}}}}}"#, one.addr);
    let reply = call(admin, "POST", "/backends/db", Some(&body), None).await.expect("POST");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(backends(get(admin, "/stats", None).await.json()), vec!["app", "db"]);

    let in_use = call(admin, "DELETE", "/backends/app", None, None).await.expect("DELETE");
    assert_eq!(in_use.status, 400, "{in_use:?}");
    assert!(in_use.json()["error"].as_str().expect("reason").contains("frontends.web.backend"), "{in_use:?}");
    let reply = call(admin, "DELETE", "/backends/db", None, None).await.expect("DELETE");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(backends(get(admin, "/stats", None).await.json()), vec!["app"]);
    let unknown = call(admin, "DELETE", "/backends/db", None, None).await.expect("DELETE");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    broker.stop().await.expect("stop");
}
