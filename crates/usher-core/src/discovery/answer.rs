//! What one resolution of a name found.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{DnsSource, RecordKind};

/// One name asked for one kind of record. Sources that ask the same are
/// resolved once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryKey {
    pub query: String,
    pub kind: RecordKind,
}

impl QueryKey {
    pub fn of(source: &DnsSource) -> QueryKey {
        QueryKey { query: source.query.clone(), kind: source.kind() }
    }
}

/// One address a name led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub ip: IpAddr,
    /// SRV: the record's port; A/AAAA: `None` (the source's port).
    pub port: Option<u16>,
    /// SRV: the record's weight (0..=65535); A/AAAA: `None`.
    pub weight: Option<u16>,
}

impl Target {
    /// The server weight of an SRV weight: 0..=65535 scaled to 1..=256,
    /// as HAProxy does.
    pub fn server_weight(srv_weight: u16) -> u32 {
        u32::from(srv_weight) / 256 + 1
    }
}

/// A resolution that worked: every target, sorted and without duplicates,
/// and the time to live of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub targets: Vec<Target>,
    pub ttl: Duration,
}

impl Answer {
    pub fn new(mut targets: Vec<Target>, ttl: Duration) -> Answer {
        targets.sort();
        targets.dedup();
        Answer { targets, ttl }
    }
}
