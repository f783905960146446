//! Why a node closes a QUIC connection: one namespace of close codes, sent
//! as the application error code with a short reason.

/// A connection close, as sent on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Closed {
    /// The node is shutting down or done with the peer; nothing wrong.
    Normal = 0,
    /// The certificate carries another peer id than the one dialled.
    UnexpectedPeer = 1,
    /// The certificate does not parse or carries no usable key.
    BadCertificate = 2,
    /// The peer is banned here (it sent bad data before).
    Banned = 3,
    /// The peer sent data that failed verification; it is now banned.
    BadData = 4,
    /// The peer opened no stream in time after its handshake: its slot is
    /// given to someone who will use it.
    Idle = 5,
}

impl Closed {
    /// Closes `conn` for this reason.
    pub fn close(self, conn: &quinn::Connection) {
        conn.close(quinn::VarInt::from_u32(self as u32), self.reason().as_bytes());
    }

    /// The reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "shutting down",
            Self::UnexpectedPeer => "unexpected peer id",
            Self::BadCertificate => "bad certificate",
            Self::Banned => "banned",
            Self::BadData => "bad data",
            Self::Idle => "no request in time",
        }
    }

    /// The code as quinn wants it.
    pub fn code(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }
}
