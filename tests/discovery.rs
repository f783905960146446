//! Discovery over real QUIC: peer exchange, and who-has forwarded at most
//! two hops; `chorus play` given one peer that holds nothing finds the
//! holders through it.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;

use chorus_player::decode::decode_file;
use chorus_protocol::ChunkIndex;
use chorus_streamer::cache::ChunkCache;
use chorus_streamer::identity::Identity;
use chorus_streamer::node::{Node, NodeLimits};
use common::*;

fn node(cache: Option<Arc<ChunkCache>>) -> (Node, tokio::task::JoinHandle<()>) {
    let n = Node::bind_with_cache(
        Arc::new(Identity::ephemeral().unwrap()),
        ([127, 0, 0, 1], 0).into(),
        Default::default(),
        cache,
        NodeLimits::default(),
    )
    .unwrap();
    let s = n.clone();
    (n, tokio::spawn(async move { s.serve().await }))
}

fn at(n: &Node) -> (std::net::SocketAddr, Option<chorus_protocol::PeerId>) {
    (n.transport().local_addr().unwrap(), Some(n.transport().peer_id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_has_finds_holders_two_hops_away_and_no_further() {
    let name = "apex-aleph.ogg";
    let lib = library_dir(&[name]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let track = manifest.id();
    let seed = Seed::start(library);

    // Caches holding the whole track, built from verified bytes.
    let file = std::fs::read(sample(name)).unwrap();
    let filled = || {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ChunkCache::open(dir.path(), 1 << 30).unwrap());
        cache.put_manifest(&manifest).unwrap();
        for i in manifest.layout().indices() {
            let r = manifest.layout().byte_range(i);
            let bytes = bytes::Bytes::copy_from_slice(&file[r.start as usize..r.end as usize]);
            cache.put_chunk(&manifest.verify(i, bytes).unwrap()).unwrap();
        }
        (dir, cache)
    };
    let (_bd, bcache) = filled();
    let (_cd, ccache) = filled();
    let (a, _ta) = node(None); // knows the seed, holds nothing
    let (b, _tb) = node(Some(bcache)); // holds it, known to the seed only
    let (c, _tc) = node(Some(ccache)); // holds it, known to b only: three hops out
    assert_eq!(a.join(&[(seed.addr, Some(seed.id))]).await, 1);
    assert_eq!(b.join(&[(seed.addr, Some(seed.id))]).await, 1);
    assert_eq!(c.join(&[at(&b)]).await, 1);

    // A listener that knows only `a`.
    let listener = client();
    let peer = listener.connect(a.transport().local_addr().unwrap(), None).await.unwrap();
    let learned = peer.exchange_peers(vec![]).await.unwrap();
    assert!(learned.iter().any(|p| p.id == seed.id), "peer exchange tells of the seed");
    let found = peer.who_has(track, 2).await.unwrap();
    let ids: Vec<_> = found.iter().map(|p| p.id).collect();
    assert!(ids.contains(&seed.id), "the seed, two hops out: {found:?}");
    assert!(ids.contains(&b.transport().peer_id()), "b, through the seed: {found:?}");
    assert!(!ids.contains(&c.transport().peer_id()), "c is three hops out: {found:?}");
    assert!(!ids.contains(&a.transport().peer_id()), "a does not hold it");
    // What was found can be dialled and serves the track.
    let b_info = found.iter().find(|p| p.id == b.transport().peer_id()).unwrap();
    let b_peer = listener.connect(b_info.addrs[0], Some(b_info.id)).await.unwrap();
    let (_, origin, _) = b_peer.manifest_and_origin(track).await.unwrap();
    assert!(!origin);
    let mut s = b_peer.chunks(&manifest, ChunkIndex(0), 1, 0).await.unwrap();
    assert!(s.next().await.unwrap().is_some());

    // The same through the binary: given only `a`, play finds the holders.
    let out = tempfile::tempdir().unwrap();
    let wav = out.path().join("out.wav");
    let a_addr = format!("{}@{}", a.transport().peer_id(), a.transport().local_addr().unwrap());
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
            .env("CHORUS_LAN", "off")
            .env("CHORUS_PORT_MAP", "off")
            .arg("--data-dir")
            .arg(out.path().join("data"))
            .args(["play", &track.to_string(), "--peer", &a_addr, "--out"])
            .arg(&wav)
            .output()
            .map(|o| (o, wav, out))
    })
    .await
    .unwrap()
    .unwrap();
    let (o, wav, _out) = run;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("from 2 peer(s)"), "{stdout}");
    let (_, _, got) = decode_file(&wav, None).unwrap();
    let (_, _, want) = decode_file(&sample(name), None).unwrap();
    assert!(got == want);

    // The first holder found is asked for the start (manifest, headers and
    // first audio in one response): no chunk request goes out before the
    // first note (with a manifest request instead, the fetcher would have
    // to ask for the head first). On the paced null sink, whose first
    // sample waits for the start rule.
    let out = tempfile::tempdir().unwrap();
    let a_addr = format!("{}@{}", a.transport().peer_id(), a.transport().local_addr().unwrap());
    let run = tokio::task::spawn_blocking(move || {
        chorus_cmd(&out.path().join("data"))
            .args(["-v", "play", &track.to_string(), "--peer", &a_addr])
            .args(["--out", "null", "--duration", "1"])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{said}");
    assert!(said.contains("chunk requests before start 0"), "{said}");
    listener.close().await;
    seed.stop().await;
}
