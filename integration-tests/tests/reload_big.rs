//! A reload of a big configuration — 2 000 servers in 100 backends, a
//! third of them added, a third removed and a third changed — applies
//! within a generous bound and keeps every session: the queued clients of
//! the one backend in use stay queued, are served in order once its slot
//! frees, and its server never goes over maxconn. One backend of
//! thousands of servers is updated in parts, with the other actors running
//! in between.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::external::unbound_port;
use integration_tests::{seated, Behavior, ConfigFile, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BACKENDS: usize = 100;
const SERVERS_PER_BACKEND: usize = 20;
/// Server names shift by this much per generation: as many servers
/// removed and added in each backend, the rest changed in place.
const SHIFT: usize = 7;
/// Clients queued behind the held slot through the reload.
const QUEUED: usize = 20;
/// Generous: the target is well under a second for five times as many
/// servers, in a release build on a quiet machine.
const APPLY_LIMIT: Duration = Duration::from_secs(5);

/// Frontend `web` on backend `app` (one server, maxconn 1), beside
/// `BACKENDS` backends of servers on a port that refuses, whose names and
/// maxconn depend on `generation`.
fn config(app: SocketAddr, refused: u16, generation: usize) -> String {
    let mut toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.timeout]\nqueue = \"60s\"\n\
         [backends.app.servers.s1]\naddress = \"{app}\"\nmaxconn = 1\n"
    );
    for b in 0..BACKENDS {
        for s in generation * SHIFT..generation * SHIFT + SERVERS_PER_BACKEND {
            toml.push_str(&format!(
                "[backends.fleet{b}.servers.s{s}]\naddress = \"127.0.0.1:{refused}\"\nmaxconn = {}\n",
                10 + generation
            ));
        }
    }
    toml
}

/// Servers of the one big backend of `one_fleet`.
const FLEET: usize = 1_000;

/// Frontend `web` on backend `app` (one server), beside one backend `fleet`
/// of `FLEET` servers whose names shift by half of them per `generation`:
/// a reload removes half, adds half and changes half in place.
fn one_fleet(app: SocketAddr, refused: u16, generation: usize) -> String {
    let mut toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{app}\"\nmaxconn = 1\n"
    );
    for s in generation * FLEET / 2..generation * FLEET / 2 + FLEET {
        toml.push_str(&format!(
            "[backends.fleet.servers.s{s}]\naddress = \"127.0.0.1:{refused}\"\nmaxconn = {}\n",
            10 + generation
        ));
    }
    toml
}

/// Frontend `web` on backend `app` (one server), beside one backend named
/// `fleet` of `FLEET` servers: reloading with another name removes one
/// backend of a thousand servers and adds another.
fn named_fleet(app: SocketAddr, refused: u16, fleet: &str) -> String {
    let mut toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{app}\"\nmaxconn = 1\n"
    );
    for s in 0..FLEET {
        toml.push_str(&format!("[backends.{fleet}.servers.s{s}]\naddress = \"127.0.0.1:{refused}\"\nmaxconn = 10\n"));
    }
    toml
}

/// A reloadable broker and what its configurations are written from.
struct Reloadable {
    server: TestBackend,
    refused: u16,
    file: ConfigFile,
    broker: TestBroker,
}

/// What every test here starts with: an echo server for `app`, a port
/// that refuses for the fleets' servers, and a broker on `config(app,
/// refused)` that re-reads its file (named after `name`) on every reload.
fn start(name: &str, config: impl Fn(SocketAddr, u16) -> String) -> Reloadable {
    let server = TestBackend::start(Behavior::Echo);
    let refused = unbound_port();
    let file = ConfigFile::new(name, &config(server.addr, refused));
    let broker = TestBroker::start_reloadable(&file.0, false);
    Reloadable { server, refused, file, broker }
}

/// Sessions waiting in `app`'s queues.
async fn waiting(broker: &TestBroker) -> usize {
    let report = broker.handle.stats().await.expect("stats");
    let app = report.backends.iter().find(|b| &*b.name == "app").expect("backend app");
    app.queue.backend_queue + app.queue.servers.iter().map(|s| s.queued).sum::<usize>()
}

async fn until_waiting(broker: &TestBroker, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = waiting(broker).await;
        if now == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now} waiting, expected {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_two_thousand_servers_applies_quickly_and_keeps_every_session() {
    let Reloadable { server, refused, file, mut broker } = start("reload-big", |app, refused| config(app, refused, 0));
    let addr = broker.addr("web");

    let holder = seated(addr, b'h').await;
    let mut clients = Vec::new();
    for i in 0..QUEUED {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(&[i as u8]).await.expect("write");
        clients.push(client);
        // One at a time: the queue's order is the clients' order.
        until_waiting(&broker, i + 1).await;
    }

    file.write(&config(server.addr, refused, 1));
    let started = Instant::now();
    let summary = broker.reload().await.expect("the reload applies");
    let took = started.elapsed();
    let record = broker.logs.wait_for("reload done", |_| true).await;
    println!(
        "reload of {} servers: {} changes, answered in {took:?}, applied in {} ms (its record)",
        BACKENDS * SERVERS_PER_BACKEND,
        summary.changes.len(),
        record.get("apply_ms")
    );
    assert!(took < APPLY_LIMIT, "the reload took {took:?}");
    // Planned against a snapshot of what runs taken in parts (the
    // boundary falls inside a backend): each backend's shifted names
    // removed and added, the rest changed in place, nothing else.
    let per_backend = 2 * SHIFT + (SERVERS_PER_BACKEND - SHIFT);
    assert_eq!(summary.changes.len(), BACKENDS * per_backend, "{:?}", &summary.changes[..5]);
    assert_eq!(waiting(&broker).await, QUEUED, "the reload kept every queued client");

    drop(holder);
    for (i, mut client) in clients.into_iter().enumerate() {
        let mut echo = [0u8; 1];
        tokio::time::timeout(DEADLINE, client.read_exact(&mut echo))
            .await
            .unwrap_or_else(|_| panic!("client {i} served in time"))
            .expect("echo");
        assert_eq!(echo[0], i as u8, "served in queue order");
    }
    assert_eq!(server.peak(), 1, "maxconn 1 held through the reload");
}

/// A big reload is committed in slices that let the other actors run in
/// between: Server actors the reload starts lend their first slots, and
/// Server actors it retires stop, before the reload is done. Committed in
/// one handler (as it once was), every new actor would start only after
/// the `reload done` record, and every session in flight would wait for
/// the whole reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_reload_lets_the_other_actors_run_before_it_is_done() {
    let Reloadable { server, refused, file, mut broker } =
        start("reload-big-slices", |app, refused| config(app, refused, 0));
    let lent =
        |records: &[integration_tests::logs::Record]| records.iter().filter(|r| r.msg == "server slots lent").count();
    let at_start = lent(&broker.logs.all());

    file.write(&config(server.addr, refused, 1));
    broker.reload().await.expect("the reload applies");
    let records = broker.logs.all();
    let done = records.iter().position(|r| r.msg == "reload done").expect("a reload done record");
    let record = &records[done];
    println!(
        "apply {} ms, longest hold of the actor thread {} ms, {} ms in all",
        record.get("apply_ms"),
        record.get("longest_hold_ms"),
        record.get("hold_ms")
    );
    let before_done = &records[..done];
    assert!(
        lent(before_done) > at_start,
        "no new server lent its slots before the reload was done: the commit held the actor thread throughout"
    );
    assert!(
        before_done.iter().any(|r| r.msg == "server retired"),
        "no retired server stopped before the reload was done"
    );
}

/// One backend of a thousand servers is updated in parts, each its own
/// message, with the actor thread serving the others in between: Server
/// actors added in the first part lend their slots, and servers removed in
/// the first removal part stop, before the reload logs its first change
/// (which it does once every part is sent). Sent as one message, as it once
/// was, every new Server would start only after that backend's last server
/// was prepared, and the first change records would come first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backend_of_a_thousand_servers_is_updated_in_parts() {
    let Reloadable { server, refused, file, mut broker } =
        start("reload-big-one-backend", |app, refused| one_fleet(app, refused, 0));
    let at_start = broker.logs.all().len();

    file.write(&one_fleet(server.addr, refused, 1));
    let summary = broker.reload().await.expect("the reload applies");
    assert_eq!(summary.changes.len(), FLEET + FLEET / 2, "half added, half removed, half changed");
    let records = broker.logs.all();
    let reload = &records[at_start..];
    let first_change = reload
        .iter()
        .position(|r| ["server added", "server changed", "server removed", "backend changed"].contains(&r.msg.as_str()))
        .expect("the reload logs its changes");
    let before_changes = &reload[..first_change];
    assert!(
        before_changes.iter().any(|r| r.msg == "server slots lent"),
        "no added server lent its slots before the reload logged its changes: the backend's update was one part"
    );
    assert!(
        before_changes.iter().any(|r| r.msg == "server retired"),
        "no removed server stopped before the reload logged its changes: the removals were one part"
    );
    let stats = broker.handle.stats().await.expect("stats");
    let fleet = stats.backends.iter().find(|b| &*b.name == "fleet").expect("backend fleet");
    assert_eq!(
        fleet.queue.servers.len(),
        FLEET + FLEET / 2,
        "every part reached the queue: ids stay, removed ones too"
    );
}

/// A new backend of a thousand servers starts empty and takes its servers
/// in parts, one message each, with the actor thread serving the others in
/// between: Servers of its first parts lend their slots before its last part
/// reaches its queue. Started whole, as it once was, all its servers would
/// be created in one slice and its queue would hear no part at all. The
/// removed backend's thousand servers all retire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_of_a_thousand_servers_is_filled_in_parts() {
    let Reloadable { server, refused, file, mut broker } =
        start("reload-big-new-backend", |app, refused| named_fleet(app, refused, "fleet_a"));
    let at_start = broker.logs.all().len();

    file.write(&named_fleet(server.addr, refused, "fleet_b"));
    broker.reload().await.expect("the reload applies");
    let records = broker.logs.all();
    let reload = &records[at_start..];
    let of = |backend: &'static str, msg: &'static str| {
        move |r: &&integration_tests::logs::Record| r.msg == msg && r.get("backend") == backend
    };
    let parts: Vec<_> = reload.iter().enumerate().filter(|(_, r)| of("fleet_b", "backend reconfigured")(r)).collect();
    assert!(parts.len() > 2, "the new backend took its servers in {} part(s)", parts.len());
    let added: i64 = parts.iter().map(|(_, r)| r.int("added")).sum();
    assert_eq!(added, FLEET as i64, "every server of the new backend was added to its queue");
    let last_part = parts.last().expect("parts").0;
    assert!(
        reload[..last_part].iter().any(|r| of("fleet_b", "server slots lent")(&r)),
        "no server of the new backend lent its slots before its last part: it was filled in one go"
    );
    broker
        .logs
        .wait_until(DEADLINE, "every server of the removed backend to retire", |records| {
            records[at_start..].iter().filter(|r| of("fleet_a", "server retired")(r)).count() == FLEET
        })
        .await;
}
