//! `chorus bench`: swarms of real nodes on loopback behind emulated links,
//! listeners measured as they play (time to first audio cold and warm,
//! seek latency, underruns on the paced null sink, bytes by source, a
//! listener's CPU time and peak memory), a seed's serving throughput next
//! to a bare quinn server's, and a single-source plain-order baseline.

mod nat;
mod report;
mod scenarios;
mod serve;
mod swarm;
mod versus;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chorus_streamer::netem::LinkProfile;

use chorus_cli::cli::{BenchArgs, Global};
use report::{Recorder, Unit};
use scenarios::Settings;

/// Every listener the bench starts should get its large buffers as the
/// fresh process of a user's `chorus play` does: new mappings, untouched
/// until used. In one long process glibc's adaptive threshold instead
/// serves them from the heap and zeroes them: the QUIC endpoint's 3 MB
/// receive buffer, page by page, 5-40 ms of CPU on a virtual machine before
/// a listener's first packet (the bench charged that to the start; a fresh
/// process pays under a millisecond). A fixed threshold keeps allocations
/// of 1 MiB and more on their own mappings, as in a fresh process.
fn fresh_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a parameter of glibc's allocator, under
    // the allocator's own lock; any value is valid for M_MMAP_THRESHOLD up
    // to its maximum (32 MiB on 64-bit), and it changes where later
    // allocations come from, never memory already handed out.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 8] =
    ["single", "versus", "seek-storm", "flash-crowd", "churn", "discovery", "nat", "serve"];

/// `chorus bench`: runs the scenarios asked for and reports them.
pub async fn run(global: &Global, args: BenchArgs) -> Result<()> {
    let began = Instant::now();
    let host_before = CpuTimes::read();
    let links_before = chorus_streamer::netem::deliveries();
    fresh_large_allocations();
    // Measured beside the run (it mostly sleeps): read with the machine.
    let memory = std::thread::Builder::new()
        .name("chorus-bench-memory-probe".into())
        .spawn(memory_probe)
        .ok();
    let samples = chorus_cli::demo::sample_dir(args.samples.as_deref())?;
    let profiles = pick_profiles(&args.profiles)?;
    let scenarios = pick_scenarios(&args.scenarios)?;
    let settings = Settings {
        plays: args.plays,
        listen_s: args.listen,
        listeners: args.listeners,
        seed: args.seed,
    };
    let index = tempfile::tempdir()?;
    // Index once; every swarm reuses the index.
    let (s, i) = (samples.clone(), index.path().to_path_buf());
    let (_, tracks) = tokio::task::spawn_blocking(move || swarm::scan_samples(&s, &i)).await??;
    let tracks = Arc::new(tracks);
    if scenarios.contains(&"nat")
        && let Some(why) = nat::unavailable()
    {
        bail!("{why}");
    }
    if !global.quiet {
        eprintln!(
            "bench: {} tracks from {}, profiles {}, scenarios {}, {} peers",
            tracks.len(),
            samples.display(),
            profiles.iter().map(|p| p.name).collect::<Vec<_>>().join(","),
            scenarios.join(","),
            args.peers
        );
    }

    let per_profile: u64 = scenarios
        .iter()
        .map(|s| match *s {
            "single" => settings.plays as u64 * scenarios::SINGLE_STEPS + 1,
            "discovery" | "versus" => settings.plays as u64,
            "nat" => settings.plays as u64 * 3,
            "seek-storm" => settings.plays as u64,
            "flash-crowd" | "churn" => settings.listeners as u64,
            _ => 0,
        })
        .sum();
    let serve_steps = if scenarios.contains(&"serve") { 2 } else { 0 };
    let bar = chorus_cli::output::bar(
        per_profile * profiles.len() as u64 + serve_steps,
        "{elapsed_precise} [{wide_bar}] {pos}/{len} plays",
    );
    if global.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let rec = Arc::new(Recorder::default());

    // The profiles run at once: each swarm has its own sockets and links,
    // and listening is paced by the audio clock, not the CPU.
    let mut runs = Vec::new();
    for profile in profiles.clone() {
        let (rec, bar, settings) = (rec.clone(), bar.clone(), settings.clone());
        let (samples, index) = (samples.clone(), index.path().to_path_buf());
        let scenarios: Vec<&'static str> =
            scenarios.iter().copied().filter(|s| *s != "serve").collect();
        let peers = args.peers;
        let profile2 = profile.clone();
        let tracks = tracks.clone();
        runs.push(tokio::spawn(async move {
            let name = profile.name;
            let swarm =
                swarm::Swarm::start(profile, &samples, &index, peers, settings.seed).await?;
            let result = async {
                for s in scenarios {
                    match s {
                        "single" => {
                            scenarios::single(&swarm, &settings, &rec, &bar).await?;
                            listener_resources(&swarm, &rec).await?;
                            bar.inc(1);
                        }
                        "seek-storm" => {
                            scenarios::seek_storm(&swarm, &settings, &rec, &bar).await?
                        }
                        "flash-crowd" => {
                            scenarios::flash_crowd(&swarm, &settings, &rec, &bar).await?;
                        }
                        "churn" => scenarios::churn(&swarm, &settings, &rec, &bar).await?,
                        "discovery" => scenarios::discovery(&swarm, &settings, &rec, &bar).await?,
                        "nat" => {
                            nat::nat(&profile2, &samples, &tracks, &settings, &rec, &bar).await?
                        }
                        "versus" => {
                            versus::versus(&profile2, &samples, &index, &settings, &rec, &bar)
                                .await?
                        }
                        _ => {}
                    }
                }
                Ok::<(), anyhow::Error>(())
            }
            .await;
            swarm.shutdown().await;
            result.with_context(|| format!("profile {name}"))
        }));
    }
    let mut failures = Vec::new();
    for r in runs {
        match r.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if scenarios.contains(&"serve") {
        let load = serve::Load {
            connections: args.connections,
            streams: args.streams,
            duration: Duration::from_secs_f64(args.serve_seconds),
            seed: args.seed,
        };
        if let Err(e) = serve::serve(&samples, index.path(), load, &rec, &bar).await {
            failures.push(format!("serve: {e:#}"));
        }
    }
    bar.finish_and_clear();
    derive_stutter(&rec);

    let (series, bytes) = rec.finish();
    let own = chorus_cli::resources::read_self();
    println!("{}", report::table(&series, &bytes));
    println!("{}", versus_spotify(&series, &bytes));
    if let Some(line) = path_rtts(&series, &profiles) {
        println!("{line}");
    }
    if let Some(r) = own {
        println!(
            "whole bench process: {:.1} s CPU, peak memory {:.0} MiB, {:.0} s wall",
            r.cpu.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0,
            began.elapsed().as_secs_f64()
        );
    }
    for f in &failures {
        eprintln!("error: {f}");
    }
    let memory = memory.and_then(|h| h.join().ok());
    if let Some(m) = &memory {
        println!("{}", m.describe());
    }
    let links = chorus_streamer::netem::deliveries().since(&links_before);
    let timing = Timing {
        steal_pct: CpuTimes::read().zip(host_before).and_then(|(b, a)| b.steal_pct_since(&a)),
        packets: links.packets,
        late_packets: links.late,
        mean_late_us: links.mean_late().map(|d| d.as_micros() as u64),
    };
    println!("{}", timing.describe());
    let config = serde_json::json!({
        "samples": samples,
        "tracks": tracks.iter().map(|t| &t.name).collect::<Vec<_>>(),
        "peers": args.peers,
        "scenarios": scenarios,
        "settings": settings,
        "serve": { "connections": args.connections, "streams": args.streams, "seconds": args.serve_seconds },
        "machine": machine(memory.as_ref(), &timing),
    });
    if let Some(path) = &args.json {
        let run = report::RunJson {
            config,
            profiles: profiles.iter().map(report::ProfileJson::from).collect(),
            results: series
                .iter()
                .map(|s| report::SeriesJson { series: s, summary: report::summarise(&s.samples) })
                .collect(),
            bytes: bytes
                .iter()
                .map(|((scenario, profile), b)| report::BytesJson {
                    scenario: scenario.clone(),
                    profile: profile.clone(),
                    bytes: b.clone(),
                    seed_share_pct: b.seed_share(),
                })
                .collect(),
            reference: report::SPOTIFY,
            elapsed_s: began.elapsed().as_secs_f64(),
        };
        report::write_json(path, &run)?;
        if !global.quiet {
            eprintln!("wrote {}", path.display());
        }
    }
    if let Some(path) = &args.plot {
        let rtt = rtt_plot_path(path);
        for (path, svg) in
            [(path, report::plot_svg(&series, "start_cold")), (&rtt, report::plot_rtt_svg(&series))]
        {
            std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
            if !global.quiet {
                eprintln!("wrote {}", path.display());
            }
        }
    }
    if !failures.is_empty() {
        bail!("{} part(s) of the bench failed (see above)", failures.len());
    }
    Ok(())
}

/// Where the plot in round trips goes: beside `path`, `-rtt` added to its
/// name (`cold.svg` -> `cold-rtt.svg`).
fn rtt_plot_path(path: &std::path::Path) -> std::path::PathBuf {
    let stem = path.file_stem().map_or_else(|| "plot".into(), |s| s.to_string_lossy().into_owned());
    let ext = path.extension().map_or_else(|| "svg".into(), |e| e.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}-rtt.{ext}"))
}

fn pick_profiles(names: &[String]) -> Result<Vec<LinkProfile>> {
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(LinkProfile::all());
    }
    names
        .iter()
        .map(|n| {
            LinkProfile::by_name(n).with_context(|| {
                let all: Vec<_> = LinkProfile::all().iter().map(|p| p.name).collect();
                format!("no link profile '{n}'; choose from {}", all.join(", "))
            })
        })
        .collect()
}

fn pick_scenarios(names: &[String]) -> Result<Vec<&'static str>> {
    if names.iter().any(|n| n == "all") {
        return Ok(SCENARIOS.to_vec());
    }
    let mut out = Vec::new();
    for n in names {
        let Some(s) = SCENARIOS.iter().find(|s| **s == n.as_str()) else {
            bail!("no scenario '{n}'; choose from {} or all", SCENARIOS.join(", "));
        };
        if !out.contains(s) {
            out.push(*s);
        }
    }
    // Run in the fixed order.
    out.sort_by_key(|s| SCENARIOS.iter().position(|x| x == s));
    Ok(out)
}

/// Plays with any underrun, as a share of plays, per scenario and profile.
fn derive_stutter(rec: &Recorder) {
    let (series, _) = rec.finish();
    for s in series.iter().filter(|s| s.metric == "underruns") {
        let stuttered = s.samples.iter().filter(|u| **u > 0.0).count();
        let pct = stuttered as f64 * 100.0 / s.samples.len().max(1) as f64;
        rec.add(&s.scenario, &s.profile, "stutter_plays_pct", Unit::Pct, pct);
    }
}

/// The lines that put the run next to Spotify's published figures.
fn versus_spotify(
    series: &[report::Series],
    bytes: &std::collections::BTreeMap<(String, String), report::Bytes>,
) -> String {
    let mut starts = Vec::new();
    let (mut plays, mut stutters) = (0usize, 0usize);
    for s in series.iter().filter(|s| s.scenario != "baseline") {
        if s.metric == "start_cold_ms" {
            starts.extend(s.samples.iter().copied());
        }
        if s.metric == "underruns" {
            plays += s.samples.len();
            stutters += s.samples.iter().filter(|u| **u > 0.0).count();
        }
    }
    let total: report::Bytes = bytes
        .iter()
        .filter(|((scenario, _), _)| scenario != "baseline")
        .fold(report::Bytes::default(), |mut acc, (_, b)| {
            acc.seed += b.seed;
            acc.peers += b.peers;
            acc.cache += b.cache;
            acc
        });
    let median = report::summarise(&starts).map_or("-".into(), |s| format!("{:.0} ms", s.p50));
    format!(
        "vs Spotify 2010 (all profiles, swarm scenarios):\n  median cold start  {median:>8}   (Spotify 265 ms)\n  plays with stutter {:>7.1}%   (Spotify < 1%) of {plays} plays\n  bytes from the seed {:>6.1}%   (Spotify 8.8% from servers)",
        stutters as f64 * 100.0 / plays.max(1) as f64,
        total.seed_share()
    )
}

/// The round trips the start connections measured next to each profile's
/// own: the starts' figures in RTTs count the profile's, and what lies
/// between the two is the profile's jitter (a flight delivered in order
/// arrives at its top) and this machine, not the code.
fn path_rtts(series: &[report::Series], profiles: &[LinkProfile]) -> Option<String> {
    let parts: Vec<String> = profiles
        .iter()
        .filter_map(|p| {
            let s = series.iter().find(|s| s.profile == p.name && s.metric == "path_rtt_ms")?;
            let median = report::summarise(&s.samples)?.p50;
            let jitter = match p.jitter.as_millis() {
                0 => String::new(),
                j => format!(", jitter up to {j} ms each way"),
            };
            Some(format!("{} {median:.1} ms ({} ms{jitter})", p.name, p.rtt.as_millis()))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "round trip QUIC measured on the start connections (median; the profile's in \
             brackets, the rest this machine's): {}",
            parts.join(", ")
        )
    })
}

fn machine(memory: Option<&MemoryProbe>, timing: &Timing) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "os": std::env::consts::OS,
        "memory": memory,
        "timing": timing,
    })
}

/// How far the machine kept time during the run: what the figures carry
/// beyond the code and the emulated link.
#[derive(Debug, serde::Serialize)]
struct Timing {
    /// Share of the machine's CPU time its host (a hypervisor) took for
    /// other guests while the bench ran ("steal" in /proc/stat): a guest
    /// whose CPU is taken stops for milliseconds at a time, and every
    /// timer, packet and decoder with it.
    steal_pct: Option<f64>,
    /// Packets the emulated links delivered.
    packets: u64,
    /// Of those, delivered [`chorus_streamer::netem::LATE_AFTER`] or more
    /// after the time the link model gave them.
    late_packets: u64,
    /// How long after its time a packet was delivered, on average.
    mean_late_us: Option<u64>,
}

impl Timing {
    fn describe(&self) -> String {
        let late_pct = self.late_packets as f64 * 100.0 / self.packets.max(1) as f64;
        // The side-by-side scenario's link is a pair of proxies, not the
        // emulator: a run of it alone has no emulated packets to count.
        let mut parts = Vec::new();
        if self.packets > 0 {
            let mean =
                self.mean_late_us.map_or(String::new(), |us| format!(", {us} us on average"));
            parts.push(format!(
                "emulated links delivered {:.2}% of {} packets 1 ms or more late{mean}",
                late_pct, self.packets
            ));
        }
        if let Some(steal) = self.steal_pct {
            let pauses = if steal >= 2.0 {
                " (a guest whose host takes its CPU stops for milliseconds at a time: the \
                 figures carry those pauses)"
            } else {
                ""
            };
            parts.push(format!("the host took {steal:.1}% of the CPU time (steal){pauses}"));
        }
        if parts.is_empty() {
            parts.push("nothing to measure it by here (no emulated link, no /proc/stat)".into());
        }
        format!("timing on this machine: {}", parts.join("; "))
    }
}

/// The machine's CPU time from the first line of /proc/stat, in ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTimes {
    /// user, nice, system, idle, iowait, irq, softirq and steal together.
    total: u64,
    /// Time a hypervisor ran something else while this guest wanted to run.
    steal: u64,
}

impl CpuTimes {
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The `cpu` line of /proc/stat; `None` without one or without a
    /// steal column (kernels before 2.6.11).
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
        let fields: Vec<u64> =
            line.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
        let counted = fields.get(..8)?;
        Some(Self { total: counted.iter().sum(), steal: counted[7] })
    }

    /// Steal as a share of the time since `earlier`.
    fn steal_pct_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        (total > 0).then(|| steal as f64 * 100.0 / total as f64)
    }
}

/// What touching memory costs on this machine, per 4 KiB page: memory
/// touched a moment ago, and the same memory after two seconds untouched. A
/// virtual machine whose host reclaims its guests' idle memory pays a
/// page-in for the second (seen here: 14-15 us a page after 2 s idle,
/// 0.2 hot): every start then pays for the code and data it touches that
/// sat idle since the last one, and the figures carry it.
#[derive(Debug, serde::Serialize)]
struct MemoryProbe {
    /// Microseconds per page, touched a moment ago.
    hot_us_per_page: f64,
    /// Microseconds per page, after [`IDLE`] untouched.
    idle_us_per_page: f64,
}

impl MemoryProbe {
    fn describe(&self) -> String {
        let mut line = format!(
            "memory on this machine: {:.2} us per 4 KiB page touched again after {} s idle, {:.2} \
             us hot",
            self.idle_us_per_page,
            IDLE.as_secs(),
            self.hot_us_per_page
        );
        if self.idle_us_per_page > 2.0 && self.idle_us_per_page > 5.0 * self.hot_us_per_page {
            line.push_str(
                " (idle memory is paged out under this machine: every start also pays for the \
                 code and data it touches that sat idle since the last one)",
            );
        }
        line
    }
}

/// How long the probe leaves its memory untouched: about the time between
/// two starts of `single`.
const IDLE: Duration = Duration::from_secs(2);

/// Measures [`MemoryProbe`] on 8 MiB of its own: two seconds, mostly
/// asleep.
fn memory_probe() -> MemoryProbe {
    const PAGE: usize = 4096;
    let mut buf = vec![0u8; 8 << 20];
    let pages = (buf.len() / PAGE) as f64;
    let touch = |buf: &mut [u8]| {
        let t = Instant::now();
        for i in (0..buf.len()).step_by(PAGE) {
            buf[i] = std::hint::black_box(buf[i]).wrapping_add(1);
        }
        t.elapsed().as_secs_f64() * 1e6 / pages
    };
    touch(&mut buf);
    let hot = touch(&mut buf);
    std::thread::sleep(IDLE);
    let idle = touch(&mut buf);
    MemoryProbe { hot_us_per_page: hot, idle_us_per_page: idle }
}

/// Runs `chorus play` as its own process against the swarm for a few
/// seconds and records its CPU time and peak memory (the child reports
/// them from /proc when CHORUS_RESOURCES names a file).
async fn listener_resources(swarm: &swarm::Swarm, rec: &Recorder) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("resources.json");
    let track = &swarm.tracks[0];
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("--quiet")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("play")
        .arg(track.manifest.id().to_string())
        .args(["--out", "null", "--duration", "5"])
        .env("CHORUS_RESOURCES", &report)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    for n in swarm.nodes() {
        cmd.arg("--peer").arg(format!(
            "{}@{}",
            n.transport().peer_id(),
            n.transport().local_addr()?
        ));
    }
    let status = tokio::time::timeout(Duration::from_secs(60), cmd.status())
        .await
        .context("the listener process did not finish in 60 s")??;
    if !status.success() {
        bail!("the listener process failed ({status})");
    }
    let r: chorus_cli::resources::Resources = serde_json::from_slice(&std::fs::read(&report)?)?;
    let profile = swarm.profile.name;
    rec.add("single", profile, "listener_cpu_ms", Unit::Ms, r.cpu.as_secs_f64() * 1e3);
    rec.add("single", profile, "listener_peak_mib", Unit::Mib, r.peak_rss_kib as f64 / 1024.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_round_trip_is_the_median_beside_the_profiles() {
        let r = Recorder::default();
        for v in [84.0, 83.0, 90.0] {
            r.add("single", "transatlantic", "path_rtt_ms", Unit::Ms, v);
        }
        r.add("single", "lan", "path_rtt_ms", Unit::Ms, 1.9);
        r.add("single", "4g", "start_new_ms", Unit::Ms, 200.0);
        let (series, _) = r.finish();
        let line = path_rtts(&series, &LinkProfile::all()).unwrap();
        assert!(line.contains("lan 1.9 ms (1 ms)"), "{line}");
        assert!(
            line.contains("transatlantic 84.0 ms (80 ms, jitter up to 2 ms each way)"),
            "{line}"
        );
        assert!(!line.contains("4g"), "no start measured there: {line}");
        assert!(line.find("lan").unwrap() < line.find("transatlantic").unwrap(), "profile order");
        assert!(path_rtts(&[], &LinkProfile::all()).is_none());
    }

    #[test]
    fn steal_is_read_from_the_cpu_line_of_proc_stat() {
        let before = "cpu  105177 0 16145 628389 1636 0 863 12175 0 0\n\
                      cpu0 50968 0 7087 317741 270 0 233 5893 0 0\n";
        let after = "cpu  105337 0 17239 635133 1755 0 941 13429 0 0\n\
                     cpu0 51043 0 7550 321255 283 0 254 6507 0 0\n";
        let (a, b) = (CpuTimes::parse(before).unwrap(), CpuTimes::parse(after).unwrap());
        assert_eq!(a.steal, 12175);
        assert_eq!(a.total, 105177 + 16145 + 628389 + 1636 + 863 + 12175);
        // 1254 of 9449 ticks.
        let pct = b.steal_pct_since(&a).unwrap();
        assert!((pct - 13.271).abs() < 0.01, "{pct}");
        // No time passed, counters reset, or no steal column: no figure.
        assert_eq!(a.steal_pct_since(&a), None);
        assert_eq!(a.steal_pct_since(&b), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(CpuTimes::parse("intr 1 2 3\n"), None);
    }

    #[test]
    fn a_run_on_a_machine_whose_host_takes_its_cpu_says_so() {
        let t = |steal| Timing {
            steal_pct: steal,
            packets: 2000,
            late_packets: 30,
            mean_late_us: Some(140),
        };
        let quiet = t(Some(0.5)).describe();
        assert!(quiet.contains("1.50% of 2000 packets"), "{quiet}");
        assert!(quiet.contains("late, 140 us on average"), "{quiet}");
        assert!(quiet.contains("0.5% of the CPU time") && !quiet.contains("pauses"), "{quiet}");
        let busy = t(Some(13.4)).describe();
        assert!(busy.contains("13.4%") && busy.contains("pauses"), "{busy}");
        assert!(!t(None).describe().contains("steal"));
        // No emulated link in the run (the side-by-side one alone).
        let none = Timing { steal_pct: Some(0.3), packets: 0, late_packets: 0, mean_late_us: None }
            .describe();
        assert!(!none.contains("packets") && none.contains("0.3% of the CPU"), "{none}");
    }
}
