//! `GET /metrics`: a [`Snapshot`] in the Prometheus text exposition format
//! (version 0.0.4). Names follow the Prometheus conventions and HAProxy's
//! exporter: `usher_<scope>_<what>[_total]`, scopes `global`, `frontend`,
//! `listener`, `backend` and `server`, labelled by name
//! (`usher_server_sessions_current{backend="app",server="s1"}`). Counters end
//! in `_total`; limits of 0 mean "none", as in the configuration. Rates
//! are left to Prometheus (`rate()` of the counters); queue waits since
//! start are a histogram, `usher_backend_queue_wait_seconds`.

use std::fmt::Write as _;

use super::stats_json::{BackendStats, FrontendStats, ListenerStats, ServerStats, Snapshot};
use crate::observe::stats_book::{Counters, RouteCounters};
use crate::observe::wait_histogram::WaitHistogram;

/// The `Content-Type` of the exposition format.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const OP_STATES: [&str; 3] = ["UP", "DOWN", "STARTING"];
const ADMIN_STATES: [&str; 3] = ["ready", "drain", "maint"];

type Labels = Vec<(&'static str, String)>;

/// Writes metric families: `# HELP`, `# TYPE`, then the samples.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (key, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{key}=\"{}\"", escape(val));
                }
                self.out.push('}');
            }
            let _ = writeln!(self.out, " {value}");
        }
    }

    fn gauge(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) {
        self.family(name, "gauge", help, samples);
    }

    fn counter(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) {
        self.family(name, "counter", help, samples);
    }

    /// A histogram of waits in seconds: cumulative `_bucket`s at
    /// [`HISTOGRAM_BOUNDS_MS`] and `+Inf`, then `_sum` and `_count`.
    fn histogram(&mut self, name: &str, help: &str, samples: &[(Labels, &WaitHistogram)]) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} histogram");
        for (labels, h) in samples {
            let bounds = HISTOGRAM_BOUNDS_MS.iter().map(|&ms| (seconds(ms), h.count_at_most(ms)));
            for (le, count) in bounds.chain([("+Inf".to_owned(), h.count())]) {
                let _ = writeln!(self.out, "{name}_bucket{{{}le=\"{le}\"}} {count}", label_list(labels, ","));
            }
            let braces = |l: &Labels| if l.is_empty() { String::new() } else { format!("{{{}}}", label_list(l, "")) };
            let _ = writeln!(self.out, "{name}_sum{} {}", braces(labels), seconds(h.sum_ms()));
            let _ = writeln!(self.out, "{name}_count{} {}", braces(labels), h.count());
        }
    }
}

/// The `le` bounds of the wait histograms: powers of two from 1 ms to
/// 2^22 ms (70 minutes); every one is an edge of the book's buckets, so the
/// counts are exact. Longer waits only count in `+Inf`.
const HISTOGRAM_BOUNDS_MS: [u64; 23] = {
    let mut out = [0; 23];
    let mut i = 0;
    while i < 23 {
        out[i] = 1 << i;
        i += 1;
    }
    out
};

/// Milliseconds as seconds, exactly (`0.001`, `4194.304`).
fn seconds(ms: u64) -> String {
    match ms % 1000 {
        0 => (ms / 1000).to_string(),
        frac => format!("{}.{}", ms / 1000, format!("{frac:03}").trim_end_matches('0')),
    }
}

/// `key="value"` pairs joined by commas, with `trailing` after the last.
fn label_list(labels: &Labels, trailing: &str) -> String {
    let pairs: Vec<String> = labels.iter().map(|(key, val)| format!("{key}=\"{}\"", escape(val))).collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{}{trailing}", pairs.join(","))
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A counter every scope with totals has: name suffix, help, field.
type Total = (&'static str, &'static str, fn(&Counters) -> u64);

const TOTALS: [Total; 13] = [
    ("sessions_total", "Ended sessions.", |c| c.sessions_total),
    ("bytes_in_total", "Bytes relayed from clients.", |c| c.bytes_in),
    ("bytes_out_total", "Bytes relayed from servers.", |c| c.bytes_out),
    ("connect_errors_total", "Sessions that ended on a failed server connection (SC/sC).", |c| c.connect_errors),
    ("retries_total", "Connection attempts after the first.", |c| c.retries),
    ("redispatches_total", "Sessions a retry moved to another server.", |c| c.redispatches),
    ("queue_timeouts_total", "Sessions whose timeout.queue expired (sQ).", |c| c.queue_timeouts),
    ("queue_full_total", "Sessions refused by a full queue (SQ).", |c| c.queue_full),
    ("queue_aborts_total", "Clients that left while queued (CQ).", |c| c.queue_aborts),
    ("queue_shed_total", "Sessions the queue discipline refused under overload (PQ).", |c| c.queue_shed),
    ("source_queue_full_total", "Sessions refused by their source's queued cap (PS).", |c| c.source_queue_full),
    ("source_live_full_total", "Sessions refused by their source's live cap (PL).", |c| c.source_live_full),
    ("probes_total", "Clients that left having sent nothing, never queued: probes (CN).", |c| c.probes),
];

pub(super) fn render(s: &Snapshot) -> String {
    let mut e = Exposition { out: String::with_capacity(16 * 1024) };
    process(&mut e, s);
    global(&mut e, s);
    frontends(&mut e, s);
    listeners(&mut e, s);
    backends(&mut e, &s.backends);
    servers(&mut e, &s.backends);
    spawned(&mut e, &s.backends);
    cluster(&mut e, s);
    e.out
}

/// Prometheus's conventions: the version as a label of a constant 1, the
/// start time in seconds since the epoch (uptime is `time() - start`).
fn process(e: &mut Exposition, s: &Snapshot) {
    let g = &s.global;
    e.gauge("usher_build_info", "Always 1; the version is a label.", [(vec![("version", g.version.to_owned())], 1)]);
    e.gauge(
        "usher_process_start_time_seconds",
        "Start time of the process, seconds since the Unix epoch.",
        [(vec![], g.started_at_unix_s)],
    );
}

fn global(e: &mut Exposition, s: &Snapshot) {
    let g = &s.global;
    e.gauge(
        "usher_global_sessions_current",
        "Live sessions in the process.",
        [(vec![], u64::from(g.sessions_current))],
    );
    e.gauge("usher_global_sessions_max", "Most live sessions at once.", [(vec![], u64::from(g.sessions_max))]);
    e.gauge(
        "usher_global_sessions_limit",
        "global.maxconn in force (the fd budget when unset).",
        [(vec![], u64::from(g.sessions_limit))],
    );
    if let Some(budget) = g.fd_budget {
        e.gauge("usher_fd_limit", "Soft RLIMIT_NOFILE of the process.", [(vec![], budget.nofile)]);
        e.gauge("usher_fd_budget_sessions", "Sessions the fd limit allows.", [(vec![], budget.sessions)]);
    }
    let w = &g.watchdog;
    e.counter(
        "usher_watchdog_limit_reached_total",
        "Times a global, frontend or listener maxconn was reached.",
        [(vec![], w.limit_reached)],
    );
    e.counter(
        "usher_watchdog_rate_limited_total",
        "Times a rate limit held a listener back.",
        [(vec![], w.rate_limited)],
    );
    e.counter(
        "usher_watchdog_shortages_total",
        "Accepts that failed for lack of fds or memory.",
        [(vec![], w.shortages)],
    );
}

fn frontends(e: &mut Exposition, s: &Snapshot) {
    let each = |value: fn(&FrontendStats) -> u64| -> Vec<(Labels, u64)> {
        s.frontends.iter().map(|x| (vec![("frontend", x.name.clone())], value(x))).collect()
    };
    e.gauge("usher_frontend_sessions_current", "Live sessions of the frontend.", each(|x| x.sessions_current.into()));
    e.gauge(
        "usher_frontend_sessions_max",
        "Most live sessions of the frontend at once.",
        each(|x| x.sessions_max.into()),
    );
    e.gauge(
        "usher_frontend_sessions_limit",
        "Frontend maxconn in force (0 = only the global limit).",
        each(|x| x.sessions_limit.into()),
    );
    e.gauge("usher_frontend_stress", "1 while the frontend is in stress mode.", each(|x| x.stress.into()));
    for (suffix, help, field) in TOTALS {
        let samples = s.frontends.iter().map(|x| (vec![("frontend", x.name.clone())], field(&x.totals)));
        e.counter(&format!("usher_frontend_{suffix}"), help, samples);
    }
    let by_code = s.frontends.iter().flat_map(|x| {
        x.totals
            .terminations
            .iter()
            .map(|(code, n)| (vec![("frontend", x.name.clone()), ("code", (*code).to_owned())], *n))
    });
    e.counter("usher_frontend_terminations_total", "Ended sessions by termination code.", by_code);
    let per_route = |value: fn(&RouteCounters) -> u64| -> Vec<(Labels, u64)> {
        s.frontends
            .iter()
            .flat_map(|x| {
                x.totals
                    .routes
                    .iter()
                    .map(move |(rule, r)| (vec![("frontend", x.name.clone()), ("route", rule.to_string())], value(r)))
            })
            .collect()
    };
    e.counter(
        "usher_frontend_route_sessions_total",
        "Ended sessions whose backend a routing rule chose, by rule index.",
        per_route(|r| r.sessions_total),
    );
    e.counter(
        "usher_frontend_route_spill_overs_total",
        "Of those, sessions sent to the rule's overflow backend.",
        per_route(|r| r.spill_overs),
    );
}

fn listeners(e: &mut Exposition, s: &Snapshot) {
    let labels =
        |x: &ListenerStats| -> Labels { vec![("frontend", x.frontend.clone()), ("address", x.address.to_string())] };
    let each = |value: fn(&ListenerStats) -> u64| -> Vec<(Labels, u64)> {
        s.listeners.iter().map(|x| (labels(x), value(x))).collect()
    };
    e.gauge(
        "usher_listener_sessions_current",
        "Live sessions accepted on the address.",
        each(|x| x.sessions_current.into()),
    );
    e.gauge(
        "usher_listener_sessions_max",
        "Most live sessions on the address at once.",
        each(|x| x.sessions_max.into()),
    );
    e.gauge(
        "usher_listener_sessions_limit",
        "bind_maxconn of the address (0 = none).",
        each(|x| x.sessions_limit.into()),
    );
    let states = s.listeners.iter().map(|x| {
        let mut l = labels(x);
        l.push(("state", x.state.clone()));
        (l, 1)
    });
    e.gauge("usher_listener_state", "1 for the listener's state: OPEN, FULL or PAUSED(reason).", states);
}

fn backends(e: &mut Exposition, b: &[BackendStats]) {
    let each = |value: fn(&BackendStats) -> u64| -> Vec<(Labels, u64)> {
        b.iter().map(|x| (vec![("backend", x.name.clone())], value(x))).collect()
    };
    e.gauge(
        "usher_backend_sessions_current",
        "Sessions holding a slot of one of the backend's servers.",
        each(|x| x.sessions_current.into()),
    );
    e.gauge(
        "usher_backend_sessions_max",
        "Most sessions the backend's servers held at once.",
        each(|x| x.sessions_max.into()),
    );
    e.gauge("usher_backend_queue_current", "Sessions in the backend queue.", each(|x| x.queue_current as u64));
    e.gauge("usher_backend_queue_max", "Longest the backend queue was.", each(|x| x.queue_max as u64));
    e.gauge("usher_backend_queue_limit", "Backend maxqueue (0 = unbounded).", each(|x| x.queue_limit.into()));
    e.gauge("usher_backend_paused", "1 while an operator paused the backend.", each(|x| u64::from(x.paused)));
    e.gauge(
        "usher_backend_paused_since_seconds",
        "When the backend was paused, in seconds since the Unix epoch (0 = not paused).",
        each(|x| x.paused_since.unwrap_or(0)),
    );
    e.counter(
        "usher_backend_balancer_bad_picks_total",
        "Balancer picks the core did not follow (no such server, one that cannot take it, a panic).",
        each(|x| x.balancer_bad_picks),
    );
    for (suffix, help, field) in TOTALS {
        let samples = b.iter().map(|x| (vec![("backend", x.name.clone())], field(&x.totals)));
        e.counter(&format!("usher_backend_{suffix}"), help, samples);
    }
    let by_code = b.iter().flat_map(|x| {
        x.totals
            .terminations
            .iter()
            .map(|(code, n)| (vec![("backend", x.name.clone()), ("code", (*code).to_owned())], *n))
    });
    e.counter("usher_backend_terminations_total", "Ended sessions by termination code.", by_code);
    let waits: Vec<(Labels, &WaitHistogram)> =
        b.iter().map(|x| (vec![("backend", x.name.clone())], &x.queue_waits_since_start)).collect();
    e.histogram(
        "usher_backend_queue_wait_seconds",
        "Time ended sessions waited for their first slot (queue_ms), since start.",
        &waits,
    );
    let by_class: Vec<(Labels, &WaitHistogram)> = b
        .iter()
        .flat_map(|x| {
            x.queue_waits_by_class_since_start
                .iter()
                .map(|(class, h)| (vec![("backend", x.name.clone()), ("class", class.to_string())], h))
        })
        .collect();
    e.histogram(
        "usher_backend_class_queue_wait_seconds",
        "Time ended sessions waited for their first slot, per priority class, since start.",
        &by_class,
    );
}

/// Spawned backends only: their throttle and each process slot's process
/// (its sessions are `usher_server_sessions_current`).
fn spawned(e: &mut Exposition, b: &[BackendStats]) {
    use super::spawn_stats::PROCESS_STATES;
    let spawned: Vec<&BackendStats> = b.iter().filter(|x| x.spawn.is_some()).collect();
    if spawned.is_empty() {
        return;
    }
    let backend = |x: &BackendStats| -> Labels { vec![("backend", x.name.clone())] };
    e.gauge(
        "usher_spawn_throttled",
        "1 while the backend refuses its clients (ST) after failed starts of its command.",
        spawned.iter().map(|x| (backend(x), u64::from(x.spawn.as_ref().is_some_and(|s| s.throttled))))
            .collect::<Vec<_>>(),
    );
    e.gauge(
        "usher_spawn_start_failures_consecutive",
        "Failed starts in a row of the backend's command.",
        spawned.iter().map(|x| (backend(x), u64::from(x.spawn.as_ref().map_or(0, |s| s.start_failures))))
            .collect::<Vec<_>>(),
    );
    let slots: Vec<(Labels, &super::spawn_stats::ProcessStats)> = spawned
        .iter()
        .flat_map(|x| {
            x.servers.iter().filter_map(move |s| {
                s.process.as_ref().map(|p| (vec![("backend", x.name.clone()), ("server", s.name.clone())], p))
            })
        })
        .collect();
    let each = |value: &dyn Fn(&super::spawn_stats::ProcessStats) -> u64| -> Vec<(Labels, u64)> {
        slots.iter().map(|(l, p)| (l.clone(), value(p))).collect()
    };
    e.gauge("usher_spawn_process_pid", "Process id of the slot's process (0 while none runs).", each(&|p| p.pid.map_or(0, u64::from)));
    e.gauge("usher_spawn_process_uses", "Sessions the slot's current process was granted.", each(&|p| p.uses.into()));
    e.counter("usher_spawn_process_restarts_total", "Processes started in the slot after its first.", each(&|p| p.restarts.into()));
    let states: Vec<(Labels, u64)> = slots
        .iter()
        .flat_map(|(l, p)| {
            PROCESS_STATES.iter().map(move |state| {
                let mut l = l.clone();
                l.push(("state", (*state).to_owned()));
                (l, u64::from(p.state == *state))
            })
        })
        .collect();
    e.gauge(
        "usher_spawn_process_state",
        "1 for the slot's process state (empty, starting, ready, draining, stopping), 0 for the others.",
        states,
    );
}

/// Cluster mode only: nothing is exposed when running alone.
fn cluster(e: &mut Exposition, s: &Snapshot) {
    let Some(status) = &s.cluster else { return };
    e.gauge("usher_cluster_members", "Live instances in the cluster (this one included).", [(vec![], status.members as u64)]);
    e.gauge(
        "usher_cluster_in_lease",
        "1 while this instance's etcd lease is surely alive (shares are the cluster's, not the fallback).",
        [(vec![], u64::from(status.in_lease))],
    );
    e.counter("usher_cluster_store_errors_total", "Rounds that could not reach etcd.", [(vec![], status.store_errors)]);
    let shares: Vec<(Labels, u64)> = s
        .backends
        .iter()
        .flat_map(|b| {
            b.servers.iter().filter_map(move |x| {
                x.cluster_share.map(|share| (vec![("backend", b.name.clone()), ("server", x.name.clone())], u64::from(share)))
            })
        })
        .collect();
    e.gauge("usher_server_cluster_share", "This instance's share of the server's maxconn.", shares);
}

fn servers(e: &mut Exposition, b: &[BackendStats]) {
    let all: Vec<(&BackendStats, &ServerStats)> =
        b.iter().flat_map(|x| x.servers.iter().map(move |s| (x, s))).collect();
    let labels = |(b, s): (&BackendStats, &ServerStats)| -> Labels {
        vec![("backend", b.name.clone()), ("server", s.name.clone())]
    };
    let each = |value: &dyn Fn(&ServerStats) -> u64| -> Vec<(Labels, u64)> {
        all.iter().map(|&(b, s)| (labels((b, s)), value(s))).collect()
    };
    let by_state = |states: &[&'static str], current: fn(&ServerStats) -> &str| -> Vec<(Labels, u64)> {
        all.iter()
            .flat_map(|&(b, s)| {
                states.iter().map(move |state| {
                    let mut l = labels((b, s));
                    l.push(("state", (*state).to_owned()));
                    (l, u64::from(current(s) == *state))
                })
            })
            .collect()
    };
    e.gauge(
        "usher_server_sessions_current",
        "Sessions holding one of the server's slots.",
        each(&|s| s.sessions_current.into()),
    );
    e.gauge("usher_server_sessions_max", "Most sessions the server held at once.", each(&|s| s.sessions_max.into()));
    e.gauge(
        "usher_server_sessions_limit",
        "Server maxconn in force (0 = unlimited).",
        each(&|s| s.sessions_limit.into()),
    );
    e.gauge("usher_server_queue_current", "Sessions in the server's own queue.", each(&|s| s.queue_current as u64));
    e.gauge("usher_server_queue_max", "Longest the server's own queue was.", each(&|s| s.queue_max as u64));
    e.gauge("usher_server_queue_limit", "Server maxqueue (0 = unbounded).", each(&|s| s.queue_limit.into()));
    e.gauge("usher_server_weight", "Weight in force (0 = no new balanced sessions).", each(&|s| s.weight.into()));
    e.gauge(
        "usher_server_up",
        "1 while the server may take sessions (UP or STARTING, not in maintenance).",
        each(&|s| u64::from(s.op != "DOWN" && s.admin != "maint")),
    );
    e.gauge(
        "usher_server_op_state",
        "1 for the server's operational state (UP, DOWN, STARTING), 0 for the others.",
        by_state(&OP_STATES, |s| s.op),
    );
    e.gauge(
        "usher_server_admin_state",
        "1 for the server's administrative state (ready, drain, maint), 0 for the others.",
        by_state(&ADMIN_STATES, |s| s.admin),
    );
    e.gauge(
        "usher_server_check_failures_consecutive",
        "Consecutive failed health checks.",
        each(&|s| s.check.failed.into()),
    );
    e.gauge(
        "usher_server_last_change_seconds",
        "Seconds since the server's state last changed.",
        each(&|s| s.last_change_seconds),
    );
    for (suffix, help, field) in TOTALS {
        e.counter(&format!("usher_server_{suffix}"), help, each(&|s| field(&s.totals)));
    }
    let waits: Vec<(Labels, &WaitHistogram)> = all.iter().map(|&(b, s)| (labels((b, s)), &s.queue_waits_since_start)).collect();
    e.histogram(
        "usher_server_queue_wait_seconds",
        "Time the sessions seated on the server waited for their first slot (with hashing: pinned waits), since start.",
        &waits,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let mut h = WaitHistogram::default();
        for ms in [0, 1, 3, 1500, 9_000_000] {
            h.record(std::time::Duration::from_millis(ms));
        }
        let mut e = Exposition { out: String::new() };
        e.histogram("usher_w_seconds", "Help.", &[(vec![("backend", "app".to_owned())], &h)]);
        let lines: Vec<&str> = e.out.lines().collect();
        assert_eq!(lines[..5], [
            "# HELP usher_w_seconds Help.",
            "# TYPE usher_w_seconds histogram",
            "usher_w_seconds_bucket{backend=\"app\",le=\"0.001\"} 2",
            "usher_w_seconds_bucket{backend=\"app\",le=\"0.002\"} 2",
            "usher_w_seconds_bucket{backend=\"app\",le=\"0.004\"} 3",
        ]);
        assert!(e.out.contains("usher_w_seconds_bucket{backend=\"app\",le=\"2.048\"} 4\n"), "{}", e.out);
        assert!(e.out.contains("usher_w_seconds_bucket{backend=\"app\",le=\"4194.304\"} 4\n"), "{}", e.out);
        assert!(e.out.ends_with(
            "usher_w_seconds_bucket{backend=\"app\",le=\"+Inf\"} 5\n\
             usher_w_seconds_sum{backend=\"app\"} 9001.504\n\
             usher_w_seconds_count{backend=\"app\"} 5\n"
        ));
    }

    #[test]
    fn milliseconds_print_as_exact_seconds() {
        assert_eq!([seconds(0), seconds(1), seconds(20), seconds(1500), seconds(4_194_304)], [
            "0", "0.001", "0.02", "1.5", "4194.304"
        ]);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition { out: String::new() };
        e.gauge("usher_x", "Help.", [(vec![("frontend", r#"a"b\c"#.to_owned())], 3)]);
        assert_eq!(e.out, "# HELP usher_x Help.\n# TYPE usher_x gauge\nusher_x{frontend=\"a\\\"b\\\\c\"} 3\n");
    }
}
