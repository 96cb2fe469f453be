//! `[cluster]`: read and checked like every other section, so `usher check`
//! names each bad key.

use std::time::Duration;

use config::{Map, Value, ValueKind};

use super::reader::{Report, Section};
use super::settings::{ClusterFallback, ClusterSettings};

/// Whether this build can join a cluster: the etcd client is a cargo
/// feature, as it needs `protoc` to build.
pub const CLUSTER_BUILT_IN: bool = cfg!(feature = "cluster");

/// `Some(None)`: valid, cluster mode off.
pub(super) fn cluster(root: &Map<String, Value>, report: &mut Report<'_>) -> Option<Option<ClusterSettings>> {
    let mut s = Section::new("cluster", root.get("cluster"), report);
    let etcd = s.get(
        "etcd",
        "a list of etcd endpoints such as [\"http://127.0.0.1:2379\"], or [] to run alone",
        report,
        |v| {
            let items = super::reader::string_list(v)?;
            items.iter().all(|e| endpoint_ok(e)).then_some(items)
        },
    );
    let name = s.text("name", report);
    let prefix = s.get("prefix", "a key prefix starting with \"/\" such as \"/usher\"", report, |v| match v {
        ValueKind::String(p) if p.starts_with('/') && p.len() > 1 && !p.ends_with('/') => Some(p.clone()),
        _ => None,
    });
    let lease_ttl = s.duration("lease_ttl", report);
    let period = s.duration("period", report);
    let expected_instances = s.u32_in("expected_instances", 0, 1024, report);
    let fallback = s.choice("fallback", &[("even", ClusterFallback::Even), ("none", ClusterFallback::None)], report);
    s.finish(report);
    let (etcd, name, lease_ttl, period) = (etcd?, name?, lease_ttl?, period?);
    if etcd.is_empty() {
        return Some(None);
    }
    let mut ok = true;
    if !CLUSTER_BUILT_IN {
        report.error(
            "cluster.etcd",
            "set, but this usher was built without cluster mode; expected [] here, or a build with \
             `cargo build --release -p usher --features cluster` (needs protoc: apt-get install protobuf-compiler)",
        );
        ok = false;
    }
    let name = if name.trim().is_empty() { host_name() } else { Some(name.trim().to_owned()) };
    let name = match name {
        Some(n) if n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => Some(n),
        _ => {
            report.error(
                "cluster.name",
                "expected a name unique in the cluster made of letters, digits, '-', '_' or '.' \
                 (empty = the host name, which could not be used)",
            );
            None
        }
    };
    if !(Duration::from_millis(100)..=Duration::from_secs(10)).contains(&period) {
        report.error("cluster.period", format!("{period:?} is out of range; expected 100ms to 10s"));
        ok = false;
    }
    if lease_ttl < period * 3 || lease_ttl > Duration::from_secs(300) {
        report.error(
            "cluster.lease_ttl",
            format!(
                "{lease_ttl:?} is out of range; expected at least three periods (cluster.period = {period:?}), \
                 so one lost keep-alive does not end the lease, and at most 5m"
            ),
        );
        ok = false;
    }
    if lease_ttl.subsec_nanos() != 0 {
        report.error("cluster.lease_ttl", "expected whole seconds (etcd leases count in seconds)");
        ok = false;
    }
    let (name, prefix, expected_instances, fallback) = (name?, prefix?, expected_instances?, fallback?);
    ok.then_some(Some(ClusterSettings { etcd, name, prefix, lease_ttl, period, expected_instances, fallback }))
}

fn endpoint_ok(endpoint: &str) -> bool {
    endpoint.strip_prefix("http://").is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// The kernel's host name (Linux), the usual name of a broker instance.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::config::from_toml_str;

    fn errors(toml: &str) -> String {
        from_toml_str(toml).expect_err("invalid").to_string()
    }

    #[test]
    fn off_by_default() {
        assert_eq!(from_toml_str("").expect("defaults").cluster, None);
    }

    #[test]
    fn every_bad_key_is_named() {
        let text = errors("[cluster]\netcd = [\"127.0.0.1:2379\"]\n");
        assert!(text.contains("cluster.etcd") && text.contains("http://127.0.0.1:2379"), "{text}");
        let text = errors(
            "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"a b\"\nperiod = \"1s\"\nlease_ttl = \"2s\"\nfallback = \"half\"\n",
        );
        for key in ["cluster.name", "cluster.lease_ttl", "cluster.fallback"] {
            assert!(text.contains(key), "{key} in {text}");
        }
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn a_valid_section_reads_back() {
        let s = from_toml_str("[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"u1\"\nexpected_instances = 3\n")
            .expect("valid");
        let c = s.cluster.clone().expect("cluster on");
        assert_eq!((c.name.as_str(), c.expected_instances, c.prefix.as_str()), ("u1", 3, "/usher"));
        assert!(s.to_toml().contains("expected_instances = 3"));
    }
}
