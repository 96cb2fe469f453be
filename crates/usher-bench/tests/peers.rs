//! The peers' plumbing: a missing nginx is skipped with a clear note, and
//! the `cost` case counts CPU and system calls per session for each proxy
//! that runs (or says why strace could not count them).

use std::path::PathBuf;

use usher_bench::proxies::ProxyKind;
use usher_bench::{Case, Harness, Options};

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

#[test]
fn cost_counts_cpu_context_switches_and_system_calls_per_session() {
    let harness = Harness::new(quick()).expect("harness");
    let results = harness.run(Case::Cost);
    let [r] = &results[..] else { panic!("one result expected, got {}", results.len()) };
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(!r.proxies.contains(&ProxyKind::Direct), "direct has no proxy to measure");
    for &proxy in &r.proxies {
        let cpu = r.values(proxy, "proxy CPU µs/session");
        assert_eq!(cpu.len(), 1, "{}: {cpu:?}", proxy.name());
        // CPU comes in 10 ms ticks: a 300-session batch may see none.
        assert!(cpu[0] >= 0.0, "{}: {cpu:?}", proxy.name());
        assert_eq!(r.values(proxy, "errors"), vec![0.0], "{}", proxy.name());
        // Every session wakes the proxy at least once; NaN would mean /proc
        // could not be read.
        let switches = r.values(proxy, "context switches/session");
        println!("{}: {switches:?} context switches/session", proxy.name());
        assert!(switches.len() == 1 && switches[0] > 0.0, "{}: {switches:?}", proxy.name());
        let calls = r.values(proxy, "system calls/session");
        if calls.is_empty() {
            // strace absent or ptrace not permitted: the note says which.
            assert!(r.notes.iter().any(|n| n.starts_with("no system call counts")), "{:?}", r.notes);
        } else {
            // accept, connect, socket, reads, writes and closes at the least.
            println!("{}: {:.1} system calls/session", proxy.name(), calls[0]);
            assert!(calls[0] >= 6.0, "{}: {calls:?}", proxy.name());
        }
    }
}
