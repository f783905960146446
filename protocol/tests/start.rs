//! What a start response carries: header chunks first, wherever they are,
//! then audio from the start point, within the budget.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use chorus_protocol::*;

/// 10 chunks of 1 KiB, 10 s of audio (1 s a chunk), a header at the start
/// and one at the end (an MP4 `moov` after the audio).
fn manifest() -> Manifest {
    let data = Bytes::from(vec![7u8; 10 * 1024]);
    let layout = ChunkLayout::new(10 * 1024, ChunkSize::new(1024).unwrap()).unwrap();
    let (hashes, _) = chunk::chunk_bytes(&data, &layout).unwrap();
    let media = MediaInfo {
        codec: Codec::Aac,
        container: Container::Mp4,
        sample_rate: 1000,
        channels: 1,
        frames: 10_000,
        header_ranges: vec![0..100, 9_300..9_400],
        time_index: (0..10)
            .map(|i| TimePoint { byte_offset: i * 1024, time_us: i * 1_000_000 })
            .collect(),
        tags: Tags::default(),
    };
    Manifest::new(media, layout, hashes).unwrap()
}

fn ids(v: Vec<ChunkIndex>) -> Vec<u32> {
    v.into_iter().map(|i| i.0).collect()
}

#[test]
fn headers_first_then_audio_from_the_start_point_within_the_budget() {
    let m = manifest();
    assert!(m.is_header_chunk(ChunkIndex(0)) && m.is_header_chunk(ChunkIndex(9)));
    assert!(!m.is_header_chunk(ChunkIndex(1)));
    // The budget counts audio only: the headers come whatever it is.
    assert_eq!(ids(m.start_chunks(Duration::ZERO, 2 * 1024)), vec![0, 9, 1, 2]);
    assert_eq!(ids(m.start_chunks(Duration::from_secs(5), 1024)), vec![0, 9, 5]);
    // Headers and the first audio chunk even with no budget at all.
    assert_eq!(ids(m.start_chunks(Duration::from_secs(5), 0)), vec![0, 9, 5]);
    assert_eq!(ids(m.start_chunks(Duration::ZERO, u64::MAX)), vec![0, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
}
