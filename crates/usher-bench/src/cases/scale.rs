//! `scale`: sessions/s through one backend of 2, 100, 1 000 and 10 000
//! servers, for each balancing algorithm, usher and HAProxy alternated. All
//! servers are ports of the bench process itself (one listener each, so
//! 10 000 servers hold 10 000 fds here: the fd limit is raised as far as
//! the hard limit allows and stated in the notes). The servers' maxconn
//! keeps the backend's capacity near 200 sessions (100 each for 2 servers,
//! 1 each from 1 000 on), so the pick path — not the queue — is what grows
//! with the number of servers. Proxy with 2 threads, proxy, load and
//! backends sharing both cores (as `queue`). For `source`, each client loop
//! connects from its own loopback address, or hashing would seat every
//! session on one server.

use std::time::Duration;

use super::{one_backend, Harness, SHARED};
use crate::load::Sources;
use crate::proxies::ProxyKind;
use crate::report::CaseResult;

const SIZES: [usize; 4] = [2, 100, 1_000, 10_000];
/// usher's names; HAProxy's equivalents are in `proxies::haproxy_balance`.
pub const ALGORITHMS: [&str; 6] = ["roundrobin", "static-rr", "leastconn", "first", "random", "source"];
const CLIENTS: usize = 64;
const CAPACITY: u32 = 200;
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);

/// The algorithms and sizes a run measures (`scale --balance --servers`).
#[derive(Debug, Clone)]
pub struct ScaleOnly {
    balance: Vec<&'static str>,
    servers: Vec<usize>,
}

impl Default for ScaleOnly {
    fn default() -> ScaleOnly {
        ScaleOnly { balance: ALGORITHMS.to_vec(), servers: SIZES.to_vec() }
    }
}

impl ScaleOnly {
    /// Empty lists mean all; an algorithm must be one of [`ALGORITHMS`].
    pub fn new(balance: &[String], servers: &[usize]) -> anyhow::Result<ScaleOnly> {
        let mut only = ScaleOnly::default();
        if !balance.is_empty() {
            only.balance = balance
                .iter()
                .map(|name| {
                    ALGORITHMS.iter().copied().find(|a| a == name).ok_or_else(|| {
                        anyhow::anyhow!("scale --balance: unknown algorithm {name:?} (expected one of {ALGORITHMS:?})")
                    })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        if !servers.is_empty() {
            if servers.contains(&0) {
                anyhow::bail!("scale --servers: a backend needs at least one server");
            }
            only.servers = servers.to_vec();
        }
        Ok(only)
    }
}

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = SHARED;
    let mut results = Vec::new();
    let only = &h.opts.scale;
    let most = only.servers.iter().copied().max().unwrap_or(0);
    let fds = crate::sys::raise_fd_limit(most as u64 + 4 * CLIENTS as u64 + 1_000);
    for &balance in &only.balance {
        for &servers in &only.servers {
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
                // Hashing by client address spreads only clients that come
                // from different addresses.
                let sources = if balance == "source" { Sources::PerClient } else { Sources::One };
                Ok(one_backend::run(h, &p, kind, servers, &tune, spec, sources)?.figures())
            }));
        }
    }
    results
}
