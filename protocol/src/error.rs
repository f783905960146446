//! The one error type of this crate.

use crate::ids::{ChunkIndex, TrackId};

/// Everything that can go wrong when decoding or verifying protocol data.
///
/// Decoding never panics: every malformed input maps to one of these.
/// "A peer lacks this" is not an error of this crate; it travels as an
/// [`crate::message::ErrorReply`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The input ended before the value it was decoding was complete.
    #[error("truncated input: expected more bytes")]
    Truncated,
    /// A frame header announced a body larger than the limit.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced body length.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// A frame carried a message type this implementation does not know.
    #[error("unknown message type 0x{0:02x}")]
    UnknownMessageType(u8),
    /// A frame or manifest was written in a protocol version newer (or older)
    /// than this implementation supports.
    #[error("unsupported version {version} (this implementation supports {min}..={max})")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
        /// Lowest supported version.
        min: u8,
        /// Highest supported version.
        max: u8,
    },
    /// Bytes were left over after a complete value.
    #[error("{0} trailing bytes after a complete value")]
    TrailingBytes(usize),
    /// A variable-length integer overflowed 64 bits or its target type.
    #[error("integer overflow in {0}")]
    Overflow(&'static str),
    /// The encoding was valid but not canonical (e.g. a non-minimal varint),
    /// which would let two byte strings describe one value.
    #[error("non-canonical encoding of {0}")]
    NonCanonical(&'static str),
    /// A string field was not UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A length or count was over its limit.
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count found.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// A field held a value outside its valid range.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A hex string could not be parsed as an identifier.
    #[error("invalid hex identifier: expected {expected} hex digits")]
    InvalidHex {
        /// The number of hex digits expected.
        expected: usize,
    },
    /// A manifest's bytes do not hash to the track id they were requested by.
    #[error("manifest hashes to {actual}, expected {expected}")]
    TrackIdMismatch {
        /// The id that was asked for.
        expected: TrackId,
        /// The hash of what arrived.
        actual: TrackId,
    },
    /// A chunk's bytes do not hash to the manifest's hash for that index.
    #[error("chunk {index} of track {track} failed verification")]
    ChunkHashMismatch {
        /// The track.
        track: TrackId,
        /// The chunk.
        index: ChunkIndex,
    },
    /// A chunk index was beyond the end of the track.
    #[error("chunk {index} is out of range (track has {count} chunks)")]
    ChunkOutOfRange {
        /// The index asked for.
        index: ChunkIndex,
        /// The number of chunks in the track.
        count: u32,
    },
    /// A chunk's hash is in a page of the manifest's hash list that has
    /// not arrived yet (see [`crate::Manifest::learn_hashes`]).
    #[error("the hash of chunk {index} has not arrived yet")]
    HashUnknown {
        /// The chunk.
        index: ChunkIndex,
    },
    /// Hash list bytes do not hash to the manifest's page hash.
    #[error("page {page} of the hash list of track {track} failed verification")]
    HashPageMismatch {
        /// The track.
        track: TrackId,
        /// The page.
        page: u32,
    },
    /// A chunk had the wrong length for its position in the track.
    #[error("chunk {index} has {len} bytes, expected {expected}")]
    ChunkLength {
        /// The chunk.
        index: ChunkIndex,
        /// Bytes received.
        len: usize,
        /// Bytes expected from the manifest's layout.
        expected: u64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
