//! usher inside the bench process, on a thread of its own: for the cases
//! that need its handle (a reload with given settings, a `/stats` read)
//! or its actors' thread (its CPU time).

use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context as _};

/// How long the broker may take to start.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running broker; [`stop`](Self::stop) ends it.
pub struct InProcess {
    pub handle: usher_core::BrokerHandle,
    /// Its thread's id (with one worker: the actors' and the sessions').
    pub tid: i32,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Starts usher on `settings` and `listeners` on a new thread, once
    /// `on_thread` has run there (to pin it: the threads usher starts from
    /// it inherit its CPUs).
    pub fn start(
        settings: usher_core::Settings,
        listeners: usher_core::BoundListeners,
        log: slog::Logger,
        on_thread: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<InProcess> {
        let (started, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            on_thread()?;
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            let extensions = usher_core::Extensions {
                on_start: Some(Box::new(move |handle: usher_core::BrokerHandle| {
                    let _ = started.send((handle, tid));
                })),
                ..usher_core::Extensions::default()
            };
            actix_rt::System::new().block_on(usher_core::run(settings, listeners, log, extensions, async {
                let _ = stopped.await;
            }))
        });
        match handle.recv_timeout(START_LIMIT) {
            Ok((handle, tid)) => Ok(InProcess { handle, tid, stop, thread }),
            // The thread's own error says more than the timeout.
            Err(_) if thread.is_finished() => Err(thread
                .join()
                .map_err(|_| anyhow!("the broker thread panicked"))?
                .err()
                .unwrap_or_else(|| anyhow!("the broker ended before it started"))),
            Err(_) => Err(anyhow!("the broker did not start within {START_LIMIT:?}")),
        }
    }

    /// Stops the broker and waits for its thread.
    pub fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.thread.join().map_err(|_| anyhow!("the broker thread panicked"))?.context("the broker")
    }
}
