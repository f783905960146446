//! The player as a listener uses it through the binary: an album played to
//! a WAV file joins its tracks without a gap, a played track plays again
//! with every peer gone, search merges what several peers hold, and the
//! config file supplies what flags leave open.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::{Command, Output};

use chorus_player::decode::decode_file;
use common::*;

fn chorus(data_dir: &std::path::Path) -> Command {
    chorus_cmd(data_dir)
}

fn ok(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    stdout
}

/// Sample-exact: same length, every sample equal.
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: {} samples, expected {}", got.len(), want.len());
    let diff = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(diff.is_none(), "{what}: first difference at sample {diff:?}");
}

fn local(name: &str) -> Vec<f32> {
    decode_file(&sample(name), None).unwrap().2
}

#[test]
fn an_album_plays_in_track_order_and_same_format_tracks_join_without_a_gap() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let names = [
        "awakening.flac",
        "coherence.m4a",
        "deprecation.wav",
        "inevitable.mp3",
        "through-space.m4a",
        "apex-aleph.ogg",
    ];
    let lib = library_dir(&names);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let seed = rt.block_on(async { Seed::start(library) });
    let peer = format!("{}@{}", seed.id, seed.addr);
    let client = tempfile::tempdir().unwrap();
    let wav = client.path().join("album.wav");
    let stdout = ok(&chorus(client.path())
        .args(["play", "--album", "endgame", "--peer", &peer, "--out"])
        .arg(&wav)
        .output()
        .unwrap());
    // Track order from the tags (4, 6, 7 (the WAV's RIFF INFO tags), 9,
    // 13, then Apex Aleph, which has no number).
    let titles = ["Awakening", "Coherence", "Deprecation", "Inevitable", "Through Space", "Apex"];
    let order: Vec<usize> = titles
        .iter()
        .map(|t| stdout.find(&format!("playing \"{t}")).unwrap_or_else(|| panic!("{t}: {stdout}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    assert!(stdout.contains("[6/6]"), "{stdout}");
    assert_eq!(stdout.matches("joined the previous track without a gap").count(), 3, "{stdout}");

    // 48 kHz, then two 44.1 kHz tracks joined in a new file, then three
    // 48 kHz tracks joined in the next.
    let file = |n: &str| decode_file(&client.path().join(n), None).unwrap();
    let (rate, _, first) = file("album.wav");
    assert_eq!(rate, 48_000);
    assert_same("awakening", &first, &local("awakening.flac"));
    let (rate, _, second) = file("album-2.wav");
    assert_eq!(rate, 44_100);
    let want = [local("coherence.m4a"), local("deprecation.wav")].concat();
    assert_same("coherence + deprecation, joined", &second, &want);
    let (_, _, joined) = file("album-3.wav");
    let want: Vec<f32> =
        [local("inevitable.mp3"), local("through-space.m4a"), local("apex-aleph.ogg")].concat();
    assert_same("inevitable + through space + apex aleph, joined", &joined, &want);
    rt.block_on(seed.stop());
}

#[test]
fn a_played_track_plays_again_with_every_peer_gone() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let seed = rt.block_on(async { Seed::start(library) });
    let peer = format!("{}@{}", seed.id, seed.addr);
    let client = tempfile::tempdir().unwrap();
    let first = client.path().join("first.wav");
    ok(&chorus(client.path())
        .args(["play", "apex aleph", "--peer", &peer, "--out"])
        .arg(&first)
        .output()
        .unwrap());
    rt.block_on(seed.stop());

    // No peer at all: from the cache, by words of the title.
    let again = client.path().join("again.wav");
    let stdout =
        ok(&chorus(client.path()).args(["play", "apex", "--out"]).arg(&again).output().unwrap());
    assert!(stdout.contains("from the cache"), "{stdout}");
    let want = local("apex-aleph.ogg");
    assert_same("replay", &decode_file(&again, None).unwrap().2, &want);

    // The peer given is gone: said, and played from the cache anyway.
    let third = client.path().join("third.wav");
    let o = chorus(client.path())
        .args(["play", "apex", "--peer", &peer, "--out"])
        .arg(&third)
        .output()
        .unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("playing from the cache"));
    assert_same("replay, peer gone", &decode_file(&third, None).unwrap().2, &want);
}

#[test]
fn search_merges_every_peer_and_the_config_file_supplies_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (lib_a, lib_b) = (
        library_dir(&["apex-aleph.ogg", "coherence.m4a"]),
        library_dir(&["coherence.m4a", "inevitable.mp3"]),
    );
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _, _) = scan(lib_a.path(), da.path());
    let (b, _, _) = scan(lib_b.path(), db.path());
    let (sa, sb) = rt.block_on(async { (Seed::start(a), Seed::start(b)) });
    let client = tempfile::tempdir().unwrap();
    let config_dir = client.path().join("config-home/chorus");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            "peers = [\"{}@{}\", \"{}@{}\"]\nvolume = 70\nout = \"null\"\n",
            sa.id, sa.addr, sb.id, sb.addr
        ),
    )
    .unwrap();

    let stdout = ok(&chorus(client.path()).args(["search", "--json"]).output().unwrap());
    let rows: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let titles: Vec<&str> = rows.iter().map(|r| r["title"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 3, "one row per track, shared ones once: {titles:?}");
    let shared = rows.iter().find(|r| r["title"] == "Coherence").unwrap();
    assert_eq!(shared["holders"], 2);
    assert!(rows.iter().filter(|r| r["title"] != "Coherence").all(|r| r["holders"] == 1));

    let shown = ok(&chorus(client.path()).arg("config").output().unwrap());
    assert!(shown.contains("volume = 70  # config file"), "{shown}");
    assert!(shown.contains("out = \"null\"  # config file"), "{shown}");
    assert!(shown.contains("cache_mib = 2048  # default"), "{shown}");
    assert!(shown.contains(&sa.addr.to_string()), "{shown}");
    let flagged = ok(&chorus(client.path()).args(["config"]).output().unwrap());
    assert_eq!(shown, flagged);

    // A mistake in the file is an error naming the file, not ignored.
    std::fs::write(config_dir.join("config.toml"), "volum = 3\n").unwrap();
    let o = chorus(client.path()).args(["search", "x"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("config.toml") && err.contains("volum"), "{err}");
    rt.block_on(async {
        sa.stop().await;
        sb.stop().await;
    });
}

#[test]
fn a_peer_that_never_answers_does_not_hold_playback_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["deprecation.wav"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let seed = rt.block_on(async { Seed::start(library) });
    // A UDP port that takes packets and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = tempfile::tempdir().unwrap();
    let o = chorus(client.path())
        .args(["play", "deprecation", "--out", "null", "--duration", "1"])
        .args(["--peer", &format!("{}@{}", seed.id, seed.addr)])
        .args(["--peer", &silent.local_addr().unwrap().to_string()])
        .output()
        .unwrap();
    let stdout = ok(&o);
    assert!(stdout.contains("played 0:01"), "{stdout}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("have not answered yet"), "went on without it: {stderr}");
    rt.block_on(seed.stop());
}

/// A track played before, asked for again by id: it starts from the cache
/// while its peer is asked, and the rest comes from the peer, sample for
/// sample what a local decode gives.
#[test]
fn a_track_played_before_starts_from_the_cache_by_id_and_its_peer_brings_the_rest() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let id = library.tracks().next().unwrap().manifest.id().to_string();
    let seed = rt.block_on(async { Seed::start(library) });
    let peer = format!("{}@{}", seed.id, seed.addr);
    let client = tempfile::tempdir().unwrap();
    let first = client.path().join("first.wav");
    let stdout = ok(&chorus(client.path())
        .args(["play", &id, "--peer", &peer, "--duration", "8", "--out"])
        .arg(&first)
        .output()
        .unwrap());
    assert!(stdout.contains("from 1 peer(s)"), "{stdout}");
    let again = client.path().join("again.wav");
    let stdout = ok(&chorus(client.path())
        .args(["play", &id, "--peer", &peer, "--duration", "60", "--out"])
        .arg(&again)
        .output()
        .unwrap());
    assert!(stdout.contains("from the cache, peers joining"), "{stdout}");
    assert!(!stdout.contains(" 0 B fetched"), "the rest came from the peer: {stdout}");
    let got = decode_file(&again, None).unwrap().2;
    let want = local("apex-aleph.ogg");
    assert!(got.len() > want.len() / 2, "{} of {} samples", got.len(), want.len());
    assert_same("from the cache, then the peer", &got, &want[..got.len()]);
    rt.block_on(seed.stop());
}
