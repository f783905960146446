//! The network emulator over real QUIC on loopback: delay, loss and rate
//! are what the profile says, and data still arrives intact. Timing checks
//! are lower bounds only (the emulator adds delay; a busy machine only adds
//! more).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chorus_streamer::netem::LinkProfile;
use common::*;

async fn fetch_over(profile: &str, seed: u64) -> (Duration, Duration, Vec<u8>, (u64, u64, u64)) {
    let profile = LinkProfile::by_name(profile).unwrap();
    let (node, client, _lib) = seed_and_listener(&["apex-aleph.ogg"], Some((profile, seed)));
    let manifest =
        node.with_library(|l| l.tracks().next().map(|t| t.manifest.clone())).flatten().unwrap();
    let peer = client.connect(node.transport().local_addr().unwrap(), None).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("x.ogg");
    let started = Instant::now();
    peer.fetch_to_file(&manifest, &file, &|_| {}).await.unwrap();
    let elapsed = started.elapsed();
    let rtt = peer.connection().rtt();
    // The seed's side of the link carried the track: its emulator's counts.
    let link = node.transport().link_stats().unwrap();
    let counts = (link.sent.load(Relaxed), link.lost.load(Relaxed), link.dropped.load(Relaxed));
    let bytes = std::fs::read(&file).unwrap();
    client.close().await;
    node.shutdown().await;
    (elapsed, rtt, bytes, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transatlantic_adds_its_round_trip() {
    let (_, rtt, bytes, _) = fetch_over("transatlantic", 1).await;
    assert!(rtt >= Duration::from_millis(75), "QUIC measured {rtt:?} over an 80 ms link");
    assert!(bytes == std::fs::read(sample("apex-aleph.ogg")).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds() {
    // 1.43 MB at 5 Mbit/s ("lossy") takes at least 2.3 s.
    let (elapsed, _, bytes, _) = fetch_over("lossy", 2).await;
    assert!(elapsed >= Duration::from_millis(2_200), "{elapsed:?}");
    assert!(bytes == std::fs::read(sample("apex-aleph.ogg")).unwrap(), "intact despite loss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursty_loss_runs_near_the_profile_and_is_survived() {
    let (_, _, bytes, (sent, lost, _dropped)) = fetch_over("lossy", 3).await;
    assert!(bytes == std::fs::read(sample("apex-aleph.ogg")).unwrap());
    // ~1,200 packets at 5% loss in bursts of 3: the share lost sits well
    // inside 1-12% (about 3.5 standard deviations either side).
    assert!(sent > 1_000, "{sent} packets");
    let share = lost as f64 / sent as f64;
    assert!((0.01..0.12).contains(&share), "{lost} of {sent} lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_link_loses_nothing() {
    let (_, _, bytes, (sent, lost, dropped)) = fetch_over("lan", 4).await;
    assert!(bytes == std::fs::read(sample("apex-aleph.ogg")).unwrap());
    assert!(sent > 1_000);
    assert_eq!((lost, dropped), (0, 0));
}

#[test]
fn profiles_are_named_and_sane() {
    let all = LinkProfile::all();
    let names: Vec<_> = all.iter().map(|p| p.name).collect();
    assert_eq!(names, ["lan", "broadband", "transatlantic", "4g", "lossy"]);
    assert_eq!(LinkProfile::by_name("4g").unwrap().loss, 0.01);
    assert!(LinkProfile::by_name("nope").is_none());
}
