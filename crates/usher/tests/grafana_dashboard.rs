//! `configs/grafana/usher.json` only queries metrics usher exposes: a broker
//! with its admin API is scraped (`GET /metrics`) and every `usher_*` name
//! in the dashboard's queries (panel `expr`s and template variables) must be
//! a family it wrote — so a renamed or dropped metric breaks this test, not
//! an operator's dashboard.

use std::collections::BTreeSet;

use integration_tests::http::get;
use integration_tests::{request, Behavior, TestBackend, TestBroker};
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../../configs/grafana/usher.json");

/// Suffixes Prometheus adds to a histogram's or summary's family name.
const SERIES_SUFFIXES: [&str; 4] = ["_bucket", "_sum", "_count", "_created"];

/// Every `usher_*` identifier in a PromQL query.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in query.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("usher_") {
                names.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

/// Every query in the dashboard: panel targets (rows nest theirs) and
/// template variables.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(target["expr"].as_str().expect("every target has an expr").to_owned());
            }
            panels(&panel["panels"], out);
        }
    }
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().expect("templating") {
        if let Some(query) = variable["query"]["query"].as_str() {
            out.push(query.to_owned());
        }
    }
    out
}

/// Family names and kinds from the `# TYPE` lines of an exposition.
fn families(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Whether `name` is a series of one of `families`: the family itself, or
/// a histogram's or summary's `_bucket`/`_sum`/`_count`.
fn exposed(name: &str, families: &[(String, String)]) -> bool {
    families.iter().any(|(family, kind)| {
        family == name
            || (matches!(kind.as_str(), "histogram" | "summary")
                && SERIES_SUFFIXES.iter().any(|suffix| name.strip_suffix(suffix) == Some(family.as_str())))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exposed() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start_with_admin(&format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\nmaxconn = 1\n",
        server.addr
    ));
    // One session ended, so every labelled family has samples.
    assert_eq!(request(broker.addr("web"), b"hi").await.expect("served"), b"hi");
    broker.logs.wait_sessions(1).await;
    let scrape = get(broker.admin_addr.expect("admin API"), "/metrics", None).await;
    assert_eq!(scrape.status, 200);
    let families = families(&scrape.body);
    assert!(families.len() > 20, "a /metrics with few families: {families:?}");

    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("configs/grafana/usher.json is JSON");
    let queries = queries(&dashboard);
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "a query that reads no usher metric: {query}");
        used.extend(names);
    }
    println!("{} queries use {} metrics", queries.len(), used.len());
    let unknown: Vec<&String> = used.iter().filter(|name| !exposed(name, &families)).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics /metrics does not expose: {unknown:?}");

    // What the dashboard is for: each of these is charted.
    for needed in [
        "usher_global_sessions_limit",
        "usher_server_sessions_limit",
        "usher_backend_queue_current",
        "usher_frontend_terminations_total",
        "usher_server_op_state",
        "usher_watchdog_limit_reached_total",
        "usher_frontend_probes_total",
    ] {
        assert!(used.contains(needed), "the dashboard does not chart {needed}");
    }
    let ids: Vec<u64> =
        dashboard["panels"].as_array().expect("panels").iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len(), "panel ids repeat: {ids:?}");
    broker.stop().await.expect("clean stop");
}

#[test]
fn names_are_read_out_of_promql() {
    assert_eq!(
        metric_names("sum by (code) (rate(usher_frontend_terminations_total{frontend=~\"$f\"}[$__rate_interval]))"),
        ["usher_frontend_terminations_total"]
    );
    assert_eq!(metric_names("usher_a_bucket / usher_b"), ["usher_a_bucket", "usher_b"]);
    let families = [("usher_latency_seconds".to_owned(), "histogram".to_owned())];
    assert!(exposed("usher_latency_seconds_bucket", &families));
    assert!(!exposed("usher_latency_seconds_total", &families));
}
