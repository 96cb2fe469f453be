//! A daemon with one observer, `access-csv`: every ended session becomes a
//! CSV line in the file named by `USHER_ACCESS_CSV` (default `access.csv`),
//! and per-server counters (sessions, bytes, last state) are rewritten in
//! `<that file>.servers` at most every `SUMMARY_EVERY`, for a tool to read.
//! The observer runs on its own thread behind a bounded mailbox: a slow
//! disk loses lines (counted as `lost` in `/stats`), it never slows a
//! session.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use usher::daemon::Builder;
use usher::extension::{Event, Observer};

/// The CSV header; one line per session follows.
pub const HEADER: &str = "session,client,frontend,backend,server,termination,queue_ms,connect_ms,bytes_in,bytes_out";
/// How often the per-server counters are written out (on the next event).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct ServerCounts {
    sessions: u64,
    bytes: u64,
    state: &'static str,
}

pub struct AccessCsv {
    out: BufWriter<File>,
    summary: PathBuf,
    servers: BTreeMap<String, ServerCounts>,
    written: Option<Instant>,
    every: Duration,
}

impl AccessCsv {
    pub fn create(path: &Path, every: Duration) -> std::io::Result<AccessCsv> {
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{HEADER}")?;
        out.flush()?;
        let summary = PathBuf::from(format!("{}.servers", path.display()));
        Ok(AccessCsv { out, summary, servers: BTreeMap::new(), written: None, every })
    }

    /// `backend/server sessions=N bytes=N state=S`, one line per server.
    fn write_summary(&mut self) -> std::io::Result<()> {
        let mut text = String::new();
        for (server, c) in &self.servers {
            let state = if c.state.is_empty() { "-" } else { c.state };
            text += &format!("{server} sessions={} bytes={} state={state}\n", c.sessions, c.bytes);
        }
        std::fs::write(&self.summary, text)
    }
}

impl Observer for AccessCsv {
    fn observe(&mut self, event: Event) {
        match event {
            Event::SessionEnded { record: r, end } => {
                let server = r.server.as_deref().unwrap_or("-");
                let ms = |d: Option<Duration>| d.map_or(String::new(), |d| d.as_millis().to_string());
                let (queue, connect) = (ms(r.queue_wait), ms(r.connect_time));
                let (from, to) = (r.bytes_from_client, r.bytes_from_server);
                let (id, client, code) = (r.session, r.client, end.code());
                let line =
                    format!("{id},{client},{},{},{server},{code},{queue},{connect},{from},{to}", r.frontend, r.backend);
                // A line at a time: a reader (or a test) sees whole lines.
                let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
                let counts = self.servers.entry(format!("{}/{server}", r.backend)).or_default();
                counts.sessions += 1;
                counts.bytes += from + to;
            }
            Event::ServerStateChanged { backend, change } => {
                self.servers.entry(format!("{backend}/{}", change.server)).or_default().state = change.to.as_str();
            }
            _ => return,
        }
        if self.written.is_none_or(|at| at.elapsed() >= self.every) {
            self.written = Some(Instant::now());
            let _ = self.write_summary();
        }
    }
}

fn main() -> ExitCode {
    let path = std::env::var_os("USHER_ACCESS_CSV").unwrap_or_else(|| "access.csv".into());
    match AccessCsv::create(Path::new(&path), SUMMARY_EVERY) {
        Ok(csv) => usher::daemon::main(Builder::new().observer("access-csv", csv)),
        Err(err) => {
            eprintln!("usher: cannot create {}: {err}", Path::new(&path).display());
            ExitCode::from(usher::daemon::EXIT_FAILURE)
        }
    }
}
