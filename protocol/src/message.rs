//! Wire messages: every request, response and announcement nodes exchange.
//!
//! Each message has a one-byte type code (its [`MessageKind`]), and an
//! `encode`/`encoded_len`/`decode` triple used by [`crate::frame`]. Payloads
//! are bounded by [`crate::limits`]; decoders check each bound before they
//! allocate.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes};

use crate::codec::{
    Put, Reader, put_tags, read_tags, socket_addr_len, str_len, tags_len, varint_len,
};
use crate::error::{ProtocolError, Result};
use crate::ids::{ChunkIndex, PeerId, TrackId};
use crate::limits;
use crate::manifest::{Codec, Tags};

/// Opens a connection: who the sender is, what it speaks, where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the sender speaks.
    pub min_version: u8,
    /// Highest protocol version the sender speaks.
    pub max_version: u8,
    /// The sender's id; the receiver checks it against the TLS certificate.
    pub peer_id: PeerId,
    /// Addresses the sender accepts connections on (may be empty for a
    /// listener that does not serve).
    pub listen_addrs: Vec<SocketAddr>,
    /// Free-form software name and version, for logs.
    pub agent: String,
    /// In a reply: the address the replying node sees the other at (its
    /// public address, behind a NAT). Absent from the asker's hello, and
    /// on the wire only when present (older peers send and expect none).
    pub observed: Option<SocketAddr>,
    /// The address a router maps to the sender (UPnP, PCP, NAT-PMP): a peer
    /// that reached it there knows the path is a mapped one. On the wire
    /// only when present, after `observed`.
    pub mapped: Option<SocketAddr>,
    /// In a reply: a ticket with which the asker may put its next start
    /// request into a later connection's TLS handshake (see the streamer's
    /// `resume` module). On the wire only when present, after `mapped`.
    pub ticket: Option<Ticket>,
}

/// A key a node gives a peer for starts that ride in the handshake: the
/// peer seals its request with `key` and names the ticket by `id`; the
/// node derives the key from the id, so it keeps no state per ticket.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Names the ticket (random, with its expiry), sent in the clear.
    pub id: [u8; 16],
    /// The request key: secret between the two peers.
    pub key: [u8; 32],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never goes into a log.
        f.debug_struct("Ticket").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Hello {
    /// The highest version both sides speak, or `None` if the ranges do not
    /// overlap.
    pub fn negotiate(&self, ours_min: u8, ours_max: u8) -> Option<u8> {
        let v = self.max_version.min(ours_max);
        (v >= self.min_version.max(ours_min)).then_some(v)
    }
}

/// Asks for catalog entries whose title, artist, album or file name contains
/// `query` (case-insensitively); an empty query matches everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchRequest {
    /// The text to look for.
    pub query: String,
    /// The most results wanted (a node may send fewer).
    pub limit: u32,
}

/// One track in a catalog listing.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogEntry {
    /// The track.
    pub track: TrackId,
    /// Its file name in the serving node's library (no directories).
    pub file_name: String,
    /// Tags.
    pub tags: Tags,
    /// Codec.
    pub codec: Codec,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Size in bytes.
    pub byte_len: u64,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
}

/// Results of a search.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResponse {
    /// Matching tracks, best first.
    pub results: Vec<CatalogEntry>,
}

/// Asks for a track's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRequest {
    /// The track.
    pub track: TrackId,
}

/// A manifest's canonical bytes; the receiver verifies them against the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestResponse {
    /// The track.
    pub track: TrackId,
    /// The canonical manifest encoding.
    pub manifest: Bytes,
    /// True if the responder serves the track from its own library (it is
    /// an original seed); false if from a cache of chunks it fetched.
    pub origin: bool,
}

/// Deadline value meaning "no deadline": prefetch, serve when idle.
pub const NO_DEADLINE: u32 = u32::MAX;

/// Asks for `count` consecutive chunks from `first`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRequest {
    /// The track.
    pub track: TrackId,
    /// The first chunk.
    pub first: ChunkIndex,
    /// How many chunks, at least 1.
    pub count: u32,
    /// Milliseconds from sending until the requester's decoder needs the
    /// first chunk; 0 is "needed now", [`NO_DEADLINE`] is "whenever". The
    /// server orders its sends by it.
    pub deadline_ms: u32,
}

/// Asks for the tail of one chunk: its bytes from `from` on, while
/// another peer sends it from its start (a seek's first chunk comes from
/// two peers at once, in half the time). Answered with a [`ChunkData`]
/// holding the group values of the whole chunk and the bytes from `from`
/// to its end. An optional kind: a node that does not know it answers
/// `UnknownMessageType`, and the chunk comes whole from the other peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailRequest {
    /// The track.
    pub track: TrackId,
    /// The chunk.
    pub index: ChunkIndex,
    /// Where its tail begins: a multiple of [`crate::groups::GROUP_LEN`]
    /// inside the chunk, which must be checked in groups.
    pub from: u32,
    /// As [`ChunkRequest::deadline_ms`].
    pub deadline_ms: u32,
}

/// What the sender of a reply has seen of the path to its receiver: the
/// QUIC packets it sent on this connection so far and how many of them it
/// found lost. A receiver cannot see the losses on the way to it (QUIC
/// retransmits them unseen); with this it knows whether a path is clean,
/// which decides how much audio it must hold before it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathReport {
    /// Packets sent.
    pub sent: u64,
    /// Packets found lost, at most `sent`.
    pub lost: u64,
}

impl PathReport {
    fn encoded_len(self) -> usize {
        varint_len(self.sent) + varint_len(self.lost)
    }

    fn put(self, buf: &mut impl BufMut) {
        buf.put_varint(self.sent);
        buf.put_varint(self.lost);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let sent = r.varint("packets sent")?;
        let lost = r.varint("packets lost")?;
        if lost > sent {
            return Err(ProtocolError::Invalid("more packets lost than sent"));
        }
        Ok(Self { sent, lost })
    }
}

/// One chunk of a track. The receiver verifies it against the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkData {
    /// The track.
    pub track: TrackId,
    /// The chunk.
    pub index: ChunkIndex,
    /// The sender's view of the path (see [`PathReport`]).
    pub path: PathReport,
    /// The chaining values of its 4 KiB groups, concatenated, or empty
    /// (see [`crate::groups`]): with them the receiver checks the chunk a
    /// group at a time as it arrives.
    pub groups: Bytes,
    /// Its bytes.
    pub data: Bytes,
}

/// Most bytes of group values a [`ChunkData`] carries: those of the
/// largest chunk.
pub const MAX_GROUP_HASHES: usize =
    limits::MAX_CHUNK_SIZE as usize / crate::groups::GROUP_LEN * crate::groups::GROUP_HASH_LEN;

/// The fields of a [`ChunkData`] frame before its data, read from the
/// start of the frame's body: a receiver takes the data as it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHead {
    /// The track.
    pub track: TrackId,
    /// The chunk.
    pub index: ChunkIndex,
    /// The sender's view of the path (see [`PathReport`]).
    pub path: PathReport,
    /// The group values (see [`ChunkData::groups`]).
    pub groups: Bytes,
    /// Bytes of chunk data that follow.
    pub data_len: usize,
    /// Bytes of the body before the data (version and kind included).
    pub head_len: usize,
}

/// Reads a [`ChunkData`] frame's head from `body`, the first bytes of a
/// frame body of `body_len` bytes whose kind is `ChunkData` (the version
/// byte is checked by the caller): `None` while more bytes are needed.
/// The head and the data length must add up to the body.
pub fn chunk_head(body: &Bytes, body_len: usize) -> Result<Option<ChunkHead>> {
    if body.len() < 2 {
        return Ok(None);
    }
    let fields = body.slice(2..);
    let mut r = Reader::new(&fields);
    let head = read_chunk_head(&mut r).map(|mut h| {
        h.head_len = 2 + r.position();
        h
    });
    match head {
        Err(ProtocolError::Truncated) if body.len() < body_len => Ok(None),
        Err(e) => Err(e),
        Ok(h) if h.head_len + h.data_len == body_len => Ok(Some(h)),
        Ok(h) if h.head_len + h.data_len > body_len => Err(ProtocolError::Truncated),
        Ok(h) => Err(ProtocolError::TrailingBytes(body_len - h.head_len - h.data_len)),
    }
}

/// The fields of a chunk-data payload before its data (`head_len` left
/// 0): what [`chunk_head`] and [`Message::decode`] both read.
fn read_chunk_head(r: &mut Reader<'_>) -> Result<ChunkHead> {
    Ok(ChunkHead {
        track: track(r)?,
        index: ChunkIndex(r.varint_u32("chunk index")?),
        path: PathReport::read(r)?,
        groups: read_group_hashes(r)?,
        data_len: r.len("chunk data", limits::MAX_CHUNK_SIZE as usize)?,
        head_len: 0,
    })
}

fn read_group_hashes(r: &mut Reader<'_>) -> Result<Bytes> {
    let groups = r.bytes("group hashes", MAX_GROUP_HASHES)?;
    if groups.len() % crate::groups::GROUP_HASH_LEN != 0 {
        return Err(ProtocolError::Invalid("group hashes length"));
    }
    Ok(groups)
}

/// A run of consecutive chunk indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRun {
    /// First index.
    pub start: u32,
    /// Number of chunks, at least 1.
    pub len: u32,
}

/// Announces which chunks of a track the sender holds. Runs are sorted,
/// non-empty, and neither overlap nor touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Have {
    /// The track.
    pub track: TrackId,
    /// The chunks held.
    pub runs: Vec<ChunkRun>,
}

/// Withdraws an earlier chunk request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancel {
    /// The track.
    pub track: TrackId,
    /// The first chunk of the request.
    pub first: ChunkIndex,
    /// The number of chunks of the request.
    pub count: u32,
}

/// A peer and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// Its addresses.
    pub addrs: Vec<SocketAddr>,
}

/// Tells a peer about other peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerExchange {
    /// The peers.
    pub peers: Vec<PeerInfo>,
}

/// Asks who holds a track; forwarded while `hops_left > 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoHas {
    /// Random id so a node answers a query once.
    pub query_id: u64,
    /// The track.
    pub track: TrackId,
    /// Further hops allowed, at most [`limits::MAX_HOPS`].
    pub hops_left: u8,
}

/// Answers a [`WhoHas`] with peers that hold the track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoHasReply {
    /// The query answered.
    pub query_id: u64,
    /// The track.
    pub track: TrackId,
    /// Peers that hold some or all of it.
    pub peers: Vec<PeerInfo>,
}

/// What a [`StartRequest`] asks to play.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// This track.
    Track(TrackId),
    /// The responder's best match for these words (as in a search).
    Query(String),
}

/// Pages of a track's chunk hash list (see [`crate::manifest`]): the
/// receiver checks each against the manifest's page hash. Sent after a
/// [`ManifestResponse`] (all pages), and in a start response around its
/// head (the pages the head needs, then the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashes {
    /// The track.
    pub track: TrackId,
    /// The first page.
    pub first_page: u32,
    /// The pages from `first_page` on, concatenated, every page whole: its
    /// chunk hashes (32 bytes each), then (manifest version 5) its time
    /// index points ([`crate::Manifest::learn_hashes`]).
    pub data: Bytes,
}

/// Asks for everything needed to start playing, in one response: for a
/// query, the catalog entry of the best match (a [`SearchResponse`] of one);
/// then the [`ManifestResponse`] (and [`Have`] from a cache); then the head:
/// [`Hashes`] pages for it and [`ChunkData`] for the chunks holding the
/// demuxer's headers and the chunk at `at_ms`; then [`Hashes`] for the
/// rest of the list and the chunks after the head, in that order, up to
/// `budget` bytes of chunk data. One round trip from request to the
/// decoder's first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    /// The track, or words to find it by.
    pub want: Want,
    /// Where playback starts, in milliseconds of media time.
    pub at_ms: u32,
    /// Chunk bytes wanted in the response, at most
    /// [`limits::MAX_START_BUDGET`] (the responder may send less).
    pub budget: u32,
}

/// Asks a peer both nodes reach (a public one) to bring the sender
/// together with `target`, a node connected to it (behind a NAT, say):
/// either for a hole punch, or (`relay`) through a relay it runs. The
/// answer is a [`Rendezvous`] naming where to dial `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The node to reach.
    pub target: PeerId,
    /// True to ask for a relay (a direct path did not work).
    pub relay: bool,
}

/// The meeting point of two nodes. From the introducer to the target (a
/// request on the target's own connection, answered by an echo once it has
/// acted): `peer` wants to reach you; send a few packets to `addr` from
/// your QUIC socket (opening your NAT to it), or, with `relay`, register
/// at the relay port `addr` with that token. From the introducer to the
/// asker (the answer to [`Connect`]): dial `peer` at `addr` (with `relay`,
/// register first). A relay `addr` has an unspecified IP: the introducer's
/// own, as each side reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    /// The other node.
    pub peer: PeerId,
    /// Where the other node is seen (a punch), or the relay's port.
    pub addr: SocketAddr,
    /// The relay's token, when the meeting is through a relay.
    pub relay: Option<[u8; 32]>,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request was malformed or violated a limit.
    BadRequest,
    /// The node does not have this track.
    UnknownTrack,
    /// The node does not have this chunk (or it is out of range).
    UnknownChunk,
    /// The node is at a limit; try later or elsewhere.
    Busy,
    /// No common protocol version.
    UnsupportedVersion,
    /// The node failed internally (e.g. a file changed under it).
    Internal,
    /// The node will not serve this peer.
    Refused,
    /// The node cannot reach the peer asked for (not connected to it).
    Unreachable,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            Self::BadRequest => 1,
            Self::UnknownTrack => 2,
            Self::UnknownChunk => 3,
            Self::Busy => 4,
            Self::UnsupportedVersion => 5,
            Self::Internal => 6,
            Self::Refused => 7,
            Self::Unreachable => 8,
            Self::Other(c) => c,
        }
    }

    /// From the wire code.
    pub fn from_code(c: u16) -> Self {
        match c {
            1 => Self::BadRequest,
            2 => Self::UnknownTrack,
            3 => Self::UnknownChunk,
            4 => Self::Busy,
            5 => Self::UnsupportedVersion,
            6 => Self::Internal,
            7 => Self::Refused,
            8 => Self::Unreachable,
            c => Self::Other(c),
        }
    }
}

/// An error reply to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

/// Every message, by kind.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // each variant is documented on its payload type
pub enum Message {
    Hello(Hello),
    SearchRequest(SearchRequest),
    SearchResponse(SearchResponse),
    ManifestRequest(ManifestRequest),
    ManifestResponse(ManifestResponse),
    ChunkRequest(ChunkRequest),
    ChunkData(ChunkData),
    Have(Have),
    Cancel(Cancel),
    PeerExchange(PeerExchange),
    WhoHas(WhoHas),
    WhoHasReply(WhoHasReply),
    StartRequest(StartRequest),
    Connect(Connect),
    Rendezvous(Rendezvous),
    Hashes(Hashes),
    TailRequest(TailRequest),
    Error(ErrorReply),
}

/// Message type codes, the byte after the version in each frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum MessageKind {
    Hello = 0x01,
    SearchRequest = 0x02,
    SearchResponse = 0x03,
    ManifestRequest = 0x04,
    ManifestResponse = 0x05,
    ChunkRequest = 0x06,
    ChunkData = 0x07,
    Have = 0x08,
    Cancel = 0x09,
    PeerExchange = 0x0a,
    WhoHas = 0x0b,
    WhoHasReply = 0x0c,
    StartRequest = 0x0d,
    Connect = 0x0e,
    Rendezvous = 0x0f,
    Hashes = 0x10,
    TailRequest = 0x11,
    Error = 0x7f,
}

impl TryFrom<u8> for MessageKind {
    type Error = ProtocolError;
    fn try_from(c: u8) -> Result<Self> {
        use MessageKind as K;
        Ok(match c {
            0x01 => K::Hello,
            0x02 => K::SearchRequest,
            0x03 => K::SearchResponse,
            0x04 => K::ManifestRequest,
            0x05 => K::ManifestResponse,
            0x06 => K::ChunkRequest,
            0x07 => K::ChunkData,
            0x08 => K::Have,
            0x09 => K::Cancel,
            0x0a => K::PeerExchange,
            0x0b => K::WhoHas,
            0x0c => K::WhoHasReply,
            0x0d => K::StartRequest,
            0x0e => K::Connect,
            0x0f => K::Rendezvous,
            0x10 => K::Hashes,
            0x11 => K::TailRequest,
            0x7f => K::Error,
            c => return Err(ProtocolError::UnknownMessageType(c)),
        })
    }
}

fn addrs_len(addrs: &[SocketAddr]) -> usize {
    varint_len(addrs.len() as u64) + addrs.iter().map(socket_addr_len).sum::<usize>()
}

fn read_addrs(r: &mut Reader<'_>) -> Result<Vec<SocketAddr>> {
    let n = r.len("addresses", limits::MAX_ADDRS)?;
    (0..n).map(|_| r.socket_addr()).collect()
}

fn peers_len(peers: &[PeerInfo]) -> usize {
    varint_len(peers.len() as u64) + peers.iter().map(|p| 32 + addrs_len(&p.addrs)).sum::<usize>()
}

fn put_peers(buf: &mut impl BufMut, peers: &[PeerInfo]) {
    buf.put_varint(peers.len() as u64);
    for p in peers {
        buf.put_slice(p.id.as_bytes());
        buf.put_varint(p.addrs.len() as u64);
        for a in &p.addrs {
            buf.put_socket_addr(a);
        }
    }
}

fn read_peers(r: &mut Reader<'_>) -> Result<Vec<PeerInfo>> {
    let n = r.len("peers", limits::MAX_PEERS)?;
    (0..n)
        .map(|_| Ok(PeerInfo { id: PeerId::from_bytes(r.array32()?), addrs: read_addrs(r)? }))
        .collect()
}

fn track(r: &mut Reader<'_>) -> Result<TrackId> {
    Ok(TrackId::from_bytes(r.array32()?))
}

fn chunk_count(r: &mut Reader<'_>) -> Result<u32> {
    let count = r.varint_u32("chunk count")?;
    if count == 0 || count > limits::MAX_CHUNKS_PER_REQUEST {
        return Err(ProtocolError::Invalid("chunk count (1 to MAX_CHUNKS_PER_REQUEST)"));
    }
    Ok(count)
}

impl Message {
    /// This message's type code.
    pub fn kind(&self) -> MessageKind {
        use MessageKind as K;
        match self {
            Self::Hello(_) => K::Hello,
            Self::SearchRequest(_) => K::SearchRequest,
            Self::SearchResponse(_) => K::SearchResponse,
            Self::ManifestRequest(_) => K::ManifestRequest,
            Self::ManifestResponse(_) => K::ManifestResponse,
            Self::ChunkRequest(_) => K::ChunkRequest,
            Self::ChunkData(_) => K::ChunkData,
            Self::Have(_) => K::Have,
            Self::Cancel(_) => K::Cancel,
            Self::PeerExchange(_) => K::PeerExchange,
            Self::WhoHas(_) => K::WhoHas,
            Self::WhoHasReply(_) => K::WhoHasReply,
            Self::StartRequest(_) => K::StartRequest,
            Self::Connect(_) => K::Connect,
            Self::Rendezvous(_) => K::Rendezvous,
            Self::Hashes(_) => K::Hashes,
            Self::TailRequest(_) => K::TailRequest,
            Self::Error(_) => K::Error,
        }
    }

    /// The payload's encoded length (without the frame header).
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Hello(m) => {
                2 + 32
                    + addrs_len(&m.listen_addrs)
                    + str_len(&m.agent)
                    + m.observed.as_ref().map_or(0, |a| 1 + socket_addr_len(a))
                    + m.mapped.as_ref().map_or(0, |a| 1 + socket_addr_len(a))
                    + m.ticket.as_ref().map_or(0, |_| 1 + 16 + 32)
            }
            Self::SearchRequest(m) => str_len(&m.query) + varint_len(u64::from(m.limit)),
            Self::SearchResponse(m) => {
                varint_len(m.results.len() as u64)
                    + m.results
                        .iter()
                        .map(|e| {
                            32 + str_len(&e.file_name)
                                + tags_len(&e.tags)
                                + 1
                                + varint_len(e.duration_ms)
                                + varint_len(e.byte_len)
                                + varint_len(u64::from(e.sample_rate))
                                + varint_len(u64::from(e.channels))
                        })
                        .sum::<usize>()
            }
            Self::ManifestRequest(_) => 32,
            Self::ManifestResponse(m) => {
                32 + varint_len(m.manifest.len() as u64) + m.manifest.len() + 1
            }
            Self::ChunkRequest(m) => {
                32 + varint_len(u64::from(m.first.0))
                    + varint_len(u64::from(m.count))
                    + varint_len(u64::from(m.deadline_ms))
            }
            Self::TailRequest(m) => {
                32 + varint_len(u64::from(m.index.0))
                    + varint_len(u64::from(m.from))
                    + varint_len(u64::from(m.deadline_ms))
            }
            Self::ChunkData(m) => {
                chunk_data_header_len(m.index, m.path, &m.groups, m.data.len()) + m.data.len()
            }
            Self::Have(m) => {
                32 + varint_len(m.runs.len() as u64)
                    + m.runs
                        .iter()
                        .map(|r| varint_len(u64::from(r.start)) + varint_len(u64::from(r.len)))
                        .sum::<usize>()
            }
            Self::Cancel(m) => {
                32 + varint_len(u64::from(m.first.0)) + varint_len(u64::from(m.count))
            }
            Self::PeerExchange(m) => peers_len(&m.peers),
            Self::WhoHas(m) => varint_len(m.query_id) + 32 + 1,
            Self::WhoHasReply(m) => varint_len(m.query_id) + 32 + peers_len(&m.peers),
            Self::StartRequest(m) => {
                1 + match &m.want {
                    Want::Track(_) => 32,
                    Want::Query(q) => str_len(q),
                } + varint_len(u64::from(m.at_ms))
                    + varint_len(u64::from(m.budget))
            }
            Self::Connect(_) => 32 + 1,
            Self::Rendezvous(m) => {
                32 + socket_addr_len(&m.addr) + 1 + if m.relay.is_some() { 32 } else { 0 }
            }
            Self::Hashes(m) => {
                32 + varint_len(u64::from(m.first_page))
                    + varint_len(m.data.len() as u64)
                    + m.data.len()
            }
            Self::Error(m) => varint_len(u64::from(m.code.code())) + str_len(&m.message),
        }
    }

    /// Appends the payload (without the frame header).
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Hello(m) => {
                buf.put_u8(m.min_version);
                buf.put_u8(m.max_version);
                buf.put_slice(m.peer_id.as_bytes());
                buf.put_varint(m.listen_addrs.len() as u64);
                for a in &m.listen_addrs {
                    buf.put_socket_addr(a);
                }
                buf.put_str(&m.agent);
                if let Some(a) = &m.observed {
                    buf.put_u8(1);
                    buf.put_socket_addr(a);
                }
                if let Some(a) = &m.mapped {
                    buf.put_u8(2);
                    buf.put_socket_addr(a);
                }
                if let Some(t) = &m.ticket {
                    buf.put_u8(3);
                    buf.put_slice(&t.id);
                    buf.put_slice(&t.key);
                }
            }
            Self::SearchRequest(m) => {
                buf.put_str(&m.query);
                buf.put_varint(u64::from(m.limit));
            }
            Self::SearchResponse(m) => {
                buf.put_varint(m.results.len() as u64);
                for e in &m.results {
                    buf.put_slice(e.track.as_bytes());
                    buf.put_str(&e.file_name);
                    put_tags(buf, &e.tags);
                    buf.put_u8(e.codec.code());
                    buf.put_varint(e.duration_ms);
                    buf.put_varint(e.byte_len);
                    buf.put_varint(u64::from(e.sample_rate));
                    buf.put_varint(u64::from(e.channels));
                }
            }
            Self::ManifestRequest(m) => buf.put_slice(m.track.as_bytes()),
            Self::ManifestResponse(m) => {
                buf.put_slice(m.track.as_bytes());
                buf.put_varint(m.manifest.len() as u64);
                buf.put_slice(&m.manifest);
                buf.put_u8(u8::from(m.origin));
            }
            Self::ChunkRequest(m) => {
                buf.put_slice(m.track.as_bytes());
                buf.put_varint(u64::from(m.first.0));
                buf.put_varint(u64::from(m.count));
                buf.put_varint(u64::from(m.deadline_ms));
            }
            Self::TailRequest(m) => {
                buf.put_slice(m.track.as_bytes());
                buf.put_varint(u64::from(m.index.0));
                buf.put_varint(u64::from(m.from));
                buf.put_varint(u64::from(m.deadline_ms));
            }
            Self::ChunkData(m) => {
                put_chunk_data_header(buf, m.track, m.index, m.path, &m.groups, m.data.len());
                buf.put_slice(&m.data);
            }
            Self::Have(m) => {
                buf.put_slice(m.track.as_bytes());
                buf.put_varint(m.runs.len() as u64);
                for r in &m.runs {
                    buf.put_varint(u64::from(r.start));
                    buf.put_varint(u64::from(r.len));
                }
            }
            Self::Cancel(m) => {
                buf.put_slice(m.track.as_bytes());
                buf.put_varint(u64::from(m.first.0));
                buf.put_varint(u64::from(m.count));
            }
            Self::PeerExchange(m) => put_peers(buf, &m.peers),
            Self::WhoHas(m) => {
                buf.put_varint(m.query_id);
                buf.put_slice(m.track.as_bytes());
                buf.put_u8(m.hops_left);
            }
            Self::WhoHasReply(m) => {
                buf.put_varint(m.query_id);
                buf.put_slice(m.track.as_bytes());
                put_peers(buf, &m.peers);
            }
            Self::StartRequest(m) => {
                match &m.want {
                    Want::Track(t) => {
                        buf.put_u8(0);
                        buf.put_slice(t.as_bytes());
                    }
                    Want::Query(q) => {
                        buf.put_u8(1);
                        buf.put_str(q);
                    }
                }
                buf.put_varint(u64::from(m.at_ms));
                buf.put_varint(u64::from(m.budget));
            }
            Self::Connect(m) => {
                buf.put_slice(m.target.as_bytes());
                buf.put_u8(u8::from(m.relay));
            }
            Self::Rendezvous(m) => {
                buf.put_slice(m.peer.as_bytes());
                buf.put_socket_addr(&m.addr);
                match &m.relay {
                    None => buf.put_u8(0),
                    Some(token) => {
                        buf.put_u8(1);
                        buf.put_slice(token);
                    }
                }
            }
            Self::Hashes(m) => {
                buf.put_slice(m.track.as_bytes());
                buf.put_varint(u64::from(m.first_page));
                buf.put_varint(m.data.len() as u64);
                buf.put_slice(&m.data);
            }
            Self::Error(m) => {
                buf.put_varint(u64::from(m.code.code()));
                buf.put_str(&m.message);
            }
        }
    }

    /// Decodes a payload of the given kind. Byte strings (chunk data,
    /// manifests) are zero-copy slices of `payload`.
    pub fn decode(kind: MessageKind, payload: &Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let r = &mut r;
        let msg = match kind {
            MessageKind::Hello => {
                let min_version = r.u8()?;
                let max_version = r.u8()?;
                if min_version > max_version {
                    return Err(ProtocolError::Invalid("hello version range"));
                }
                let peer_id = PeerId::from_bytes(r.array32()?);
                let listen_addrs = read_addrs(r)?;
                let agent = r.str("agent", limits::MAX_TAG_LEN)?;
                // Optional fields, each tagged, in this order.
                let (mut observed, mut mapped, mut ticket) = (None, None, None);
                let mut last = 0;
                while r.remaining() > 0 {
                    let tag = r.u8()?;
                    if tag <= last {
                        return Err(ProtocolError::Invalid("hello optional fields"));
                    }
                    last = tag;
                    match tag {
                        1 => observed = Some(r.socket_addr()?),
                        2 => mapped = Some(r.socket_addr()?),
                        3 => ticket = Some(Ticket { id: r.array16()?, key: r.array32()? }),
                        _ => return Err(ProtocolError::Invalid("hello optional fields")),
                    }
                }
                Self::Hello(Hello {
                    min_version,
                    max_version,
                    peer_id,
                    listen_addrs,
                    agent,
                    observed,
                    mapped,
                    ticket,
                })
            }
            MessageKind::SearchRequest => Self::SearchRequest(SearchRequest {
                query: r.str("query", limits::MAX_QUERY_LEN)?,
                limit: r.varint_u32("limit")?,
            }),
            MessageKind::SearchResponse => {
                let n = r.len("search results", limits::MAX_SEARCH_RESULTS)?;
                let mut results = Vec::with_capacity(n.min(r.remaining() / 40));
                for _ in 0..n {
                    results.push(CatalogEntry {
                        track: track(r)?,
                        file_name: r.str("file name", limits::MAX_TAG_LEN)?,
                        tags: read_tags(r)?,
                        codec: Codec::from_code(r.u8()?),
                        duration_ms: r.varint("duration")?,
                        byte_len: r.varint("byte length")?,
                        sample_rate: r.varint_u32("sample rate")?,
                        channels: u16::try_from(r.varint("channels")?)
                            .map_err(|_| ProtocolError::Overflow("channels"))?,
                    });
                }
                Self::SearchResponse(SearchResponse { results })
            }
            MessageKind::ManifestRequest => {
                Self::ManifestRequest(ManifestRequest { track: track(r)? })
            }
            MessageKind::ManifestResponse => Self::ManifestResponse(ManifestResponse {
                track: track(r)?,
                manifest: r.bytes("manifest", limits::MAX_MANIFEST_LEN)?,
                origin: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(ProtocolError::Invalid("origin flag")),
                },
            }),
            MessageKind::ChunkRequest => Self::ChunkRequest(ChunkRequest {
                track: track(r)?,
                first: ChunkIndex(r.varint_u32("chunk index")?),
                count: chunk_count(r)?,
                deadline_ms: r.varint_u32("deadline")?,
            }),
            MessageKind::TailRequest => Self::TailRequest(TailRequest {
                track: track(r)?,
                index: ChunkIndex(r.varint_u32("chunk index")?),
                from: r.varint_u32("tail start")?,
                deadline_ms: r.varint_u32("deadline")?,
            }),
            MessageKind::ChunkData => {
                let h = read_chunk_head(r)?;
                let data = r.slice(h.data_len)?;
                Self::ChunkData(ChunkData {
                    track: h.track,
                    index: h.index,
                    path: h.path,
                    groups: h.groups,
                    data,
                })
            }
            MessageKind::Have => {
                let track = track(r)?;
                let n = r.len("have runs", limits::MAX_HAVE_RUNS)?;
                let mut runs = Vec::with_capacity(n.min(r.remaining() / 2));
                let mut next_free: u64 = 0;
                for _ in 0..n {
                    let run = ChunkRun { start: r.varint_u32("run")?, len: r.varint_u32("run")? };
                    let end = u64::from(run.start) + u64::from(run.len);
                    if run.len == 0 || u64::from(run.start) < next_free || end > u64::from(u32::MAX)
                    {
                        return Err(ProtocolError::Invalid("have runs (sorted, disjoint, apart)"));
                    }
                    next_free = end + 1;
                    runs.push(run);
                }
                Self::Have(Have { track, runs })
            }
            MessageKind::Cancel => Self::Cancel(Cancel {
                track: track(r)?,
                first: ChunkIndex(r.varint_u32("chunk index")?),
                count: chunk_count(r)?,
            }),
            MessageKind::PeerExchange => Self::PeerExchange(PeerExchange { peers: read_peers(r)? }),
            MessageKind::WhoHas => {
                let query_id = r.varint("query id")?;
                let track = track(r)?;
                let hops_left = r.u8()?;
                if hops_left > limits::MAX_HOPS {
                    return Err(ProtocolError::Invalid("hop count"));
                }
                Self::WhoHas(WhoHas { query_id, track, hops_left })
            }
            MessageKind::WhoHasReply => Self::WhoHasReply(WhoHasReply {
                query_id: r.varint("query id")?,
                track: track(r)?,
                peers: read_peers(r)?,
            }),
            MessageKind::StartRequest => {
                let want = match r.u8()? {
                    0 => Want::Track(track(r)?),
                    1 => Want::Query(r.str("query", limits::MAX_QUERY_LEN)?),
                    _ => return Err(ProtocolError::Invalid("start request kind")),
                };
                let at_ms = r.varint_u32("start time")?;
                let budget = r.varint_u32("start budget")?;
                if budget > limits::MAX_START_BUDGET {
                    return Err(ProtocolError::Invalid("start budget (at most MAX_START_BUDGET)"));
                }
                Self::StartRequest(StartRequest { want, at_ms, budget })
            }
            MessageKind::Connect => {
                let target = PeerId::from_bytes(r.array32()?);
                let relay = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(ProtocolError::Invalid("connect relay flag")),
                };
                Self::Connect(Connect { target, relay })
            }
            MessageKind::Rendezvous => {
                let peer = PeerId::from_bytes(r.array32()?);
                let addr = r.socket_addr()?;
                let relay = match r.u8()? {
                    0 => None,
                    1 => Some(r.array32()?),
                    _ => return Err(ProtocolError::Invalid("rendezvous relay flag")),
                };
                Self::Rendezvous(Rendezvous { peer, addr, relay })
            }
            MessageKind::Hashes => {
                let track = track(r)?;
                let first_page = r.varint_u32("hash list page")?;
                let data = r.bytes("hash list", limits::MAX_FRAME_LEN as usize)?;
                if data.is_empty() {
                    return Err(ProtocolError::Invalid("hash list length"));
                }
                Self::Hashes(Hashes { track, first_page, data })
            }
            MessageKind::Error => {
                let code = u16::try_from(r.varint("error code")?)
                    .map_err(|_| ProtocolError::Overflow("error code"))?;
                Self::Error(ErrorReply {
                    code: ErrorCode::from_code(code),
                    message: r.str("error message", limits::MAX_QUERY_LEN)?,
                })
            }
        };
        r.finish_ref()?;
        Ok(msg)
    }
}

fn chunk_data_header_len(
    index: ChunkIndex,
    path: PathReport,
    groups: &[u8],
    data_len: usize,
) -> usize {
    32 + varint_len(u64::from(index.0))
        + path.encoded_len()
        + varint_len(groups.len() as u64)
        + groups.len()
        + varint_len(data_len as u64)
}

fn put_chunk_data_header(
    buf: &mut impl BufMut,
    track: TrackId,
    index: ChunkIndex,
    path: PathReport,
    groups: &[u8],
    len: usize,
) {
    buf.put_slice(track.as_bytes());
    buf.put_varint(u64::from(index.0));
    path.put(buf);
    buf.put_varint(groups.len() as u64);
    buf.put_slice(groups);
    buf.put_varint(len as u64);
}

/// The length of a [`ChunkData`] payload's fields before the data itself,
/// for writers that send the header and the chunk's `Bytes` separately
/// (no copy of the chunk).
pub(crate) fn chunk_data_prefix(
    buf: &mut impl BufMut,
    track: TrackId,
    index: ChunkIndex,
    path: PathReport,
    groups: &[u8],
    data_len: usize,
) -> usize {
    put_chunk_data_header(buf, track, index, path, groups, data_len);
    chunk_data_header_len(index, path, groups, data_len)
}
