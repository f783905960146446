//! Reading and writing protocol frames on QUIC streams.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::frame::{self, Frame};
use chorus_protocol::message::{ChunkHead, ErrorCode, ErrorReply, MessageKind, PathReport};
use chorus_protocol::{ChunkIndex, Message, ProtocolError, TrackId, limits};
use quinn::{RecvStream, SendStream};

use crate::error::{Error, Result};

/// Reads one frame of at most [`limits::MAX_FRAME_LEN`] bytes (a reply),
/// or `None` if the stream ended cleanly between frames. See
/// [`read_frame_max`].
pub async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>> {
    read_frame_max(recv, limits::MAX_FRAME_LEN as usize).await
}

/// Reads one frame whose body is at most `max` bytes, or `None` if the
/// stream ended cleanly between frames. The length is checked before the
/// body is read, so an oversized frame costs four bytes; the body grows
/// only with bytes received (a length prefix alone makes us hold nothing),
/// and a body that arrives in one piece is kept without a copy.
pub async fn read_frame_max(recv: &mut RecvStream, max: usize) -> Result<Option<Frame>> {
    let Some(len) = read_len(recv).await? else { return Ok(None) };
    if len > max {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        return Err(ProtocolError::FrameTooLarge { len: len as u64, max }.into());
    }
    let body = read_body(recv, Bytes::new(), len).await?;
    Ok(Some(frame::decode_body(body)?))
}

/// The rest of a frame body of `len` bytes of which `got` has come: it
/// grows only with bytes received, and a body that arrives in one piece
/// is kept without a copy.
async fn read_body(recv: &mut RecvStream, got: Bytes, len: usize) -> Result<Bytes> {
    if got.len() >= len {
        return Ok(got);
    }
    let mut body = BytesMut::new();
    body.extend_from_slice(&got);
    while body.len() < len {
        let Some(piece) = recv.read_chunk(len - body.len(), true).await? else {
            return Err(Error::StreamEnded);
        };
        if body.is_empty() && piece.bytes.len() == len {
            return Ok(piece.bytes);
        }
        body.extend_from_slice(&piece.bytes);
    }
    Ok(body.freeze())
}

/// What [`read_reply`] read: a whole message, or the head of a chunk
/// whose data the caller reads as it arrives.
#[derive(Debug)]
pub enum Reply {
    /// A message other than chunk data, whole.
    Message(Message),
    /// A chunk-data frame's head, and the first bytes of its data that came
    /// with it; the other `head.data_len - first.len()` bytes follow on the
    /// stream.
    Chunk {
        /// The frame's fields before the data.
        head: ChunkHead,
        /// Data read with the head.
        first: Bytes,
    },
}

/// Reads the next frame of a reply (at most [`limits::MAX_FRAME_LEN`]
/// bytes), or `None` if the stream ended cleanly between frames. Chunk
/// data is returned after its head, so the caller can check it a group at
/// a time as it arrives ([`chorus_protocol::groups`]); any other message
/// whole.
pub async fn read_reply(recv: &mut RecvStream) -> Result<Option<Reply>> {
    let Some(len) = read_len(recv).await? else { return Ok(None) };
    // The body so far: the first piece as it came (no copy), joined with
    // the next only while a chunk's head (at most ~8 KiB) is incomplete.
    let mut got = Bytes::new();
    loop {
        if got.len() >= 2 {
            chorus_protocol::frame::check_version(got[0])?;
            if got[1] != MessageKind::ChunkData as u8 {
                break;
            }
            if let Some(head) = chorus_protocol::message::chunk_head(&got, len)? {
                let first = got.slice(head.head_len..);
                return Ok(Some(Reply::Chunk { head, first }));
            }
        }
        if got.len() == len {
            break;
        }
        let Some(piece) = recv.read_chunk(len - got.len(), true).await? else {
            return Err(Error::StreamEnded);
        };
        got = if got.is_empty() {
            piece.bytes
        } else {
            let mut joined = BytesMut::with_capacity(got.len() + piece.bytes.len());
            joined.extend_from_slice(&got);
            joined.extend_from_slice(&piece.bytes);
            joined.freeze()
        };
    }
    let body = read_body(recv, got, len).await?;
    Ok(Some(Reply::Message(frame::decode_body(body)?.message)))
}

/// Reads a frame's length prefix: `None` if the stream ended before it.
async fn read_len(recv: &mut RecvStream) -> Result<Option<usize>> {
    let mut prefix = [0u8; frame::LEN_PREFIX];
    let mut got = 0;
    while got < prefix.len() {
        match recv.read(&mut prefix[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(Error::StreamEnded),
        }
    }
    Ok(Some(frame::read_header(prefix)?))
}

/// How long a write may wait for the peer to take data (QUIC flow control)
/// before the stream is given up: a peer that grants no credit must not pin
/// a task, a stream or a send budget for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

async fn timed<T>(
    write: impl std::future::Future<Output = std::result::Result<T, quinn::WriteError>>,
) -> Result<T> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| Error::Timeout(WRITE_TIMEOUT, "the peer to take data"))?
        .map_err(Error::from)
}

/// Writes one message as a frame.
pub async fn write_message(send: &mut SendStream, message: &Message) -> Result<()> {
    let bytes = frame::encode(message)?;
    write_bytes(send, &bytes).await
}

/// Writes `bytes` (bounded in time, as every write).
pub async fn write_bytes(send: &mut SendStream, bytes: &[u8]) -> Result<()> {
    timed(send.write_all(bytes)).await
}

/// Writes a chunk-data frame: the header, then the chunk's own `Bytes`
/// without copying it. `groups`: the chunk's group values
/// ([`chorus_protocol::groups::group_hashes`]) or empty; with them the
/// receiver checks and uses the chunk a group at a time as it arrives (for
/// a chunk someone may be waiting on: the first of a reply; 32 bytes per
/// 4 KiB).
pub async fn write_chunk(
    send: &mut SendStream,
    track: TrackId,
    index: ChunkIndex,
    path: PathReport,
    groups: Bytes,
    data: Bytes,
) -> Result<()> {
    let header = frame::chunk_data_header(track, index, path, &groups, data.len())?;
    timed(send.write_all_chunks(&mut [header, data])).await
}

/// This side's view of the path to the peer of `conn`, for the replies it
/// sends ([`PathReport`]): the packets sent on the connection so far and
/// those quinn found lost.
pub fn path_report(conn: &quinn::Connection) -> PathReport {
    let path = conn.stats().path;
    PathReport { sent: path.sent_packets, lost: path.lost_packets.min(path.sent_packets) }
}

/// Writes an error reply.
pub async fn write_error(send: &mut SendStream, code: ErrorCode, message: String) -> Result<()> {
    write_message(send, &Message::Error(ErrorReply { code, message })).await
}
