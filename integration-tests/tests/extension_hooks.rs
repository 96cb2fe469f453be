//! Session hooks on real sockets: routing, denial, timeouts, failures, and
//! the core's limits holding whatever a hook answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{request, seated, Behavior, TestBackend, TestBroker};
use usher_core::extension::{AccessRecord, Answer, Decision, HookContext, QueuePriority, RouteTo};
use usher_core::{HookRegistry, ReloadChange, SessionHook};

/// Routes every client to `backend`, and counts its other calls.
#[derive(Default)]
struct RouteAll {
    backend: &'static str,
    connected: AtomicU64,
    ended: Arc<AtomicU64>,
}

impl SessionHook for RouteAll {
    fn on_accept(&self, session: &mut HookContext) -> Answer {
        session.state = Some(Box::new(7u32));
        let route = RouteTo {
            backend: Some(self.backend.into()),
            priority: Some(QueuePriority { class: 1, offset_ms: 0 }),
            pin: None,
        };
        Answer::Now(Decision::Route(route))
    }

    fn after_connect(&self, session: &mut HookContext) {
        assert!(session.server.is_some());
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    fn on_end(&self, session: &mut HookContext, record: &AccessRecord, _: usher_core::Termination) {
        // The state set on accept is there at the end.
        let state = session.state.as_ref().and_then(|s| s.downcast_ref::<u32>());
        if state == Some(&7) && &*record.backend == self.backend {
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn two_backends(a: std::net::SocketAddr, b: std::net::SocketAddr, hooks_toml: &str) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"main\"\nhooks = [\"h\"]\n\
         [backends.main.servers.a]\naddress = \"{a}\"\n\
         [backends.other.servers.b]\naddress = \"{b}\"\n{hooks_toml}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_hook_chooses_the_backend_and_sees_every_phase() {
    let (main, other) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let ended = Arc::new(AtomicU64::new(0));
    let mut hooks = HookRegistry::default();
    hooks.hook("h", RouteAll { backend: "other", ended: ended.clone(), ..RouteAll::default() });
    let broker = TestBroker::start_with_hooks(&two_backends(main.addr, other.addr, ""), hooks);

    assert_eq!(request(broker.addr("web"), b"hi").await.expect("reply"), b"hi");
    let record = broker.logs.wait_for("session", |r| r.is_session()).await;
    assert_eq!(record.get("backend"), "other");
    assert_eq!((main.accepted(), other.accepted()), (0, 1));
    let deadline = tokio::time::Instant::now() + integration_tests::DEADLINE;
    while ended.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ended.load(Ordering::Relaxed), 1, "on_end saw the record and the state set on accept");
    let stats = broker.handle.stats().await.expect("stats");
    assert_eq!(stats.hooks["h"].routed, 1);
}

struct Deny;

impl SessionHook for Deny {
    fn on_accept(&self, _: &mut HookContext) -> Answer {
        Answer::Now(Decision::Deny { reason: "not today".into() })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denying_hook_ends_the_session_pr_before_any_server() {
    let (main, other) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let mut hooks = HookRegistry::default();
    hooks.hook("h", Deny);
    let broker = TestBroker::start_with_hooks(&two_backends(main.addr, other.addr, ""), hooks);
    let reply = request(broker.addr("web"), b"hi").await.unwrap_or_default();
    assert!(reply.is_empty());
    let record = broker.logs.wait_for("session", |r| r.is_session()).await;
    assert_eq!(record.termination(), "PR");
    assert_eq!(main.accepted() + other.accepted(), 0);
}

/// Panics on the first session only.
#[derive(Default)]
struct PanicsOnce(AtomicBool);

impl SessionHook for PanicsOnce {
    fn on_accept(&self, _: &mut HookContext) -> Answer {
        if !self.0.swap(true, Ordering::Relaxed) {
            panic!("hook bug");
        }
        Answer::Now(Decision::Pass)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_ends_its_session_ir_and_the_broker_goes_on() {
    let (main, other) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let mut hooks = HookRegistry::default();
    hooks.hook("h", PanicsOnce::default());
    let broker = TestBroker::start_with_hooks(&two_backends(main.addr, other.addr, ""), hooks);
    let _ = request(broker.addr("web"), b"first").await;
    let record = broker.logs.wait_for("session", |r| r.is_session()).await;
    assert_eq!(record.termination(), "IR");
    broker.logs.wait_for("hook failed", |r| r.get("hook") == "h").await;
    assert_eq!(request(broker.addr("web"), b"second").await.expect("served"), b"second");
    assert_eq!(broker.handle.stats().await.expect("stats").hooks["h"].failures, 1);
}

/// Answers later, never.
struct Stalled;

impl SessionHook for Stalled {
    fn on_accept(&self, _: &mut HookContext) -> Answer {
        Answer::Later(Box::pin(std::future::pending()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_does_not_answer_in_time_is_passed_or_refuses_as_configured() {
    for (on_timeout, served) in [("pass", true), ("refuse", false)] {
        let (main, other) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
        let mut hooks = HookRegistry::default();
        hooks.hook("h", Stalled);
        let conf = format!("[hooks.h]\ntimeout = \"50ms\"\non_timeout = \"{on_timeout}\"\n");
        let broker = TestBroker::start_with_hooks(&two_backends(main.addr, other.addr, &conf), hooks);
        let started = std::time::Instant::now();
        let reply = request(broker.addr("web"), b"hi").await.unwrap_or_default();
        println!("on_timeout = {on_timeout}: answered in {:?}", started.elapsed());
        assert_eq!(reply == b"hi", served, "on_timeout = {on_timeout}");
        let record = broker.logs.wait_for("session", |r| r.is_session()).await;
        assert_eq!(record.termination(), if served { "--" } else { "PR" });
        assert_eq!(broker.handle.stats().await.expect("stats").hooks["h"].timeouts, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_cannot_put_a_server_over_maxconn() {
    let (main, other) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let mut hooks = HookRegistry::default();
    hooks.hook("h", RouteAll { backend: "other", ..RouteAll::default() });
    let toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"main\"\nhooks = [\"h\"]\n\
         [backends.main.servers.a]\naddress = \"{}\"\n\
         [backends.other]\ntimeout.queue = \"100ms\"\n\
         [backends.other.servers.b]\naddress = \"{}\"\nmaxconn = 1\n",
        main.addr, other.addr
    );
    let broker = TestBroker::start_with_hooks(&toml, hooks);
    let held = seated(broker.addr("web"), b'x').await;
    let reply = request(broker.addr("web"), b"second").await.unwrap_or_default();
    assert!(reply.is_empty(), "served over maxconn");
    let record = broker.logs.wait_for("session", |r| r.is_session()).await;
    assert_eq!(record.termination(), "sQ");
    assert_eq!(other.peak(), 1);
    drop(held);
}

#[test]
fn unknown_hooks_and_bad_hook_options_are_refused_with_key_and_layer() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Options {
        class: i32,
    }
    struct Nothing;
    impl SessionHook for Nothing {}
    let mut hooks = HookRegistry::default();
    hooks.hook_with("typed", |_: Options| Nothing);
    let toml = "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"main\"\nhooks = [\"typed\", \"nope\"]\n\
                [backends.main.servers.a]\naddress = \"127.0.0.1:1\"\n\
                [hooks.typed]\nclass = \"high\"\ntimeout = \"soon\"\n";
    let err =
        usher_core::config::load_with(&usher_core::config::ConfigSources::inline(toml), &hooks).expect_err("refused");
    println!("{err}");
    assert!(err.mentions("frontends.web.hooks"), "{err}");
    assert!(err.mentions("hooks.typed.class"), "{err}");
    assert!(err.mentions("hooks.typed.timeout"), "{err}");
    assert!(err.0.iter().all(|e| e.origin.contains("inline document")), "{err}");
    // Without the registry, any hook name is refused.
    assert!(usher_core::config::from_toml_str(toml).expect_err("refused").mentions("frontends.web.hooks"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_take_up_and_drop_hooks_on_reload() {
    let (main, other) = (TestBackend::start(Behavior::Echo), TestBackend::start(Behavior::Echo));
    let mut hooks = HookRegistry::default();
    hooks.hook("h", Deny);
    let without = two_backends(main.addr, other.addr, "").replace("hooks = [\"h\"]\n", "");
    let broker = TestBroker::start_with_hooks(&without, hooks.clone());
    assert_eq!(request(broker.addr("web"), b"one").await.expect("served"), b"one");

    let with = two_backends(main.addr, other.addr, "[hooks.h]\ntimeout = \"2s\"\n");
    let settings = usher_core::config::load_with(&usher_core::config::ConfigSources::inline(&with), &hooks)
        .expect("valid configuration");
    let summary = broker.handle.reload_with(settings).await.expect("reloaded");
    assert!(summary.changes.contains(&ReloadChange::HookAdded { hook: "h".into() }), "{:?}", summary.changes);
    assert!(request(broker.addr("web"), b"two").await.unwrap_or_default().is_empty(), "the hook runs after the reload");
    let record = broker.logs.wait_for("session", |r| r.termination() == "PR").await;
    assert_eq!(record.get("frontend"), "web");

    // Only the hook's options change: the reload says so.
    let slower = two_backends(main.addr, other.addr, "[hooks.h]\ntimeout = \"3s\"\n");
    let settings = usher_core::config::load_with(&usher_core::config::ConfigSources::inline(&slower), &hooks)
        .expect("valid configuration");
    let summary = broker.handle.reload_with(settings).await.expect("reloaded");
    assert_eq!(summary.changes, [ReloadChange::HookChanged { hook: "h".into() }]);

    let settings = usher_core::config::load_with(&usher_core::config::ConfigSources::inline(&without), &hooks)
        .expect("valid configuration");
    let summary = broker.handle.reload_with(settings).await.expect("reloaded");
    assert!(summary.changes.contains(&ReloadChange::HookRemoved { hook: "h".into() }), "{:?}", summary.changes);
    assert_eq!(request(broker.addr("web"), b"three").await.expect("served again"), b"three");
}
