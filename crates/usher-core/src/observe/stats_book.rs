//! Traffic figures for the admin API, with no actix in them: counters per
//! frontend, backend and server, fed by one [`SessionSummary`] per ended
//! session (the Stats actor's bookkeeping).
//!
//! Counters count *ended* sessions: a session is added when it writes its
//! access record. A frontend's counters get every session; the backend's
//! it was admitted to too (even if a reload has since pointed the frontend
//! elsewhere); a server's only the sessions that ended on it (the access
//! record's `server`).
//!
//! Beside the totals it keeps recent figures: each frontend's and backend's
//! rate of ended sessions ([`SessionRate`]) and each backend's queue waits
//! ([`QueueWaits`]): every session that asked for a slot, with the access
//! record's `queue_ms` — those seated at once count at 0 ms, and those that
//! gave up (`sQ`, `SQ`, `CQ`) at the time they waited, as HAProxy's `Tw`
//! counts every session. The same waits are kept per priority class, and
//! per server for the sessions seated there (with hashing, the waits of
//! the sessions pinned to it). Like the counters they are recorded when the
//! session ends, with no message of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::chunked_table::ChunkedTable;
use super::queue_waits::QueueWaits;
use super::session_rate::SessionRate;
use crate::session::{SessionSummary, Termination};
#[cfg(test)]
use crate::ids::{BackendId, FrontendId, ServerId};

/// Totals of one frontend, backend or server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Ended sessions.
    pub sessions_total: u64,
    /// Bytes relayed from clients (HAProxy's `bin`).
    pub bytes_in: u64,
    /// Bytes relayed from servers (HAProxy's `bout`).
    pub bytes_out: u64,
    /// Sessions that ended on a failed connection to a server (`SC`/`sC`
    /// with a server).
    pub connect_errors: u64,
    /// Connection attempts after the first.
    pub retries: u64,
    /// Sessions that a retry moved to another server.
    pub redispatches: u64,
    /// `timeout.queue` expired (`sQ`).
    pub queue_timeouts: u64,
    /// Refused by a full queue (`SQ`).
    pub queue_full: u64,
    /// Clients that left while queued (`CQ`).
    pub queue_aborts: u64,
    /// Refused by the queue discipline under overload (`PQ`).
    pub queue_shed: u64,
    /// Refused by their source's cap on queued sessions (`PS`).
    pub source_queue_full: u64,
    /// Refused by their source's cap on live sessions (`PL`).
    pub source_live_full: u64,
    /// Clients that left having sent nothing and never queued (`CN`): port
    /// probes and balancers' TCP health checks, kept apart from
    /// `queue_aborts` so that probing does not look like clients giving up.
    pub probes: u64,
    /// Sessions per termination code.
    pub terminations: BTreeMap<&'static str, u64>,
    /// A frontend's sessions per routing rule that chose their backend
    /// (by index in `frontends.X.routes`); empty elsewhere.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<usize, RouteCounters>,
}

/// Sessions one routing rule chose the backend of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteCounters {
    pub sessions_total: u64,
    /// Of those, the ones that went to the rule's overflow backend.
    pub spill_overs: u64,
}

impl Counters {
    fn add(&mut self, s: &SessionSummary) {
        let code = s.termination.code();
        self.sessions_total += 1;
        self.bytes_in += s.bytes_from_client;
        self.bytes_out += s.bytes_from_server;
        self.retries += u64::from(s.retries);
        self.redispatches += u64::from(s.redispatched);
        match s.termination {
            Termination::NoServer | Termination::ConnectRefused | Termination::ConnectTimeout
                if s.server.is_some() =>
            {
                self.connect_errors += 1
            }
            Termination::QueueTimeout => self.queue_timeouts += 1,
            Termination::QueueFull => self.queue_full += 1,
            Termination::ClientAbortInQueue => self.queue_aborts += 1,
            Termination::QueueShed => self.queue_shed += 1,
            Termination::SourceQueueFull => self.source_queue_full += 1,
            Termination::SourceLiveFull => self.source_live_full += 1,
            Termination::Probe => self.probes += 1,
            _ => {}
        }
        *self.terminations.entry(code).or_default() += 1;
    }
}

/// The counters of every frontend, backend and server, by index.
#[derive(Debug, Clone)]
pub struct StatsBook {
    pub frontends: Vec<Counters>,
    pub backends: Vec<Counters>,
    /// Per backend, per server in declaration order.
    pub servers: Vec<ChunkedTable<Counters>>,
    /// Per frontend.
    pub frontend_rates: Vec<SessionRate>,
    /// Per backend.
    pub backend_rates: Vec<SessionRate>,
    /// Per backend.
    pub queue_waits: Vec<QueueWaits>,
    /// Per backend, per priority class that has had a waiting session.
    pub class_waits: Vec<BTreeMap<i32, QueueWaits>>,
    /// Per backend, per server: the waits of the sessions seated on it,
    /// from its first such session. A server no session waited for costs
    /// one pointer: a `QueueWaits` is about 7 KB, and a fleet of 10 000
    /// servers would hold 70 MB of empty histograms, which every reload
    /// that adds servers moved and every `/stats` read.
    pub server_waits: Vec<ChunkedTable<Option<Arc<QueueWaits>>>>,
    /// Where the recent windows count their periods from.
    origin: Instant,
}

impl StatsBook {
    /// `frontends` frontend ids; `servers[b]`: how many server ids backend
    /// `b` has.
    pub fn new(frontends: usize, servers: &[usize]) -> StatsBook {
        StatsBook::starting_at(Instant::now(), frontends, servers)
    }

    /// A book whose recent windows start at `origin`.
    pub fn starting_at(origin: Instant, frontends: usize, servers: &[usize]) -> StatsBook {
        let mut book = StatsBook {
            frontends: Vec::new(),
            backends: Vec::new(),
            servers: Vec::new(),
            frontend_rates: Vec::new(),
            backend_rates: Vec::new(),
            queue_waits: Vec::new(),
            class_waits: Vec::new(),
            server_waits: Vec::new(),
            origin,
        };
        book.resize(frontends, servers);
        book
    }

    /// Room for server `server` of backend `backend`. A reload commits a
    /// big backend's new servers slice by slice and tells this book its
    /// new sizes only in its last step, so a session can be seated on a
    /// new server, and end, before the book knows the server: its counts
    /// start with it instead of being lost.
    fn server_room(&mut self, backend: usize, server: usize) {
        let (Some(list), Some(waits)) = (self.servers.get_mut(backend), self.server_waits.get_mut(backend)) else {
            return;
        };
        list.grow_to(server + 1);
        waits.grow_to(server + 1);
    }

    /// A reload: frontends, backends and servers by stable id (new ones come
    /// after); counters of kept ones carry on.
    pub fn resize(&mut self, frontends: usize, servers: &[usize]) {
        let (frontends, backends) = (frontends.max(self.frontends.len()), servers.len().max(self.backends.len()));
        let origin = self.origin;
        self.frontends.resize(frontends, Counters::default());
        self.frontend_rates.resize_with(frontends, || SessionRate::new(origin));
        self.backends.resize(backends, Counters::default());
        self.backend_rates.resize_with(backends, || SessionRate::new(origin));
        self.queue_waits.resize_with(backends, || QueueWaits::new(origin));
        self.class_waits.resize_with(backends, BTreeMap::new);
        self.servers.resize_with(servers.len().max(self.servers.len()), ChunkedTable::default);
        self.server_waits.resize_with(self.servers.len(), ChunkedTable::default);
        for (b, &n) in servers.iter().enumerate() {
            self.servers[b].grow_to(n);
            self.server_waits[b].grow_to(n);
        }
    }

    /// Counts one session that ended at `now`. Frontend and backend
    /// indices out of range are ignored; a server's is not (see
    /// [`StatsBook::server_room`]).
    pub fn record(&mut self, s: &SessionSummary, now: Instant) {
        // Counts go to the server it ended on, its wait to the one it was
        // seated on first (a retry can move it): room for both.
        for server in [s.server, s.seated_on].into_iter().flatten() {
            self.server_room(s.backend.0, server.0);
        }
        let Some(frontend) = self.frontends.get_mut(s.frontend.0) else { return };
        frontend.add(s);
        if let Some(rule) = s.route {
            let route = frontend.routes.entry(rule).or_default();
            route.sessions_total += 1;
            route.spill_overs += u64::from(s.spilled);
        }
        self.frontend_rates[s.frontend.0].count(now);
        let b = s.backend.0;
        if let Some(backend) = self.backends.get_mut(b) {
            backend.add(s);
            self.backend_rates[b].count(now);
            if let Some(wait) = s.queue_wait {
                self.queue_waits[b].record(wait, now);
                let origin = self.origin;
                self.class_waits[b].entry(s.priority_class).or_insert_with(|| QueueWaits::new(origin)).record(wait, now);
                if let Some(waits) = s.seated_on.and_then(|id| self.server_waits.get_mut(b)?.get_mut(id.0)) {
                    // Copied first if a `/stats` snapshot still holds it.
                    Arc::make_mut(waits.get_or_insert_with(|| Arc::new(QueueWaits::new(origin)))).record(wait, now);
                }
            }
        }
        if let Some(server) = s.server.and_then(|id| self.servers.get_mut(b)?.get_mut(id.0)) {
            server.add(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ended(frontend: usize, server: Option<usize>, termination: Termination) -> SessionSummary {
        admitted(frontend, 1, server, termination)
    }

    fn admitted(frontend: usize, backend: usize, server: Option<usize>, termination: Termination) -> SessionSummary {
        SessionSummary {
            frontend: FrontendId(frontend),
            backend: BackendId(backend),
            server: server.map(ServerId),
            bytes_from_client: 10,
            bytes_from_server: 20,
            retries: 1,
            redispatched: true,
            termination,
            queue_wait: None,
            priority_class: 0,
            seated_on: None,
            route: None,
            spilled: false,
        }
    }

    #[test]
    fn routed_sessions_and_spill_overs_count_per_rule_of_their_frontend() {
        let mut book = StatsBook::new(1, &[1, 1]);
        let now = Instant::now();
        let routed = |rule, spilled| SessionSummary { route: Some(rule), spilled, ..ended(0, None, Termination::Normal) };
        book.record(&routed(0, false), now);
        book.record(&routed(0, true), now);
        book.record(&routed(2, true), now);
        book.record(&ended(0, None, Termination::Normal), now);
        let routes = &book.frontends[0].routes;
        assert_eq!(routes[&0], RouteCounters { sessions_total: 2, spill_overs: 1 });
        assert_eq!(routes[&2], RouteCounters { sessions_total: 1, spill_overs: 1 });
        assert_eq!(routes.len(), 2);
        assert!(book.backends[1].routes.is_empty(), "counted in the frontend only");
    }

    #[test]
    fn sessions_count_in_their_frontend_backend_and_server() {
        // Frontends 0 and 1 both use backend 1 (two servers); backend 0 unused.
        let mut book = StatsBook::new(2, &[1, 2]);
        book.record(&ended(0, Some(1), Termination::Normal), Instant::now());
        book.record(&ended(1, Some(1), Termination::ConnectRefused), Instant::now());
        book.record(&ended(1, None, Termination::NoServer), Instant::now());
        book.record(&ended(0, None, Termination::QueueTimeout), Instant::now());
        book.record(&ended(0, None, Termination::QueueFull), Instant::now());
        book.record(&ended(0, None, Termination::ClientAbortInQueue), Instant::now());
        book.record(&ended(0, None, Termination::Probe), Instant::now());
        book.record(&ended(7, Some(0), Termination::Normal), Instant::now());
        book.record(&ended(0, Some(9), Termination::Normal), Instant::now());

        assert_eq!(book.frontends[0].sessions_total, 6);
        assert_eq!(book.frontends[1].sessions_total, 2);
        let b = &book.backends[1];
        assert_eq!(b.sessions_total, 8);
        assert_eq!((b.bytes_in, b.bytes_out, b.retries, b.redispatches), (80, 160, 8, 8));
        assert_eq!(b.connect_errors, 1, "SC without a server is not a connect error");
        assert_eq!((b.queue_timeouts, b.queue_full, b.queue_aborts, b.probes), (1, 1, 1, 1), "a probe is no queue abort");
        assert_eq!(b.terminations.get("CN"), Some(&1));
        assert_eq!(b.terminations.get("SC"), Some(&2));
        assert_eq!(b.terminations.get("--"), Some(&2));
        assert_eq!(book.backends[0], Counters::default());
        assert_eq!(book.servers[1][1].sessions_total, 2);
        assert_eq!(book.servers[1][1].connect_errors, 1);
        assert_eq!(book.servers[1][0], Counters::default());
    }

    #[test]
    fn a_session_counts_in_the_backend_it_was_admitted_to() {
        // Frontend 0 used backend 0, then a reload pointed it at backend 1:
        // the session admitted before the reload still counts in backend 0.
        let mut book = StatsBook::new(1, &[1, 1]);
        book.record(&admitted(0, 0, Some(0), Termination::Normal), Instant::now());
        book.record(&admitted(0, 1, Some(0), Termination::Normal), Instant::now());
        book.record(&admitted(0, 1, Some(0), Termination::Normal), Instant::now());
        assert_eq!(book.frontends[0].sessions_total, 3);
        assert_eq!((book.backends[0].sessions_total, book.servers[0][0].sessions_total), (1, 1));
        assert_eq!((book.backends[1].sessions_total, book.servers[1][0].sessions_total), (2, 2));
        book.record(&admitted(0, 5, Some(0), Termination::Normal), Instant::now());
        assert_eq!(book.frontends[0].sessions_total, 4, "an unknown backend id is ignored, the frontend counts");
    }

    #[test]
    fn queue_waits_and_rates_count_in_the_backend_and_frontend() {
        let t0 = Instant::now();
        let mut book = StatsBook::starting_at(t0, 1, &[1, 1]);
        let waited = |ms| SessionSummary { queue_wait: Some(Duration::from_millis(ms)), ..admitted(0, 1, Some(0), Termination::Normal) };
        book.record(&waited(0), t0);
        book.record(&waited(300), t0);
        // A probe never asked for a slot: no wait to count.
        book.record(&admitted(0, 1, None, Termination::Probe), t0);
        let at = t0 + Duration::from_secs(1);
        let recent = book.queue_waits[1].recent(at).summary();
        assert_eq!((recent.count, recent.p50, recent.max), (2, 0, 300));
        assert_eq!(book.queue_waits[0].since_start.count(), 0);
        assert_eq!(book.frontend_rates[0].per_second(at), 0.3);
        assert_eq!(book.backend_rates[1].per_second(at), 0.3);
        assert_eq!(book.backend_rates[0].per_second(at), 0.0);
        book.resize(2, &[1, 1, 1]);
        assert_eq!(book.queue_waits[1].since_start.count(), 2, "a reload keeps the waits");
        assert_eq!((book.frontend_rates.len(), book.queue_waits.len()), (2, 3));
    }

    #[test]
    fn waits_count_per_priority_class_and_per_server_seated_on() {
        let t0 = Instant::now();
        let mut book = StatsBook::starting_at(t0, 1, &[2]);
        let waited = |ms, class, seated: Option<usize>| SessionSummary {
            queue_wait: Some(Duration::from_millis(ms)),
            priority_class: class,
            seated_on: seated.map(ServerId),
            ..admitted(0, 0, seated, Termination::Normal)
        };
        book.record(&waited(10, 0, Some(1)), t0);
        book.record(&waited(20, 0, Some(1)), t0);
        book.record(&waited(900, 5, Some(0)), t0);
        // Shed from the queue: a wait in its class, on no server.
        book.record(&waited(400, 5, None), t0);
        book.record(&SessionSummary { termination: Termination::QueueShed, ..waited(400, 5, None) }, t0);
        let classes = &book.class_waits[0];
        assert_eq!(classes.keys().copied().collect::<Vec<_>>(), vec![0, 5]);
        assert_eq!((classes[&0].since_start.count(), classes[&0].since_start.summary().max), (2, 20));
        assert_eq!((classes[&5].since_start.count(), classes[&5].since_start.summary().max), (3, 900));
        let count = |server: &Option<Arc<QueueWaits>>| server.as_ref().map_or(0, |w| w.since_start.count());
        let servers = &book.server_waits[0];
        assert_eq!((count(&servers[0]), count(&servers[1])), (1, 2));
        assert_eq!(book.queue_waits[0].since_start.count(), 5, "every wait still counts in the backend's");
        assert_eq!(book.backends[0].queue_shed, 1);
        book.resize(1, &[3]);
        assert_eq!((book.server_waits[0].iter().count(), count(&book.server_waits[0][1])), (3, 2), "a reload keeps them");
        assert!(book.server_waits[0][2].is_none(), "a server no session waited for holds no histogram");
    }

    #[test]
    fn a_reload_keeps_every_counter_and_gives_new_ids_their_own() {
        let mut book = StatsBook::new(1, &[1]);
        book.record(&admitted(0, 0, Some(0), Termination::Normal), Instant::now());
        // A frontend, a backend, and a server of the kept backend added.
        book.resize(2, &[2, 1]);
        book.record(&admitted(0, 0, Some(1), Termination::Normal), Instant::now());
        book.record(&admitted(1, 1, Some(0), Termination::Normal), Instant::now());
        fn totals<'a>(list: impl IntoIterator<Item = &'a Counters>) -> Vec<u64> {
            list.into_iter().map(|c| c.sessions_total).collect()
        }
        assert_eq!((totals(&book.frontends), totals(&book.backends)), (vec![2, 1], vec![2, 1]));
        assert_eq!((totals(book.servers[0].iter()), totals(book.servers[1].iter())), (vec![1, 1], vec![1]));
        // Ids are stable and removed ones keep theirs: fewer never shrinks.
        book.resize(1, &[1]);
        assert_eq!((totals(&book.frontends), totals(book.servers[0].iter())), (vec![2, 1], vec![1, 1]));
    }

    /// A reload tells the book a big backend's new servers only in its last
    /// step; a session seated on one of them and ended before that is still
    /// counted on its server, with its wait.
    #[test]
    fn a_session_on_a_server_the_book_was_not_yet_told_of_is_counted() {
        let mut book = StatsBook::new(1, &[1]);
        // Seated on new server 5, moved by a retry to new server 3.
        let waited = SessionSummary {
            queue_wait: Some(Duration::from_millis(3)),
            seated_on: Some(ServerId(5)),
            ..admitted(0, 0, Some(3), Termination::Normal)
        };
        book.record(&waited, Instant::now());
        let totals: Vec<u64> = book.servers[0].iter().map(|c| c.sessions_total).collect();
        assert_eq!(totals, vec![0, 0, 0, 1, 0, 0]);
        let wait = book.server_waits[0][5].as_ref().expect("its wait is kept on the server it was seated on");
        assert_eq!(wait.since_start.count(), 1);
        // The reload's last step then sizes the book: nothing is lost.
        book.resize(1, &[6]);
        assert_eq!(book.servers[0][3].sessions_total, 1);
        // An unknown backend is still ignored.
        book.record(&admitted(0, 7, Some(2), Termination::Normal), Instant::now());
        assert_eq!(book.servers.len(), 1);
    }

    #[test]
    fn refusals_of_the_queue_disciplines_have_their_counters() {
        let mut book = StatsBook::new(1, &[1]);
        book.record(&admitted(0, 0, None, Termination::QueueShed), Instant::now());
        book.record(&admitted(0, 0, None, Termination::SourceQueueFull), Instant::now());
        book.record(&admitted(0, 0, None, Termination::SourceQueueFull), Instant::now());
        book.record(&admitted(0, 0, None, Termination::SourceLiveFull), Instant::now());
        let b = &book.backends[0];
        assert_eq!((b.queue_shed, b.source_queue_full, b.source_live_full), (1, 2, 1));
        assert_eq!((b.queue_full, b.queue_timeouts), (0, 0));
    }
}
