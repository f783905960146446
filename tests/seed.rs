//! `chorus seed` as a library: index a directory, serve it over QUIC on
//! loopback, search, fetch and check every failure path a peer can hit.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use chorus_protocol::message::ErrorCode;
use chorus_protocol::{ChunkIndex, PeerId, TrackId, frame};
use chorus_streamer::Error;
use chorus_streamer::client::Peer;
use common::*;

const SMALL: [&str; 3] = ["apex-aleph.ogg", "through-space.m4a", "inevitable.mp3"];

fn with_bad_files(dir: &std::path::Path) {
    std::fs::write(dir.join("notes.txt"), b"not music at all, just some text").unwrap();
    std::fs::write(
        dir.join("garbage.mp3"),
        (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(dir.join("empty.flac"), b"").unwrap();
    let flac = std::fs::read(sample("awakening.flac")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/truncated.flac"), &flac[..flac.len() / 3]).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("outside.mp3")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_search_and_fetch_give_identical_bytes_and_bad_files_are_skipped() {
    let lib_dir = library_dir(&SMALL);
    with_bad_files(lib_dir.path());
    let data = tempfile::tempdir().unwrap();
    let (library, report, warnings) = scan(lib_dir.path(), data.path());

    assert_eq!(library.len(), 3, "the three real tracks are served");
    assert_eq!(report.indexed, 3);
    assert_eq!(report.skipped, 4, "text, garbage, empty and truncated files: {warnings:?}");
    for bad in ["notes.txt", "garbage.mp3", "empty.flac", "truncated.flac", "outside.mp3"] {
        assert!(warnings.iter().any(|w| w.contains(bad)), "no warning for {bad}: {warnings:?}");
    }
    assert!(warnings.iter().any(|w| w.contains("truncated.flac") && w.contains("truncated")));

    let seed = Seed::start(library);
    let client = client();
    let peer = client.connect(seed.addr, Some(seed.id)).await.unwrap();
    assert_eq!(peer.id(), seed.id);

    let all = peer.search("", 100).await.unwrap();
    assert_eq!(all.len(), 3);
    let hits = peer.search("APEX", 100).await.unwrap();
    assert_eq!(hits.len(), 1, "case-insensitive title match");
    assert_eq!(hits[0].tags.title.as_deref(), Some("Apex Aleph"));
    assert_eq!(
        peer.search("singularity inevitable", 100).await.unwrap().len(),
        1,
        "album + title words"
    );
    assert_eq!(peer.search("through-space.m4a", 100).await.unwrap().len(), 1, "file name match");
    assert!(peer.search("no such song", 100).await.unwrap().is_empty());

    let out = tempfile::tempdir().unwrap();
    for entry in &all {
        let manifest = peer.manifest(entry.track).await.unwrap();
        assert_eq!(manifest.id(), entry.track);
        let path = out.path().join(&entry.file_name);
        let n = peer.fetch_to_file(&manifest, &path, &|_| {}).await.unwrap();
        assert_eq!(n, entry.byte_len);
        let original = std::fs::read(sample(&entry.file_name)).unwrap();
        assert!(std::fs::read(&path).unwrap() == original, "{} differs", entry.file_name);
    }
    assert_eq!(
        seed.node.stats().bytes_served.load(std::sync::atomic::Ordering::Relaxed) as u64,
        all.iter().map(|e| e.byte_len).sum::<u64>()
    );
    client.close().await;
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reindexes_only_the_changed_file() {
    let lib_dir = library_dir(&SMALL);
    let data = tempfile::tempdir().unwrap();
    let (first, report, _) = scan(lib_dir.path(), data.path());
    assert_eq!((report.indexed, report.reused), (3, 0));

    // Unchanged: everything reused, same ids.
    let (again, report, _) = scan(lib_dir.path(), data.path());
    assert_eq!((report.indexed, report.reused, report.removed), (0, 3, 0));
    let ids = |l: &chorus_streamer::library::Library| {
        let mut v: Vec<TrackId> = l.tracks().map(|t| t.manifest.id()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&first), ids(&again));

    // One file replaced by other audio, one removed: only that file is read.
    std::fs::copy(sample("deprecation.wav"), lib_dir.path().join("inevitable.mp3")).unwrap();
    std::fs::remove_file(lib_dir.path().join("apex-aleph.ogg")).unwrap();
    let (changed, report, _) = scan(lib_dir.path(), data.path());
    assert_eq!((report.indexed, report.reused, report.removed), (1, 1, 1));
    assert_eq!(changed.len(), 2);
    assert!(changed.tracks().any(|t| t.manifest.media().codec == chorus_protocol::Codec::Pcm));

    // Skipped files are remembered too: not re-probed while unchanged.
    std::fs::write(lib_dir.path().join("junk.mp3"), b"junk junk junk junk").unwrap();
    let (_, report, warnings) = scan(lib_dir.path(), data.path());
    assert_eq!((report.indexed, report.skipped), (0, 1), "{warnings:?}");
    let (_, report, warnings) = scan(lib_dir.path(), data.path());
    assert_eq!((report.indexed, report.reused, report.skipped), (0, 2, 1));
    assert!(warnings.is_empty(), "an unchanged skipped file is not warned about again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_index_is_rebuilt_not_fatal() {
    let lib_dir = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    scan(lib_dir.path(), data.path());
    std::fs::write(data.path().join(chorus_streamer::library::INDEX_FILE), b"\xff\xff garbage")
        .unwrap();
    let (library, report, _) = scan(lib_dir.path(), data.path());
    assert_eq!((library.len(), report.indexed), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tracks_and_chunks_get_error_replies() {
    let lib_dir = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib_dir.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let seed = Seed::start(library);
    let client = client();
    let peer = client.connect(seed.addr, None).await.unwrap();

    let unknown = TrackId::from_bytes([0x5a; 32]);
    match peer.manifest(unknown).await {
        Err(Error::Remote { code: ErrorCode::UnknownTrack, .. }) => {}
        other => panic!("expected UnknownTrack, got {other:?}"),
    }
    let count = manifest.layout().count();
    let mut stream = peer.chunks(&manifest, ChunkIndex(count - 1), 2, 0).await.unwrap();
    match stream.next().await {
        Err(Error::Remote { code: ErrorCode::UnknownChunk, .. }) => {}
        other => panic!("expected UnknownChunk, got {other:?}"),
    }
    // The connection is still good after errors.
    let mut stream = peer.chunks(&manifest, ChunkIndex(count - 1), 1, 0).await.unwrap();
    assert!(stream.next().await.unwrap().is_some());
    assert!(stream.next().await.unwrap().is_none());
    client.close().await;
    seed.stop().await;
}

/// Requests are begun (stream opened, message written) where they are
/// decided, in that order: nothing awaited afterwards, in whatever order
/// tasks run, decides which the peer sees first. The node answers all
/// three before anything awaits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_begun_at_once_reach_the_peer_before_anything_awaits_them() {
    let lib_dir = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib_dir.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let seed = Seed::start(library);
    let client = client();
    let peer = client.connect(seed.addr, None).await.unwrap();

    let begun: Vec<_> = (0..3)
        .map(|i| {
            let msg = Peer::chunk_request(&manifest, ChunkIndex(i), 1, 0);
            peer.begin_now(&msg).expect("a stream at once").expect("begun")
        })
        .collect();
    assert!(begun.iter().all(|b| b.is_sent()), "each request whole in its stream");
    let served = || seed.node.stats().chunks_served.load(std::sync::atomic::Ordering::Relaxed);
    // Bounded: the node answers within a few loopback round trips.
    for _ in 0..1000 {
        if served() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(served(), 3, "the node served the requests nothing had awaited");
    // And each reads as a request made in full.
    for (i, b) in (0u32..).zip(begun) {
        let mut stream = peer.chunks_on(Some(b), &manifest, ChunkIndex(i), 1, 0).await.unwrap();
        let chunk = stream.next().await.unwrap().expect("the chunk");
        assert_eq!(chunk.index(), ChunkIndex(i));
        assert!(stream.next().await.unwrap().is_none());
    }
    client.close().await;
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_requests_get_bad_request_and_the_node_lives_on() {
    let seed = Seed::start(chorus_streamer::library::Library::default());
    let client = client();
    let peer = client.connect(seed.addr, None).await.unwrap();
    for garbage in [
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],  // oversized length
        vec![0, 0, 0, 2, frame::VERSION, 0x42], // unknown message type
        vec![0, 0, 0, 3, frame::VERSION + 9, 0x01, 0], // future version
        vec![0, 0, 0, 40, frame::VERSION, 0x04, 1], // truncated
    ] {
        let (mut send, mut recv) = peer.connection().open_bi().await.unwrap();
        send.write_all(&garbage).await.unwrap();
        send.finish().unwrap();
        let reply = chorus_streamer::wire::read_frame(&mut recv).await;
        match reply {
            Ok(Some(f)) => match f.message {
                chorus_protocol::Message::Error(e) => {
                    assert!(
                        matches!(e.code, ErrorCode::BadRequest | ErrorCode::UnsupportedVersion),
                        "{e:?}"
                    )
                }
                m => panic!("expected an error reply, got {m:?}"),
            },
            other => panic!("expected an error reply to {garbage:?}, got {other:?}"),
        }
    }
    // Still serving.
    assert!(peer.search("", 10).await.unwrap().is_empty());
    client.close().await;
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_does_not_match_the_expected_id_is_refused() {
    let seed = Seed::start(chorus_streamer::library::Library::default());
    let client = client();
    let wrong = PeerId::from_bytes([0x42; 32]);
    match client.connect(seed.addr, Some(wrong)).await {
        Err(Error::PeerIdMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, seed.id);
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    client.close().await;
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_under_the_seed_is_never_served_as_the_old_track() {
    let lib_dir = library_dir(&["inevitable.mp3"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib_dir.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let seed = Seed::start(library);

    // Same size, different bytes, written in place after indexing.
    let path = lib_dir.path().join("inevitable.mp3");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(100_000).take(50_000) {
        *b ^= 0x55;
    }
    std::fs::write(&path, &bytes).unwrap();

    let client = client();
    let peer = client.connect(seed.addr, None).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x.mp3");
    match peer.fetch_to_file(&manifest, &target, &|_| {}).await {
        Err(Error::Remote { code: ErrorCode::Internal, .. }) => {}
        other => panic!("expected the seed to refuse the changed file, got {other:?}"),
    }
    assert!(!target.exists(), "a failed fetch leaves no file behind");
    assert!(peer.search("", 10).await.unwrap().is_empty(), "the stale track is withdrawn");
    client.close().await;
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_under_the_seed_is_indexed_again_and_served_as_what_it_is() {
    let lib_dir = library_dir(&["inevitable.mp3"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib_dir.path(), data.path());
    let old = library.tracks().next().unwrap().manifest.clone();
    let seed = Seed::start(library);
    // Another song written over it (a tag editor, a re-rip).
    let path = lib_dir.path().join("inevitable.mp3");
    std::fs::copy(sample("beat-thee.mp3"), &path).unwrap();

    let client = client();
    let peer = client.connect(seed.addr, None).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let refused = peer.fetch_to_file(&old, &out.path().join("x.mp3"), &|_| {}).await;
    assert!(refused.is_err(), "the old track's bytes are gone");
    // Indexed again shortly after (bounded wait): the new song is served.
    let mut found = Vec::new();
    for _ in 0..100 {
        found = peer.search("", 10).await.unwrap();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(found.len(), 1, "the replaced file is served again");
    assert_eq!(found[0].tags.title.as_deref(), Some("Beat Thee"));
    assert_ne!(found[0].track, old.id());
    let fresh = peer.manifest(found[0].track).await.unwrap();
    let n = peer.fetch_to_file(&fresh, &out.path().join("y.mp3"), &|_| {}).await.unwrap();
    assert_eq!(n, std::fs::metadata(sample("beat-thee.mp3")).unwrap().len());
    client.close().await;
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_can_be_asked_for_with_the_hello() {
    let lib_dir = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib_dir.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let seed = Seed::start(library);
    let client = client();
    let (peer, answer) =
        client.connect_asking(seed.addr, Some(seed.id), manifest.id()).await.unwrap();
    let (got, origin, have) = answer.unwrap();
    assert_eq!(got, manifest);
    assert!(origin && have.is_none());
    assert_eq!(peer.id(), seed.id);
    assert!(!peer.hello().agent.is_empty(), "the hello was exchanged too");
    // An unknown track is that answer's error; the peer is fine.
    let unknown = TrackId::from_bytes([0x5a; 32]);
    let (peer, answer) = client.connect_asking(seed.addr, None, unknown).await.unwrap();
    assert!(matches!(answer, Err(Error::Remote { code: ErrorCode::UnknownTrack, .. })));
    assert_eq!(peer.manifest(manifest.id()).await.unwrap(), manifest);
    client.close().await;
    seed.stop().await;
}
