//! What an open dashboard adds to a running usher: `GET /stats` on its
//! admin API once a second (the page's refresh), each answer read whole.
//! The `usher-dashboard` proxy runs one beside its usher so that a case can
//! compare usher with and without it, run by run.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The dashboard's refresh (`REFRESH_MS` in the page).
pub const EVERY: Duration = Duration::from_secs(1);
/// Longest a poll may take before it counts as failed.
const POLL_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Counts {
    answered: AtomicU64,
    failed: AtomicU64,
}

/// Polls until dropped.
pub struct StatsPoller {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

impl StatsPoller {
    pub fn start(admin: SocketAddr) -> StatsPoller {
        let (stop, stopped) = mpsc::channel::<()>();
        let counts = Arc::new(Counts::default());
        let thread = std::thread::spawn({
            let counts = counts.clone();
            move || loop {
                let counter = if get_stats(admin).is_ok() { &counts.answered } else { &counts.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                // Like the page: the next poll a second after this answer.
                if stopped.recv_timeout(EVERY) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
            }
        });
        StatsPoller { stop: Some(stop), thread: Some(thread), counts }
    }

    /// Polls answered with a 200 and a `/stats` body, and polls that failed.
    pub fn polls(&self) -> (u64, u64) {
        (self.counts.answered.load(Ordering::Relaxed), self.counts.failed.load(Ordering::Relaxed))
    }
}

impl Drop for StatsPoller {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `GET /stats`, read to the end (`Connection: close`).
fn get_stats(admin: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&admin, POLL_LIMIT)?;
    stream.set_read_timeout(Some(POLL_LIMIT))?;
    stream.write_all(b"GET /stats HTTP/1.1\r\nHost: usher-bench\r\nConnection: close\r\n\r\n")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    if text.starts_with("HTTP/1.1 200") && text.contains("\"backends\"") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("unexpected answer: {:.80}", text)))
    }
}
