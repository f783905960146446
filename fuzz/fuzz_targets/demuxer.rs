//! Feeds arbitrary bytes, as a whole track, through the player's real read
//! path: chunked and hashed into a manifest, every chunk verified into a
//! `TrackStore`, read by the `ChunkSource` that symphonia demuxes and
//! decodes (the first byte picks the container hint). Whatever the bytes,
//! this must end: a clean error or some audio, no hang, no unbounded
//! memory. A panic here is one inside symphonia: the player survives it
//! (its decode thread catches it and ends the track), and the fuzzer
//! reports it so it can be told upstream.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_player::decode::Decoder;
use chorus_player::source::ChunkSource;
use chorus_protocol::{
    ChunkLayout, ChunkSize, Codec, Container, Manifest, MediaInfo, Tags, chunk,
};
use chorus_streamer::store::TrackStore;
use libfuzzer_sys::fuzz_target;

const HINTS: [Option<&str>; 6] = [None, Some("mp3"), Some("ogg"), Some("flac"), Some("wav"), Some("m4a")];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    if body.is_empty() {
        return;
    }
    let bytes = Bytes::copy_from_slice(body);
    let Ok(layout) = ChunkLayout::new(bytes.len() as u64, ChunkSize::new(1024).unwrap_or(ChunkSize::DEFAULT)) else {
        return;
    };
    let Ok((hashes, chunks)) = chunk::chunk_bytes(&bytes, &layout) else { return };
    let media = MediaInfo {
        codec: Codec::Other(0),
        container: Container::Other(0),
        sample_rate: 44_100,
        channels: 2,
        frames: 0,
        header_ranges: vec![],
        time_index: vec![],
        tags: Tags::default(),
    };
    let Ok(manifest) = Manifest::new(media, layout, hashes) else { return };
    let store = Arc::new(TrackStore::new(manifest.clone()));
    for (i, c) in chunks.into_iter().enumerate() {
        if let Ok(v) = manifest.verify(chorus_protocol::ChunkIndex(i as u32), c) {
            let _ = store.insert(v);
        }
    }
    let source = ChunkSource::new(store, Duration::from_millis(10), Box::new(|_| {}));
    let hint = HINTS[usize::from(pick) % HINTS.len()];
    let Ok(mut decoder) = Decoder::open(Box::new(source), hint) else { return };
    // Bounded: a few hundred blocks is far more than 4 KiB of input holds.
    for _ in 0..512 {
        match decoder.next_block() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
