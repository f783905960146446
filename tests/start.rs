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
use chorus_protocol::ChunkIndex;
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

/// The chunks a start answer began playback with, whole: its head, and
/// the chunk whose first groups came with it, read on to its end from the
/// rest of the same response (which the fetch then takes over); where the
/// first audio chunk is short (an MP4 cut where its index at the end
/// begins: its first chunk is what comes before the cut), the chunk after
/// it too, which the response sends behind the head; for an Ogg, on
/// through the end of its first audio page, which symphonia's reader (what
/// [`decoder_on`] opens) takes whole before it gives a packet (the page
/// may reach into the next chunk; the player reads it a packet at a time).
async fn whole_head(s: &chorus_streamer::start::Started) -> Vec<chorus_protocol::VerifiedChunk> {
    use chorus_streamer::client::Arrival;
    let mut head = s.answer.head.clone();
    let m = &s.answer.manifest;
    let first = m.chunk_at_time(Duration::ZERO);
    let short = m.layout().chunk_len(first) < u64::from(m.layout().chunk_size().get())
        && first.0 + 1 < m.layout().count();
    let mut want: Vec<_> = s.answer.begun.into_iter().collect();
    if short && !head.iter().any(|c| c.index().0 == first.0 + 1) {
        want.push(ChunkIndex(first.0 + 1));
    }
    if want.is_empty() {
        return head;
    }
    let slot = s.source.head_rest.as_ref().expect("the rest of the response");
    let mut rest = slot.lock().unwrap().take().expect("the rest of the response");
    while !want.is_empty() {
        match rest.next().await.unwrap() {
            Some(Arrival::Chunk(c)) => {
                want.retain(|&w| w != c.index());
                head.push(c);
                if want.is_empty() {
                    want = ogg_first_page_rest(m, &head);
                }
            }
            Some(Arrival::Part(_)) => {}
            None => panic!("the response ended before chunks {want:?}"),
        }
    }
    *slot.lock().unwrap() = Some(rest);
    head
}

/// For an Ogg, the chunks through the end of its first audio page that
/// `head` lacks, if `head` holds that page's header; else none.
fn ogg_first_page_rest(
    m: &chorus_protocol::Manifest,
    head: &[chorus_protocol::VerifiedChunk],
) -> Vec<chorus_protocol::ChunkIndex> {
    use chorus_streamer::probe::{OGG_PAGE_HEADER_LEN, ogg_page_header};
    if m.media().container != chorus_protocol::Container::Ogg {
        return Vec::new();
    }
    let first = m.media().time_index[0].byte_offset;
    let byte = |at: u64| -> Option<u8> {
        let c = head.iter().find(|c| m.layout().byte_range(c.index()).contains(&at))?;
        Some(c.data()[(at - m.layout().byte_range(c.index()).start) as usize])
    };
    let Some(h) =
        (0..OGG_PAGE_HEADER_LEN as u64).map(|i| byte(first + i)).collect::<Option<Vec<_>>>()
    else {
        return Vec::new();
    };
    let page = ogg_page_header(&h).expect("a page where the audio begins");
    let lacing = first + OGG_PAGE_HEADER_LEN as u64;
    let body: u64 = (0..page.segments as u64).map(|i| u64::from(byte(lacing + i).unwrap())).sum();
    let end = lacing + page.segments as u64 + body;
    let have: Vec<_> = head.iter().map(|c| c.index()).collect();
    m.layout()
        .chunks_covering(first..end)
        .map(chorus_protocol::ChunkIndex)
        .filter(|i| !have.contains(i))
        .collect()
}

/// A decoder opened on a store holding `head` and nothing else (and
/// nothing fetching): a read of any other chunk waits in vain.
fn decoder_on(
    m: &chorus_protocol::Manifest,
    head: &[chorus_protocol::VerifiedChunk],
    name: &str,
) -> chorus_player::decode::Decoder {
    let store = Arc::new(chorus_streamer::store::TrackStore::new(m.clone()));
    for c in head {
        store.insert(c.clone()).unwrap();
    }
    let source =
        chorus_player::source::ChunkSource::new(store, Duration::from_secs(2), Box::new(|_| {}));
    let shown = source.length_shown();
    let hint = chorus_player::decode::extension_hint(m.media().container);
    let d = chorus_player::decode::Decoder::open(Box::new(source), hint)
        .unwrap_or_else(|e| panic!("{name}: the decoder needs more than the head: {e}"));
    shown.store(true, Relaxed);
    d
}

/// Starts `want` from a fresh pool and plays it into a WAV file; returns
/// the requests the fetcher sent before playback could start.
async fn start_and_play(listener: &Transport, node: &Node, want: Want) -> (String, u64) {
    let started = Instant::now();
    let pool = pool_for(listener, node);
    let s = pool.start(&want, Duration::ZERO).await.unwrap();
    let m = &s.answer.manifest.clone();
    let name = match &s.answer.entry.file_name {
        n if n.is_empty() => format!("{:?}", m.media().container),
        n => n.clone(),
    };
    let head = whole_head(&s).await;
    assert!(!head.is_empty(), "{name}: the start response carried no chunks");
    for i in m.layout().indices().filter(|i| m.is_header_chunk(*i)) {
        assert!(head.iter().any(|c| c.index() == i), "{name}: header chunk {i} missing");
    }
    let first = m.chunk_at_time(Duration::ZERO);
    assert!(head.iter().any(|c| c.index() == first), "{name}: first audio chunk missing");
    // The manifest holds a hash per page of the chunk hash list, not the
    // list, and the first index point of each page, not the index (a
    // tenth of the list's size at most here: the sample FLAC's is 641
    // bytes, 5.3 KB with its whole index), and the head was checked with
    // the pages the start's chunks need: the rest of the list comes
    // behind the start's chunks, unread yet.
    let (len, list) = (m.encoded().len(), 32 * m.layout().count() as usize);
    assert!(len * 10 < list, "{name}: manifest of {len} bytes for a {list}-byte hash list");
    let budget = u64::from(chorus_streamer::client::START_BUDGET);
    let mut needed: Vec<u32> = m
        .start_chunks(Duration::ZERO, budget)
        .into_iter()
        .map(chorus_protocol::Manifest::page_of)
        .collect();
    needed.sort_unstable();
    needed.dedup();
    if m.page_count() as usize > needed.len() {
        assert!(!m.hashes_known(), "{name}: the whole hash list came before the head");
    }
    // The decoder opens and decodes its first audio from those chunks
    // alone: a store holding nothing else (and nothing fetching) is enough.
    // A read of any other chunk (a scan of the file's end for tags or a
    // duration, say) would wait in vain, and opening would fail.
    let mut d = decoder_on(m, &head, &name);
    assert!(d.next_block().unwrap().is_some(), "{name}: no audio from the head");
    // A real-time sink (the paced null one), whose first note waits for the
    // start rule as a device's does: a file sink writes as soon as it can,
    // whatever the fetch is still asking for.
    let options =
        PlayOptions { head, duration: Some(Duration::from_millis(300)), ..PlayOptions::default() };
    let report =
        play(m.clone(), vec![s.source.clone()], OutputSpec::Null, options, started, |_| {})
            .await
            .unwrap();
    assert!(report.time_to_first_audio.is_some(), "{name}: no audio");
    assert!(m.hashes_known(), "{name}: the rest of the hash list never came");
    let before = report.requests_before_start;
    (name, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_carries_everything_the_first_note_needs_in_every_format() {
    let (node, listener, _lib) = setup(None).await;
    let tracks: Vec<_> =
        node.with_library(|l| l.tracks().map(|t| t.manifest.id()).collect::<Vec<_>>()).unwrap();
    assert_eq!(tracks.len(), FORMATS.len());
    let mut judged_short = 0;
    for id in tracks {
        let (name, before) = start_and_play(&listener, &node, Want::Track(id)).await;
        judged_short += usize::from(before > 0);
        eprintln!("{name}: {before} requests before the first note");
    }
    // The rule judges on the round trip and rate measured: a machine
    // busy enough to slow one response (tests run in parallel) can make it
    // ask for more than the response before it starts, and rightly. That
    // is one start at most in a run (seen once in 42 on a loaded machine);
    // a response without what the first note needs fails them all.
    assert!(judged_short <= 1, "{judged_short} of 7 starts needed more than their response");
    assert_eq!(node.stats().starts.load(Relaxed), FORMATS.len());
    node.shutdown().await;
}

/// A start late in a track begins in the chunk the seed's whole index
/// names: the manifest holds only the first index point of each page of the
/// hash list (so a start's first flight does not grow with the track), and
/// the page the start plays in brings its points ahead of its chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_late_in_a_track_begins_where_the_seeds_whole_index_says() {
    let (node, listener, _lib) = setup(None).await;
    let whole = node
        .with_library(|l| {
            let id = l.best_match("awakening")?.track;
            l.get(&id).map(|t| t.manifest.clone())
        })
        .flatten()
        .unwrap();
    // Halfway through a page: the page's first point alone names an
    // earlier chunk.
    let page = whole.page_count() / 2;
    let chunks = whole.page_chunks(page);
    let at = whole.chunk_media_time(ChunkIndex((chunks.start + chunks.end) / 2));
    let want = whole.chunk_at_time(at);
    let alone = chorus_protocol::Manifest::decode(whole.encoded().clone()).unwrap();
    assert!(alone.media().time_index.len() <= alone.page_count() as usize + 1);
    assert!(alone.chunk_at_time(at) < want, "the manifest's own points name an earlier chunk");

    let s = pool_for(&listener, &node).start(&Want::Track(whole.id()), at).await.unwrap();
    let m = &s.answer.manifest;
    assert!(m.page_known(page), "the page the start plays in came before its chunks");
    assert_eq!(m.chunk_at_time(at), want);
    let first = s.answer.head.iter().map(|c| c.index()).chain(s.answer.begun).collect::<Vec<_>>();
    assert!(first.contains(&want), "the start began in {want}: {first:?}");
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

/// Plays `want` from a pool that knows it will ask for it first (as
/// `chorus play` does), and returns how it started.
async fn sealed_start(listener: &Transport, node: &Node, want: &Want) -> (bool, Vec<&'static str>) {
    let addr = node.transport().local_addr().unwrap();
    let peers = [(addr, Some(node.transport().peer_id()))];
    let pool = Pool::dial_asking(listener, &peers, Some((want, Duration::ZERO)));
    let s = pool.start(want, Duration::ZERO).await.unwrap();
    assert!(!s.answer.head.is_empty() || s.answer.begun.is_some());
    let steps = s.timeline.steps.iter().map(|(step, _)| *step).collect();
    (s.sealed, steps)
}

/// Waits (bounded: 1000 polls) for `seed`'s ticket, then saves the store.
/// The ticket comes in the seed's hello, which may arrive after the start's
/// answer: saved at once, the file could miss it.
async fn keep_ticket(listener: &Transport, seed: &chorus_protocol::PeerId) {
    let kept = || listener.resume().ticket(seed, std::time::SystemTime::now()).is_some();
    for _ in 0..1000 {
        if kept() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(kept(), "no ticket from the seed");
    listener.resume().save().unwrap();
}

/// A listener endpoint of its own (a new process: nothing in memory), with
/// the tickets kept in `file`.
fn new_process(file: &std::path::Path, link: LinkProfile, seed: u64) -> Transport {
    let t = Transport::bind_emulated(
        Arc::new(chorus_streamer::identity::Identity::ephemeral().unwrap()),
        ([127, 0, 0, 1], 0).into(),
        None,
        &Default::default(),
        Some((link, seed)),
    )
    .unwrap();
    t.resume().load(file);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_sends_its_start_sealed_in_the_handshake_and_gets_the_answer_with_it() {
    let link = LinkProfile::by_name("transatlantic").unwrap();
    let (node, _, _lib) = setup(Some(link.clone())).await;
    let seed = node.transport().peer_id();
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("tickets");
    let id = node.with_library(|l| l.best_match("inevitable").map(|e| e.track)).flatten().unwrap();
    let want = Want::Track(id);

    // First contact: the usual start (handshake, then the request); the
    // seed's hello gives a ticket and QUIC gives address tokens.
    let first = new_process(&file, link.clone(), 10);
    let (sealed, steps) = sealed_start(&first, &node, &want).await;
    assert!(!sealed && steps.contains(&"start request sent"), "{steps:?}");
    // NEW_TOKEN frames follow the handshake's confirmation: wait for them
    // too (bounded: 1000 polls).
    keep_ticket(&first, &seed).await;
    for _ in 0..1000 {
        if first.resume().tokens(&seed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(first.resume().tokens(&seed) > 0, "no address token from the seed");
    first.resume().save().unwrap();
    first.close().await;
    assert_eq!(node.stats().validated.load(Relaxed), 0);

    // A new process, from the file: the request rides in the ClientHello,
    // the first packet proves the address, and the answer (manifest and
    // head) comes with the seed's handshake. No request after it.
    let second = new_process(&file, link.clone(), 20);
    let (sealed, steps) = sealed_start(&second, &node, &want).await;
    assert!(sealed, "the start was not answered with the handshake: {steps:?}");
    assert!(!steps.contains(&"start request sent"), "{steps:?}");
    assert_eq!(node.stats().sealed_starts.load(Relaxed), 1);
    assert_eq!(node.stats().validated.load(Relaxed), 1, "the token did not prove the address");
    assert_eq!(node.stats().starts.load(Relaxed), 2, "one start each, nothing else");

    // By query too: the same one round trip.
    second.resume().save().unwrap();
    second.close().await;
    let third = new_process(&file, link, 30);
    let (sealed, _) = sealed_start(&third, &node, &Want::Query("inevitable".into())).await;
    assert!(sealed, "a start by query was not answered with the handshake");
    assert_eq!(node.stats().sealed_starts.load(Relaxed), 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_seed_reports_of_the_path_is_kept_with_its_ticket_for_the_next_process() {
    // `lan`: no loss, no rate limit, so no queue to overflow.
    let link = LinkProfile::by_name("lan").unwrap();
    let (node, _, _lib) = setup(Some(link.clone())).await;
    let seed = node.transport().peer_id();
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("tickets");
    let id = node.with_library(|l| l.best_match("deprecation").map(|e| e.track)).flatten().unwrap();
    let want = Want::Track(id);
    let addr = node.transport().local_addr().unwrap();
    // Two seconds of the WAV (about 350 KB, 300 packets and more), as a
    // new process with the tickets file would play them.
    let play_from = |listener: Transport, out: std::path::PathBuf| {
        let want = want.clone();
        async move {
            let started = Instant::now();
            let pool =
                Pool::dial_asking(&listener, &[(addr, Some(seed))], Some((&want, Duration::ZERO)));
            let s = pool.start(&want, Duration::ZERO).await.unwrap();
            let m = s.answer.manifest.clone();
            let head = whole_head(&s).await;
            let duration = Some(Duration::from_secs(2));
            let options = PlayOptions { head, duration, ..PlayOptions::default() };
            let source = s.source.clone();
            let r = play(m, vec![source.clone()], OutputSpec::Wav(out), options, started, |_| {})
                .await
                .unwrap();
            (listener, source, r)
        }
    };
    let first = new_process(&file, link.clone(), 10);
    assert_eq!(first.resume().path(), None);
    let (first, source, r) = play_from(first, data.path().join("1.wav")).await;
    // Judged on the start response's first chunks, the rule has no
    // reports of 200 packets yet and takes the cautious margin (a round
    // trip and two chunks at 256 KB/s). On a loaded machine the driver may
    // judge it only once the response's later chunks, 200 packets and
    // more into it, brought such reports: then it is clean by them.
    let (first_margin, first_clean) = r.start_margin.expect("the start rule was not judged");
    let cautious = Duration::from_millis(125);
    assert!(first_clean || first_margin >= cautious, "no reports yet: {first_margin:?}");
    // Every chunk reply's head carried the seed's packet counts on this
    // connection; the store has the latest. Closed first: replies still
    // on their way after the play would add reports between the reads.
    first.close().await;
    let seen = first.resume().path().expect("the seed reported nothing");
    assert!(seen.sent >= chorus_streamer::scheduler::CLEAN_AFTER_PACKETS, "{seen:?}");
    assert!(seen.lost * 1000 <= seen.sent, "loss on a link without any: {seen:?}");
    assert_eq!(source.peer.path_seen(), Some(seen), "the source's peer reads the same");
    // Kept with the ticket: the next process judges the path from the
    // start, before the seed has sent it anything, and starts on a round
    // trip and a half.
    first.resume().save().unwrap();
    let line = std::fs::read_to_string(&file).unwrap();
    assert!(line.contains(&format!(" {}/{}", seen.sent, seen.lost)), "{line}");
    let second = new_process(&file, link, 20);
    assert_eq!(second.resume().path(), Some(seen));
    let (second, _, r) = play_from(second, data.path().join("2.wav")).await;
    let (margin, clean) = r.start_margin.expect("the start rule was not judged");
    assert!(clean && margin < cautious, "{margin:?} on a clean path, {first_margin:?} before");
    second.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_the_seed_cannot_open_costs_a_round_trip_not_an_error() {
    let (node, _, _lib) = setup(None).await;
    let seed = node.transport().peer_id();
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("tickets");
    let id = node.with_library(|l| l.best_match("awakening").map(|e| e.track)).flatten().unwrap();
    let want = Want::Track(id);
    let first = new_process(&file, LinkProfile::by_name("lan").unwrap(), 1);
    assert!(!sealed_start(&first, &node, &want).await.0);
    keep_ticket(&first, &seed).await;
    first.close().await;
    // Another key under the same ticket id (a ticket from an earlier
    // identity of the seed, or tampered with).
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().find(|l| l.starts_with(&seed.to_string()[..8])).unwrap();
    let key = line.split_whitespace().nth(2).unwrap();
    let flipped: String = key.chars().map(|c| if c == '0' { '1' } else { '0' }).collect();
    std::fs::write(&file, text.replace(key, &flipped)).unwrap();

    let second = new_process(&file, LinkProfile::by_name("lan").unwrap(), 2);
    let (sealed, steps) = sealed_start(&second, &node, &want).await;
    assert!(!sealed);
    assert!(steps.contains(&"sealed start refused") && steps.contains(&"start request sent"));
    assert_eq!(node.stats().sealed_refused.load(Relaxed), 1);
    assert_eq!(node.stats().sealed_starts.load(Relaxed), 0);
    node.shutdown().await;
}

/// A node serving only its cache (no library), holding `chunks` of the
/// track `data` is, and serving; with the cache's directory.
fn cache_peer(
    manifest: &chorus_protocol::Manifest,
    data: &[u8],
    chunks: Vec<ChunkIndex>,
) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(
        chorus_streamer::cache::ChunkCache::open(&dir.path().join("cache"), 1 << 30).unwrap(),
    );
    cache.put_manifest(manifest).unwrap();
    for i in chunks {
        let r = manifest.layout().byte_range(i);
        let bytes = bytes::Bytes::copy_from_slice(&data[r.start as usize..r.end as usize]);
        cache.put_chunk(&manifest.verify(i, bytes).unwrap()).unwrap();
    }
    let peer = Node::bind_with_cache(
        Arc::new(chorus_streamer::identity::Identity::ephemeral().unwrap()),
        ([127, 0, 0, 1], 0).into(),
        chorus_streamer::library::Library::default(),
        Some(cache),
        Default::default(),
    )
    .unwrap();
    let p = peer.clone();
    tokio::spawn(async move { p.serve().await });
    (peer, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_only_its_cache_answers_a_start_by_query() {
    // A peer that holds a track whole in its cache (no library): a start by
    // query sent to it is answered, not refused, so a listener asking
    // whichever peer answers first pays no round trip for asking a cache.
    let (seed, listener, lib) = setup(None).await;
    let track = seed.with_library(|l| l.best_match("inevitable")).flatten().unwrap();
    let manifest = seed.with_library(|l| l.get(&track.track).unwrap().manifest.clone()).unwrap();
    let data = std::fs::read(lib.path().join("inevitable.mp3")).unwrap();
    let (peer, _dir) = cache_peer(&manifest, &data, manifest.layout().indices().collect());
    let pool = pool_for(&listener, &peer);
    let s = pool.start(&Want::Query("Inevitable".into()), Duration::ZERO).await.unwrap();
    assert_eq!(s.answer.manifest.id(), track.track);
    assert!(!s.answer.origin && (!s.answer.head.is_empty() || s.answer.begun.is_some()));
    assert_eq!(peer.stats().starts.load(Relaxed), 1);
    peer.shutdown().await;
    seed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_caching_a_tracks_start_answers_a_query_for_it_and_one_without_refuses() {
    // Peers that played a track part of the way hold its start, not all
    // of it: asked by query (as by id) they answer with the head they
    // hold; the asker fetches the rest from whoever holds it. Before, they
    // refused, and each refusal cost the asker a round trip on the next
    // peer. A peer without the start still refuses.
    let (seed, listener, lib) = setup(None).await;
    let track = seed.with_library(|l| l.best_match("inevitable")).flatten().unwrap();
    let manifest = seed.with_library(|l| l.get(&track.track).unwrap().manifest.clone()).unwrap();
    let data = std::fs::read(lib.path().join("inevitable.mp3")).unwrap();
    let head = manifest.start_chunks(Duration::ZERO, 0);
    let count = manifest.layout().count();
    assert!(count > 10);
    let with_head: Vec<ChunkIndex> = head.iter().copied().chain([ChunkIndex(count / 2)]).collect();
    let (partial, _d1) = cache_peer(&manifest, &data, with_head);
    let s = pool_for(&listener, &partial)
        .start(&Want::Query("Inevitable".into()), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(s.answer.manifest.id(), track.track);
    assert!(!s.answer.origin);
    assert!(!s.answer.head.is_empty() || s.answer.begun.is_some(), "with the head it holds");
    assert_eq!(partial.stats().starts.load(Relaxed), 1);
    let tail = (count - 4..count).map(ChunkIndex).collect();
    let (headless, _d2) = cache_peer(&manifest, &data, tail);
    let refused = pool_for(&listener, &headless)
        .start(&Want::Query("Inevitable".into()), Duration::ZERO)
        .await;
    assert!(refused.is_err(), "no start held: refused");
    for p in [partial, headless] {
        p.shutdown().await;
    }
    seed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waits_for_the_answer_sealed_in_a_handshake_not_for_a_peer_that_was_quicker() {
    // Two seeds of the same track over the same kind of link; only one is
    // known (it gave a ticket). Whichever handshake completes first, the
    // start is the known one's sealed answer: asking the other would cost
    // a round trip more.
    let link = LinkProfile::by_name("transatlantic").unwrap();
    let (known, _, _lib1) = seed_and_listener(&["inevitable.mp3"], Some((link.clone(), 3)));
    let (other, _, _lib2) = seed_and_listener(&["inevitable.mp3"], Some((link.clone(), 5)));
    let id = known.with_library(|l| l.best_match("inevitable").map(|e| e.track)).flatten().unwrap();
    let want = Want::Track(id);
    let addr = |n: &Node| (n.transport().local_addr().unwrap(), Some(n.transport().peer_id()));
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("tickets");
    let first = new_process(&file, link.clone(), 11);
    assert!(!sealed_start(&first, &known, &want).await.0);
    keep_ticket(&first, &known.transport().peer_id()).await;
    first.close().await;

    for (i, order) in [[&other, &known], [&known, &other]].iter().enumerate() {
        let listener = new_process(&file, link.clone(), 12 + i as u64);
        let peers: Vec<_> = order.iter().map(|n| addr(n)).collect();
        let pool = Pool::dial_asking(&listener, &peers, Some((&want, Duration::ZERO)));
        let s = pool.start(&want, Duration::ZERO).await.unwrap();
        assert!(s.sealed, "{:?}", s.timeline.steps);
        assert_eq!(s.source.peer.id(), known.transport().peer_id());
        listener.resume().save().unwrap();
        listener.close().await;
    }
    assert_eq!(other.stats().starts.load(Relaxed), 0, "the unknown seed was asked to start");
    known.shutdown().await;
    other.shutdown().await;
}

/// A seed cuts a track whose decoder skips a leading tag where its stream
/// begins, so the chunk a start plays first is the stream from its first
/// byte: the MP3 whose ID3 tag (a cover picture) is 143 KB had 4 KB of its
/// stream in that chunk, less than the start rule's margin, and every start
/// of it waited for the next chunk too.
#[test]
fn a_seed_cuts_each_track_where_its_audio_stream_begins() {
    let dir = library_dir(&FORMATS);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(dir.path(), data.path());
    let mut mid_chunk = 0;
    for t in library.tracks() {
        let (m, name) = (&t.manifest, &t.file_name);
        let layout = m.layout();
        let start = chorus_streamer::library::stream_start(m.media());
        let at = layout.chunk_at(start).unwrap();
        assert_eq!(layout.byte_range(at).start, start, "{name}: no cut where the stream starts");
        let full = u64::from(layout.chunk_size().get());
        // (Or, where a gap is cut out before the audio, a FLAC's padding,
        // the first chunk is what comes before it and the audio's is
        // full.)
        let first = if layout.gap() > 0 { chorus_protocol::ChunkIndex(2) } else { at };
        // (An MP4 with its index at the end is cut where the index begins
        // instead: the chunks every start needs there are the index alone,
        // and its first chunk is what comes before the cut.)
        let at_index = chorus_streamer::library::cut_at(m.media()) != start;
        if first.0 + 1 < layout.count() && !at_index {
            assert_eq!(layout.chunk_len(first), full, "{name}: a short first chunk of the stream");
        }
        mid_chunk += usize::from(start % full != 0);
    }
    let tagged = library.tracks().find(|t| t.file_name == "beat-thee.mp3").unwrap();
    assert_eq!(
        chorus_streamer::library::stream_start(tagged.manifest.media()),
        143_370,
        "past the tag"
    );
    assert_eq!(mid_chunk, 2, "both MP3s begin their streams after a tag, mid-chunk");
}

/// The top-level MP4 atom `kind`'s offset in `file`.
fn atom_offset(file: &std::path::Path, kind: &[u8; 4]) -> u64 {
    let bytes = std::fs::read(file).unwrap();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if &bytes[at + 4..at + 8] == kind {
            return at as u64;
        }
        assert!(size >= 8, "a plain 32-bit atom size");
        at += size;
    }
    panic!("no {kind:?} atom");
}

/// An MP4 with its index (`moov`) after the audio: symphonia skips the
/// audio by seeking 64 KiB short of the index and reading on (to keep the
/// skipped bytes rewindable). Those 64 KiB are not headers: a start does not
/// wait for them (26 ms at 20 Mbit/s) and the player reads them as zeros
/// (tests/play.rs: still sample-identical to a local decode). And the
/// track is cut where the index begins: the chunks a start needs there are
/// the index alone (they held 12 KB of the AAC's audio and 9 KB of the
/// ALAC's before it).
#[test]
fn an_mp4_index_at_the_end_is_the_only_header_there() {
    let names = ["through-space.m4a", "coherence.m4a"];
    let dir = library_dir(&names);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(dir.path(), data.path());
    for t in library.tracks() {
        let moov = atom_offset(&sample(&t.file_name), b"moov");
        let ranges = &t.manifest.media().header_ranges;
        let last = ranges.last().unwrap();
        assert_eq!(last.start, moov, "{}: header ranges {ranges:?}", t.file_name);
        assert_eq!(
            last.end,
            t.manifest.layout().byte_len(),
            "{}: the index to the end",
            t.file_name
        );
        let m = &t.manifest;
        let tail: u64 = m
            .layout()
            .indices()
            .filter(|&i| m.is_header_chunk(i) && m.layout().byte_range(i).end > moov)
            .map(|i| m.layout().chunk_len(i))
            .sum();
        assert_eq!(tail, last.end - last.start, "{}: chunks of the index alone", t.file_name);
    }
}

/// A WAV's `fmt ` block's bytes per second and where its `data` begins.
fn wav_layout(file: &std::path::Path) -> (u64, u64) {
    let bytes = std::fs::read(file).unwrap();
    let (mut at, mut rate) = (12usize, None);
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        match &bytes[at..at + 4] {
            b"fmt " => rate = Some(u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap())),
            b"data" => return (u64::from(rate.unwrap()), at as u64 + 8),
            _ => {}
        }
        at += 8 + size + size % 2;
    }
    panic!("no data chunk");
}

/// The header ranges of a stream indexed frame-exactly (MP3, FLAC, Ogg
/// Vorbis) end at its first frame: what the demuxer read past it is
/// read-ahead into the audio. The Ogg's reached 27 KB into its audio, two
/// chunks of "header": a start's answer came back only once both had, and
/// the Vorbis codec, made from the header pages when the player began,
/// was made after the first audio page was here rather than while it came
/// (bench, the Ogg alone on `transatlantic`, two alternating pairs: known
/// 99.8/99.0 -> 96.9/95.3 ms, cold 183/183 -> 181/181).
#[test]
fn header_ranges_end_where_the_first_frame_begins() {
    let dir = library_dir(&["apex-aleph.ogg", "awakening.flac", "beat-thee.mp3", "inevitable.mp3"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(dir.path(), data.path());
    for t in library.tracks() {
        let (m, name) = (&t.manifest, &t.file_name);
        let first = m.media().time_index[0].byte_offset;
        let headers = &m.media().header_ranges;
        assert!(!headers.is_empty(), "{name}: no headers");
        let straddles = headers.iter().any(|h| h.start < first && first < h.end);
        assert!(!straddles, "{name}: {headers:?} reach past the first frame at {first}");
        if name.ends_with(".ogg") {
            // Its header pages are in the first chunk: the only header chunk.
            let header_chunks = m.layout().indices().filter(|&i| m.is_header_chunk(i)).count();
            assert_eq!(header_chunks, 1, "{name}: {headers:?}");
        }
    }
}

/// The start rule counts the audio a chunk holds by the manifest's time
/// index. For containers without a frame-exact index (WAV, MP4) its points
/// came from the indexer's 32 KiB reads, each read's bytes stamped with the
/// time of the packet that needed the first of them: the WAV's second
/// chunk was said to start at 29 ms of audio, not 93, so a start waited for
/// four chunks where two cover the margin. Now the points are within a
/// kilobyte of their packets' bytes, and never late (a start must not
/// count audio that is not there).
#[test]
fn a_wav_index_says_when_each_chunk_plays_within_a_kilobyte_and_never_late() {
    let dir = library_dir(&["deprecation.wav"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(dir.path(), data.path());
    let t = library.tracks().next().unwrap();
    let (byte_rate, data_start) = wav_layout(&sample(&t.file_name));
    let m = &t.manifest;
    let kilobyte = 1024.0 / byte_rate as f64;
    for i in 1..m.layout().count() - 1 {
        let index = chorus_protocol::ChunkIndex(i);
        let offset = m.layout().byte_range(index).start;
        let exact = (offset - data_start) as f64 / byte_rate as f64;
        let said = m.chunk_media_time(index).as_secs_f64();
        assert!(said <= exact + 1e-3, "chunk {i}: said {said:.4} s, plays at {exact:.4} s");
        assert!(
            said >= exact - kilobyte - 1e-3,
            "chunk {i}: said {said:.4} s, plays at {exact:.4} s"
        );
    }
}

/// A track whose start is in the cache (played before) starts from it: no
/// start request, no round trip; the pool's peers join for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_whose_start_is_cached_starts_from_the_cache_and_peers_join_for_the_rest() {
    use chorus_streamer::cache::ChunkCache;
    use chorus_streamer::fetch::FetchConfig;
    let (node, listener, _lib) = setup(None).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ChunkCache::open(dir.path(), 1 << 30).unwrap());
    let id = node
        .with_library(|l| {
            l.tracks().find(|t| t.file_name == "apex-aleph.ogg").map(|t| t.manifest.id())
        })
        .flatten()
        .unwrap()
        .to_string();
    let out = tempfile::tempdir().unwrap();
    let with_cache = |seconds: u64| PlayOptions {
        duration: Some(Duration::from_secs(seconds)),
        fetch: FetchConfig { cache: Some(cache.clone()), ..FetchConfig::default() },
        ..PlayOptions::default()
    };
    // Played once: its first seconds (and the hash list) go to the cache.
    let pool = pool_for(&listener, &node);
    let first = chorus_cli::play::prepare(&pool, &cache, &id, Duration::ZERO).await.unwrap();
    assert_eq!(first.sources.len(), 1, "the first play asked a peer");
    let wav = OutputSpec::Wav(out.path().join("first.wav"));
    let report = play(first.manifest, first.sources, wav, with_cache(8), Instant::now(), |_| {});
    report.await.unwrap();
    assert!(cache.flush(Duration::from_secs(10)));

    // Again, from a new pool: the start is the cache's, and 40 s of audio
    // (the cache holds less) come from the peer that joins.
    let pool = pool_for(&listener, &node);
    let again = chorus_cli::play::prepare(&pool, &cache, &id, Duration::ZERO).await.unwrap();
    assert!(again.sources.is_empty(), "no peer asked before the start");
    let steps: Vec<&str> = again.timeline.steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, vec!["start in the cache"]);
    let mut joins = again.joins.expect("peers join");
    let wav = OutputSpec::Wav(out.path().join("again.wav"));
    let report = play(again.manifest, Vec::new(), wav, with_cache(40), Instant::now(), |p| {
        let p = p.clone();
        tokio::spawn(async move {
            while let Some(source) = joins.recv().await {
                p.add_source(source);
            }
        });
    })
    .await
    .unwrap();
    assert_eq!(report.requests_before_start, 0);
    assert!(report.bytes_from_cache > 0);
    assert!(report.bytes_fetched > 0, "the rest came from the peer that joined");
    assert!(report.played >= Duration::from_secs(39), "played {:?}", report.played);
    assert!(cache.flush(Duration::from_secs(10)));

    // Its peer silent (a socket of the test's that never answers: the dial
    // is under way until its timeout): what the cache holds plays, and
    // then a clear error.
    let peer = node.transport().peer_id();
    node.shutdown().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let pool = Pool::dial(&listener, &[(silent.local_addr().unwrap(), Some(peer))]);
    let offline = chorus_cli::play::prepare(&pool, &cache, &id, Duration::ZERO).await.unwrap();
    assert!(offline.sources.is_empty());
    let wav = OutputSpec::Wav(out.path().join("offline.wav"));
    let e = play(offline.manifest, Vec::new(), wav, with_cache(100), Instant::now(), |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no peer could be reached") && e.contains("cache held has played"), "{e}");
}

/// `flac` with a PICTURE block of `art` bytes put in before its other
/// metadata blocks after STREAMINFO, as a tagger embeds cover art.
fn with_cover_art(flac: &[u8], art: usize) -> Vec<u8> {
    assert_eq!(&flac[..4], b"fLaC");
    let mut picture = Vec::new();
    picture.extend_from_slice(&3u32.to_be_bytes()); // front cover
    let mime = b"image/jpeg";
    picture.extend_from_slice(&(mime.len() as u32).to_be_bytes());
    picture.extend_from_slice(mime);
    picture.extend_from_slice(&0u32.to_be_bytes()); // no description
    for v in [600u32, 600, 24, 0] {
        picture.extend_from_slice(&v.to_be_bytes());
    }
    picture.extend_from_slice(&(art as u32).to_be_bytes());
    picture.extend((0..art).map(|i| (i * 7 + i / 251) as u8));
    // STREAMINFO is first and never last here; the picture goes after it.
    let info_end = 4 + 4 + 34;
    assert_eq!(flac[4] & 0x7F, 0, "STREAMINFO first");
    assert_eq!(flac[4] & 0x80, 0, "more blocks follow");
    let mut out = flac[..info_end].to_vec();
    out.push(6);
    out.extend_from_slice(&(picture.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&picture);
    out.extend_from_slice(&flac[info_end..]);
    out
}

/// A store of `m`'s track holding `chunks`, cut from `file` (its bytes)
/// and checked against the manifest.
fn store_of(
    m: &chorus_protocol::Manifest,
    file: &[u8],
    chunks: impl IntoIterator<Item = u32>,
) -> Arc<chorus_streamer::store::TrackStore> {
    let store = Arc::new(chorus_streamer::store::TrackStore::new(m.clone()));
    for i in chunks {
        let r = m.layout().byte_range(chorus_protocol::ChunkIndex(i));
        let data = bytes::Bytes::copy_from_slice(&file[r.start as usize..r.end as usize]);
        store.insert(m.verify(chorus_protocol::ChunkIndex(i), data).unwrap()).unwrap();
    }
    store
}

/// The sample `name` and `extra` (a picture, metadata) made into `out` by
/// ffmpeg with `args`; true if it did.
fn remux(name: &str, extra: &std::path::Path, args: &[&str], out: &std::path::Path) -> bool {
    std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(sample(name))
        .arg("-i")
        .arg(extra)
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg (scripts/setup installs it)")
        .success()
}

/// The start of `file` (in a library of its own), as a start response's
/// head from a seed on loopback: its bytes, its chunks and the track's
/// header ranges, having checked that the decoder opened on that head
/// alone and decoded what a local decode of the file gives, sample for
/// sample (a frame of audio at least).
async fn start_from_its_head(file: &std::path::Path) -> Head {
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(file.parent().unwrap(), data.path());
    let m = library.tracks().next().unwrap().manifest.clone();
    let headers = m.media().header_ranges.clone();
    let node = Node::bind(
        Arc::new(chorus_streamer::identity::Identity::ephemeral().unwrap()),
        ([127, 0, 0, 1], 0).into(),
        library,
        Default::default(),
    )
    .unwrap();
    let n = node.clone();
    tokio::spawn(async move { n.serve().await });
    let listener = client();
    let pool = pool_for(&listener, &node);
    let s = pool.start(&Want::Track(m.id()), Duration::ZERO).await.unwrap();
    let head = whole_head(&s).await;
    let bytes: usize = head.iter().map(|c| c.data().len()).sum();
    let name = file.display().to_string();
    let mut d = decoder_on(&m, &head, &name);
    let mut got = Vec::new();
    while got.len() < 8_192 {
        let block = d.next_block().unwrap_or_else(|e| panic!("{name} at {}: {e}", got.len()));
        got.extend_from_slice(block.expect("audio from the head"));
    }
    let (_, _, local) = chorus_player::decode::decode_file(file, None).unwrap();
    let exact = got.iter().zip(&local).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(exact, "{name}: the first {} samples differ from a local decode", got.len());
    node.shutdown().await;
    let chunks = head.iter().map(|c| c.index()).collect();
    Head { bytes, chunks, headers, layout: *m.layout() }
}

/// What [`start_from_its_head`] found.
struct Head {
    bytes: usize,
    chunks: Vec<chorus_protocol::ChunkIndex>,
    headers: Vec<std::ops::Range<u64>>,
    layout: chorus_protocol::chunk::ChunkLayout,
}

/// Cover art embedded in a FLAC (a megabyte here; rips commonly carry one)
/// is not fetched before the first note: it is not a header (nor is the
/// padding), the start response carries the rest of the metadata and the
/// first audio without it, and the decoder opens on that head alone,
/// reading the art as zeros, and decodes what a local decode of the file
/// gives, sample for sample. With the art counted as a header the head
/// was the whole megabyte: 400 ms at 20 Mb/s before the first note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flac_s_cover_art_is_not_fetched_before_the_first_note() {
    let art = 1 << 20;
    let lib = tempfile::tempdir().unwrap();
    let file = lib.path().join("cover.flac");
    let flac = std::fs::read(sample("awakening.flac")).unwrap();
    std::fs::write(&file, with_cover_art(&flac, art)).unwrap();
    let Head { bytes, headers, .. } = start_from_its_head(&file).await;
    let header_bytes: u64 = headers.iter().map(|r| r.end - r.start).sum();
    assert!(header_bytes < 32 * 1024, "{header_bytes} bytes of headers: {headers:?}");
    assert!(bytes < art / 4, "the head was {bytes} bytes, art and all");
}

/// A FLAC's padding (8 KiB from the reference encoder, between its
/// metadata and its first frame) is a chunk of its own that no start
/// fetches: the layout cuts on both sides of it, the start's head is the
/// metadata's chunk and the audio's, and the decoder, reading the padding
/// as zeros, decodes what a local decode gives. It shared the first chunk
/// with the metadata and the first audio before, and came with it: 8 KiB,
/// 3-4 ms of a start on `transatlantic` (bench, known 99/101 -> 95/96 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flac_s_padding_is_a_chunk_no_start_fetches() {
    use chorus_protocol::ChunkIndex;
    let lib = library_dir(&["awakening.flac"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let m = library.tracks().next().unwrap().manifest.clone();
    let layout = m.layout();
    let first_audio = m.media().time_index[0].byte_offset;
    assert_eq!(layout.gap(), 8192, "the padding is the second chunk");
    assert_eq!(layout.byte_range(ChunkIndex(1)), first_audio - 8192..first_audio);
    assert!(
        m.media()
            .header_ranges
            .iter()
            .all(|h| h.end <= first_audio - 8192 || h.start >= first_audio)
    );
    let Head { bytes, chunks: head, .. } =
        start_from_its_head(&lib.path().join("awakening.flac")).await;
    let needed = layout.chunk_len(ChunkIndex(0)) + layout.chunk_len(ChunkIndex(2));
    assert!(bytes as u64 <= needed + 16_384, "a head of {bytes} bytes");
    assert!(head.contains(&ChunkIndex(0)) && head.contains(&ChunkIndex(2)), "{head:?}");
    assert!(!head.contains(&ChunkIndex(1)), "the padding came: {head:?}");
}

/// The same for an M4A's cover art (`covr`, as iTunes and ffmpeg write
/// it), with its index (`moov`) at the front and at the end: the art is
/// in the index, which is all header, and was fetched whole before the
/// first note (1.16 MB of head for 1 MB of art).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_m4a_s_cover_art_is_not_fetched_before_the_first_note_wherever_its_index_is() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("art.png");
    let made = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("color=s=640x640,noise=alls=100:allf=t")
        .args(["-frames:v", "1"])
        .arg(&art)
        .status()
        .expect("ffmpeg (scripts/setup installs it)");
    assert!(made.success());
    let art_len = std::fs::metadata(&art).unwrap().len() as usize;
    assert!(art_len > 500_000, "a noisy picture does not compress: {art_len} bytes");
    for (name, flags) in [("front", &["-movflags", "+faststart"][..]), ("end", &[][..])] {
        let lib = dir.path().join(name);
        std::fs::create_dir(&lib).unwrap();
        let file = lib.join("cover.m4a");
        let args = ["-map", "0:a", "-map", "1", "-c", "copy", "-disposition:v:0", "attached_pic"];
        let made = remux("coherence.m4a", &art, &[&args[..], flags].concat(), &file);
        assert!(made, "{name}: ffmpeg could not add the art");
        let Head { bytes, headers, layout, .. } = start_from_its_head(&file).await;
        assert!(bytes < art_len / 4, "index at the {name}: a head of {bytes} bytes: {headers:?}");
        // At the end, the track is cut where the index begins (not where
        // its part after the art does): no audio in the index's chunks.
        let moov = atom_offset(&file, b"moov");
        let at = layout.chunk_at(moov).unwrap();
        assert!(name == "front" || layout.byte_range(at).start == moov, "{headers:?}");
    }
}

/// An Ogg Vorbis track's cover art (a base64 picture in its comment
/// header, METADATA_BLOCK_PICTURE, as taggers write it; 800 KB here) is not
/// fetched before the first note either: the pages that carry nothing but
/// the comment are not headers, the player reads them as zeros (the
/// reader skips them and drops the comment's tail), and the decoder opens
/// on the head alone and decodes what a local decode gives. Its codec is
/// still made early, from the identification and setup headers, and a
/// seek by the index (which reads the header pages again) is sample for
/// sample a local decode's. With the art counted as a header the head was
/// the whole comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ogg_s_cover_art_is_not_fetched_before_the_first_note() {
    use chorus_player::decode::{Decoder, IndexedFormat, SeekIndex};
    let art = 800_000;
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.txt");
    std::fs::write(&meta, format!(";FFMETADATA1\nMETADATA_BLOCK_PICTURE={}\n", "A".repeat(art)))
        .unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let file = lib.join("cover.ogg");
    let args = ["-map", "0:a", "-map_metadata", "1", "-c", "copy"];
    assert!(remux("apex-aleph.ogg", &meta, &args, &file), "ffmpeg could not add the comment");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 2 * art, "the comment is in the file");

    let Head { bytes: head, headers, .. } = start_from_its_head(&file).await;
    // (What symphonia's reader read ahead into the audio counts too.)
    let header_bytes: u64 = headers.iter().map(|r| r.end - r.start).sum();
    assert!(header_bytes < 128 * 1024, "{header_bytes} bytes of headers: {headers:?}");
    assert!(head < art / 4, "the head was {head} bytes, art and all");

    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(&lib, data.path());
    let m = library.tracks().next().unwrap().manifest.clone();
    let first_audio = m.media().time_index[0].byte_offset;
    // The codec is made from the header chunks alone.
    let header_chunks = headers
        .iter()
        .filter(|r| r.start < first_audio)
        .flat_map(|r| m.layout().chunks_covering(r.clone()));
    let store = store_of(&m, &bytes, header_chunks);
    let early = chorus_player::play::early_codec(&store, Duration::ZERO)
        .expect("a codec from the header chunks");
    let all = store_of(&m, &bytes, 0..m.layout().count());
    let all_again = all.clone();
    let wait = Duration::from_secs(2);
    let source = chorus_player::source::ChunkSource::new(all.clone(), wait, Box::new(|_| {}));
    let hint = chorus_player::decode::extension_hint(m.media().container);
    let mut d = Decoder::open_with(Box::new(source), hint, Some(early)).unwrap();
    assert!(d.codec_made_early(), "the stream's own headers are the ones it was made from");

    // A seek by the index, through the same view of the bytes.
    let points: Vec<(u64, u64)> =
        m.time_points().iter().map(|p| (p.byte_offset, p.time_us)).collect();
    let points = Box::new(move || points.clone());
    let open_at: chorus_player::decode::OpenAt = Box::new(move |base| {
        Box::new(chorus_player::source::ChunkSource::at(all.clone(), base, wait, Box::new(|_| {})))
    });
    let preroll = chorus_player::decode::preroll(&m);
    d = d.with_index(SeekIndex { points, open_at, format: IndexedFormat::Ogg, preroll });
    let target = Duration::from_secs(20);
    d.seek(target).unwrap();
    let mut got = Vec::new();
    while let Some(block) = d.next_block().unwrap() {
        got.extend_from_slice(block);
    }
    let (_, _, local) = chorus_player::decode::decode_file(&file, Some(target)).unwrap();
    assert_eq!(got.len(), local.len(), "samples from 20 s");
    assert!(got.iter().zip(&local).all(|(a, b)| a.to_bits() == b.to_bits()), "sample for sample");

    // As the player opens it: the first audio page a packet at a time,
    // then the reader over the same zeros, the page passed over.
    let early = chorus_player::play::early_codec(&store, Duration::ZERO).unwrap();
    let source = chorus_player::source::ChunkSource::new(all_again, wait, Box::new(|_| {}));
    let mut d = Decoder::open_by_packets(Box::new(source), early, first_audio).unwrap();
    let mut got = Vec::new();
    while let Some(block) = d.next_block().unwrap() {
        got.extend_from_slice(block);
    }
    let (_, _, local) = chorus_player::decode::decode_file(&file, None).unwrap();
    assert_eq!(got.len(), local.len(), "samples of the whole track");
    assert!(got.iter().zip(&local).all(|(a, b)| a.to_bits() == b.to_bits()), "sample for sample");
}

/// An Ogg Vorbis track's codec is made from its header pages, in the
/// first chunk, before its first audio page is here: symphonia's reader
/// makes it only once that page is whole (15 KB here, reaching into the
/// next chunk), and making it (the setup header's codebooks) then came on
/// the first note's path (bench, this track alone on `transatlantic`, two
/// alternating pairs: known 107/104 -> 103/100 ms, cold 195/190 ->
/// 188/187). A decoder opened with it decodes what a local decode gives;
/// one made from other header bytes is not used.
#[test]
fn an_ogg_s_codec_is_made_before_its_first_audio_page_is_here() {
    use chorus_player::decode::{Decoder, vorbis_from_headers};
    let data = tempfile::tempdir().unwrap();
    let lib = library_dir(&["apex-aleph.ogg"]);
    let (library, _, _) = scan(lib.path(), data.path());
    let m = library.tracks().next().unwrap().manifest.clone();
    let file = std::fs::read(lib.path().join("apex-aleph.ogg")).unwrap();
    let first_audio = m.media().time_index[0].byte_offset as usize;
    let chunk0 = m.layout().byte_range(chorus_protocol::ChunkIndex(0));
    assert!(first_audio as u64 <= chunk0.end, "the header pages are in the first chunk");
    let store_with = |n: u32| store_of(&m, &file, 0..n);
    let hint = chorus_player::decode::extension_hint(m.media().container);
    // The reader cannot open on the first chunk alone: it needs the whole
    // first audio page.
    let wait = Duration::from_millis(300);
    let source = chorus_player::source::ChunkSource::new(store_with(1), wait, Box::new(|_| {}));
    assert!(Decoder::open(Box::new(source), hint).is_err(), "the reader needs the next chunk");
    // The codec needs only the header pages.
    let early = vorbis_from_headers(&file[..first_audio]).expect("a codec from the header pages");
    let source = chorus_player::source::ChunkSource::new(
        store_with(m.layout().count()),
        wait,
        Box::new(|_| {}),
    );
    let mut d = Decoder::open_with(Box::new(source), hint, Some(early)).unwrap();
    assert!(d.codec_made_early(), "the stream's headers are the ones it was made from");
    let mut got = Vec::new();
    while let Some(block) = d.next_block().unwrap() {
        got.extend_from_slice(block);
    }
    let (_, _, local) =
        chorus_player::decode::decode_file(&lib.path().join("apex-aleph.ogg"), None).unwrap();
    assert_eq!(got.len(), local.len());
    assert!(got.iter().zip(&local).all(|(a, b)| a.to_bits() == b.to_bits()), "sample for sample");
    // Header bytes that are not the stream's: their codec is not used.
    let mut other = file[..first_audio].to_vec();
    // A bit of the setup packet, which the codec is made from.
    let setup = other.windows(7).rposition(|w| w == b"\x05vorbis").unwrap();
    other[setup + (first_audio - setup) / 2] ^= 0x01;
    let source = chorus_player::source::ChunkSource::new(store_with(2), wait, Box::new(|_| {}));
    let early = vorbis_from_headers(&other);
    let d = Decoder::open_with(Box::new(source), hint, early).unwrap();
    assert!(!d.codec_made_early(), "a codec from other header bytes is not the stream's");
}

/// An Ogg Vorbis track's first audio page is read a packet at a time, each
/// decoded as soon as its bytes are here: symphonia's reader takes a page
/// whole before it gives a packet, and this one (15 KB, a second of audio)
/// reaches into the second chunk, so the first note waited for its end
/// (bench, `transatlantic`: the Ogg's decoder was ready 7-8 ms after its
/// head). On the first chunk alone the decoder gives the page's packets
/// that are in it, a local decode's samples exactly; on the whole track
/// it goes on from the page into the reader without a seam, and seeks
/// made while it reads the page (by the index, and near the start, where
/// the reader seeks itself) land where a local decode's do.
#[test]
fn an_ogg_s_first_audio_page_plays_packet_by_packet() {
    use chorus_player::decode::{Decoder, IndexedFormat, SeekIndex, decode_file};
    use chorus_player::source::ChunkSource;
    use chorus_streamer::probe::{OGG_PAGE_HEADER_LEN, ogg_page_header};
    let data = tempfile::tempdir().unwrap();
    let lib = library_dir(&["apex-aleph.ogg"]);
    let (library, _, _) = scan(lib.path(), data.path());
    let m = library.tracks().next().unwrap().manifest.clone();
    let path = lib.path().join("apex-aleph.ogg");
    let file = std::fs::read(&path).unwrap();
    let first_audio = m.media().time_index[0].byte_offset;
    let at = first_audio as usize;
    let page = ogg_page_header(&file[at..]).unwrap();
    let lacing = &file[at + OGG_PAGE_HEADER_LEN..][..page.segments];
    let page_end = at + OGG_PAGE_HEADER_LEN + page.segments;
    let page_end = page_end + lacing.iter().map(|&l| usize::from(l)).sum::<usize>();
    let chunk0 = m.layout().byte_range(chorus_protocol::ChunkIndex(0));
    assert!(page_end as u64 > chunk0.end, "the first audio page reaches into the next chunk");
    let early = || chorus_player::decode::vorbis_from_headers(&file[..at]).unwrap();
    let wait = Duration::from_millis(300);
    let (rate, channels, local) = decode_file(&path, None).unwrap();
    let same =
        |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());

    // The first chunk alone: the page's packets in it play.
    let source = ChunkSource::new(store_of(&m, &file, 0..1), wait, Box::new(|_| {}));
    let mut d = Decoder::open_by_packets(Box::new(source), early(), first_audio).unwrap();
    assert!(d.codec_made_early());
    assert_eq!((d.sample_rate(), d.channels()), (rate, channels));
    let mut got = Vec::new();
    let stopped = loop {
        match d.next_block() {
            Ok(Some(block)) => got.extend_from_slice(block),
            Ok(None) => panic!("the track ended in its first chunk"),
            Err(e) => break e,
        }
    };
    let secs = got.len() as f64 / (f64::from(rate) * channels as f64);
    // 12 KB of the page's 15 KB (1.09 s of audio) are in the first chunk.
    assert!(secs > 0.5, "{secs:.3} s played from the first chunk, then: {stopped}");
    assert!(same(&got, &local), "the first chunk's packets, sample for sample");

    // The whole track: from the page on into the reader, without a seam.
    let all = store_of(&m, &file, 0..m.layout().count());
    let source = ChunkSource::new(all.clone(), wait, Box::new(|_| {}));
    let mut d = Decoder::open_by_packets(Box::new(source), early(), first_audio).unwrap();
    let mut got = Vec::new();
    while let Some(block) = d.next_block().unwrap() {
        got.extend_from_slice(block);
    }
    assert_eq!(got.len(), local.len());
    assert!(same(&got, &local), "the whole track, sample for sample");

    // Seeks while the page is being read: near the start (no index point
    // serves; the reader seeks) and by the index.
    for target in [Duration::from_millis(300), Duration::from_secs(20)] {
        let source = ChunkSource::new(all.clone(), wait, Box::new(|_| {}));
        // As the player does: the length shown once the decoder is open.
        let shown = source.length_shown();
        let mut d = Decoder::open_by_packets(Box::new(source), early(), first_audio).unwrap();
        shown.store(true, Relaxed);
        let points: Vec<(u64, u64)> =
            m.time_points().iter().map(|p| (p.byte_offset, p.time_us)).collect();
        let points = Box::new(move || points.clone());
        let store = all.clone();
        let open_at: chorus_player::decode::OpenAt = Box::new(move |base| {
            Box::new(ChunkSource::at(store.clone(), base, wait, Box::new(|_| {})))
        });
        let preroll = chorus_player::decode::preroll(&m);
        d = d.with_index(SeekIndex { points, open_at, format: IndexedFormat::Ogg, preroll });
        assert!(d.next_block().unwrap().is_some(), "a packet of the first page");
        d.seek(target).unwrap_or_else(|e| panic!("seek to {target:?}: {e}"));
        let mut got = Vec::new();
        while let Some(block) = d.next_block().unwrap() {
            got.extend_from_slice(block);
        }
        let (_, _, want) = decode_file(&path, Some(target)).unwrap();
        assert_eq!(got.len(), want.len(), "samples from {target:?}");
        assert!(same(&got, &want), "from {target:?}, sample for sample");
    }
}
