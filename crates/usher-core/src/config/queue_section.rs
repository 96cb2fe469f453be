//! `backends.X.queue`: how a backend's queues choose who is served next and
//! who is refused under overload. Read like every other section, so
//! `usher check` names each bad key.

use std::num::NonZeroU32;
use std::time::Duration;

use config::ValueKind;
use serde::{Serialize, Serializer};

use super::reader::{Report, Section};
use super::settings::ZeroForNone;

/// Who waits how (`queue.discipline`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueDiscipline {
    /// Served in arrival order (within priority classes); only
    /// `timeout.queue` and `maxqueue` refuse.
    #[default]
    Fifo,
    /// Arrival order, and under overload (a standing queue, as CoDel
    /// measures it) waiters older than twice `codel.target` are refused at
    /// once.
    Codel,
    /// Arrival order while the queue drains, newest first while it stands;
    /// sheds like `codel`.
    AdaptiveLifo,
}

/// CoDel's two figures (`queue.codel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CodelSettings {
    /// A queue whose oldest waiter stayed older than this for a whole
    /// `interval` is standing (overloaded).
    #[serde(with = "humantime_serde")]
    pub target: Duration,
    /// How long the queue must stand before it counts as overloaded, and
    /// the age past which a waiter is then refused.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for CodelSettings {
    fn default() -> CodelSettings {
        CodelSettings { target: Duration::from_millis(50), interval: Duration::from_millis(500) }
    }
}

/// Fair share between client sources (`queue.fair`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FairShare {
    /// One queue order for everyone.
    #[default]
    None,
    /// Round robin across client sources: IPv4 addresses masked to
    /// `ipv4_prefix` bits, IPv6 addresses to their /64.
    Source { ipv4_prefix: u8 },
}

impl FairShare {
    /// IPv6 clients are grouped by their /64: one host (or one site) gets
    /// a whole /64 and may use any address in it.
    pub const IPV6_PREFIX: u8 = 64;
}

impl Serialize for FairShare {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FairShare::None => serializer.serialize_str("none"),
            FairShare::Source { ipv4_prefix: 32 } => serializer.serialize_str("source"),
            FairShare::Source { ipv4_prefix } => serializer.serialize_str(&format!("source/{ipv4_prefix}")),
        }
    }
}

/// Caps per client source (`queue.per_source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PerSourceSettings {
    /// Sessions of one source waiting in this backend's queues at once; the
    /// next is refused at once (`None` = no cap, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub max_queued: Option<NonZeroU32>,
    /// Sessions of one source in this backend at once — seated, connecting
    /// or waiting; the next is refused at once (`None` = no cap, written 0).
    #[serde(serialize_with = "limit_or_zero")]
    pub max_live: Option<NonZeroU32>,
}

fn limit_or_zero<S: Serializer>(limit: &Option<NonZeroU32>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u32(limit.or_zero())
}

/// `backends.X.queue`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueSettings {
    pub discipline: QueueDiscipline,
    pub codel: CodelSettings,
    pub fair: FairShare,
    pub per_source: PerSourceSettings,
}

/// Longest `codel.interval` (and so `codel.target`): a queue must be seen
/// standing for a whole interval before anyone is shed, so a longer one
/// would only make CoDel a second, slower `timeout.queue`.
const MAX_CODEL_INTERVAL: Duration = Duration::from_secs(60);

/// Reads `queue` under a backend section (or `defaults.backend`).
pub(super) fn queue_keys(s: &mut Section, report: &mut Report<'_>) -> Option<QueueSettings> {
    let mut q = s.sub("queue", report);
    let discipline = q.choice(
        "discipline",
        &[
            ("fifo", QueueDiscipline::Fifo),
            ("codel", QueueDiscipline::Codel),
            ("adaptive_lifo", QueueDiscipline::AdaptiveLifo),
        ],
        report,
    );
    let fair = q.get(
        "fair",
        "\"none\", \"source\" (round robin across client addresses) or \"source/N\" (IPv4 /N networks, N from 8 \
         to 32; IPv6 clients always by /64)",
        report,
        |v| match v {
            ValueKind::String(text) => parse_fair(text.trim()),
            _ => None,
        },
    );
    let mut c = q.sub("codel", report);
    let why = "CoDel needs a standing-queue measure above zero";
    let target = c.duration_set_up_to("target", MAX_CODEL_INTERVAL, why, report);
    let interval = c.duration_set_up_to("interval", MAX_CODEL_INTERVAL, why, report);
    c.finish(report);
    let mut p = q.sub("per_source", report);
    let max_queued = p.limit_up_to("max_queued", 10_000_000, report);
    let max_live = p.limit_up_to("max_live", 10_000_000, report);
    p.finish(report);
    let path = q.path().to_owned();
    q.finish(report);
    let (target, interval) = (target?, interval?);
    let ok = target < interval;
    if !ok {
        report.error(
            &format!("{path}.codel.target"),
            format!("{target:?} with codel.interval {interval:?}; expected a target below the interval"),
        );
    }
    let settings = QueueSettings {
        discipline: discipline?,
        codel: CodelSettings { target, interval },
        fair: fair?,
        per_source: PerSourceSettings { max_queued: max_queued?, max_live: max_live? },
    };
    ok.then_some(settings)
}

fn parse_fair(text: &str) -> Option<FairShare> {
    match text {
        "none" => Some(FairShare::None),
        "source" => Some(FairShare::Source { ipv4_prefix: 32 }),
        _ => {
            let bits: u8 = text.strip_prefix("source/")?.parse().ok()?;
            (8..=32).contains(&bits).then_some(FairShare::Source { ipv4_prefix: bits })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_share_words() {
        assert_eq!(parse_fair("none"), Some(FairShare::None));
        assert_eq!(parse_fair("source"), Some(FairShare::Source { ipv4_prefix: 32 }));
        assert_eq!(parse_fair("source/24"), Some(FairShare::Source { ipv4_prefix: 24 }));
        for bad in ["source/7", "source/33", "source/", "src", "source/24x", ""] {
            assert_eq!(parse_fair(bad), None, "{bad}");
        }
    }
}
