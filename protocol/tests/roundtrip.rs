//! Round-trips, robustness against arbitrary bytes, and typed errors.
#![allow(clippy::unwrap_used, clippy::single_range_in_vec_init)]

mod strategies;

use bytes::{BufMut, Bytes, BytesMut};
use chorus_protocol::frame::{self, FrameDecoder};
use chorus_protocol::message::*;
use chorus_protocol::*;
use proptest::prelude::*;
use strategies::*;

proptest! {
    #[test]
    fn every_message_round_trips(msg in message()) {
        let bytes = frame::encode(&msg).unwrap();
        prop_assert_eq!(bytes.len(), frame::HEADER_LEN + msg.encoded_len());
        let back = frame::decode(&bytes).unwrap();
        prop_assert_eq!(back.version, frame::VERSION);
        prop_assert_eq!(back.message, msg);
    }

    #[test]
    fn frames_stream_through_the_incremental_decoder(
        msgs in proptest::collection::vec(message(), 1..6),
        split in 1usize..64,
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            frame::encode_into(m, &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(split) {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f.message);
            }
        }
        dec.finish(&buf).unwrap();
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn manifest_round_trips_and_verifies((m, data) in manifest()) {
        let back = Manifest::decode_verified(m.encoded().clone(), m.id()).unwrap();
        prop_assert_eq!(&back, &m);
        for i in m.layout().indices() {
            let r = m.layout().byte_range(i);
            prop_assert!(m.verify_chunk(i, &data[r.start as usize..r.end as usize]).is_ok());
        }
        // A decoded manifest checks no chunk before it learns the page of
        // the hash list that holds its hash; a page with a flipped byte is
        // refused; its clones share what it learns.
        let first = chorus_protocol::ChunkIndex(0);
        let chunk0 = &data[..m.layout().byte_range(first).end as usize];
        let unknown = matches!(back.verify_chunk(first, chunk0), Err(ProtocolError::HashUnknown { .. }));
        prop_assert!(unknown);
        let clone = back.clone();
        for page in 0..m.page_count() {
            let mut list = m.hash_pages(page..page + 1).unwrap().to_vec();
            list[0] ^= 1;
            let refused = back.learn_hashes(page, &list);
            let mismatch = matches!(refused, Err(ProtocolError::HashPageMismatch { .. }));
            prop_assert!(mismatch, "{:?}", refused);
            list[0] ^= 1;
            back.learn_hashes(page, &list).unwrap();
        }
        prop_assert!(clone.hashes_known());
        // The list as learned page by page is the list it was built with.
        let n = m.page_count();
        prop_assert_eq!(clone.hash_pages(0..n), m.hash_pages(0..n));
        prop_assert_eq!(clone.hash_pages(n / 2..n), m.hash_pages(n / 2..n));
        prop_assert!(clone.verify_chunk(first, chunk0).is_ok());
        // Deadlines never fall as the file goes on, outside header chunks.
        let mut last = std::time::Duration::ZERO;
        for i in m.layout().indices() {
            let t = m.chunk_media_time(i);
            let in_header = m.media().header_ranges.iter().any(|h| {
                let r = m.layout().byte_range(i);
                h.start < r.end && r.start < h.end
            });
            if !in_header {
                prop_assert!(t >= last, "chunk {} at {:?} before {:?}", i, t, last);
                last = t;
            }
        }
    }

    #[test]
    fn a_flipped_manifest_byte_is_rejected((m, _) in manifest(), pos in any::<prop::sample::Index>()) {
        let mut bytes = m.encoded().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= 0x01;
        prop_assert!(Manifest::decode_verified(Bytes::from(bytes), m.id()).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let b = Bytes::from(bytes.clone());
        let _ = frame::decode(&b);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut dec = FrameDecoder::new();
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
        let _ = Manifest::decode(b);
    }

    #[test]
    fn arbitrary_payloads_never_panic_any_message_decoder(
        kind in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut wire = BytesMut::new();
        wire.put_u32(payload.len() as u32 + 2);
        wire.put_u8(frame::VERSION);
        wire.put_u8(kind);
        wire.put_slice(&payload);
        if let Ok(f) = frame::decode(&wire.freeze()) {
            // Whatever decodes must re-encode to something that decodes the same.
            let again = frame::decode(&frame::encode(&f.message).unwrap()).unwrap();
            prop_assert_eq!(again.message, f.message);
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(msg in message(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = frame::encode(&msg).unwrap().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let _ = frame::decode(&Bytes::from(bytes));
    }
}

fn hello() -> Message {
    Message::Hello(Hello {
        min_version: 1,
        max_version: 1,
        peer_id: PeerId::from_bytes([7; 32]),
        listen_addrs: vec![],
        agent: String::new(),
        observed: None,
        mapped: None,
        ticket: None,
    })
}

#[test]
fn oversized_frame_is_a_typed_error_before_the_body_arrives() {
    let mut buf = BytesMut::new();
    buf.put_u32(limits::MAX_FRAME_LEN + 1);
    let mut dec = FrameDecoder::new();
    assert_eq!(
        dec.decode(&mut buf),
        Err(ProtocolError::FrameTooLarge {
            len: u64::from(limits::MAX_FRAME_LEN) + 1,
            max: limits::MAX_FRAME_LEN
        })
    );
    // And the encoder refuses to make one.
    let huge = Message::ManifestResponse(ManifestResponse {
        track: TrackId::from_bytes([0; 32]),
        manifest: Bytes::from(vec![0u8; limits::MAX_FRAME_LEN as usize]),
        origin: true,
    });
    assert!(matches!(frame::encode(&huge), Err(ProtocolError::FrameTooLarge { .. })));
}

#[test]
fn truncated_frame_is_a_typed_error() {
    let bytes = frame::encode(&hello()).unwrap();
    for cut in 0..bytes.len() {
        assert_eq!(frame::decode(&bytes.slice(..cut)), Err(ProtocolError::Truncated), "cut {cut}");
    }
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert_eq!(dec.finish(&buf), Err(ProtocolError::Truncated));
    // A frame whose declared length is shorter than its payload needs.
    let mut short = BytesMut::new();
    short.put_u32(2 + 10);
    short.put_u8(frame::VERSION);
    short.put_u8(MessageKind::ManifestRequest as u8);
    short.put_slice(&[0; 10]);
    assert_eq!(frame::decode(&short.freeze()), Err(ProtocolError::Truncated));
}

#[test]
fn unknown_message_type_is_a_typed_error() {
    let mut buf = BytesMut::new();
    buf.put_u32(2);
    buf.put_u8(frame::VERSION);
    buf.put_u8(0x42);
    assert_eq!(frame::decode(&buf.freeze()), Err(ProtocolError::UnknownMessageType(0x42)));
}

#[test]
fn future_version_is_a_typed_error() {
    let mut bytes = frame::encode(&hello()).unwrap().to_vec();
    bytes[4] = frame::VERSION + 1;
    assert_eq!(
        frame::decode(&Bytes::from(bytes)),
        Err(ProtocolError::UnsupportedVersion {
            version: frame::VERSION + 1,
            min: frame::MIN_VERSION,
            max: frame::VERSION
        })
    );
    // A future manifest version too.
    let (m, _) = small_manifest();
    let mut bytes = m.encoded().to_vec();
    bytes[4] = manifest::MANIFEST_VERSION + 1;
    assert!(matches!(
        Manifest::decode(Bytes::from(bytes)),
        Err(ProtocolError::UnsupportedVersion { .. })
    ));
}

#[test]
fn trailing_bytes_are_a_typed_error() {
    let msg = Message::ManifestRequest(ManifestRequest { track: TrackId::from_bytes([1; 32]) });
    let mut bytes = frame::encode(&msg).unwrap().to_vec();
    bytes.push(0);
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) + 1;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(frame::decode(&Bytes::from(bytes)), Err(ProtocolError::TrailingBytes(1)));
}

#[test]
fn version_negotiation_picks_the_highest_common_version() {
    let h = |min, max| Hello {
        min_version: min,
        max_version: max,
        peer_id: PeerId::from_bytes([0; 32]),
        listen_addrs: vec![],
        agent: String::new(),
        observed: None,
        mapped: None,
        ticket: None,
    };
    assert_eq!(h(1, 3).negotiate(1, 2), Some(2));
    assert_eq!(h(1, 1).negotiate(1, 4), Some(1));
    assert_eq!(h(3, 4).negotiate(1, 2), None);
    assert_eq!(h(1, 2).negotiate(3, 4), None);
}

#[test]
fn chunk_data_header_plus_data_equals_the_full_frame() {
    let track = TrackId::from_bytes([9; 32]);
    let data = Bytes::from(vec![0xaa; 3000]);
    let groups = Bytes::from(vec![0x11; 64]);
    let path = PathReport { sent: 1_000_000, lost: 17 };
    let header = frame::chunk_data_header(track, ChunkIndex(5), path, &groups, data.len()).unwrap();
    let mut joined = header.to_vec();
    joined.extend_from_slice(&data);
    let msg = ChunkData { track, index: ChunkIndex(5), path, groups: groups.clone(), data };
    let full = frame::encode(&Message::ChunkData(msg)).unwrap();
    assert_eq!(joined, full.to_vec());
}

#[test]
fn a_chunk_head_reads_from_any_prefix_of_the_body_and_only_when_whole() {
    let track = TrackId::from_bytes([9; 32]);
    let data = Bytes::from(vec![0xaa; 9000]);
    let groups = Bytes::from(vec![0x11; 96]);
    let path = PathReport { sent: 200, lost: 1 };
    let msg = ChunkData { track, index: ChunkIndex(300), path, groups: groups.clone(), data };
    let wire = frame::encode(&Message::ChunkData(msg)).unwrap();
    let body = wire.slice(frame::LEN_PREFIX..);
    let head_len = 2 + 32 + 2 + 2 + 1 + 1 + 96 + 2;
    for cut in 0..head_len {
        assert_eq!(message::chunk_head(&body.slice(..cut), body.len()), Ok(None), "cut {cut}");
    }
    for cut in [head_len, head_len + 1, body.len()] {
        let head = message::chunk_head(&body.slice(..cut), body.len()).unwrap().unwrap();
        assert_eq!((head.index, head.data_len, head.head_len), (ChunkIndex(300), 9000, head_len));
        assert_eq!((head.track, head.groups.clone(), head.path), (track, groups.clone(), path));
    }
    // A body whose data length disagrees with the frame's is refused.
    assert!(message::chunk_head(&body, body.len() + 1).is_err());
    assert!(message::chunk_head(&body.slice(..head_len), head_len + 10).is_err());
    // Group values that are not whole are refused.
    let bad = ChunkData {
        track,
        index: ChunkIndex(1),
        path: PathReport::default(),
        groups: Bytes::from(vec![1; 33]),
        data: Bytes::new(),
    };
    let wire = frame::encode(&Message::ChunkData(bad)).unwrap();
    let body = wire.slice(frame::LEN_PREFIX..);
    assert!(message::chunk_head(&body, body.len()).is_err());
    assert!(frame::decode(&wire).is_err());
    // A report of more packets lost than sent is refused.
    let bad = ChunkData {
        track,
        index: ChunkIndex(1),
        path: PathReport { sent: 3, lost: 4 },
        groups: Bytes::new(),
        data: Bytes::new(),
    };
    let wire = frame::encode(&Message::ChunkData(bad)).unwrap();
    let body = wire.slice(frame::LEN_PREFIX..);
    assert!(message::chunk_head(&body, body.len()).is_err());
    assert!(frame::decode(&wire).is_err());
}

#[test]
fn decoded_chunk_data_is_a_zero_copy_slice() {
    let track = TrackId::from_bytes([9; 32]);
    let data = Bytes::from(vec![0x55; 4096]);
    let msg = ChunkData {
        track,
        index: ChunkIndex(0),
        path: PathReport::default(),
        groups: Bytes::new(),
        data,
    };
    let wire = frame::encode(&Message::ChunkData(msg)).unwrap();
    let f = frame::decode(&wire).unwrap();
    let Message::ChunkData(c) = f.message else { panic!("not chunk data") };
    let wire_range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    assert!(wire_range.contains(&(c.data.as_ptr() as usize)));
}

#[test]
fn have_runs_must_be_sorted_and_apart() {
    for runs in [
        vec![ChunkRun { start: 5, len: 2 }, ChunkRun { start: 6, len: 1 }],
        vec![ChunkRun { start: 0, len: 2 }, ChunkRun { start: 2, len: 1 }],
        vec![ChunkRun { start: 0, len: 0 }],
    ] {
        let wire =
            frame::encode(&Message::Have(Have { track: TrackId::from_bytes([0; 32]), runs }))
                .unwrap();
        assert!(matches!(frame::decode(&wire), Err(ProtocolError::Invalid(_))));
    }
}

fn small_manifest() -> (Manifest, Bytes) {
    let data = Bytes::from((0..40_000u32).map(|i| (i * 31) as u8).collect::<Vec<_>>());
    let layout = ChunkLayout::new(40_000, ChunkSize::DEFAULT).unwrap();
    let (hashes, _) = chunk::chunk_bytes(&data, &layout).unwrap();
    let media = MediaInfo {
        codec: Codec::Flac,
        container: Container::Flac,
        sample_rate: 44_100,
        channels: 2,
        frames: 441_000,
        header_ranges: vec![0..100],
        time_index: vec![
            TimePoint { byte_offset: 100, time_us: 0 },
            TimePoint { byte_offset: 20_000, time_us: 5_000_000 },
        ],
        tags: Tags { title: Some("Song".into()), ..Tags::default() },
    };
    (Manifest::new(media, layout, hashes).unwrap(), data)
}

/// A layout with a gap (a second cut) is read back the same, with the gap
/// and the lead side by side; manifests are written as version 5 with or
/// without one.
#[test]
fn a_manifest_with_a_gap_reads_back_with_it() {
    let (plain, data) = small_manifest();
    assert_eq!(plain.encoded()[4], 5);
    let layout = ChunkLayout::with_gap(40_000, ChunkSize::DEFAULT, 20, 80).unwrap();
    let (hashes, chunks) = chunk::chunk_bytes(&data, &layout).unwrap();
    assert_eq!((chunks[0].len(), chunks[1].len(), chunks[2].len()), (20, 80, 16_384));
    let gapped = Manifest::new(plain.media().clone(), layout, hashes).unwrap();
    let bytes = gapped.encoded().clone();
    assert_eq!(bytes[4], 5);
    let back = Manifest::decode(bytes.clone()).unwrap();
    assert_eq!((back.id(), *back.layout()), (gapped.id(), layout));
    assert_ne!(gapped.id(), plain.id());
    assert!(bytes.windows(2).any(|w| w == [20, 80]));
}

/// The time index of a long track, a point per chunk as a library makes
/// it, split: the manifest holds a page's first point (and the last), so
/// it grows by the page, not by the chunk.
fn paged_manifest(chunks: u32, steps: &[(u64, u64)]) -> (Manifest, Vec<TimePoint>) {
    let len = u64::from(chunks) * 1024;
    let data = Bytes::from((0..len).map(|i| (i * 7 + i / 1024) as u8).collect::<Vec<_>>());
    let layout = ChunkLayout::new(len, ChunkSize::new(1024).unwrap()).unwrap();
    let (hashes, _) = chunk::chunk_bytes(&data, &layout).unwrap();
    let mut points = Vec::new();
    let (mut off, mut t) = (0u64, 0u64);
    for &(d_off, d_t) in steps {
        off += d_off;
        t += d_t;
        if off >= len {
            break;
        }
        points.push(TimePoint { byte_offset: off, time_us: t });
    }
    let media = MediaInfo {
        codec: Codec::Flac,
        container: Container::Flac,
        sample_rate: 48_000,
        channels: 2,
        frames: 48 * (t / 1000 + 1000),
        header_ranges: vec![0..100],
        time_index: points.clone(),
        tags: Tags::default(),
    };
    (Manifest::new(media, layout, hashes).unwrap(), points)
}

/// The media time at `offset` from a whole index, as the manifest gave it
/// before the index was split.
fn time_from(points: &[TimePoint], m: &Manifest, offset: u64) -> u64 {
    let i = points.partition_point(|p| p.byte_offset <= offset);
    if i == 0 {
        return 0;
    }
    let a = points[i - 1];
    let end =
        TimePoint { byte_offset: m.layout().byte_len(), time_us: m.duration().as_micros() as u64 };
    let b = points.get(i).copied().unwrap_or(end);
    if b.byte_offset <= a.byte_offset || b.time_us <= a.time_us {
        return a.time_us;
    }
    let num = u128::from(offset - a.byte_offset) * u128::from(b.time_us - a.time_us);
    a.time_us + (num / u128::from(b.byte_offset - a.byte_offset)) as u64
}

proptest! {
    #[test]
    fn a_split_index_learned_page_by_page_is_the_whole_index(
        chunks in 1u32..400,
        steps in proptest::collection::vec((1u64..3000, 0u64..200_000), 0..600),
        order in any::<u64>(),
    ) {
        let (m, points) = paged_manifest(chunks, &steps);
        let pages = m.page_count() as usize;
        prop_assert!(m.media().time_index.len() <= pages + 1);
        prop_assert_eq!(&m.time_points(), &points);
        let back = Manifest::decode_verified(m.encoded().clone(), m.id()).unwrap();
        prop_assert_eq!(&back.time_points(), &m.media().time_index);
        // Pages learned in any order: times stay rising, and once all are
        // in, the index, every chunk's time and every seek's chunk are the
        // whole index's.
        let mut todo: Vec<u32> = (0..m.page_count()).collect();
        let mut seed = order;
        while !todo.is_empty() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let page = todo.swap_remove((seed >> 33) as usize % todo.len());
            back.learn_hashes(page, &m.hash_pages(page..page + 1).unwrap()).unwrap();
            let known = back.time_points();
            prop_assert!(known.windows(2).all(|w| w[0].byte_offset < w[1].byte_offset));
            // Meanwhile a seek reads from a point at or before the one the
            // whole index names (never after its target), and deadlines
            // rise through the track.
            for p in points.iter().step_by(7) {
                let t = std::time::Duration::from_micros(p.time_us);
                let whole = points.iter().rev().find(|q| q.time_us <= p.time_us).unwrap();
                let got = back.point_before(t).map(|q| q.byte_offset);
                prop_assert!(got.is_some_and(|o| o <= whole.byte_offset), "{:?} for {:?}", got, p);
            }
            let times: Vec<u64> =
                m.layout().indices().map(|i| back.time_at_offset(m.layout().byte_range(i).start)).collect();
            prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
        }
        prop_assert_eq!(&back.time_points(), &points);
        for i in m.layout().indices() {
            let at = m.layout().byte_range(i).start;
            prop_assert_eq!(back.time_at_offset(at), time_from(&points, &m, at));
            prop_assert_eq!(back.chunk_media_time(i), m.chunk_media_time(i));
        }
        for p in &points {
            for t in [p.time_us.saturating_sub(1), p.time_us, p.time_us + 1] {
                let t = std::time::Duration::from_micros(t);
                let whole = points.iter().rev().find(|q| q.time_us <= t.as_micros() as u64);
                prop_assert_eq!(back.point_before(t), whole.copied());
                prop_assert_eq!(back.chunk_at_time(t), m.chunk_at_time(t));
            }
        }
    }
}

/// A page whose hash the manifest holds, but whose points lie (beyond the
/// manifest's next point), or that claims more points than a page may
/// carry, is refused as it is learned, and nothing of it is kept.
#[test]
fn a_page_whose_points_lie_is_refused() {
    let steps = vec![(1024, 20_000); 300];
    let (m, _) = paged_manifest(200, &steps);
    assert_eq!(m.media().time_index.len(), 5, "a point per page, and the last");
    let page = m.hash_pages(1..2).unwrap();
    // The manifest with page 1's hash replaced by that of `bad`.
    let key = "chorus 2026-11-26 hash list page";
    let good_hash = blake3::Hasher::new_derive_key(key).update(&page).finalize();
    let liar = |bad: &[u8]| {
        let bad_hash = blake3::Hasher::new_derive_key(key).update(bad).finalize();
        let mut bytes = m.encoded().to_vec();
        let at = bytes.windows(32).position(|w| w == good_hash.as_bytes()).unwrap();
        bytes[at..at + 32].copy_from_slice(bad_hash.as_bytes());
        Manifest::decode(Bytes::from(bytes)).unwrap()
    };
    // Page 1's points follow its 64 hashes: a count, then (Δoffset,
    // Δtime) pairs of five bytes each (1024 and 20,000). Its last point is
    // moved past the manifest's next one (page 2's first).
    let mut bad = page.to_vec();
    assert_eq!(bad[2048], 63);
    let at = bad.len() - 5;
    assert_eq!(&bad[at..at + 2], &[0x80, 0x08]);
    bad[at..at + 2].copy_from_slice(&[0x80, 0x10]);
    let l = liar(&bad);
    assert!(matches!(l.learn_hashes(1, &bad), Err(ProtocolError::Invalid(_))));
    assert!(!l.page_known(1));
    assert_eq!(l.time_points(), l.media().time_index);
    // 300 points claimed (at most 256): refused before any is read.
    let mut many = page[..2048].to_vec();
    many.extend_from_slice(&[0xac, 0x02]);
    (0..300).for_each(|_| many.extend_from_slice(&[0x01, 0x00]));
    let l = liar(&many);
    assert!(matches!(l.learn_hashes(1, &many), Err(ProtocolError::TooMany { .. })));
    assert!(!l.page_known(1));
}

#[test]
fn manifest_time_index_gives_deadlines_and_seek_targets() {
    let (m, data) = small_manifest();
    assert_eq!(m.duration(), std::time::Duration::from_secs(10));
    // Chunk 0 holds the header: due at once.
    assert_eq!(m.chunk_media_time(ChunkIndex(0)), std::time::Duration::ZERO);
    // Chunk 1 starts at 16384: interpolated between (100, 0 s) and (20000, 5 s).
    let t1 = m.chunk_media_time(ChunkIndex(1)).as_micros() as u64;
    assert_eq!(t1, (16_384 - 100) * 5_000_000 / 19_900);
    // Chunk 2 starts at 32768: between (20000, 5 s) and the end (40000, 10 s).
    let t2 = m.chunk_media_time(ChunkIndex(2)).as_micros() as u64;
    assert_eq!(t2, 5_000_000 + (32_768 - 20_000) * 5_000_000 / 20_000);
    assert_eq!(m.chunk_at_time(std::time::Duration::from_secs(1)), ChunkIndex(0));
    assert_eq!(m.chunk_at_time(std::time::Duration::from_secs(6)), ChunkIndex(1));
    // Verification: right bytes pass, wrong bytes and wrong lengths fail.
    assert!(m.verify_chunk(ChunkIndex(2), &data[32_768..]).is_ok());
    assert!(matches!(
        m.verify_chunk(ChunkIndex(1), &data[32_768..]),
        Err(ProtocolError::ChunkLength { .. })
    ));
    let mut bad = data[16_384..32_768].to_vec();
    bad[0] ^= 1;
    assert!(matches!(
        m.verify_chunk(ChunkIndex(1), &bad),
        Err(ProtocolError::ChunkHashMismatch { .. })
    ));
    assert!(matches!(
        m.verify_chunk(ChunkIndex(3), &bad),
        Err(ProtocolError::ChunkOutOfRange { .. })
    ));
}

#[test]
fn a_manifest_for_another_id_is_refused() {
    let (m, _) = small_manifest();
    let other = TrackId::from_bytes([0; 32]);
    assert!(matches!(
        Manifest::decode_verified(m.encoded().clone(), other),
        Err(ProtocolError::TrackIdMismatch { .. })
    ));
}

#[test]
fn a_hello_s_optional_fields_decode_alone_or_together_and_only_in_order() {
    let addr = |p| std::net::SocketAddr::from(([203, 0, 113, 7], p));
    let base = Hello {
        min_version: 1,
        max_version: 1,
        peer_id: PeerId::from_bytes([3; 32]),
        listen_addrs: vec![addr(1)],
        agent: "t".into(),
        observed: None,
        mapped: None,
        ticket: None,
    };
    let ticket = Some(chorus_protocol::message::Ticket { id: [5; 16], key: [6; 32] });
    for (observed, mapped, ticket) in [
        (None, Some(addr(2)), None),
        (Some(addr(3)), Some(addr(4)), None),
        (None, None, ticket.clone()),
        (Some(addr(3)), None, ticket),
    ] {
        let m = Message::Hello(Hello { observed, mapped, ticket, ..base.clone() });
        let bytes = frame::encode(&m).unwrap();
        assert_eq!(frame::decode(&bytes).unwrap().message, m);
    }
    // Mapped before observed: tags out of order are refused.
    let both = frame::encode(&Message::Hello(Hello {
        observed: Some(addr(3)),
        mapped: Some(addr(4)),
        ..base.clone()
    }))
    .unwrap();
    let plain = frame::encode(&Message::Hello(base)).unwrap();
    let fields = both[plain.len()..].to_vec();
    let one = 1 + 1 + 4 + 2; // tag, family, IPv4, port
    let (first, second) = fields.split_at(one);
    assert_eq!((first[0], second[0]), (1, 2), "the fields as split");
    let mut swapped = plain.to_vec();
    swapped.extend_from_slice(second);
    swapped.extend_from_slice(first);
    let len = u32::try_from(swapped.len() - 4).unwrap();
    swapped[..4].copy_from_slice(&len.to_be_bytes());
    assert!(frame::decode(&Bytes::from(swapped)).is_err());
}

proptest! {
    /// A layout with a cut anywhere covers every byte once, in order, and
    /// finds each byte's chunk; the cut is a chunk's first byte.
    #[test]
    fn a_layout_with_a_cut_covers_every_byte_once(
        len in 1u64..200_000,
        shift in 0u32..7,
        boundary in 0u64..210_000,
        gap in proptest::option::of(1u32..70_000),
    ) {
        let size = ChunkSize::new(1024 << shift).unwrap();
        // Or a second cut: a gap before the boundary, the first chunk
        // all that comes before it.
        let gapped = gap.and_then(|g| {
            let lead = u32::try_from(boundary.checked_sub(u64::from(g))?).ok()?;
            ChunkLayout::with_gap(len, size, lead, g).ok()
        });
        let l = match gapped {
            Some(l) => l,
            None => ChunkLayout::aligned(len, size, boundary).unwrap(),
        };
        let mut next = 0;
        for i in l.indices() {
            let r = l.byte_range(i);
            prop_assert_eq!(r.start, next);
            prop_assert!(r.end > r.start && r.end - r.start <= u64::from(size.get()));
            prop_assert_eq!(l.chunk_at(r.start), Some(i));
            prop_assert_eq!(l.chunk_at(r.end - 1), Some(i));
            prop_assert_eq!(l.chunks_covering(r.clone()), i.0..i.0 + 1);
            next = r.end;
        }
        prop_assert_eq!(next, len);
        prop_assert_eq!(l.chunk_at(len), None);
        if boundary < len {
            let at = l.chunk_at(boundary).unwrap();
            prop_assert_eq!(l.byte_range(at).start, boundary);
        }
    }
}
