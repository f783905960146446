//! The start path `chorus play` runs (`streamer::start::Pool` and the
//! start request), over real QUIC on loopback: the manifest and the head of
//! the track come back in one response; that one request is all that
//! precedes the first audio, by id and by query alike, on a link with
//! latency too.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chorus_player::play::{PlayOptions, play};
use chorus_player::sink::OutputSpec;
use chorus_protocol::message::Want;
use chorus_streamer::netem::LinkProfile;
use chorus_streamer::node::Node;
use chorus_streamer::start::Pool;
use chorus_streamer::transport::Transport;
use common::*;

const FORMATS: [&str; 7] = [
    "apex-aleph.ogg",
    "awakening.flac",
    "beat-thee.mp3",
    "coherence.m4a",
    "deprecation.wav",
    "inevitable.mp3",
    "through-space.m4a",
];

/// A seed and a listener endpoint, both behind `link` (None: plain
/// loopback).
async fn setup(link: Option<LinkProfile>) -> (Node, Transport, tempfile::TempDir) {
    seed_and_listener(&FORMATS, link.map(|l| (l, 1)))
}

fn pool_for(listener: &Transport, node: &Node) -> Arc<Pool> {
    let addr = node.transport().local_addr().unwrap();
    Pool::dial(listener, &[(addr, Some(node.transport().peer_id()))])
}

/// Starts `want` from a fresh pool and plays it into a WAV file; returns
/// the requests the fetcher sent before playback could start.
async fn start_and_play(listener: &Transport, node: &Node, want: Want) -> (String, u64) {
    let started = Instant::now();
    let pool = pool_for(listener, node);
    let s = pool.start(&want, Duration::ZERO).await.unwrap();
    let name = match &want {
        Want::Query(_) => s.answer.entry.file_name.clone(),
        Want::Track(_) => s.answer.manifest.tags().title.clone().unwrap_or_default(),
    };
    let m = &s.answer.manifest;
    assert!(!s.answer.head.is_empty(), "{name}: the start response carried no chunks");
    for i in m.layout().indices().filter(|i| m.is_header_chunk(*i)) {
        assert!(s.answer.head.iter().any(|c| c.index() == i), "{name}: header chunk {i} missing");
    }
    let first = m.chunk_at_time(Duration::ZERO);
    assert!(s.answer.head.iter().any(|c| c.index() == first), "{name}: first audio chunk missing");
    // The decoder opens and decodes its first audio from those chunks
    // alone: a store holding nothing else (and nothing fetching) is enough.
    // A read of any other chunk (a scan of the file's end for tags or a
    // duration, say) would wait in vain, and opening would fail.
    let store = Arc::new(chorus_streamer::store::TrackStore::new(m.clone()));
    for c in &s.answer.head {
        store.insert(c.clone()).unwrap();
    }
    let source =
        chorus_player::source::ChunkSource::new(store, Duration::from_secs(2), Box::new(|_| {}));
    let shown = source.length_shown();
    let hint = chorus_player::decode::extension_hint(m.media().container);
    let mut d = chorus_player::decode::Decoder::open(Box::new(source), hint)
        .unwrap_or_else(|e| panic!("{name}: the decoder needs more than the head: {e}"));
    shown.store(true, Relaxed);
    assert!(d.next_block().unwrap().is_some(), "{name}: no audio from the head");
    // A real-time sink (the paced null one), whose first note waits for the
    // start rule as a device's does: a file sink writes as soon as it can,
    // whatever the fetch is still asking for.
    let options = PlayOptions {
        head: s.answer.head.clone(),
        duration: Some(Duration::from_millis(300)),
        ..PlayOptions::default()
    };
    let report =
        play(m.clone(), vec![s.source.clone()], OutputSpec::Null, options, started, |_| {})
            .await
            .unwrap();
    assert!(report.time_to_first_audio.is_some(), "{name}: no audio");
    (name, report.requests_before_start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_carries_everything_the_first_note_needs_in_every_format() {
    let (node, listener, _lib) = setup(None).await;
    let tracks: Vec<_> =
        node.with_library(|l| l.tracks().map(|t| t.manifest.id()).collect::<Vec<_>>()).unwrap();
    assert_eq!(tracks.len(), FORMATS.len());
    for id in tracks {
        let (name, before) = start_and_play(&listener, &node, Want::Track(id)).await;
        assert_eq!(before, 0, "{name}: chunk requests before the first note");
    }
    assert_eq!(node.stats().starts.load(Relaxed), FORMATS.len());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_query_costs_no_request_more_than_by_id_behind_a_slow_link() {
    let link = LinkProfile::by_name("transatlantic").unwrap();
    let (node, listener, _lib) = setup(Some(link)).await;
    let id = node.with_library(|l| l.best_match("inevitable").map(|e| e.track)).flatten().unwrap();
    let (_, by_id) = start_and_play(&listener, &node, Want::Track(id)).await;
    let chunk_requests = node.stats().chunk_requests.load(Relaxed);
    let (name, by_query) = start_and_play(&listener, &node, Want::Query("inevitable".into())).await;
    assert_eq!(name, "inevitable.mp3");
    assert_eq!((by_id, by_query), (0, 0), "chunk requests before the first note");
    assert_eq!(node.stats().starts.load(Relaxed), 2, "one start request each, nothing else");
    assert!(chunk_requests > 0, "the rest of the track is fetched by deadline afterwards");
    node.shutdown().await;
}
