//! Routing follows reloads as a frontend's `backend` does: sessions
//! accepted after a reload use its rules; a session already running keeps
//! the backend it was routed to.

use integration_tests::{request, seated, Behavior, ConfigFile, TestBackend, TestBroker};

fn config(rule_backend: &str, a: &TestBackend, b: &TestBackend, default: &TestBackend) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"default\"\n\
         [[frontends.web.routes]]\nsource = [\"127.0.0.0/8\"]\nbackend = \"{rule_backend}\"\n\
         [backends.a.servers.s1]\naddress = \"{}\"\n\
         [backends.b.servers.s1]\naddress = \"{}\"\n\
         [backends.default.servers.s1]\naddress = \"{}\"\n",
        a.addr, b.addr, default.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_where_new_sessions_are_routed() {
    let a = TestBackend::start(Behavior::Echo);
    let b = TestBackend::start(Behavior::Echo);
    let default = TestBackend::start(Behavior::Echo);
    let file = ConfigFile::new("routing-reload", &config("a", &a, &b, &default));
    let mut broker = TestBroker::start_reloadable(&file.0, false);
    let web = broker.addr("web");

    let before = seated(web, 1).await;
    assert_eq!(a.current(), 1, "routed to a by the first rule");

    file.write(&config("b", &a, &b, &default));
    broker.reload().await.expect("reload");
    assert_eq!(request(web, b"x").await.expect("session after the reload"), b"x");
    assert_eq!(b.accepted(), 1, "the new rule routed it to b");
    assert_eq!(a.current(), 1, "the session routed before keeps its backend");

    // Without rules the frontend's own backend serves again.
    let no_rules = config("b", &a, &b, &default);
    let no_rules = no_rules.replace("[[frontends.web.routes]]\nsource = [\"127.0.0.0/8\"]\nbackend = \"b\"\n", "");
    file.write(&no_rules);
    broker.reload().await.expect("reload");
    assert_eq!(request(web, b"y").await.expect("session without rules"), b"y");
    assert_eq!(default.accepted(), 1);
    drop(before);

    let records = broker.logs.wait_sessions(3).await;
    let routed: Vec<(&str, i64)> = records.iter().map(|r| (r.get("backend"), r.int("route"))).collect();
    for expected in [("a", 0), ("b", 0), ("default", -1)] {
        assert!(routed.contains(&expected), "{expected:?} in {routed:?}");
    }
}
