//! The WAV sink: 32-bit float PCM at the track's own rate, written as fast
//! as decoding goes, to a file, a FIFO or standard output.
//!
//! A regular file gets its sizes filled in when it is finished. A stream
//! (a pipe, a FIFO, standard output) cannot be rewound: its header says
//! "length unknown" (the largest sizes), as streaming WAV writers do, and
//! readers take the data to the end of the stream.
//!
//! The listener's controls act here as they do at a device: volume ramps,
//! pause fades out and holds the writer until resumed (the file has no
//! silence for it: it is time that stops, not sound), and a seek or skip
//! fades out the last few milliseconds before the jump. That is why the
//! last [`FADE_MS`] of audio is held back until
//! the next samples (or the end) come.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::envelope::{Envelope, FADE_MS};
use super::{Sink, SinkFormat};
use crate::error::{Error, Result};
use crate::stats::PlaybackStats;

/// Where the bytes go.
enum Target {
    /// A regular file: its header is completed at the end.
    File(BufWriter<File>),
    /// A pipe, FIFO or terminal: written straight through.
    Stream(BufWriter<Box<dyn Write + Send>>),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::File(f) => f.write(buf),
            Self::Stream(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::File(f) => f.flush(),
            Self::Stream(s) => s.flush(),
        }
    }
}

/// Writes a WAVE_FORMAT_IEEE_FLOAT stream.
pub struct WavSink {
    path: PathBuf,
    out: Target,
    format: SinkFormat,
    data_bytes: u64,
    stats: Arc<PlaybackStats>,
    env: Envelope,
    /// The newest samples, not yet written: a seek or pause fades them out.
    held: Vec<f32>,
    /// How many samples `held` keeps.
    hold: usize,
}

const HEADER_LEN: u64 = 44;

/// Samples converted per write: at most ~10 ms of audio, so a control is
/// followed within that.
const PIECE: usize = 1024;

impl WavSink {
    /// Creates (or truncates) the file at `path` — or opens a FIFO or device
    /// there for writing — and writes a header.
    pub fn create(
        path: &Path,
        rate: u32,
        channels: usize,
        stats: Arc<PlaybackStats>,
    ) -> Result<Self> {
        let err = |e| Error::Write { path: path.to_owned(), err: e };
        let file = File::create(path).map_err(err)?;
        let regular = file.metadata().map(|m| m.file_type().is_file()).unwrap_or(false);
        let out = if regular {
            Target::File(BufWriter::with_capacity(1 << 20, file))
        } else {
            Target::Stream(BufWriter::with_capacity(1 << 16, Box::new(file)))
        };
        Self::start(path.to_owned(), out, rate, channels, stats)
    }

    /// Writes to standard output (a stream of unknown length).
    pub fn stdout(rate: u32, channels: usize, stats: Arc<PlaybackStats>) -> Result<Self> {
        let out = Target::Stream(BufWriter::with_capacity(1 << 16, Box::new(std::io::stdout())));
        Self::start(PathBuf::from("standard output"), out, rate, channels, stats)
    }

    fn start(
        path: PathBuf,
        out: Target,
        rate: u32,
        channels: usize,
        stats: Arc<PlaybackStats>,
    ) -> Result<Self> {
        stats.rate.store(u64::from(rate), Relaxed);
        let hold = ((rate as f32 * FADE_MS / 1000.0) as usize).max(1) * channels.max(1);
        let mut sink = Self {
            path,
            out,
            format: SinkFormat { rate, channels },
            data_bytes: 0,
            env: Envelope::new(rate, channels, stats.volume()),
            stats,
            held: Vec::with_capacity(hold + PIECE),
            hold,
        };
        sink.header().map_err(|e| sink.error(e))?;
        Ok(sink)
    }

    fn error(&self, e: std::io::Error) -> Error {
        Error::Write { path: self.path.clone(), err: e }
    }

    fn header(&mut self) -> std::io::Result<()> {
        let channels = u16::try_from(self.format.channels).unwrap_or(u16::MAX);
        let block = u32::from(channels) * 4;
        // A stream's length is unknown: the largest sizes say "to the end".
        let (riff, data) = match self.out {
            Target::File(_) => {
                let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
                (36u32.saturating_add(data), data)
            }
            Target::Stream(_) => (u32::MAX, u32::MAX),
        };
        let w = &mut self.out;
        w.write_all(b"RIFF")?;
        w.write_all(&riff.to_le_bytes())?;
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

    /// Writes the oldest `n` held samples.
    fn emit(&mut self, n: usize) -> Result<()> {
        let mut bytes = [0u8; PIECE * 4];
        for block in self.held[..n].chunks(PIECE) {
            for (dst, s) in bytes.chunks_exact_mut(4).zip(block) {
                dst.copy_from_slice(&s.to_le_bytes());
            }
            if let Err(e) = self.out.write_all(&bytes[..block.len() * 4]) {
                return Err(self.error(e));
            }
        }
        self.held.drain(..n);
        self.data_bytes += n as u64 * 4;
        Ok(())
    }

    /// Fades the held samples out to silence and writes them: what comes
    /// next fades in.
    fn fade_out_held(&mut self) -> Result<()> {
        let ch = self.format.channels.max(1);
        let frames = self.held.len() / ch;
        for (i, frame) in self.held.chunks_mut(ch).enumerate() {
            let g = 1.0 - (i + 1) as f32 / frames as f32;
            frame.iter_mut().for_each(|s| *s *= g);
        }
        self.env.close();
        self.emit(self.held.len())
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
        // A file's audio is there once written; a stream's once its reader
        // can have it (below).
        let stream = matches!(self.out, Target::Stream(_));
        if !stream {
            self.stats.mark_first_audio();
        }
        let before = self.data_bytes;
        let ch = self.format.channels.max(1);
        for piece in samples.chunks(PIECE - PIECE % ch) {
            if self.stats.paused.load(Relaxed) {
                // Time stops: fade out what was last written and wait; a
                // stream's reader gets everything up to the fade now (not
                // a buffer's worth later).
                self.fade_out_held()?;
                if let Target::Stream(s) = &mut self.out {
                    if let Err(e) = s.flush() {
                        return Err(self.error(e));
                    }
                }
                while self.stats.paused.load(Relaxed) && !self.stats.interrupted() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let start = self.held.len();
            self.held.extend_from_slice(piece);
            let volume = self.stats.volume();
            self.env.apply(&mut self.held[start..], true, volume);
            let frames = (piece.len() / ch) as u64;
            self.stats.frames_played.fetch_add(frames, Relaxed);
            self.stats.segment_frames.fetch_add(frames, Relaxed);
            if self.held.len() > self.hold {
                self.emit(self.held.len() - self.hold)?;
            }
        }
        // A stream's reader (a player behind a pipe) gets each packet's
        // audio as it is decoded, not once 64 KiB (186 ms of stereo) have
        // gathered: one write a packet, tens a second.
        if stream && self.data_bytes > before {
            if let Err(e) = self.out.flush() {
                return Err(self.error(e));
            }
            self.stats.mark_first_audio();
        }
        Ok(())
    }

    fn begin_segment(&mut self, base: Duration, discard: bool) {
        if discard && let Err(e) = self.fade_out_held() {
            tracing::warn!("{e}");
        }
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
        self.emit(self.held.len())?;
        let end = HEADER_LEN + self.data_bytes;
        let result = (|| {
            if let Target::File(f) = &mut self.out {
                f.seek(SeekFrom::Start(0))?;
                self.header()?;
                if let Target::File(f) = &mut self.out {
                    f.seek(SeekFrom::Start(end))?;
                    f.flush()?;
                    f.get_ref().sync_all()?;
                }
                return Ok(());
            }
            self.out.flush()
        })();
        result.map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    /// What a pipe's reader has been given.
    #[derive(Clone, Default)]
    struct Pipe(Arc<Mutex<Vec<u8>>>);

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_reader_gets_each_packet_as_it_is_written() {
        let pipe = Pipe::default();
        let stats = Arc::new(PlaybackStats::new(std::time::Instant::now()));
        let out = Target::Stream(BufWriter::with_capacity(1 << 16, Box::new(pipe.clone())));
        let mut sink =
            WavSink::start(PathBuf::from("pipe"), out, 44_100, 2, stats.clone()).unwrap();
        assert!(pipe.0.lock().unwrap().is_empty(), "nothing before the first audio");
        assert!(stats.time_to_first_audio().is_none());
        // One MP3 packet's worth (1152 frames, stereo): all but the held
        // fade reaches the reader at once, and only then is it first audio.
        sink.write(&[0.25; 2 * 1152]).unwrap();
        let held = (44_100.0 * FADE_MS / 1000.0) as usize;
        let given = pipe.0.lock().unwrap().len();
        assert_eq!(given, HEADER_LEN as usize + (1152 - held) * 2 * 4);
        assert!(stats.time_to_first_audio().is_some());
        // The next packet follows it at once too.
        sink.write(&[0.25; 2 * 1152]).unwrap();
        assert_eq!(pipe.0.lock().unwrap().len(), given + 1152 * 2 * 4);
        sink.finish().unwrap();
        assert_eq!(pipe.0.lock().unwrap().len(), HEADER_LEN as usize + 2 * 1152 * 2 * 4);
    }
}
