//! `chorus bench` as a user runs it, small: one profile, one play, a short
//! serve run. Checks that the JSON carries every metric with plausible
//! values and that the plot is drawn.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;

fn series<'a>(json: &'a serde_json::Value, scenario: &str, metric: &str) -> &'a serde_json::Value {
    json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scenario"] == scenario && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no {scenario}/{metric} in the JSON"))
}

fn samples_of(json: &serde_json::Value, scenario: &str, metric: &str) -> Vec<f64> {
    let s = series(json, scenario, metric);
    let v: Vec<f64> =
        s["samples"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(!v.is_empty(), "{scenario}/{metric} has no samples");
    // The summary agrees with the samples.
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(s["summary"]["max"].as_f64().unwrap(), max, "{scenario}/{metric}");
    assert_eq!(s["summary"]["n"].as_u64().unwrap(), v.len() as u64);
    v
}

fn all_within(v: &[f64], lo: f64, hi: f64, what: &str) {
    assert!(v.iter().all(|x| (lo..=hi).contains(x)), "{what}: {v:?} not within {lo}..={hi}");
}

#[test]
fn a_small_bench_writes_every_metric_with_plausible_values() {
    let out = tempfile::tempdir().unwrap();
    let (json_path, svg_path) = (out.path().join("bench.json"), out.path().join("bench.svg"));
    let run = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .env("CHORUS_LAN", "off")
        .env("CHORUS_PORT_MAP", "off")
        .arg("--data-dir")
        .arg(out.path().join("data"))
        .arg("bench")
        .arg("--samples")
        .arg(samples())
        .args(["--profile", "broadband", "--plays", "1", "--peers", "2"])
        .args(["--scenario", "single", "--scenario", "versus"])
        .args(["--scenario", "discovery", "--scenario", "serve"])
        .args(["--connections", "4", "--streams", "16", "--serve-seconds", "0.5"])
        .arg("--json")
        .arg(&json_path)
        .arg("--plot")
        .arg(&svg_path)
        .env_remove("CHORUS_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("p50") && stdout.contains("Spotify"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(json["profiles"][0]["name"], "broadband");
    assert_eq!(json["profiles"][0]["rtt_ms"], 20.0);
    assert_eq!(json["reference"]["median_start_ms"], 265.0);
    // What touching memory costs here, hot and after a second idle: the
    // figures carry the second wherever a host pages idle memory out.
    let memory = &json["config"]["machine"]["memory"];
    for key in ["hot_us_per_page", "idle_us_per_page"] {
        let us = memory[key].as_f64().unwrap_or_else(|| panic!("no {key}: {memory}"));
        assert!(us > 0.0 && us < 10_000.0, "{key}: {us}");
    }
    assert!(stdout.contains("memory on this machine"), "{stdout}");
    // How far the machine kept time: the emulated links' packets (every
    // one counted, some may be late) and the host's steal, on Linux.
    let timing = &json["config"]["machine"]["timing"];
    let packets = timing["packets"].as_u64().unwrap_or_else(|| panic!("no packets: {timing}"));
    let late = timing["late_packets"].as_u64().unwrap_or_else(|| panic!("no late: {timing}"));
    assert!(packets > 100 && late <= packets, "{timing}");
    let steal = timing["steal_pct"].as_f64().unwrap_or_else(|| panic!("no steal: {timing}"));
    assert!((0.0..=100.0).contains(&steal), "{timing}");
    assert!(stdout.contains("timing on this machine"), "{stdout}");

    // Starts take at least the link's round trip (20 ms) – the emulator
    // adds it – and, on this link, well under the play's time limit.
    for start in
        ["start_cold", "start_new", "start_known", "start_warm", "start_replay", "start_query"]
    {
        let ms = format!("{start}_ms");
        all_within(&samples_of(&json, "single", &ms), 0.1, 20_000.0, &ms);
        // The same starts in round trips of the link: at least the
        // request's, but for the replay, whose start is in the cache.
        let rtt = format!("{start}_rtt");
        let least = if start == "start_replay" { 0.0 } else { 0.9 };
        all_within(&samples_of(&json, "single", &rtt), least, 1_000.0, &rtt);
    }
    // On this path the start response carries everything the first note needs.
    let before = samples_of(&json, "single", "requests_before_start");
    assert_eq!(before.len(), 6);
    assert!(before.iter().filter(|n| **n == 0.0).count() >= 4, "{before:?}");
    // The known start (a new process with the first one's tickets) was
    // answered with the seed's handshake.
    assert_eq!(samples_of(&json, "single", "known_sealed_pct"), vec![100.0]);
    // The new-peer start (that data dir, a peer it never met) had no
    // ticket to seal its request with, and judged its path by what the
    // first process's peers reported of the link, as the warm start did by
    // its live connection's reports (the cold one had neither).
    let metrics: Vec<&str> =
        json["results"].as_array().unwrap().iter().filter_map(|r| r["metric"].as_str()).collect();
    assert!(metrics.contains(&"known_start_sealed_in_the_handshake_ms"), "{metrics:?}");
    assert!(!metrics.iter().any(|m| m.starts_with("new_start_sealed")), "{metrics:?}");
    assert!(metrics.contains(&"new_handshake_done_ms"), "{metrics:?}");
    assert_eq!(
        samples_of(&json, "single", "start_new_clean_path_pct"),
        samples_of(&json, "single", "start_warm_clean_path_pct")
    );
    assert_eq!(samples_of(&json, "single", "start_cold_clean_path_pct"), vec![0.0]);
    all_within(&samples_of(&json, "single", "connect_cold_ms"), 20.0, 20_000.0, "connect");
    all_within(&samples_of(&json, "single", "manifest_warm_ms"), 20.0, 20_000.0, "manifest");
    all_within(&samples_of(&json, "single", "seek_ms"), 0.01, 20_000.0, "seek");
    // Six plays (cold, warm, replay, known, new peer, by query), each
    // listening 1.5 s at most.
    let underruns = samples_of(&json, "single", "underruns");
    assert_eq!(underruns.len(), 6);
    all_within(&underruns, 0.0, 1000.0, "underruns");
    all_within(&samples_of(&json, "single", "silent_ms"), 0.0, 20_000.0, "silent");
    all_within(&samples_of(&json, "single", "stutter_plays_pct"), 0.0, 100.0, "stutter");
    all_within(&samples_of(&json, "baseline", "underruns"), 0.0, 1000.0, "baseline underruns");
    // A listener process: some CPU, memory between 1 MiB and 1 GiB.
    all_within(&samples_of(&json, "single", "listener_cpu_ms"), 1.0, 60_000.0, "cpu");
    all_within(&samples_of(&json, "single", "listener_peak_mib"), 1.0, 1024.0, "memory");
    // Side by side through the same emulated link (20 ms RTT): `chorus
    // play` processes need at least one round trip (the QUIC handshake);
    // ffmpeg over HTTP at least two (TCP's handshake, then the request).
    for m in ["chorus_by_id", "chorus_known", "chorus_by_query"] {
        all_within(&samples_of(&json, "versus", &format!("{m}_ms")), 20.0, 60_000.0, m);
        all_within(&samples_of(&json, "versus", &format!("{m}_rtt")), 1.0, 3_000.0, m);
    }
    all_within(&samples_of(&json, "versus", "http_ffmpeg_ms"), 40.0, 60_000.0, "http");
    all_within(&samples_of(&json, "versus", "http_ffmpeg_rtt"), 2.0, 3_000.0, "http");
    // Discovery through the local DHT testnet: the holder was found by the
    // title's words and the track played, after at least a round trip.
    assert_eq!(samples_of(&json, "discovery", "dht_holders"), vec![1.0]);
    all_within(&samples_of(&json, "discovery", "dht_lookup_ms"), 0.01, 20_000.0, "lookup");
    all_within(&samples_of(&json, "discovery", "start_discovery_ms"), 20.0, 20_000.0, "found");
    // Serving: both servers moved bytes; over 1000 streams is not asked of
    // this small run, but the count is reported.
    let seed = samples_of(&json, "serve", "chorus_seed_mbps");
    let bare = samples_of(&json, "serve", "bare_quinn_mbps");
    assert!(seed[0] > 0.0 && bare[0] > 0.0, "{seed:?} {bare:?}");
    assert_eq!(samples_of(&json, "serve", "concurrent_streams")[0], 64.0);

    // Bytes by source: the swarm played from peers; the seed's share is a
    // share; the baseline took everything from the seed.
    let bytes = json["bytes"].as_array().unwrap();
    let single = bytes.iter().find(|b| b["scenario"] == "single").unwrap();
    assert!(single["peers"].as_u64().unwrap() + single["seed"].as_u64().unwrap() > 0);
    assert!(single["cache"].as_u64().unwrap() > 0, "the replay starts from the cache");
    let share = single["seed_share_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&share));
    let baseline = bytes.iter().find(|b| b["scenario"] == "baseline").unwrap();
    assert_eq!(baseline["peers"].as_u64().unwrap(), 0);
    assert_eq!(baseline["seed_share_pct"].as_f64().unwrap(), 100.0);

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<path") && svg.contains("broadband (n="));
    // Beside it, the four starts in round trips.
    let rtt = std::fs::read_to_string(out.path().join("bench-rtt.svg")).unwrap();
    assert!(rtt.contains("known: sealed in the handshake (n=1)"), "{rtt}");
}
