//! The SPSC ring between the decode thread and a real-time consumer.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::envelope::Envelope;
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
    let env = Envelope::new(rate, channels, stats.volume());
    (
        RingWriter { prod, stats: stats.clone(), pushed: 0, prebuffer, primed: false },
        RingReader {
            cons,
            stats,
            channels,
            prebuffer,
            started: false,
            in_underrun: false,
            read: 0,
            seen_gen: 0,
            awaiting: false,
            env,
        },
    )
}

/// A ring full this long with the listener not paused means the consumer
/// has stopped: 3 s is longer than the ring holds (2 s), so a working
/// device always drains within it.
pub const CONSUMER_STALL: Duration = Duration::from_secs(3);

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Every sample is in the ring.
    Done,
    /// `alive` said stop (playback stopped, a seek, a skip).
    Interrupted,
    /// The consumer took nothing for [`CONSUMER_STALL`].
    Stalled,
}

/// The decode thread's end.
pub struct RingWriter {
    prod: HeapProd<f32>,
    stats: Arc<PlaybackStats>,
    /// Samples pushed so far.
    pushed: u64,
    /// Samples the consumer waits for before it starts.
    prebuffer: usize,
    /// Whether [`PlaybackStats::primed`] has been raised.
    primed: bool,
}

impl RingWriter {
    /// Pushes every sample, sleeping briefly while the ring is full.
    /// `alive` is checked while waiting so a dead consumer cannot hang us
    /// (and a seek need not wait for a paused listener).
    pub fn push_all(&mut self, mut samples: &[f32], alive: &dyn Fn() -> bool) -> Push {
        let mut full_since: Option<std::time::Instant> = None;
        while !samples.is_empty() {
            let n = self.prod.push_slice(samples);
            self.pushed += n as u64;
            samples = &samples[n..];
            if n > 0 {
                full_since = None;
                if !self.primed && self.prod.occupied_len() >= self.prebuffer {
                    self.primed = true;
                    self.stats.primed.store(true, Relaxed);
                }
                continue;
            }
            if !alive() {
                return Push::Interrupted;
            }
            // A consumer that stops taking samples while not paused (a
            // device gone without an error) must not hang the decoder.
            if self.stats.paused.load(Relaxed) {
                full_since = None;
            } else if full_since.get_or_insert_with(std::time::Instant::now).elapsed()
                > CONSUMER_STALL
            {
                return Push::Stalled;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Push::Done
    }

    /// Starts a segment at the next sample pushed: its first sample is at
    /// `base` in the track. With `discard`, what is still in the ring is
    /// dropped (a seek); without, it plays out first (the next track).
    pub fn begin_segment(&mut self, base: Duration, discard: bool) {
        let s = &self.stats;
        s.segment_at.store(self.pushed, Relaxed);
        s.segment_base_ms.store(u64::try_from(base.as_millis()).unwrap_or(u64::MAX), Relaxed);
        s.segment_discard.store(discard, Relaxed);
        if !discard {
            s.segment_asked_ns.store(s.now_ns(), Relaxed);
        }
        s.segment_gen.fetch_add(1, Release);
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
    /// Samples taken (played or discarded) so far.
    read: u64,
    /// The last segment generation reached.
    seen_gen: u64,
    /// A seek's segment was reached and nothing of it has played yet:
    /// wait for the prebuffer again, and do not count the wait as an
    /// underrun.
    awaiting: bool,
    /// Volume and fades.
    env: Envelope,
}

impl RingReader {
    /// Fills `out` from the ring; missing samples become silence. Real-time
    /// safe: atomics only, no allocation, lock, log or blocking (the one
    /// clock read happens once, on the first sample). The listener's volume
    /// and the fades around pause, seek and skip are applied here, so they
    /// are heard at once, not after the ring plays out.
    pub fn fill(&mut self, mut out: &mut [f32]) {
        let s = &self.stats;
        let hold = s.paused.load(Relaxed) || s.stop.load(Relaxed) || s.skip.load(Relaxed);
        let volume = s.volume();
        if (hold || s.seek_pending.load(Relaxed)) && self.env.level() > 0.0 {
            // Fade out over what would have played next, then silence.
            let tail = (self.env.frames_to_silence() * self.channels).min(out.len());
            let n = self.take(&mut out[..tail], true);
            out[n..].fill(0.0);
            self.env.apply(&mut out[..n], false, volume);
            if n < tail {
                self.env.close();
            }
            if hold || self.env.level() > 0.0 {
                return;
            }
            // A seek's fade is done: the rest of this period goes on
            // below, which drops the audio from before the seek now (if
            // its segment has begun), not a period later. The decode
            // thread, waiting on a full ring, then has room for the new
            // place before the next period, which can play it.
            out = &mut out[tail..];
        }
        if hold {
            out.fill(0.0);
            return;
        }
        let eos = self.stats.end_of_stream.load(Relaxed);
        let filled = self.take(out, false);
        if !self.started {
            self.stats.fills_before_start.fetch_add(1, Relaxed);
        }
        self.env.apply(&mut out[..filled], true, volume);
        if filled < out.len() {
            out[filled..].fill(0.0);
            if self.started && !self.awaiting && !eos && !self.stats.seek_pending.load(Relaxed) {
                if !self.in_underrun {
                    self.in_underrun = true;
                    self.stats.underruns.fetch_add(1, Relaxed);
                    let at = u64::try_from(self.stats.position().as_millis()).unwrap_or(u64::MAX);
                    self.stats.underrun_at_ms.store(at.saturating_add(1), Relaxed);
                }
                self.stats
                    .silent_frames
                    .fetch_add(((out.len() - filled) / self.channels) as u64, Relaxed);
                // Audio that comes back after a gap fades in.
                self.env.close();
            }
        } else {
            self.in_underrun = false;
        }
    }

    /// Takes what may play now into `out`; returns how many samples. With
    /// `fading`, takes the audio before a pending seek (to fade it out)
    /// instead of dropping it, and stops at the seek's segment.
    fn take(&mut self, out: &mut [f32], fading: bool) -> usize {
        let eos = self.stats.end_of_stream.load(Relaxed);
        let mut filled = 0;
        // At most two passes: the end of one segment, then the next.
        for _ in 0..2 {
            let limit = self.segment_edge(out.len() - filled, fading);
            if fading {
                if self.awaiting {
                    break;
                }
            } else if self.stats.seek_pending.load(Relaxed) {
                // A seek was asked for: what is buffered from before it is
                // not played. It is dropped now, not when the seek's
                // segment begins (its decoder may wait a round trip for
                // the new place's bytes): the decode thread then has room
                // for the new place's audio as soon as it decodes it,
                // instead of waiting on a full ring for this callback's
                // next period to drop the old audio and the one after it
                // to play the new.
                self.drop_before_segment();
                break;
            }
            // The first start also goes ahead on less than the prebuffer
            // once the writer says all there is to play is in (primed).
            let short = self.cons.occupied_len() < self.prebuffer
                && (self.started || !self.stats.primed.load(Relaxed));
            let waiting = short || !self.stats.gate.load(Relaxed);
            if (!self.started || self.awaiting) && waiting && !eos {
                break;
            }
            let n = self.cons.pop_slice(&mut out[filled..filled + limit]);
            self.read += n as u64;
            filled += n;
            if n > 0 && !self.started {
                self.started = true;
                self.stats.mark_first_audio();
            }
            if n > 0 && self.awaiting {
                self.awaiting = false;
                self.stats.mark_seek_done();
            }
            let frames = (n / self.channels) as u64;
            self.stats.frames_played.fetch_add(frames, Relaxed);
            self.stats.segment_frames.fetch_add(frames, Relaxed);
            if n < limit || filled == out.len() {
                break;
            }
        }
        filled
    }

    /// Handles a new segment the producer has begun: drops what a seek
    /// discards (unless `fading`: then it is taken up to the edge, to fade
    /// out), enters the segment once reached, and returns how many of the
    /// `want` samples may be taken before its edge.
    fn segment_edge(&mut self, want: usize, fading: bool) -> usize {
        let generation = self.stats.segment_gen.load(Acquire);
        if generation == self.seen_gen {
            return want;
        }
        let at = self.stats.segment_at.load(Relaxed);
        if !fading && self.stats.segment_discard.load(Relaxed) && self.read < at {
            let avail = self.cons.occupied_len() as u64;
            let k = (at - self.read).min(avail) as usize;
            self.read += self.cons.skip(k) as u64;
        }
        if self.read >= at {
            self.seen_gen = generation;
            self.stats.enter_segment(generation);
            self.awaiting = self.stats.segment_discard.load(Relaxed);
            want
        } else {
            want.min((at - self.read) as usize)
        }
    }

    /// Drops every sample in the ring if no segment has begun since the
    /// last one reached (all of them come before the segment a pending
    /// seek will begin). The samples are counted before the generation is
    /// read, with an acquire fence between: had the writer pushed any
    /// sample of a new segment by the count, its begin (released before
    /// that push) would show in the generation, and nothing is dropped
    /// here ([`Self::segment_edge`] drops up to the segment's edge).
    fn drop_before_segment(&mut self) {
        let n = self.cons.occupied_len();
        std::sync::atomic::fence(Acquire);
        if n > 0 && self.stats.segment_gen.load(Relaxed) == self.seen_gen {
            self.read += self.cons.skip(n) as u64;
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
        assert!(!stats.primed.load(Relaxed));
        assert_eq!(stats.fills_before_start.load(Relaxed), 1);
        w.push_all(&[0.5; 20], &|| true);
        assert!(stats.primed.load(Relaxed), "the prebuffer is in");
        r.fill(&mut out);
        assert_eq!(out, [0.5; 8]);
        assert_eq!(stats.fills_before_start.load(Relaxed), 1);
        assert!(stats.time_to_first_audio().is_some());
        r.fill(&mut out);
        r.fill(&mut out);
        assert_eq!(stats.underrun_at(), None);
        r.fill(&mut out); // 30 pushed, 32 asked: underrun starts
        r.fill(&mut out); // still in the same episode
        assert_eq!(stats.underruns.load(Relaxed), 1);
        assert!(stats.underrun_at().is_some(), "where it ran dry is noted");
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

    #[test]
    fn a_seek_fades_out_drops_what_was_buffered_and_waits_for_the_prebuffer() {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 1, Duration::from_millis(4), stats.clone());
        w.push_all(&[0.1; 20], &|| true);
        let mut out = [9.0f32; 5];
        r.fill(&mut out);
        assert_eq!(out, [0.1; 5]);
        stats.request_seek(Duration::from_secs(30));
        assert_eq!(
            stats.target_position(),
            Duration::from_secs(30),
            "asked, no segment begun yet: the fetch plans around the target already"
        );
        // Asked, not begun: the old audio fades out over 5 ms (5 frames at
        // 1 kHz) instead of stopping dead, and the wait is not an underrun.
        let mut fade = [9.0f32; 8];
        r.fill(&mut fade);
        assert!(fade[0] < 0.1 && fade[0] > 0.07, "{fade:?}");
        assert!(fade.windows(2).all(|p| p[1] <= p[0]), "{fade:?}");
        assert_eq!(&fade[4..], &[0.0; 4]);
        assert_eq!(stats.take_seek(), Some(Duration::from_secs(30)));
        r.fill(&mut out);
        assert_eq!(out, [0.0; 5]);
        assert_eq!(stats.underruns.load(Relaxed), 0);
        w.begin_segment(Duration::from_secs(30), true);
        assert_eq!(stats.target_position(), Duration::from_secs(30));
        w.push_all(&[0.7; 2], &|| true);
        r.fill(&mut out);
        assert_eq!(out, [0.0; 5], "old samples dropped; 2 new ones are under the prebuffer");
        assert_eq!(stats.underruns.load(Relaxed), 0, "waiting after a seek is not an underrun");
        assert!(stats.last_seek_latency().is_none());
        w.push_all(&[0.7; 8], &|| true);
        r.fill(&mut out);
        // The new place fades in.
        let expect = [0.14f32, 0.28, 0.42, 0.56, 0.7];
        assert!(out.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-5), "{out:?}");
        assert!(stats.last_seek_latency().is_some());
        assert_eq!(stats.position(), Duration::from_millis(30_005));
    }

    #[test]
    fn a_seek_drops_the_old_audio_in_the_period_its_fade_ends() {
        // The ring is full (the decode thread is ahead, as while playing
        // from the cache) when a seek is asked and its segment begins.
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 1, Duration::from_millis(20), stats.clone());
        assert_eq!(w.push_all(&[0.1; 5000], &|| false), Push::Interrupted, "full");
        let mut out = [9.0f32; 5];
        r.fill(&mut out);
        stats.request_seek(Duration::from_secs(30));
        assert_eq!(stats.take_seek(), Some(Duration::from_secs(30)));
        w.begin_segment(Duration::from_secs(30), true);
        // One period: the fade out (5 frames), then the old audio is gone.
        let mut period = [9.0f32; 8];
        r.fill(&mut period);
        assert!(period[0] > 0.07 && period[4] == 0.0, "{period:?}");
        assert_eq!(&period[5..], &[0.0; 3]);
        assert_eq!(r.buffered(), 0, "what was buffered before the seek is dropped at once");
        assert_eq!(stats.underruns.load(Relaxed), 0);
        // So the new place fits before the next period, which plays it.
        assert_eq!(w.push_all(&[0.7; 30], &|| false), Push::Done);
        r.fill(&mut period);
        assert!(period[0] > 0.0 && period[7] > 0.6, "{period:?}");
        assert!(stats.last_seek_latency().is_some());
        assert_eq!(stats.underruns.load(Relaxed), 0);
    }

    #[test]
    fn a_seek_drops_the_old_audio_before_its_segment_begins() {
        // The ring is full when a seek is asked; the decode thread takes
        // it and waits for the new place's bytes (a round trip away), so
        // no segment begins for a while.
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 1, Duration::from_millis(20), stats.clone());
        assert_eq!(w.push_all(&[0.1; 5000], &|| false), Push::Interrupted, "full");
        let mut period = [9.0f32; 8];
        r.fill(&mut period);
        stats.request_seek(Duration::from_secs(30));
        assert_eq!(stats.take_seek(), Some(Duration::from_secs(30)));
        r.fill(&mut period);
        assert!(period[0] > 0.07 && period[4] == 0.0, "faded out: {period:?}");
        assert_eq!(r.buffered(), 0, "the old audio is dropped before the segment begins");
        // Old samples the writer pushes after the drop (it had not seen
        // the seek yet) go the same way; silence meanwhile, no underrun.
        assert_eq!(w.push_all(&[0.1; 7], &|| false), Push::Done);
        r.fill(&mut period);
        assert_eq!(period, [0.0; 8]);
        assert_eq!(r.buffered(), 0);
        // The new place's audio fits at once and plays in the next period.
        w.begin_segment(Duration::from_secs(30), true);
        assert_eq!(w.push_all(&[0.7; 30], &|| false), Push::Done);
        r.fill(&mut period);
        assert!(period[0] > 0.0 && period[7] > 0.6, "{period:?}");
        assert!(stats.last_seek_latency().is_some());
        assert_eq!(stats.underruns.load(Relaxed), 0);
        assert_eq!(stats.position(), Duration::from_millis(30_008));
    }

    #[test]
    fn a_segment_begun_after_the_count_is_not_dropped() {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 1, Duration::ZERO, stats.clone());
        w.push_all(&[0.1; 4], &|| true);
        let mut out = [9.0f32; 1];
        r.fill(&mut out);
        stats.request_seek(Duration::from_secs(30));
        assert_eq!(stats.take_seek(), Some(Duration::from_secs(30)));
        w.begin_segment(Duration::from_secs(30), true);
        w.push_all(&[0.7; 4], &|| true);
        // Its generation shows: only the 3 old samples go.
        r.drop_before_segment();
        assert_eq!(r.buffered(), 7);
    }

    #[test]
    fn the_next_segment_follows_without_a_gap() {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 1, Duration::ZERO, stats.clone());
        w.begin_segment(Duration::ZERO, false);
        w.push_all(&[0.1; 3], &|| true);
        w.begin_segment(Duration::ZERO, false);
        w.push_all(&[0.2; 3], &|| true);
        let mut out = [9.0f32; 6];
        r.fill(&mut out);
        assert_eq!(out, [0.1, 0.1, 0.1, 0.2, 0.2, 0.2], "no silence at the join");
        assert_eq!(stats.position(), Duration::from_millis(3), "counted in the new track");
        assert_eq!(stats.underruns.load(Relaxed), 0);
    }

    #[test]
    fn pause_fades_out_keeps_the_rest_and_resume_fades_in() {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 1, Duration::ZERO, stats.clone());
        w.push_all(&[0.5; 20], &|| true);
        let mut out = [9.0f32; 2];
        r.fill(&mut out);
        assert_eq!(out, [0.5; 2]);
        stats.paused.store(true, Relaxed);
        let mut out = [9.0f32; 8];
        r.fill(&mut out);
        let expect = [0.4f32, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0];
        assert!(out.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-5), "{out:?}");
        r.fill(&mut out);
        assert_eq!(out, [0.0; 8], "paused: silence, nothing taken");
        assert_eq!(r.buffered(), 13);
        stats.paused.store(false, Relaxed);
        r.fill(&mut out);
        let expect = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5];
        assert!(out.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-5), "{out:?}");
        assert_eq!(stats.underruns.load(Relaxed), 0);
    }

    #[test]
    fn volume_is_applied_at_the_consumer_at_once() {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, mut r) = ring(1000, 1, Duration::ZERO, stats.clone());
        w.push_all(&[0.5; 100], &|| true);
        let mut out = [9.0f32; 30];
        stats.set_volume(0.5);
        r.fill(&mut out);
        // Samples already in the ring follow the new volume within the
        // 20 ms ramp, not after the ring plays out.
        assert!(out.windows(2).all(|p| p[1] <= p[0]));
        assert!((out[19] - 0.25).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn a_consumer_that_stops_taking_samples_is_reported_not_waited_on_forever() {
        let stats = Arc::new(PlaybackStats::new(Instant::now()));
        let (mut w, _r) = ring(1000, 1, Duration::ZERO, stats.clone());
        // The ring holds 4096 samples; nothing ever drains it.
        assert_eq!(w.push_all(&[0.5; 4096], &|| true), Push::Done);
        let t = Instant::now();
        assert_eq!(w.push_all(&[0.5; 10], &|| true), Push::Stalled);
        assert!(t.elapsed() >= CONSUMER_STALL);
        stats.stop.store(true, Relaxed);
        assert_eq!(w.push_all(&[0.5; 10], &|| !stats.interrupted()), Push::Interrupted);
    }
}
