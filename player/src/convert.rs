//! Converting decoded audio to what the sink takes: channel mapping and,
//! when the device cannot run at the track's rate, resampling with rubato.
//! Buffers are allocated once and reused for every block.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::error::{Error, Result};
use crate::sink::SinkFormat;

/// Frames the resampler takes per call: 1024 frames is 21–23 ms at
/// 44.1/48 kHz, small enough not to matter for latency.
const CHUNK: usize = 1024;

/// Turns decoder output into sink input.
pub struct Converter {
    from_channels: usize,
    to: SinkFormat,
    mapped: Vec<f32>,
    resampler: Option<Resampling>,
}

struct Resampling {
    inner: Async<f32>,
    pending: Vec<f32>,
    /// One input chunk, padded at the end of the track.
    input: Vec<f32>,
    out: Vec<f32>,
    /// Output frames still to drop: the resampler's delay at the start.
    delay: usize,
}

impl Converter {
    /// A converter from `rate`/`channels` to the sink's format.
    pub fn new(rate: u32, channels: usize, to: SinkFormat) -> Result<Self> {
        let resampler = if rate == to.rate {
            None
        } else {
            let params = SincInterpolationParameters {
                sinc_len: 128,
                f_cutoff: Some(0.95),
                interpolation: SincInterpolationType::Linear,
                oversampling_factor: 128,
                window: WindowFunction::BlackmanHarris2,
            };
            let ratio = f64::from(to.rate) / f64::from(rate);
            let inner =
                Async::<f32>::new_sinc(ratio, 1.0, &params, CHUNK, to.channels, FixedAsync::Input)
                    .map_err(|e| Error::Resample(e.to_string()))?;
            let out = vec![0.0; inner.output_frames_max() * to.channels];
            let delay = inner.output_delay();
            Some(Resampling {
                inner,
                pending: Vec::with_capacity(CHUNK * to.channels * 2),
                input: Vec::with_capacity(CHUNK * to.channels * 2),
                out,
                delay,
            })
        };
        Ok(Self { from_channels: channels, to, mapped: Vec::new(), resampler })
    }

    /// Converts one block, calling `emit` with ready samples (zero or more
    /// times).
    pub fn push(
        &mut self,
        block: &[f32],
        emit: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        let mapped: &[f32] = if self.from_channels == self.to.channels {
            block
        } else {
            map_channels(block, self.from_channels, self.to.channels, &mut self.mapped);
            &self.mapped
        };
        match &mut self.resampler {
            None => emit(mapped),
            Some(r) => {
                r.pending.extend_from_slice(mapped);
                r.run(self.to.channels, false, emit)
            }
        }
    }

    /// Forgets what the resampler holds (after a seek: the samples before
    /// it are not wanted).
    pub fn reset(&mut self) {
        if let Some(r) = &mut self.resampler {
            r.inner.reset();
            r.pending.clear();
            r.delay = r.inner.output_delay();
        }
    }

    /// Flushes what the resampler holds at the end of the track.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()> {
        match &mut self.resampler {
            None => Ok(()),
            Some(r) => r.run(self.to.channels, true, emit),
        }
    }
}

impl Resampling {
    fn run(
        &mut self,
        ch: usize,
        last: bool,
        emit: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        let mut consumed = 0;
        loop {
            let need = self.inner.input_frames_next();
            let have = (self.pending.len() - consumed) / ch;
            if have < need && !(last && have > 0) {
                break;
            }
            let frames = have.min(need);
            self.input.clear();
            self.input.extend_from_slice(&self.pending[consumed..consumed + frames * ch]);
            self.input.resize(need * ch, 0.0);
            let src = InterleavedSlice::new(&self.input[..], ch, need)
                .map_err(|e| Error::Resample(e.to_string()))?;
            let out_frames = self.out.len() / ch;
            let mut dst = InterleavedSlice::new_mut(&mut self.out[..], ch, out_frames)
                .map_err(|e| Error::Resample(e.to_string()))?;
            let (_, produced) = self
                .inner
                .process_into_buffer(&src, &mut dst, None)
                .map_err(|e| Error::Resample(e.to_string()))?;
            let produced = if frames < need {
                // A padded final block: keep only the share that is audio.
                (produced * frames).div_ceil(need)
            } else {
                produced
            };
            let skip = self.delay.min(produced);
            self.delay -= skip;
            if produced > skip {
                emit(&self.out[skip * ch..produced * ch])?;
            }
            consumed += frames * ch;
        }
        self.pending.drain(..consumed);
        Ok(())
    }
}

/// Mono to many: copy; many to mono: average; otherwise keep the first
/// channels and pad with silence.
fn map_channels(block: &[f32], from: usize, to: usize, out: &mut Vec<f32>) {
    let frames = block.len() / from;
    out.clear();
    out.reserve(frames * to);
    for f in block.chunks_exact(from) {
        match (from, to) {
            (1, _) => out.extend(std::iter::repeat_n(f[0], to)),
            (_, 1) => out.push(f.iter().sum::<f32>() / from as f32),
            _ => out.extend((0..to).map(|c| f.get(c).copied().unwrap_or(0.0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_mapping() {
        let mut out = Vec::new();
        map_channels(&[0.5, -0.5], 1, 2, &mut out);
        assert_eq!(out, [0.5, 0.5, -0.5, -0.5]);
        map_channels(&[0.2, 0.4, 1.0, 0.0], 2, 1, &mut out);
        assert!((out[0] - 0.3).abs() < 1e-6 && (out[1] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn resampling_keeps_length_and_pitch() {
        // 1 s of a 1 kHz sine at 44.1 kHz to 48 kHz.
        let input: Vec<f32> = (0..44_100)
            .map(|i| (i as f32 * 1000.0 * std::f32::consts::TAU / 44_100.0).sin())
            .collect();
        let mut c = Converter::new(44_100, 1, SinkFormat { rate: 48_000, channels: 1 }).unwrap();
        let mut out = Vec::new();
        for block in input.chunks(1000) {
            c.push(block, &mut |s| {
                out.extend_from_slice(s);
                Ok(())
            })
            .unwrap();
        }
        c.finish(&mut |s| {
            out.extend_from_slice(s);
            Ok(())
        })
        .unwrap();
        assert!((out.len() as i64 - 48_000).abs() < 200, "{} frames", out.len());
        // Zero crossings: 2 per cycle, 1000 cycles.
        let crossings =
            out[2000..46_000].windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        let expected = 2.0 * 1000.0 * 44_000.0 / 48_000.0;
        assert!((crossings as f64 - expected).abs() < 10.0, "{crossings} crossings");
    }
}
