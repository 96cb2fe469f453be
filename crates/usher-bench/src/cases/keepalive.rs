//! `keepalive`: one long connection per client, small ping-pong; round
//! trips per second and p50/p99 latency.

use std::time::Duration;

use super::{Harness, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::load;
use crate::report::{CaseResult, Metric};

const CONNECTIONS: usize = 32;
const SIZE: usize = 64;

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    let title = format!("keepalive: {CONNECTIONS} connections, {SIZE} B ping-pong; {}", h.describe(&p));
    let metrics = vec![
        Metric::higher("round trips/s", 0),
        Metric::lower("p50 ms", 3),
        Metric::lower("p99 ms", 3),
        Metric::lower("proxy CPU µs/round trip", 2),
        Metric::zero("errors"),
    ];
    let result = h.alternate("keepalive", title, metrics, h.proxies.clone(), |kind| {
        let rt = h.load_runtime(&p)?;
        let backend = Backend::start(rt.handle(), Behavior::Echo)?;
        let proxy = h.start_proxy(kind, &[backend.addr], &h.tune(&p, 0, Duration::from_secs(10)))?;
        let w = h.window();
        let (out, cpu) =
            rt.block_on(async { tokio::join!(load::pingpong(proxy.addr, CONNECTIONS, SIZE, w), proxy.cpu_during(w)) });
        let cpu_us = cpu.map_or(f64::NAN, |c| c * 1e6 / out.count.max(1) as f64);
        Ok(vec![out.rate(&w), out.quantile_ms(0.5), out.quantile_ms(0.99), cpu_us, out.errors as f64])
    });
    vec![result]
}
