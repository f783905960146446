//! Playback counters shared by the decode thread and the audio callback:
//! atomics only, so the callback can update them without locking.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Live counters of one playback.
#[derive(Debug)]
pub struct PlaybackStats {
    started: Instant,
    /// Nanoseconds from `started` to the first sample handed to the sink;
    /// 0 until then.
    first_audio_ns: AtomicU64,
    /// Nanoseconds from `started` to the decoder being open at the place
    /// playback starts from; 0 until then.
    decoder_ready_ns: AtomicU64,
    /// Nanoseconds from `started` to the output being open; 0 until then.
    output_open_ns: AtomicU64,
    /// Underrun episodes after playback began (each plays silence).
    pub underruns: AtomicU64,
    /// Frames of silence played because of underruns.
    pub silent_frames: AtomicU64,
    /// Where in the track the last underrun began, in ms + 1 (0: none).
    pub underrun_at_ms: AtomicU64,
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
    /// Set while the current track is being skipped: a writer blocked on a
    /// full sink gives up.
    pub skip: AtomicBool,
    /// The start gate: a real-time sink starts playing only once this is
    /// raised (by the fetcher's start rule) or the stream has ended.
    pub gate: std::sync::Arc<AtomicBool>,
    /// Raised by the decode thread once the sink holds its prebuffer: with
    /// the gate, what a sink waits for before it starts its clock.
    pub primed: AtomicBool,
    /// Times the sink's consumer asked for audio before the first sample
    /// (each played silence ahead of the first note): 0 when a sink starts
    /// its clock as the first audio is ready.
    pub fills_before_start: AtomicU64,
    /// Raised while the listener has paused: the consumer plays silence
    /// without taking samples (and without counting underruns).
    pub paused: AtomicBool,
    /// The volume asked for, as `f32` bits (1.0 = unchanged); the decode
    /// thread ramps towards it.
    volume: AtomicU32,
    /// A seek asked for: target in milliseconds + 1, or 0 for none.
    seek_request: AtomicU64,
    /// Where playback is to start (or start again): the start offset, then
    /// each seek's target, in ms.
    planned_ms: AtomicU64,
    /// From a seek's request until the consumer reaches its segment: the
    /// audio still buffered from before it is not played.
    pub seek_pending: AtomicBool,
    /// Segments: a seek or the next track of a gapless queue starts a new
    /// segment at a sample index of the ring. The decode thread publishes
    /// `segment_at`/`segment_base_ms`/`segment_discard`, then bumps
    /// `segment_gen` (release); the consumer acknowledges in `crossed_gen`
    /// once it plays from there.
    pub segment_gen: AtomicU64,
    /// Sample index (counted over everything written to the sink) where the
    /// newest segment starts.
    pub segment_at: AtomicU64,
    /// Track position of the newest segment's first sample, in ms.
    pub segment_base_ms: AtomicU64,
    /// Whether samples before the newest segment are discarded (a seek), or
    /// played out first (the next track).
    pub segment_discard: AtomicBool,
    /// When the newest segment was asked for (ns since `started`).
    pub segment_asked_ns: AtomicU64,
    /// The last segment the consumer reached.
    pub crossed_gen: AtomicU64,
    /// Track position where the playing segment starts, in ms.
    base_ms: AtomicU64,
    /// Frames played in the playing segment.
    pub segment_frames: AtomicU64,
    /// From asking for the last discarding segment (a seek) to its first
    /// sample played, in ns; 0 until one has played.
    pub last_seek_ns: AtomicU64,
    /// Seeks that have played their first sample.
    pub seeks_done: AtomicU64,
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
            decoder_ready_ns: AtomicU64::new(0),
            output_open_ns: AtomicU64::new(0),
            underruns: AtomicU64::new(0),
            silent_frames: AtomicU64::new(0),
            underrun_at_ms: AtomicU64::new(0),
            frames_played: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            end_of_stream: AtomicBool::new(false),
            stalls: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            skip: AtomicBool::new(false),
            gate,
            primed: AtomicBool::new(false),
            fills_before_start: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            volume: AtomicU32::new(1.0f32.to_bits()),
            seek_request: AtomicU64::new(0),
            planned_ms: AtomicU64::new(0),
            seek_pending: AtomicBool::new(false),
            segment_gen: AtomicU64::new(0),
            segment_at: AtomicU64::new(0),
            segment_base_ms: AtomicU64::new(0),
            segment_discard: AtomicBool::new(false),
            segment_asked_ns: AtomicU64::new(0),
            crossed_gen: AtomicU64::new(0),
            base_ms: AtomicU64::new(0),
            segment_frames: AtomicU64::new(0),
            last_seek_ns: AtomicU64::new(0),
            seeks_done: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since `started` (for stamping requests).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// The instant the clock started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Asks the decode thread to seek to `t` (the latest request wins).
    pub fn request_seek(&self, t: Duration) {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX - 1);
        self.segment_asked_ns.store(self.now_ns(), Relaxed);
        self.planned_ms.store(ms, Relaxed);
        self.seek_pending.store(true, Relaxed);
        self.seek_request.store(ms + 1, Relaxed);
    }

    /// Playback of this track starts at `t` (a start offset).
    pub fn plan_start(&self, t: Duration) {
        self.planned_ms.store(u64::try_from(t.as_millis()).unwrap_or(u64::MAX), Relaxed);
    }

    /// True while a seek is asked for and not yet taken by the decoder.
    pub fn seek_requested(&self) -> bool {
        self.seek_request.load(Relaxed) != 0
    }

    /// Forgets a seek that can no longer be served (its track has ended).
    pub fn clear_seek(&self) {
        self.seek_request.store(0, Relaxed);
        self.seek_pending.store(false, Relaxed);
    }

    /// Takes the pending seek request, if any.
    pub fn take_seek(&self) -> Option<Duration> {
        match self.seek_request.swap(0, Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms - 1)),
        }
    }

    /// True when a writer blocked on a full sink should give up its block:
    /// playback stops, or a seek will discard it anyway.
    pub fn interrupted(&self) -> bool {
        self.stop.load(Relaxed) || self.skip.load(Relaxed) || self.seek_request.load(Relaxed) != 0
    }

    /// Sets the volume (linear gain, clamped to 0..=2).
    pub fn set_volume(&self, gain: f32) {
        let g = if gain.is_finite() { gain.clamp(0.0, 2.0) } else { 1.0 };
        self.volume.store(g.to_bits(), Relaxed);
    }

    /// The volume asked for.
    pub fn volume(&self) -> f32 {
        f32::from_bits(self.volume.load(Relaxed))
    }

    /// Called by the consumer when it reaches a new segment: positions now
    /// count from the segment's base. Atomics only.
    pub fn enter_segment(&self, generation: u64) {
        self.base_ms.store(self.segment_base_ms.load(Relaxed), Relaxed);
        self.segment_frames.store(0, Relaxed);
        self.crossed_gen.store(generation, Relaxed);
        if self.segment_discard.load(Relaxed) && self.seek_request.load(Relaxed) == 0 {
            self.seek_pending.store(false, Relaxed);
        }
    }

    /// The seek to a new position has played its first sample: records the
    /// latency. Reads the clock once per seek, not per callback.
    pub fn mark_seek_done(&self) {
        let asked = self.segment_asked_ns.load(Relaxed);
        self.last_seek_ns.store(self.now_ns().saturating_sub(asked).max(1), Relaxed);
        self.seeks_done.fetch_add(1, Relaxed);
    }

    /// The last seek's latency (ask → first sample from the new position).
    pub fn last_seek_latency(&self) -> Option<Duration> {
        match self.last_seek_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// True from a seek's request until its first sample plays.
    pub fn seeking(&self) -> bool {
        self.seek_pending.load(Relaxed)
            || (self.segment_discard.load(Relaxed)
                && self.segment_gen.load(Relaxed) != self.crossed_gen.load(Relaxed))
    }

    /// The track position the listener hears, or is about to hear: a
    /// seek's target from its request until the decoder has landed (then
    /// where it landed), the start offset before the first note. What the
    /// fetcher plans around and judges the start rule at.
    pub fn target_position(&self) -> Duration {
        let generation = self.segment_gen.load(Relaxed);
        if generation != self.crossed_gen.load(Relaxed) && self.segment_discard.load(Relaxed) {
            return Duration::from_millis(self.segment_base_ms.load(Relaxed));
        }
        if self.seek_pending.load(Relaxed) || self.time_to_first_audio().is_none() {
            return Duration::from_millis(self.planned_ms.load(Relaxed));
        }
        self.position()
    }

    /// Records the first audio, once. Reads the clock: call it only on the
    /// first sample, not per callback.
    pub fn mark_first_audio(&self) {
        if self.first_audio_ns.load(Relaxed) == 0 {
            let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
            let _ = self.first_audio_ns.compare_exchange(0, ns, Relaxed, Relaxed);
        }
    }

    /// Whether a sink that has not started yet should start now: the
    /// prebuffer is in and the start rule holds, or the stream has ended
    /// (a track shorter than the prebuffer), or playback stopped.
    pub fn ready_to_start(&self) -> bool {
        (self.primed.load(Relaxed) && self.gate.load(Relaxed))
            || self.end_of_stream.load(Relaxed)
            || self.stop.load(Relaxed)
    }

    /// Records that the decoder is open at the place playback starts from
    /// (the decode thread, once per playback).
    pub fn mark_decoder_ready(&self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self.decoder_ready_ns.compare_exchange(0, ns, Relaxed, Relaxed);
    }

    /// Records that the output (the sound card's stream) is open (the
    /// decode thread, once per playback that opens one).
    pub fn mark_output_open(&self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self.output_open_ns.compare_exchange(0, ns, Relaxed, Relaxed);
    }

    /// Time from the start to the output being open, if this playback
    /// opened one.
    pub fn time_to_output_open(&self) -> Option<Duration> {
        match self.output_open_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Time from the start to the decoder being ready, if it was.
    pub fn time_to_decoder_ready(&self) -> Option<Duration> {
        match self.decoder_ready_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Time from the start to the first sample, if any played.
    pub fn time_to_first_audio(&self) -> Option<Duration> {
        match self.first_audio_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The position in the track being heard: the playing segment's base
    /// plus what it has played.
    pub fn position(&self) -> Duration {
        let rate = self.rate.load(Relaxed).max(1);
        Duration::from_millis(self.base_ms.load(Relaxed))
            + Duration::from_secs_f64(self.segment_frames.load(Relaxed) as f64 / rate as f64)
    }

    /// All audio played so far, over every segment.
    pub fn played(&self) -> Duration {
        let rate = self.rate.load(Relaxed).max(1);
        Duration::from_secs_f64(self.frames_played.load(Relaxed) as f64 / rate as f64)
    }

    /// Where in the track the last underrun began, if any did.
    pub fn underrun_at(&self) -> Option<Duration> {
        let at = self.underrun_at_ms.load(Relaxed);
        (at > 0).then(|| Duration::from_millis(at - 1))
    }

    /// Silence played because of underruns.
    pub fn silent(&self) -> Duration {
        let rate = self.rate.load(Relaxed).max(1);
        Duration::from_secs_f64(self.silent_frames.load(Relaxed) as f64 / rate as f64)
    }
}
