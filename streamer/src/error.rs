//! The one error type of this crate.

use std::path::PathBuf;

use chorus_protocol::message::ErrorCode;
use chorus_protocol::{PeerId, ProtocolError, TrackId};

/// Everything the node can fail at. "The peer lacks this" ([`Error::Remote`]
/// with `UnknownTrack`/`UnknownChunk`) is kept apart from "the peer sent bad
/// data" ([`Error::Protocol`] with a hash mismatch).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be indexed as audio.
    #[error("{}: {reason}", path.display())]
    NotAudio {
        /// The file.
        path: PathBuf,
        /// Why, in words for the warning.
        reason: String,
    },
    /// A peer or a stored file sent bytes that do not decode or verify.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The peer answered with an error reply.
    #[error("peer replied {code:?}: {message}")]
    Remote {
        /// The reply's code.
        code: ErrorCode,
        /// The reply's text.
        message: String,
    },
    /// The peer answered with a message that does not fit the request.
    #[error("unexpected reply from peer: {0}")]
    UnexpectedReply(&'static str),
    /// The peer's certificate is not the one its id says.
    #[error("peer presented id {actual}, expected {expected}")]
    PeerIdMismatch {
        /// The id we dialled.
        expected: PeerId,
        /// The id its certificate carries.
        actual: PeerId,
    },
    /// The peer speaks no protocol version we do.
    #[error("peer speaks protocol versions {min}..={max}, which this node does not")]
    VersionMismatch {
        /// Peer's lowest.
        min: u8,
        /// Peer's highest.
        max: u8,
    },
    /// Dialling failed before a connection existed.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error("connection lost: {0}{hint}", hint = refused_hint(.0))]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream closed in the middle of a frame.
    #[error("stream ended inside a frame")]
    StreamEnded,
    /// A request took longer than its timeout.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
    /// TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The node identity could not be made or loaded.
    #[error("node identity: {0}")]
    Identity(String),
    /// The peer sent bad data before and is not dialled again.
    #[error("peer {0} sent bad data before; not dialling it again")]
    Banned(PeerId),
    /// The peer sent a chunk other than the one asked for (bytes that may
    /// well verify as that other chunk): bad data, like a failed hash.
    #[error("peer sent chunk {got} when chunk {expected} was asked")]
    WrongChunk {
        /// The chunk asked for.
        expected: u32,
        /// The chunk sent.
        got: u32,
    },
    /// No peer of a pool could be asked (none given, or none reachable).
    #[error("no peer to play from: {0}")]
    NoPeer(String),
    /// The track is not in the library.
    #[error("unknown track {0}")]
    UnknownTrack(TrackId),
    /// The library index could not be written.
    #[error("cannot encode the library index: {0}")]
    Index(#[from] postcard::Error),
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io { context, path: path.into(), source }
    }

    /// True when the peer ended the TLS handshake with an alert: it did not
    /// accept our certificate (it is in a private swarm we are not in, or
    /// we are in one and it is not).
    pub fn refused_by_tls(&self) -> bool {
        let conn = match self {
            Error::Connection(c)
            | Error::Read(quinn::ReadError::ConnectionLost(c))
            | Error::Write(quinn::WriteError::ConnectionLost(c)) => c,
            _ => return false,
        };
        // QUIC carries a TLS alert as error code 0x100 + the alert.
        let code = match conn {
            quinn::ConnectionError::ConnectionClosed(c) => u64::from(c.error_code),
            quinn::ConnectionError::TransportError(t) => u64::from(t.code),
            _ => return false,
        };
        (0x100..0x200).contains(&code)
    }
}

/// What a refused connection means: the peer answers, but is at one of
/// its connection limits (a node's: in all, or from one address, where a
/// process killed without closing holds its place until the connection's
/// idle timeout), so the address is right and a later try may get in.
fn refused_hint(e: &quinn::ConnectionError) -> &'static str {
    match e {
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            " (the peer is at its limit of connections, in all or from this address; \
             try again in a minute)"
        }
        _ => "",
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
