//! Playback counters shared by the decode thread and the audio callback:
//! atomics only, so the callback can update them without locking.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Live counters of one playback.
#[derive(Debug)]
pub struct PlaybackStats {
    started: Instant,
    /// Nanoseconds from `started` to the first sample handed to the sink;
    /// 0 until then.
    first_audio_ns: AtomicU64,
    /// Underrun episodes after playback began (each plays silence).
    pub underruns: AtomicU64,
    /// Frames of silence played because of underruns.
    pub silent_frames: AtomicU64,
    /// Frames played.
    pub frames_played: AtomicU64,
    /// Output sample rate.
    pub rate: AtomicU64,
    /// Set by the decode thread when the last sample has been written.
    pub end_of_stream: AtomicBool,
    /// Reads that had to wait for the network longer than a moment.
    pub stalls: AtomicU64,
    /// Set to stop playback early (Ctrl-C, a duration limit).
    pub stop: AtomicBool,
    /// The start gate: a real-time sink starts playing only once this is
    /// raised (by the fetcher's start rule) or the stream has ended.
    pub gate: std::sync::Arc<AtomicBool>,
}

impl PlaybackStats {
    /// Counters whose clock starts at `started` (the start of the command),
    /// with the start gate open.
    pub fn new(started: Instant) -> Self {
        Self::with_gate(started, std::sync::Arc::new(AtomicBool::new(true)))
    }

    /// Counters whose sink waits for `gate` before it starts playing.
    pub fn with_gate(started: Instant, gate: std::sync::Arc<AtomicBool>) -> Self {
        Self {
            started,
            first_audio_ns: AtomicU64::new(0),
            underruns: AtomicU64::new(0),
            silent_frames: AtomicU64::new(0),
            frames_played: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            end_of_stream: AtomicBool::new(false),
            stalls: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            gate,
        }
    }

    /// Records the first audio, once. Reads the clock: call it only on the
    /// first sample, not per callback.
    pub fn mark_first_audio(&self) {
        if self.first_audio_ns.load(Relaxed) == 0 {
            let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
            let _ = self.first_audio_ns.compare_exchange(0, ns, Relaxed, Relaxed);
        }
    }

    /// Time from the start to the first sample, if any played.
    pub fn time_to_first_audio(&self) -> Option<Duration> {
        match self.first_audio_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Audio played so far.
    pub fn position(&self) -> Duration {
        let rate = self.rate.load(Relaxed).max(1);
        Duration::from_secs_f64(self.frames_played.load(Relaxed) as f64 / rate as f64)
    }

    /// Silence played because of underruns.
    pub fn silent(&self) -> Duration {
        let rate = self.rate.load(Relaxed).max(1);
        Duration::from_secs_f64(self.silent_frames.load(Relaxed) as f64 / rate as f64)
    }
}
