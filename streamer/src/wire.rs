//! Reading and writing protocol frames on QUIC streams.

use bytes::{Bytes, BytesMut};
use chorus_protocol::frame::{self, Frame};
use chorus_protocol::message::{ErrorCode, ErrorReply};
use chorus_protocol::{ChunkIndex, Message, TrackId};
use quinn::{RecvStream, SendStream};

use crate::error::{Error, Result};

/// Reads one frame, or `None` if the stream ended cleanly between frames.
/// The length is checked before the body is read, so an oversized frame
/// costs four bytes.
pub async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>> {
    let mut prefix = [0u8; frame::LEN_PREFIX];
    let mut got = 0;
    while got < prefix.len() {
        match recv.read(&mut prefix[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(Error::StreamEnded),
        }
    }
    let len = frame::read_header(prefix)?;
    let mut body = BytesMut::zeroed(len);
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => Error::StreamEnded,
        quinn::ReadExactError::ReadError(e) => Error::Read(e),
    })?;
    Ok(Some(frame::decode_body(body.freeze())?))
}

/// Writes one message as a frame.
pub async fn write_message(send: &mut SendStream, message: &Message) -> Result<()> {
    let bytes = frame::encode(message)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Writes a chunk-data frame: the header, then the chunk's own `Bytes`
/// without copying it.
pub async fn write_chunk(
    send: &mut SendStream,
    track: TrackId,
    index: ChunkIndex,
    data: Bytes,
) -> Result<()> {
    let header = frame::chunk_data_header(track, index, data.len())?;
    send.write_all_chunks(&mut [header, data]).await?;
    Ok(())
}

/// Writes an error reply.
pub async fn write_error(send: &mut SendStream, code: ErrorCode, message: String) -> Result<()> {
    write_message(send, &Message::Error(ErrorReply { code, message })).await
}
