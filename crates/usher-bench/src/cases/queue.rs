//! `queue`: servers with maxconn 1 and many client loops of short
//! sessions, so nearly every session queues; sessions per second, p99 and
//! max wait (connect to the server's close), sessions that waited at least
//! the queue timeout or were closed without a reply ("stuck"), and the
//! peak concurrency each backend server saw (must stay ≤ maxconn).
//! Proxy with 2 threads; proxy, load and backends share both cores.
//! usher and HAProxy only: nginx OSS has no per-server maxconn queue.

use std::time::Duration;

use super::{one_backend, Harness, SHARED};
use crate::load::Sources;
use crate::proxies::ProxyKind;
use crate::report::{CaseResult, Metric};

pub const SERVER_MAXCONN: u32 = 1;
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);

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
            let spec = one_backend::sessions(clients, QUEUE_TIMEOUT);
            let proxies = h.only(&[ProxyKind::Usher, ProxyKind::Haproxy]);
            results.push(h.alternate("queue", title, metrics, proxies, |kind| {
                let tune = h.tune(&p, SERVER_MAXCONN, QUEUE_TIMEOUT);
                let r = one_backend::run(h, &p, kind, servers, &tune, spec, Sources::One)?;
                Ok(vec![r.rate, r.out.quantile_ms(0.99), r.out.max_ms(), r.out.stuck as f64, r.peak as f64, r.cpu_us])
            }));
        }
    }
    results
}
