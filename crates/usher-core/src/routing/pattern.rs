//! What one condition of a routing rule matches: a server name (SNI) or the
//! address the client reached. Source networks are `ipnet::IpNet` as they are.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Serialize, Serializer};

/// An SNI pattern: an exact host name, or `*.suffix` for any name under
/// `suffix` (one label or more, never `suffix` itself), as in certificates
/// and HAProxy's `req.ssl_sni -m end`. Compared without regard to ASCII case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPattern {
    /// Lower-case host name.
    Exact(String),
    /// Lower-case suffix with its leading dot: `*.api.example.com` keeps
    /// `.api.example.com`.
    Wildcard(String),
}

impl SniPattern {
    /// Parses `name` or `*.name`; `None` when it is not a host name
    /// (empty labels, characters outside letters, digits, `-` and `_`,
    /// a `*` anywhere but as the whole first label).
    pub fn parse(text: &str) -> Option<SniPattern> {
        let text = text.trim().to_ascii_lowercase();
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return None;
        }
        Some(if wildcard { SniPattern::Wildcard(format!(".{name}")) } else { SniPattern::Exact(name.to_owned()) })
    }

    /// Whether the client's server name matches. `name` is as sent (any
    /// case; a trailing dot, which some clients send, is ignored).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            SniPattern::Exact(exact) => name.eq_ignore_ascii_case(exact),
            SniPattern::Wildcard(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl fmt::Display for SniPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniPattern::Exact(name) => f.write_str(name),
            SniPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl Serialize for SniPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The address a client reached: `IP:PORT`, `IP` (any port) or `*:PORT`
/// (any address). With `accept_proxy` it is the PROXY header's
/// destination, else the accepted socket's local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationPattern {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl DestinationPattern {
    pub fn parse(text: &str) -> Option<DestinationPattern> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(DestinationPattern { ip: Some(addr.ip().to_canonical()), port: Some(addr.port()) });
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(DestinationPattern { ip: Some(ip.to_canonical()), port: None });
        }
        let port = text.strip_prefix("*:")?.parse::<u16>().ok()?;
        Some(DestinationPattern { ip: None, port: Some(port) })
    }

    pub fn matches(&self, reached: SocketAddr) -> bool {
        self.ip.is_none_or(|ip| ip == reached.ip().to_canonical())
            && self.port.is_none_or(|port| port == reached.port())
    }
}

impl fmt::Display for DestinationPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (Some(ip), Some(port)) => write!(f, "{}", SocketAddr::new(ip, port)),
            (Some(ip), None) => write!(f, "{ip}"),
            (None, Some(port)) => write!(f, "*:{port}"),
            (None, None) => f.write_str("*"),
        }
    }
}

impl Serialize for DestinationPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sni(text: &str) -> SniPattern {
        SniPattern::parse(text).expect(text)
    }

    #[test]
    fn exact_names_match_in_any_case() {
        let p = sni("API.example.com");
        assert!(p.matches("api.example.com"));
        assert!(p.matches("Api.Example.COM"));
        assert!(p.matches("api.example.com."));
        assert!(!p.matches("x.api.example.com"));
        assert!(!p.matches("example.com"));
    }

    #[test]
    fn wildcards_match_names_under_the_suffix_only() {
        let p = sni("*.api.example.com");
        assert!(p.matches("v1.api.example.com"));
        assert!(p.matches("a.b.API.example.com"));
        assert!(!p.matches("api.example.com"), "the suffix itself is not under it");
        assert!(!p.matches("xapi.example.com"), "a label boundary is needed");
        assert!(!p.matches(".api.example.com"), "an empty label is no name");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "*", "*.", "a..b", "a.*.b", "*a.b", "exa mple.com", "ex/ample.com", "*.*.b"] {
            assert_eq!(SniPattern::parse(bad), None, "{bad:?}");
        }
        assert_eq!(sni("*.Example.com").to_string(), "*.example.com");
    }

    #[test]
    fn non_ascii_names_never_panic() {
        let p = sni("*.b.c");
        assert!(!p.matches("é.c"));
        assert!(!p.matches("ééééé"));
    }

    #[test]
    fn destinations_by_address_port_or_both() {
        let reached: SocketAddr = "10.0.0.1:443".parse().unwrap();
        assert!(DestinationPattern::parse("10.0.0.1:443").unwrap().matches(reached));
        assert!(DestinationPattern::parse("10.0.0.1").unwrap().matches(reached));
        assert!(DestinationPattern::parse("*:443").unwrap().matches(reached));
        assert!(!DestinationPattern::parse("*:80").unwrap().matches(reached));
        assert!(!DestinationPattern::parse("10.0.0.2").unwrap().matches(reached));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:443".parse().unwrap();
        assert!(DestinationPattern::parse("10.0.0.1:443").unwrap().matches(mapped));
        for bad in ["", "*", "10.0.0.1:", "host:443", "*:99999"] {
            assert_eq!(DestinationPattern::parse(bad), None, "{bad:?}");
        }
    }
}
