//! The text `usher status` prints: three aligned tables (frontends with
//! their listeners, backends, servers) under a one-line summary. States and
//! full limits are styled; the caller's stream drops the styles when stdout
//! is not a terminal (`anstream`), so piped output is plain text.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use super::stats_view::{BackendView, FrontendView, ListenerView, ServerView, StatsView};

const GOOD: Style = AnsiColor::Green.on_default();
const WARN: Style = AnsiColor::Yellow.on_default();
const BAD: Style = AnsiColor::Red.on_default().bold();
const HEADER: Style = Style::new().bold();
const PLAIN: Style = Style::new();

/// One cell: its text (what widths are measured on) and its style.
struct Cell {
    text: String,
    style: Style,
}

fn cell(text: impl Into<String>) -> Cell {
    Cell { text: text.into(), style: PLAIN }
}

fn styled(text: impl Into<String>, style: Style) -> Cell {
    Cell { text: text.into(), style }
}

/// Columns padded to their widest cell, two spaces apart.
struct Table {
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn new(headers: &[&str]) -> Table {
        Table { rows: vec![headers.iter().map(|h| styled(*h, HEADER)).collect()] }
    }

    fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    fn render(&self, out: &mut String) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.text.chars().count()).max().unwrap_or(0))
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let last = c + 1 == row.len();
                let pad = if last { 0 } else { widths[c] - cell.text.chars().count() + 2 };
                // Padding stays outside the style so underlines and
                // backgrounds never run into the gap.
                let _ = write!(line, "{}{}{}{:pad$}", cell.style.render(), cell.text, cell.style.render_reset(), "");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// `current/limit`, with `-` for no limit (a limit of 0 means none).
fn of_limit(current: u64, limit: u64) -> String {
    if limit == 0 {
        format!("{current}/-")
    } else {
        format!("{current}/{limit}")
    }
}

/// Red at a limit, plain below it.
fn usage(current: u64, limit: u64) -> Cell {
    let style = if limit != 0 && current >= limit { BAD } else { PLAIN };
    styled(of_limit(current, limit), style)
}

/// A queue: yellow while someone waits, red when full.
fn queue(current: u64, limit: u64) -> Cell {
    let style = match current {
        0 => PLAIN,
        n if limit != 0 && n >= limit => BAD,
        _ => WARN,
    };
    styled(of_limit(current, limit), style)
}

/// Its status, with what DNS says of a server from DNS when it is not
/// plainly resolved: `DOWN(unresolved)`, `UP(dns stale)`.
fn server_state(s: &ServerView) -> Cell {
    let style = match s.status.as_str() {
        "UP" => GOOD,
        "DOWN" => BAD,
        _ => WARN,
    };
    let dns = s.resolution.as_ref().map(|r| r.state.as_str()).filter(|state| *state != "resolved");
    match (&s.down_reason, dns) {
        (Some(reason), _) => styled(format!("{}({reason})", s.status), style),
        (None, Some(state)) => styled(format!("{}(dns {state})", s.status), WARN),
        (None, None) => styled(&s.status, style),
    }
}

fn listener_state(state: &str) -> Style {
    match state {
        "OPEN" => GOOD,
        "FULL" => BAD,
        _ => WARN,
    }
}

/// The whole status text of one `/stats` answer from `source` (the URL).
pub fn render(stats: &StatsView, source: &str) -> String {
    let mut out = String::new();
    let g = &stats.global;
    let stressed = if g.stressed.is_empty() { "none".to_owned() } else { g.stressed.join(", ") };
    let version = g.version.as_deref().map_or(String::new(), |v| format!(" {v}"));
    let uptime = g.uptime_s.map_or(String::new(), |s| format!(", up {}", uptime(s)));
    let _ = writeln!(
        out,
        "usher{version} at {source}{uptime}: sessions {} (max {}), stress: {stressed}\n",
        of_limit(g.sessions_current, g.sessions_limit),
        g.sessions_max
    );
    frontends(&mut out, &stats.frontends, &stats.listeners);
    out.push('\n');
    backends(&mut out, &stats.backends);
    out.push('\n');
    servers(&mut out, &stats.backends);
    out
}

/// Uptime in its two largest units: `3d4h`, `2h5m`, `5m3s`, `42s`.
fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// A wait: ms under 10 s, then whole seconds, minutes, hours (as the
/// dashboard writes it).
fn wait(ms: u64) -> String {
    match (ms + 500) / 1000 {
        _ if ms < 10_000 => format!("{ms}ms"),
        s if s < 600 => format!("{s}s"),
        s if s < 36_000 => format!("{}min", (s + 30) / 60),
        s => format!("{}h", (s + 1800) / 3600),
    }
}

fn frontends(out: &mut String, frontends: &[FrontendView], listeners: &[ListenerView]) {
    let mut table = Table::new(&["FRONTEND", "BACKEND", "SESSIONS", "MAX", "STRESS", "LISTENERS"]);
    for f in frontends {
        let mut row = vec![
            cell(&f.name),
            cell(&f.backend),
            usage(f.sessions_current, f.sessions_limit),
            cell(f.sessions_max.to_string()),
            if f.stress { styled("yes", WARN) } else { cell("no") },
        ];
        // Each listener as `ADDRESS STATE sessions/bind_maxconn`, side by side.
        for l in listeners.iter().filter(|l| l.frontend == f.name) {
            row.push(styled(
                format!("{} {} {}", l.address, l.state, of_limit(l.sessions_current, l.sessions_limit)),
                listener_state(&l.state),
            ));
        }
        table.push(row);
    }
    table.render(out);
}

fn backends(out: &mut String, backends: &[BackendView]) {
    let mut table = Table::new(&["BACKEND", "BALANCE", "SESSIONS", "QUEUE", "SERVERS UP", "SESS/S", "WAIT P99"]);
    for b in backends {
        let up = b.servers.iter().filter(|s| s.status == "UP").count();
        let servers_up = format!("{up}/{}", b.servers.len());
        let up_style = if up == 0 && !b.servers.is_empty() { BAD } else { PLAIN };
        table.push(vec![
            cell(&b.name),
            cell(&b.balance),
            cell(b.sessions_current.to_string()),
            queue(b.queue_current, b.queue_limit),
            styled(servers_up, up_style),
            // Over the last ten seconds, and waits over the last minute:
            // `-` when nothing was measured (or the daemon predates them).
            cell(b.sessions_per_second.map_or("-".to_owned(), |r| format!("{r:.1}"))),
            cell(b.queue_wait_ms.as_ref().filter(|w| w.count > 0).map_or("-".to_owned(), |w| wait(w.p99))),
        ]);
    }
    table.render(out);
}

fn servers(out: &mut String, backends: &[BackendView]) {
    let mut table = Table::new(&["BACKEND", "SERVER", "ADDRESS", "STATE", "SESSIONS", "QUEUE", "WEIGHT"]);
    for b in backends {
        for s in &b.servers {
            table.push(server_row(&b.name, s));
        }
    }
    table.render(out);
}

fn server_row(backend: &str, s: &ServerView) -> Vec<Cell> {
    // The limit in force: slowstart or dynamic maxconn may hold it below maxconn.
    let limit = s.sessions_limit_effective.unwrap_or(s.sessions_limit);
    vec![
        cell(backend),
        cell(&s.name),
        cell(&s.address),
        server_state(s),
        usage(s.sessions_current, limit),
        queue(s.queue_current, s.queue_limit),
        cell(s.weight.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> StatsView {
        serde_json::from_str(
            r#"{
  "global": {"sessions_current": 2, "sessions_max": 3, "sessions_limit": 100, "stressed": [], "admitted": 2,
             "version": "1.2.3", "uptime_s": 7384},
  "frontends": [{"name": "web", "backend": "app", "sessions_current": 2, "sessions_max": 3,
                 "sessions_limit": 0, "stress": false, "probes": 0}],
  "listeners": [{"frontend": "web", "address": "127.0.0.1:8080", "state": "OPEN",
                 "sessions_current": 2, "sessions_max": 3, "sessions_limit": 0}],
  "backends": [{"name": "app", "balance": "roundrobin", "sessions_current": 1, "queue_current": 1,
                "queue_limit": 0, "sessions_per_second": 12.5,
                "queue_wait_ms": {"p50": 3, "p90": 80, "p99": 1200, "max": 1500, "count": 40}, "servers": [
    {"name": "s1", "address": "127.0.0.1:9001", "status": "UP", "weight": 1, "sessions_current": 1,
     "sessions_limit": 1, "sessions_limit_effective": null, "queue_current": 0, "queue_limit": 0}]}]
}"#,
        )
        .expect("stats JSON")
    }

    #[test]
    fn names_every_figure_in_aligned_columns() {
        let text = render(&stats(), "http://127.0.0.1:9900");
        let plain = String::from_utf8(anstream::adapter::strip_bytes(text.as_bytes()).into_vec()).expect("utf-8");
        assert!(
            plain.starts_with("usher 1.2.3 at http://127.0.0.1:9900, up 2h3m: sessions 2/100 (max 3), stress: none"),
            "{plain}"
        );
        let server = plain.lines().find(|l| l.contains("s1")).expect("server row");
        let words: Vec<&str> = server.split_whitespace().collect();
        assert_eq!(words, ["app", "s1", "127.0.0.1:9001", "UP", "1/1", "0/-", "1"], "{plain}");
        let backend = plain.lines().find(|l| l.starts_with("app ")).expect("backend row");
        assert_eq!(
            backend.split_whitespace().collect::<Vec<_>>(),
            ["app", "roundrobin", "1", "1/-", "1/1", "12.5", "1200ms"]
        );
        let frontend = plain.lines().find(|l| l.starts_with("web ")).expect("frontend row");
        assert!(frontend.ends_with("127.0.0.1:8080 OPEN 2/-"), "{frontend:?}");
        // Columns line up: the SESSIONS header starts where the server's figure does.
        let header = plain.lines().find(|l| l.contains("SERVER ")).expect("server header");
        assert_eq!(header.find("SESSIONS"), server.find("1/1"), "{plain}");
    }

    #[test]
    fn a_daemon_without_rates_or_waits_shows_dashes() {
        let mut old = stats();
        old.global.version = None;
        old.global.uptime_s = None;
        old.backends[0].sessions_per_second = None;
        old.backends[0].queue_wait_ms = None;
        let plain =
            String::from_utf8(anstream::adapter::strip_bytes(render(&old, "x").as_bytes()).into_vec()).expect("utf-8");
        assert!(plain.starts_with("usher at x: sessions"), "{plain}");
        let backend = plain.lines().find(|l| l.starts_with("app ")).expect("backend row");
        assert_eq!(backend.split_whitespace().collect::<Vec<_>>()[4..], ["1/1", "-", "-"], "{backend:?}");
    }

    #[test]
    fn uptimes_and_waits_read_in_their_largest_units() {
        assert_eq!(
            [uptime(42), uptime(303), uptime(7384), uptime(3 * 86_400 + 4 * 3600)],
            ["42s", "5m3s", "2h3m", "3d4h"]
        );
        assert_eq!(
            [wait(0), wait(9_999), wait(10_400), wait(900_000), wait(7_200_000 * 6)],
            ["0ms", "9999ms", "10s", "15min", "12h"]
        );
    }

    #[test]
    fn a_full_server_is_styled_and_plain_text_has_no_escapes() {
        let text = render(&stats(), "x");
        assert!(text.contains(&format!("{}1/1", BAD.render())), "a server at maxconn stands out: {text:?}");
        let plain = anstream::adapter::strip_bytes(text.as_bytes()).into_vec();
        assert!(!plain.contains(&0x1b), "stripped text keeps an escape");
    }

    /// A server from DNS shows what DNS says when it is not plainly
    /// resolved: a name that never resolved, and one whose last resolution
    /// failed (its servers stay).
    #[test]
    fn a_server_from_dns_shows_an_unresolved_or_stale_name() {
        let row = |extra: &str| {
            let json = format!(
                r#"{{"name": "www-1", "address": "www.example:80", "status": "DOWN", "weight": 0,
                    "sessions_current": 0, "sessions_limit": 0, "sessions_limit_effective": null,
                    "queue_current": 0, "queue_limit": 0{extra}}}"#
            );
            let server: ServerView = serde_json::from_str(&json).expect("server JSON");
            server_state(&server).text
        };
        assert_eq!(row(""), "DOWN");
        assert_eq!(
            row(
                r#", "down_reason": "unresolved", "resolution": {"query": "www.example", "state": "unresolved", "error": "no records"}"#
            ),
            "DOWN(unresolved)"
        );
        assert_eq!(
            row(r#", "resolution": {"query": "www.example", "state": "stale", "error": "timed out"}"#),
            "DOWN(dns stale)"
        );
        assert_eq!(row(r#", "resolution": {"query": "www.example", "state": "resolved", "error": null}"#), "DOWN");
    }
}
