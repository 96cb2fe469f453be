//! The watchdog reports each listener as OPEN /
//! PAUSED(reason) / FULL, the global count, the fd budget, stress state and
//! counters — driven here through its real mailbox.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use usher_core::admission::fd_budget::FdBudget;
use usher_core::admission::watchdog::{GetStatus, ListenerInfo, ResourceWatchdog, WatchdogConfig};
use usher_core::admission::{AdmissionConfig, ListenerState, PauseReason};
use usher_core::admission::{Admit, AdmitGrant, SessionClosed};
use usher_core::ids::ListenerId;

fn admit(w: &Addr<ResourceWatchdog>, listener: usize) -> oneshot::Receiver<AdmitGrant> {
    let (tx, rx) = oneshot::channel();
    w.do_send(Admit { listener: ListenerId(listener), want: 1, reply: tx });
    rx
}

#[test]
fn status_reports_listener_states_budget_stress_and_counters() {
    actix_rt::System::new().block_on(async {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let config = WatchdogConfig {
            admission: AdmissionConfig::from_limits(100, &[(1, 0), (0, 0)], &[(0, 0), (1, 1)]),
            listeners: vec![
                ListenerInfo {
                    id: ListenerId(0),
                    frontend: "small".into(),
                    address: "127.0.0.1:1".parse().unwrap(),
                    closed: false,
                },
                ListenerInfo {
                    id: ListenerId(1),
                    frontend: "other".into(),
                    address: "127.0.0.1:2".parse().unwrap(),
                    closed: false,
                },
            ],
            frontend_names: vec!["small".into(), "other".into()],
            stress_cooldowns: vec![Some(Duration::from_secs(60)), None],
            maxconn_recheck: Duration::from_secs(3600),
            shortage_recheck: Duration::from_millis(100),
            warn_interval: Duration::from_secs(60),
            fd_budget: Some(FdBudget::compute(1024, 4096, 10)),
            maxconn_from_fd_budget: false,
        };
        let w = ResourceWatchdog::new(config, log).start();

        assert_eq!(admit(&w, 0).await.unwrap(), AdmitGrant { credits: 1, stress: false });
        let parked = admit(&w, 0);
        assert_eq!(admit(&w, 1).await.unwrap().credits, 1);
        let full = admit(&w, 1);

        let status = w.send(GetStatus).await.unwrap();
        assert_eq!(status.global_used, 2);
        assert_eq!(status.global_max, 100);
        assert_eq!(status.fd_budget.unwrap().sessions, (1024 - 10 - 16) / 2);
        assert_eq!(status.listeners[0].state, ListenerState::Paused(PauseReason::Frontend));
        assert_eq!(status.listeners[1].state, ListenerState::Full);
        // The admin API and the logs show them as text.
        assert_eq!(status.listeners[0].state.to_string(), "PAUSED(frontend maxconn)");
        assert_eq!(status.listeners[1].state.to_string(), "FULL");
        assert_eq!(serde_json::to_value(status.listeners[0].state).unwrap(), "PAUSED(frontend maxconn)");
        assert_eq!(status.listeners[0].sessions, 1);
        assert_eq!(status.stressed, vec!["small".to_owned()], "stress only where enabled");
        assert!(status.counters.limit_reached >= 2);

        // A release resumes the paused listener, in stress now.
        w.do_send(SessionClosed { listener: ListenerId(0) });
        assert_eq!(parked.await.unwrap(), AdmitGrant { credits: 1, stress: true });
        w.do_send(SessionClosed { listener: ListenerId(1) });
        assert_eq!(full.await.unwrap().credits, 1);
        let status = w.send(GetStatus).await.unwrap();
        assert_eq!(status.listeners[0].state, ListenerState::Open);
        assert_eq!(status.listeners[1].state, ListenerState::Open);
        assert_eq!(status.listeners[1].state.to_string(), "OPEN");
    });
}
