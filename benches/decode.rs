//! Decode speed per format, as a multiple of real time: each sample track
//! decoded start to end from its file (in the page cache after the first
//! pass) by our gapless decoder over symphonia.
//!
//! `cargo bench --bench decode`. Needs the sample set (samples/build.sh);
//! without it there is nothing to measure and the bench says so.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use chorus_player::decode::Decoder;
use criterion::{Criterion, criterion_group, criterion_main};

fn decode_all(path: &Path) -> u64 {
    let mut d = Decoder::open_file(path).unwrap();
    let mut samples = 0u64;
    while let Some(b) = d.next_block().unwrap() {
        samples += b.len() as u64;
    }
    samples / d.channels() as u64
}

fn decode(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/out");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("no sample set at {}: run samples/build.sh first", dir.display());
        return;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        // The tracks: not the attribution, checksums or the builder's mark.
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.') && !name.ends_with(".md") && name != "SHA256SUMS"
        })
        .collect();
    files.sort();
    let mut g = c.benchmark_group("decode");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for path in files {
        let rate = Decoder::open_file(&path).map(|d| d.sample_rate()).unwrap_or(44_100);
        // One timed pass for the ×real-time figure, printed once.
        let t = Instant::now();
        let frames = decode_all(&path);
        let audio = frames as f64 / f64::from(rate);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!(
            "{name}: {audio:.0} s of audio decoded in {:.0} ms = {:.0}x real time",
            t.elapsed().as_secs_f64() * 1e3,
            audio / t.elapsed().as_secs_f64()
        );
        g.bench_function(name, |b| b.iter(|| decode_all(&path)));
    }
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
