//! [`ChunkSource`]: a `Read + Seek` view of a track's verified chunks, for
//! symphonia.
//!
//! A read of bytes that are not here yet blocks (on the decoder's thread)
//! until the fetcher delivers them, marking their chunk urgent. It never
//! returns unverified bytes: the store only holds chunks that matched the
//! manifest. A seek only moves the position; the read that follows does
//! the waiting.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chorus_streamer::store::{ReadError, TrackStore};
use symphonia::core::io::MediaSource;

/// How long one read waits before the wait is reported as a stall.
const REPORT_AFTER: Duration = Duration::from_millis(500);

/// The error a read returns when the store fails; the decoder maps it back.
#[derive(Debug)]
pub struct SourceError(pub ReadError);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

/// Reads a track from its [`TrackStore`].
pub struct ChunkSource {
    store: Arc<TrackStore>,
    /// Where the stream the decoder sees starts in the file.
    base: u64,
    /// Position and length, in the stream's offsets.
    pos: u64,
    len: u64,
    /// Give up on a chunk after this long with no progress (the fetcher
    /// normally fails the store long before).
    max_wait: Duration,
    /// Called once per stall with the chunk waited for.
    on_stall: Box<dyn Fn(u32) + Send + Sync>,
    /// The length is hidden while the decoder opens (until this is
    /// raised, see [`ChunkSource::length_shown`]): symphonia's probe then
    /// skips its scan of the file's end for trailing tags, and readers
    /// their scans of the end for a duration (Ogg's last page): the tags
    /// and the duration are in the manifest, so the first note needs only
    /// what the indexer recorded as headers, read the same way. Seeking
    /// sees the length as usual.
    len_shown: Arc<AtomicBool>,
    /// Bytes symphonia reads after skipping a range, only to keep them
    /// rewindable ([`chorus_streamer::probe::skipped_fill`]): read as
    /// zeros unless here, as the indexer did not count them as headers.
    skipped: Option<std::ops::Range<u64>>,
    /// A FLAC's, an MP4's or an Ogg Vorbis stream's metadata bytes that
    /// decoding does not need (cover art, padding:
    /// [`chorus_streamer::probe::flac_unneeded`],
    /// [`chorus_streamer::probe::mp4_unneeded`], an Ogg's comment-only
    /// pages): those outside the header ranges before the first audio,
    /// and between header ranges after the last audio (an MP4's index at
    /// its end). Read as zeros unless here, so the first note does not
    /// wait for them.
    unneeded: Vec<std::ops::Range<u64>>,
    /// `unneeded` reads as zeros even where it is here (an Ogg's): what
    /// the reader sees must not depend on what has arrived, as a page half
    /// real and half zeros fails its checksum where a page of zeros is
    /// skipped.
    zeros_here: bool,
}

impl ChunkSource {
    /// A source at offset 0.
    pub fn new(
        store: Arc<TrackStore>,
        max_wait: Duration,
        on_stall: Box<dyn Fn(u32) + Send + Sync>,
    ) -> Self {
        let m = store.manifest();
        // MPEG audio is read from where its stream starts, past a leading
        // ID3v2 tag (its first header range; the indexer read it the same
        // way), so cover art in the tag is not fetched before the first
        // note. Its tags are in the manifest.
        let base = match m.media().container {
            chorus_protocol::Container::Mpeg => {
                m.media().header_ranges.first().map_or(0, |r| r.start)
            }
            _ => 0,
        };
        let mut source = Self::at(store, base, max_wait, on_stall);
        // Hidden until the decoder is open (see `len_shown`).
        source.len_shown = Arc::default();
        source
    }

    /// A source whose stream starts at byte `base` of the file (an indexed
    /// seek's frame start), its length shown.
    pub fn at(
        store: Arc<TrackStore>,
        base: u64,
        max_wait: Duration,
        on_stall: Box<dyn Fn(u32) + Send + Sync>,
    ) -> Self {
        let m = store.manifest();
        let len = m.layout().byte_len().saturating_sub(base);
        let len_shown = Arc::new(AtomicBool::new(true));
        let media = m.media();
        use chorus_protocol::{Codec, Container};
        let ogg = media.container == Container::Ogg && media.codec == Codec::Vorbis;
        let cut = ogg || matches!(media.container, Container::Flac | Container::Mp4);
        let unneeded = match (media.time_index.first(), media.time_index.last()) {
            (Some(first), Some(last)) if cut => {
                gaps(&media.header_ranges, first.byte_offset, last.byte_offset)
            }
            _ => Vec::new(),
        };
        Self {
            store,
            base,
            pos: 0,
            len,
            max_wait,
            on_stall,
            len_shown,
            skipped: None,
            unneeded,
            zeros_here: ogg,
        }
    }

    /// Raise this once the decoder is open: from then on the source shows
    /// its length.
    pub fn length_shown(&self) -> Arc<AtomicBool> {
        self.len_shown.clone()
    }
}

impl Read for ChunkSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        let at = self.base + self.pos;
        // Bytes no decoding needs (see `unneeded`, `skipped`): zeros up to
        // the range's end or the chunk's, whichever is first, unless here
        // (an Ogg's, here or not, to the range's end).
        let zeros_until = self
            .unneeded
            .iter()
            .find(|g| g.contains(&at))
            .map(|g| (g.end, self.zeros_here))
            .or_else(|| {
                let s = self.skipped.as_ref().filter(|s| s.contains(&self.pos))?;
                Some((self.base + s.end, false))
            });
        if let Some((until, here_too)) = zeros_until {
            let layout = self.store.manifest().layout();
            let zeros = if here_too {
                Some(until)
            } else {
                let missing = layout.chunk_at(at).filter(|c| !self.store.has(c.0));
                missing.map(|c| until.min(layout.byte_range(c).end))
            };
            if let Some(end) = zeros {
                let end = end.min(self.base + self.len);
                let n = buf.len().min(usize::try_from(end - at).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
        }
        // Where they are zeros here or not, a read from before them stops
        // where they begin.
        let next = self.unneeded.iter().map(|g| g.start).filter(|&z| z > at && self.zeros_here);
        let room = next.min().map_or(usize::MAX, |z| usize::try_from(z - at).unwrap_or(usize::MAX));
        let n = buf.len().min(room);
        let buf = &mut buf[..n];
        let n = match self.store.read_at(at, buf, REPORT_AFTER) {
            Ok(n) => n,
            Err(ReadError::TimedOut(chunk)) => {
                (self.on_stall)(chunk);
                self.store
                    .read_at(at, buf, self.max_wait)
                    .map_err(|e| io::Error::other(SourceError(e)))?
            }
            Err(e) => return Err(io::Error::other(SourceError(e))),
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// What lies outside `headers` (sorted, disjoint) before `first_audio`,
/// and between two of them that both begin after `last_audio` (the last
/// audio point: no audio is there, only metadata the indexer left out).
fn gaps(
    headers: &[std::ops::Range<u64>],
    first_audio: u64,
    last_audio: u64,
) -> Vec<std::ops::Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for h in headers.iter().filter(|h| h.start < first_audio) {
        if at < h.start {
            out.push(at..h.start);
        }
        at = at.max(h.end);
    }
    if at < first_audio {
        out.push(at..first_audio);
    }
    let after: Vec<_> = headers.iter().filter(|h| h.start > last_audio).collect();
    out.extend(after.windows(2).map(|w| w[0].end..w[1].start).filter(|g| g.start < g.end));
    out
}

impl Seek for ChunkSource {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.skipped = match to {
                    SeekFrom::Current(d) if d > 0 => Some(chorus_streamer::probe::skipped_fill(p)),
                    _ => None,
                };
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start")),
        }
    }
}

impl MediaSource for ChunkSource {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        self.len_shown.load(Ordering::Relaxed).then_some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::gaps;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one range is the case
    fn what_a_player_may_read_as_zeros() {
        // Headers at 0..10 and 40..50 before the first audio at 60; an
        // index at the end in three pieces after the last audio at 900.
        let h = [0..10, 40..50, 1000..1010, 1100..1110, 1200..1210];
        assert_eq!(gaps(&h, 60, 900), vec![10..40, 50..60, 1010..1100, 1110..1200]);
        // An index at the front reaching past the first audio: no gap there.
        assert_eq!(gaps(&[0..100], 60, 900), Vec::<std::ops::Range<u64>>::new());
        // Audio from the first byte, one header range after the audio.
        assert_eq!(gaps(&[0..10, 1000..1100], 0, 900), Vec::<std::ops::Range<u64>>::new());
    }
}
