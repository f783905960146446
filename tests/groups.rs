//! A chunk is used a 4 KiB group at a time as it arrives, each group
//! checked first: real QUIC on loopback to a peer that sends the first
//! group of a chunk and holds the rest back until the test lets it go.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_protocol::groups::{GROUP_LEN, group_hashes};
use chorus_protocol::message::Hello;
use chorus_protocol::{ChunkIndex, Manifest, Message, ProtocolError, frame};
use chorus_streamer::client::Arrival;
use chorus_streamer::error::Error;
use chorus_streamer::store::TrackStore;
use chorus_streamer::transport::Transport;
use chorus_streamer::wire::{read_frame, write_message};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// A peer that answers a chunk request with the chunk's group values and
/// its first group, then the rest once `release` has a permit; with
/// `corrupt`, one byte of the second group is wrong.
fn start_slow_peer(
    file: Bytes,
    manifest: Manifest,
    release: Arc<Semaphore>,
    corrupt: bool,
) -> (Transport, tokio::task::JoinHandle<()>) {
    let identity = Arc::new(chorus_streamer::identity::Identity::ephemeral().unwrap());
    let limits = chorus_streamer::tls::TransportLimits::default();
    let server = chorus_streamer::tls::server_config(&identity, &limits).unwrap();
    let t = Transport::bind(identity, ([127, 0, 0, 1], 0).into(), Some(server), &limits).unwrap();
    let hello: Hello = t.hello(vec![t.local_addr().unwrap()]);
    let endpoint = t.endpoint().clone();
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let (file, m, hello, release) =
                (file.clone(), manifest.clone(), hello.clone(), release.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let (file, m, hello, release) =
                        (file.clone(), m.clone(), hello.clone(), release.clone());
                    tokio::spawn(async move {
                        let Ok(Some(f)) = read_frame(&mut recv).await else { return };
                        match f.message {
                            Message::Hello(_) => {
                                let _ = write_message(&mut send, &Message::Hello(hello)).await;
                            }
                            Message::ChunkRequest(r) => {
                                let range = m.layout().byte_range(r.first);
                                let data = file.slice(range.start as usize..range.end as usize);
                                let groups = group_hashes(&data);
                                let mut sent = data.to_vec();
                                if corrupt {
                                    sent[GROUP_LEN + 10] ^= 0x40;
                                }
                                let header = frame::chunk_data_header(
                                    m.id(),
                                    r.first,
                                    Default::default(),
                                    &groups,
                                    data.len(),
                                )
                                .unwrap();
                                let _ = send.write_all(&header).await;
                                let _ = send.write_all(&sent[..GROUP_LEN + 100]).await;
                                let _ = send.flush().await;
                                let Ok(permit) = release.acquire().await else { return };
                                permit.forget();
                                let _ = send.write_all(&sent[GROUP_LEN + 100..]).await;
                            }
                            _ => {}
                        }
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    (t, task)
}

fn track() -> (Bytes, Manifest) {
    let lib = library_dir(&["deprecation.wav"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let file = Bytes::from(std::fs::read(sample("deprecation.wav")).unwrap());
    (file, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_group_of_a_chunk_is_readable_before_the_rest_is_sent() {
    let (file, manifest) = track();
    let release = Arc::new(Semaphore::new(0));
    let (peer_t, task) = start_slow_peer(file.clone(), manifest.clone(), release.clone(), false);
    let client = client();
    let peer = client.connect(peer_t.local_addr().unwrap(), None).await.unwrap();
    let index = ChunkIndex(3);
    let range = manifest.layout().byte_range(index);
    let store = TrackStore::new(manifest.clone());
    let mut stream = peer.chunks(&manifest, index, 1, 0).await.unwrap();
    // The peer holds back all but 100 bytes after the first group: what
    // comes now is the first group, checked, and readable in the store.
    let Some(Arrival::Part(part)) = stream.next_arrival().await.unwrap() else {
        panic!("expected the first group before the chunk");
    };
    assert_eq!((part.index(), part.offset(), part.data().len()), (index, 0, GROUP_LEN));
    assert_eq!(store.insert_part(&part).unwrap(), GROUP_LEN as u64);
    let mut buf = vec![0u8; 2 * GROUP_LEN];
    let n = store.read_at(range.start, &mut buf, Duration::ZERO).unwrap();
    assert_eq!(&buf[..n], &file[range.start as usize..range.start as usize + GROUP_LEN]);
    assert!(!store.has(index.0), "the chunk is not whole yet");
    // Past the first group the reader waits (here: not at all).
    let past = store.read_at(range.start + GROUP_LEN as u64, &mut buf, Duration::ZERO);
    assert!(past.is_err());
    // The rest, then the whole chunk.
    release.add_permits(1);
    let whole = loop {
        match stream.next_arrival().await.unwrap() {
            Some(Arrival::Part(p)) => {
                store.insert_part(&p).unwrap();
            }
            Some(Arrival::Chunk(c)) => break c,
            None => panic!("the stream ended without the chunk"),
        }
    };
    assert_eq!(whole.data().as_ref(), &file[range.start as usize..range.end as usize]);
    assert!(store.insert(whole).unwrap());
    assert!(stream.next_arrival().await.unwrap().is_none());
    client.close().await;
    peer_t.close().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_group_is_refused_and_nothing_of_it_is_handed_out() {
    let (file, manifest) = track();
    let release = Arc::new(Semaphore::new(1));
    let (peer_t, task) = start_slow_peer(file.clone(), manifest.clone(), release, true);
    let client = client();
    let peer = client.connect(peer_t.local_addr().unwrap(), None).await.unwrap();
    let mut stream = peer.chunks(&manifest, ChunkIndex(3), 1, 0).await.unwrap();
    let mut handed_out = 0;
    let error = loop {
        match stream.next_arrival().await {
            Ok(Some(Arrival::Part(p))) => handed_out += p.data().len(),
            Ok(other) => panic!("a corrupt chunk came through: {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(handed_out, GROUP_LEN, "only the honest first group");
    assert!(matches!(error, Error::Protocol(ProtocolError::ChunkHashMismatch { .. })), "{error:?}");
    client.close().await;
    peer_t.close().await;
    task.abort();
}
