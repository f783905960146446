//! The requesting side of the protocol: a connected [`Peer`] and the
//! requests a node makes of it.
//!
//! Every request opens its own bidirectional stream. Nothing a peer sends
//! reaches the caller unverified: manifests are checked against the track
//! id, chunks against the manifest's hashes, in order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_protocol::groups::{ChunkReceiver, VerifiedPart};
use chorus_protocol::message::{
    CatalogEntry, ChunkRequest, ChunkRun, Connect, Hello, ManifestRequest, PathReport,
    PeerExchange, PeerInfo, Rendezvous, SearchRequest, StartRequest, TailRequest, Want, WhoHas,
};
use chorus_protocol::{
    ChunkIndex, Manifest, Message, PeerId, TrackId, VerifiedChunk, frame, limits,
};
use quinn::{Connection, RecvStream, SendStream};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::wire::{Reply, read_frame, read_reply, write_message};

/// A request begun at once ([`Peer::begin_now`]): its stream, and what
/// of the message the stream did not take yet.
pub struct Begun {
    send: SendStream,
    recv: RecvStream,
    rest: Bytes,
}

impl Begun {
    /// Whether the whole request is in its stream already.
    pub fn is_sent(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Polls `f` once, without a waker to call: its output if it is ready.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// How long a peer may take to answer a request before its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Chunks per request when fetching a whole track: 64 × 16 KiB = 1 MiB,
/// small enough to spread over peers, large enough that per-request costs
/// (a stream, ~60 bytes of framing) vanish.
pub const FETCH_BATCH: u32 = 64;

/// Requests in flight at once when fetching a whole track; 4 MiB in flight
/// fills a 100 Mbit/s link with up to 300 ms RTT.
pub const FETCH_PIPELINE: usize = 4;

/// A connected, hello-exchanged peer.
#[derive(Clone, Debug)]
pub struct Peer {
    conn: Connection,
    id: PeerId,
    addr: SocketAddr,
    hello: Hello,
    version: u8,
    path: crate::nat::Path,
    /// Where what the peer reports of the path from it is kept, with the
    /// history of earlier connections ([`Peer::path_seen`]).
    resume: Option<Arc<crate::resume::ResumeStore>>,
}

/// A manifest answer: the manifest, whether the peer is an original seed,
/// and what it holds (`None`: everything).
pub type ManifestAnswer = (Manifest, bool, Option<Vec<ChunkRun>>);

impl Peer {
    /// The hello exchange and a manifest request at once, on a new
    /// connection: the node answers each stream on its own, so the
    /// manifest costs no round trip of its own.
    pub(crate) async fn handshake_asking(
        conn: Connection,
        id: PeerId,
        addr: SocketAddr,
        ours: Message,
        track: TrackId,
    ) -> Result<(Self, Result<ManifestAnswer>)> {
        let provisional = Self::before_hello(conn.clone(), id, addr);
        let (peer, manifest) = tokio::join!(
            Self::handshake(conn, id, addr, ours),
            provisional.manifest_and_origin(track)
        );
        Ok((peer?, manifest))
    }

    /// A peer whose hello has not arrived: the lowest version, no listing.
    pub(crate) fn before_hello(conn: Connection, id: PeerId, addr: SocketAddr) -> Self {
        let hello = Hello {
            min_version: 0,
            max_version: 0,
            peer_id: id,
            listen_addrs: Vec::new(),
            agent: String::new(),
            observed: None,
            mapped: None,
            ticket: None,
        };
        Self {
            conn,
            id,
            addr,
            hello,
            version: frame::MIN_VERSION,
            path: crate::nat::Path::Direct,
            resume: None,
        }
    }

    pub(crate) async fn handshake(
        conn: Connection,
        id: PeerId,
        addr: SocketAddr,
        ours: Message,
    ) -> Result<Self> {
        let (min, max) = match &ours {
            Message::Hello(h) => (h.min_version, h.max_version),
            _ => (frame::MIN_VERSION, frame::VERSION),
        };
        let mut peer = Self::before_hello(conn, id, addr);
        let mut recv = peer.request(&ours).await?;
        match next_reply(&mut recv).await? {
            Message::Hello(h) => {
                peer.version = h
                    .negotiate(min, max)
                    .ok_or(Error::VersionMismatch { min: h.min_version, max: h.max_version })?;
                peer.hello = h;
                Ok(peer)
            }
            _ => Err(Error::UnexpectedReply("expected hello")),
        }
    }

    /// The peer's id (from its certificate).
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The address we reached it at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it said in its hello.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// How we reached it (direct, punched through a NAT, or relayed).
    pub fn path(&self) -> crate::nat::Path {
        self.path
    }

    pub(crate) fn with_path(mut self, path: crate::nat::Path) -> Self {
        self.path = path;
        self
    }

    /// Keeps what this peer reports of the path in `store`
    /// ([`Peer::note_path`]), where earlier connections' reports are.
    pub(crate) fn with_resume(mut self, store: Arc<crate::resume::ResumeStore>) -> Self {
        self.resume = Some(store);
        self
    }

    /// Notes a report of the path from this peer (from a reply's head).
    pub fn note_path(&self, report: PathReport) {
        if let Some(store) = &self.resume {
            store.note_path(self.id, self.conn.stable_id(), report);
        }
    }

    /// What the peers have reported of the paths to this node (this
    /// connection and earlier ones, earlier processes' too), as the start
    /// rule judges this peer's path by: the worst of all peers' counts
    /// together and of each peer's own ([`crate::resume::ResumeStore::path`]).
    /// `None` before any report.
    pub fn path_seen(&self) -> Option<PathReport> {
        self.resume.as_ref()?.path()
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The underlying connection (RTT, stats).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// A stream, if the connection can open one at once (without waiting
    /// for the peer to allow more).
    pub fn open_now(&self) -> Option<Result<(SendStream, RecvStream)>> {
        poll_once(self.conn.open_bi()).map(|r| r.map_err(Error::from))
    }

    /// Begins a request at once, if the connection can open a stream
    /// without waiting: the stream opened and as much of `msg` written as
    /// it takes now (all of it but for a peer short of flow-control
    /// credit); [`Self::chunks_on`] sends the rest. Requests begun in the
    /// order they are decided reach the peer in that order, and it serves
    /// them so; spawned tasks would write theirs in whatever order they
    /// first run (tokio runs the task spawned last first), and the link's
    /// queue is first in, first out: after a seek, the chunk two places
    /// past the target went before the target's own, 6 ms on one peer.
    pub fn begin_now(&self, msg: &Message) -> Option<Result<Begun>> {
        let (mut send, recv) = match self.open_now()? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let mut rest = match frame::encode(msg) {
            Ok(b) => b,
            Err(e) => return Some(Err(e.into())),
        };
        match poll_once(send.write(&rest)) {
            Some(Ok(n)) => {
                bytes::Buf::advance(&mut rest, n);
            }
            Some(Err(e)) => return Some(Err(e.into())),
            None => {}
        }
        Some(Ok(Begun { send, recv, rest }))
    }

    /// Opens a stream, sends `msg`, finishes our side.
    async fn request(&self, msg: &Message) -> Result<RecvStream> {
        self.request_on(None, msg).await
    }

    /// Sends `msg` on a stream begun with it ([`Self::begin_now`]: the
    /// rest of it) or opened now, finishes our side.
    async fn request_on(&self, begun: Option<Begun>, msg: &Message) -> Result<RecvStream> {
        let (mut send, recv) = match begun {
            Some(Begun { mut send, recv, rest }) => {
                if !rest.is_empty() {
                    crate::wire::write_bytes(&mut send, &rest).await?;
                }
                (send, recv)
            }
            None => {
                let (mut send, recv) = self.conn.open_bi().await?;
                write_message(&mut send, msg).await?;
                (send, recv)
            }
        };
        // Finishing only fails if the stream was already reset.
        let _ = send.finish();
        Ok(recv)
    }

    /// Searches the peer's catalog.
    pub async fn search(&self, query: &str, limit: u32) -> Result<Vec<CatalogEntry>> {
        let msg = Message::SearchRequest(SearchRequest { query: query.to_owned(), limit });
        let mut recv = self.request(&msg).await?;
        match next_reply(&mut recv).await? {
            Message::SearchResponse(r) => Ok(r.results),
            _ => Err(Error::UnexpectedReply("expected search results")),
        }
    }

    /// Fetches and verifies a track's manifest.
    pub async fn manifest(&self, track: TrackId) -> Result<Manifest> {
        self.manifest_and_origin(track).await.map(|(m, _, _)| m)
    }

    /// Fetches and verifies a track's manifest, whether the peer serves it
    /// from its own library (an original seed), and, for a peer serving it
    /// from its cache, which chunks it holds (`None`: all of them).
    pub async fn manifest_and_origin(&self, track: TrackId) -> Result<ManifestAnswer> {
        let mut recv = self.request(&Message::ManifestRequest(ManifestRequest { track })).await?;
        let (manifest, origin) = match next_reply(&mut recv).await? {
            Message::ManifestResponse(r) if r.track == track => {
                (Manifest::decode_verified(r.manifest, track)?, r.origin)
            }
            _ => return Err(Error::UnexpectedReply("expected the manifest")),
        };
        // Then its whole hash list.
        while !manifest.hashes_known() {
            match next_reply(&mut recv).await? {
                Message::Hashes(h) if h.track == track => learn_new_hashes(&manifest, &h)?,
                _ => return Err(Error::UnexpectedReply("expected the track's hash list")),
            }
        }
        if origin {
            return Ok((manifest, true, None));
        }
        match next_reply(&mut recv).await? {
            Message::Have(h) if h.track == track => {
                let runs = clip_runs(h.runs, &manifest);
                Ok((manifest, false, Some(runs)))
            }
            _ => Err(Error::UnexpectedReply("expected what the peer holds")),
        }
    }

    /// Asks who holds `track`, letting the query travel `hops` further
    /// hops (at most 2). Addresses are completed with this peer's IP where
    /// they were unspecified.
    pub async fn who_has(&self, track: TrackId, hops: u8) -> Result<Vec<PeerInfo>> {
        self.who_has_with_id(crate::discovery::new_query_id(), track, hops).await
    }

    /// [`Peer::who_has`] with a given query id (a node forwarding a query).
    pub async fn who_has_with_id(
        &self,
        query_id: u64,
        track: TrackId,
        hops: u8,
    ) -> Result<Vec<PeerInfo>> {
        let hops_left = hops.min(limits::MAX_HOPS);
        let mut recv =
            self.request(&Message::WhoHas(WhoHas { query_id, track, hops_left })).await?;
        match next_reply(&mut recv).await? {
            Message::WhoHasReply(r) if r.query_id == query_id && r.track == track => {
                Ok(self.completed(r.peers))
            }
            _ => Err(Error::UnexpectedReply("expected a who-has reply")),
        }
    }

    /// Asks the peer (an introducer both sides reach) to bring us together
    /// with `target`: for a hole punch, or through its relay. The answer
    /// says where to dial `target`; it comes once `target` has acted.
    pub async fn connect_to(&self, target: PeerId, relay: bool) -> Result<Rendezvous> {
        let mut recv = self.request(&Message::Connect(Connect { target, relay })).await?;
        match next_reply(&mut recv).await? {
            Message::Rendezvous(r) if r.peer == target && r.relay.is_some() == relay => Ok(r),
            _ => Err(Error::UnexpectedReply("expected a rendezvous")),
        }
    }

    /// Tells the peer (the target of a [`Peer::connect_to`]) that another
    /// node wants it; returns once it has acted (its echo).
    pub(crate) async fn rendezvous(&self, r: Rendezvous) -> Result<()> {
        let mut recv = self.request(&Message::Rendezvous(r.clone())).await?;
        match next_reply(&mut recv).await? {
            Message::Rendezvous(echo) if echo == r => Ok(()),
            _ => Err(Error::UnexpectedReply("expected the rendezvous echoed")),
        }
    }

    /// Tells the peer about `peers` and learns about the ones it knows.
    pub async fn exchange_peers(&self, peers: Vec<PeerInfo>) -> Result<Vec<PeerInfo>> {
        let mut recv = self.request(&Message::PeerExchange(PeerExchange { peers })).await?;
        match next_reply(&mut recv).await? {
            Message::PeerExchange(r) => Ok(self.completed(r.peers)),
            _ => Err(Error::UnexpectedReply("expected a peer exchange")),
        }
    }

    fn completed(&self, peers: Vec<PeerInfo>) -> Vec<PeerInfo> {
        let ip = self.addr.ip();
        peers
            .into_iter()
            .map(|p| PeerInfo { id: p.id, addrs: crate::discovery::complete_addrs(&p.addrs, ip) })
            .filter(|p| !p.addrs.is_empty())
            .collect()
    }

    /// Requests `count` chunks from `first`; the returned stream yields them
    /// verified and in order.
    pub async fn chunks(
        &self,
        manifest: &Manifest,
        first: ChunkIndex,
        count: u32,
        deadline_ms: u32,
    ) -> Result<ChunkStream> {
        self.chunks_on(None, manifest, first, count, deadline_ms).await
    }

    /// The message of [`Self::chunks`], to begin it at once
    /// ([`Self::begin_now`]).
    pub fn chunk_request(
        manifest: &Manifest,
        first: ChunkIndex,
        count: u32,
        deadline_ms: u32,
    ) -> Message {
        Message::ChunkRequest(ChunkRequest { track: manifest.id(), first, count, deadline_ms })
    }

    /// [`Self::chunks`], begun already if `begun` ([`Self::begin_now`] with
    /// [`Self::chunk_request`] of the same arguments).
    pub async fn chunks_on(
        &self,
        begun: Option<Begun>,
        manifest: &Manifest,
        first: ChunkIndex,
        count: u32,
        deadline_ms: u32,
    ) -> Result<ChunkStream> {
        let msg = Self::chunk_request(manifest, first, count, deadline_ms);
        let parts = deadline_ms < PARTS_WITHIN_MS;
        self.stream_on(begun, &msg, manifest, (first, count), (parts, 0)).await
    }

    /// Sends `msg` (or takes it begun) and reads its reply as the `count`
    /// chunks from `first`, handing out parts if `parts`, each chunk's
    /// bytes from `tail` on (0: whole chunks).
    async fn stream_on(
        &self,
        begun: Option<Begun>,
        msg: &Message,
        manifest: &Manifest,
        (first, count): (ChunkIndex, u32),
        (parts, tail): (bool, usize),
    ) -> Result<ChunkStream> {
        let recv = self.request_on(begun, msg).await?;
        let (manifest, next, end) = (manifest.clone(), first.0, first.0 + count);
        Ok(ChunkStream { recv, manifest, next, end, current: None, parts, path: None, tail })
    }

    /// The message of [`Self::tail_on`], to begin it at once
    /// ([`Self::begin_now`]).
    pub fn tail_request(
        manifest: &Manifest,
        index: ChunkIndex,
        from: u32,
        deadline_ms: u32,
    ) -> Message {
        Message::TailRequest(TailRequest { track: manifest.id(), index, from, deadline_ms })
    }

    /// Requests the tail of chunk `index` from byte `from` (a multiple of
    /// [`chorus_protocol::groups::GROUP_LEN`]), begun already if `begun`
    /// ([`Self::begin_now`] with [`Self::tail_request`]); the returned
    /// stream yields its checked parts ([`ChunkStream::next_arrival`]),
    /// then `None`.
    pub async fn tail_on(
        &self,
        begun: Option<Begun>,
        manifest: &Manifest,
        index: ChunkIndex,
        from: u32,
        deadline_ms: u32,
    ) -> Result<ChunkStream> {
        let msg = Self::tail_request(manifest, index, from, deadline_ms);
        let tail = usize::try_from(from).unwrap_or(usize::MAX);
        self.stream_on(begun, &msg, manifest, (index, 1), (true, tail)).await
    }

    /// Downloads a whole track into `path`, verifying every chunk. Writes to
    /// `path` with a `.part` suffix and renames at the end, so a failed
    /// download never looks complete. `progress` gets the bytes done.
    pub async fn fetch_to_file(
        &self,
        manifest: &Manifest,
        path: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let part = path.with_extension(match path.extension() {
            Some(e) => format!("{}.part", e.to_string_lossy()),
            None => "part".to_owned(),
        });
        let mut file =
            tokio::fs::File::create(&part).await.map_err(|e| Error::io("creating", &part, e))?;
        let result = self.fetch_into(manifest, &mut file, progress).await;
        let result = match result {
            Ok(n) => file.sync_all().await.map(|()| n).map_err(|e| Error::io("writing", &part, e)),
            Err(e) => Err(e),
        };
        drop(file);
        match result {
            Ok(n) => {
                tokio::fs::rename(&part, path).await.map_err(|e| Error::io("renaming", path, e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    async fn fetch_into(
        &self,
        manifest: &Manifest,
        out: &mut tokio::fs::File,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let total = manifest.layout().count();
        let mut next_batch = 0u32;
        let mut in_flight: VecDeque<tokio::task::JoinHandle<Result<Vec<Bytes>>>> = VecDeque::new();
        let mut written = 0u64;
        loop {
            while in_flight.len() < FETCH_PIPELINE && next_batch < total {
                let count = FETCH_BATCH.min(total - next_batch);
                let (peer, m, first) = (self.clone(), manifest.clone(), next_batch);
                in_flight.push_back(tokio::spawn(async move {
                    let mut stream = peer.chunks(&m, ChunkIndex(first), count, 0).await?;
                    let mut out = Vec::with_capacity(count as usize);
                    while let Some(chunk) = stream.next().await? {
                        out.push(chunk.into_data());
                    }
                    Ok(out)
                }));
                next_batch += count;
            }
            let Some(task) = in_flight.pop_front() else { break };
            let chunks = task.await.map_err(|_| Error::UnexpectedReply("fetch task failed"))??;
            for data in chunks {
                out.write_all(&data).await.map_err(|e| Error::io("writing", "output file", e))?;
                written += data.len() as u64;
            }
            progress(written);
        }
        out.flush().await.map_err(|e| Error::io("writing", "output file", e))?;
        Ok(written)
    }
}

/// Everything a start request brought back, verified.
#[derive(Debug)]
pub struct StartAnswer {
    /// The track: the responder's best match for a query (its tags checked
    /// against the manifest), or built from the manifest for a track id.
    pub entry: CatalogEntry,
    /// The manifest, verified against the track id.
    pub manifest: Manifest,
    /// True if the responder is an original seed.
    pub origin: bool,
    /// What a responder serving from its cache holds (`None`: all).
    pub have: Option<Vec<ChunkRun>>,
    /// The header chunks and the first chunk of audio, verified: what the
    /// decoder needs to start; but for [`Self::begun`].
    pub head: Vec<VerifiedChunk>,
    /// The last chunk the decoder needs to start, when the answer came
    /// with its first groups checked ([`chorus_protocol::groups`]) rather
    /// than whole: those and the rest of it come from [`Self::rest`].
    pub begun: Option<ChunkIndex>,
    /// The rest of the response (more chunks of audio), still arriving:
    /// the fetcher takes it over ([`crate::fetch::Source::head_rest`]).
    pub rest: Option<HeadRest>,
    /// When the manifest arrived, and the first chunk (or its first
    /// checked group: the timeline's "first chunk received").
    pub arrivals: (Option<std::time::Instant>, Option<std::time::Instant>),
}

/// The chunks of a start response still on their way.
#[derive(Debug)]
pub struct HeadRest {
    recv: RecvStream,
    manifest: Manifest,
    expected: Vec<ChunkIndex>,
    /// Where the start plays from and its budget, until its chunks are
    /// known: when the first of them comes, after the pages they need
    /// (whose index points say which chunk a later start begins in).
    plan: Option<(Duration, u64)>,
    /// Bytes per second the head came at (see [`HeadRest::delivery_rate`]).
    rate: Option<f64>,
    /// The chunk arriving now.
    current: Option<ChunkReceiver>,
    /// Parts checked while the start read the response, for the fetcher.
    parts: VecDeque<VerifiedPart>,
    /// The peer's latest report of the path ([`HeadRest::path`]).
    path: Option<PathReport>,
}

impl HeadRest {
    /// What the peer reported of the path in the last chunk's head.
    pub fn path(&self) -> Option<PathReport> {
        self.path
    }

    /// The chunks still expected: the one arriving now, and those to come
    /// (none known before the first comes).
    pub fn expected(&self) -> Vec<ChunkIndex> {
        self.current.iter().map(ChunkReceiver::index).chain(self.expected.iter().copied()).collect()
    }

    /// The rate the head of the response arrived at, bytes per second:
    /// its chunks' bytes over the time from the manifest's arrival to the
    /// last of them. The responder sent them back to back, so this is a
    /// measure of the path (a packet train), taken before any request.
    pub fn delivery_rate(&self) -> Option<f64> {
        self.rate
    }

    /// The next chunk, or the next checked part of one (see
    /// [`chorus_protocol::groups`]); `None` once the response has ended (a
    /// responder serving from a cache may send fewer than asked). Pages of
    /// the hash list on the way are learned into the manifest (shared with
    /// its clones): the response is over once every chunk and every page
    /// is in.
    pub async fn next(&mut self) -> Result<Option<Arrival>> {
        if let Some(part) = self.parts.pop_front() {
            return Ok(Some(Arrival::Part(part)));
        }
        loop {
            if self.current.is_some() {
                return continue_chunk(&mut self.recv, &mut self.current).await.map(Some);
            }
            if self.plan.is_none() && self.expected.is_empty() && self.manifest.hashes_known() {
                return Ok(None);
            }
            let reply = tokio::time::timeout(REQUEST_TIMEOUT, read_reply(&mut self.recv))
                .await
                .map_err(|_| Error::Timeout(REQUEST_TIMEOUT, "the head of the track"))??;
            match reply {
                None | Some(Reply::Message(Message::Error(_))) => {
                    self.expected.clear();
                    return Ok(None);
                }
                Some(Reply::Message(Message::Hashes(h))) if h.track == self.manifest.id() => {
                    learn_new_hashes(&self.manifest, &h)?;
                }
                Some(Reply::Chunk { head, first }) if head.track == self.manifest.id() => {
                    self.path = Some(head.path);
                    if let Some((at, budget)) = self.plan.take() {
                        self.expected = self.manifest.start_chunks(at, budget);
                    }
                    let Some(pos) = self.expected.iter().position(|i| *i == head.index) else {
                        return Err(Error::UnexpectedReply("a chunk the start did not ask for"));
                    };
                    self.expected.swap_remove(pos);
                    let receiver =
                        self.manifest.receive_chunk(head.index, head.data_len, &head.groups)?;
                    if let Some(part) = begin_chunk(&mut self.current, receiver, first)? {
                        return Ok(Some(Arrival::Part(part)));
                    }
                }
                Some(_) => return Err(Error::UnexpectedReply("expected chunk data")),
            }
        }
    }
}

/// What a reply brought next: a chunk's checked part, or the whole chunk.
#[derive(Debug)]
pub enum Arrival {
    /// Checked bytes of a chunk still arriving.
    Part(VerifiedPart),
    /// A whole chunk, verified.
    Chunk(VerifiedChunk),
}

/// Replies whose first chunk is needed within this many milliseconds hand
/// out its parts as they are checked ([`ChunkStream::next_arrival`]);
/// later ones are taken whole (no copies for a reader that is not there).
pub const PARTS_WITHIN_MS: u32 = 2_000;

/// Starts taking a chunk whose head arrived, with the data that came
/// with it: a part, if that completed a group.
fn begin_chunk(
    current: &mut Option<ChunkReceiver>,
    receiver: ChunkReceiver,
    first: Bytes,
) -> Result<Option<VerifiedPart>> {
    let receiver = current.insert(receiver);
    if first.is_empty() { Ok(None) } else { Ok(receiver.push(first)?) }
}

/// Reads the chunk arriving on `recv` until a part of it is checked or it
/// is whole.
async fn continue_chunk(
    recv: &mut RecvStream,
    current: &mut Option<ChunkReceiver>,
) -> Result<Arrival> {
    loop {
        let Some(receiver) = current.as_mut() else {
            return Err(Error::UnexpectedReply("no chunk arriving"));
        };
        let remaining = receiver.remaining();
        if remaining == 0 {
            let Some(receiver) = current.take() else { continue };
            return Ok(Arrival::Chunk(receiver.finish()?));
        }
        let piece = tokio::time::timeout(REQUEST_TIMEOUT, recv.read_chunk(remaining, true))
            .await
            .map_err(|_| Error::Timeout(REQUEST_TIMEOUT, "chunk data"))??;
        let Some(piece) = piece else { return Err(Error::StreamEnded) };
        if let Some(part) = receiver.push(piece.bytes)? {
            return Ok(Arrival::Part(part));
        }
    }
}

/// Audio bytes a start request asks for, besides the header chunks. The
/// response's first flight is capped by the server's initial congestion
/// window ([`crate::tls::INITIAL_WINDOW`]): the manifest (12-50 KB for a
/// 4-minute track), the headers (1-2 chunks, more for an MP4 index) and
/// 48 KiB of audio (1.2 s at 320 kb/s, 0.3 s of lossless) fit it for
/// compressed tracks, so the decoder starts on the first flight.
pub const START_BUDGET: u32 = 48 * 1024;

impl Peer {
    /// One request for everything needed to start playing `want` at `at`:
    /// the entry (for a query), the manifest and the head of the track.
    /// Only verified data comes back; a chunk the request did not ask for
    /// is bad data.
    pub async fn start(&self, want: &Want, at: Duration, budget: u32) -> Result<StartAnswer> {
        let req = start_request(want, at, budget);
        let recv = self.request(&Message::StartRequest(req)).await?;
        read_start(recv, want, at, budget).await
    }

    /// The answer to the start request sealed in this connection's
    /// handshake ([`crate::resume`]), which the peer sends on a stream it
    /// opens with its handshake. An error (the peer could not open the
    /// request, or sent nothing in three round trips) means: ask the usual
    /// way.
    pub async fn start_sealed(
        &self,
        want: &Want,
        at: Duration,
        budget: u32,
    ) -> Result<StartAnswer> {
        let wait = self.conn.rtt() * 3 + Duration::from_millis(100);
        let recv = tokio::time::timeout(wait, self.conn.accept_uni())
            .await
            .map_err(|_| Error::Timeout(wait, "the start sent with the handshake"))??;
        read_start(recv, want, at, budget).await
    }
}

/// The start request for `want` at `at`.
pub fn start_request(want: &Want, at: Duration, budget: u32) -> StartRequest {
    let at_ms = u32::try_from(at.as_millis()).unwrap_or(u32::MAX);
    StartRequest { want: want.clone(), at_ms, budget }
}

/// Reads a start response from `recv`.
async fn read_start(
    mut recv: RecvStream,
    want: &Want,
    at: Duration,
    budget: u32,
) -> Result<StartAnswer> {
    let claimed = match want {
        Want::Track(_) => None,
        Want::Query(_) => match next_reply(&mut recv).await? {
            Message::SearchResponse(r) if r.results.len() == 1 => r.results.into_iter().next(),
            _ => return Err(Error::UnexpectedReply("expected the best match")),
        },
    };
    let id = match (want, &claimed) {
        (Want::Track(id), _) => *id,
        (_, Some(e)) => e.track,
        (_, None) => return Err(Error::UnexpectedReply("expected the best match")),
    };
    let (manifest, origin) = match next_reply(&mut recv).await? {
        Message::ManifestResponse(r) if r.track == id => {
            (Manifest::decode_verified(r.manifest, id)?, r.origin)
        }
        _ => return Err(Error::UnexpectedReply("expected the manifest")),
    };
    let mut arrivals = (Some(std::time::Instant::now()), None);
    let entry = match claimed {
        // The name a peer claims must be the one the track carries.
        Some(e) if e.tags != *manifest.tags() => {
            return Err(Error::UnexpectedReply("search entry does not match the manifest"));
        }
        Some(e) => crate::library::catalog_entry(&manifest, e.file_name),
        None => crate::library::catalog_entry(&manifest, String::new()),
    };
    let have = if origin {
        None
    } else {
        match next_reply(&mut recv).await? {
            Message::Have(h) if h.track == id => Some(clip_runs(h.runs, &manifest)),
            _ => return Err(Error::UnexpectedReply("expected what the peer holds")),
        }
    };
    // Return as soon as the decoder can start (the header chunks and
    // the first audio chunk); the rest streams on. A cache may lack
    // some of them: then the response ends early. Which they are is known
    // once the first comes: the pages they need come before them, with
    // the index points a start later in the track is found by.
    let mut rest = HeadRest {
        recv,
        manifest: manifest.clone(),
        expected: Vec::new(),
        plan: Some((at, u64::from(budget))),
        rate: None,
        current: None,
        parts: VecDeque::new(),
        path: None,
    };
    let mut needed: Option<Vec<ChunkIndex>> = None;
    let mut head = Vec::new();
    let mut head_bytes = 0;
    let mut parts = VecDeque::new();
    while needed.as_ref().is_none_or(|n| !n.is_empty()) {
        let Some(arrival) = rest.next().await? else { break };
        arrivals.1.get_or_insert_with(std::time::Instant::now);
        let needed = needed.get_or_insert_with(|| {
            let first = manifest.chunk_at_time(at);
            let mut head = rest.expected();
            head.retain(|i| *i == first || manifest.is_header_chunk(*i));
            head
        });
        match arrival {
            Arrival::Chunk(chunk) => {
                let i = chunk.index();
                let before: usize = parts
                    .iter()
                    .filter(|p: &&VerifiedPart| p.index() == i)
                    .map(|p| p.data().len())
                    .sum();
                parts.retain(|p| p.index() != i);
                needed.retain(|n| *n != i);
                head_bytes += chunk.data().len() - before;
                head.push(chunk);
            }
            Arrival::Part(part) => {
                // The decoder can start on what is checked of the last
                // chunk it needs: the rest goes to the store as it comes.
                let i = part.index();
                head_bytes += part.data().len();
                parts.push_back(part);
                if needed.as_slice() == [i] {
                    needed.clear();
                }
            }
        }
    }
    let begun = parts.front().map(VerifiedPart::index);
    rest.parts = parts;
    if let Some(since) = arrivals.0.filter(|_| head_bytes > 0) {
        // At least a millisecond: bytes read in one go say nothing of time.
        let secs = since.elapsed().max(Duration::from_millis(1)).as_secs_f64();
        rest.rate = Some(head_bytes as f64 / secs);
    }
    // The rest: chunks, or pages of the hash list, still to come.
    let more = !rest.expected.is_empty() || rest.current.is_some() || !rest.parts.is_empty();
    let rest = (more || !manifest.hashes_known()).then_some(rest);
    Ok(StartAnswer { entry, manifest, origin, have, head, begun, rest, arrivals })
}

/// Learns pages of a hash list a peer sent, refusing pages already known:
/// an honest answer sends each page once, so every message read makes
/// progress and a reply carries at most the list.
fn learn_new_hashes(manifest: &Manifest, h: &chorus_protocol::message::Hashes) -> Result<()> {
    if manifest.page_known(h.first_page) {
        return Err(Error::UnexpectedReply("a page of the hash list sent twice"));
    }
    Ok(manifest.learn_hashes(h.first_page, &h.data)?)
}

fn clip_runs(runs: Vec<ChunkRun>, manifest: &Manifest) -> Vec<ChunkRun> {
    let count = manifest.layout().count();
    runs.into_iter()
        .filter(|r| r.start < count)
        .map(|r| ChunkRun { start: r.start, len: r.len.min(count - r.start) })
        .collect()
}

/// Verified chunks arriving in answer to one request.
#[derive(Debug)]
pub struct ChunkStream {
    recv: RecvStream,
    manifest: Manifest,
    next: u32,
    end: u32,
    /// The chunk arriving now.
    current: Option<ChunkReceiver>,
    /// True if parts are handed out ([`PARTS_WITHIN_MS`]).
    parts: bool,
    /// The peer's latest report of the path ([`ChunkStream::path`]).
    path: Option<PathReport>,
    /// Where the chunk's bytes begin: 0, or a tail's start
    /// ([`Peer::tail`]).
    tail: usize,
}

impl ChunkStream {
    /// What the peer reported of the path in the last chunk's head: its
    /// packets sent and lost on this connection.
    pub fn path(&self) -> Option<PathReport> {
        self.path
    }

    /// The next chunk, verified, or `None` once every requested chunk has
    /// arrived. A chunk that fails its hash ends the stream with
    /// [`chorus_protocol::ProtocolError::ChunkHashMismatch`]: the peer sent
    /// bad data.
    pub async fn next(&mut self) -> Result<Option<VerifiedChunk>> {
        loop {
            match self.next_arrival().await? {
                None => return Ok(None),
                Some(Arrival::Chunk(c)) => return Ok(Some(c)),
                Some(Arrival::Part(_)) => {}
            }
        }
    }

    /// [`Self::next`], and the checked parts of a chunk before it is whole
    /// when the reply's first chunk was needed soon ([`PARTS_WITHIN_MS`]).
    pub async fn next_arrival(&mut self) -> Result<Option<Arrival>> {
        if self.current.is_none() {
            if self.next >= self.end {
                return Ok(None);
            }
            let reply = tokio::time::timeout(REQUEST_TIMEOUT, read_reply(&mut self.recv))
                .await
                .map_err(|_| Error::Timeout(REQUEST_TIMEOUT, "a reply"))??;
            let (head, first) = match reply {
                None => return Err(Error::StreamEnded),
                Some(Reply::Message(Message::Error(e))) => {
                    return Err(Error::Remote { code: e.code, message: e.message });
                }
                Some(Reply::Chunk { head, first })
                    if head.track == self.manifest.id() && head.index.0 == self.next =>
                {
                    self.path = Some(head.path);
                    (head, first)
                }
                Some(Reply::Chunk { head, .. }) => {
                    return Err(Error::WrongChunk { expected: self.next, got: head.index.0 });
                }
                Some(Reply::Message(_)) => {
                    return Err(Error::UnexpectedReply("expected chunk data"));
                }
            };
            let mut receiver = if self.tail > 0 {
                self.manifest.receive_tail(head.index, self.tail, head.data_len, &head.groups)?
            } else {
                self.manifest.receive_chunk(head.index, head.data_len, &head.groups)?
            };
            if !self.parts {
                receiver = receiver.whole_only();
            }
            if let Some(part) = begin_chunk(&mut self.current, receiver, first)? {
                return Ok(Some(Arrival::Part(part)));
            }
        }
        if self.current.as_ref().is_some_and(|c| c.from() > 0 && c.remaining() == 0) {
            // A tail's last group is in: it is done (it is not a chunk).
            self.current = None;
            self.next += 1;
            return Ok(None);
        }
        let arrival = continue_chunk(&mut self.recv, &mut self.current).await?;
        if matches!(arrival, Arrival::Chunk(_)) {
            self.next += 1;
        }
        Ok(Some(arrival))
    }
}

/// Reads the next frame of a reply, turning an error reply into
/// [`Error::Remote`] and a silent peer into [`Error::Timeout`].
async fn next_reply(recv: &mut RecvStream) -> Result<Message> {
    let frame = tokio::time::timeout(REQUEST_TIMEOUT, read_frame(recv))
        .await
        .map_err(|_| Error::Timeout(REQUEST_TIMEOUT, "a reply"))??;
    match frame {
        None => Err(Error::StreamEnded),
        Some(f) => match f.message {
            Message::Error(e) => Err(Error::Remote { code: e.code, message: e.message }),
            m => Ok(m),
        },
    }
}

/// The largest number of search results asked of one peer.
pub const MAX_SEARCH_RESULTS: u32 = limits::MAX_SEARCH_RESULTS as u32;
