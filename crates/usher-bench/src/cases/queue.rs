//! `queue`: servers with maxconn 1 and many client loops of short
//! sessions, so nearly every session queues; sessions per second, p99 and
//! max wait (connect to the server's close), sessions that waited at least
//! the queue timeout or were closed without a reply ("stuck"), and the
//! peak concurrency each backend server saw (must stay ≤ maxconn).
//! Proxy with 2 threads; proxy, load and backends share both cores.
//! usher and HAProxy only: nginx OSS has no per-server maxconn queue.

use std::time::Duration;

use super::{Harness, SHARED};
use crate::backends::{Backend, Behavior};
use crate::load::{self, Payload, Sessions};
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

pub const SERVER_MAXCONN: u32 = 1;
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST: usize = 64;
const REPLY: usize = 64;

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = SHARED;
    let mut results = Vec::new();
    for servers in [1, 2] {
        for clients in [64, 200] {
            let title = format!(
                "queue: {servers} server(s) with maxconn {SERVER_MAXCONN}, {clients} client loops of short sessions, \
                 queue timeout {}s; {}",
                QUEUE_TIMEOUT.as_secs(),
                h.describe(&p)
            );
            let metrics = vec![
                Metric::higher("sessions/s", 0),
                Metric::lower("p99 wait ms", 2),
                Metric::lower("max wait ms", 2),
                Metric::zero("stuck"),
                Metric::lower("peak/server", 0),
                Metric::lower("proxy CPU µs/session", 1),
            ];
            let spec = Sessions {
                clients,
                request: REQUEST,
                payload: Payload::Filler,
                reply: REPLY,
                slow: QUEUE_TIMEOUT,
                limit: QUEUE_TIMEOUT * 2,
            };
            let proxies = h.only(&[ProxyKind::Usher, ProxyKind::Haproxy]);
            results.push(h.alternate("queue", title, metrics, proxies, |kind| {
                let rt = h.load_runtime(&p)?;
                let backends = (0..servers)
                    .map(|_| Backend::start(rt.handle(), Behavior::Reply { request: REQUEST, reply: REPLY }))
                    .collect::<std::io::Result<Vec<_>>>()?;
                let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
                let proxy = h.start_proxy(kind, &addrs, &h.tune(&p, SERVER_MAXCONN, QUEUE_TIMEOUT))?;
                let w = h.window();
                let (out, cpu) =
                    rt.block_on(async { tokio::join!(load::sessions(proxy.addr, spec, w), proxy.cpu_during(w)) });
                let peak = backends.iter().map(Backend::peak).max().unwrap_or(0);
                let cpu_us = cpu.map_or(f64::NAN, |c| c * 1e6 / out.count.max(1) as f64);
                Ok(vec![out.rate(&w), out.quantile_ms(0.99), out.max_ms(), out.stuck as f64, peak as f64, cpu_us])
            }));
        }
    }
    results
}
