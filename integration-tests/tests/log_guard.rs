//! The log guard: the field names of log records are an
//! API. A broker runs a session, admin changes and a shutdown into the
//! capture logger; the records it wrote are checked against README.md,
//! parsed here (the lists are not repeated in this file):
//!
//! - every access record (`session`) has exactly the fields of the "Access
//!   record" table;
//! - every record at info level or above is documented under "Lifecycle
//!   records" (so a renamed message fails), and every documented record that
//!   was written — debug ones included — has at least its documented fields
//!   (so a lost or renamed field fails).

use std::collections::BTreeSet;

use integration_tests::http::{post, put};
use integration_tests::{request, Behavior, ConfigFile, Record, TestBackend, TestBroker, DEADLINE};

const README: &str = include_str!("../../README.md");

/// The text under the heading that starts with `heading`, up to the next heading.
fn section(heading: &str) -> &'static str {
    let start = README.find(&format!("\n{heading}")).unwrap_or_else(|| panic!("README lacks {heading:?}"));
    let body = &README[start + 1..];
    let body = &body[body.find('\n').expect("heading line") + 1..];
    let end = body.find("\n#").unwrap_or(body.len());
    &body[..end]
}

/// Words between backticks, whitespace (line breaks) normalised.
fn backticked(text: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else { break };
        let name = rest[open + 1..open + 1 + len].split_whitespace().collect::<Vec<_>>().join(" ");
        rest = &rest[open + 1 + len + 1..];
        out.push((name, rest));
    }
    out
}

/// The "Access record" table: every field named in its first column.
fn access_fields() -> BTreeSet<String> {
    section("### Access record")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| backticked(l.split('|').nth(1).unwrap_or("")).into_iter().map(|(name, _)| name))
        .collect()
}

/// A documented record: its message (a trailing `…` means "starts with")
/// and its fields, from "`message` (field, field)".
struct Documented {
    message: String,
    fields: Vec<String>,
}

impl Documented {
    fn matches(&self, msg: &str) -> bool {
        match self.message.strip_suffix('…') {
            Some(prefix) => msg.starts_with(prefix.trim_end()),
            None => msg == self.message,
        }
    }
}

fn lifecycle_records() -> Vec<Documented> {
    backticked(section("### Lifecycle records"))
        .into_iter()
        .map(|(message, after)| {
            let after = after.trim_start();
            let fields = match after.strip_prefix('(').and_then(|a| a.split_once(')')) {
                Some((list, _)) => list.split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect(),
                None => Vec::new(),
            };
            Documented { message, fields }
        })
        .collect()
}

#[test]
fn the_readme_lists_parse() {
    let access = access_fields();
    for field in ["session", "client", "frontend", "backend", "termination", "queue_ms"] {
        assert!(access.contains(field), "parsed access fields: {access:?}");
    }
    let records = lifecycle_records();
    let started = records.iter().find(|r| r.message == "started").expect("started is documented");
    assert!(started.fields.contains(&"maxconn".to_owned()), "{:?}", started.fields);
    assert!(records.iter().any(|r| r.matches("process reached global maxconnrate; new clients wait")));
    assert!(records.iter().any(|r| r.message == "reload rejected, configuration unchanged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keep_their_documented_fields() {
    let server = TestBackend::start(Behavior::Echo);
    let toml = format!(
        "[global]\ngrace = \"5s\"\n[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\nmaxconn = 4\n",
        server.addr
    );
    let file = ConfigFile::new("log-guard", &toml);
    let broker = TestBroker::start_reloadable(&file.0, true);
    let admin = broker.admin_addr.expect("admin");
    let logs = broker.logs.clone();
    assert_eq!(request(broker.addr("web"), b"hello").await.expect("served"), b"hello");
    let changed =
        put(admin, "/backends/app/servers/s1", r#"{"weight": 2, "maxconn": 3, "state": "drain"}"#, None).await;
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(put(admin, "/frontends/web", r#"{"maxconn": 10}"#, None).await.status, 200);
    logs.wait_sessions(1).await;
    logs.wait_for("server admin state changed", |_| true).await;
    // Reloads: one that adds and changes things, one that is rejected.
    file.write(&format!(
        "{}[backends.app.servers.s2]\naddress = \"{}\"\n[frontends.more]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n",
        toml.replace("maxconn = 4", "maxconn = 5"),
        server.addr
    ));
    assert_eq!(post(admin, "/reload", None).await.status, 200);
    file.write("[frontends.web]\nbackend = 42\n");
    assert_eq!(post(admin, "/reload", None).await.status, 400);
    tokio::time::timeout(DEADLINE, broker.stop()).await.expect("stopped in time").expect("clean stop");
    // `stop` returns once `run` did: every record is written.
    let records = logs.all();

    let access = access_fields();
    let sessions: Vec<&Record> = records.iter().filter(|r| r.is_session()).collect();
    assert_eq!(sessions.len(), 1);
    for r in &sessions {
        let keys: BTreeSet<String> = r.kv.keys().cloned().collect();
        assert_eq!(keys, access, "the access record's fields differ from README's table");
    }

    let documented = lifecycle_records();
    let mut seen = BTreeSet::new();
    for r in records.iter().filter(|r| !r.is_session()) {
        let doc = documented.iter().find(|d| d.matches(&r.msg));
        let Some(doc) = doc else {
            assert!(
                !r.level.is_at_least(slog::Level::Info),
                "record {:?} ({}) is not documented under \"Lifecycle records\" in README.md",
                r.msg,
                r.level.as_str()
            );
            continue;
        };
        for field in &doc.fields {
            assert!(r.kv.contains_key(field), "record {:?} lost its documented field {field:?}: {:?}", r.msg, r.kv);
        }
        seen.insert(doc.message.clone());
    }
    // The run wrote records of every kind it drives: keeps this test honest.
    assert!(seen.len() >= 18, "only these documented records were written: {seen:?}");
}
