//! Scheduler decision cost at scale: 1,000 peers × 10,000 chunks.
//!
//! `cargo bench --bench scheduler`. Measures one `poll` (a full planning
//! pass: blocked and header chunks, the urgent window in deadline order
//! against every peer, rarest-first lookahead) in steady state mid-track,
//! and one `on_received` (settle, rate update, cancel of the hedged copy).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use chorus_streamer::scheduler::{PeerInfo, PeerKey, Playhead, Scheduler, SchedulerConfig};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const PEERS: usize = 1_000;
const CHUNKS: u32 = 10_000;

/// A 10,000-chunk track (16 KiB at 320 kb/s: 4.4 hours) with 1,000 peers of
/// mixed RTT, half holding everything and half holding every other chunk,
/// playing at 30% with the first 30% here.
fn steady_state() -> Scheduler {
    let media = (0..u64::from(CHUNKS)).map(|i| Duration::from_millis(i * 400)).collect();
    let mut header = vec![false; CHUNKS as usize];
    header[0] = true;
    let mut s = Scheduler::new(
        SchedulerConfig::default(),
        vec![16_384; CHUNKS as usize],
        media,
        header,
        Duration::from_millis(u64::from(CHUNKS) * 400),
    );
    for i in 0..PEERS {
        let has_all = i % 2 == 0;
        let key = s.add_peer(PeerInfo {
            rtt: Duration::from_millis(10 + (i as u64 * 37) % 190),
            is_seed: i == 0,
            has_all,
        });
        if !has_all {
            s.peer_has(key, (0..CHUNKS).step_by(2));
        }
    }
    let now = Duration::from_secs(1200);
    for c in 0..3_000 {
        s.mark_here(c);
    }
    s.set_playhead(Playhead {
        position: Duration::from_millis(3_000 * 400),
        at: now,
        playing: true,
    });
    // Warm: one planning pass so some requests are in flight.
    s.poll(now);
    s
}

fn bench(c: &mut Criterion) {
    let base = steady_state();
    let now = Duration::from_secs(1201);
    c.bench_function("scheduler poll, 1000 peers x 10000 chunks", |b| {
        b.iter_batched(|| base.clone(), |mut s| black_box(s.poll(now)), BatchSize::LargeInput)
    });
    c.bench_function("scheduler on_received, 1000 peers x 10000 chunks", |b| {
        b.iter_batched(
            || base.clone(),
            |mut s| black_box(s.on_received(PeerKey(2), 3_000, now)),
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
