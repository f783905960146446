//! `chorus play` end to end over loopback QUIC: streamed output against a
//! local decode of the original file, seeking, the real cpal path on the
//! ALSA null device, and a peer that stops answering.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_player::decode::decode_file;
use chorus_player::play::{PlayOptions, Playback, play};
use chorus_player::sink::OutputSpec;
use chorus_protocol::Manifest;
use common::*;

struct Swarm {
    seed: Seed,
    client: chorus_streamer::transport::Transport,
    peer: chorus_streamer::client::Peer,
    manifests: Vec<(String, Manifest)>,
    _lib: tempfile::TempDir,
    _data: tempfile::TempDir,
}

async fn swarm(names: &[&str]) -> Swarm {
    let lib = library_dir(names);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifests =
        library.tracks().map(|t| (t.file_name.clone(), t.manifest.clone())).collect::<Vec<_>>();
    let seed = Seed::start(library);
    let client = client();
    let peer = client.connect(seed.addr, Some(seed.id)).await.unwrap();
    Swarm { seed, client, peer, manifests, _lib: lib, _data: data }
}

fn source(peer: &chorus_streamer::client::Peer) -> chorus_streamer::fetch::Source {
    chorus_streamer::fetch::Source {
        peer: peer.clone(),
        is_seed: true,
        have: None,
        head_rest: None,
    }
}

/// Streams `name` to a WAV file and decodes that file back.
async fn stream_to_wav(s: &Swarm, name: &str, start: Duration) -> (Vec<f32>, Duration, u64) {
    let (_, manifest) = s.manifests.iter().find(|(n, _)| n == name).unwrap();
    let out = tempfile::tempdir().unwrap();
    let wav = out.path().join("out.wav");
    let options = PlayOptions { start, ..PlayOptions::default() };
    let report = play(
        manifest.clone(),
        vec![source(&s.peer)],
        OutputSpec::Wav(wav.clone()),
        options,
        Instant::now(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.time_to_first_audio.is_some());
    assert_eq!(report.underruns, 0, "a file sink never underruns");
    let (rate, _, samples) = decode_file(&wav, None).unwrap();
    assert_eq!(rate, manifest.media().sample_rate, "WAV is written at the track's own rate");
    (samples, report.started_at, report.bytes_fetched)
}

fn assert_identical(name: &str, streamed: &[f32], local: &[f32]) {
    assert_eq!(streamed.len(), local.len(), "{name}: sample count differs");
    if let Some(i) = streamed.iter().zip(local).position(|(a, b)| a.to_bits() != b.to_bits()) {
        panic!("{name}: first difference at sample {i}: {} vs {}", streamed[i], local[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_streams_sample_identical_to_a_local_decode() {
    let names = [
        "awakening.flac",
        "deprecation.wav",
        "beat-thee.mp3",
        "inevitable.mp3",
        "apex-aleph.ogg",
        "through-space.m4a",
        "coherence.m4a",
    ];
    let s = swarm(&names).await;
    for name in names {
        let (streamed, _, bytes) = stream_to_wav(&s, name, Duration::ZERO).await;
        let (_, _, local) = decode_file(&sample(name), None).unwrap();
        assert!(!local.is_empty());
        assert_identical(name, &streamed, &local);
        // Every chunk of the audio: an MP3's leading ID3 tag (cover art)
        // is not read by the player, so it need not be fetched.
        let (_, manifest) = s.manifests.iter().find(|(n, _)| n == name).unwrap();
        let audio_start = match manifest.media().container {
            chorus_protocol::Container::Mpeg => {
                manifest.media().header_ranges.first().map_or(0, |r| r.start)
            }
            _ => 0,
        };
        let audio = std::fs::metadata(sample(name)).unwrap().len() - audio_start;
        assert!(bytes >= audio, "{name}: every chunk of the audio fetched");
    }
    s.client.close().await;
    s.seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_60_seconds_matches_the_local_decode_from_60_seconds() {
    let names = ["awakening.flac", "inevitable.mp3"];
    let s = swarm(&names).await;
    for name in names {
        let start = Duration::from_secs(60);
        let (streamed, started_at, bytes) = stream_to_wav(&s, name, start).await;
        let (rate, channels, local) = decode_file(&sample(name), Some(start)).unwrap();
        assert_identical(name, &streamed, &local);
        // Within one packet (at most 4608 frames for FLAC, 1152 for MP3) of 60 s.
        let off = (started_at.as_secs_f64() - 60.0).abs() * f64::from(rate);
        assert!(off <= 4608.0, "{name}: started {off} frames from 60 s");
        // And it is the audio from 60 s on: the same samples sit at 60 s in a full decode.
        let (_, _, full) = decode_file(&sample(name), None).unwrap();
        let at = (started_at.as_secs_f64() * f64::from(rate)).round() as usize * channels;
        assert_identical(name, &streamed[..48_000], &full[at..at + 48_000]);
        assert!(bytes > 0);
    }
    s.client.close().await;
    s.seed.stop().await;
}

#[test]
fn the_real_cpal_path_plays_on_the_alsa_null_device() {
    // Point ALSA's default device at `null` for the child process only.
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "pcm.!default { type null }\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(swarm(&["apex-aleph.ogg"]));
    let data = tempfile::tempdir().unwrap();
    let peer = format!("{}@{}", s.seed.id, s.seed.addr);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .env("CHORUS_LAN", "off")
        .env("CHORUS_PORT_MAP", "off")
        .env("ALSA_CONFIG_PATH", format!("/usr/share/alsa/alsa.conf:{}", conf.path().display()))
        .args(["--data-dir"])
        .arg(data.path())
        .args(["play", "apex", "--peer", &peer, "--out", "default"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    // The callback consumed the whole track (the null device runs unpaced).
    assert!(stdout.contains("played 1:44 from 0:00; first audio after"), "{stdout}");
    rt.block_on(async {
        s.client.close().await;
        s.seed.stop().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_ends_playback_with_a_clear_error() {
    let s = swarm(&["deprecation.wav"]).await;
    let (_, manifest) = s.manifests[0].clone();
    // 4 Mbit/s, and the relay goes silent after carrying 500 KB: under
    // 3 s of this 1.4 Mbit/s track, mid-track (it is 13 MB), and less audio
    // than the 5 s the fetcher waits before giving up on a silent peer, so
    // the reader runs dry first and the stall shows.
    let relay = UdpRelay::start_with_cutoff(s.seed.addr, 4_000_000, 500_000).await;
    let via_relay = s.client.connect(relay.addr, Some(s.seed.id)).await.unwrap();
    let handle: Arc<Mutex<Option<Playback>>> = Arc::default();
    let h = handle.clone();
    let playing = tokio::spawn(play(
        manifest.clone(),
        vec![source(&via_relay)],
        OutputSpec::Null,
        PlayOptions::default(),
        Instant::now(),
        move |p| {
            *h.lock().unwrap() = Some(p.clone());
        },
    ));
    let result =
        tokio::time::timeout(Duration::from_secs(60), playing).await.expect("no hang").unwrap();
    match result {
        Err(chorus_player::Error::Source(msg)) => {
            assert!(msg.contains("no peer can serve"), "{msg}");
            assert!(msg.contains("stopped answering"), "{msg}");
        }
        other => panic!("expected a clear source error, got {other:?}"),
    }
    let playback = handle.lock().unwrap().clone().unwrap();
    assert!(relay.is_blackholed());
    assert!(playback.store.present() < manifest.layout().count(), "the fault came mid-track");
    assert!(playback.stats.time_to_first_audio().is_some(), "playback had started");
    assert!(playback.stats.stalls.load(Relaxed) >= 1, "the stall was reported");
    assert!(playback.stats.underruns.load(Relaxed) >= 1, "the sink ran dry while waiting");
    s.client.close().await;
    s.seed.stop().await;
}

/// The output opens while the first chunks are on their way, not after
/// the decoder: a sound card's stream can take tens of milliseconds to
/// open, which then overlaps the network's round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_opens_before_any_chunk_has_come() {
    let s = swarm(&["apex-aleph.ogg"]).await;
    let (_, manifest) = s.manifests[0].clone();
    let handle: Arc<Mutex<Option<Playback>>> = Arc::default();
    let h = handle.clone();
    let options = PlayOptions { duration: Some(Duration::from_millis(200)), ..Default::default() };
    // No source yet: no chunk can come until one is added below.
    let playing = tokio::spawn(play(
        manifest.clone(),
        Vec::new(),
        OutputSpec::Null,
        options,
        Instant::now(),
        move |p| {
            *h.lock().unwrap() = Some(p.clone());
        },
    ));
    let mut opened = None;
    for _ in 0..2000 {
        let playback = handle.lock().unwrap().clone();
        if let Some(p) = playback.filter(|p| p.stats.time_to_output_open().is_some()) {
            opened = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let playback = opened.expect("the output opened with no chunk in hand");
    assert_eq!(playback.store.present(), 0);
    assert!(playback.stats.time_to_decoder_ready().is_none());
    playback.add_source(source(&s.peer));
    let report = tokio::time::timeout(Duration::from_secs(60), playing)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap();
    assert!(report.output_open.unwrap() < report.decoder_ready.unwrap());
    assert!(report.time_to_first_audio.is_some());
    s.client.close().await;
    s.seed.stop().await;
}

/// A play shorter than the sink's prebuffer (`--duration 0.01`) in a
/// player that keeps its sink open for the next track: what was decoded
/// plays at once, and the report has its first audio. (The sink waited
/// for a prebuffer that was never coming and the play took 5 s to end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_shorter_than_the_prebuffer_starts_in_a_sink_kept_open() {
    let s = swarm(&["awakening.flac"]).await;
    let (_, manifest) = s.manifests[0].clone();
    let mut player = chorus_player::play::Player::new(OutputSpec::Null, true);
    let options = PlayOptions { duration: Some(Duration::from_millis(5)), ..Default::default() };
    assert!(options.prebuffer > Duration::from_millis(5), "the play is shorter than it");
    let report = player
        .play(manifest, vec![source(&s.peer)], options, Instant::now(), |_| {})
        .await
        .unwrap();
    assert!(report.time_to_first_audio.is_some(), "the sink started on what it had");
    player.finish().await.unwrap();
    s.client.close().await;
    s.seed.stop().await;
}
