//! Typed reading of one table of the merged tree, collecting every problem.
//!
//! A [`Section`] reads keys from its table, falling back to a defaults table
//! (`defaults.frontend` for `frontends.web`, …). A key that is missing,
//! of the wrong type or out of range records a [`ConfigError`] and yields
//! `None`; the caller carries on so that one pass reports everything.
//! [`Section::finish`] reports the keys nobody asked for: unknown keys.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use config::{Map, Value, ValueKind};

use super::errors::{ConfigError, ConfigErrorKind};
use super::sources::Origins;

/// Collects errors for one validation pass.
pub(super) struct Report<'a> {
    pub origins: &'a Origins,
    pub errors: Vec<ConfigError>,
}

impl Report<'_> {
    pub fn error(&mut self, key: &str, problem: impl Into<String>) {
        self.errors.push(ConfigError {
            kind: ConfigErrorKind::Invalid,
            key: key.to_owned(),
            origin: self.origins.of(key),
            problem: problem.into(),
        });
    }

    /// Like [`Report::error`], for a key that may be set in no layer (a
    /// missing extension option): its origin is then the layer that set
    /// its nearest enclosing table.
    pub fn error_near(&mut self, key: &str, problem: impl Into<String>) {
        let mut origin = self.origins.of(key);
        let mut path = key;
        while !self.origins.sets(path) {
            match path.rsplit_once('.') {
                Some((parent, _)) => path = parent,
                None => break,
            }
            origin = self.origins.of(path);
        }
        self.errors.push(ConfigError {
            kind: ConfigErrorKind::Invalid,
            key: key.to_owned(),
            origin,
            problem: problem.into(),
        });
    }
}

/// One table (and its optional defaults table) being read.
pub(super) struct Section {
    path: String,
    table: Map<String, Value>,
    fallback: Option<(String, Map<String, Value>)>,
    known: BTreeSet<&'static str>,
}

impl Section {
    pub fn new(path: impl Into<String>, value: Option<&Value>, report: &mut Report<'_>) -> Section {
        let path = path.into();
        let table = match value.map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => Map::new(),
            Some(ValueKind::Table(table)) => table.clone(),
            Some(other) => {
                report.error(&path, format!("found {}; expected a table", describe(other)));
                Map::new()
            }
        };
        Section { path, table, fallback: None, known: BTreeSet::new() }
    }

    /// Keys missing here are read from `defaults` (itself a table at `path`).
    pub fn with_defaults(mut self, path: impl Into<String>, defaults: Option<&Value>) -> Section {
        if let Some(ValueKind::Table(table)) = defaults.map(|v| &v.kind) {
            self.fallback = Some((path.into(), table.clone()));
        }
        self
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Names of the entries of this table (for tables keyed by name).
    pub fn entries(&self) -> Vec<(String, Value)> {
        self.table.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The raw value of `key`, here or in the defaults, with its dotted path.
    fn raw(&mut self, key: &'static str) -> Option<(String, Value)> {
        self.known.insert(key);
        if let Some(v) = self.table.get(key) {
            return Some((format!("{}.{key}", self.path), v.clone()));
        }
        let (path, table) = self.fallback.as_ref()?;
        table.get(key).map(|v| (format!("{path}.{key}"), v.clone()))
    }

    /// The raw value of an optional `key` (here or in the defaults) and its
    /// dotted path, for readers of their own (lists of tables); `None`
    /// when it is not set, which is no error.
    pub fn optional(&mut self, key: &'static str) -> Option<(String, Value)> {
        self.raw(key)
    }

    /// A nested table, e.g. `timeout`, with the matching defaults sub-table.
    pub fn sub(&mut self, key: &'static str, report: &mut Report<'_>) -> Section {
        self.known.insert(key);
        let path = format!("{}.{key}", self.path);
        let section = Section::new(path, self.table.get(key), report);
        match &self.fallback {
            Some((fpath, table)) => section.with_defaults(format!("{fpath}.{key}"), table.get(key)),
            None => section,
        }
    }

    /// Reads `key` with `parse`; `expected` describes valid values.
    pub fn get<T>(
        &mut self,
        key: &'static str,
        expected: &str,
        report: &mut Report<'_>,
        parse: impl Fn(&ValueKind) -> Option<T>,
    ) -> Option<T> {
        let Some((path, value)) = self.raw(key) else {
            // Name the layer that declared this table: that is where the key goes.
            let origin = report.origins.of(&self.path);
            report.errors.push(ConfigError {
                kind: ConfigErrorKind::Missing,
                key: format!("{}.{key}", self.path),
                origin,
                problem: format!("missing; expected {expected}"),
            });
            return None;
        };
        match parse(&value.kind) {
            Some(v) => Some(v),
            None => {
                report.error(&path, format!("found {}; expected {expected}", describe(&value.kind)));
                None
            }
        }
    }

    pub fn u32_in(&mut self, key: &'static str, min: u32, max: u32, report: &mut Report<'_>) -> Option<u32> {
        let expected = format!("an integer from {min} to {max}");
        self.get(key, &expected, report, |v| {
            int(v).filter(|n| (min as i128..=max as i128).contains(n)).map(|n| n as u32)
        })
    }

    /// A bound from 0 to `max` where 0 means none.
    pub fn limit_up_to(&mut self, key: &'static str, max: u32, report: &mut Report<'_>) -> Option<Option<NonZeroU32>> {
        self.u32_in(key, 0, max, report).map(NonZeroU32::new)
    }

    pub fn i64_in(&mut self, key: &'static str, min: i64, max: i64, report: &mut Report<'_>) -> Option<i64> {
        let expected = format!("an integer from {min} to {max}");
        self.get(key, &expected, report, |v| {
            int(v).filter(|n| (min as i128..=max as i128).contains(n)).map(|n| n as i64)
        })
    }

    pub fn bool(&mut self, key: &'static str, report: &mut Report<'_>) -> Option<bool> {
        self.get(key, "true or false", report, |v| match v {
            ValueKind::Boolean(b) => Some(*b),
            ValueKind::String(s) => s.parse().ok(),
            _ => None,
        })
    }

    /// A duration from 0 (which disables it) to [`MAX_DURATION`].
    pub fn duration(&mut self, key: &'static str, report: &mut Report<'_>) -> Option<Duration> {
        let expected = format!(
            "a duration of at most {} such as \"250ms\", \"5s\" or \"1m\" (\"0\" disables)",
            humantime::format_duration(MAX_DURATION)
        );
        self.get(key, &expected, report, |v| parse_duration(v).filter(|d| *d <= MAX_DURATION))
    }

    /// A duration where zero means none (no limit, or "use another").
    pub fn duration_or_none(&mut self, key: &'static str, report: &mut Report<'_>) -> Option<Option<Duration>> {
        self.duration(key, report).map(|d| (!d.is_zero()).then_some(d))
    }

    /// A duration that must be set: more than 0 and at most `max`;
    /// `why_not_zero` tells the operator what 0 would allow.
    pub fn duration_set_up_to(
        &mut self,
        key: &'static str,
        max: Duration,
        why_not_zero: &str,
        report: &mut Report<'_>,
    ) -> Option<Duration> {
        let expected = format!(
            "a duration from 1ms to {} such as \"5s\" (not \"0\": {why_not_zero})",
            humantime::format_duration(max)
        );
        self.get(key, &expected, report, |v| parse_duration(v).filter(|d| !d.is_zero() && *d <= max))
    }

    pub fn string(&mut self, key: &'static str, report: &mut Report<'_>) -> Option<String> {
        self.get(key, "a string", report, |v| match v {
            ValueKind::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
    }

    /// A string that may be empty.
    pub fn text(&mut self, key: &'static str, report: &mut Report<'_>) -> Option<String> {
        self.get(key, "a string", report, |v| match v {
            ValueKind::String(s) => Some(s.clone()),
            _ => None,
        })
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(&mut self, key: &'static str, choices: &[(&str, T)], report: &mut Report<'_>) -> Option<T> {
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let expected = format!("one of {}", names.join(", "));
        self.get(key, &expected, report, |v| match v {
            ValueKind::String(s) => choices.iter().find(|(n, _)| n == s).map(|(_, t)| *t),
            _ => None,
        })
    }

    /// A listening address `IP:PORT`, or a list of them (a string may hold
    /// several separated by commas, as environment variables do).
    pub fn bind_list(&mut self, key: &'static str, report: &mut Report<'_>) -> Option<Vec<SocketAddr>> {
        let expected = "a non-empty list of listening addresses \"IP:PORT\" such as [\"127.0.0.1:8080\"]";
        self.get(key, expected, report, |v| {
            let items: Vec<String> = match v {
                ValueKind::String(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
                ValueKind::Array(values) => values
                    .iter()
                    .map(|v| match &v.kind {
                        ValueKind::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
                _ => return None,
            };
            let addrs: Option<Vec<SocketAddr>> = items.iter().map(|s| s.parse().ok()).collect();
            addrs.filter(|a| !a.is_empty())
        })
    }

    /// A server address: `IP:PORT`, or `HOST:PORT` with a host name that
    /// the broker resolves while it runs (never here: reading a
    /// configuration needs no network).
    pub fn server_address(
        &mut self,
        key: &'static str,
        report: &mut Report<'_>,
    ) -> Option<super::discovery_section::ConfiguredAddress> {
        self.get(key, super::discovery_section::ADDRESS_EXPECTED, report, |v| match v {
            ValueKind::String(s) => super::discovery_section::parse_address(s),
            _ => None,
        })
    }

    /// Reports keys of this table that no reader asked for.
    pub fn finish(self, report: &mut Report<'_>) {
        for key in self.table.keys() {
            if !self.known.contains(key.as_str()) {
                let known: Vec<&str> = self.known.iter().copied().collect();
                report.error(
                    &format!("{}.{key}", self.path),
                    format!("unknown key; expected one of: {}", known.join(", ")),
                );
            }
        }
    }
}

/// Longest duration any key accepts: 30 days. Every configured duration
/// ends up added to the clock (deadlines, timers), and a value the clock
/// cannot hold would panic every session; 30 days is far beyond any useful
/// timeout or interval, yet every timer set from it really fires (tokio's
/// timer wheel reaches about two years).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A human duration (`"250ms"`, `"5s"`), or `0`; nothing checks its size yet.
fn parse_duration(v: &ValueKind) -> Option<Duration> {
    match v {
        ValueKind::String(s) if s.trim() == "0" => Some(Duration::ZERO),
        ValueKind::I64(0) | ValueKind::U64(0) => Some(Duration::ZERO),
        ValueKind::String(s) => humantime::parse_duration(s.trim()).ok(),
        _ => None,
    }
}

fn int(v: &ValueKind) -> Option<i128> {
    match v {
        ValueKind::I64(n) => Some(*n as i128),
        ValueKind::U64(n) => Some(*n as i128),
        ValueKind::I128(n) => Some(*n),
        ValueKind::U128(n) => i128::try_from(*n).ok(),
        ValueKind::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// How a found value is shown in an error.
/// A list of strings, trimmed: a TOML array of strings, or one string
/// holding them separated by commas (as environment variables give them);
/// an empty string is the empty list. `None` for anything else.
pub(super) fn string_list(v: &ValueKind) -> Option<Vec<String>> {
    match v {
        ValueKind::String(s) if s.trim().is_empty() => Some(Vec::new()),
        ValueKind::String(s) => Some(s.split(',').map(|p| p.trim().to_owned()).collect()),
        ValueKind::Array(values) => values
            .iter()
            .map(|v| match &v.kind {
                ValueKind::String(s) => Some(s.trim().to_owned()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

pub(super) fn describe(v: &ValueKind) -> String {
    match v {
        ValueKind::Nil => "nothing".into(),
        ValueKind::Boolean(b) => format!("{b}"),
        ValueKind::I64(n) => format!("{n}"),
        ValueKind::I128(n) => format!("{n}"),
        ValueKind::U64(n) => format!("{n}"),
        ValueKind::U128(n) => format!("{n}"),
        ValueKind::Float(n) => format!("{n}"),
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "a list".into(),
    }
}
