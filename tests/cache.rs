//! The chunk cache end to end: a track played once plays again with every
//! peer gone, and the node that played it serves it to others as a
//! (non-origin) peer.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use chorus_player::decode::decode_file;
use chorus_player::play::{PlayOptions, play};
use chorus_player::sink::OutputSpec;
use chorus_protocol::message::ChunkRun;
use chorus_streamer::cache::ChunkCache;
use chorus_streamer::fetch::Source;
use chorus_streamer::identity::Identity;
use chorus_streamer::node::{Node, NodeLimits};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_played_track_replays_offline_and_is_served_on_from_the_cache() {
    let lib = library_dir(&["through-space.m4a"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let seed = Seed::start(library);
    let out = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ChunkCache::open(cache_dir.path(), 1 << 30).unwrap());
    let mut options = PlayOptions::default();
    options.fetch.cache = Some(cache.clone());

    // 1. Played once from the seed: the cache ends up with every chunk.
    let listener = client();
    let peer = listener.connect(seed.addr, Some(seed.id)).await.unwrap();
    let first = out.path().join("first.wav");
    let source = Source { peer, is_seed: true, have: None, head_rest: None };
    play(
        manifest.clone(),
        vec![source],
        OutputSpec::Wav(first.clone()),
        options.clone(),
        Instant::now(),
        |_| {},
    )
    .await
    .unwrap();
    let count = manifest.layout().count();
    for _ in 0..500 {
        if cache.is_complete(&manifest.id()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(cache.is_complete(&manifest.id()), "every verified chunk was kept");
    listener.close().await;
    seed.stop().await;

    // 2. Every peer gone: it plays again, from the cache alone.
    let again = out.path().join("again.wav");
    let report = play(
        manifest.clone(),
        vec![],
        OutputSpec::Wav(again.clone()),
        options.clone(),
        Instant::now(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.bytes_fetched, 0);
    let (_, _, a) = decode_file(&first, None).unwrap();
    let (_, _, b) = decode_file(&again, None).unwrap();
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        !a.is_empty() && a == b,
        "the replay is the same audio ({} and {} samples, first difference at {first_diff:?})",
        a.len(),
        b.len()
    );

    // 3. The node that played it serves it on, as a non-origin peer that
    //    says what it holds.
    let cached_node = Node::bind_with_cache(
        Arc::new(Identity::ephemeral().unwrap()),
        ([127, 0, 0, 1], 0).into(),
        Default::default(),
        Some(cache.clone()),
        NodeLimits::default(),
    )
    .unwrap();
    let n = cached_node.clone();
    let serving = tokio::spawn(async move { n.serve().await });
    let third = client();
    let peer = third.connect(cached_node.transport().local_addr().unwrap(), None).await.unwrap();
    let (m, origin, have) = peer.manifest_and_origin(manifest.id()).await.unwrap();
    assert_eq!(m, manifest);
    assert!(!origin, "served from a cache, not a library");
    assert_eq!(have, Some(vec![ChunkRun { start: 0, len: count }]));
    let served = out.path().join("served.wav");
    let third_cache = tempfile::tempdir().unwrap();
    let mut opts = PlayOptions::default();
    opts.fetch.cache = Some(Arc::new(ChunkCache::open(third_cache.path(), 1 << 30).unwrap()));
    let source = Source { peer, is_seed: false, have, head_rest: None };
    play(
        manifest.clone(),
        vec![source],
        OutputSpec::Wav(served.clone()),
        opts,
        Instant::now(),
        |_| {},
    )
    .await
    .unwrap();
    let (_, _, c) = decode_file(&served, None).unwrap();
    assert!(a == c);
    assert_eq!(cached_node.stats().bytes_served.load(Relaxed) as u64, manifest.layout().byte_len());
    third.close().await;
    cached_node.shutdown().await;
    serving.abort();
}

#[test]
fn an_mp3_whose_cover_art_the_player_skips_is_still_cached_whole() {
    // beat-thee.mp3 starts with a 143 KB ID3 tag (cover art) that the
    // player never reads; once played, the cache must still hold all of
    // the file, so it plays again with no peer at all.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["beat-thee.mp3"]);
    let index = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), index.path());
    let seed = rt.block_on(async { Seed::start(library) });
    let peer = format!("{}@{}", seed.id, seed.addr);
    let data = tempfile::tempdir().unwrap();
    let (first, again) = (data.path().join("first.wav"), data.path().join("again.wav"));
    let o = chorus_cmd(data.path())
        .args(["-q", "play", "beat thee", "--peer", &peer, "--out"])
        .arg(&first)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    rt.block_on(seed.stop());
    let o = chorus_cmd(data.path())
        .args(["-q", "play", "beat thee", "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&first).unwrap() == std::fs::read(&again).unwrap());
}
