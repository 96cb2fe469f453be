//! The run `scale`, `queue` and `backends` share: client loops of short
//! sessions through the backend of the layout's loaded frontend, whose
//! servers are ports of the bench process itself (fresh ones and a fresh
//! proxy per run, all replying to each request). Figures: the load's
//! outcome, the highest concurrency any server saw (must stay within its
//! maxconn) and the proxy's CPU per session.

use std::time::Duration;

use super::{Harness, Placement};
use crate::backends::{Backend, Behavior};
use crate::load::{self, Outcome, Payload, Sessions, Sources};
use crate::proxies::{ProxyKind, Tune};
use crate::report::Metric;

const REQUEST: usize = 64;
const REPLY: usize = 64;
/// How long a proxy may take from listening to serving a first session.
const SERVING_LIMIT: Duration = Duration::from_secs(30);

/// `clients` loops of 64 B requests and replies; a session that takes the
/// queue timeout is stuck, one that takes twice as long is given up.
pub(super) fn sessions(clients: usize, queue_timeout: Duration) -> Sessions {
    Sessions {
        clients,
        request: REQUEST,
        payload: Payload::Filler,
        reply: REPLY,
        slow: queue_timeout,
        limit: queue_timeout * 2,
    }
}

/// The figures of `scale` and `backends`, in the order of [`Run::figures`].
pub(super) fn metrics() -> Vec<Metric> {
    vec![
        Metric::higher("sessions/s", 0),
        Metric::lower("p99 ms", 2),
        Metric::zero("stuck"),
        Metric::lower("peak/server", 0),
        Metric::lower("proxy CPU µs/session", 1),
    ]
}

/// What one run measured.
pub(super) struct Run {
    pub out: Outcome,
    pub rate: f64,
    /// The highest number of sessions one server held at once.
    pub peak: u64,
    /// `NaN` without a proxy process (`direct`).
    pub cpu_us: f64,
}

impl Run {
    /// The values of [`metrics`].
    pub fn figures(&self) -> Vec<f64> {
        vec![self.rate, self.out.quantile_ms(0.99), self.out.stuck as f64, self.peak as f64, self.cpu_us]
    }
}

/// One run of `spec` through `kind` configured with `tune` (its layout
/// splits the `servers` started here among its backends), the client loops
/// connecting from `sources`.
pub(super) fn run(
    h: &Harness,
    p: &Placement,
    kind: ProxyKind,
    servers: usize,
    tune: &Tune,
    spec: Sessions,
    sources: Sources,
) -> anyhow::Result<Run> {
    let rt = h.load_runtime(p)?;
    let backends = (0..servers)
        .map(|_| Backend::start(rt.handle(), Behavior::Reply { request: spec.request, reply: spec.reply }))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = h.start_proxy(kind, &addrs, tune)?;
    rt.block_on(load::first_session(proxy.addr, spec, SERVING_LIMIT))?;
    let w = h.window();
    let (out, cpu) =
        rt.block_on(async { tokio::join!(load::sessions_from(proxy.addr, spec, w, sources), proxy.cpu_during(w)) });
    let peak = backends.iter().map(Backend::peak).max().unwrap_or(0);
    let cpu_us = cpu.map_or(f64::NAN, |c| c * 1e6 / out.count.max(1) as f64);
    Ok(Run { rate: out.rate(&w), out, peak, cpu_us })
}
