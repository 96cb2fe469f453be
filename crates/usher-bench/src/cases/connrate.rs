//! `connrate`: a new TCP connection per request, small request and reply;
//! sessions per second and p50/p99 latency (connect to the server's close).

use std::time::Duration;

use super::{Harness, Placement, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::load::{self, Payload, Sessions};
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

const CLIENTS: usize = 32;
const REQUEST: usize = 64;
const REPLY: usize = 64;
const SESSION_LIMIT: Duration = Duration::from_secs(10);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    let title = format!(
        "connrate: new connection per session, {REQUEST} B request / {REPLY} B reply, {CLIENTS} client loops; {}",
        h.describe(&p)
    );
    let metrics = metrics();
    let spec = Sessions {
        clients: CLIENTS,
        request: REQUEST,
        payload: Payload::Filler,
        reply: REPLY,
        slow: SESSION_LIMIT,
        limit: SESSION_LIMIT,
    };
    let result = h.alternate("connrate", title, metrics, h.proxies.clone(), |kind| measure(h, &p, kind, spec));
    vec![result]
}

/// The figures of a short-sessions run.
pub(super) fn metrics() -> Vec<Metric> {
    vec![
        Metric::higher("sessions/s", 0),
        Metric::lower("p50 ms", 3),
        Metric::lower("p99 ms", 3),
        Metric::lower("proxy CPU µs/session", 1),
        Metric::zero("errors"),
    ]
}

/// One run of `spec`'s sessions through `kind` to a backend that reads the
/// request and replies: the values of [`metrics`].
pub(super) fn measure(h: &Harness, p: &Placement, kind: ProxyKind, spec: Sessions) -> anyhow::Result<Vec<f64>> {
    let rt = h.load_runtime(p)?;
    let backend = Backend::start(rt.handle(), Behavior::Reply { request: spec.request, reply: spec.reply })?;
    let proxy = h.start_proxy(kind, &[backend.addr], &h.tune(p, 0, spec.limit))?;
    let w = h.window();
    let (out, cpu) = rt.block_on(async { tokio::join!(load::sessions(proxy.addr, spec, w), proxy.cpu_during(w)) });
    let cpu_us = cpu.map_or(f64::NAN, |c| c * 1e6 / out.count.max(1) as f64);
    Ok(vec![out.rate(&w), out.quantile_ms(0.5), out.quantile_ms(0.99), cpu_us, out.errors as f64])
}
