//! The SPSC ring between the decode thread and a real-time consumer.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::stats::PlaybackStats;

/// Ring capacity: 2 s of audio absorbs scheduling hiccups of the decode
/// thread; the network buffer lives in the chunk store, not here.
pub const RING_SECONDS: f64 = 2.0;

/// Makes a ring for `rate` × `channels`, returning both ends.
pub fn ring(
    rate: u32,
    channels: usize,
    prebuffer: Duration,
    stats: Arc<PlaybackStats>,
) -> (RingWriter, RingReader) {
    let cap = ((f64::from(rate) * RING_SECONDS) as usize).max(4096) * channels;
    let (prod, cons) = HeapRb::<f32>::new(cap).split();
    let prebuffer = ((prebuffer.as_secs_f64() * f64::from(rate)) as usize * channels).min(cap / 2);
    stats.rate.store(u64::from(rate), Relaxed);
    (
        RingWriter { prod, stats: stats.clone() },
        RingReader { cons, stats, channels, prebuffer, started: false, in_underrun: false },
    )
}

/// The decode thread's end.
pub struct RingWriter {
    prod: HeapProd<f32>,
    stats: Arc<PlaybackStats>,
}

impl RingWriter {
    /// Pushes every sample, sleeping briefly while the ring is full.
    /// `alive` is checked while waiting so a dead consumer cannot hang us.
    pub fn push_all(&mut self, mut samples: &[f32], alive: &dyn Fn() -> bool) -> bool {
        while !samples.is_empty() {
            let n = self.prod.push_slice(samples);
            samples = &samples[n..];
            if n == 0 {
                if !alive() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        true
    }

    /// Marks the end and waits (bounded by `limit`) until the consumer has
    /// drained the ring.
    pub fn drain(&mut self, alive: &dyn Fn() -> bool, limit: Duration) {
        self.stats.end_of_stream.store(true, Relaxed);
        let deadline = std::time::Instant::now() + limit;
        while self.prod.occupied_len() > 0 && alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The real-time end. [`RingReader::fill`] is what an audio callback runs.
pub struct RingReader {
    cons: HeapCons<f32>,
    stats: Arc<PlaybackStats>,
    channels: usize,
    prebuffer: usize,
    started: bool,
    in_underrun: bool,
}

impl RingReader {
    /// Fills `out` from the ring; missing samples become silence. Real-time
    /// safe: atomics only, no allocation, lock, log or blocking (the one
    /// clock read happens once, on the first sample).
    pub fn fill(&mut self, out: &mut [f32]) {
        let eos = self.stats.end_of_stream.load(Relaxed);
        let waiting = self.cons.occupied_len() < self.prebuffer || !self.stats.gate.load(Relaxed);
        if !self.started && waiting && !eos {
            out.fill(0.0);
            return;
        }
        let n = self.cons.pop_slice(out);
        if n > 0 && !self.started {
            self.started = true;
            self.stats.mark_first_audio();
        }
        self.stats.frames_played.fetch_add((n / self.channels) as u64, Relaxed);
        if n < out.len() {
            out[n..].fill(0.0);
            if self.started && !eos {
                if !self.in_underrun {
                    self.in_underrun = true;
                    self.stats.underruns.fetch_add(1, Relaxed);
                }
                self.stats
                    .silent_frames
                    .fetch_add(((out.len() - n) / self.channels) as u64, Relaxed);
            }
        } else {
            self.in_underrun = false;
        }
    }

    /// Samples waiting in the ring.
    pub fn buffered(&self) -> usize {
        self.cons.occupied_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn prebuffer_then_underruns_counted_once_per_episode() {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 2, Duration::from_millis(10), stats.clone());
        let mut out = [1.0f32; 8];
        w.push_all(&[0.5; 10], &|| true);
        r.fill(&mut out);
        assert_eq!(out, [0.0; 8], "below the 20-sample prebuffer: silence, not an underrun");
        assert_eq!(stats.underruns.load(Relaxed), 0);
        w.push_all(&[0.5; 20], &|| true);
        r.fill(&mut out);
        assert_eq!(out, [0.5; 8]);
        assert!(stats.time_to_first_audio().is_some());
        r.fill(&mut out);
        r.fill(&mut out);
        r.fill(&mut out); // 30 pushed, 32 asked: underrun starts
        r.fill(&mut out); // still in the same episode
        assert_eq!(stats.underruns.load(Relaxed), 1);
        assert_eq!(stats.silent_frames.load(Relaxed), 1 + 4);
        w.push_all(&[0.5; 8], &|| true);
        r.fill(&mut out);
        w.push_all(&[0.5; 2], &|| true);
        r.fill(&mut out);
        assert_eq!(stats.underruns.load(Relaxed), 2);
        stats.end_of_stream.store(true, Relaxed);
        r.fill(&mut out);
        assert_eq!(stats.underruns.load(Relaxed), 2, "silence after the end is not an underrun");
    }

    #[test]
    fn a_closed_gate_holds_playback_back() {
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stats = Arc::new(PlaybackStats::with_gate(Instant::now(), gate.clone()));
        let (mut w, mut r) = ring(1000, 1, Duration::ZERO, stats.clone());
        w.push_all(&[0.5; 100], &|| true);
        let mut out = [1.0f32; 10];
        r.fill(&mut out);
        assert_eq!(out, [0.0; 10], "gate closed: silence, and not counted");
        assert!(stats.time_to_first_audio().is_none());
        gate.store(true, Relaxed);
        r.fill(&mut out);
        assert_eq!(out, [0.5; 10]);
    }
}
