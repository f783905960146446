//! After a seek, over real QUIC through an emulated link: the replies to
//! the old place's requests stop costing the link as soon as the listener
//! gives them up, and playback resumes only once the start rule holds at
//! the new place (not with the buffer it had at the old one).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chorus_player::play::{PlayOptions, play};
use chorus_player::sink::OutputSpec;
use chorus_protocol::ChunkIndex;
use chorus_protocol::message::Want;
use chorus_streamer::netem::LinkProfile;
use chorus_streamer::node::Node;
use chorus_streamer::start::Pool;
use chorus_streamer::transport::Transport;
use common::*;

/// A seed of `names` and a listener endpoint, both behind `link`.
fn setup(names: &[&str], link: &str) -> (Node, Transport, tempfile::TempDir) {
    seed_and_listener(names, Some((LinkProfile::by_name(link).unwrap(), 1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_the_listener_gave_up_are_dropped_not_sent() {
    // 10 Mbit/s: the requests below ask for 4 MB, over 3 s of link.
    let (node, listener, _lib) = setup(&["deprecation.wav"], "4g");
    let addr = node.transport().local_addr().unwrap();
    let peer = listener.connect(addr, Some(node.transport().peer_id())).await.unwrap();
    let id = node.with_library(|l| l.tracks().next().map(|t| t.manifest.id())).flatten().unwrap();
    let manifest = peer.manifest(id).await.unwrap();
    // As many requests as the seed lets one connection have open (its
    // stream limit), four chunks each.
    let (n, per) = (64u32, 4u32);
    let first = manifest.chunk_at_time(Duration::from_secs(10)).0;
    let bytes = |from: u32, count: u32| -> u64 {
        (from..from + count).map(|i| manifest.layout().chunk_len(ChunkIndex(i))).sum()
    };
    let mut streams = Vec::new();
    for k in 0..n {
        // Deadlines in playing order: the seed sends the first one first.
        let deadline = 1_000 + 100 * k;
        let s = peer.chunks(&manifest, ChunkIndex(first + k * per), per, deadline).await.unwrap();
        streams.push(s);
    }
    let asked = bytes(first, n * per);
    // Serving has begun: a reply arrived.
    streams[0].next().await.unwrap().unwrap();
    let rx_before = peer.connection().stats().udp_rx.bytes;
    // A seek: the listener gives them all up (the streams are stopped),
    // and asks at the new place. Each new request needs one of the
    // connection's streams back: the seed frees a stream once what it sent
    // on it is acknowledged, or once it resets it.
    drop(streams);
    let target = first + 2 * n * per;
    let mut again = Vec::new();
    for k in 0..n {
        again.push(peer.chunks(&manifest, ChunkIndex(target + k), 1, 100).await.unwrap());
    }
    for (k, mut s) in again.into_iter().enumerate() {
        assert_eq!(s.next().await.unwrap().unwrap().index(), ChunkIndex(target + k as u32));
    }
    // And one request whose deadline is later than any given up: the seed
    // sends it after anything it still has queued for them.
    let last = target + n;
    let mut s = peer.chunks(&manifest, ChunkIndex(last), 1, 60_000).await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().index(), ChunkIndex(last));
    let stats = peer.connection().stats();
    let old = (stats.udp_rx.bytes - rx_before).saturating_sub(bytes(target, n + 1));
    // The seed reset the replies given up instead of finishing them.
    assert!(node.stats().replies_stopped.load(Relaxed) > 0, "no reply was dropped");
    assert!(stats.frame_rx.reset_stream > 0, "no reply was reset");
    // What was on its way when the stop arrived still comes (a round trip
    // and the link's queue), not the rest of what was given up.
    assert!(
        old < asked / 2,
        "{old} of the {asked} bytes given up arrived anyway: they were sent, not dropped"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_seek_playback_waits_for_the_start_rule_at_the_new_place() {
    let (node, listener, _lib) = setup(&["awakening.flac"], "transatlantic");
    let addr = node.transport().local_addr().unwrap();
    let pool = Pool::dial(&listener, &[(addr, Some(node.transport().peer_id()))]);
    let id = node.with_library(|l| l.tracks().next().map(|t| t.manifest.id())).flatten().unwrap();
    let started = Instant::now();
    let s = pool.start(&Want::Track(id), Duration::ZERO).await.unwrap();
    let m = s.answer.manifest.clone();
    let options = PlayOptions { head: s.answer.head.clone(), ..PlayOptions::default() };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let playing = tokio::spawn(play(
        m.clone(),
        vec![s.source.clone()],
        OutputSpec::Null,
        options,
        started,
        move |p| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(p.clone());
            }
        },
    ));
    let p = rx.await.unwrap();
    while p.stats.played() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Far ahead of anything fetched yet: the chunks there are missing.
    let target = m.duration().mul_f64(0.6);
    let at = m.chunk_at_time(target);
    assert!(!p.store.has(at.0), "the seek's target was fetched before the seek");
    let gate = p.stats.gate.clone();
    let done = p.stats.seeks_done.load(Relaxed);
    p.seek(target);
    // The gate drops with the seek and opens again only when the start
    // rule holds there: the chunk at the target is here, and the audio
    // from it covers at least a round trip (the next chunk's fetch).
    let rtt = LinkProfile::by_name("transatlantic").unwrap().rtt;
    let needed = m.chunk_at_time(target + rtt);
    loop {
        if gate.load(Relaxed) {
            assert!(p.store.has(at.0), "playback resumed without the chunk at the seek's target");
            assert!(p.store.has(needed.0), "playback resumed with less than a round trip of audio");
            break;
        }
        assert!(!playing.is_finished(), "playback ended before the seek played");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while p.stats.seeks_done.load(Relaxed) == done && !playing.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.stop();
    let report = playing.await.unwrap().unwrap();
    assert_eq!(p.stats.seeks_done.load(Relaxed), done + 1, "the seek never played");
    assert!(report.time_to_first_audio.is_some());
    node.shutdown().await;
}

/// A node answers a tail request with the group values of the whole chunk
/// and its bytes from the tail's start: the listener checks them group by
/// group and they join the chunk's first half in its store. A tail that
/// does not start at a group is refused with an error, and the node goes
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_a_chunks_tail_checked_and_refuses_a_bad_one() {
    use chorus_protocol::message::ErrorCode;
    use chorus_streamer::client::Arrival;
    use chorus_streamer::store::TrackStore;
    let (node, listener, _lib) = seed_and_listener(&["awakening.flac"], None);
    let m = node.with_library(|l| l.tracks().next().map(|t| t.manifest.clone())).flatten().unwrap();
    let peer = listener.connect(node.transport().local_addr().unwrap(), None).await.unwrap();
    let ask = peer.manifest(m.id()).await.unwrap();
    let index = ChunkIndex(m.layout().count() / 2);
    let len = m.layout().chunk_len(index) as usize;
    let store = TrackStore::new(ask.clone());
    let mut tail = peer.tail_on(None, &ask, index, 8192, 0).await.unwrap();
    let mut offsets = Vec::new();
    while let Some(arrival) = tail.next_arrival().await.unwrap() {
        let Arrival::Part(part) = arrival else { panic!("a tail is not a whole chunk") };
        offsets.push(part.offset());
        assert_eq!(store.insert_part(&part).unwrap(), 0, "held until the bytes before it come");
    }
    assert_eq!(offsets.first(), Some(&8192));
    assert_eq!(*offsets.last().unwrap(), len.div_ceil(4096) * 4096 - 4096);
    // The chunk's first half, from the start of a whole reply: the tail
    // joins it, and every byte reads as the file's.
    let mut whole = peer.chunks(&ask, index, 1, 0).await.unwrap();
    while store
        .insert_part(&match whole.next_arrival().await.unwrap().unwrap() {
            Arrival::Part(p) => p,
            Arrival::Chunk(_) => panic!("the parts come before the chunk"),
        })
        .unwrap()
        < 8192
    {}
    let range = m.layout().byte_range(index);
    let file = std::fs::read(sample("awakening.flac")).unwrap();
    let mut got = vec![0u8; len];
    let mut at = 0;
    while at < len {
        at += store.read_at(range.start + at as u64, &mut got[at..], Duration::ZERO).unwrap();
    }
    assert_eq!(got, file[range.start as usize..range.end as usize]);
    for from in [100, 0, len as u32 + 4096] {
        let mut bad = peer.tail_on(None, &ask, index, from, 0).await.unwrap();
        match bad.next_arrival().await {
            Err(chorus_streamer::Error::Remote { code, .. }) => {
                assert_eq!(code, ErrorCode::BadRequest, "from {from}")
            }
            other => panic!("a tail from byte {from}: {other:?}"),
        }
    }
    assert!(peer.manifest(m.id()).await.is_ok(), "the node still serves");
    node.shutdown().await;
}

/// A seek's first chunks come over two links at once: each is asked of
/// one peer whole and of the other from its middle on, and the seek plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeks_first_chunks_are_asked_of_two_peers_at_once() {
    use chorus_player::play::{PlayOptions, play};
    use chorus_player::sink::OutputSpec;
    use chorus_streamer::fetch::Source;
    let profile = LinkProfile::by_name("transatlantic").unwrap();
    let (a, listener, _la) = seed_and_listener(&["awakening.flac"], Some((profile.clone(), 7)));
    let (b, _, _lb) = seed_and_listener(&["awakening.flac"], Some((profile, 9)));
    let m = a.with_library(|l| l.tracks().next().map(|t| t.manifest.clone())).flatten().unwrap();
    let mut sources = Vec::new();
    for node in [&a, &b] {
        let peer = listener.connect(node.transport().local_addr().unwrap(), None).await.unwrap();
        // Peers, not seeds: a tail is asked only of a peer.
        sources.push(Source { peer, is_seed: false, have: None, head_rest: None });
    }
    let target = m.duration().mul_f64(0.6);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let options = PlayOptions::default();
    let playing =
        tokio::spawn(play(m, sources, OutputSpec::Null, options, Instant::now(), move |p| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(p.clone());
            }
        }));
    let p = rx.await.unwrap();
    while p.stats.played() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (done, tails) = (p.stats.seeks_done.load(Relaxed), p.fetch.tails.load(Relaxed));
    p.seek(target);
    while p.stats.seeks_done.load(Relaxed) == done && !playing.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.stop();
    playing.await.unwrap().unwrap();
    assert_eq!(p.stats.seeks_done.load(Relaxed), done + 1, "the seek never played");
    let asked = p.fetch.tails.load(Relaxed) - tails;
    assert!(asked >= 1, "no tail asked for the seek");
    assert_eq!(p.fetch.failures.load(Relaxed), 0);
    a.shutdown().await;
    b.shutdown().await;
}
