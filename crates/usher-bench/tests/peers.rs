//! The peers' plumbing: a missing nginx is skipped with a clear note.

use std::path::PathBuf;

use usher_bench::proxies::ProxyKind;
use usher_bench::{Harness, Options};

fn quick() -> Options {
    Options::new(PathBuf::from(env!("CARGO_BIN_EXE_usher-bench"))).quick()
}

#[test]
fn missing_nginx_is_skipped_with_a_note() {
    let mut opts = quick();
    opts.nginx = PathBuf::from("/nonexistent/sbin/nginx");
    let harness = Harness::new(opts).expect("harness");
    assert!(!harness.proxies.contains(&ProxyKind::Nginx), "{:?}", harness.proxies);
    assert!(harness.proxies.contains(&ProxyKind::Usher));
    assert_eq!(harness.nginx_version, None);
    let note = harness.notes.iter().find(|n| n.contains("nginx")).expect("a note about nginx");
    assert!(note.contains("/nonexistent/sbin/nginx") && note.contains("apt-get install"), "{note}");
}
