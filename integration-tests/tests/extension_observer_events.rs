//! The observers' event stream beyond ended sessions, on real sockets, to
//! an actor subscribed through a `Recipient`: server state changes,
//! listeners paused and resumed with their reason, stress entered and
//! left, reloads done (with their typed changes) and rejected. A stalled
//! actor loses events, counted, and never slows a session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel as std_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use integration_tests::{request, seated, Behavior, ConfigFile, TestBackend, TestBroker, DEADLINE};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use usher_core::extension::{AdmissionEvent, Event, Observed, OpState, PauseReason, ReloadChange, Subscription};
use usher_core::Extensions;

/// Hands every event to the test.
struct Forward(UnboundedSender<Event>);

impl Actor for Forward {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Observed> for Forward {
    type Result = ();

    fn handle(&mut self, Observed(event): Observed, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

/// The next event `wanted` accepts, skipping others.
async fn next(events: &mut UnboundedReceiver<Event>, what: &str, wanted: impl Fn(&Event) -> bool) -> Event {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.recv().await.expect("the observer lives");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} event within {DEADLINE:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_observer_hears_server_listener_stress_and_reload_events() {
    let server = TestBackend::start(Behavior::Echo);
    let checked = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let checked_addr = checked.local_addr().expect("addr");
    let config = |weight: u32| {
        format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nmaxconn = 1\n\
             [frontends.web.timeout]\nclient = \"1h\"\n\
             [frontends.web.stress]\ncooldown = \"300ms\"\n\
             [frontends.web.stress.timeout]\nclient = \"1h\"\nqueue = \"1h\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\nweight = {weight}\n\
             [backends.checked.servers.c1]\naddress = \"{checked_addr}\"\n\
             [backends.checked.servers.c1.check]\nenabled = true\ninter = \"50ms\"\nfall = 1\nrise = 1\n",
            server.addr
        )
    };
    let file = ConfigFile::new("observer-events", &config(1));
    let path = file.0.clone();
    let (tx, mut events) = unbounded_channel();
    let broker = TestBroker::start_with(&config(1), move |_| {
        let observer = Forward(tx).start();
        Extensions {
            observers: vec![Subscription::actor("forward", observer.recipient())],
            reload: Some(Box::new(move || {
                usher_core::config::load(&usher_core::config::ConfigSources::files(vec![path.clone()]))
            })),
            ..Extensions::default()
        }
    });

    // The checked server stops accepting: its checks fail and it goes down.
    drop(checked);
    let down = next(
        &mut events,
        "server down",
        |e| matches!(e, Event::ServerStateChanged { change, .. } if change.to == OpState::Down),
    )
    .await;
    let Event::ServerStateChanged { backend, change } = down else { unreachable!() };
    assert_eq!((&*backend, change.server.as_str(), change.to), ("checked", "c1", OpState::Down), "{change:?}");
    assert_ne!(change.from, OpState::Down);
    assert!(!change.reason.is_empty());

    // Reaching the frontend's maxconn of 1 enters stress (it has a
    // cooldown) and pauses the listener: the next client waits in the backlog.
    let addr = broker.addr("web");
    let first = seated(addr, b'x').await;
    let stress =
        next(&mut events, "stress", |e| matches!(e, Event::Admission(AdmissionEvent::StressEntered { .. }))).await;
    assert!(
        matches!(&stress, Event::Admission(AdmissionEvent::StressEntered { frontend, cause: PauseReason::Frontend }) if frontend == "web"),
        "{stress:?}"
    );
    let waiting = tokio::spawn(request(addr, b"queued"));
    let paused =
        next(&mut events, "listener paused", |e| matches!(e, Event::Admission(AdmissionEvent::ListenerPaused { .. })))
            .await;
    assert!(
        matches!(&paused, Event::Admission(AdmissionEvent::ListenerPaused { frontend, address, reason: PauseReason::Frontend })
            if frontend == "web" && *address == addr),
        "{paused:?}"
    );
    drop(first);
    let resumed = next(&mut events, "listener resumed", |e| {
        matches!(e, Event::Admission(AdmissionEvent::ListenerResumed { .. }))
    })
    .await;
    assert!(
        matches!(&resumed, Event::Admission(AdmissionEvent::ListenerResumed { frontend, .. }) if frontend == "web")
    );
    assert_eq!(waiting.await.expect("join").expect("served once resumed"), b"queued");
    let left =
        next(&mut events, "stress left", |e| matches!(e, Event::Admission(AdmissionEvent::StressLeft { .. }))).await;
    assert!(matches!(&left, Event::Admission(AdmissionEvent::StressLeft { frontend }) if frontend == "web"));

    // A reload that changes a server: done, with the typed change.
    file.write(&config(5));
    broker.handle.reload().await.expect("reload applies");
    let done = next(&mut events, "reload done", |e| matches!(e, Event::ReloadDone(_))).await;
    let Event::ReloadDone(summary) = done else { unreachable!() };
    assert!(
        summary.changes.contains(&ReloadChange::ServerChanged { backend: "app".into(), server: "s1".into() }),
        "{:?}",
        summary.changes
    );

    // A bad file: rejected, with its errors.
    file.write("[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"nowhere\"\n");
    broker.handle.reload().await.expect_err("a bad configuration is refused");
    let rejected = next(&mut events, "reload rejected", |e| matches!(e, Event::ReloadRejected(_))).await;
    let Event::ReloadRejected(error) = rejected else { unreachable!() };
    assert!(error.to_string().contains("nowhere"), "{error}");
    broker.stop().await.expect("stop");
}

/// Takes an event, then waits for a permit before taking the next; it runs
/// on an arbiter of its own so that its stalls stall nothing else.
struct Stalled {
    permits: Receiver<()>,
    seen: Arc<AtomicU64>,
}

impl Actor for Stalled {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(2);
    }
}

impl Handler<Observed> for Stalled {
    type Result = ();

    fn handle(&mut self, _: Observed, _: &mut Context<Self>) {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let _ = self.permits.recv();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_actor_observer_loses_events_and_never_slows_a_session() {
    const SESSIONS: u64 = 12;
    let server = TestBackend::start(Behavior::Echo);
    let (permit, permits) = std_channel();
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    let broker = TestBroker::start_with(
        &format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\n",
            server.addr
        ),
        move |_| {
            let arbiter = Arbiter::new();
            let stalled = Stalled::start_in_arbiter(&arbiter.handle(), move |_| Stalled { permits, seen: counted });
            Extensions { observers: vec![Subscription::actor("stalled", stalled.recipient())], ..Extensions::default() }
        },
    );

    let started = Instant::now();
    for i in 0..SESSIONS {
        assert_eq!(request(broker.addr("web"), b"hi").await.expect("served"), b"hi", "session {i}");
    }
    let took = started.elapsed();
    println!("{SESSIONS} sessions behind a stalled actor observer: {took:?}");
    assert!(took < Duration::from_secs(5), "sessions waited for the observer: {took:?}");
    broker.logs.wait_sessions(SESSIONS as usize).await;

    let lost = broker.handle.stats().await.expect("stats").hooks["stalled"].lost;
    assert!(lost > 0, "a mailbox of 2 behind a stalled actor lost nothing of {SESSIONS} events");
    for _ in 0..SESSIONS {
        let _ = permit.send(());
    }
    let deadline = Instant::now() + DEADLINE;
    while seen.load(Ordering::SeqCst) + lost < SESSIONS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst) + lost, SESSIONS, "every event is either delivered or counted lost");
    broker.stop().await.expect("stop");
}
