//! The WAV file sink: 32-bit float PCM at the track's own rate, written as
//! fast as decoding goes.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{Sink, SinkFormat};
use crate::error::{Error, Result};
use crate::stats::PlaybackStats;

/// Writes a WAVE_FORMAT_IEEE_FLOAT file.
pub struct WavSink {
    path: PathBuf,
    out: BufWriter<File>,
    format: SinkFormat,
    data_bytes: u64,
    stats: Arc<PlaybackStats>,
}

const HEADER_LEN: u64 = 44;

impl WavSink {
    /// Creates the file and writes a header to be completed by `finish`.
    pub fn create(
        path: &Path,
        rate: u32,
        channels: usize,
        stats: Arc<PlaybackStats>,
    ) -> Result<Self> {
        let err = |e| Error::Write { path: path.to_owned(), source: e };
        let file = File::create(path).map_err(err)?;
        stats.rate.store(u64::from(rate), Relaxed);
        let mut sink = Self {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            format: SinkFormat { rate, channels },
            data_bytes: 0,
            stats,
        };
        sink.header().map_err(err)?;
        Ok(sink)
    }

    fn header(&mut self) -> std::io::Result<()> {
        let channels = u16::try_from(self.format.channels).unwrap_or(u16::MAX);
        let block = u32::from(channels) * 4;
        let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
        let w = &mut self.out;
        w.write_all(b"RIFF")?;
        w.write_all(&(36u32.saturating_add(data)).to_le_bytes())?;
        w.write_all(b"WAVEfmt ")?;
        w.write_all(&16u32.to_le_bytes())?;
        w.write_all(&3u16.to_le_bytes())?; // IEEE float
        w.write_all(&channels.to_le_bytes())?;
        w.write_all(&self.format.rate.to_le_bytes())?;
        w.write_all(&(self.format.rate * block).to_le_bytes())?;
        w.write_all(&(block as u16).to_le_bytes())?;
        w.write_all(&32u16.to_le_bytes())?;
        w.write_all(b"data")?;
        w.write_all(&data.to_le_bytes())
    }
}

impl Sink for WavSink {
    fn format(&self) -> SinkFormat {
        self.format
    }

    fn write(&mut self, samples: &[f32]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        self.stats.mark_first_audio();
        let mut bytes = [0u8; 4096];
        for block in samples.chunks(bytes.len() / 4) {
            for (dst, s) in bytes.chunks_exact_mut(4).zip(block) {
                dst.copy_from_slice(&s.to_le_bytes());
            }
            self.out
                .write_all(&bytes[..block.len() * 4])
                .map_err(|e| Error::Write { path: self.path.clone(), source: e })?;
        }
        self.data_bytes += samples.len() as u64 * 4;
        let frames = (samples.len() / self.format.channels) as u64;
        self.stats.frames_played.fetch_add(frames, Relaxed);
        self.stats.segment_frames.fetch_add(frames, Relaxed);
        Ok(())
    }

    fn begin_segment(&mut self, base: std::time::Duration, discard: bool) {
        // Written at once: the segment starts now.
        let s = &self.stats;
        s.segment_base_ms.store(u64::try_from(base.as_millis()).unwrap_or(u64::MAX), Relaxed);
        s.segment_discard.store(discard, Relaxed);
        let generation = s.segment_gen.fetch_add(1, Relaxed) + 1;
        s.enter_segment(generation);
        if discard {
            s.mark_seek_done();
        }
    }

    fn finish(&mut self) -> Result<()> {
        let end = HEADER_LEN + self.data_bytes;
        let result = (|| {
            self.out.seek(SeekFrom::Start(0))?;
            self.header()?;
            self.out.seek(SeekFrom::Start(end))?;
            self.out.flush()?;
            self.out.get_ref().sync_all()
        })();
        result.map_err(|e| Error::Write { path: self.path.clone(), source: e })
    }
}
