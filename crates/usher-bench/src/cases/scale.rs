//! `scale`: sessions/s through one backend of 2, 100, 1 000 and 10 000
//! servers, for each balancing algorithm, usher and HAProxy alternated. All
//! servers are ports of the bench process itself (one listener each, so
//! 10 000 servers hold 10 000 fds here: the fd limit is raised as far as
//! the hard limit allows and stated in the notes). The servers' maxconn
//! keeps the backend's capacity near 200 sessions (100 each for 2 servers,
//! 1 each from 1 000 on), so the pick path — not the queue — is what grows
//! with the number of servers. Proxy with 2 threads, proxy, load and
//! backends sharing both cores (as `queue`).

use std::time::Duration;

use super::{one_backend, Harness, SHARED};
use crate::proxies::ProxyKind;
use crate::report::CaseResult;

const SIZES: [usize; 4] = [2, 100, 1_000, 10_000];
/// usher's names; HAProxy's equivalents are in `proxies::haproxy_balance`.
pub const ALGORITHMS: [&str; 6] = ["roundrobin", "static-rr", "leastconn", "first", "random", "source"];
const CLIENTS: usize = 64;
const CAPACITY: u32 = 200;
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = SHARED;
    let mut results = Vec::new();
    let fds = crate::sys::raise_fd_limit(SIZES[SIZES.len() - 1] as u64 + 4 * CLIENTS as u64 + 1_000);
    for &balance in &ALGORITHMS {
        for &servers in &SIZES {
            if servers as u64 + 1_000 > fds {
                eprintln!("scale: {servers} servers skipped: RLIMIT_NOFILE is {fds}");
                continue;
            }
            let maxconn = (CAPACITY / servers as u32).max(1);
            let title = format!(
                "scale: balance {balance}, {servers} servers with maxconn {maxconn}, {CLIENTS} client loops of \
                 short sessions; RLIMIT_NOFILE {fds}; {}",
                h.describe(&p)
            );
            let spec = one_backend::sessions(CLIENTS, QUEUE_TIMEOUT);
            let proxies = h.only(&[ProxyKind::Usher, ProxyKind::Haproxy]);
            results.push(h.alternate("scale", title, one_backend::metrics(), proxies, |kind| {
                let tune = crate::proxies::Tune { balance, ..h.tune(&p, maxconn, QUEUE_TIMEOUT) };
                Ok(one_backend::run(h, &p, kind, servers, &tune, spec)?.figures())
            }));
        }
    }
    results
}
