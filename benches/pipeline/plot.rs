//! Line charts as small standalone SVG files, drawn from a run's samples
//! (docs/BENCHMARKS.md embeds them), so a reader sees idle slots instead of
//! reading about them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One line: its label and (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: title, axis labels, lines, and an optional horizontal
/// reference line (label, y).
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
    pub reference: Option<(&'a str, f64)>,
}

const W: f64 = 760.0;
const H: f64 = 340.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 46.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"];

/// A round step giving about `n` ticks over `span`.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl Chart<'_> {
    /// The SVG text.
    pub fn svg(&self) -> String {
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
        let y_top = all
            .map(|p| p.1)
            .chain(self.reference.map(|r| r.1))
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let sx = |x: f64| LEFT + x / x_max * pw;
        let sy = |y: f64| TOP + ph - y / y_top * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" font-size="14" font-weight="bold">{}</text>"#,
            LEFT,
            escape(self.title)
        );
        let xs = tick_step(x_max, 8.0);
        let mut x = 0.0;
        while x <= x_max + 1e-9 {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#eee"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
                sx(x),
                TOP,
                TOP + ph,
                TOP + ph + 16.0,
                fmt_tick(x)
            );
            x += xs;
        }
        let ys = tick_step(y_top, 5.0);
        let mut y = 0.0;
        while y <= y_top + 1e-9 {
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#eee"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
                LEFT,
                sy(y),
                LEFT + pw,
                LEFT - 6.0,
                sy(y) + 4.0,
                fmt_tick(y)
            );
            y += ys;
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 8.0,
            escape(self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(self.y_label)
        );
        if let Some((label, v)) = self.reference {
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#000" stroke-dasharray="6 4"/><text x="{2}" y="{3:.1}">{4}</text>"##,
                sy(v),
                LEFT + pw,
                LEFT + pw + 8.0,
                sy(v) + 4.0,
                escape(label)
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
            let ly = TOP + 14.0 + 18.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="{colour}" stroke-width="3"/><text x="{3}" y="{4:.1}">{5}</text>"#,
                LEFT + pw + 8.0,
                ly + (if self.reference.is_some() { 30.0 } else { 0.0 }),
                LEFT + pw + 26.0,
                LEFT + pw + 30.0,
                ly + 4.0 + (if self.reference.is_some() { 30.0 } else { 0.0 }),
                escape(&series.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes the chart to `docs/bench/<name>.svg` (or `$BENCH_PLOTS`);
    /// returns the path.
    pub fn write(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("BENCH_PLOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench"));
        std::fs::create_dir_all(&dir).expect("plot directory");
        let path = dir.join(format!("{name}.svg"));
        std::fs::write(&path, self.svg()).expect("plot written");
        eprintln!("plot: {}", path.display());
        path
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// How many of `intervals` (start, length) cover each of `at`.
pub fn active_at(intervals: &[(f64, f64)], at: &[f64]) -> Vec<(f64, f64)> {
    at.iter()
        .map(|t| {
            let n = intervals.iter().filter(|(s, d)| *s <= *t && *t < s + d).count();
            (*t, n as f64)
        })
        .collect()
}

/// Records per second between consecutive (time, count) samples.
pub fn rate(samples: &[(f64, f64)]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0)))
        .collect()
}

/// How long each freed slot stayed idle: every job started after the
/// first `slots` takes the earliest slot freed before it (a job's end);
/// the gaps, in seconds, sorted.
pub fn slot_gaps(intervals: &[(f64, f64)], slots: usize) -> Vec<f64> {
    let mut starts: Vec<f64> = intervals.iter().map(|i| i.0).collect();
    starts.sort_by(f64::total_cmp);
    let mut ends: Vec<f64> = intervals.iter().map(|i| i.0 + i.1).collect();
    ends.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = starts
        .iter()
        .skip(slots)
        .zip(&ends)
        .map(|(start, freed)| (start - freed).max(0.0))
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps
}
