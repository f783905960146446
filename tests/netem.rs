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

/// A play asks a peer for no more than a round trip's work and a little
/// more at a time. Given a second's work, a peer 80 ms away (its uplink
/// 20 Mbit/s with a 250 ms drop-tail queue, no random loss) grew its
/// congestion window until the queue overflowed: packets lost on a path
/// that loses none, and a next start that judged it unclean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_does_not_overfill_the_queue_at_its_peers_bottleneck() {
    use chorus_player::play::{PlayOptions, play};
    use chorus_player::sink::OutputSpec;
    let profile = LinkProfile::by_name("transatlantic").unwrap();
    let (node, client, _lib) = seed_and_listener(&["deprecation.wav"], Some((profile, 5)));
    let manifest =
        node.with_library(|l| l.tracks().next().map(|t| t.manifest.clone())).flatten().unwrap();
    let peer = client.connect(node.transport().local_addr().unwrap(), None).await.unwrap();
    // A peer, not the seed: it is also given prefetch beyond the window.
    let source =
        chorus_streamer::fetch::Source { peer, is_seed: false, have: None, head_rest: None };
    let options = PlayOptions { duration: Some(Duration::from_secs(6)), ..Default::default() };
    // A seek into the middle a second in: the reader, not playing, asks
    // for what it can (24 s of the WAV's audio, 4 MB) at once.
    let report = play(manifest, vec![source], OutputSpec::Null, options, Instant::now(), |p| {
        let p = p.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            p.seek(Duration::from_secs(30));
        });
    })
    .await;
    let report = report.unwrap();
    let link = node.transport().link_stats().unwrap();
    let (sent, dropped) = (link.sent.load(Relaxed), link.dropped.load(Relaxed));
    // The fetch ran well ahead of what played (WAV: 176 KB/s).
    assert!(report.bytes_fetched > 2_000_000, "{} bytes fetched", report.bytes_fetched);
    assert_eq!(dropped, 0, "{dropped} of {sent} packets dropped at the full queue");
    client.close().await;
    node.shutdown().await;
}
