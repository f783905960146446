//! A track whose bytes make symphonia panic (found by the demuxer fuzzer:
//! a WAV `fmt` chunk whose channel count × sample size overflows a u16 in
//! symphonia-format-riff 0.6.1) ends that track with an error; the same
//! player then plays the next track. A peer can publish such bytes as a
//! track: its hashes verify, it is content.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Instant;

use bytes::Bytes;
use chorus_player::play::{PlayOptions, Player};
use chorus_player::sink::OutputSpec;
use chorus_protocol::{
    ChunkIndex, ChunkLayout, ChunkSize, Codec, Container, Manifest, MediaInfo, Tags, VerifiedChunk,
    chunk,
};
use common::*;

/// A manifest for `bytes` and every chunk of it, verified.
fn track(bytes: Vec<u8>, container: Container, codec: Codec) -> (Manifest, Vec<VerifiedChunk>) {
    let bytes = Bytes::from(bytes);
    let layout = ChunkLayout::new(bytes.len() as u64, ChunkSize::DEFAULT).unwrap();
    let (hashes, chunks) = chunk::chunk_bytes(&bytes, &layout).unwrap();
    let media = MediaInfo {
        codec,
        container,
        sample_rate: 44_100,
        channels: 2,
        frames: 0,
        header_ranges: vec![],
        time_index: vec![],
        tags: Tags::default(),
    };
    let m = Manifest::new(media, layout, hashes).unwrap();
    let verified =
        chunks.into_iter().enumerate().map(|(i, c)| m.verify(ChunkIndex(i as u32), c).unwrap());
    (m.clone(), verified.collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_that_crashes_the_decoder_ends_with_an_error_and_the_player_goes_on() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wav-fmt-overflow.bin");
    let (bad, bad_chunks) = track(std::fs::read(fixture).unwrap(), Container::Wav, Codec::Pcm);
    let out = tempfile::tempdir().unwrap();
    let mut player = Player::new(OutputSpec::Wav(out.path().join("out.wav")), true);
    let options = PlayOptions { head: bad_chunks, ..PlayOptions::default() };
    let crashed = player.play(bad, vec![], options, Instant::now(), |_| {}).await;
    assert!(crashed.is_err(), "the crafted track played: {crashed:?}");

    // The next track, on the same player (the same decode thread).
    let real = std::fs::read(sample("apex-aleph.ogg")).unwrap();
    let (good, good_chunks) = track(real, Container::Ogg, Codec::Vorbis);
    let options = PlayOptions { head: good_chunks, ..PlayOptions::default() };
    let report = player.play(good, vec![], options, Instant::now(), |_| {}).await.unwrap();
    assert!(report.time_to_first_audio.is_some());
    assert!(report.played.as_secs() > 90, "played {:?}", report.played);
    player.finish().await.unwrap();
}

#[test]
fn a_file_that_crashes_the_demuxer_is_skipped_by_the_scan_and_the_rest_is_indexed() {
    let lib = library_dir(&["apex-aleph.ogg", "inevitable.mp3"]);
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wav-fmt-overflow.bin");
    std::fs::copy(fixture, lib.path().join("crafted.wav")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let (library, report, warnings) = scan(lib.path(), data.path());
    assert_eq!(library.len(), 2, "{warnings:?}");
    assert_eq!(report.skipped, 1);
    assert!(warnings.iter().any(|w| w.contains("crafted.wav")), "{warnings:?}");
}
