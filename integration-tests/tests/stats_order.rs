//! The report asks its servers' actors many at a time: each server's
//! figures must still land beside that server, backends and servers in
//! configuration order, over more servers than are asked at once and
//! across backends of different sizes, both in `BrokerHandle::stats` and
//! in what `/stats` makes of it.

use integration_tests::external::unbound_port;
use integration_tests::http::get;
use integration_tests::TestBroker;
use serde_json::Value;
use usher_core::AdminState;

/// (backend, servers), in configuration order: neither the backends' nor
/// the servers' names sort in that order, and the first backend has more
/// servers than a read asks at once.
const BACKENDS: [(&str, usize); 3] = [("zulu", 150), ("alpha", 3), ("mike", 70)];

/// The name of `backend`'s server at `position`: a permutation of the
/// positions, so that names sort in another order than the configuration.
fn name(position: usize, servers: usize) -> String {
    // 37 is prime to every size in `BACKENDS`.
    format!("s{}", (position * 37 + 11) % servers)
}

/// Distinct per server: (maxconn, weight).
fn limits(backend: usize, position: usize) -> (u32, u32) {
    (1_000 * (backend as u32 + 1) + position as u32, 1 + (7 * position as u32 + backend as u32) % 256)
}

fn config(refused: u16) -> String {
    let mut toml = String::from(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"zulu\"\n\
         [backends.zulu]\nbalance = \"roundrobin\"\n",
    );
    for (b, (backend, servers)) in BACKENDS.iter().enumerate() {
        for position in 0..*servers {
            let (maxconn, weight) = limits(b, position);
            toml.push_str(&format!(
                "[backends.{backend}.servers.{}]\naddress = \"127.0.0.1:{refused}\"\nmaxconn = {maxconn}\nweight = {weight}\n",
                name(position, *servers)
            ));
        }
    }
    toml
}

/// What a server should show: its configured limits, but for the ones
/// changed at run time below.
fn expected(b: usize, position: usize) -> (u32, u32, AdminState) {
    let (maxconn, weight) = limits(b, position);
    match (b, position) {
        (2, 65) => (maxconn, 200, AdminState::Ready),
        (0, 149) => (maxconn, weight, AdminState::Drain),
        _ => (maxconn, weight, AdminState::Ready),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_reports_its_own_settings_in_configuration_order() {
    let broker = TestBroker::start_with_admin(&config(unbound_port()));
    // Run-time changes live only in the servers' actors: two servers among
    // many, late in their backends, report what was done to them alone.
    broker.handle.set_server_weight("mike", &name(65, 70), 200).await.expect("weight");
    broker.handle.set_server_state("zulu", &name(149, 150), AdminState::Drain).await.expect("drain");

    let report = broker.handle.stats().await.expect("stats");
    let backends: Vec<&str> = report.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(backends, ["zulu", "alpha", "mike"]);
    for (b, (backend, control)) in report.backends.iter().zip(broker.control.backends.iter()).enumerate() {
        assert_eq!(backend.id.0, control.index, "{}", backend.name);
        let ids: Vec<_> = backend.servers.iter().map(|(id, _)| *id).collect();
        let configured: Vec<_> = control.servers.iter().map(|(_, id, _)| *id).collect();
        assert_eq!(ids, configured, "{}: server ids in configuration order", backend.name);
        for (position, (_, server)) in backend.servers.iter().enumerate() {
            assert_eq!(server.name, name(position, BACKENDS[b].1), "{} position {position}", backend.name);
            let (maxconn, weight, admin) = expected(b, position);
            let shown = (server.maxconn, server.weight, server.admin);
            assert_eq!(shown, (maxconn, weight, admin), "{}/{}", backend.name, server.name);
        }
    }

    let reply = get(broker.admin_addr.expect("admin API"), "/stats", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let stats: Value = reply.json();
    let shown = stats["backends"].as_array().expect("backends");
    assert_eq!(shown.len(), BACKENDS.len(), "{stats}");
    for (b, ((backend, servers), json)) in BACKENDS.iter().zip(shown).enumerate() {
        assert_eq!(json["name"], *backend);
        let listed = json["servers"].as_array().expect("servers");
        assert_eq!(listed.len(), *servers, "{backend}");
        for (position, server) in listed.iter().enumerate() {
            let (maxconn, weight, admin) = expected(b, position);
            assert_eq!(server["name"], name(position, *servers), "{backend} position {position}");
            let settings = (&server["sessions_limit"], &server["weight"], &server["admin"]);
            let want = (&Value::from(maxconn), &Value::from(weight), &Value::from(admin.as_str()));
            assert_eq!(settings, want, "{backend}/{}", server["name"]);
        }
    }
}
