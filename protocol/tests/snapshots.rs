//! Hex snapshots of the wire format: a change to any of these bytes is a
#![allow(clippy::unwrap_used, clippy::single_range_in_vec_init)]
//! protocol change and must come with a version bump.

use std::net::SocketAddr;

use bytes::Bytes;
use chorus_protocol::frame;
use chorus_protocol::message::*;
use chorus_protocol::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn snapshot(msg: &Message, expected: &str) {
    let wire = frame::encode(msg).unwrap();
    let expected: String = expected.split_whitespace().collect();
    assert_eq!(hex(&wire), expected, "wire format drifted for {:?}", msg.kind());
    assert_eq!(&frame::decode(&wire).unwrap().message, msg);
}

#[test]
fn hello() {
    let addr: SocketAddr = "127.0.0.1:7878".parse().unwrap();
    snapshot(
        &Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            peer_id: PeerId::from_bytes([0x11; 32]),
            listen_addrs: vec![addr],
            agent: "chorus/0.1".into(),
            observed: None,
            mapped: None,
            ticket: None,
        }),
        "00000037 04 01
         01 01
         1111111111111111111111111111111111111111111111111111111111111111
         01 04 7f000001 1ec6
         0a 63686f7275732f302e31",
    );
}

#[test]
fn chunk_request() {
    snapshot(
        &Message::ChunkRequest(ChunkRequest {
            track: TrackId::from_bytes([0x22; 32]),
            first: ChunkIndex(300),
            count: 4,
            deadline_ms: 250,
        }),
        "00000027 04 06
         2222222222222222222222222222222222222222222222222222222222222222
         ac02 04 fa01",
    );
}

#[test]
fn chunk_data() {
    snapshot(
        &Message::ChunkData(ChunkData {
            track: TrackId::from_bytes([0x33; 32]),
            index: ChunkIndex(1),
            path: PathReport { sent: 300, lost: 2 },
            groups: Bytes::new(),
            data: Bytes::from_static(b"abc"),
        }),
        "0000002b 04 07
         3333333333333333333333333333333333333333333333333333333333333333
         01 ac02 02 00 03 616263",
    );
}

#[test]
fn start_requests() {
    snapshot(
        &Message::StartRequest(StartRequest {
            want: Want::Query("ab".into()),
            at_ms: 300,
            budget: 49_152,
        }),
        "0000000b 04 0d 01 02 6162 ac02 808003",
    );
    snapshot(
        &Message::StartRequest(StartRequest {
            want: Want::Track(TrackId::from_bytes([0x44; 32])),
            at_ms: 0,
            budget: 1,
        }),
        "00000025 04 0d 00
         4444444444444444444444444444444444444444444444444444444444444444
         00 01",
    );
}

#[test]
fn error_reply() {
    snapshot(
        &Message::Error(ErrorReply { code: ErrorCode::UnknownTrack, message: "no".into() }),
        "00000006 04 7f 02 02 6e6f",
    );
}

#[test]
fn manifest_encoding() {
    let data = Bytes::from_static(&[0u8; 1500]);
    // Cut where the audio begins (the time index's point at byte 10).
    let layout = ChunkLayout::aligned(1500, ChunkSize::new(1024).unwrap(), 10).unwrap();
    let (hashes, _) = chunk::chunk_bytes(&data, &layout).unwrap();
    assert_eq!(hashes.len(), 3, "0..10, 10..1034, 1034..1500");
    let media = MediaInfo {
        codec: Codec::Mp3,
        container: Container::Mpeg,
        sample_rate: 44_100,
        channels: 2,
        frames: 1152,
        header_ranges: vec![0..10],
        time_index: vec![TimePoint { byte_offset: 10, time_us: 0 }],
        tags: Tags { title: Some("T".into()), track_number: Some(3), ..Tags::default() },
    };
    let m = Manifest::new(media.clone(), layout, hashes.clone()).unwrap();
    // One page of the hash list: its hashes, then its time index points
    // (none: the track's one point is the manifest's); its hash keyed for
    // pages.
    let list = [*hashes[0].as_bytes(), *hashes[1].as_bytes(), *hashes[2].as_bytes()].concat();
    let page_bytes = [&list[..], &[0]].concat();
    let page = blake3::Hasher::new_derive_key("chorus 2026-11-26 hash list page")
        .update(&page_bytes)
        .finalize();
    let expected = format!(
        "4348 4d46 05 01 01 c4d802 02 8009 dc0b 8008 0a 00 {} 01 000a 01 0a00 0101 54 00 00 00 0103 00 00 00 00 00 00",
        hex(page.as_bytes()),
    );
    let expected: String = expected.split_whitespace().collect();
    assert_eq!(hex(m.encoded()), expected);
    assert_eq!(m.id(), TrackId::of_manifest_bytes(m.encoded()));
    assert_eq!(m.hash_pages(0..1).unwrap().as_ref(), &page_bytes[..]);

    // The same track as a version-3 manifest (written before the index was
    // split, its page the hashes alone) is still read, with its id.
    let page =
        blake3::Hasher::new_derive_key("chorus 2026-11-26 hash list page").update(&list).finalize();
    let v3 = format!(
        "4348 4d46 03 01 01 c4d802 02 8009 dc0b 8008 0a {} 01 000a 01 0a00 0101 54 00 00 00 0103 00 00 00 00 00 00",
        hex(page.as_bytes()),
    );
    let v3: Vec<u8> = (0..v3.split_whitespace().collect::<String>().len() / 2)
        .map(|i| {
            let s: String = v3.split_whitespace().collect();
            u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    let old = Manifest::decode_verified(Bytes::from(v3.clone()), TrackId::of_manifest_bytes(&v3))
        .unwrap();
    assert_eq!(old.encoded().as_ref(), &v3[..]);
    assert_eq!(old.media(), &media);
    old.learn_hashes(0, &list).unwrap();
    assert_eq!(old.hash_pages(0..1).unwrap().as_ref(), &list[..]);
    assert!(old.verify_chunk(ChunkIndex(1), &data[10..1034]).is_ok());
}

#[test]
fn tail_request() {
    snapshot(
        &Message::TailRequest(TailRequest {
            track: TrackId::from_bytes([0x22; 32]),
            index: ChunkIndex(300),
            from: 8192,
            deadline_ms: 0,
        }),
        "00000027 04 11
         2222222222222222222222222222222222222222222222222222222222222222
         ac02 8040 00",
    );
}

#[test]
fn hashes() {
    snapshot(
        &Message::Hashes(Hashes {
            track: TrackId::from_bytes([0x22; 32]),
            first_page: 1,
            data: Bytes::from_static(&[0x33; 32]),
        }),
        "00000044 04 10
         2222222222222222222222222222222222222222222222222222222222222222
         01 20
         3333333333333333333333333333333333333333333333333333333333333333",
    );
}
