//! A frontend's routing rules: evaluated in order, the first rule whose
//! conditions all match names the backend; when none matches, the
//! frontend's own `backend` serves the session.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;

use super::client_hello::ClientHello;
use super::pattern::{DestinationPattern, SniPattern};
use super::spill::SpillWhen;

/// One `[[frontends.X.routes]]` entry. An empty list is no condition; a
/// rule with no condition at all matches every session (a catch-all).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteRule {
    /// The ClientHello's server name matches one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<SniPattern>,
    /// The ClientHello offers one of these protocols.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    /// The address the client reached matches one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination: Vec<DestinationPattern>,
    /// The client's address is in one of these networks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<IpNet>,
    /// The backend that serves the sessions this rule matches.
    pub backend: String,
    /// Where its sessions go while `backend` is too busy.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
}

/// `overflow` and `spill_when` of a rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overflow {
    #[serde(rename = "overflow")]
    pub backend: String,
    pub spill_when: SpillWhen,
}

/// What a session knows when it is routed.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts<'a> {
    /// The client (the PROXY header's source with `accept_proxy`).
    pub source: IpAddr,
    /// The address it reached (the PROXY header's destination with
    /// `accept_proxy`), if known.
    pub destination: Option<SocketAddr>,
    /// Its ClientHello, if it was read.
    pub hello: Option<&'a ClientHello>,
}

/// What happens to a client whose ClientHello cannot be read (plain TCP,
/// malformed, too large, or not sent within `timeout.inspect`):
/// `frontends.X.no_client_hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoClientHello {
    /// Routed by the rules that need no ClientHello, else to the default backend.
    Default,
    /// Closed, with its own termination code.
    Refuse,
}

impl RouteRule {
    /// Whether the rule reads the ClientHello (it has an `sni` or `alpn` condition).
    pub fn needs_client_hello(&self) -> bool {
        !self.sni.is_empty() || !self.alpn.is_empty()
    }

    /// True when the rule has no condition: it matches every session.
    pub fn is_catch_all(&self) -> bool {
        !self.needs_client_hello() && self.destination.is_empty() && self.source.is_empty()
    }

    /// Whether every condition of the rule matches.
    pub fn matches(&self, facts: &ConnectionFacts<'_>) -> bool {
        let sni = self.sni.is_empty()
            || facts.hello.and_then(|h| h.sni.as_deref()).is_some_and(|name| self.sni.iter().any(|p| p.matches(name)));
        let alpn = self.alpn.is_empty()
            || facts
                .hello
                .is_some_and(|h| h.alpn.iter().any(|offered| self.alpn.iter().any(|p| p.as_bytes() == offered)));
        let destination = self.destination.is_empty()
            || facts.destination.is_some_and(|reached| self.destination.iter().any(|p| p.matches(reached)));
        let source = self.source.is_empty() || {
            let client = facts.source.to_canonical();
            self.source.iter().any(|net| net.contains(&client))
        };
        sni && alpn && destination && source
    }
}

/// A frontend's rules, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    pub rules: Vec<RouteRule>,
    pub no_client_hello: NoClientHello,
}

impl RouteTable {
    /// Whether sessions must read a ClientHello before they are routed.
    pub fn needs_client_hello(&self) -> bool {
        self.rules.iter().any(RouteRule::needs_client_hello)
    }

    /// The index of the first rule that matches, if any (else the
    /// frontend's default backend serves the session).
    pub fn choose(&self, facts: &ConnectionFacts<'_>) -> Option<usize> {
        self.rules.iter().position(|rule| rule.matches(facts))
    }

    /// The index of the first rule that can never match because a rule
    /// before it matches everything, and that rule's index.
    pub fn unreachable(rules: &[RouteRule]) -> Option<(usize, usize)> {
        let catch_all = rules.iter().position(RouteRule::is_catch_all)?;
        (catch_all + 1 < rules.len()).then_some((catch_all + 1, catch_all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(backend: &str) -> RouteRule {
        RouteRule {
            sni: Vec::new(),
            alpn: Vec::new(),
            destination: Vec::new(),
            source: Vec::new(),
            backend: backend.to_owned(),
            overflow: None,
        }
    }

    fn hello(sni: &str, alpn: &[&str]) -> ClientHello {
        ClientHello { sni: Some(sni.to_owned()), alpn: alpn.iter().map(|p| p.as_bytes().to_vec()).collect() }
    }

    fn facts<'a>(source: &str, destination: &str, hello: Option<&'a ClientHello>) -> ConnectionFacts<'a> {
        ConnectionFacts { source: source.parse().unwrap(), destination: destination.parse().ok(), hello }
    }

    fn table() -> RouteTable {
        let mut api = rule("api");
        api.sni = vec![SniPattern::parse("api.example.com").unwrap(), SniPattern::parse("*.api.example.com").unwrap()];
        let mut internal = rule("internal");
        internal.alpn = vec!["h2".into()];
        internal.source = vec!["10.0.0.0/8".parse().unwrap()];
        let mut admin = rule("admin");
        admin.destination = vec![DestinationPattern::parse("*:8443").unwrap()];
        RouteTable { rules: vec![api, internal, admin], no_client_hello: NoClientHello::Default }
    }

    #[test]
    fn first_matching_rule_wins_else_none() {
        let t = table();
        let api = hello("V2.API.example.com", &["h2"]);
        assert_eq!(t.choose(&facts("10.1.1.1", "1.2.3.4:443", Some(&api))), Some(0), "sni before alpn+source");
        let other = hello("www.example.com", &["http/1.1", "h2"]);
        assert_eq!(t.choose(&facts("10.1.1.1", "1.2.3.4:443", Some(&other))), Some(1));
        assert_eq!(t.choose(&facts("192.168.1.1", "1.2.3.4:443", Some(&other))), None, "every condition must match");
        assert_eq!(t.choose(&facts("192.168.1.1", "1.2.3.4:8443", None)), Some(2));
        assert_eq!(t.choose(&facts("10.1.1.1", "1.2.3.4:443", None)), None, "no hello: sni and alpn rules miss");
        assert!(t.needs_client_hello());
    }

    #[test]
    fn mapped_ipv4_clients_match_ipv4_networks() {
        let t = table();
        let h2 = hello("x", &["h2"]);
        assert_eq!(t.choose(&facts("::ffff:10.2.3.4", "[::1]:443", Some(&h2))), Some(1));
    }

    #[test]
    fn a_rule_after_a_catch_all_is_unreachable() {
        let mut rules = table().rules;
        assert_eq!(RouteTable::unreachable(&rules), None);
        rules.insert(1, rule("all"));
        assert_eq!(RouteTable::unreachable(&rules), Some((2, 1)));
        assert_eq!(RouteTable::unreachable(&[rule("a")]), None, "a catch-all last is fine");
        assert_eq!(RouteTable::unreachable(&[rule("a"), rule("b")]), Some((1, 0)));
    }

    #[test]
    fn source_and_destination_rules_need_no_hello() {
        let mut only_source = rule("s");
        only_source.source = vec!["127.0.0.0/8".parse().unwrap()];
        let t = RouteTable { rules: vec![only_source], no_client_hello: NoClientHello::Refuse };
        assert!(!t.needs_client_hello());
        assert_eq!(t.choose(&facts("127.0.0.1", "127.0.0.1:1", None)), Some(0));
    }
}
