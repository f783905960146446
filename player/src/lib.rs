//! # chorus-player
//!
//! Streams a track from peers and plays it: chunk-backed media source,
//! symphonia decode, rubato resampling, a lock-free ring buffer and audio
//! sinks.
//!
//! Entry points:
//!
//! - [`play::play`]: fetch, decode and play one track, returning a
//!   [`play::PlaybackReport`] (time to first audio, underruns, bytes).
//! - [`sink::OutputSpec`]: the device, the paced null sink, or a WAV file.
//! - [`decode::Decoder`] and [`decode::decode_file`]: decoding on its own,
//!   also used to check streamed output against a local decode.
//! - [`sink::device::list_devices`]: the output devices.

pub mod convert;
pub mod decode;
pub mod error;
pub mod play;
pub mod sink;
pub mod source;
pub mod stats;

pub use error::{Error, Result};
