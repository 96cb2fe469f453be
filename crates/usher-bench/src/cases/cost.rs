//! `cost`: what one connrate session costs each proxy, over a fixed number
//! of sessions rather than a fixed time: CPU µs and context switches per
//! session (utime + stime, and every thread's voluntary and involuntary
//! switches, from /proc around the batch) and system calls per session (`strace -c -f
//! -p PID` around a second batch of the same size, since tracing slows the
//! proxy and would inflate its CPU). Not part of `all`: strace makes it slow.
//! TCP segments per session count every party's on 127.0.0.1 (the load,
//! the backends and the proxy) during the CPU batch: the load and backends
//! are the same for every proxy, so a difference is the proxy's doing —
//! a FIN sent with the last bytes, say, saves its client an acknowledgement
//! as well.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::{Harness, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::load::{self, Payload, Sessions};
use crate::proxies::ProxyKind;
use crate::report::{number, CaseResult, Metric};
use crate::strace::{Counts, Tracer};
use crate::sys;

const CLIENTS: usize = 32;
const REQUEST: usize = 64;
const REPLY: usize = 64;
const SESSION_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// A call made less often than this per session is left out of the breakdown.
const SHOWN: f64 = 0.005;

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    let n = h.opts.cost_sessions;
    let title = format!(
        "cost: {n} connrate sessions ({REQUEST} B request / {REPLY} B reply, {CLIENTS} client loops) per batch, \
         one batch for CPU and one under strace; {}",
        h.describe(&p)
    );
    let metrics = vec![
        Metric::lower("proxy CPU µs/session", 1),
        Metric::lower("context switches/session", 2),
        Metric::lower("system calls/session", 2),
        Metric::lower("TCP segments/session", 2),
        Metric::zero("errors"),
    ];
    let spec = Sessions {
        clients: CLIENTS,
        request: REQUEST,
        payload: Payload::Filler,
        reply: REPLY,
        slow: SESSION_LIMIT,
        limit: SESSION_LIMIT,
    };
    let counts: RefCell<BTreeMap<ProxyKind, Vec<Counts>>> = RefCell::default();
    let untraced: RefCell<Option<String>> = RefCell::default();
    let proxies = h.only(&[ProxyKind::Usher, ProxyKind::Haproxy, ProxyKind::Nginx]);
    let mut result = h.alternate("cost", title, metrics, proxies, |kind| {
        let rt = h.load_runtime(&p)?;
        let backend = Backend::start(rt.handle(), Behavior::Reply { request: REQUEST, reply: REPLY })?;
        let proxy = h.start_proxy(kind, &[backend.addr], &h.tune(&p, 0, SESSION_LIMIT))?;
        let pid = proxy.pid().ok_or_else(|| anyhow::anyhow!("{} has no process", kind.name()))?;
        // Warm-up: first allocations, accept queue, caches.
        let warm = rt.block_on(load::session_batch(proxy.addr, spec, (n / 10).max(100)));
        let before = proxy.cpu_seconds();
        let switches_before = proxy.context_switches();
        let segments_before = sys::tcp_segments_sent();
        let timed = rt.block_on(load::session_batch(proxy.addr, spec, n));
        let segments = match (sys::tcp_segments_sent(), segments_before) {
            (Ok(after), Ok(before)) => after.saturating_sub(before) as f64 / n as f64,
            _ => f64::NAN,
        };
        let cpu = proxy.cpu_seconds().zip(before).map(|(after, before)| after - before);
        let cpu_us = cpu.map_or(f64::NAN, |c| c * 1e6 / n as f64);
        let switches = proxy.context_switches().zip(switches_before).map(|(after, before)| after - before);
        let switches = switches.map_or(f64::NAN, |s| s as f64 / n as f64);
        let mut errors = warm.errors + timed.errors;
        let calls = match Tracer::attach(pid, &h.scratch(&format!("{}-strace", kind.name()))) {
            Ok(tracer) => {
                let traced = rt.block_on(load::session_batch(proxy.addr, spec, n));
                errors += traced.errors;
                let c = tracer.finish()?;
                let per_session = c.total() as f64 / n as f64;
                counts.borrow_mut().entry(kind).or_default().push(c);
                per_session
            }
            Err(why) => {
                untraced.borrow_mut().get_or_insert_with(|| format!("no system call counts: {why:#}"));
                f64::NAN
            }
        };
        Ok(vec![cpu_us, switches, calls, segments, errors as f64])
    });
    if let Some(why) = untraced.into_inner() {
        println!("   note: {why}");
        result.notes.push(why);
    }
    println!("{}", breakdown(&result.proxies, &counts.into_inner(), n));
    vec![result]
}

/// System calls per session, by call, for each proxy: the median over its
/// rounds, most frequent first (by the largest of the proxies).
fn breakdown(proxies: &[ProxyKind], counts: &BTreeMap<ProxyKind, Vec<Counts>>, sessions: u64) -> String {
    let per_session = |kind: ProxyKind, call: &str| -> Option<f64> {
        let rounds: Vec<f64> = counts.get(&kind)?.iter().map(|c| c.get(call) as f64 / sessions as f64).collect();
        crate::report::median(rounds)
    };
    let mut calls: Vec<(String, f64)> = counts
        .values()
        .flatten()
        .flat_map(|c| c.0.iter().map(|(name, _)| name.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|call| {
            let most = proxies.iter().filter_map(|&k| per_session(k, &call)).fold(0.0, f64::max);
            (call, most)
        })
        .filter(|(_, most)| *most >= SHOWN)
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = String::from("== cost: system calls per session, by call (median of the rounds)\n");
    out.push_str(&format!("  {:<16}", "call"));
    for k in proxies {
        out.push_str(&format!("{:>10}", k.name()));
    }
    out.push('\n');
    for (call, _) in &calls {
        out.push_str(&format!("  {call:<16}"));
        for &k in proxies {
            out.push_str(&format!("{:>10}", per_session(k, call).map_or("-".to_owned(), |v| number(v, 2))));
        }
        out.push('\n');
    }
    out
}
