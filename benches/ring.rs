//! The ring between the decode thread and the audio callback: throughput
//! of pushing blocks in and filling callback-sized periods out, on one
//! thread (the cost of the code, without scheduling noise) and across two.
//!
//! `cargo bench --bench ring`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_player::sink::ring::ring;
use chorus_player::stats::PlaybackStats;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RATE: u32 = 48_000;
/// A decoder block (1152 stereo frames, an MP3 frame) and a device period
/// (256 stereo frames).
const BLOCK: usize = 1152 * 2;
const PERIOD: usize = 256 * 2;

fn ring_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    let seconds = 10usize;
    let total = RATE as usize * 2 * seconds;
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function("10 s of stereo 48 kHz through, one thread", |b| {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(RATE, 2, Duration::ZERO, stats);
        let block = vec![0.25f32; BLOCK];
        let mut out = vec![0f32; PERIOD];
        b.iter(|| {
            let mut moved = 0;
            while moved < total {
                w.push_all(&block, &|| true);
                for _ in 0..BLOCK / PERIOD {
                    r.fill(&mut out);
                }
                r.fill(&mut out[..BLOCK % PERIOD]);
                moved += BLOCK;
            }
            black_box(&out);
        })
    });
    g.bench_function("10 s of stereo 48 kHz through, two threads", |b| {
        b.iter(|| {
            let stats = Arc::new(PlaybackStats::new(Instant::now()));
            let (mut w, mut r) = ring(RATE, 2, Duration::ZERO, stats.clone());
            let consumer = std::thread::spawn(move || {
                let mut out = vec![0f32; PERIOD];
                let mut taken = 0u64;
                while stats.frames_played.load(std::sync::atomic::Ordering::Relaxed) * 2
                    < total as u64
                {
                    r.fill(&mut out);
                    taken += 1;
                }
                taken
            });
            let block = vec![0.25f32; BLOCK];
            let mut pushed = 0;
            while pushed < total {
                w.push_all(&block, &|| true);
                pushed += BLOCK;
            }
            black_box(consumer.join().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, ring_throughput);
criterion_main!(benches);
