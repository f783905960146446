//! The paced null sink: consumes samples at real-time pace by our own clock
//! (the ALSA null device consumes as fast as it can), for benchmarks and
//! headless machines. Underruns count as they would on a device.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ring::{RingWriter, ring};
use super::{Sink, SinkFormat};
use crate::error::Result;
use crate::stats::PlaybackStats;

/// How often the clock thread consumes: like a device with a 5 ms period.
const PERIOD: Duration = Duration::from_millis(5);

/// A sink that plays into nothing, in real time.
pub struct NullSink {
    format: SinkFormat,
    writer: RingWriter,
    stats: Arc<PlaybackStats>,
    stop: Arc<AtomicBool>,
    clock: Option<JoinHandle<()>>,
}

impl NullSink {
    /// Starts the clock thread.
    pub fn open(
        rate: u32,
        channels: usize,
        prebuffer: Duration,
        stats: Arc<PlaybackStats>,
    ) -> Self {
        let (writer, mut reader) = ring(rate, channels, prebuffer, stats.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let clock = std::thread::Builder::new()
            .name("chorus-null-sink".into())
            .spawn(move || {
                let start = Instant::now();
                let mut consumed: u64 = 0;
                // One period's worth, allocated once.
                let mut scratch = vec![0f32; (rate as usize / 50 + 1) * channels * 4];
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(PERIOD);
                    let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                    let mut frames = due.saturating_sub(consumed);
                    while frames > 0 {
                        let n = (frames as usize).min(scratch.len() / channels);
                        reader.fill(&mut scratch[..n * channels]);
                        frames -= n as u64;
                        consumed += n as u64;
                    }
                }
            })
            .ok();
        Self { format: SinkFormat { rate, channels }, writer, stats, stop, clock }
    }
}

impl Sink for NullSink {
    fn format(&self) -> SinkFormat {
        self.format
    }

    fn write(&mut self, samples: &[f32]) -> Result<()> {
        let stats = &self.stats;
        self.writer.push_all(samples, &|| !stats.interrupted());
        Ok(())
    }

    fn begin_segment(&mut self, base: Duration, discard: bool) {
        self.writer.begin_segment(base, discard);
    }

    fn finish(&mut self) -> Result<()> {
        let stats = &self.stats;
        self.writer.drain(&|| !stats.stop.load(Ordering::Relaxed), Duration::from_secs(10));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.clock.take() {
            let _ = c.join();
        }
        Ok(())
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
