//! A daemon with one observer, `access-csv`: every ended session becomes a
//! CSV line in the file named by `USHER_ACCESS_CSV` (default `access.csv`).
//! The observer runs on its own thread behind a bounded mailbox: a slow
//! disk loses lines (counted as `lost` in `/stats`), it never slows a
//! session.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use usher::daemon::Builder;
use usher::extension::{Event, Observer};

/// The CSV header; one line per session follows.
pub const HEADER: &str = "session,client,frontend,backend,server,termination,queue_ms,connect_ms,bytes_in,bytes_out";

pub struct AccessCsv {
    out: BufWriter<File>,
}

impl AccessCsv {
    pub fn create(path: &Path) -> std::io::Result<AccessCsv> {
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{HEADER}")?;
        out.flush()?;
        Ok(AccessCsv { out })
    }
}

impl Observer for AccessCsv {
    fn observe(&mut self, event: Event) {
        let Event::SessionEnded { record: r, end } = event else { return };
        let ms = |d: Option<std::time::Duration>| d.map_or(String::new(), |d| d.as_millis().to_string());
        let line = format!(
            "{},{},{},{},{},{},{},{},{},{}",
            r.session,
            r.client,
            r.frontend,
            r.backend,
            r.server.as_deref().unwrap_or("-"),
            end.code(),
            ms(r.queue_wait),
            ms(r.connect_time),
            r.bytes_from_client,
            r.bytes_from_server,
        );
        // A line at a time: a reader (or a test) sees whole lines.
        let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
    }
}

fn main() -> ExitCode {
    let path = std::env::var_os("USHER_ACCESS_CSV").unwrap_or_else(|| "access.csv".into());
    match AccessCsv::create(Path::new(&path)) {
        Ok(csv) => usher::daemon::main(Builder::new().observer("access-csv", csv)),
        Err(err) => {
            eprintln!("usher: cannot create {}: {err}", Path::new(&path).display());
            ExitCode::from(usher::daemon::EXIT_FAILURE)
        }
    }
}
