//! Results of one case variant and its table: median (min–max) per proxy,
//! and the ratios usher/HAProxy, usher/nginx and usher/direct.
//!
//! A ratio is paired: each round's usher run is divided by the same round's
//! run of the other (they ran seconds apart), and the table shows the median
//! of those (min–max). On a machine whose speed drifts from minute to minute
//! that cancels the drift, where a ratio of the two medians would not.

use std::fmt::Write as _;

use crate::proxies::ProxyKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// A count that should be zero (errors, stuck sessions).
    Zero,
}

#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub better: Better,
    pub decimals: usize,
}

impl Metric {
    pub const fn higher(name: &'static str, decimals: usize) -> Metric {
        Metric { name, better: Better::Higher, decimals }
    }
    pub const fn lower(name: &'static str, decimals: usize) -> Metric {
        Metric { name, better: Better::Lower, decimals }
    }
    pub const fn zero(name: &'static str) -> Metric {
        Metric { name, better: Better::Zero, decimals: 0 }
    }
}

/// All runs of one case variant. A value is `NaN` where a metric does not
/// apply to a proxy (CPU of `direct`).
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub case: &'static str,
    pub title: String,
    pub proxies: Vec<ProxyKind>,
    pub metrics: Vec<Metric>,
    /// (round, proxy, one value per metric), in the order they ran.
    pub runs: Vec<(usize, ProxyKind, Vec<f64>)>,
    pub errors: Vec<String>,
    /// Remarks on the runs (other processes busy during a run).
    pub notes: Vec<String>,
}

impl CaseResult {
    /// Every value of `metric` for `proxy`, one per successful run.
    pub fn values(&self, proxy: ProxyKind, metric: &str) -> Vec<f64> {
        let Some(i) = self.metrics.iter().position(|m| m.name == metric) else { return Vec::new() };
        self.runs.iter().filter(|(_, p, _)| *p == proxy).map(|(_, _, v)| v[i]).filter(|v| !v.is_nan()).collect()
    }

    /// usher / `other` for each round where both have a value.
    pub fn paired_ratios(&self, other: ProxyKind, metric: &str) -> Vec<f64> {
        self.paired_ratios_of(ProxyKind::Usher, other, metric)
    }

    /// `base` / `other` for each round where both have a value.
    pub fn paired_ratios_of(&self, base: ProxyKind, other: ProxyKind, metric: &str) -> Vec<f64> {
        let Some(i) = self.metrics.iter().position(|m| m.name == metric) else { return Vec::new() };
        let other_in =
            |round: usize| self.runs.iter().find(|(r, p, _)| *r == round && *p == other).map(|(_, _, v)| v[i]);
        self.runs
            .iter()
            .filter(|(_, p, _)| *p == base)
            .filter_map(|(round, _, v)| Some((v[i], other_in(*round)?)))
            .filter(|(a, b)| a.is_finite() && b.is_finite() && *b != 0.0)
            .map(|(a, b)| a / b)
            .collect()
    }

    /// One line per pair (a, b) of proxies that both ran and per metric:
    /// the paired ratios a / b, "median× (min–max)".
    pub fn pair_lines(&self, pairs: &[(ProxyKind, ProxyKind)], metrics: &[&str]) -> String {
        let mut out = String::new();
        for &(a, b) in pairs.iter().filter(|(a, b)| self.proxies.contains(a) && self.proxies.contains(b)) {
            for metric in metrics {
                let ratios = ratio_cell(&self.paired_ratios_of(a, b, metric));
                let _ = writeln!(out, "   {} / {} {metric}, paired by round: {ratios}", a.name(), b.name());
            }
        }
        out
    }

    pub fn median(&self, proxy: ProxyKind, metric: &str) -> Option<f64> {
        median(self.values(proxy, metric))
    }

    /// The median of the paired ratios usher / `other`.
    pub fn ratio(&self, other: ProxyKind, metric: &str) -> Option<f64> {
        median(self.paired_ratios(other, metric))
    }

    pub fn render(&self) -> String {
        let mut header = vec!["".to_owned()];
        header.extend(self.proxies.iter().map(|p| p.name().to_owned()));
        let others: Vec<ProxyKind> =
            [ProxyKind::Haproxy, ProxyKind::Nginx, ProxyKind::Direct, ProxyKind::UsherDashboard, ProxyKind::UsherHook]
                .into_iter()
                .filter(|p| self.proxies.contains(p) && self.proxies.contains(&ProxyKind::Usher))
                .collect();
        header.extend(others.iter().map(|p| format!("usher/{}", p.name())));
        let mut rows = vec![header];
        for m in &self.metrics {
            let mut row = vec![m.name.to_owned()];
            for &p in &self.proxies {
                row.push(cell(&self.values(p, m.name), m.decimals));
            }
            for &p in &others {
                let ratios = if m.better == Better::Zero { Vec::new() } else { self.paired_ratios(p, m.name) };
                row.push(ratio_cell(&ratios));
            }
            rows.push(row);
        }
        let mut out = format!("\n== {}\n", self.title);
        out.push_str(&table(&rows));
        for e in &self.errors {
            let _ = writeln!(out, "   ! {e}");
        }
        for n in &self.notes {
            let _ = writeln!(out, "   note: {n}");
        }
        out
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// "median (min–max)", the median shown by `mid` and the bounds by
/// `bound`; just the median for one value; "-" without values.
fn spread(values: &[f64], mid: impl Fn(f64) -> String, bound: impl Fn(f64) -> String) -> String {
    let Some(m) = median(values.to_vec()) else { return "-".to_owned() };
    if values.len() == 1 {
        return mid(m);
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}–{})", mid(m), bound(min), bound(max))
}

fn cell(values: &[f64], decimals: usize) -> String {
    spread(values, |v| number(v, decimals), |v| number(v, decimals))
}

/// Paired ratios: "median× (min–max)".
pub fn ratio_cell(ratios: &[f64]) -> String {
    spread(ratios, |v| format!("{v:.2}×"), |v| format!("{v:.2}"))
}

/// Fixed decimals; whole numbers grouped by thousands with spaces.
pub fn number(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    if decimals > 0 {
        return format!("{v:.decimals$}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    if v < 0.0 {
        grouped.insert(0, '-');
    }
    grouped
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, s) in row.iter().enumerate() {
            let pad = widths[c] - s.chars().count();
            if c == 0 {
                let _ = write!(line, "  {s}{}", " ".repeat(pad));
            } else {
                let _ = write!(line, "   {}{s}", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_medians() {
        assert_eq!(number(14230.4, 0), "14 230");
        assert_eq!(number(999.0, 0), "999");
        assert_eq!(number(1234567.0, 0), "1 234 567");
        assert_eq!(number(0.1234, 2), "0.12");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(cell(&[1.0, 3.0, 2.0], 0), "2 (1–3)");
        assert_eq!(ratio_cell(&[0.9, 1.2, 1.0]), "1.00× (0.90–1.20)");
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        let r = CaseResult {
            case: "c",
            title: "t".into(),
            proxies: vec![ProxyKind::Usher, ProxyKind::Haproxy],
            metrics: vec![Metric::higher("rate", 0)],
            // The machine halves its speed after round 1: each round's ratio
            // is 1.25, the ratio of the medians would not be.
            runs: vec![
                (1, ProxyKind::Usher, vec![100.0]),
                (1, ProxyKind::Haproxy, vec![80.0]),
                (2, ProxyKind::Usher, vec![50.0]),
                (2, ProxyKind::Haproxy, vec![40.0]),
                (3, ProxyKind::Usher, vec![50.0]),
                (3, ProxyKind::Haproxy, vec![40.0]),
                // A round where HAProxy's run failed pairs with nothing.
                (4, ProxyKind::Usher, vec![10.0]),
            ],
            errors: Vec::new(),
            notes: Vec::new(),
        };
        assert_eq!(r.paired_ratios(ProxyKind::Haproxy, "rate"), vec![1.25, 1.25, 1.25]);
        assert_eq!(r.ratio(ProxyKind::Haproxy, "rate"), Some(1.25));
        assert_eq!(r.median(ProxyKind::Usher, "rate"), Some(50.0));
        // Any two variants pair the same way (two cluster instances vs one).
        assert_eq!(r.paired_ratios_of(ProxyKind::Haproxy, ProxyKind::Usher, "rate"), vec![0.8, 0.8, 0.8]);
    }

    fn three_peers(runs: Vec<(usize, ProxyKind, Vec<f64>)>) -> CaseResult {
        CaseResult {
            case: "c",
            title: "t".into(),
            proxies: vec![ProxyKind::Usher, ProxyKind::Haproxy, ProxyKind::Nginx, ProxyKind::Direct],
            metrics: vec![Metric::higher("rate", 0), Metric::lower("proxy CPU", 1)],
            runs,
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The table's cells for `row` (by its first cell), split on the
    /// column gaps (three spaces or more).
    fn row_cells(table: &str, row: &str) -> Vec<String> {
        let line = table.lines().find(|l| l.trim_start().starts_with(row)).unwrap_or_else(|| panic!("{table}"));
        line.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn nginx_ratio_column_sits_beside_haproxys_and_pairs_rounds() {
        let r = three_peers(vec![
            (1, ProxyKind::Usher, vec![100.0, 8.0]),
            (1, ProxyKind::Haproxy, vec![80.0, 10.0]),
            (1, ProxyKind::Nginx, vec![50.0, 4.0]),
            (1, ProxyKind::Direct, vec![200.0, f64::NAN]),
            // The machine halves its speed: nginx's per-round ratio stays 2.
            (2, ProxyKind::Usher, vec![50.0, 8.0]),
            (2, ProxyKind::Haproxy, vec![40.0, 10.0]),
            (2, ProxyKind::Nginx, vec![25.0, 4.0]),
            (2, ProxyKind::Direct, vec![100.0, f64::NAN]),
        ]);
        assert_eq!(r.paired_ratios(ProxyKind::Nginx, "rate"), vec![2.0, 2.0]);
        let table = r.render();
        assert_eq!(
            row_cells(&table, "usher")[..],
            ["usher", "haproxy", "nginx", "direct", "usher/haproxy", "usher/nginx", "usher/direct"],
            "{table}"
        );
        assert_eq!(
            row_cells(&table, "rate")[..],
            [
                "rate",
                "75 (50–100)",
                "60 (40–80)",
                "38 (25–50)",
                "150 (100–200)",
                "1.25× (1.25–1.25)",
                "2.00× (2.00–2.00)",
                "0.50× (0.50–0.50)"
            ],
            "{table}"
        );
        // No CPU for direct: its ratio cell is empty, nginx's is not.
        assert_eq!(row_cells(&table, "proxy CPU")[5..], ["0.80× (0.80–0.80)", "2.00× (2.00–2.00)", "-"], "{table}");
    }

    #[test]
    fn no_nginx_column_when_nginx_did_not_run() {
        let mut r =
            three_peers(vec![(1, ProxyKind::Usher, vec![100.0, 8.0]), (1, ProxyKind::Haproxy, vec![80.0, 10.0])]);
        r.proxies = vec![ProxyKind::Usher, ProxyKind::Haproxy];
        let table = r.render();
        assert!(!table.contains("nginx"), "{table}");
        assert_eq!(row_cells(&table, "rate")[..], ["rate", "100", "80", "1.25×"], "{table}");
    }
}
