//! Captures the broker's log records as key-value maps that tests can wait
//! for. Set `USHER_TEST_LOG=1` to also print them.

use std::collections::BTreeMap;
use std::fmt::Arguments;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slog::{Drain, Key, OwnedKVList, Record as SlogRecord, Serializer, KV};
use tokio::sync::Notify;

/// One captured record.
#[derive(Debug, Clone)]
pub struct Record {
    pub msg: String,
    pub level: slog::Level,
    pub kv: BTreeMap<String, String>,
}

impl Record {
    pub fn get(&self, key: &str) -> &str {
        self.kv.get(key).map(String::as_str).unwrap_or("")
    }

    pub fn int(&self, key: &str) -> i64 {
        self.get(key).parse().unwrap_or_else(|_| panic!("{key} is not an integer in {self:?}"))
    }

    pub fn is_session(&self) -> bool {
        self.msg == "session"
    }

    pub fn termination(&self) -> &str {
        self.get("termination")
    }
}

#[derive(Clone, Default)]
pub struct LogCapture {
    records: Arc<Mutex<Vec<Record>>>,
    notify: Arc<Notify>,
    echo: bool,
}

impl LogCapture {
    pub fn new() -> LogCapture {
        LogCapture { echo: std::env::var_os("USHER_TEST_LOG").is_some(), ..Default::default() }
    }

    pub fn logger(&self) -> slog::Logger {
        slog::Logger::root(self.clone().fuse(), slog::o!())
    }

    pub fn all(&self) -> Vec<Record> {
        self.records.lock().expect("log capture").clone()
    }

    /// Access records (one per finished session).
    pub fn sessions(&self) -> Vec<Record> {
        self.all().into_iter().filter(Record::is_session).collect()
    }

    /// Waits until `pred` holds for the captured records; panics after `limit`.
    pub async fn wait_until(&self, limit: Duration, what: &str, pred: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let records = self.all();
            if pred(&records) {
                return records;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let tail: Vec<String> =
                    records.iter().rev().take(20).map(|r| format!("{} {:?}", r.msg, r.kv)).collect();
                panic!("timed out waiting for {what}; last records (newest first):\n{}", tail.join("\n"));
            }
        }
    }

    /// Waits for the first record with message `msg` matching `pred`.
    pub async fn wait_for(&self, msg: &str, pred: impl Fn(&Record) -> bool) -> Record {
        let records = self.wait_until(crate::DEADLINE, msg, |rs| rs.iter().any(|r| r.msg == msg && pred(r))).await;
        records.into_iter().find(|r| r.msg == msg && pred(r)).expect("found")
    }

    /// Waits until `n` access records exist and returns them.
    pub async fn wait_sessions(&self, n: usize) -> Vec<Record> {
        let what = format!("{n} access records");
        self.wait_until(crate::DEADLINE, &what, |rs| rs.iter().filter(|r| r.is_session()).count() >= n)
            .await
            .into_iter()
            .filter(Record::is_session)
            .collect()
    }
}

struct Collect<'a>(&'a mut BTreeMap<String, String>);

impl Serializer for Collect<'_> {
    fn emit_arguments(&mut self, key: Key, val: &Arguments<'_>) -> slog::Result {
        self.0.entry(key.to_string()).or_insert_with(|| val.to_string());
        Ok(())
    }
}

impl Drain for LogCapture {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &SlogRecord<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = BTreeMap::new();
        let _ = record.kv().serialize(record, &mut Collect(&mut kv));
        let _ = values.serialize(record, &mut Collect(&mut kv));
        let captured = Record { msg: record.msg().to_string(), level: record.level(), kv };
        if self.echo {
            eprintln!("[{}] {} {:?}", captured.level.as_short_str(), captured.msg, captured.kv);
        }
        self.records.lock().expect("log capture").push(captured);
        self.notify.notify_waiters();
        Ok(())
    }
}
