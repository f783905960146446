//! Identifier newtypes: [`TrackId`], [`ChunkHash`], [`PeerId`] and [`ChunkIndex`].
//!
//! The 32-byte ids print as lowercase hex (`Display`, `Debug`) and parse from
//! it (`FromStr`); `fmt_short()` gives the first 8 hex digits for logs.

use std::fmt;
use std::str::FromStr;

use crate::error::ProtocolError;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut buf = [0u8; 64];
    for (i, b) in bytes.iter().take(32).enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    let len = 2 * bytes.len().min(32);
    // The buffer holds only ASCII hex digits.
    f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses exactly 64 hex digits into 32 bytes.
fn parse_hex32(s: &str) -> Result<[u8; 32], ProtocolError> {
    let s = s.as_bytes();
    let err = ProtocolError::InvalidHex { expected: 64 };
    if s.len() != 64 {
        return Err(err);
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0]).ok_or(err.clone())?;
        let lo = hex_digit(pair[1]).ok_or(err.clone())?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps 32 raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 8 hex digits, for logs and status lines.
            pub fn fmt_short(&self) -> ShortId {
                ShortId(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "("))?;
                write_hex(f, &self.0)?;
                f.write_str(")")
            }
        }

        impl FromStr for $name {
            type Err = ProtocolError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map(Self)
            }
        }
    };
}

hash_id!(
    /// A track's identity: the blake3 hash of its manifest's canonical encoding.
    ///
    /// Anyone holding the manifest bytes can check them against the id, so a
    /// track id is all a listener needs to trust what peers send.
    TrackId
);

hash_id!(
    /// The blake3 hash of one chunk's bytes.
    ChunkHash
);

hash_id!(
    /// A node's identity: the blake3 hash of its public key (the TLS
    /// certificate's subject public key info).
    PeerId
);

impl ChunkHash {
    /// Hashes a chunk's bytes.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl TrackId {
    /// Hashes a manifest's canonical encoding.
    pub fn of_manifest_bytes(encoded: &[u8]) -> Self {
        Self(*blake3::hash(encoded).as_bytes())
    }
}

impl PeerId {
    /// Derives a peer id from a public key's DER encoding.
    pub fn from_public_key_der(spki_der: &[u8]) -> Self {
        Self(*blake3::hash(spki_der).as_bytes())
    }
}

/// The short (8 hex digit) form of an id, from `fmt_short()`.
#[derive(Clone, Copy)]
pub struct ShortId([u8; 32]);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0[..4])
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The position of a chunk within a track, counted from zero.
///
/// Only a [`crate::chunk::ChunkLayout`] knows whether an index is in range;
/// use [`crate::chunk::ChunkLayout::index`] to get a checked one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChunkIndex(pub u32);

impl ChunkIndex {
    /// The index as a `usize`, for slice access.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ChunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for ChunkIndex {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short_form() {
        let id = TrackId::from_bytes([0xab; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<TrackId>(), Ok(id));
        assert_eq!(id.fmt_short().to_string(), "abababab");
        assert_eq!(format!("{id:?}"), format!("TrackId({s})"));
        assert_eq!(s.to_uppercase().parse::<TrackId>(), Ok(id));
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert!("abc".parse::<PeerId>().is_err());
        assert!("zz".repeat(32).parse::<PeerId>().is_err());
        assert!("é".repeat(32).parse::<PeerId>().is_err());
    }

    #[test]
    fn chunk_hash_is_blake3() {
        let h = ChunkHash::of(b"hello");
        assert_eq!(h.as_bytes(), blake3::hash(b"hello").as_bytes());
    }
}
