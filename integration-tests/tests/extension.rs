//! The extension seam: the example admission actor of
//! `crates/usher-core/examples/deny_list.rs`, plugged into a real broker.

#[allow(dead_code)]
#[path = "../../crates/usher-core/examples/deny_list.rs"]
mod deny_list;

use integration_tests::{request, Behavior, TestBackend, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_list_actor_refuses_listed_clients_only() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with(
        &format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\n\
             [actors.deny_list]\ndeny = [\"127.0.0.2\"]\n",
            server.addr
        ),
        |settings| deny_list::extensions(settings).expect("deny list settings"),
    );
    let addr = broker.addr("web");

    // From 127.0.0.2 (all of 127/8 is loopback): refused before queueing.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
    let mut denied = socket.connect(addr).await.expect("connect");
    let _ = denied.write_all(b"let me in").await;
    let mut got = Vec::new();
    let _ = denied.read_to_end(&mut got).await;
    assert!(got.is_empty());
    let record = broker.logs.wait_for("session", |r| r.get("client").starts_with("127.0.0.2:")).await;
    assert_eq!(record.termination(), "PR");
    assert_eq!(record.get("server"), "-");

    // From 127.0.0.1: served.
    assert_eq!(request(addr, b"hello").await.expect("reply"), b"hello");
    assert_eq!(server.accepted(), 1, "the denied client reached the server");
}

#[test]
fn bad_deny_list_settings_are_reported_with_the_key() {
    let settings =
        usher_core::config::from_toml_str("[actors.deny_list]\ndeny = [\"not-an-ip\"]\n").expect("free-form table");
    let err = deny_list::DenyList::from_settings(&settings).err().expect("rejected");
    assert!(err.to_string().contains("actors.deny_list.deny"), "{err}");
}
