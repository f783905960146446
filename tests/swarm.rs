//! The swarm over real QUIC on loopback: one seed and four peers, each
//! behind a rate-limited UDP relay, and a fifth node that plays a track
//! while two of its sources are killed mid-track.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_player::decode::decode_file;
use chorus_player::play::{PlayOptions, Playback, play};
use chorus_player::sink::OutputSpec;
use chorus_streamer::fetch::Source;
use common::*;

/// Writes 16-bit PCM WAV: the first `secs` seconds of a sample, decoded.
fn short_wav(path: &std::path::Path, secs: f64) {
    let (rate, channels, samples) = decode_file(&sample("apex-aleph.ogg"), None).unwrap();
    let n = (secs * f64::from(rate)) as usize * channels;
    let data: Vec<u8> = samples[..n]
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut f = std::fs::File::create(path).unwrap();
    let ch = channels as u16;
    f.write_all(b"RIFF").unwrap();
    f.write_all(&(36 + data.len() as u32).to_le_bytes()).unwrap();
    f.write_all(b"WAVEfmt ").unwrap();
    f.write_all(&16u32.to_le_bytes()).unwrap();
    f.write_all(&1u16.to_le_bytes()).unwrap();
    f.write_all(&ch.to_le_bytes()).unwrap();
    f.write_all(&rate.to_le_bytes()).unwrap();
    f.write_all(&(rate * u32::from(ch) * 2).to_le_bytes()).unwrap();
    f.write_all(&(ch * 2).to_le_bytes()).unwrap();
    f.write_all(&16u16.to_le_bytes()).unwrap();
    f.write_all(b"data").unwrap();
    f.write_all(&(data.len() as u32).to_le_bytes()).unwrap();
    f.write_all(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_survives_losing_two_of_five_sources_and_the_seed_serves_a_minority() {
    // A 30 s track at 1.5 Mbit/s, held by the seed and four peers.
    let music = tempfile::tempdir().unwrap();
    short_wav(&music.path().join("track.wav"), 30.0);
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..5 {
        let lib = tempfile::tempdir().unwrap();
        std::fs::copy(music.path().join("track.wav"), lib.path().join("track.wav")).unwrap();
        let data = tempfile::tempdir().unwrap();
        let (library, _, _) = scan(lib.path(), data.path());
        nodes.push(Seed::start(library));
        dirs.push((lib, data));
    }
    let manifest =
        nodes[0].node.with_library(|l| l.tracks().next().unwrap().manifest.clone()).unwrap();

    // Each source sits behind a 3 Mbit/s link: the four peers carry
    // 12 Mbit/s, the two that survive 6, against the track's 1.5.
    let mut relays = Vec::new();
    let client = client();
    let mut sources = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let relay = UdpRelay::start(n.addr, 3_000_000).await;
        let peer = client.connect(relay.addr, Some(n.id)).await.unwrap();
        sources.push(Source { peer, is_seed: i == 0, have: None, head_rest: None });
        relays.push(relay);
    }

    let handle: Arc<Mutex<Option<Playback>>> = Arc::default();
    let h = handle.clone();
    let started = Instant::now();
    let playing = tokio::spawn(play(
        manifest.clone(),
        sources,
        OutputSpec::Null,
        PlayOptions::default(),
        started,
        move |p| {
            *h.lock().unwrap() = Some(p.clone());
        },
    ));

    // Mid-track (2 s of audio played, much of the track still to come),
    // two peers die.
    let count = manifest.layout().count();
    let mut polls = 0;
    loop {
        let p = handle.lock().unwrap().clone();
        if let Some(p) = p {
            // 2 s played, or half the track here, whichever comes first: a
            // lagging poll cannot let the whole track arrive before the kill.
            if p.stats.position() >= Duration::from_secs(2) || p.store.present() >= count / 2 {
                assert!(
                    p.store.present() < count,
                    "the kill must come before the track is all here"
                );
                break;
            }
        }
        assert!(!playing.is_finished(), "playback ended early: {:?}", playing.await);
        polls += 1;
        assert!(polls < 3000, "playback did not reach 5 s within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: Vec<_> = nodes.drain(3..5).collect();
    for k in killed {
        k.stop().await;
    }

    let report = tokio::time::timeout(Duration::from_secs(120), playing)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap();
    assert_eq!(report.underruns, 0, "{report:?}");
    assert!(report.played >= Duration::from_millis(29_900), "the whole track played: {report:?}");
    let total: u64 = report.sources.iter().map(|s| s.2).sum();
    let seed: u64 = report.sources.iter().filter(|s| s.3).map(|s| s.2).sum();
    assert!(total >= manifest.layout().byte_len());
    assert!(seed * 2 < total, "the seed served {seed} of {total} bytes: {report:?}");
    // Both killed peers had served something before they died.
    for dead in &report.sources[3..] {
        assert!(dead.2 > 0, "{report:?}");
    }
    eprintln!(
        "first audio {:?}, seed share {:.1}%, hedges {}",
        report.time_to_first_audio,
        seed as f64 * 100.0 / total as f64,
        report.hedges
    );
    client.close().await;
    for n in nodes {
        n.stop().await;
    }
}

/// A peer that speaks the protocol but lies: it claims to hold the whole
/// track (as a cache) and answers every chunk request with bytes of the
/// right length that fail verification.
fn start_liar(
    manifest: chorus_protocol::Manifest,
) -> (chorus_streamer::transport::Transport, tokio::task::JoinHandle<()>) {
    start_fake(manifest, None)
}

/// With `file` (the track's bytes), an honest peer but for its start
/// responses: the pages of the hash list its chunks need and the chunks,
/// but not the rest of the list. Without, [`start_liar`].
fn start_fake(
    manifest: chorus_protocol::Manifest,
    file: Option<bytes::Bytes>,
) -> (chorus_streamer::transport::Transport, tokio::task::JoinHandle<()>) {
    use chorus_protocol::message::{ChunkRun, Hashes, Have, ManifestResponse};
    use chorus_protocol::{ChunkIndex, Manifest, Message};
    use chorus_streamer::wire::{read_frame, write_chunk, write_message};
    let identity = Arc::new(chorus_streamer::identity::Identity::ephemeral().unwrap());
    let limits = chorus_streamer::tls::TransportLimits::default();
    let server = chorus_streamer::tls::server_config(&identity, &limits).unwrap();
    let t = chorus_streamer::transport::Transport::bind(
        identity,
        ([127, 0, 0, 1], 0).into(),
        Some(server),
        &limits,
    )
    .unwrap();
    let listen = vec![t.local_addr().unwrap()];
    let hello = t.hello(listen);
    let endpoint = t.endpoint().clone();
    // A chunk's bytes: the file's, or junk of the right length.
    let bytes_of = move |m: &Manifest, index: ChunkIndex| {
        let r = m.layout().byte_range(index);
        match &file {
            Some(f) => f.slice(r.start as usize..r.end as usize),
            None => bytes::Bytes::from(vec![0x5a; (r.end - r.start) as usize]),
        }
    };
    let honest = bytes_of.clone();
    let lists = |m: &Manifest, pages: std::ops::Range<u32>| {
        let data = m.hash_pages(pages.clone()).unwrap();
        Message::Hashes(Hashes { track: m.id(), first_page: pages.start, data })
    };
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let (m, hello, bytes_of) = (manifest.clone(), hello.clone(), honest.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let (m, hello, bytes_of) = (m.clone(), hello.clone(), bytes_of.clone());
                    tokio::spawn(async move {
                        let Ok(Some(f)) = read_frame(&mut recv).await else { return };
                        match f.message {
                            Message::Hello(_) => {
                                let _ = write_message(&mut send, &Message::Hello(hello)).await;
                            }
                            Message::ManifestRequest(r) => {
                                let reply = ManifestResponse {
                                    track: r.track,
                                    manifest: m.encoded().clone(),
                                    origin: false,
                                };
                                let _ = write_message(&mut send, &Message::ManifestResponse(reply))
                                    .await;
                                // The true hash list: the lie is in the chunks.
                                let _ =
                                    write_message(&mut send, &lists(&m, 0..m.page_count())).await;
                                let all = ChunkRun { start: 0, len: m.layout().count() };
                                let _ = write_message(
                                    &mut send,
                                    &Message::Have(Have { track: r.track, runs: vec![all] }),
                                )
                                .await;
                            }
                            Message::StartRequest(r) => {
                                let at = Duration::from_millis(u64::from(r.at_ms));
                                let reply = ManifestResponse {
                                    track: m.id(),
                                    manifest: m.encoded().clone(),
                                    origin: true,
                                };
                                let _ = write_message(&mut send, &Message::ManifestResponse(reply))
                                    .await;
                                let chunks = m.start_chunks(at, u64::from(r.budget));
                                let mut pages: Vec<u32> =
                                    chunks.iter().map(|i| Manifest::page_of(*i)).collect();
                                pages.sort_unstable();
                                pages.dedup();
                                for p in pages {
                                    let _ = write_message(&mut send, &lists(&m, p..p + 1)).await;
                                }
                                for i in chunks {
                                    let _ = write_chunk(
                                        &mut send,
                                        m.id(),
                                        i,
                                        Default::default(),
                                        bytes::Bytes::new(),
                                        bytes_of(&m, i),
                                    )
                                    .await;
                                }
                            }
                            Message::ChunkRequest(r) => {
                                for i in r.first.0..r.first.0 + r.count {
                                    let index = ChunkIndex(i);
                                    let data = bytes_of(&m, index);
                                    if write_chunk(
                                        &mut send,
                                        r.track,
                                        index,
                                        Default::default(),
                                        bytes::Bytes::new(),
                                        data,
                                    )
                                    .await
                                    .is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                            _ => {}
                        }
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    (t, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_response_without_the_rest_of_the_hash_list_does_not_stall_the_listener() {
    // The only peer's start response has the pages its chunks need, not
    // the rest of the list: nothing past them can be checked until the
    // fetch asks it for the manifest's whole list (as it does when a start
    // response ends without it).
    let lib = library_dir(&["beat-thee.mp3"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    assert!(manifest.page_count() > 1);
    let file = bytes::Bytes::from(std::fs::read(sample("beat-thee.mp3")).unwrap());
    let (fake, fake_task) = start_fake(manifest.clone(), Some(file));
    let client = client();
    let addr = fake.local_addr().unwrap();
    let pool = chorus_streamer::start::Pool::dial(&client, &[(addr, Some(fake.peer_id()))]);
    let want = chorus_protocol::message::Want::Track(manifest.id());
    let s = pool.start(&want, Duration::ZERO).await.unwrap();
    let m = s.answer.manifest.clone();
    assert!(!m.hashes_known(), "only the start's pages came");
    let out = tempfile::tempdir().unwrap();
    let wav = out.path().join("out.wav");
    let options = PlayOptions { head: s.answer.head.clone(), ..PlayOptions::default() };
    let report = play(
        m.clone(),
        vec![s.source],
        OutputSpec::Wav(wav.clone()),
        options,
        Instant::now(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(m.hashes_known(), "the fetch completed the list");
    assert_eq!(report.underruns, 0);
    let (_, _, got) = decode_file(&wav, None).unwrap();
    let (_, _, want) = decode_file(&sample("beat-thee.mp3"), None).unwrap();
    assert!(got == want, "the whole track, exactly the original's audio");
    client.close().await;
    fake.close().await;
    fake_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_peer_is_dropped_banned_and_not_one_corrupt_byte_is_played() {
    let lib = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let seed = Seed::start(library);
    let (liar, liar_task) = start_liar(manifest.clone());
    let liar_id = liar.peer_id();
    let client = client();
    // The liar is fast and not a seed: the scheduler prefers it at first.
    let lying = client.connect(liar.local_addr().unwrap(), None).await.unwrap();
    let (m, origin, have) = lying.manifest_and_origin(manifest.id()).await.unwrap();
    assert_eq!(m, manifest);
    let honest = client.connect(seed.addr, Some(seed.id)).await.unwrap();
    let sources = vec![
        Source { peer: lying, is_seed: origin, have, head_rest: None },
        Source { peer: honest, is_seed: true, have: None, head_rest: None },
    ];
    let out = tempfile::tempdir().unwrap();
    let wav = out.path().join("out.wav");
    let report = play(
        manifest.clone(),
        sources,
        OutputSpec::Wav(wav.clone()),
        PlayOptions::default(),
        Instant::now(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.banned, vec![liar_id], "{report:?}");
    assert!(
        report.sources.iter().all(|s| s.0 != liar_id || s.2 == 0),
        "nothing from the liar was kept"
    );
    let (_, _, got) = decode_file(&wav, None).unwrap();
    let (_, _, want) = decode_file(&sample("apex-aleph.ogg"), None).unwrap();
    assert!(got == want, "the audio is exactly the original's");
    // Banned: this node will not dial it again.
    client.ban(liar_id);
    assert!(matches!(
        client.connect(liar.local_addr().unwrap(), None).await,
        Err(chorus_streamer::Error::Banned(id)) if id == liar_id
    ));
    client.close().await;
    liar.close().await;
    liar_task.abort();
    seed.stop().await;
}
