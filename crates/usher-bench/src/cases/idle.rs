//! `idle`: many idle connections through the proxy (each did one small
//! echo round trip, then went quiet); the proxy's RSS per connection from
//! VmRSS before and after. Not run for `direct` (there is no proxy).

use std::time::Duration;

use anyhow::Context as _;

use super::{Harness, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::load;
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

/// Connections being set up at once (keeps the listen backlog from overflowing).
const PARALLEL: usize = 128;
/// Pause before reading RSS, for the proxy to settle.
const SETTLE: Duration = Duration::from_millis(300);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    let n = h.opts.idle_conns;
    let title = format!("idle: {n} idle connections (one 64 B echo each, then quiet); {}", h.describe(&p));
    let metrics = vec![Metric::lower("RSS KiB/conn", 2), Metric::lower("RSS MiB total", 1)];
    let proxies = h.only(&[ProxyKind::Usher, ProxyKind::Haproxy, ProxyKind::Nginx]);
    let result = h.alternate("idle", title, metrics, proxies, |kind| {
        let rt = h.load_runtime(&p)?;
        let backend = Backend::start(rt.handle(), Behavior::Echo)?;
        let proxy = h.start_proxy(kind, &[backend.addr], &h.tune(&p, 0, Duration::from_secs(10)))?;
        rt.block_on(async {
            // Warm the proxy's first allocations up, then take the baseline.
            drop(load::open_idle(proxy.addr, 16, 16).await?);
            tokio::time::sleep(SETTLE).await;
            let before = proxy.rss_kib().context("proxy RSS")?;
            let open = load::open_idle(proxy.addr, n, PARALLEL).await?;
            tokio::time::sleep(SETTLE).await;
            let after = proxy.rss_kib().context("proxy RSS")?;
            drop(open);
            let per_conn = after.saturating_sub(before) as f64 / n as f64;
            Ok(vec![per_conn, after as f64 / 1024.0])
        })
    });
    vec![result]
}
