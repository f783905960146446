//! Results of a benchmark run: every sample, summarised as a table
//! (p50/p95/p99, min/max per metric), written as JSON and plotted as SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::Serialize;

/// What a metric measures, for the table.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Milliseconds.
    Ms,
    /// A count.
    Count,
    /// Percent.
    Pct,
    /// Megabits per second.
    Mbps,
    /// Mebibytes.
    Mib,
    /// Round trips of the profile's link.
    Rtt,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Count => "",
            Unit::Pct => "%",
            Unit::Mbps => "Mbit/s",
            Unit::Mib => "MiB",
            Unit::Rtt => "RTT",
        }
    }
}

/// One series of samples: a metric of one scenario on one profile.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// The scenario (`single`, `flash-crowd`, …).
    pub scenario: String,
    /// The link profile.
    pub profile: String,
    /// The metric's name, e.g. `start_cold_ms`.
    pub metric: String,
    /// Its unit.
    pub unit: Unit,
    /// Every sample, in the order taken.
    pub samples: Vec<f64>,
}

/// Bytes a scenario's listeners got from each kind of source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bytes {
    /// From the original seed.
    pub seed: u64,
    /// From other peers.
    pub peers: u64,
    /// From the listener's own cache.
    pub cache: u64,
}

impl Bytes {
    /// The seed's share of all bytes, in percent.
    pub fn seed_share(&self) -> f64 {
        let total = self.seed + self.peers + self.cache;
        if total == 0 { 0.0 } else { self.seed as f64 * 100.0 / total as f64 }
    }
}

/// Collects samples from tasks running at once.
#[derive(Debug, Default)]
pub struct Recorder {
    series: Mutex<Vec<Series>>,
    bytes: Mutex<BTreeMap<(String, String), Bytes>>,
}

impl Recorder {
    /// Adds one sample.
    pub fn add(&self, scenario: &str, profile: &str, metric: &str, unit: Unit, value: f64) {
        let Ok(mut all) = self.series.lock() else { return };
        match all
            .iter_mut()
            .find(|s| s.scenario == scenario && s.profile == profile && s.metric == metric)
        {
            Some(s) => s.samples.push(value),
            None => all.push(Series {
                scenario: scenario.into(),
                profile: profile.into(),
                metric: metric.into(),
                unit,
                samples: vec![value],
            }),
        }
    }

    /// Adds bytes received by a listener.
    pub fn add_bytes(&self, scenario: &str, profile: &str, b: &Bytes) {
        if let Ok(mut all) = self.bytes.lock() {
            let e = all.entry((scenario.into(), profile.into())).or_default();
            e.seed += b.seed;
            e.peers += b.peers;
            e.cache += b.cache;
        }
    }

    /// Everything recorded.
    pub fn finish(&self) -> (Vec<Series>, BTreeMap<(String, String), Bytes>) {
        let series = self.series.lock().map(|s| s.clone()).unwrap_or_default();
        let bytes = self.bytes.lock().map(|b| b.clone()).unwrap_or_default();
        (series, bytes)
    }
}

/// Summary statistics of one series.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Percentiles (nearest rank).
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Nearest-rank percentiles of `samples` (None when empty).
pub fn summarise(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Summary {
        n: v.len(),
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        min: v[0],
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
    })
}

fn num(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => format!("{x:.0}"),
        _ if x.abs() >= 100.0 => format!("{x:.0}"),
        _ if x.abs() >= 10.0 => format!("{x:.1}"),
        _ => format!("{x:.2}"),
    }
}

/// The table people read: one row per series.
pub fn table(series: &[Series], bytes: &BTreeMap<(String, String), Bytes>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:<22} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "profile", "metric", "n", "p50", "p95", "p99", "min", "max"
    );
    for s in series {
        let Some(m) = summarise(&s.samples) else { continue };
        let name = if s.unit.label().is_empty() {
            s.metric.clone()
        } else {
            format!("{} ({})", s.metric, s.unit.label())
        };
        let _ = writeln!(
            out,
            "{:<12} {:<14} {:<22} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            s.scenario,
            s.profile,
            name,
            m.n,
            num(m.p50, s.unit),
            num(m.p95, s.unit),
            num(m.p99, s.unit),
            num(m.min, s.unit),
            num(m.max, s.unit)
        );
    }
    if !bytes.is_empty() {
        let _ = writeln!(out, "\nbytes to listeners by source");
        let _ = writeln!(
            out,
            "{:<12} {:<14} {:>10} {:>10} {:>10} {:>11}",
            "scenario", "profile", "seed", "peers", "cache", "seed share"
        );
        for ((scenario, profile), b) in bytes {
            let _ = writeln!(
                out,
                "{:<12} {:<14} {:>10} {:>10} {:>10} {:>10.1}%",
                scenario,
                profile,
                chorus_cli::output::size(b.seed),
                chorus_cli::output::size(b.peers),
                chorus_cli::output::size(b.cache),
                b.seed_share()
            );
        }
    }
    out
}

/// The whole run, as written to `--json`.
#[derive(Debug, Serialize)]
pub struct RunJson<'a, P: Serialize> {
    /// Settings of the run.
    pub config: P,
    /// The link profiles used, with their parameters.
    pub profiles: Vec<ProfileJson>,
    /// Every series with its samples and summary.
    pub results: Vec<SeriesJson<'a>>,
    /// Bytes by source per scenario and profile.
    pub bytes: Vec<BytesJson>,
    /// The comparison figures (Spotify's 2010 P2P client).
    pub reference: Reference,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
}

/// A profile's parameters.
#[derive(Debug, Serialize)]
pub struct ProfileJson {
    /// Its name.
    pub name: String,
    /// Round trip, ms.
    pub rtt_ms: f64,
    /// Extra one-way delay up to, ms.
    pub jitter_ms: f64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Mean loss burst, packets.
    pub burst: f64,
    /// Rate limit per direction, Mbit/s.
    pub rate_mbps: Option<f64>,
}

impl From<&chorus_streamer::netem::LinkProfile> for ProfileJson {
    fn from(p: &chorus_streamer::netem::LinkProfile) -> Self {
        Self {
            name: p.name.into(),
            rtt_ms: p.rtt.as_secs_f64() * 1e3,
            jitter_ms: p.jitter.as_secs_f64() * 1e3,
            loss_pct: p.loss * 100.0,
            burst: p.burst,
            rate_mbps: p.rate.map(|r| r as f64 / 1e6),
        }
    }
}

/// A series with its summary.
#[derive(Debug, Serialize)]
pub struct SeriesJson<'a> {
    /// The series.
    #[serde(flatten)]
    pub series: &'a Series,
    /// Its summary.
    pub summary: Option<Summary>,
}

/// Bytes of one scenario on one profile.
#[derive(Debug, Serialize)]
pub struct BytesJson {
    /// Scenario.
    pub scenario: String,
    /// Profile.
    pub profile: String,
    /// The bytes.
    #[serde(flatten)]
    pub bytes: Bytes,
    /// The seed's share, percent.
    pub seed_share_pct: f64,
}

/// Spotify's published figures (Kreitz & Niemelä, "Spotify – Large Scale,
/// Low Latency, P2P Music-on-Demand Streaming", IEEE P2P 2010).
#[derive(Debug, Serialize)]
pub struct Reference {
    /// Median time to first audio, ms.
    pub median_start_ms: f64,
    /// Plays with a stutter, percent.
    pub stutter_plays_pct: f64,
    /// Bytes from Spotify's servers, percent.
    pub server_bytes_pct: f64,
}

/// Spotify 2010.
pub const SPOTIFY: Reference =
    Reference { median_start_ms: 265.0, stutter_plays_pct: 1.0, server_bytes_pct: 8.8 };

/// Writes the JSON file.
pub fn write_json<P: Serialize>(path: &Path, run: &RunJson<'_, P>) -> Result<()> {
    let text = serde_json::to_string_pretty(run)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// An SVG of the time-to-first-audio distribution per profile: one
/// empirical CDF line per profile (cold starts of every scenario).
pub fn plot_svg(series: &[Series], metric_prefix: &str) -> String {
    let mut lines: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // The swarm's starts; the baseline has its own line in the table.
    for s in
        series.iter().filter(|s| s.metric.starts_with(metric_prefix) && s.scenario != "baseline")
    {
        lines.entry(s.profile.clone()).or_default().extend(s.samples.iter().copied());
    }
    let title = format!("Time to first audio ({metric_prefix}*), cumulative share of plays");
    let reference = (SPOTIFY.median_start_ms, "Spotify 2010 median");
    cdf_svg(&title, "ms (log scale)", &lines, 1.0, reference)
}

/// The start scenarios the RTT plot shows, in its legend's order.
const START_SCENARIOS: [(&str, &str); 5] = [
    ("start_cold_rtt", "cold: first run, peers never seen"),
    ("start_new_rtt", "new peer: link known from earlier runs"),
    ("start_known_rtt", "known: sealed in the handshake"),
    ("start_warm_rtt", "warm: connections up"),
    ("start_replay_rtt", "replay: start in the cache"),
];

/// An SVG of time to first audio in round trips of each profile, one CDF
/// line per start scenario (every profile with a real RTT, not the LAN's
/// 1 ms, pooled): how far each start is from the one-round-trip floor.
pub fn plot_rtt_svg(series: &[Series]) -> String {
    let mut lines: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (i, (metric, label)) in START_SCENARIOS.iter().enumerate() {
        let samples: Vec<f64> = series
            .iter()
            .filter(|s| s.metric == *metric && s.scenario == "single" && s.profile != "lan")
            .flat_map(|s| s.samples.iter().copied())
            .collect();
        if !samples.is_empty() {
            // The index keeps the legend in the scenarios' order.
            lines.insert(format!("{i}\u{1f}{label}"), samples);
        }
    }
    let title = "Time to first audio in round trips, cumulative share of plays";
    cdf_svg(title, "RTTs of the profile (log scale)", &lines, 0.5, (1.0, "1 RTT: the floor"))
}

/// An empirical CDF per line on a log x axis from `lo`, with a dashed
/// reference line. A line's name may start with a key that orders it,
/// ended by U+001F (not shown).
fn cdf_svg(
    title: &str,
    axis: &str,
    lines: &BTreeMap<String, Vec<f64>>,
    lo: f64,
    reference: (f64, &str),
) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 60.0, 50.0, 30.0, 210.0);
    let max = lines.values().flatten().copied().fold(lo * 10.0, f64::max);
    let hi = (max * 1.2).max(lo * 10.0);
    let x = |v: f64| left + (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln()) * (w - left - right);
    let y = |p: f64| top + (1.0 - p) * (h - top - bottom);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">{title}</text>
"#,
        (w - right + left) / 2.0
    );
    let mut tick = 10f64.powf(lo.log10().floor());
    while tick <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = tick * m;
            if v < lo || v > hi {
                continue;
            }
            let _ = writeln!(
                svg,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{v}</text>"##,
                x(v),
                top,
                h - bottom,
                h - bottom + 16.0
            );
        }
        tick *= 10.0;
    }
    for p in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4:.0}%</text>"##,
            y(p),
            w - right,
            left - 6.0,
            y(p) + 4.0,
            p * 100.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{axis}</text>"#,
        (w - right + left) / 2.0,
        h - 12.0
    );
    let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
    for (i, (name, samples)) in lines.iter().enumerate() {
        let mut v = samples.clone();
        v.sort_by(f64::total_cmp);
        let colour = colours[i % colours.len()];
        let mut path = String::new();
        for (k, s) in v.iter().enumerate() {
            let p0 = k as f64 / v.len() as f64;
            let p1 = (k + 1) as f64 / v.len() as f64;
            let cmd = if k == 0 { 'M' } else { 'L' };
            let _ = write!(path, "{cmd}{:.1},{:.1} L{:.1},{:.1} ", x(*s), y(p0), x(*s), y(p1));
        }
        let label = name.split_once('\u{1f}').map_or(name.as_str(), |(_, l)| l);
        let _ = writeln!(
            svg,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="{colour}">{label} (n={})</text>"#,
            w - right + 10.0,
            top + 16.0 * (i as f64 + 1.0),
            v.len()
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#000" stroke-dasharray="4 3"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
        x(reference.0),
        top,
        h - bottom,
        top - 2.0,
        reference.1
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarise(&v).unwrap();
        assert_eq!((s.p50, s.p95, s.p99, s.min, s.max), (50.0, 95.0, 99.0, 1.0, 100.0));
        let one = summarise(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(summarise(&[]).is_none());
        assert!(summarise(&[f64::NAN]).is_none());
    }

    #[test]
    fn the_plot_has_a_line_per_profile() {
        let r = Recorder::default();
        r.add("single", "lan", "start_cold_ms", Unit::Ms, 5.0);
        r.add("single", "lan", "start_cold_ms", Unit::Ms, 7.0);
        r.add("single", "4g", "start_cold_ms", Unit::Ms, 180.0);
        r.add("single", "4g", "seek_ms", Unit::Ms, 90.0);
        let (series, _) = r.finish();
        let svg = plot_svg(&series, "start_");
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("lan (n=2)") && svg.contains("4g (n=1)"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn the_rtt_plot_has_a_line_per_start_scenario_in_order() {
        let r = Recorder::default();
        for (metric, v) in [
            ("start_warm_rtt", 1.4),
            ("start_cold_rtt", 2.6),
            ("start_known_rtt", 1.5),
            ("start_new_rtt", 2.2),
        ] {
            r.add("single", "transatlantic", metric, Unit::Rtt, v);
        }
        r.add("single", "lan", "start_cold_rtt", Unit::Rtt, 18.0);
        let (series, _) = r.finish();
        let svg = plot_rtt_svg(&series);
        assert_eq!(svg.matches("<path").count(), 4);
        let at = |s: &str| svg.find(s).unwrap();
        assert!(at("cold: first run, peers never seen (n=1)") < at("new peer:"));
        assert!(at("new peer:") < at("known:") && at("known:") < at("warm:"));
        assert!(!svg.contains("NaN") && svg.contains("1 RTT: the floor"));
    }
}
