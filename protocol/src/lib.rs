//! # chorus-protocol
//!
//! The wire format and content addressing of Chorus, a peer-to-peer music
//! streaming network. Sans-IO: no sockets, no clock, no async runtime; every
//! function here is a pure transformation of bytes and values, so it can be
//! tested exhaustively and fuzzed.
//!
//! Entry points:
//!
//! - [`ids`]: [`TrackId`], [`ChunkHash`], [`PeerId`] and [`ChunkIndex`].
//! - [`chunk`]: [`ChunkSize`], [`ChunkLayout`] and [`chunk::chunk_bytes`],
//!   which cut a file into hashed chunks.
//! - [`manifest`]: [`Manifest`], the verified description of a track (media
//!   parameters, chunk hashes, time index, tags) whose canonical encoding
//!   hashes to its [`TrackId`].
//! - [`message`]: [`Message`] and every payload type nodes exchange.
//! - [`frame`]: length-prefixed, versioned framing with a hard size limit,
//!   and the incremental [`frame::FrameDecoder`].
//! - [`limits`]: every bound the decoders enforce.
//!
//! The protocol is written down in `PROTOCOL.md` beside this crate, included
//! below.
//!
#![doc = include_str!("../PROTOCOL.md")]

pub mod chunk;
mod codec;
mod error;
pub mod frame;
pub mod groups;
pub mod ids;
pub mod limits;
pub mod manifest;
pub mod message;

pub use chunk::{ChunkLayout, ChunkSize};
pub use error::{ProtocolError, Result};
pub use ids::{ChunkHash, ChunkIndex, PeerId, TrackId};
pub use manifest::{Codec, Container, Manifest, MediaInfo, Tags, TimePoint, VerifiedChunk};
pub use message::Message;

/// The ALPN protocol name of this protocol's QUIC connections. The version
/// in it changes only with an incompatible change of the framing itself;
/// message-level versions are negotiated in the hello.
pub const ALPN: &[u8] = b"chorus/1";
