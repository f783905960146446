//! The `chorus` binary as a user runs it: seed in the background, search
//! and fetch from another data dir, then Ctrl-C the seed.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn chorus(data_dir: &std::path::Path) -> Command {
    chorus_cmd(data_dir)
}

/// Kills the seed if the test fails before it stops it.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn seed_search_fetch_and_ctrl_c_through_the_binary() {
    let lib = library_dir(&["apex-aleph.ogg", "through-space.m4a"]);
    std::fs::write(lib.path().join("readme.txt"), "liner notes").unwrap();
    let seed_data = tempfile::tempdir().unwrap();
    let mut child = chorus(seed_data.path())
        .args(["seed", "--listen", "127.0.0.1:0"])
        .arg(lib.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = Guard(child);

    // Read the seed's stdout on a thread so every wait is bounded.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let peer = loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("seed printed its address");
        lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("peers can reach it with --peer ") {
            break rest.trim().to_owned();
        }
    };
    assert!(lines[0].starts_with("2 tracks (1 aac, 1 vorbis)"), "summary line: {lines:?}");
    assert!(lines[0].contains("1 skipped"), "{lines:?}");

    let client_data = tempfile::tempdir().unwrap();
    let out = chorus(client_data.path())
        .args(["search", "space", "--json", "--peer", &peer])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["title"], "Through Space");
    assert_eq!(rows[0]["format"], "aac");
    let id = rows[0]["track_id"].as_str().unwrap().to_owned();

    let table = chorus(client_data.path()).args(["search", "--peer", &peer]).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("Apex Aleph") && table.contains("Through Space"), "{table}");

    let target = client_data.path().join("fetched.m4a");
    let out = chorus(client_data.path())
        .args(["fetch", &id[..10], "--peer", &peer, "-o"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&target).unwrap() == std::fs::read(sample("through-space.m4a")).unwrap());

    // Fetching an unknown id fails with a clear message, not a hang.
    let out = chorus(client_data.path()).args(["fetch", "00", "--peer", &peer]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no track whose id starts with 00"));

    // Ctrl-C: the seed says so and exits cleanly with a summary.
    let pid = guard.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        rest.push(line);
    }
    let status = guard.0.wait().unwrap();
    assert!(status.success(), "seed exit status {status:?}");
    assert!(rest.iter().any(|l| l.starts_with("served ")), "{rest:?}");
    // The index was saved: a second run reuses it.
    let out =
        chorus(seed_data.path()).args(["seed", "--index-only"]).arg(lib.path()).output().unwrap();
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.contains("0 new, 2 unchanged"), "{summary}");
}

#[test]
fn a_queue_plays_in_order_and_the_next_track_is_prefetched() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["apex-aleph.ogg", "deprecation.wav"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let seed = rt.block_on(async { Seed::start(library) });
    let peer = format!("{}@{}", seed.id, seed.addr);
    let client_data = tempfile::tempdir().unwrap();
    // Real time on the null sink: start 4 s before the first track's end,
    // inside the 30 s prefetch window, and play 2 s of each.
    let o = chorus(client_data.path())
        .args(["play", "apex aleph", "deprecation", "--peer", &peer, "--out", "null"])
        .args(["--start", "100", "--duration", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("[1/2] playing \"Apex Aleph\""), "{stdout}");
    assert!(
        stdout.contains("[2/2] playing \"Deprecation (excerpt)\" by Max McCracken"),
        "{stdout}"
    );
    assert!(
        stdout.contains("prefetched chunks"),
        "the second track started from the cache: {stdout}"
    );
    assert!(
        stdout.contains("played 0:02 from 1:40") && stdout.contains("played 0:02 from 0:00"),
        "{stdout}"
    );
    rt.block_on(seed.stop());
}
