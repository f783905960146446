//! Content addressing and the manifest: chunk hashing and verification next
//! to raw blake3 over the same bytes, and manifest encode/decode.
//!
//! `cargo bench --bench codec`. Uses the largest sample track when the
//! sample set is built (samples/out), else 8 MiB of pseudo-random bytes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use chorus_protocol::chunk::{ChunkLayout, ChunkSize, chunk_bytes};
use chorus_protocol::{ChunkIndex, Manifest};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The largest sample file's manifest and bytes.
fn subject() -> (Manifest, Bytes) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/out");
    let largest = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_none_or(|e| e != "md"))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.len(), p)))
            .filter_map(|(len, p)| {
                chorus_streamer::library::index_file(&p, ChunkSize::default())
                    .ok()
                    .map(|t| (len, t))
            })
            .max_by_key(|(len, _)| *len)
    });
    match largest {
        Some((_, t)) => {
            let data = Bytes::from(std::fs::read(&t.path).unwrap());
            (t.manifest, data)
        }
        None => {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let data: Vec<u8> = (0..8 << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let data = Bytes::from(data);
            let layout = ChunkLayout::new(data.len() as u64, ChunkSize::default()).unwrap();
            let (hashes, _) = chunk_bytes(&data, &layout).unwrap();
            let media = chorus_protocol::manifest::MediaInfo {
                codec: chorus_protocol::Codec::Other(0),
                container: chorus_protocol::Container::Other(0),
                sample_rate: 44_100,
                channels: 2,
                frames: 0,
                header_ranges: vec![],
                time_index: vec![],
                tags: Default::default(),
            };
            (Manifest::new(media, layout, hashes).unwrap(), data)
        }
    }
}

fn hashing(c: &mut Criterion) {
    let (manifest, data) = subject();
    let layout = *manifest.layout();
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("raw blake3, one pass", |b| b.iter(|| blake3::hash(black_box(&data))));
    g.bench_function("chunk and hash (16 KiB chunks)", |b| {
        b.iter(|| chunk_bytes(black_box(&data), &layout).unwrap())
    });
    let chunks: Vec<Bytes> = (0..layout.count())
        .map(|i| {
            let r = layout.byte_range(ChunkIndex(i));
            data.slice(r.start as usize..r.end as usize)
        })
        .collect();
    g.bench_function("verify every chunk against the manifest", |b| {
        b.iter(|| {
            for (i, chunk) in chunks.iter().enumerate() {
                black_box(manifest.verify(ChunkIndex(i as u32), chunk.clone()).unwrap());
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("manifest");
    let encoded = manifest.encoded().clone();
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function(format!("decode and verify ({} chunks)", layout.count()), |b| {
        b.iter(|| Manifest::decode_verified(black_box(encoded.clone()), manifest.id()).unwrap())
    });
    let list = manifest.hash_pages(0..manifest.page_count()).unwrap();
    g.bench_function(format!("learn and check its hash list ({} chunks)", layout.count()), |b| {
        b.iter(|| {
            let m = Manifest::decode_verified(encoded.clone(), manifest.id()).unwrap();
            m.learn_hashes(0, black_box(&list)).unwrap();
        })
    });
    let media = manifest.media().clone();
    let (hashes, _) = chunk_bytes(&data, &layout).unwrap();
    g.bench_function(format!("encode ({} chunks)", layout.count()), |b| {
        b.iter(|| Manifest::new(media.clone(), layout, black_box(hashes.clone())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
