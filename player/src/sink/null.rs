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
        let (s, st) = (stop.clone(), stats.clone());
        let clock = std::thread::Builder::new()
            .name("chorus-null-sink".into())
            .spawn(move || {
                // Like a device started when its first audio is ready: the
                // clock runs from that moment, not from the open.
                while !s.load(Ordering::Relaxed) && !st.ready_to_start() {
                    std::thread::sleep(super::START_POLL);
                }
                let start = Instant::now();
                let mut consumed: u64 = 0;
                // One period's worth, allocated once.
                let mut scratch = vec![0f32; (rate as usize / 50 + 1) * channels * 4];
                while !s.load(Ordering::Relaxed) {
                    // A device takes a period ahead of what it plays: the
                    // first as it starts, then one each period.
                    let ahead = start.elapsed() + PERIOD;
                    let due = (ahead.as_secs_f64() * f64::from(rate)) as u64;
                    let mut frames = due.saturating_sub(consumed);
                    while frames > 0 {
                        let n = (frames as usize).min(scratch.len() / channels);
                        reader.fill(&mut scratch[..n * channels]);
                        frames -= n as u64;
                        consumed += n as u64;
                    }
                    std::thread::sleep(PERIOD);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// Opens a null sink whose gate is closed, fills its prebuffer, waits
    /// several periods, opens the gate: its first fill is audio.
    #[test]
    fn the_clock_starts_when_the_first_audio_is_ready() {
        let gate = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PlaybackStats::with_gate(Instant::now(), gate.clone()));
        let mut sink = NullSink::open(1000, 1, Duration::from_millis(20), stats.clone());
        sink.write(&[0.5; 200]).unwrap();
        super::super::assert_starts_at_the_first_audio(&stats, &gate);
        stats.stop.store(true, Relaxed);
        sink.finish().unwrap();
    }
}
