//! `backends`: what many frontends and backends in one process cost the
//! sessions of one of them. The same load (64 client loops of short
//! sessions, as `scale`) goes to one frontend whose default backend has 4
//! servers, through usher and HAProxy configured with that one pair
//! (`usher`, `haproxy`) and with 50 frontends, each listening with its own
//! default backend among 500 backends of 4 servers (`usher-big`,
//! `haproxy-big`). All 2 000 servers are ports of the bench process, so
//! the fd limit is raised for them. Below the table, the paired ratios
//! big / small per proxy and usher / HAProxy in the big shape (the table's
//! own column has the small one's). Proxy with 2 threads, proxy, load and
//! backends sharing both cores (as `scale`). Not part of `all`.

use std::time::Duration;

use super::{one_backend, Harness, SHARED};
use crate::layout::Layout;
use crate::load::Sources;
use crate::proxies::ProxyKind;
use crate::report::CaseResult;

const SMALL: Layout = Layout::SINGLE;
const BIG: Layout = Layout { frontends: 50, backends: 500 };
const SERVERS_PER_BACKEND: usize = 4;
/// 4 servers of 50 slots: the 200 of `scale`'s backends, more than the
/// clients, so sessions seldom queue and the pick path is what is compared.
const SERVER_MAXCONN: u32 = 50;
const CLIENTS: usize = 64;
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = SHARED;
    let big_servers = BIG.backends * SERVERS_PER_BACKEND;
    let fds = crate::sys::raise_fd_limit(big_servers as u64 + 4 * CLIENTS as u64 + 1_000);
    let mut proxies = vec![ProxyKind::Usher];
    if h.proxies.contains(&ProxyKind::Haproxy) {
        proxies.push(ProxyKind::Haproxy);
    }
    if big_servers as u64 + 1_000 <= fds {
        proxies.extend(proxies.clone().into_iter().map(big));
    } else {
        eprintln!("backends: the {big_servers}-server shape skipped: RLIMIT_NOFILE is {fds}");
    }
    let title = format!(
        "backends: {} frontend(s) × {} backend(s) × {SERVERS_PER_BACKEND} servers (usher, haproxy) and {} × {} × \
         {SERVERS_PER_BACKEND} (usher-big, haproxy-big), server maxconn {SERVER_MAXCONN}, {CLIENTS} client loops of \
         short sessions on one frontend; RLIMIT_NOFILE {fds}; {}",
        SMALL.frontends,
        SMALL.backends,
        BIG.frontends,
        BIG.backends,
        h.describe(&p)
    );
    let spec = one_backend::sessions(CLIENTS, QUEUE_TIMEOUT);
    let result = h.alternate("backends", title, one_backend::metrics(), proxies.clone(), |kind| {
        let layout = if matches!(kind, ProxyKind::UsherBig | ProxyKind::HaproxyBig) { BIG } else { SMALL };
        let tune = crate::proxies::Tune { layout, ..h.tune(&p, SERVER_MAXCONN, QUEUE_TIMEOUT) };
        let servers = layout.backends * SERVERS_PER_BACKEND;
        Ok(one_backend::run(h, &p, kind, servers, &tune, spec, Sources::One)?.figures())
    });
    let pairs = [
        (ProxyKind::UsherBig, ProxyKind::Usher),
        (ProxyKind::HaproxyBig, ProxyKind::Haproxy),
        (ProxyKind::UsherBig, ProxyKind::HaproxyBig),
    ];
    print!("{}", result.pair_lines(&pairs, &["sessions/s", "proxy CPU µs/session"]));
    vec![result]
}

/// The same proxy in the big shape.
fn big(kind: ProxyKind) -> ProxyKind {
    match kind {
        ProxyKind::Haproxy => ProxyKind::HaproxyBig,
        _ => ProxyKind::UsherBig,
    }
}
