//! Servers from DNS in the configuration: a server `address` given as
//! `HOST:PORT` with a host name, `[backends.B.server_templates.T]` (one
//! server per address a name resolves to) and `[resolvers]`. Nothing here
//! touches the network: names are resolved by the broker while it runs
//! (`crate::discovery`), so `usher check` never waits for a DNS server.

use std::net::SocketAddr;
use std::time::Duration;

use config::{Map, Value, ValueKind};
use serde::Serialize;

use super::reader::{Report, Section};
use super::settings::ServerSettings;

/// `[resolvers]`: how host names of servers are resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolverSettings {
    /// Nameservers `IP:PORT`; empty = the nameservers of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Longest time between two resolutions of a name; a record whose TTL
    /// is shorter is resolved again when it expires (never sooner than
    /// 1 s, `TTL_FLOOR` in `discovery/schedule.rs`).
    #[serde(with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// Limit for one resolution (every query of it together).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Which records a name is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A and AAAA: one server per address, on the configured port.
    A,
    /// SRV: one server per target address, with the record's port and weight.
    Srv,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "a",
            RecordKind::Srv => "srv",
        }
    }
}

/// How a [`DnsSource`] was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DnsForm {
    /// `[backends.B.servers.S] address = "HOST:PORT"`: one server named S
    /// on one address of the name (A and AAAA records).
    Server,
    /// `[backends.B.server_templates.T]`: up to `count_max` servers named
    /// T1, T2, … one per address.
    Template { kind: RecordKind, count_max: u32 },
}

/// Servers whose addresses come from DNS, as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSource {
    /// The server's name (`Server`) or the template's, which prefixes the
    /// names of its servers (`Template`).
    pub name: String,
    /// The DNS name asked for.
    pub query: String,
    pub form: DnsForm,
    /// The port of its servers; for SRV records, unused (0): each record
    /// carries its port.
    pub port: u16,
    /// The settings every server it makes takes; their `name`, `address`
    /// (and with SRV, `weight`) come from the resolution.
    pub server: ServerSettings,
}

impl DnsSource {
    pub fn kind(&self) -> RecordKind {
        match self.form {
            DnsForm::Server => RecordKind::A,
            DnsForm::Template { kind, .. } => kind,
        }
    }

    /// Most servers it makes.
    pub fn count_max(&self) -> u32 {
        match self.form {
            DnsForm::Server => 1,
            DnsForm::Template { count_max, .. } => count_max,
        }
    }

    /// The name of its server in slot `slot` (from 0): the server's own name, or
    /// the template's name and the slot counted from 1 (`web1`, `web2`).
    pub fn server_name(&self, slot: usize) -> String {
        match self.form {
            DnsForm::Server => self.name.clone(),
            DnsForm::Template { .. } => format!("{}{}", self.name, slot + 1),
        }
    }
}

/// Marks a server made from DNS (kept on its settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOrigin {
    /// The DNS name asked for.
    pub query: String,
    /// The template it comes from; `None` for a server configured by host name.
    pub template: Option<String>,
}

/// A server address as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfiguredAddress {
    Ip(SocketAddr),
    /// A host name, resolved while the broker runs.
    Name {
        host: String,
        port: u16,
    },
}

pub(super) const ADDRESS_EXPECTED: &str =
    "a server address \"IP:PORT\" or \"HOST:PORT\" such as \"127.0.0.1:9001\" or \"db.example.com:5432\"";

/// Parses `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT` without resolving anything.
pub(super) fn parse_address(text: &str) -> Option<ConfiguredAddress> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(ConfiguredAddress::Ip(addr));
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    host_name_ok(host).then(|| ConfiguredAddress::Name { host: host.trim_end_matches('.').to_owned(), port })
}

/// A DNS host name: dot-separated labels of letters, digits, '-' and '_',
/// not all digits (that would be a malformed IP address).
fn host_name_ok(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
        })
}

/// `[resolvers]`.
pub(super) fn resolvers(root: &Map<String, Value>, report: &mut Report<'_>) -> Option<ResolverSettings> {
    let mut s = Section::new("resolvers", root.get("resolvers"), report);
    let nameservers = s.get(
        "nameservers",
        "a list of nameserver addresses \"IP:PORT\" such as [\"127.0.0.1:53\"], or [] for those of /etc/resolv.conf",
        report,
        |v| {
            let items = super::reader::string_list(v)?;
            items.iter().map(|s| s.parse::<SocketAddr>().ok()).collect::<Option<Vec<_>>>()
        },
    );
    let resolve_interval = s.duration("resolve_interval", report);
    let timeout = s.duration("timeout", report);
    s.finish(report);
    let mut ok = true;
    for (key, value) in [("resolve_interval", resolve_interval), ("timeout", timeout)] {
        if value.is_some_and(|v| v.is_zero()) {
            report.error(&format!("resolvers.{key}"), "zero; expected a duration above zero such as \"10s\"");
            ok = false;
        }
    }
    let (nameservers, resolve_interval, timeout) = (nameservers?, resolve_interval?, timeout?);
    ok.then_some(ResolverSettings { nameservers, resolve_interval, timeout })
}

/// Most servers one template makes.
const MAX_COUNT: u32 = 1024;

/// `[backends.B.server_templates.T]`: the template keys, then every server
/// key but `address` (read by `server_keys`, with `[defaults.server]`).
pub(super) fn server_templates(
    backend: &mut Section,
    defaults: Option<&Value>,
    mut server: impl FnMut(&mut Section, &mut Report<'_>) -> Option<ServerSettings>,
    report: &mut Report<'_>,
) -> Vec<DnsSource> {
    let table = backend.sub("server_templates", report);
    let mut out = Vec::new();
    for (name, value) in table.entries() {
        let path = format!("{}.{name}", table.path());
        let mut s = Section::new(path.clone(), Some(&value), report).with_defaults("defaults.server", defaults);
        let query = s.get("query", "a DNS name such as \"web.svc.example.com\"", report, |v| match v {
            ValueKind::String(q) if host_name_ok(q.trim()) => Some(q.trim().trim_end_matches('.').to_owned()),
            _ => None,
        });
        let kind = s.choice("kind", &[("a", RecordKind::A), ("srv", RecordKind::Srv)], report);
        let count_max = s.u32_in("count_max", 1, MAX_COUNT, report);
        // Optional: SRV records carry their own ports.
        let port = match s.optional("port") {
            None => Some(0),
            Some(_) => s.u32_in("port", 0, 65_535, report),
        };
        let server = server(&mut s, report);
        s.finish(report);
        let (Some(query), Some(kind), Some(count_max), Some(port), Some(mut server)) =
            (query, kind, count_max, port, server)
        else {
            continue;
        };
        if kind == RecordKind::A && port == 0 {
            report.error(
                &format!("{path}.port"),
                "0 with kind = \"a\"; expected the servers' port (only SRV records carry their own)",
            );
            continue;
        }
        let port = if kind == RecordKind::Srv { 0 } else { port as u16 };
        server.name = name.clone();
        server.address = SocketAddr::from(([0, 0, 0, 0], port));
        out.push(DnsSource { name, query, form: DnsForm::Template { kind, count_max }, port, server });
    }
    out
}

/// A backend's server names must stay apart from the names its templates
/// make (`web` makes `web1`…`webN`): one name, one server.
pub(super) fn check_names(backend: &str, servers: &[String], templates: &[DnsSource], report: &mut Report<'_>) {
    for t in templates {
        let clash = servers.iter().find(|s| (0..t.count_max() as usize).any(|slot| t.server_name(slot) == **s));
        if let Some(clash) = clash {
            report.error(
                &format!("backends.{backend}.server_templates.{}", t.name),
                format!(
                    "makes servers {}1 to {}{}, and server {clash:?} has one of those names; \
                     expected a template name whose servers no other server is named after",
                    t.name,
                    t.name,
                    t.count_max()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml_str;

    #[test]
    fn addresses_are_read_without_the_network() {
        assert_eq!(parse_address("127.0.0.1:9"), Some(ConfiguredAddress::Ip("127.0.0.1:9".parse().unwrap())));
        assert_eq!(parse_address("[::1]:9"), Some(ConfiguredAddress::Ip("[::1]:9".parse().unwrap())));
        assert_eq!(
            parse_address("db.example.com.:5432"),
            Some(ConfiguredAddress::Name { host: "db.example.com".into(), port: 5432 })
        );
        for bad in ["nowhere", "db:0", "db:x", ":80", "1.2.3:80", "a..b:1", "-a:1", "a b:1"] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_server_by_host_name_and_a_template_read_back() {
        let toml = "[backends.app.servers.db]\naddress = \"db.invalid:5432\"\nmaxconn = 3\n\
                    [backends.app.server_templates.web]\nquery = \"web.invalid\"\nkind = \"srv\"\ncount_max = 4\nweight = 7\n\
                    [resolvers]\nnameservers = [\"127.0.0.1:5353\"]\n";
        let s = from_toml_str(toml).expect("valid, with no DNS server asked");
        let b = s.backend("app").unwrap();
        assert!(b.servers.is_empty());
        assert_eq!(b.dns.len(), 2);
        assert_eq!((b.dns[0].form, b.dns[0].query.as_str(), b.dns[0].port), (DnsForm::Server, "db.invalid", 5432));
        assert_eq!(b.dns[1].form, DnsForm::Template { kind: RecordKind::Srv, count_max: 4 });
        assert_eq!(b.dns[1].server.weight, 7);
        assert_eq!(s.resolvers.nameservers, vec!["127.0.0.1:5353".parse().unwrap()]);
        let back = from_toml_str(&s.to_toml()).expect("usher check output reads back");
        assert_eq!(back, s);
    }

    #[test]
    fn every_bad_key_is_named() {
        let toml = "[backends.app.servers.web1]\naddress = \"127.0.0.1:1\"\n\
                    [backends.app.server_templates.web]\nquery = \"bad name\"\nkind = \"mx\"\ncount_max = 0\n\
                    [backends.app.server_templates.api]\nquery = \"api.invalid\"\nkind = \"a\"\ncount_max = 2\nport = 0\n\
                    [backends.app.server_templates.clash]\nquery = \"c.invalid\"\nkind = \"a\"\ncount_max = 2\nport = 1\n\
                    [backends.app.servers.clash2]\naddress = \"127.0.0.1:2\"\n\
                    [resolvers]\nnameservers = [\"dns.example\"]\ntimeout = \"0\"\n";
        let text = from_toml_str(toml).expect_err("invalid").to_string();
        for key in [
            "backends.app.server_templates.web.query",
            "backends.app.server_templates.web.kind",
            "backends.app.server_templates.web.count_max",
            "backends.app.server_templates.api.port",
            "backends.app.server_templates.clash:",
            "resolvers.nameservers",
            "resolvers.timeout",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
    }
}
