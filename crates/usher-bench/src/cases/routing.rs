//! `routing`: what routing by SNI costs a short session. Every client
//! sends the same ClientHello (naming [`SERVER_NAME`]) as its request;
//! `usher` and `haproxy` relay it untouched, `usher-sni` and `haproxy-sni`
//! first peek at it and route it by its server name (to the same backend,
//! so the work after the peek is the same). Sessions per second, latency
//! and proxy CPU per session; the cost of the peek is the paired ratio of
//! each proxy with and without its rule. Not part of `all`.

use std::time::Duration;

use super::{Harness, REFERENCE};
use crate::load::{Payload, Sessions};
use crate::proxies::ProxyKind;
use crate::report::CaseResult;
use crate::tls_hello::SERVER_NAME;

const CLIENTS: usize = 32;
/// A small ClientHello, padded to this size.
const REQUEST: usize = 128;
const REPLY: usize = 64;
const SESSION_LIMIT: Duration = Duration::from_secs(10);

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    let title = format!(
        "routing: new connection per session, a {REQUEST} B ClientHello for {SERVER_NAME} / {REPLY} B reply, \
         {CLIENTS} client loops; with and without an SNI rule; {}",
        h.describe(&p)
    );
    let metrics = super::connrate::metrics();
    let spec = Sessions {
        clients: CLIENTS,
        request: REQUEST,
        payload: Payload::ClientHello,
        reply: REPLY,
        slow: SESSION_LIMIT,
        limit: SESSION_LIMIT,
    };
    let mut proxies = vec![ProxyKind::Usher, ProxyKind::UsherSni];
    if h.proxies.contains(&ProxyKind::Haproxy) {
        proxies.extend([ProxyKind::Haproxy, ProxyKind::HaproxySni]);
    }
    let result =
        h.alternate("routing", title, metrics, proxies.clone(), |kind| super::connrate::measure(h, &p, kind, spec));
    let pairs = [
        (ProxyKind::UsherSni, ProxyKind::Usher),
        (ProxyKind::HaproxySni, ProxyKind::Haproxy),
        (ProxyKind::UsherSni, ProxyKind::HaproxySni),
    ];
    print!("{}", result.pair_lines(&pairs, &["sessions/s", "proxy CPU µs/session"]));
    vec![result]
}
