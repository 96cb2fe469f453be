//! "After the fault, everything is back": one check that every
//! fault-injection test runs once its traffic ended.
//!
//! - every session wrote its access record, with the expected termination
//!   codes, and `/stats` counted the same codes;
//! - `/stats` shows no live session and no queued one anywhere (process,
//!   frontends, listeners, backends, servers) and nothing admitted;
//! - every slot is back: each limited server has all its `maxconn` slots
//!   out again as credits (its ledger's `slots_out`) with no session
//!   holding one;
//! - no server ever held more connections than its `maxconn`, counted at
//!   the server itself, and none holds one now.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use usher_core::backend::server::GetServerReport;

use crate::{http, FaultyServer, FullBacklogServer, TestBackend, TestBroker};

/// A server as the test side sees it: the connections it holds and the
/// most it held at once.
pub trait ConnectionCounts {
    fn peak(&self) -> u64;
    fn current(&self) -> u64;
}

impl ConnectionCounts for TestBackend {
    fn peak(&self) -> u64 {
        TestBackend::peak(self)
    }
    fn current(&self) -> u64 {
        TestBackend::current(self)
    }
}

impl ConnectionCounts for FaultyServer {
    fn peak(&self) -> u64 {
        FaultyServer::peak(self)
    }
    fn current(&self) -> u64 {
        FaultyServer::current(self)
    }
}

impl ConnectionCounts for FullBacklogServer {
    /// It never accepts.
    fn peak(&self) -> u64 {
        0
    }
    fn current(&self) -> u64 {
        0
    }
}

/// One configured server and the test server behind it.
pub struct ServerUnderTest<'a> {
    pub backend: &'a str,
    pub server: &'a str,
    pub counts: &'a dyn ConnectionCounts,
}

/// Termination code → number of sessions.
pub type Codes = BTreeMap<String, u64>;

/// Counts the codes of `records`.
pub fn codes_of(records: &[crate::Record]) -> Codes {
    let mut codes = Codes::new();
    for r in records.iter().filter(|r| r.is_session()) {
        *codes.entry(r.termination().to_owned()).or_default() += 1;
    }
    codes
}

/// Builds [`Codes`] from pairs.
pub fn codes(pairs: &[(&str, u64)]) -> Codes {
    pairs.iter().filter(|(_, n)| *n > 0).map(|(c, n)| (c.to_string(), *n)).collect()
}

/// Pause between two reads of `/stats` or of a server's counts while
/// waiting for them to settle (nothing signals that they did).
const POLL: Duration = Duration::from_millis(20);

/// Runs every check of the module; `context` (a seed, a fault's name) goes
/// into every failure message. `broker` must run the admin API
/// ([`TestBroker::start_with_admin`]).
pub async fn assert_everything_back(
    broker: &TestBroker,
    servers: &[ServerUnderTest<'_>],
    expected: &Codes,
    context: &str,
) {
    let total: u64 = expected.values().sum();
    let records = broker
        .logs
        .wait_until(crate::DEADLINE, &format!("{total} access records [{context}]"), |rs| {
            rs.iter().filter(|r| r.is_session()).count() as u64 >= total
        })
        .await;
    let got = codes_of(&records);
    assert_eq!(&got, expected, "termination codes of the access records [{context}]");

    let admin = broker.admin_addr.expect("the at-rest check reads /stats: start the broker with the admin API");
    let stats = settled_stats(admin, context).await;
    let counted = counted_codes(&stats);
    assert_eq!(&counted, expected, "termination codes counted in /stats (frontends) [{context}]");

    for s in servers {
        let figures = server_stats(&stats, s.backend, s.server, context);
        let limit = figures["sessions_limit"].as_u64().expect("sessions_limit");
        let held_most = figures["sessions_max"].as_u64().expect("sessions_max");
        wait_for_server_idle(s, context).await;
        if limit > 0 {
            assert!(
                held_most <= limit,
                "{}/{}: usher served {held_most} sessions at once, maxconn {limit} [{context}]",
                s.backend,
                s.server
            );
            assert!(
                s.counts.peak() <= limit,
                "{}/{}: the server saw {} connections at once, maxconn {limit} [{context}]",
                s.backend,
                s.server,
                s.counts.peak()
            );
            let actor = broker.control.server(s.backend, s.server).expect("server actor");
            let report = actor.send(GetServerReport).await.expect("the server actor answers");
            assert_eq!(
                u64::from(report.slots_out),
                limit,
                "{}/{}: slots lent again to the backend queue [{context}]",
                s.backend,
                s.server
            );
        }
    }
    println!("[{context}] at rest: codes {got:?}, {}", peaks(servers));
}

fn peaks(servers: &[ServerUnderTest<'_>]) -> String {
    let each: Vec<String> =
        servers.iter().map(|s| format!("{}/{} peak {}", s.backend, s.server, s.counts.peak())).collect();
    each.join(", ")
}

/// Reads `/stats` until nothing is live, queued or admitted anywhere.
async fn settled_stats(admin: std::net::SocketAddr, context: &str) -> Value {
    let deadline = Instant::now() + crate::DEADLINE;
    loop {
        let reply = http::get(admin, "/stats", None).await;
        assert_eq!(reply.status, 200, "GET /stats [{context}]: {reply:?}");
        let stats = reply.json();
        let busy = still_busy(&stats);
        if busy.is_empty() {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "/stats never came back to rest [{context}]: {}\n{stats:#}",
            busy.join("; ")
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Every figure of `stats` that should be 0 at rest and is not.
fn still_busy(stats: &Value) -> Vec<String> {
    let mut busy = Vec::new();
    let mut nonzero = |what: String, v: &Value| {
        let n = v.as_u64().unwrap_or_else(|| panic!("{what} is not a count: {v}"));
        if n != 0 {
            busy.push(format!("{what} = {n}"));
        }
    };
    nonzero("global sessions_current".into(), &stats["global"]["sessions_current"]);
    nonzero("global admitted".into(), &stats["global"]["admitted"]);
    for f in list(stats, "frontends") {
        nonzero(format!("frontend {} sessions_current", f["name"]), &f["sessions_current"]);
    }
    for l in list(stats, "listeners") {
        nonzero(format!("listener {} sessions_current", l["address"]), &l["sessions_current"]);
    }
    for b in list(stats, "backends") {
        nonzero(format!("backend {} sessions_current", b["name"]), &b["sessions_current"]);
        nonzero(format!("backend {} queue_current", b["name"]), &b["queue_current"]);
        for s in list(b, "servers") {
            nonzero(format!("server {}/{} sessions_current", b["name"], s["name"]), &s["sessions_current"]);
            nonzero(format!("server {}/{} queue_current", b["name"], s["name"]), &s["queue_current"]);
        }
    }
    busy
}

fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap_or_else(|| panic!("/stats has no list {key:?}: {v}"))
}

/// The frontends' `terminations`, summed.
fn counted_codes(stats: &Value) -> Codes {
    let mut codes = Codes::new();
    for f in list(stats, "frontends") {
        let per_code = f["terminations"].as_object().unwrap_or_else(|| panic!("no terminations in {f}"));
        for (code, n) in per_code {
            *codes.entry(code.clone()).or_default() += n.as_u64().expect("a count");
        }
    }
    codes.retain(|_, n| *n > 0);
    codes
}

fn server_stats<'a>(stats: &'a Value, backend: &str, server: &str, context: &str) -> &'a Value {
    list(stats, "backends")
        .iter()
        .find(|b| b["name"] == backend)
        .and_then(|b| list(b, "servers").iter().find(|s| s["name"] == server))
        .unwrap_or_else(|| panic!("no server {backend}/{server} in /stats [{context}]"))
}

/// Waits until the test server holds no connection: its side of the last
/// sessions may end a moment after usher's.
async fn wait_for_server_idle(s: &ServerUnderTest<'_>, context: &str) {
    let deadline = Instant::now() + crate::DEADLINE;
    while s.counts.current() != 0 {
        assert!(
            Instant::now() < deadline,
            "{}/{}: the server still holds {} connections after every session ended [{context}]",
            s.backend,
            s.server,
            s.counts.current()
        );
        tokio::time::sleep(POLL).await;
    }
}
