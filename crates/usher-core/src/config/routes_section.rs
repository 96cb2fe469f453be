//! `[[frontends.NAME.routes]]`: a frontend's routing rules, read and
//! checked like every other key, so `usher check` names each bad one as
//! `frontends.tls.routes[1].sni`, with the layer it came from.

use std::time::Duration;

use config::{Value, ValueKind};
use ipnet::IpNet;

use super::reader::{describe, Report, Section};
use crate::routing::{DestinationPattern, Overflow, RouteRule, RouteTable, SniPattern, SpillWhen};

/// Longest `spill_when.expected_wait` worth configuring: a backend whose
/// newcomers would wait longer has long been worth spilling from.
const MAX_EXPECTED_WAIT: Duration = Duration::from_secs(3600);

/// Reads `routes` of the frontend `s`: `None` when some rule is invalid
/// (each problem is reported).
/// `declared`: every backend of the configuration, valid or not.
pub(super) fn routes(s: &mut Section, declared: &[&str], report: &mut Report<'_>) -> Option<Vec<RouteRule>> {
    let Some((path, value)) = s.optional("routes") else { return Some(Vec::new()) };
    let items = match value.kind {
        ValueKind::Array(items) => items,
        ValueKind::Nil => return Some(Vec::new()),
        other => {
            report
                .error(&path, format!("found {}; expected a list of rules, each a [[{path}]] table", describe(&other)));
            return None;
        }
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match rule(&format!("{path}[{i}]"), item, declared, report) {
            Some(rule) => rules.push(rule),
            None => ok = false,
        }
    }
    if let Some((unreachable, catch_all)) = RouteTable::unreachable(&rules) {
        report.error(
            &format!("{path}[{unreachable}]"),
            format!(
                "unreachable: {path}[{catch_all}] before it has no condition and matches every session; \
                 expected rules with conditions first (the frontend's backend already serves sessions no rule matches)"
            ),
        );
        ok = false;
    }
    ok.then_some(rules)
}

fn rule(path: &str, value: &Value, declared: &[&str], report: &mut Report<'_>) -> Option<RouteRule> {
    let mut s = Section::new(path, Some(value), report);
    let sni =
        list(&mut s, "sni", "host names such as \"api.example.com\" or wildcards \"*.api.example.com\"", report, |t| {
            SniPattern::parse(t)
        });
    let alpn = list(&mut s, "alpn", "protocol names of 1 to 255 bytes such as \"h2\" or \"http/1.1\"", report, |t| {
        (!t.is_empty() && t.len() <= 255).then(|| t.to_owned())
    });
    let destination = list(
        &mut s,
        "destination",
        "addresses the client reached: \"IP:PORT\", \"IP\" or \"*:PORT\", such as \"*:443\"",
        report,
        DestinationPattern::parse,
    );
    let source =
        list(&mut s, "source", "networks in CIDR notation such as \"10.0.0.0/8\", or single addresses", report, |t| {
            t.parse::<IpNet>().ok().or_else(|| t.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        });
    let backend =
        s.string("backend", report).filter(|name| known_backend(&format!("{path}.backend"), name, declared, report));
    let overflow = s.optional("overflow");
    let spill_when = spill_when(&mut s, report);
    s.finish(report);
    let overflow = match (overflow, spill_when?) {
        (None, None) => None,
        (Some((key, v)), Some(when)) => match v.kind {
            ValueKind::String(name) if !name.is_empty() => {
                if !known_backend(&key, &name, declared, report) {
                    return None;
                }
                if backend.as_ref() == Some(&name) {
                    report
                        .error(&key, format!("the rule's own backend {name:?}; expected another backend to spill to"));
                    return None;
                }
                Some(Overflow { backend: name, spill_when: when })
            }
            other => {
                report.error(&key, format!("found {}; expected the name of a backend", describe(&other)));
                return None;
            }
        },
        (Some((key, _)), None) => {
            report.error(
                &key,
                format!(
                    "set without {path}.spill_when; expected spill_when.queue_length and/or \
                     spill_when.expected_wait, which say when sessions go to the overflow backend"
                ),
            );
            return None;
        }
        (None, Some(_)) => {
            report.error(
                &format!("{path}.spill_when"),
                format!("set without {path}.overflow; expected overflow = \"BACKEND\", where sessions spill to"),
            );
            return None;
        }
    };
    Some(RouteRule { sni: sni?, alpn: alpn?, destination: destination?, source: source?, backend: backend?, overflow })
}

/// `spill_when`: `Some(None)` when not set; a table with no limit is an error.
fn spill_when(s: &mut Section, report: &mut Report<'_>) -> Option<Option<SpillWhen>> {
    let set = s.optional("spill_when").is_some();
    let mut t = s.sub("spill_when", report);
    let queue_length = t.optional("queue_length").map(|_| t.u32_in("queue_length", 1, 10_000_000, report));
    let expected_wait = t.optional("expected_wait").map(|_| {
        t.duration_set_up_to(
            "expected_wait",
            MAX_EXPECTED_WAIT,
            "every session with any wait ahead would spill; use queue_length = 1 for that",
            report,
        )
    });
    let path = t.path().to_owned();
    t.finish(report);
    if !set {
        return Some(None);
    }
    // Set but invalid (reported): the rule is invalid.
    let (Ok(queue_length), Ok(expected_wait)) = (if_valid(queue_length), if_valid(expected_wait)) else {
        return None;
    };
    let when = SpillWhen { queue_length, expected_wait };
    if when.is_empty() {
        report.error(&path, "no limit set; expected queue_length = N and/or expected_wait = \"200ms\"");
        return None;
    }
    Some(Some(when))
}

/// An optional key read: `Err` when it was set but invalid (reported).
fn if_valid<T>(read: Option<Option<T>>) -> Result<Option<T>, ()> {
    match read {
        None => Ok(None),
        Some(Some(value)) => Ok(Some(value)),
        Some(None) => Err(()),
    }
}

/// An optional list of strings (a single string may hold several
/// separated by commas, as environment variables do), each parsed by
/// `parse`; every item that does not parse is reported by itself.
fn list<T>(
    s: &mut Section,
    key: &'static str,
    expected: &str,
    report: &mut Report<'_>,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<Vec<T>> {
    let Some((path, value)) = s.optional(key) else { return Some(Vec::new()) };
    let texts: Vec<Option<String>> = match &value.kind {
        ValueKind::String(text) => text.split(',').map(|t| Some(t.trim().to_owned())).collect(),
        ValueKind::Array(items) => items
            .iter()
            .map(|v| match &v.kind {
                ValueKind::String(text) => Some(text.trim().to_owned()),
                _ => None,
            })
            .collect(),
        other => {
            report.error(&path, format!("found {}; expected a list of {expected}", describe(other)));
            return None;
        }
    };
    if texts.is_empty() {
        report.error(&path, format!("empty; expected a list of {expected} (or no {key} key: any)"));
        return None;
    }
    let mut out = Vec::with_capacity(texts.len());
    let mut ok = true;
    for text in texts {
        match text.as_deref().and_then(&parse) {
            Some(item) => out.push(item),
            None => {
                let found = text.map_or_else(|| "an item that is not a string".to_owned(), |t| format!("{t:?}"));
                report.error(&path, format!("found {found}; expected {expected}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Whether `name` is a declared backend; reports it under `key` if not.
fn known_backend(key: &str, name: &str, declared: &[&str], report: &mut Report<'_>) -> bool {
    if declared.contains(&name) {
        return true;
    }
    let expected = if declared.is_empty() { "(none defined)".to_owned() } else { declared.join(", ") };
    report.error(key, format!("backend {name:?} is not defined; expected one of the backends: {expected}"));
    false
}

#[cfg(test)]
mod tests {
    use crate::config::{from_toml_str, ConfigErrors};
    use crate::routing::NoClientHello;

    const BACKENDS: &str = "[backends.default.servers.s1]\naddress = \"127.0.0.1:1\"\n\
                            [backends.api.servers.s1]\naddress = \"127.0.0.1:2\"\n\
                            [backends.internal.servers.s1]\naddress = \"127.0.0.1:3\"\n";

    fn with_routes(routes: &str) -> String {
        format!("{BACKENDS}[frontends.tls]\nbind = [\"127.0.0.1:0\"]\nbackend = \"default\"\n{routes}")
    }

    fn errors(toml: &str) -> ConfigErrors {
        from_toml_str(toml).expect_err("invalid")
    }

    #[test]
    fn the_documented_example_reads_and_prints_back() {
        let toml = with_routes(
            "timeout.inspect = \"2s\"\nno_client_hello = \"refuse\"\n\
             [[frontends.tls.routes]]\nsni = [\"api.example.com\", \"*.API.example.com\"]\nbackend = \"api\"\n\
             overflow = \"default\"\nspill_when.queue_length = 10\nspill_when.expected_wait = \"200ms\"\n\
             [[frontends.tls.routes]]\nalpn = [\"h2\"]\nsource = [\"10.0.0.0/8\", \"192.168.1.1\"]\n\
             destination = [\"*:443\"]\nbackend = \"internal\"\n",
        );
        let settings = from_toml_str(&toml).expect("valid");
        let f = &settings.frontends[0];
        assert_eq!(f.routes.len(), 2);
        assert_eq!(f.routes[0].sni[1].to_string(), "*.api.example.com");
        assert_eq!(f.routes[1].source[1].to_string(), "192.168.1.1/32");
        assert_eq!(f.no_client_hello, NoClientHello::Refuse);
        assert_eq!(f.timeout.inspect, std::time::Duration::from_secs(2));
        let printed = settings.to_toml();
        let again = from_toml_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(again.frontends, settings.frontends, "{printed}");
    }

    #[test]
    fn every_bad_rule_key_is_named_at_once() {
        let toml = with_routes(
            "[[frontends.tls.routes]]\nsni = [\"ok.example.com\", \"bad name\"]\nbackend = \"nope\"\n\
             [[frontends.tls.routes]]\nsource = [\"10.0.0.0/33\"]\ndestination = [\"host:1\"]\nbackend = \"api\"\n\
             [[frontends.tls.routes]]\nbackend = \"api\"\ncolour = \"red\"\n\
             [[frontends.tls.routes]]\nalpn = [\"h2\"]\nbackend = \"api\"\noverflow = \"api\"\nspill_when.queue_length = 1\n\
             [[frontends.tls.routes]]\nalpn = [\"h2\"]\nbackend = \"api\"\noverflow = \"internal\"\n",
        );
        let errs = errors(&toml);
        let text = errs.to_string();
        for key in [
            "frontends.tls.routes[0].sni",
            "frontends.tls.routes[0].backend",
            "frontends.tls.routes[1].source",
            "frontends.tls.routes[1].destination",
            "frontends.tls.routes[2].colour",
            "frontends.tls.routes[4].overflow",
        ] {
            assert!(errs.mentions(key), "{key} in {text}");
        }
        assert!(text.contains("\"bad name\"") && text.contains("\"10.0.0.0/33\""), "{text}");
        assert!(text.contains("from file") || text.contains("from inline"), "names the layer: {text}");
        assert!(!text.contains("no layer"), "every key has its layer: {text}");
    }

    #[test]
    fn a_rule_after_a_catch_all_is_unreachable() {
        let toml = with_routes(
            "[[frontends.tls.routes]]\nbackend = \"api\"\n[[frontends.tls.routes]]\nsni = [\"a.b\"]\nbackend = \"internal\"\n",
        );
        let errs = errors(&toml);
        assert!(errs.mentions("frontends.tls.routes[1]"), "{errs}");
        assert!(errs.to_string().contains("unreachable"), "{errs}");
    }

    #[test]
    fn overflow_to_the_same_backend_or_without_limits_is_refused() {
        let same = with_routes(
            "[[frontends.tls.routes]]\nsni = [\"a.b\"]\nbackend = \"api\"\noverflow = \"api\"\nspill_when.queue_length = 2\n",
        );
        assert!(errors(&same).mentions("frontends.tls.routes[0].overflow"));
        let no_limit = with_routes("[[frontends.tls.routes]]\nsni = [\"a.b\"]\nbackend = \"api\"\nspill_when = {}\n");
        assert!(errors(&no_limit).mentions("frontends.tls.routes[0].spill_when"), "{}", errors(&no_limit));
    }

    #[test]
    fn routes_are_not_a_default() {
        let toml = format!(
            "{BACKENDS}[defaults.frontend]\nroutes = []\n[frontends.tls]\nbind = [\"127.0.0.1:0\"]\nbackend = \"default\"\n"
        );
        assert!(errors(&toml).mentions("defaults.frontend.routes"));
    }
}
