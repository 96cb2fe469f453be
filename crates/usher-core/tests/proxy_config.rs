//! PROXY protocol keys: `frontends.X.accept_proxy`, `frontends.X.timeout.proxy`
//! and `servers.X.send_proxy` — their defaults, overrides, errors and the
//! `usher check` round trip.

use std::time::Duration;

use usher_core::config::{from_toml_str, ProxyVersion};

const BASE: &str = r#"
[frontends.web]
bind = ["127.0.0.1:0"]
backend = "app"

[backends.app.servers.s1]
address = "127.0.0.1:9"
"#;

#[test]
fn defaults_are_off() {
    let s = from_toml_str(BASE).expect("valid");
    let f = s.frontend("web").unwrap();
    assert!(!f.accept_proxy);
    assert_eq!(f.timeout.proxy, Duration::from_secs(5));
    assert_eq!(s.backend("app").unwrap().servers[0].send_proxy, ProxyVersion::None);
}

#[test]
fn keys_set_per_entry_and_in_defaults() {
    let doc = format!(
        "{BASE}\n[frontends.web.timeout]\nproxy = \"250ms\"\n\
         [backends.app.servers.s2]\naddress = \"127.0.0.1:10\"\nsend_proxy = \"v1\"\n\
         [defaults.frontend]\naccept_proxy = true\n[defaults.server]\nsend_proxy = \"v2\"\n"
    );
    let s = from_toml_str(&doc).expect("valid");
    let f = s.frontend("web").unwrap();
    assert!(f.accept_proxy);
    assert_eq!(f.timeout.proxy, Duration::from_millis(250));
    let servers = &s.backend("app").unwrap().servers;
    assert_eq!((servers[0].send_proxy, servers[1].send_proxy), (ProxyVersion::V2, ProxyVersion::V1));

    // `usher check` prints them, and its output loads back the same.
    let printed = s.to_toml();
    assert!(printed.contains("send_proxy = \"v1\"") && printed.contains("accept_proxy = true"), "{printed}");
    assert_eq!(from_toml_str(&printed).expect("printed loads").to_toml(), printed);
}

#[test]
fn bad_values_name_the_key_and_the_choices() {
    let doc = format!(
        "{BASE}send_proxy = \"v3\"\n\
         [frontends.web.timeout]\nproxy = \"soon\"\n"
    )
    .replace("backend = \"app\"\n", "backend = \"app\"\naccept_proxy = \"maybe\"\n");
    let errors = from_toml_str(&doc).expect_err("invalid");
    let shown = errors.to_string();
    for needle in [
        "frontends.web.accept_proxy",
        "backends.app.servers.s1.send_proxy",
        "\"none\", \"v1\", \"v2\"",
        "frontends.web.timeout.proxy",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
    }
}

/// A client still sending its header holds a place of the frontend's
/// maxconn: `timeout.proxy` is never "no limit" and never long.
#[test]
fn timeout_proxy_is_set_and_at_most_a_minute() {
    let with = |value: &str| format!("{BASE}\n[frontends.web.timeout]\nproxy = \"{value}\"\n");
    for value in ["0", "61s", "500000000000y"] {
        let errors = from_toml_str(&with(value)).expect_err(value);
        let err = errors.0.iter().find(|e| e.key == "frontends.web.timeout.proxy").expect("names the key");
        assert_eq!(errors.0.len(), 1, "{errors}");
        for needle in [format!("{value:?}"), "from 1ms to 1m".into(), "maxconn".into()] {
            assert!(err.problem.contains(&needle), "{value}: {needle:?} missing from {:?}", err.problem);
        }
        assert_eq!(err.origin, "inline document #1");
    }
    let errors = from_toml_str(&format!("{BASE}\n[defaults.frontend.timeout]\nproxy = 0\n")).expect_err("0 default");
    assert!(errors.mentions("defaults.frontend.timeout.proxy"), "{errors}");
    let s = from_toml_str(&with("1m")).expect("a minute is allowed");
    assert_eq!(s.frontend("web").unwrap().timeout.proxy, Duration::from_secs(60));
}
