//! A seed facing strangers: a hostile client on its own QUIC endpoint
//! (quinn and the protocol crate, able to send anything) attacks a live
//! node while an honest listener fetches beside it. Each test bounds what
//! the attack could make the seed hold or send, and fails on the code
//! before these limits.
//!
//! The attacker sits on 127.0.0.2, the honest listener on 127.0.0.1: two
//! addresses on this machine's loopback.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BufMut;
use chorus_protocol::message::{
    CatalogEntry, ManifestResponse, PeerExchange, PeerInfo, SearchResponse, Want, WhoHas,
    WhoHasReply,
};
use chorus_protocol::{Message, PeerId, TrackId};
use chorus_streamer::identity::Identity;
use chorus_streamer::node::{Node, NodeLimits};
use chorus_streamer::start::Pool;
use chorus_streamer::transport::Transport;
use common::*;

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

struct Target {
    node: Node,
    addr: SocketAddr,
    track: TrackId,
    _lib: tempfile::TempDir,
}

fn target(limits: NodeLimits) -> Target {
    let lib = library_dir(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let track = library.tracks().next().unwrap().manifest.id();
    let node = Node::bind(
        Arc::new(Identity::ephemeral().unwrap()),
        ([127, 0, 0, 1], 0).into(),
        library,
        limits,
    )
    .unwrap();
    let n = node.clone();
    tokio::spawn(async move { n.serve().await });
    let addr = node.transport().local_addr().unwrap();
    Target { node, addr, track, _lib: lib }
}

fn attacker() -> Transport {
    Transport::bind(
        Arc::new(Identity::ephemeral().unwrap()),
        (ATTACKER, 0).into(),
        None,
        &Default::default(),
    )
    .unwrap()
}

/// An honest listener fetches the whole track and checks every byte.
async fn honest_fetch(t: &Target) {
    let client = client();
    let peer = client.connect(t.addr, Some(t.node.transport().peer_id())).await.unwrap();
    let manifest = peer.manifest(t.track).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let n = peer.fetch_to_file(&manifest, &out.path().join("t.ogg"), &|_| {}).await.unwrap();
    assert_eq!(n, manifest.layout().byte_len());
    client.close().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Raw QUIC connections to the seed, no hello.
async fn raw_connections(from: &Transport, to: SocketAddr, n: usize) -> Vec<quinn::Connection> {
    let config = chorus_streamer::tls::client_config(
        &Identity::ephemeral().unwrap(),
        &Default::default(),
        std::sync::Arc::new(quinn::NoneTokenStore),
    )
    .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let connecting = from.endpoint().connect_with(config.clone(), to, "chorus").unwrap();
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(5), connecting).await {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_prefixes_without_bodies_make_the_seed_hold_nothing() {
    let t = target(NodeLimits::default());
    let a = attacker();
    let before = rss_kib();
    // 8 connections × 64 streams, each announcing a 4 MiB frame (and, on
    // half of them, one just under the request cap), then silence: 2 GiB
    // if the seed allocated what was announced.
    let conns = raw_connections(&a, t.addr, 8).await;
    assert_eq!(conns.len(), 8);
    let mut streams = Vec::new();
    for c in &conns {
        for i in 0..64u32 {
            let (mut send, recv) = c.open_bi().await.unwrap();
            let claim: u32 = if i % 2 == 0 { 4 << 20 } else { 120 << 10 };
            send.write_all(&claim.to_be_bytes()).await.unwrap();
            streams.push((send, recv));
        }
    }
    honest_fetch(&t).await;
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 100, "the seed grew by {grown_mib} MiB for 2 KB of attack");
    drop(streams);
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidirectional_streams_are_not_granted() {
    let t = target(NodeLimits::default());
    let a = attacker();
    let conns = raw_connections(&a, t.addr, 1).await;
    let opened = tokio::time::timeout(Duration::from_secs(1), conns[0].open_uni()).await;
    assert!(opened.is_err(), "the seed granted a unidirectional stream nobody reads");
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshakes_from_one_address_lock_nobody_else_out() {
    // No idle connection is given up while the flood runs (its deadline is
    // far off), so what the address holds at the end is what it was let in
    // with, however slow this machine is.
    let limits =
        NodeLimits { first_request_timeout: Duration::from_secs(3600), ..NodeLimits::default() };
    let per_ip = limits.max_connections_per_ip;
    let t = target(limits);
    let a = attacker();
    // 600 handshakes that never ask anything, from one address.
    let conns = raw_connections(&a, t.addr, 600).await;
    assert_eq!(conns.len(), per_ip, "connections held from one address");
    assert!(t.node.stats().refused.load(Relaxed) >= 600 - per_ip);
    honest_fetch(&t).await;
    drop(conns);
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshakes_are_given_up_at_their_deadline_and_free_their_slots() {
    let limits =
        NodeLimits { first_request_timeout: Duration::from_millis(300), ..NodeLimits::default() };
    let per_ip = limits.max_connections_per_ip;
    let t = target(limits);
    let a = attacker();
    let conns = raw_connections(&a, t.addr, per_ip).await;
    assert_eq!(conns.len(), per_ip);
    // Bounded wait: each is closed at its deadline, by the seed.
    for c in &conns {
        let closed = tokio::time::timeout(Duration::from_secs(30), c.closed()).await;
        assert!(closed.is_ok(), "an idle connection outlived its first-request deadline");
    }
    assert!(t.node.stats().idle_closed.load(Relaxed) >= per_ip);
    // The slots are free again: the same address is let in.
    let again = raw_connections(&a, t.addr, 1).await;
    assert_eq!(again.len(), 1, "the address stayed locked out after its idle ones were closed");
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_has_after_a_poisoned_peer_exchange_sends_nothing_to_strangers() {
    let t = target(NodeLimits::default());
    // The victim: an address (not the attacker's) it names as 256 peers.
    let victim = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 3], 0))).unwrap();
    victim.set_nonblocking(true).unwrap();
    let v = victim.local_addr().unwrap();
    let a = attacker();
    let peer = a.connect(t.addr, None).await.unwrap();
    let fakes: Vec<PeerInfo> = (0..256u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            PeerInfo { id: PeerId::from_bytes(id), addrs: vec![v] }
        })
        .collect();
    let answer = peer.exchange_peers(fakes).await.unwrap();
    assert!(answer.iter().all(|p| p.addrs != vec![v]), "heard addresses were passed on");
    // A second stranger, its id proven by its certificate, names the victim
    // as its own listening address in its hello.
    let liar = raw_connections(&attacker(), t.addr, 1).await.remove(0);
    let (mut send, mut recv) = liar.open_bi().await.unwrap();
    let hello = Message::Hello(chorus_protocol::message::Hello {
        min_version: 1,
        max_version: 1,
        peer_id: PeerId::from_bytes([7; 32]),
        listen_addrs: vec![v],
        agent: "liar".into(),
        observed: None,
        mapped: None,
        ticket: None,
    });
    send.write_all(&chorus_protocol::frame::encode(&hello).unwrap()).await.unwrap();
    send.finish().unwrap();
    assert!(chorus_streamer::wire::read_frame(&mut recv).await.unwrap().is_some());
    for _ in 0..64 {
        let found = peer.who_has(TrackId::from_bytes([9; 32]), 2).await.unwrap();
        assert!(found.is_empty());
    }
    // Anything the seed sent to the victim would be there by now: the
    // queries were answered.
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while victim.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 0, "the seed sent {got} packets to an address a stranger named");
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_peer_is_refused_on_accept_too() {
    let t = target(NodeLimits::default());
    let identity = Arc::new(Identity::ephemeral().unwrap());
    t.node.transport().ban(identity.peer_id());
    let a = Transport::bind(identity, (ATTACKER, 0).into(), None, &Default::default()).unwrap();
    let result = a.connect(t.addr, None).await;
    let err = result.expect_err("a banned peer got a hello");
    let code = match &err {
        // The refusal reaches the dialler while it reads or, as it sends
        // its hello, while it writes: the same close either way.
        chorus_streamer::Error::Read(quinn::ReadError::ConnectionLost(
            quinn::ConnectionError::ApplicationClosed(c),
        ))
        | chorus_streamer::Error::Write(quinn::WriteError::ConnectionLost(
            quinn::ConnectionError::ApplicationClosed(c),
        ))
        | chorus_streamer::Error::Connection(quinn::ConnectionError::ApplicationClosed(c)) => {
            Some(c.error_code)
        }
        _ => None,
    };
    assert_eq!(code, Some(chorus_streamer::close::Closed::Banned.code()), "{err:?}");
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_silent_requests_get_an_error_or_a_deadline() {
    let t =
        target(NodeLimits { request_timeout: Duration::from_millis(300), ..Default::default() });
    let a = attacker();
    let conns = raw_connections(&a, t.addr, 1).await;
    // A request frame over the request cap: refused at once with an error.
    let (mut send, mut recv) = conns[0].open_bi().await.unwrap();
    let mut frame = Vec::new();
    frame.put_u32(200 << 10);
    send.write_all(&frame).await.unwrap();
    let reply = chorus_streamer::wire::read_frame(&mut recv).await.unwrap().unwrap();
    assert!(matches!(reply.message, Message::Error(_)), "{:?}", reply.message);
    // A WhoHas with its body cut short, then silence: the stream ends at
    // the request deadline.
    let (mut send, mut recv) = conns[0].open_bi().await.unwrap();
    let whole = chorus_protocol::frame::encode(&Message::WhoHas(WhoHas {
        query_id: 1,
        track: TrackId::from_bytes([1; 32]),
        hops_left: 0,
    }))
    .unwrap();
    send.write_all(&whole[..whole.len() - 3]).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 20)).await;
    assert!(ended.is_ok(), "the seed held a silent request past its deadline");
    t.node.shutdown().await;
}

/// A stranger's QUIC server on 127.0.0.2, with an identity of its own:
/// `serve` gets its id, the first message of each stream a peer opens,
/// and the stream, and answers as it likes.
async fn stranger<F, Fut>(serve: F) -> (SocketAddr, PeerId)
where
    F: Fn(PeerId, Message, quinn::SendStream, quinn::RecvStream) -> Fut,
    F: Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let identity = Identity::ephemeral().unwrap();
    let id = identity.peer_id();
    let config = chorus_streamer::tls::server_config(&identity, &Default::default()).unwrap();
    let endpoint = quinn::Endpoint::server(config, SocketAddr::from((ATTACKER, 0))).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let serve = serve.clone();
            tokio::spawn(async move {
                while let Ok((send, mut recv)) = conn.accept_bi().await {
                    let Ok(Some(f)) = chorus_streamer::wire::read_frame(&mut recv).await else {
                        continue;
                    };
                    serve(id, f.message, send, recv).await;
                }
            });
        }
    });
    (addr, id)
}

/// A hostile server: answers hellos, answers every start request with
/// `entry` (a name it makes up) and the manifest of another track, and
/// every who-has with `fakes`.
async fn lying_server(
    entry: CatalogEntry,
    manifest: chorus_protocol::Manifest,
    fakes: Vec<PeerInfo>,
) -> (SocketAddr, PeerId) {
    stranger(move |id, message, mut send, _recv| {
        let (entry, manifest, fakes) = (entry.clone(), manifest.clone(), fakes.clone());
        async move {
            let replies = match message {
                Message::Hello(mut h) => {
                    h.peer_id = id;
                    vec![Message::Hello(h)]
                }
                Message::StartRequest(_) => vec![
                    Message::SearchResponse(SearchResponse { results: vec![entry] }),
                    Message::ManifestResponse(ManifestResponse {
                        track: manifest.id(),
                        manifest: manifest.encoded().clone(),
                        origin: true,
                    }),
                ],
                Message::PeerExchange(_) => {
                    vec![Message::PeerExchange(PeerExchange { peers: fakes })]
                }
                Message::WhoHas(q) => vec![Message::WhoHasReply(WhoHasReply {
                    query_id: q.query_id,
                    track: q.track,
                    peers: fakes,
                })],
                _ => vec![],
            };
            for m in replies {
                let _ = chorus_streamer::wire::write_message(&mut send, &m).await;
            }
            let _ = send.finish();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_named_like_the_query_by_a_liar_is_not_played_under_that_name() {
    // The honest seed holds "Inevitable"; the liar serves "Apex Aleph" but
    // lists it as "Inevitable".
    let lib = library_dir(&["inevitable.mp3"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let honest = Seed::start(library);
    let other = library_dir(&["apex-aleph.ogg"]);
    let (apex, _, _) = scan(other.path(), data.path());
    let apex = apex.tracks().next().unwrap().manifest.clone();
    let mut entry = chorus_streamer::library::catalog_entry(&apex, "inevitable.mp3".into());
    entry.tags.title = Some("Inevitable".into());
    let (liar, liar_id) = lying_server(entry, apex.clone(), vec![]).await;

    let want = Want::Query("inevitable".into());
    let listener = client();
    // The liar alone: refused, not played.
    let alone = Pool::dial(&listener, &[(liar, Some(liar_id))]);
    let refused = alone.start(&want, Duration::ZERO).await;
    assert!(refused.is_err(), "a made-up name was believed");
    // The liar and the honest seed: the start ends up with the real track.
    let both = Pool::dial(&listener, &[(liar, Some(liar_id)), (honest.addr, Some(honest.id))]);
    let started = both.start(&want, Duration::ZERO).await.unwrap();
    assert_eq!(started.answer.manifest.tags().title.as_deref(), Some("Inevitable"));
    assert_ne!(started.answer.manifest.id(), apex.id());
    honest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_naming_256_dead_holders_neither_stalls_playback_nor_gets_them_dialled() {
    let (honest, dead, (said, ok)) =
        beside_a_liar(&["-q", "play", "inevitable", "--out", "null", "--duration", "1"]).await;
    assert!(ok, "{said}");
    assert!(said.contains("played 0:01"), "{said}");
    // The listener did act on what it heard (so the bound is what this
    // measures), but dialled a bounded few.
    let dialled = reached(&dead);
    assert!((1..=8).contains(&dialled), "{dialled} of 256 announced holders were dialled");
    honest.stop().await;
}

/// Runs `chorus ARGS --peer SEED --peer LIAR`: an honest seed holding
/// "Inevitable", and a liar that serves its manifest (no chunks) and tells
/// of 256 dead peers. Returns the seed, the dead peers' sockets, and what
/// the run said and whether it succeeded.
async fn beside_a_liar(args: &[&str]) -> (Seed, Vec<UdpSocket>, (String, bool)) {
    let lib = library_dir(&["inevitable.mp3"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let entry = chorus_streamer::library::catalog_entry(&manifest, "inevitable.mp3".into());
    let honest = Seed::start(library);
    let (dead, fakes) = dead_peers();
    let (liar, liar_id) = lying_server(entry, manifest, fakes).await;
    let client_dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.arg("--data-dir").arg(client_dir.path()).args(args).env_remove("CHORUS_LOG");
    command.env("CHORUS_LAN", "off").env("CHORUS_PORT_MAP", "off");
    command.args(["--peer", &format!("{}@{}", honest.id, honest.addr)]);
    command.args(["--peer", &format!("{liar_id}@{liar}")]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (honest, dead, (said, out.status.success()))
}

/// 256 peers that do not exist: sockets of ours that never answer, each
/// able to tell whether anything reached it.
fn dead_peers() -> (Vec<UdpSocket>, Vec<PeerInfo>) {
    let dead: Vec<UdpSocket> =
        (0..256).map(|_| UdpSocket::bind(SocketAddr::from(([127, 0, 0, 4], 0))).unwrap()).collect();
    let fakes = dead
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut id = [0xd0u8; 32];
            id[..4].copy_from_slice(&(i as u32).to_be_bytes());
            PeerInfo { id: PeerId::from_bytes(id), addrs: vec![s.local_addr().unwrap()] }
        })
        .collect();
    (dead, fakes)
}

/// How many of the dead peers were sent anything.
fn reached(dead: &[UdpSocket]) -> usize {
    let mut buf = [0u8; 2048];
    dead.iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            s.recv(&mut buf).is_ok()
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_telling_of_256_dead_peers_neither_stalls_search_nor_gets_them_dialled() {
    let (honest, dead, (said, ok)) = beside_a_liar(&["search", "inevitable"]).await;
    assert!(ok, "{said}");
    assert!(said.contains("Inevitable"), "{said}");
    let dialled = reached(&dead);
    assert!((1..=8).contains(&dialled), "{dialled} of 256 peers heard of were dialled");
    honest.stop().await;
}

/// Sends `msg` on a new stream of `conn` and reads the one reply.
async fn ask(conn: &quinn::Connection, msg: &Message) -> Message {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&chorus_protocol::frame::encode(msg).unwrap()).await.unwrap();
    send.finish().unwrap();
    chorus_streamer::wire::read_frame(&mut recv).await.unwrap().unwrap().message
}

fn error_code(m: &Message) -> Option<chorus_protocol::message::ErrorCode> {
    match m {
        Message::Error(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introductions_reflect_nothing_and_relays_stay_bounded() {
    use chorus_protocol::message::{Connect, ErrorCode, Rendezvous};
    let t = target(NodeLimits::default());
    let victim = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 3], 0))).unwrap();
    victim.set_nonblocking(true).unwrap();
    let v = victim.local_addr().unwrap();
    let a = attacker();
    let asker = a.connect(t.addr, None).await.unwrap();

    // A rendezvous from a peer the seed did not dial is refused: it sends
    // nothing to the address named (no reflection).
    for _ in 0..32 {
        let r = Rendezvous { peer: PeerId::from_bytes([1; 32]), addr: v, relay: None };
        let reply = ask(asker.connection(), &Message::Rendezvous(r)).await;
        assert_eq!(error_code(&reply), Some(ErrorCode::Refused), "{reply:?}");
    }
    // An introduction to a peer the seed is not connected to: none made.
    let c = Connect { target: PeerId::from_bytes([2; 32]), relay: true };
    let reply = ask(asker.connection(), &Message::Connect(c)).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::Unreachable), "{reply:?}");
    assert_eq!(t.node.relays().opened.load(Relaxed), 0);

    // An accomplice connected to the seed that never comes to the relay:
    // the relay opened for it is closed at once.
    let silent_t = attacker();
    let silent = silent_t.connect(t.addr, None).await.unwrap();
    let c = Connect { target: silent_t.peer_id(), relay: true };
    let reply = ask(asker.connection(), &Message::Connect(c)).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::Unreachable), "{reply:?}");
    assert_eq!(t.node.relays().opened.load(Relaxed), 1);
    for _ in 0..200 {
        if t.node.relays().open_now() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(t.node.relays().open_now(), 0, "an unused relay kept its slot");
    drop(silent);

    // An accomplice that does come: relays for one asker address are capped.
    let accomplice_t = attacker();
    let accomplice = accomplice_t.connect(t.addr, None).await.unwrap();
    let conn = accomplice.connection().clone();
    let (seed_ip, acc) = (t.addr.ip(), accomplice_t.clone());
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let Ok(Some(f)) = chorus_streamer::wire::read_frame(&mut recv).await else { continue };
            if let Message::Rendezvous(r) = f.message {
                chorus_streamer::nat::act_on(&acc, seed_ip, &r).await;
                let echo = chorus_protocol::frame::encode(&Message::Rendezvous(r)).unwrap();
                let _ = send.write_all(&echo).await;
                let _ = send.finish();
            }
        }
    });
    let mut granted = 0;
    for _ in 0..6 {
        let c = Connect { target: accomplice_t.peer_id(), relay: true };
        match ask(asker.connection(), &Message::Connect(c)).await {
            Message::Rendezvous(r) => {
                assert!(r.relay.is_some() && r.addr.ip().is_unspecified());
                granted += 1;
            }
            other => assert_eq!(error_code(&other), Some(ErrorCode::Busy), "{other:?}"),
        }
    }
    assert_eq!(granted, 2, "relays for one asker address");
    assert_eq!(t.node.relays().open_now(), 2);
    // Nothing of all this reached the victim.
    let mut buf = [0u8; 2048];
    assert!(victim.recv(&mut buf).is_err(), "the seed sent packets to a named address");
    // The honest listener is served meanwhile.
    honest_fetch(&t).await;
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sealed_starts_get_a_refusal_and_no_audio() {
    use chorus_protocol::message::{StartRequest, Ticket};
    let t = target(NodeLimits::default());
    let a = attacker();
    let config = chorus_streamer::tls::client_config(
        &Identity::ephemeral().unwrap(),
        &Default::default(),
        std::sync::Arc::new(quinn::NoneTokenStore),
    )
    .unwrap();
    // A ticket the seed never gave (a good expiry, a made-up key), and
    // names in the sealed form that are not sealed requests at all.
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let mut id = [7u8; 16];
    id[..4].copy_from_slice(&(expiry.as_secs() as u32 + 3600).to_be_bytes());
    let forged = Ticket { id, key: [9; 32] };
    let request = StartRequest { want: Want::Track(t.track), at_ms: 0, budget: 1 << 20 };
    let names = [
        chorus_streamer::resume::seal(&forged, &request).unwrap(),
        "aaaaaaaa.start.chorus".to_owned(),
        format!("{}.start.chorus", "7".repeat(63)),
    ];
    for name in &names {
        let connecting = a.endpoint().connect_with(config.clone(), t.addr, name).unwrap();
        let conn = connecting.await.unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        let frame = chorus_streamer::wire::read_frame(&mut recv).await.unwrap().unwrap();
        assert_eq!(
            error_code(&frame.message),
            Some(chorus_protocol::message::ErrorCode::Refused),
            "{name}: {:?}",
            frame.message.kind()
        );
        assert!(chorus_streamer::wire::read_frame(&mut recv).await.unwrap().is_none());
    }
    let stats = t.node.stats();
    assert_eq!(stats.sealed_refused.load(Relaxed), names.len());
    assert_eq!((stats.sealed_starts.load(Relaxed), stats.chunks_served.load(Relaxed)), (0, 0));
    honest_fetch(&t).await;
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_start_whose_handshake_never_completes_is_closed_at_the_deadline() {
    // A start sealed in a handshake is answered before the handshake
    // completes. A client that goes silent after its first packet (here a
    // relay that swallows everything once the seed answers) must not keep
    // that answer, and its connection, until the 30 s idle timeout.
    let limits = NodeLimits { handshake_timeout: Duration::from_millis(500), ..Default::default() };
    let t = target(limits);
    let seed = t.node.transport().peer_id();
    let listener = client();
    // A first, complete connection: the seed's hello gives a ticket.
    let peer = listener.connect(t.addr, Some(seed)).await.unwrap();
    peer.connection().close(0u32.into(), b"done");
    let endpoint = t.node.transport().endpoint().clone();
    let settled = |want: usize| {
        let e = endpoint.clone();
        async move {
            for _ in 0..400 {
                if e.open_connections() == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        }
    };
    assert!(settled(0).await, "the first connection did not close");
    let relay = UdpRelay::start_with_cutoff(t.addr, 100_000_000, 1).await;
    let want = Want::Track(t.track);
    let _pool =
        Pool::dial_asking(&listener, &[(relay.addr, Some(seed))], Some((&want, Duration::ZERO)));
    let stats = t.node.stats();
    for _ in 0..400 {
        if stats.sealed_starts.load(Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stats.sealed_starts.load(Relaxed), 1, "the sealed start was not answered");
    assert!(relay.is_blackholed());
    // Closed at the handshake deadline (0.5 s), then drained: gone well
    // before the idle timeout.
    assert!(settled(0).await, "the half-open connection outlived its handshake deadline");
    assert!(stats.idle_closed.load(Relaxed) >= 1);
    honest_fetch(&t).await;
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_at_its_limit_from_an_address_is_said_to_be_so() {
    let limits = NodeLimits { max_connections_per_ip: 1, ..NodeLimits::default() };
    let t = target(limits);
    let a = attacker();
    // One connection from the address holds its one place (a process
    // killed without closing does the same until the idle timeout).
    let held = raw_connections(&a, t.addr, 1).await;
    assert_eq!(held.len(), 1);
    let second = a.connect(t.addr, Some(t.node.transport().peer_id())).await;
    let Err(err) = second else { panic!("a second connection from the address got in") };
    let err = err.to_string();
    assert!(err.contains("at its limit of connections"), "{err}");
    assert_eq!(t.node.stats().refused.load(Relaxed), 1);
    // Another address is not held back.
    honest_fetch(&t).await;
    t.node.shutdown().await;
}

/// A stranger that completes handshakes at once, answers hellos, and sits
/// on every start request it gets (counted in `starts`), its stream open.
async fn silent_server(starts: Arc<std::sync::atomic::AtomicUsize>) -> (SocketAddr, PeerId) {
    stranger(move |id, message, mut send, recv| {
        let starts = starts.clone();
        async move {
            match message {
                Message::Hello(mut h) => {
                    h.peer_id = id;
                    let _ =
                        chorus_streamer::wire::write_message(&mut send, &Message::Hello(h)).await;
                    let _ = send.finish();
                }
                Message::StartRequest(_) => {
                    starts.fetch_add(1, Relaxed);
                    // Held open, unanswered, until the asker stops it.
                    tokio::spawn(async move {
                        let _ = send.stopped().await;
                        drop(recv);
                    });
                }
                _ => {}
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sitting_on_a_start_holds_the_first_note_back_only_until_the_hedge() {
    // The stranger is on loopback and answers its hello at once: it is
    // asked first. The honest seed sends with 300 ms of delay (a slow
    // link), so its handshake completes well after. Without the hedge the
    // start waited for the stranger's request to time out (10 s), then
    // asked the next peer; each such stranger in the pool added as much.
    let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (silent, silent_id) = silent_server(starts.clone()).await;
    let slow = chorus_streamer::netem::LinkProfile {
        name: "slow",
        rtt: Duration::from_millis(600),
        jitter: Duration::ZERO,
        loss: 0.0,
        burst: 1.0,
        rate: None,
    };
    let (honest, _, _lib) = seed_and_listener(&["inevitable.mp3"], Some((slow, 1)));
    let track = honest.with_library(|l| l.tracks().next().map(|t| t.manifest.id())).flatten();
    let want = Want::Track(track.unwrap());
    let listener = client();
    let honest_addr = honest.transport().local_addr().unwrap();
    let pool = Pool::dial(
        &listener,
        &[(silent, Some(silent_id)), (honest_addr, Some(honest.transport().peer_id()))],
    );
    let started = pool.start(&want, Duration::ZERO).await.unwrap();
    let steps: Vec<&str> = started.timeline.steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(starts.load(Relaxed), 1, "the stranger was not asked first: {steps:?}");
    assert_eq!(started.source.peer.id(), honest.transport().peer_id());
    assert!(steps.contains(&"start hedged: another peer asked"), "{steps:?}");
    assert!(!steps.contains(&"start refused"), "{steps:?}");
    honest.shutdown().await;
}
