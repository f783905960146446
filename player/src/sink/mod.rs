//! Audio sinks behind one trait: the device ([`device`]), a paced null sink
//! ([`null`]) and a WAV file ([`wav`]).
//!
//! The device and null sinks share [`ring`]: the decode thread pushes into
//! a lock-free SPSC ring buffer, and the consumer (the cpal callback, or the
//! null sink's clock thread) pops from it. The consumer only pops, counts
//! with atomics and fills silence on underrun: no allocation, no lock, no
//! logging, no blocking.

pub mod device;
pub mod envelope;
pub mod null;
pub mod ring;
pub mod wav;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::stats::PlaybackStats;

/// Where audio goes, as chosen on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// The audio device (the default one, or one by name).
    Device(Option<String>),
    /// Consume at real-time pace, by our own clock, and discard.
    Null,
    /// Write a 32-bit float WAV file at the track's own rate, as fast as
    /// decoding goes (a FIFO or device path is written as a stream).
    Wav(PathBuf),
    /// Write a WAV stream of unknown length to standard output (`-`).
    Stdout,
}

impl std::str::FromStr for OutputSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "default" => Self::Device(None),
            "null" => Self::Null,
            "-" => Self::Stdout,
            path => Self::Wav(PathBuf::from(path)),
        })
    }
}

/// The format a sink was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkFormat {
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: usize,
}

/// Where decoded samples go.
pub trait Sink {
    /// The format the sink takes; the decoder converts to it.
    fn format(&self) -> SinkFormat;
    /// Hands over interleaved samples in [`Sink::format`], blocking while
    /// the sink is full.
    fn write(&mut self, samples: &[f32]) -> Result<()>;
    /// Waits until everything written has played, then stops.
    fn finish(&mut self) -> Result<()>;
    /// The next sample written is at `base` in the (same or next) track.
    /// With `discard` (a seek), what was written but not yet played is
    /// dropped; without (the next track of a gapless queue), it plays out
    /// first, without a gap.
    fn begin_segment(&mut self, base: std::time::Duration, discard: bool);
}

/// How often a sink that has not started checks whether its first audio is
/// ready ([`crate::stats::PlaybackStats::ready_to_start`]). Its wait is on
/// the first note's path: at 1 ms, half a millisecond on average (traced:
/// 0.3-1.3 ms from the start rule met to the first sample). Only before
/// the start: a few hundred wake-ups a play.
pub(crate) const START_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// Opens the sink `spec` for audio at `rate` with `channels`.
pub fn open(
    spec: &OutputSpec,
    rate: u32,
    channels: usize,
    prebuffer: std::time::Duration,
    stats: Arc<PlaybackStats>,
) -> Result<Box<dyn Sink>> {
    Ok(match spec {
        OutputSpec::Device(name) => {
            Box::new(device::DeviceSink::open(name.as_deref(), rate, channels, prebuffer, stats)?)
        }
        OutputSpec::Null => Box::new(null::NullSink::open(rate, channels, prebuffer, stats)),
        OutputSpec::Wav(path) => Box::new(wav::WavSink::create(path, rate, channels, stats)?),
        OutputSpec::Stdout => Box::new(wav::WavSink::stdout(rate, channels, stats)?),
    })
}

/// For the sinks' tests: holds the gate closed a while after the
/// prebuffer is in (long enough for a clock started at the open to run
/// several periods), opens it, and checks the first fill was audio.
#[cfg(test)]
pub(crate) fn assert_starts_at_the_first_audio(
    stats: &crate::stats::PlaybackStats,
    gate: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering::Relaxed;
    assert!(stats.primed.load(Relaxed), "the prebuffer is in");
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(stats.time_to_first_audio().is_none(), "the gate holds playback back");
    gate.store(true, Relaxed);
    for _ in 0..5000 {
        if stats.time_to_first_audio().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(stats.time_to_first_audio().is_some(), "played once the gate opened");
    assert_eq!(stats.fills_before_start.load(Relaxed), 0, "no silence ahead of the first note");
}
