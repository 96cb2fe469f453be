//! Observers on real sockets: a stalled observer loses events, counted in
//! the stats, and never slows a session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{request, Behavior, TestBackend, TestBroker, DEADLINE};
use usher_core::extension::{Event, Observer, Subscription};
use usher_core::Extensions;

/// Takes an event, then waits for a permit before taking the next.
struct Stalled {
    permits: Receiver<()>,
    seen: Arc<AtomicU64>,
}

impl Observer for Stalled {
    fn observe(&mut self, event: Event) {
        assert!(matches!(event, Event::SessionEnded { .. }));
        self.seen.fetch_add(1, Ordering::SeqCst);
        let _ = self.permits.recv();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_observer_loses_events_and_never_slows_a_session() {
    const SESSIONS: u64 = 8;
    const MAILBOX: usize = 2;
    let server = TestBackend::start(Behavior::Echo);
    let (permit, permits) = channel();
    let seen = Arc::new(AtomicU64::new(0));
    let observer = Stalled { permits, seen: seen.clone() };
    let subscription = Mutex::new(Some(Subscription::new("stalled", observer).with_mailbox(MAILBOX)));
    let broker = TestBroker::start_with(
        &format!(
            "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
             [backends.app.servers.s1]\naddress = \"{}\"\n",
            server.addr
        ),
        move |_| Extensions {
            observers: subscription.lock().unwrap().take().into_iter().collect(),
            ..Extensions::default()
        },
    );

    let started = Instant::now();
    for i in 0..SESSIONS {
        assert_eq!(request(broker.addr("web"), b"hi").await.expect("served"), b"hi", "session {i}");
    }
    let took = started.elapsed();
    println!("{SESSIONS} sessions behind a stalled observer: {took:?}");
    assert!(took < Duration::from_secs(5), "sessions waited for the observer: {took:?}");
    broker.logs.wait_sessions(SESSIONS as usize).await;

    // The observer holds one event, its mailbox MAILBOX more: the rest are lost.
    let lost = broker.handle.stats().await.expect("stats").hooks["stalled"].lost;
    assert!(lost >= SESSIONS - 1 - MAILBOX as u64, "lost {lost}");
    for _ in 0..SESSIONS {
        let _ = permit.send(());
    }
    let deadline = Instant::now() + DEADLINE;
    while seen.load(Ordering::SeqCst) + lost < SESSIONS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst) + lost, SESSIONS, "every event is either delivered or counted lost");
}
