//! Chunking: how a track's bytes are cut into verifiable chunks.
//!
//! Every chunk but the last has exactly `chunk_size` bytes; the last holds the
//! rest. Chunk `i` covers bytes `i * chunk_size .. min((i+1) * chunk_size, len)`.

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
    count: u32,
}

impl ChunkLayout {
    /// The layout of a track; fails for an empty track or one with more than
    /// [`limits::MAX_CHUNKS`] chunks.
    pub fn new(byte_len: u64, chunk_size: ChunkSize) -> Result<Self> {
        if byte_len == 0 {
            return Err(ProtocolError::Invalid("track length (empty)"));
        }
        let count = byte_len.div_ceil(u64::from(chunk_size.get()));
        if count > u64::from(limits::MAX_CHUNKS) {
            return Err(ProtocolError::TooMany {
                what: "chunks in a track",
                count,
                max: u64::from(limits::MAX_CHUNKS),
            });
        }
        // count <= MAX_CHUNKS, a u32.
        Ok(Self { byte_len, chunk_size, count: count as u32 })
    }

    /// The track's length in bytes.
    pub fn byte_len(&self) -> u64 {
        self.byte_len
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
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
        let size = u64::from(self.chunk_size.get());
        let start = (u64::from(index.0) * size).min(self.byte_len);
        start..(start + size).min(self.byte_len)
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
        // offset < byte_len, so the quotient is < count, a u32.
        Some(ChunkIndex((offset / u64::from(self.chunk_size.get())) as u32))
    }

    /// The chunks that together cover `range` (empty for an empty range).
    pub fn chunks_covering(&self, range: Range<u64>) -> Range<u32> {
        let end = range.end.min(self.byte_len);
        if range.start >= end {
            return 0..0;
        }
        let size = u64::from(self.chunk_size.get());
        // Both quotients are <= count, a u32.
        (range.start / size) as u32..end.div_ceil(size) as u32
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
    let size = layout.chunk_size().get() as usize;
    let chunks: Vec<Bytes> = (0..data.len())
        .step_by(size)
        .map(|start| data.slice(start..(start + size).min(data.len())))
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
    fn chunk_bytes_slices_and_hashes() {
        let data = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
        let l = ChunkLayout::new(5000, ChunkSize::new(1024).unwrap_or_default()).unwrap();
        let (hashes, chunks) = chunk_bytes(&data, &l).unwrap();
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[4].len(), 5000 - 4096);
        assert_eq!(hashes[1], ChunkHash::of(&data[1024..2048]));
    }
}
