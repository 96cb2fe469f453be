//! The performance targets, checked against one run: medians, and the
//! median of the paired ratios (`report.rs`).

use crate::proxies::ProxyKind::{self, Direct, Haproxy, Usher};
use crate::report::{number, CaseResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    /// A figure it needs was not measured (HAProxy absent, a run failed).
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub target: String,
    pub status: Status,
    pub detail: String,
}

pub fn evaluate(results: &[CaseResult]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for r in results {
        let label = r.title.split(';').next().unwrap_or(&r.title).to_owned();
        let verdict = match r.case {
            "connrate" => faster_and_tighter(r, "sessions/s", 1.10),
            "keepalive" => faster_and_tighter(r, "round trips/s", 1.05),
            "throughput" => throughput(r),
            "idle" => idle(r),
            "queue" => queue(r),
            "actors" => actors(r),
            _ => continue,
        };
        out.push(Verdict { target: label, status: verdict.0, detail: verdict.1 });
    }
    out
}

pub fn render(verdicts: &[Verdict]) -> String {
    let mut out = String::from("\n== targets\n");
    for v in verdicts {
        let status = match v.status {
            Status::Met => "met",
            Status::Missed => "MISSED",
            Status::Unknown => "not measured",
        };
        out.push_str(&format!("  {status:<12} {}\n  {:<12} {}\n", v.target, "", v.detail));
    }
    out
}

fn med(r: &CaseResult, p: ProxyKind, metric: &str) -> Option<f64> {
    r.median(p, metric)
}

fn status(ok: Option<bool>) -> Status {
    match ok {
        Some(true) => Status::Met,
        Some(false) => Status::Missed,
        None => Status::Unknown,
    }
}

fn ratio_text(r: &CaseResult, other: ProxyKind, metric: &str, want: f64) -> String {
    match r.ratio(other, metric) {
        Some(x) => format!("{metric} usher/{} {x:.2}× (want ≥ {want:.2}×)", other.name()),
        None => format!("{metric} usher/{}: not measured", other.name()),
    }
}

fn faster_and_tighter(r: &CaseResult, rate: &str, want: f64) -> (Status, String) {
    let ratio = r.ratio(Haproxy, rate);
    let p99 = med(r, Usher, "p99 ms").zip(med(r, Haproxy, "p99 ms"));
    let ok = ratio.zip(p99).map(|(x, (u, h))| x >= want && u <= h);
    let p99_text = p99.map_or("p99: not measured".to_owned(), |(u, h)| format!("p99 {u:.3} ms vs {h:.3} ms"));
    (status(ok), format!("{}; {p99_text} (want ≤)", ratio_text(r, Haproxy, rate, want)))
}

fn throughput(r: &CaseResult) -> (Status, String) {
    let vs_haproxy = r.ratio(Haproxy, "Gbit/s");
    let vs_direct = r.ratio(Direct, "Gbit/s");
    let cpu = med(r, Usher, "proxy CPU s/GB").zip(med(r, Haproxy, "proxy CPU s/GB"));
    let ok = vs_haproxy.zip(vs_direct).zip(cpu).map(|((h, d), (cu, ch))| h >= 1.2 && d >= 0.6 && cu < ch);
    let cpu_text =
        cpu.map_or("CPU/GB: not measured".to_owned(), |(u, h)| format!("CPU {u:.3} vs {h:.3} s/GB (want <)"));
    let detail =
        format!("{}; {}; {cpu_text}", ratio_text(r, Haproxy, "Gbit/s", 1.2), ratio_text(r, Direct, "Gbit/s", 0.6));
    (status(ok), detail)
}

fn idle(r: &CaseResult) -> (Status, String) {
    let rss = med(r, Usher, "RSS KiB/conn").zip(med(r, Haproxy, "RSS KiB/conn"));
    let detail =
        rss.map_or("RSS/conn: not measured".to_owned(), |(u, h)| format!("RSS/conn {u:.2} KiB vs {h:.2} KiB (want ≤)"));
    (status(rss.map(|(u, h)| u <= h)), detail)
}

fn queue(r: &CaseResult) -> (Status, String) {
    let ratio = r.ratio(Haproxy, "sessions/s");
    let stuck: f64 = r.values(Usher, "stuck").iter().sum();
    let peak =
        r.values(Usher, "peak/server").into_iter().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let limit = f64::from(crate::cases::QUEUE_SERVER_MAXCONN);
    let ok = ratio.zip(peak).map(|(x, p)| x >= 1.2 && stuck == 0.0 && p <= limit);
    let detail = format!(
        "{}; usher stuck {} (want 0); usher peak/server {} (want ≤ {limit})",
        ratio_text(r, Haproxy, "sessions/s", 1.2),
        number(stuck, 0),
        peak.map_or("-".to_owned(), |p| number(p, 0)),
    );
    (status(ok), detail)
}

fn actors(r: &CaseResult) -> (Status, String) {
    let rate = med(r, Usher, "cycles/s");
    let detail = rate.map_or("not measured".to_owned(), |x| format!("{} cycles/s (want ≥ 1 000 000)", number(x, 0)));
    (status(rate.map(|x| x >= 1e6)), detail)
}
