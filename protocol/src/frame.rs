//! Framing: how messages are delimited on a QUIC stream.
//!
//! ```text
//! frame = length: u32 big-endian   (bytes that follow, version and kind included)
//!         version: u8              (protocol version the payload is written in)
//!         kind: u8                 (MessageKind)
//!         payload                  (length - 2 bytes)
//! ```
//!
//! The length is checked against the maximum before anything is buffered,
//! so a peer cannot make us wait for (or allocate) an oversized frame.
//! [`FrameDecoder`] is a sans-IO incremental decoder for byte streams;
//! [`read_header`] and [`decode_body`] suit readers that fetch exactly one
//! frame at a time.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};
use crate::ids::{ChunkIndex, TrackId};
use crate::limits;
use crate::message::{Message, MessageKind, PathReport, chunk_data_prefix};

/// The protocol version this implementation writes.
pub const VERSION: u8 = 4;
/// The oldest protocol version this implementation reads.
pub const MIN_VERSION: u8 = 4;
/// Bytes before the payload: length, version, kind.
pub const HEADER_LEN: usize = 6;
/// The length field's size.
pub const LEN_PREFIX: usize = 4;

/// A decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The version the sender wrote.
    pub version: u8,
    /// The message.
    pub message: Message,
}

/// Checks that this implementation reads frames of `version`.
pub fn check_version(version: u8) -> Result<()> {
    if (MIN_VERSION..=VERSION).contains(&version) {
        Ok(())
    } else {
        Err(ProtocolError::UnsupportedVersion { version, min: MIN_VERSION, max: VERSION })
    }
}

fn body_len_of(payload_len: usize) -> Result<u32> {
    let len = payload_len + 2;
    if len > limits::MAX_FRAME_LEN as usize {
        return Err(ProtocolError::FrameTooLarge { len: len as u64, max: limits::MAX_FRAME_LEN });
    }
    // len <= MAX_FRAME_LEN, a u32.
    Ok(len as u32)
}

/// Appends `message` as one frame of the current version.
pub fn encode_into(message: &Message, buf: &mut BytesMut) -> Result<()> {
    let payload_len = message.encoded_len();
    let body_len = body_len_of(payload_len)?;
    buf.reserve(LEN_PREFIX + body_len as usize);
    buf.put_u32(body_len);
    buf.put_u8(VERSION);
    buf.put_u8(message.kind() as u8);
    let before = buf.len();
    message.encode(buf);
    debug_assert_eq!(buf.len() - before, payload_len, "encoded_len disagrees with encode");
    Ok(())
}

/// Encodes `message` as one frame of the current version.
pub fn encode(message: &Message) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    encode_into(message, &mut buf)?;
    Ok(buf.freeze())
}

/// The frame header and fields of a chunk-data message, to be followed on the
/// wire by the chunk's bytes: a sender writes both without copying the chunk.
/// `groups`: the chunk's group values ([`crate::groups::group_hashes`]), or
/// empty.
pub fn chunk_data_header(
    track: TrackId,
    index: ChunkIndex,
    path: PathReport,
    groups: &[u8],
    data_len: usize,
) -> Result<Bytes> {
    let mut prefix = BytesMut::with_capacity(64 + groups.len());
    let fields = chunk_data_prefix(&mut prefix, track, index, path, groups, data_len);
    let body_len = body_len_of(fields + data_len)?;
    let mut buf = BytesMut::with_capacity(HEADER_LEN + fields);
    buf.put_u32(body_len);
    buf.put_u8(VERSION);
    buf.put_u8(MessageKind::ChunkData as u8);
    buf.put_slice(&prefix);
    Ok(buf.freeze())
}

/// Reads a frame's length prefix and checks it: the number of bytes that
/// follow (version, kind and payload).
pub fn read_header(prefix: [u8; LEN_PREFIX]) -> Result<usize> {
    let len = u32::from_be_bytes(prefix);
    if len > limits::MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLarge {
            len: u64::from(len),
            max: limits::MAX_FRAME_LEN,
        });
    }
    if len < 2 {
        return Err(ProtocolError::Truncated);
    }
    Ok(len as usize)
}

/// Decodes what follows the length prefix: version, kind, payload.
pub fn decode_body(body: Bytes) -> Result<Frame> {
    if body.len() < 2 {
        return Err(ProtocolError::Truncated);
    }
    let version = body[0];
    check_version(version)?;
    let kind = MessageKind::try_from(body[1])?;
    let payload = body.slice(2..);
    Ok(Frame { version, message: Message::decode(kind, &payload)? })
}

/// Decodes a buffer that holds exactly one frame.
pub fn decode(frame: &Bytes) -> Result<Frame> {
    if frame.len() < LEN_PREFIX {
        return Err(ProtocolError::Truncated);
    }
    let len = read_header([frame[0], frame[1], frame[2], frame[3]])?;
    let have = frame.len() - LEN_PREFIX;
    if have < len {
        return Err(ProtocolError::Truncated);
    }
    if have > len {
        return Err(ProtocolError::TrailingBytes(have - len));
    }
    decode_body(frame.slice(LEN_PREFIX..))
}

/// Incremental decoder for a byte stream that carries frames back to back.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    _private: (),
}

impl FrameDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one complete frame off the front of `buf`, or returns `None`
    /// when more bytes are needed. An oversized length is an error as soon as
    /// its 4 bytes arrive.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        if buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = read_header([buf[0], buf[1], buf[2], buf[3]])?;
        if buf.len() < LEN_PREFIX + len {
            // No reserve for the announced length: the buffer grows only
            // with bytes that arrive.
            return Ok(None);
        }
        buf.advance(LEN_PREFIX);
        let body = buf.split_to(len).freeze();
        decode_body(body).map(Some)
    }

    /// Call at end of stream: leftover bytes mean the last frame was cut off.
    pub fn finish(&self, buf: &BytesMut) -> Result<()> {
        if buf.is_empty() { Ok(()) } else { Err(ProtocolError::Truncated) }
    }
}
