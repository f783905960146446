//! Chunking: how a track's bytes are cut into verifiable chunks.
//!
//! The first chunk holds `lead` bytes (1 to `chunk_size`), every later one
//! `chunk_size` bytes but the last, which holds the rest: chunk `i > 0`
//! covers bytes `lead + (i-1) * chunk_size ..`. A library cuts where the
//! decoder starts reading past a leading tag (the lead is that offset
//! modulo the chunk size), so the chunk playback starts with is the stream
//! from its first byte, not the tail of a cover picture; with a lead of
//! `chunk_size` the cuts are at multiples of it.

use std::ops::Range;

use bytes::Bytes;

use crate::error::{ProtocolError, Result};
use crate::ids::{ChunkHash, ChunkIndex};
use crate::limits;

/// A validated chunk size: a power of two from [`limits::MIN_CHUNK_SIZE`] to
/// [`limits::MAX_CHUNK_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkSize(u32);

impl ChunkSize {
    /// 16 KiB: the chunk size of Spotify's P2P network and iroh-blobs'
    /// verification group. Small enough that the first chunk arrives within
    /// one round trip on a slow link (16 KiB at 1 Mbit/s is 130 ms), large
    /// enough that per-request overhead (~100 bytes of framing and QUIC
    /// stream setup) stays under 1%.
    pub const DEFAULT: Self = Self(16 * 1024);

    /// Checks a size in bytes.
    pub fn new(bytes: u32) -> Result<Self> {
        if bytes.is_power_of_two()
            && (limits::MIN_CHUNK_SIZE..=limits::MAX_CHUNK_SIZE).contains(&bytes)
        {
            Ok(Self(bytes))
        } else {
            Err(ProtocolError::Invalid("chunk size (a power of two from 1 KiB to 1 MiB)"))
        }
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How a track of `byte_len` bytes is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkLayout {
    byte_len: u64,
    chunk_size: ChunkSize,
    /// The first chunk's length (before the end of the track cuts it).
    lead: u32,
    /// The second chunk's length when it is a gap of its own (bytes a
    /// player never needs, right before the audio: a FLAC's padding), 0
    /// when the chunks after the first are all full ones.
    gap: u32,
    count: u32,
}

impl ChunkLayout {
    /// The layout of a track cut at multiples of `chunk_size`; fails for an
    /// empty track or one with more than [`limits::MAX_CHUNKS`] chunks.
    pub fn new(byte_len: u64, chunk_size: ChunkSize) -> Result<Self> {
        Self::with_lead(byte_len, chunk_size, chunk_size.get())
    }

    /// The layout with a cut at byte `boundary` (where the audio begins):
    /// the first chunk holds `boundary` modulo the chunk size. A boundary
    /// at 0, a multiple of the chunk size or past the end changes nothing.
    pub fn aligned(byte_len: u64, chunk_size: ChunkSize, boundary: u64) -> Result<Self> {
        let size = u64::from(chunk_size.get());
        let lead = match boundary % size {
            0 => size,
            _ if boundary >= byte_len => size,
            r => r,
        };
        // lead <= size, a u32.
        Self::with_lead(byte_len, chunk_size, lead as u32)
    }

    /// The layout whose first chunk holds `lead` bytes (1 to the chunk
    /// size), as a manifest states it.
    pub fn with_lead(byte_len: u64, chunk_size: ChunkSize, lead: u32) -> Result<Self> {
        Self::with_gap(byte_len, chunk_size, lead, 0)
    }

    /// The layout whose first chunk holds `lead` bytes and whose second,
    /// if `gap` is not 0, holds `gap` bytes (1 to the chunk size each;
    /// the gap ends before the track does), every later one a full chunk
    /// but the last: a cut on each side of bytes a player never needs
    /// (a FLAC's padding between its metadata and its first frame), so
    /// that no chunk a start needs carries them. As a manifest states it.
    pub fn with_gap(byte_len: u64, chunk_size: ChunkSize, lead: u32, gap: u32) -> Result<Self> {
        if byte_len == 0 {
            return Err(ProtocolError::Invalid("track length (empty)"));
        }
        if lead == 0 || lead > chunk_size.get() {
            return Err(ProtocolError::Invalid("first chunk length (1 to the chunk size)"));
        }
        if gap > chunk_size.get() || (gap > 0 && u64::from(lead) + u64::from(gap) >= byte_len) {
            return Err(ProtocolError::Invalid(
                "second chunk length (to the chunk size, not the end)",
            ));
        }
        let rest = byte_len.saturating_sub(u64::from(lead) + u64::from(gap));
        let count = 1 + u64::from(gap > 0) + rest.div_ceil(u64::from(chunk_size.get()));
        if count > u64::from(limits::MAX_CHUNKS) {
            return Err(ProtocolError::TooMany {
                what: "chunks in a track",
                count,
                max: u64::from(limits::MAX_CHUNKS),
            });
        }
        // count <= MAX_CHUNKS, a u32.
        Ok(Self { byte_len, chunk_size, lead, gap, count: count as u32 })
    }

    /// The track's length in bytes.
    pub fn byte_len(&self) -> u64 {
        self.byte_len
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
    }

    /// The first chunk's length, before the end of the track cuts it (the
    /// chunk size when the cuts are at its multiples).
    pub fn lead(&self) -> u32 {
        self.lead
    }

    /// The second chunk's length when it is a gap of its own
    /// ([`ChunkLayout::with_gap`]), else 0.
    pub fn gap(&self) -> u32 {
        self.gap
    }

    /// Where the full chunks begin: after the first chunk and the gap.
    fn grid(&self) -> u64 {
        u64::from(self.lead) + u64::from(self.gap)
    }

    /// The index of the first full chunk (1, or 2 after a gap).
    fn first_full(&self) -> u32 {
        1 + u32::from(self.gap > 0)
    }

    /// The number of chunks.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// A checked chunk index.
    pub fn index(&self, i: u32) -> Result<ChunkIndex> {
        if i < self.count {
            Ok(ChunkIndex(i))
        } else {
            Err(ProtocolError::ChunkOutOfRange { index: ChunkIndex(i), count: self.count })
        }
    }

    /// The byte range chunk `index` covers (clamped to the track).
    pub fn byte_range(&self, index: ChunkIndex) -> Range<u64> {
        let (size, lead) = (u64::from(self.chunk_size.get()), u64::from(self.lead));
        let (start, len) = match index.0 {
            0 => (0, lead),
            1 if self.gap > 0 => (lead, u64::from(self.gap)),
            i => (self.grid() + u64::from(i - self.first_full()) * size, size),
        };
        let start = start.min(self.byte_len);
        start..(start + len).min(self.byte_len)
    }

    /// The length of chunk `index` in bytes.
    pub fn chunk_len(&self, index: ChunkIndex) -> u64 {
        let r = self.byte_range(index);
        r.end - r.start
    }

    /// The chunk that holds byte `offset`, or `None` past the end.
    pub fn chunk_at(&self, offset: u64) -> Option<ChunkIndex> {
        if offset >= self.byte_len {
            return None;
        }
        Some(ChunkIndex(self.index_of(offset)))
    }

    /// The chunk holding `offset`, which is within the track.
    fn index_of(&self, offset: u64) -> u32 {
        if offset < u64::from(self.lead) {
            return 0;
        }
        if offset < self.grid() {
            return 1;
        }
        // offset < byte_len, so the index is < count, a u32.
        self.first_full() + ((offset - self.grid()) / u64::from(self.chunk_size.get())) as u32
    }

    /// The chunks that together cover `range` (empty for an empty range).
    pub fn chunks_covering(&self, range: Range<u64>) -> Range<u32> {
        let end = range.end.min(self.byte_len);
        if range.start >= end {
            return 0..0;
        }
        self.index_of(range.start)..self.index_of(end - 1) + 1
    }

    /// Iterates over every chunk index.
    pub fn indices(&self) -> impl Iterator<Item = ChunkIndex> + use<> {
        (0..self.count).map(ChunkIndex)
    }
}

/// Cuts `data` into chunks (zero-copy slices) and hashes each one.
pub fn chunk_bytes(data: &Bytes, layout: &ChunkLayout) -> Result<(Vec<ChunkHash>, Vec<Bytes>)> {
    if data.len() as u64 != layout.byte_len() {
        return Err(ProtocolError::Invalid("data length does not match the layout"));
    }
    let chunks: Vec<Bytes> = layout
        .indices()
        .map(|i| {
            let r = layout.byte_range(i);
            // Within data: its length is the layout's.
            data.slice(r.start as usize..r.end as usize)
        })
        .collect();
    let hashes = chunks.iter().map(|c| ChunkHash::of(c)).collect();
    Ok((hashes, chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_is_validated() {
        assert!(ChunkSize::new(16 * 1024).is_ok());
        assert!(ChunkSize::new(1024).is_ok());
        assert!(ChunkSize::new(1 << 20).is_ok());
        assert!(ChunkSize::new(512).is_err());
        assert!(ChunkSize::new(2 << 20).is_err());
        assert!(ChunkSize::new(3000).is_err());
    }

    #[test]
    fn layout_covers_every_byte_once() {
        let l = ChunkLayout::new(40_000, ChunkSize::new(16_384).unwrap_or_default()).unwrap();
        assert_eq!(l.count(), 3);
        assert_eq!(l.byte_range(ChunkIndex(0)), 0..16_384);
        assert_eq!(l.byte_range(ChunkIndex(2)), 32_768..40_000);
        assert_eq!(l.chunk_len(ChunkIndex(2)), 7_232);
        assert_eq!(l.chunk_at(16_384), Some(ChunkIndex(1)));
        assert_eq!(l.chunk_at(40_000), None);
        assert_eq!(l.chunks_covering(16_000..16_500), 0..2);
        assert_eq!(l.chunks_covering(39_999..99_999), 2..3);
        assert_eq!(l.chunks_covering(5..5), 0..0);
        assert!(l.index(3).is_err());
        assert!(ChunkLayout::new(0, ChunkSize::DEFAULT).is_err());
    }

    #[test]
    fn a_lead_puts_a_cut_at_the_boundary() {
        let size = ChunkSize::new(1024).unwrap_or_default();
        let l = ChunkLayout::aligned(5000, size, 1300).unwrap();
        assert_eq!(l.lead(), 276);
        assert_eq!(l.count(), 6);
        assert_eq!(l.byte_range(ChunkIndex(0)), 0..276);
        assert_eq!(l.byte_range(ChunkIndex(1)), 276..1300);
        assert_eq!(l.byte_range(ChunkIndex(2)), 1300..2324);
        assert_eq!(l.byte_range(ChunkIndex(5)), 4372..5000);
        assert_eq!(l.chunk_at(275), Some(ChunkIndex(0)));
        assert_eq!(l.chunk_at(276), Some(ChunkIndex(1)));
        assert_eq!(l.chunk_at(1300), Some(ChunkIndex(2)));
        assert_eq!(l.chunk_at(4999), Some(ChunkIndex(5)));
        assert_eq!(l.chunks_covering(0..277), 0..2);
        assert_eq!(l.chunks_covering(1300..2324), 2..3);
        // No cut asked for, or one already at a multiple: plain layout.
        for b in [0, 2048, 6000] {
            assert_eq!(
                ChunkLayout::aligned(5000, size, b).unwrap(),
                ChunkLayout::new(5000, size).unwrap()
            );
        }
        // A track shorter than its lead is one chunk.
        let short = ChunkLayout::with_lead(100, size, 500).unwrap();
        assert_eq!((short.count(), short.byte_range(ChunkIndex(0))), (1, 0..100));
        assert!(ChunkLayout::with_lead(5000, size, 0).is_err());
        assert!(ChunkLayout::with_lead(5000, size, 1025).is_err());
    }

    #[test]
    fn a_gap_is_a_chunk_of_its_own_between_the_first_and_the_full_ones() {
        let size = ChunkSize::new(1024).unwrap_or_default();
        let l = ChunkLayout::with_gap(5000, size, 167, 800).unwrap();
        assert_eq!((l.lead(), l.gap(), l.count()), (167, 800, 6));
        assert_eq!(l.byte_range(ChunkIndex(0)), 0..167);
        assert_eq!(l.byte_range(ChunkIndex(1)), 167..967);
        assert_eq!(l.byte_range(ChunkIndex(2)), 967..1991);
        assert_eq!(l.byte_range(ChunkIndex(5)), 4039..5000);
        assert_eq!(l.chunk_at(166), Some(ChunkIndex(0)));
        assert_eq!(l.chunk_at(167), Some(ChunkIndex(1)));
        assert_eq!(l.chunk_at(966), Some(ChunkIndex(1)));
        assert_eq!(l.chunk_at(967), Some(ChunkIndex(2)));
        assert_eq!(l.chunk_at(4999), Some(ChunkIndex(5)));
        assert_eq!(l.chunks_covering(100..1000), 0..3);
        // No gap: the lead's layout.
        assert_eq!(
            ChunkLayout::with_gap(5000, size, 276, 0),
            ChunkLayout::with_lead(5000, size, 276)
        );
        // A gap longer than a chunk, or reaching the end: refused.
        assert!(ChunkLayout::with_gap(5000, size, 167, 1025).is_err());
        assert!(ChunkLayout::with_gap(967, size, 167, 800).is_err());
        assert!(ChunkLayout::with_gap(968, size, 167, 800).is_ok());
    }

    #[test]
    fn chunk_bytes_slices_and_hashes() {
        let data = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
        let l = ChunkLayout::new(5000, ChunkSize::new(1024).unwrap_or_default()).unwrap();
        let (hashes, chunks) = chunk_bytes(&data, &l).unwrap();
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[4].len(), 5000 - 4096);
        assert_eq!(hashes[1], ChunkHash::of(&data[1024..2048]));
    }
}
