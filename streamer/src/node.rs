//! The serving side: a [`Node`] accepts QUIC connections and answers hello,
//! search, manifest and chunk requests from its [`Library`].
//!
//! Tasks: one accept loop ([`Node::serve`]); one task per connection that
//! accepts its streams; one task per stream that reads the request, answers
//! it and finishes. Streams per connection are capped by QUIC flow control
//! ([`TransportLimits::max_streams_per_connection`]); connections by
//! [`NodeLimits::max_connections`] (extra ones are refused); bytes read
//! from disk and not yet handed to QUIC per connection by
//! [`NodeLimits::max_outstanding_bytes_per_peer`].

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_protocol::message::{
    ChunkRequest, ErrorCode, Hashes, Have, Hello, ManifestResponse, NO_DEADLINE, PeerExchange,
    PeerInfo, SearchResponse, StartRequest, Want, WhoHasReply,
};
use chorus_protocol::{
    ChunkIndex, Manifest, Message, PeerId, ProtocolError, TrackId, frame, limits,
};
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::Semaphore;

use crate::cache::ChunkCache;
use crate::close::Closed;
use crate::discovery::{self, MAX_KNOWN, PeerTable};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::library::{Library, LibraryTrack};
use crate::order::{ReplyOrder, Turn};
use crate::tls::{self, TransportLimits};
use crate::transport::{Transport, peer_id_from_connection};
use crate::wire::{path_report, read_frame_max, write_chunk, write_error, write_message};

/// The UDP port a node listens on when none is given.
pub const DEFAULT_PORT: u16 = 47_800;

/// Limits a serving node enforces.
#[derive(Clone, Debug)]
pub struct NodeLimits {
    /// Connections served at once; more are refused. 512 peers each pulling
    /// 320 kb/s is 160 Mb/s, about what one seed on a home uplink can give.
    pub max_connections: usize,
    /// Chunk bytes read for one peer and not yet handed to QUIC. 4 MiB is
    /// ~100 s of 320 kb/s audio: plenty of read-ahead, bounded memory
    /// (max_connections × this = 2 GiB worst case, far above the usual).
    pub max_outstanding_bytes_per_peer: usize,
    /// How long a peer may take to send its request after opening a stream.
    pub request_timeout: Duration,
    /// Connections (open or in their handshake) from one IP address: 8
    /// covers a household behind one NAT; a flood of handshakes from one
    /// address then costs nobody else a slot.
    pub max_connections_per_ip: usize,
    /// Handshakes under way at once before new peers must prove their
    /// address first (a QUIC Retry, one round trip): a spoofed flood then
    /// holds no state.
    pub max_handshakes: usize,
    /// How long a QUIC handshake may take: 5 s is dozens of round trips
    /// on any real path.
    pub handshake_timeout: Duration,
    /// How long a peer may hold a connection before opening its first
    /// stream: a connection that asks nothing is given up.
    pub first_request_timeout: Duration,
    /// QUIC-level limits.
    pub transport: TransportLimits,
    /// What this node gives to relaying for peers behind NATs
    /// (`max_relays: 0` to refuse).
    pub relay: crate::nat::RelayLimits,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_outstanding_bytes_per_peer: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_connections_per_ip: 8,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(5),
            first_request_timeout: Duration::from_secs(5),
            transport: TransportLimits::default(),
            relay: crate::nat::RelayLimits::default(),
        }
    }
}

/// Counters, for the status line and tests.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections refused at a limit (in all, or per address).
    pub refused: AtomicUsize,
    /// Handshakes under way.
    pub handshaking: AtomicUsize,
    /// New peers asked to prove their address first (QUIC Retry).
    pub retries: AtomicUsize,
    /// Connections closed for asking nothing in time, or for failing their
    /// handshake in time.
    pub idle_closed: AtomicUsize,
    /// Chunks served.
    pub chunks_served: AtomicUsize,
    /// Chunk bytes served.
    pub bytes_served: AtomicUsize,
    /// Start requests answered.
    pub starts: AtomicUsize,
    /// Of those, requests sealed in a handshake and answered with it
    /// ([`crate::resume`]).
    pub sealed_starts: AtomicUsize,
    /// Handshakes whose first packet proved the peer's address (a QUIC
    /// token from an earlier connection, or a Retry): no limit of three
    /// times the bytes received holds back what this node sends first.
    pub validated: AtomicUsize,
    /// Sealed requests that could not be opened (an unknown or expired
    /// ticket): the asker was told, and asks the usual way.
    pub sealed_refused: AtomicUsize,
    /// Chunk requests answered (start requests not counted).
    pub chunk_requests: AtomicUsize,
    /// Replies whose asker stopped reading before they were delivered
    /// (cancelled requests): what was left of them was dropped.
    pub replies_stopped: AtomicUsize,
}

struct Shared {
    library: RwLock<Library>,
    cache: Option<Arc<ChunkCache>>,
    /// Library files kept open while they are being served.
    open_files: std::sync::Mutex<OpenFiles>,
    peers: std::sync::Mutex<PeerTable>,
    transport: Transport,
    limits: NodeLimits,
    stats: NodeStats,
    hello: Hello,
    /// Connections (open or handshaking) by remote IP address.
    per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Connections this node dialled (the peer serves on them), by the
    /// peer id their handshake proved: who-has queries are forwarded over
    /// them, and new ones are dialled only to verified table entries, at a
    /// bounded rate ([`FORWARD_DIALS`]).
    outbound: std::sync::Mutex<std::collections::HashMap<PeerId, crate::client::Peer>>,
    /// Tokens for forwarding dials.
    dial_budget: std::sync::Mutex<(f64, Instant)>,
    /// Library files being indexed again after they changed.
    reindexing: std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>,
    /// Every open connection by the peer id its handshake proved, both the
    /// ones peers opened and the ones this node dialled: what an
    /// introduction goes over (bounded by `max_connections` and joins).
    connected: std::sync::Mutex<std::collections::HashMap<PeerId, Connection>>,
    /// Relays this node runs for others.
    relays: crate::nat::Relays,
    /// Introductions this node makes (each costs the target a few packets).
    introductions: crate::nat::Bucket,
    /// Rendezvous this node acts on (each sends a few packets).
    punches: crate::nat::Bucket,
    /// Issues start tickets and opens the requests sealed with them.
    opener: crate::resume::Opener,
}

/// Introductions a node makes: a burst of 16, then 4 a second.
pub const INTRODUCTIONS: (f64, f64) = (16.0, 4.0);
/// Rendezvous a node acts on: a burst of 8, then 2 a second.
pub const PUNCHES: (f64, f64) = (8.0, 2.0);

/// Forwarding dials: a burst of 8, then one a second. A who-has never
/// dials an address a stranger merely named (only peers whose id and IP a
/// connection proved), and a flood of queries costs at most this many
/// handshakes.
pub const FORWARD_DIALS: (f64, f64) = (8.0, 1.0);

impl Shared {
    /// An open connection to `id`, either way.
    fn connection_to(&self, id: &PeerId) -> Option<Connection> {
        let c = self.connected.lock().ok()?.get(id).cloned()?;
        c.close_reason().is_none().then_some(c)
    }

    /// Registers an open connection; the returned guard unregisters it.
    fn register(self: &Arc<Self>, id: PeerId, conn: &Connection) {
        if let Ok(mut c) = self.connected.lock() {
            c.retain(|_, c| c.close_reason().is_none());
            c.insert(id, conn.clone());
        }
    }

    /// Forgets `conn` (if it is still the one registered for `id`).
    fn unregister(&self, id: &PeerId, conn: &Connection) {
        if let Ok(mut c) = self.connected.lock() {
            if c.get(id).is_some_and(|c| c.stable_id() == conn.stable_id()) {
                c.remove(id);
            }
        }
    }

    /// Takes a forwarding-dial token, if one is left.
    fn take_dial(&self) -> bool {
        let Ok(mut b) = self.dial_budget.lock() else { return false };
        let (burst, per_sec) = FORWARD_DIALS;
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * per_sec).min(burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// A connection to `id` to forward over: one this node dialled and
    /// still holds, else a new dial if the budget allows.
    async fn forward_peer(&self, id: PeerId, addr: SocketAddr) -> Option<crate::client::Peer> {
        let held = self.outbound.lock().ok()?.get(&id).cloned();
        if let Some(p) = held.filter(|p| p.connection().close_reason().is_none()) {
            return Some(p);
        }
        // A connection the peer opened to us: behind a NAT, the only way
        // in.
        if let Some(conn) = self.connection_to(&id) {
            let remote = conn.remote_address();
            return Some(crate::client::Peer::before_hello(conn, id, remote));
        }
        if !self.take_dial() {
            return None;
        }
        let peer = self.transport.connect(addr, Some(id)).await.ok()?;
        if let Ok(mut o) = self.outbound.lock() {
            o.retain(|_, p| p.connection().close_reason().is_none());
            o.insert(id, peer.clone());
        }
        Some(peer)
    }
}

/// One accepted connection's claim on the node's limits, given back when
/// dropped.
struct Slot {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut m) = self.shared.per_ip.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

/// A serving node.
#[derive(Clone)]
pub struct Node {
    transport: Transport,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("transport", &self.transport).finish_non_exhaustive()
    }
}

impl Node {
    /// Binds a node on `listen` serving `library`.
    pub fn bind(
        identity: Arc<Identity>,
        listen: SocketAddr,
        library: Library,
        limits: NodeLimits,
    ) -> Result<Self> {
        Self::bind_with_cache(identity, listen, library, None, limits)
    }

    /// Binds a node serving `library` and, for tracks not in it, what
    /// `cache` holds (as a non-origin peer).
    pub fn bind_with_cache(
        identity: Arc<Identity>,
        listen: SocketAddr,
        library: Library,
        cache: Option<Arc<ChunkCache>>,
        limits: NodeLimits,
    ) -> Result<Self> {
        let server = tls::server_config(&identity, &limits.transport)?;
        let transport = Transport::bind(identity, listen, Some(server), &limits.transport)?;
        Self::around(transport, library, cache, limits)
    }

    /// [`Node::bind_with_cache`] on an emulated link ([`crate::netem`]).
    /// For tests and the bench: only with the `testkit` feature.
    #[cfg(feature = "testkit")]
    pub fn bind_emulated(
        identity: Arc<Identity>,
        listen: SocketAddr,
        library: Library,
        cache: Option<Arc<ChunkCache>>,
        limits: NodeLimits,
        link: Option<(crate::netem::LinkProfile, u64)>,
    ) -> Result<Self> {
        let server = tls::server_config(&identity, &limits.transport)?;
        let transport =
            Transport::bind_emulated(identity, listen, Some(server), &limits.transport, link)?;
        Self::around(transport, library, cache, limits)
    }

    fn around(
        transport: Transport,
        library: Library,
        cache: Option<Arc<ChunkCache>>,
        limits: NodeLimits,
    ) -> Result<Self> {
        let hello = transport.hello(vec![transport.local_addr()?]);
        let relay = limits.relay.clone();
        let shared = Arc::new(Shared {
            library: RwLock::new(library),
            cache,
            open_files: Default::default(),
            peers: Default::default(),
            transport: transport.clone(),
            limits,
            stats: NodeStats::default(),
            hello,
            per_ip: Default::default(),
            outbound: Default::default(),
            dial_budget: std::sync::Mutex::new((FORWARD_DIALS.0, Instant::now())),
            reindexing: Default::default(),
            connected: Default::default(),
            relays: crate::nat::Relays::new(relay),
            introductions: crate::nat::Bucket::new(INTRODUCTIONS.0, INTRODUCTIONS.1),
            punches: crate::nat::Bucket::new(PUNCHES.0, PUNCHES.1),
            opener: crate::resume::Opener::new(transport.identity()),
        });
        Ok(Self { transport, shared })
    }

    /// The endpoint, for dialling other peers from the same socket.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The relays this node runs for others.
    pub fn relays(&self) -> &crate::nat::Relays {
        &self.shared.relays
    }

    /// Counters.
    pub fn stats(&self) -> &NodeStats {
        &self.shared.stats
    }

    /// Runs `f` with the library.
    pub fn with_library<R>(&self, f: impl FnOnce(&Library) -> R) -> Option<R> {
        self.shared.library.read().ok().map(|l| f(&l))
    }

    /// Peers this node knows.
    pub fn known_peers(&self) -> Vec<PeerInfo> {
        self.shared.peers.lock().map(|t| t.sample(MAX_KNOWN, &[])).unwrap_or_default()
    }

    /// Introduces this node to the peers at `addrs` (`chorus seed --peer`):
    /// dials each, exchanges what both know, and remembers them. Peers that
    /// cannot be reached are reported and skipped.
    pub async fn join(&self, addrs: &[(SocketAddr, Option<PeerId>)]) -> usize {
        let me = self.me();
        let mut joined = 0;
        for (addr, id) in addrs {
            match self.transport.connect(*addr, *id).await {
                Ok(peer) => {
                    if let Ok(mut o) = self.shared.outbound.lock() {
                        o.insert(peer.id(), peer.clone());
                    }
                    // The peer may ask things of us on this connection too:
                    // behind a NAT it is the only way it can (an
                    // introduction, a who-has). The keep-alive holds the
                    // NAT's mapping open.
                    let (shared, conn, id) =
                        (self.shared.clone(), peer.connection().clone(), peer.id());
                    shared.register(id, &conn);
                    tokio::spawn(async move {
                        serve_streams(&shared, &conn, id, true).await;
                        shared.unregister(&id, &conn);
                    });
                    let mut mine = vec![me.clone()];
                    mine.extend(self.known_peers());
                    mine.truncate(chorus_protocol::limits::MAX_PEERS);
                    let theirs = peer.exchange_peers(mine).await.unwrap_or_default();
                    if let Ok(mut t) = self.shared.peers.lock() {
                        t.insert(
                            peer.id(),
                            discovery::complete_addrs(&peer.hello().listen_addrs, addr.ip()),
                        );
                        t.merge(&theirs, me.id);
                    }
                    joined += 1;
                }
                Err(e) => tracing::warn!("cannot join peer {addr}: {e}"),
            }
        }
        joined
    }

    fn me(&self) -> PeerInfo {
        PeerInfo { id: self.transport.peer_id(), addrs: self.transport.listen_addrs() }
    }

    /// Accepts connections until the endpoint is closed, within the
    /// limits of [`NodeLimits`]: in all, per address, handshakes under way
    /// (past which new peers must prove their address), and deadlines for
    /// the handshake and the first request.
    pub async fn serve(&self) {
        while let Some(incoming) = self.transport.endpoint().accept().await {
            let shared = &self.shared;
            let (stats, limits) = (&shared.stats, &shared.limits);
            let ip = incoming.remote_address().ip();
            let from_ip = shared.per_ip.lock().map_or(0, |m| m.get(&ip).copied().unwrap_or(0));
            if stats.connections.load(Ordering::Relaxed) >= limits.max_connections
                || from_ip >= limits.max_connections_per_ip
            {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
                continue;
            }
            if stats.handshaking.load(Ordering::Relaxed) >= limits.max_handshakes
                && !incoming.remote_address_validated()
            {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            stats.connections.fetch_add(1, Ordering::Relaxed);
            if incoming.remote_address_validated() {
                stats.validated.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut m) = shared.per_ip.lock() {
                *m.entry(ip).or_default() += 1;
            }
            let slot = Slot { shared: shared.clone(), ip };
            stats.handshaking.fetch_add(1, Ordering::Relaxed);
            let shared = shared.clone();
            tokio::spawn(async move {
                let deadline = shared.limits.handshake_timeout;
                let handshake = tokio::time::timeout(deadline, handshake(&shared, incoming)).await;
                shared.stats.handshaking.fetch_sub(1, Ordering::Relaxed);
                match handshake {
                    Ok(Ok(conn)) => serve_connection(shared.clone(), conn).await,
                    Ok(Err(e)) => tracing::debug!("handshake failed: {e}"),
                    Err(_) => {
                        shared.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("handshake from {ip} took over {deadline:?}");
                    }
                }
                drop(slot);
            });
        }
    }

    /// Closes every connection and the endpoint.
    pub async fn shutdown(&self) {
        self.transport.close().await;
    }
}

/// Completes an incoming handshake. A start request sealed in its server
/// name ([`crate::resume`]) is answered at once, on a stream this node
/// opens, as 0.5-RTT data behind the handshake flight; one that cannot be
/// opened gets an error there, so the asker asks the usual way at once.
async fn handshake(
    shared: &Arc<Shared>,
    incoming: quinn::Incoming,
) -> std::result::Result<Connection, quinn::ConnectionError> {
    let mut connecting = incoming.accept()?;
    let name = connecting
        .handshake_data()
        .await?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()
        .and_then(|d| d.server_name);
    let Some(name) = name.filter(|n| crate::resume::is_sealed(n)) else {
        return connecting.await;
    };
    // A server's conversion always succeeds (quinn's docs).
    let (conn, established) = match connecting.into_0rtt() {
        Ok(c) => c,
        Err(connecting) => return connecting.await,
    };
    // A handshake that does not complete in time (this future dropped by
    // the caller's deadline) closes the connection, so the answer's task
    // ends at once instead of holding its bytes until the idle timeout.
    let guard = CloseUnlessKept(Some(conn.clone()));
    let request = shared.opener.open(&name, std::time::SystemTime::now());
    let s = shared.clone();
    let c = conn.clone();
    tokio::spawn(async move { push_start(&s, &c, request).await });
    // The response goes before the client's certificate is checked: the
    // request proved the asker holds a ticket only a peer that completed a
    // handshake got; the rest waits for the handshake, as for anyone.
    established.await;
    guard.keep();
    match conn.close_reason() {
        Some(e) => Err(e),
        None => Ok(conn),
    }
}

/// Closes a connection when dropped, unless kept.
struct CloseUnlessKept(Option<Connection>);

impl CloseUnlessKept {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            Closed::Idle.close(&conn);
        }
    }
}

/// The most audio a start sealed in a handshake is answered with: more
/// than a first flight carries (the rest is asked by deadline), and a
/// bound on what an unfinished handshake can make the node buffer.
pub const SEALED_START_BUDGET: u32 = 256 * 1024;

/// Sends the answer to a sealed start request on a stream of its own.
/// Bounded: one per connection, at most [`SEALED_START_BUDGET`] of audio,
/// and the connection is closed if its handshake does not complete.
async fn push_start(
    shared: &Arc<Shared>,
    conn: &Connection,
    request: std::result::Result<StartRequest, crate::resume::Refusal>,
) {
    let Ok(mut send) = conn.open_uni().await else { return };
    let result = match request {
        Ok(mut r) => {
            r.budget = r.budget.min(SEALED_START_BUDGET);
            shared.stats.sealed_starts.fetch_add(1, Ordering::Relaxed);
            let budget = Semaphore::new(shared.limits.max_outstanding_bytes_per_peer);
            // The connection's first request: due now.
            serve_start(shared, &budget, conn, Instant::now(), &mut send, r).await
        }
        Err(why) => {
            shared.stats.sealed_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("sealed start from {} refused: {why}", conn.remote_address());
            write_error(&mut send, ErrorCode::Refused, why.to_string()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!("sealed start to {} failed: {e}", conn.remote_address());
    }
    finish_or_reset(shared, send).await;
}

/// Finishes a reply; one the asker stops reading is reset, so the rest is
/// dropped, not sent.
async fn finish_or_reset(shared: &Shared, mut send: SendStream) {
    let stopped = send.stopped();
    let _ = send.finish();
    // A reply the asker gave up on (a cancelled request: it stopped the
    // stream) would otherwise still go out in full from QUIC's send
    // buffer, using the link and holding one of the asker's streams until
    // every byte is acknowledged: after a seek the new place's requests
    // waited seconds for stream credit behind the old place's replies.
    // Reset it, so the rest is dropped. Bounded: one task per open stream,
    // ending when the reply is acknowledged or the connection closes.
    if let Ok(Some(code)) = stopped.await {
        shared.stats.replies_stopped.fetch_add(1, Ordering::Relaxed);
        let _ = send.reset(code);
    }
}

async fn serve_connection(shared: Arc<Shared>, conn: Connection) {
    let peer = match peer_id_from_connection(&conn) {
        Ok(id) => id,
        Err(e) => {
            tracing::debug!("refusing {}: {e}", conn.remote_address());
            Closed::BadCertificate.close(&conn);
            return;
        }
    };
    if shared.transport.is_banned(&peer) {
        Closed::Banned.close(&conn);
        return;
    }
    tracing::debug!("peer {} connected from {}", peer.fmt_short(), conn.remote_address());
    shared.register(peer, &conn);
    serve_streams(&shared, &conn, peer, false).await;
    shared.unregister(&peer, &conn);
}

/// Serves the requests a peer opens on `conn`. On a connection it opened
/// (not `dialled` by us) its first request is due within
/// `first_request_timeout`.
async fn serve_streams(shared: &Arc<Shared>, conn: &Connection, peer: PeerId, dialled: bool) {
    let budget = Arc::new(Semaphore::new(shared.limits.max_outstanding_bytes_per_peer));
    let order = Arc::new(ReplyOrder::default());
    let epoch = Instant::now();
    let mut first = !dialled;
    loop {
        let accepted = if first {
            let deadline = shared.limits.first_request_timeout;
            match tokio::time::timeout(deadline, conn.accept_bi()).await {
                Ok(a) => a,
                Err(_) => {
                    shared.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    Closed::Idle.close(conn);
                    return;
                }
            }
        } else {
            conn.accept_bi().await
        };
        first = false;
        let (send, recv) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("peer {} gone: {e}", peer.fmt_short());
                return;
            }
        };
        let (shared, budget, turn) = (shared.clone(), budget.clone(), order.take());
        let (remote, conn) = (conn.remote_address(), conn.clone());
        tokio::spawn(async move {
            let from = From { id: peer, remote, conn, dialled, epoch };
            if let Err(e) = serve_stream(&shared, &budget, from, turn, send, recv).await {
                tracing::debug!("request from {} failed: {e}", peer.fmt_short());
            }
        });
        // Let it start before the next is accepted: requests that came
        // together are then served in the order they were sent (most
        // urgent first), not the last one first (tokio runs the task
        // spawned last first).
        tokio::task::yield_now().await;
    }
}

/// Who a request came from.
struct From {
    id: PeerId,
    remote: SocketAddr,
    /// The connection the request came on.
    conn: Connection,
    /// True on a connection this node dialled.
    dialled: bool,
    /// When serving the connection began: its requests' deadlines are
    /// timed from it ([`priority`]).
    epoch: Instant,
}

/// Serves one request; a chunk reply's first bytes go out in `turn`
/// ([`ReplyOrder`]).
async fn serve_stream(
    shared: &Arc<Shared>,
    budget: &Semaphore,
    from: From,
    mut turn: Turn,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    let (asker, remote) = (from.id, from.remote);
    let request = match tokio::time::timeout(
        shared.limits.request_timeout,
        read_frame_max(&mut recv, limits::MAX_REQUEST_FRAME_LEN as usize),
    )
    .await
    {
        Err(_) => return Err(Error::Timeout(shared.limits.request_timeout, "a request")),
        Ok(Ok(Some(f))) => f.message,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e @ (Error::Protocol(_) | Error::StreamEnded))) => {
            let code = match e {
                Error::Protocol(ProtocolError::UnsupportedVersion { .. }) => {
                    ErrorCode::UnsupportedVersion
                }
                _ => ErrorCode::BadRequest,
            };
            write_error(&mut send, code, e.to_string()).await?;
            let _ = send.finish();
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
    };
    if !matches!(request, Message::ChunkRequest(_) | Message::TailRequest(_)) {
        // Not a chunk: nothing to keep in order behind.
        turn.begin();
    }
    match request {
        Message::Hello(h) => {
            // A peer that serves is worth remembering (and telling others),
            // at the IP its connection came from: the handshake proved its
            // id and that IP, not any other address it names.
            let addrs: Vec<SocketAddr> = discovery::complete_addrs(&h.listen_addrs, remote.ip())
                .into_iter()
                .filter(|a| a.ip().to_canonical() == remote.ip().to_canonical())
                .collect();
            if let Ok(mut t) = shared.peers.lock() {
                t.insert(asker, addrs);
            }
            if h.negotiate(frame::MIN_VERSION, frame::VERSION).is_some() {
                // Tell the peer where we see it: behind a NAT, that is its
                // public address (it believes it only when others agree).
                let reply = Hello {
                    observed: Some(remote),
                    mapped: shared.transport.mapped(),
                    listen_addrs: shared.transport.listen_addrs(),
                    // A new one each time: a ticket's id goes in the clear,
                    // so a fresh one keeps connections from being linked.
                    ticket: Some(shared.opener.issue(std::time::SystemTime::now())),
                    ..shared.hello.clone()
                };
                write_message(&mut send, &Message::Hello(reply)).await?;
            } else {
                let msg = format!(
                    "this node speaks versions {}..={}",
                    frame::MIN_VERSION,
                    frame::VERSION
                );
                write_error(&mut send, ErrorCode::UnsupportedVersion, msg).await?;
            }
        }
        Message::SearchRequest(q) => {
            let limit = (q.limit as usize).min(limits::MAX_SEARCH_RESULTS);
            let results =
                shared.library.read().map(|l| l.search(&q.query, limit)).unwrap_or_default();
            // Long tags can make a full page exceed the frame limit: halve
            // the page until it fits.
            let mut msg = Message::SearchResponse(SearchResponse { results });
            while frame::HEADER_LEN + msg.encoded_len() > limits::MAX_FRAME_LEN as usize {
                if let Message::SearchResponse(r) = &mut msg {
                    let half = r.results.len() / 2;
                    r.results.truncate(half);
                }
            }
            write_message(&mut send, &msg).await?;
        }
        Message::ManifestRequest(r) => match find(shared, &r.track) {
            Some(t) => {
                let reply = ManifestResponse {
                    track: r.track,
                    manifest: t.manifest.encoded().clone(),
                    origin: true,
                };
                write_message(&mut send, &Message::ManifestResponse(reply)).await?;
                write_hashes(&mut send, &t.manifest, 0..t.manifest.page_count()).await?;
            }
            None => {
                match shared.cache.as_ref().and_then(|c| c.manifest(&r.track).map(|m| (c, m))) {
                    // From the cache: not an origin, and say which chunks we hold.
                    Some((cache, m)) => {
                        let reply = ManifestResponse {
                            track: r.track,
                            manifest: m.encoded().clone(),
                            origin: false,
                        };
                        write_message(&mut send, &Message::ManifestResponse(reply)).await?;
                        write_hashes(&mut send, &m, 0..m.page_count()).await?;
                        let have = Have { track: r.track, runs: cache.have(&r.track) };
                        write_message(&mut send, &Message::Have(have)).await?;
                    }
                    None => unknown_track(&mut send, &r.track).await?,
                }
            }
        },
        Message::ChunkRequest(r) => {
            let to = (&from.conn, &mut send, &mut turn);
            serve_chunks(shared, budget, to, from.epoch, r, 0).await?;
        }
        Message::TailRequest(t) => {
            // One chunk, from a group's start: checked where its length is
            // known (a bad start is refused there).
            let from_byte = usize::try_from(t.from).unwrap_or(usize::MAX).max(1);
            let r = ChunkRequest {
                track: t.track,
                first: t.index,
                count: 1,
                deadline_ms: t.deadline_ms,
            };
            let to = (&from.conn, &mut send, &mut turn);
            serve_chunks(shared, budget, to, from.epoch, r, from_byte).await?;
        }
        Message::StartRequest(r) => {
            serve_start(shared, budget, &from.conn, from.epoch, &mut send, r).await?;
        }
        Message::PeerExchange(px) => {
            let me = shared.transport.peer_id();
            let theirs: Vec<PeerInfo> = px
                .peers
                .into_iter()
                .map(|p| PeerInfo {
                    addrs: discovery::complete_addrs(&p.addrs, remote.ip()),
                    id: p.id,
                })
                .collect();
            let reply = match shared.peers.lock() {
                Ok(mut t) => {
                    let reply = t.sample(64, &[asker, me]);
                    t.merge(&theirs, me);
                    reply
                }
                Err(_) => Vec::new(),
            };
            write_message(&mut send, &Message::PeerExchange(PeerExchange { peers: reply })).await?;
        }
        Message::Connect(c) => introduce(shared, &from, c, &mut send).await?,
        Message::Rendezvous(r) => {
            if !from.dialled {
                let msg = "only a peer this node joined may introduce others to it";
                write_error(&mut send, ErrorCode::Refused, msg.into()).await?;
            } else if !shared.punches.take(1.0) {
                write_error(&mut send, ErrorCode::Busy, "too many introductions".into()).await?;
            } else {
                crate::nat::act_on(&shared.transport, remote.ip(), &r).await;
                write_message(&mut send, &Message::Rendezvous(r)).await?;
            }
        }
        Message::WhoHas(q) => {
            let peers = who_has(shared, asker, q.query_id, q.track, q.hops_left).await;
            let reply = WhoHasReply { query_id: q.query_id, track: q.track, peers };
            write_message(&mut send, &Message::WhoHasReply(reply)).await?;
        }
        other => {
            let msg = format!("{:?} is not a request", other.kind());
            write_error(&mut send, ErrorCode::BadRequest, msg).await?;
        }
    }
    finish_or_reset(shared, send).await;
    Ok(())
}

/// Answers a [`Connect`]: tells the target (on its own connection) where
/// the asker is, or opens a relay and tells it the relay's port; once it
/// has acted, tells the asker where to dial. See [`crate::nat`].
async fn introduce(
    shared: &Arc<Shared>,
    from: &From,
    c: chorus_protocol::message::Connect,
    send: &mut SendStream,
) -> Result<()> {
    use chorus_protocol::message::Rendezvous;
    let Some(conn) = shared.connection_to(&c.target).filter(|_| c.target != from.id) else {
        let msg = format!("not connected to peer {}", c.target.fmt_short());
        return write_error(send, ErrorCode::Unreachable, msg).await;
    };
    if !shared.introductions.take(1.0) {
        return write_error(send, ErrorCode::Busy, "too many introductions; try later".into())
            .await;
    }
    let target_at = conn.remote_address();
    let target = crate::client::Peer::before_hello(conn, c.target, target_at);
    let unspecified = |port| SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
    let (told, answer) = if c.relay {
        let ip = shared.transport.local_addr()?.ip();
        // The relay lasts while the asker's connection to us does: a
        // listener that quits frees its slot at once.
        let asker = from.conn.clone();
        let ends = async move {
            asker.closed().await;
        };
        let Some(mut relay) = shared.relays.open(ip, from.remote.ip(), ends).await else {
            let msg = "this node runs no more relays";
            return write_error(send, ErrorCode::Busy, msg.into()).await;
        };
        let token = Some(relay.token);
        let told = Rendezvous { peer: from.id, addr: unspecified(relay.port), relay: token };
        let tell =
            tokio::time::timeout(crate::nat::INTRODUCE_TIMEOUT, target.rendezvous(told.clone()))
                .await;
        if !matches!(tell, Ok(Ok(())))
            || !relay.target_registered(crate::nat::INTRODUCE_TIMEOUT).await
        {
            relay.close();
            let msg = format!("peer {} did not come to the relay", c.target.fmt_short());
            return write_error(send, ErrorCode::Unreachable, msg).await;
        }
        (told, Rendezvous { peer: c.target, addr: unspecified(relay.port), relay: token })
    } else {
        let told = Rendezvous { peer: from.id, addr: from.remote, relay: None };
        (told, Rendezvous { peer: c.target, addr: target_at, relay: None })
    };
    if !c.relay {
        let tell =
            tokio::time::timeout(crate::nat::INTRODUCE_TIMEOUT, target.rendezvous(told)).await;
        if !matches!(tell, Ok(Ok(()))) {
            let msg = format!("peer {} did not answer the introduction", c.target.fmt_short());
            return write_error(send, ErrorCode::Unreachable, msg).await;
        }
    }
    write_message(send, &Message::Rendezvous(answer)).await
}

/// Answers a who-has: this node if it holds the track, plus what up to
/// [`discovery::FORWARD_FANOUT`] known peers answer with one hop less.
async fn who_has(
    shared: &Arc<Shared>,
    asker: PeerId,
    query_id: u64,
    track: TrackId,
    hops_left: u8,
) -> Vec<PeerInfo> {
    let first = shared.peers.lock().is_ok_and(|mut t| t.first_sight(query_id));
    if !first {
        return Vec::new();
    }
    let me = shared.transport.peer_id();
    let mut found = Vec::new();
    let holds = find(shared, &track).is_some()
        || shared.cache.as_ref().is_some_and(|c| c.manifest(&track).is_some());
    let listen = shared.transport.listen_addrs();
    if holds && !listen.is_empty() {
        found.push(PeerInfo { id: me, addrs: listen });
    }
    if hops_left > 0 {
        // Only to peers whose id and IP a connection proved (never an
        // address a stranger named), over a connection this node holds or,
        // within the dial budget, a new one.
        let targets = shared
            .peers
            .lock()
            .map(|t| t.sample(discovery::FORWARD_FANOUT, &[asker, me]))
            .unwrap_or_default();
        let asks: Vec<_> = targets
            .into_iter()
            .filter_map(|p| p.addrs.first().map(|a| (*a, p.id)))
            .map(|(addr, id)| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let ask = async {
                        let peer = shared.forward_peer(id, addr).await?;
                        peer.who_has_with_id(query_id, track, hops_left - 1).await.ok()
                    };
                    tokio::time::timeout(discovery::FORWARD_TIMEOUT, ask).await.ok().flatten()
                })
            })
            .collect();
        for ask in asks {
            if let Ok(Some(peers)) = ask.await {
                found.extend(peers);
            }
        }
    }
    discovery::dedup(found)
}

fn find(shared: &Shared, track: &chorus_protocol::TrackId) -> Option<Arc<LibraryTrack>> {
    shared.library.read().ok()?.get(track).cloned()
}

async fn unknown_track(send: &mut SendStream, track: &chorus_protocol::TrackId) -> Result<()> {
    write_error(send, ErrorCode::UnknownTrack, format!("no track {track}")).await
}

/// Stream priority from a request's deadline (`deadline_ms` after it came,
/// `elapsed` into the connection's service): sooner is higher. quinn sends
/// higher-priority streams first within a connection. Absolute on the
/// connection's clock, so requests sent at different times go in the order
/// they are due, not by how far off each was when sent: a listener reads a
/// response done before an earlier-due one as a sign the earlier one lost
/// packets.
fn priority(deadline_ms: u32, elapsed: Duration) -> i32 {
    if deadline_ms == NO_DEADLINE {
        return i32::MIN;
    }
    let due = elapsed.as_millis().saturating_add(u128::from(deadline_ms));
    // Past 24 days on one connection, everything is equally due.
    -i32::try_from(due).unwrap_or(i32::MAX)
}

/// Serves a chunk request; `tail`: only the tail of its one chunk, from
/// that byte (a [`chorus_protocol::message::TailRequest`]; 0 for a whole
/// request).
async fn serve_chunks(
    shared: &Arc<Shared>,
    budget: &Semaphore,
    (conn, send, turn): (&Connection, &mut SendStream, &mut Turn),
    epoch: Instant,
    r: ChunkRequest,
    tail: usize,
) -> Result<()> {
    shared.stats.chunk_requests.fetch_add(1, Ordering::Relaxed);
    let Some(track) = find(shared, &r.track) else {
        return serve_cached_chunks(shared, (conn, send, turn), epoch, r, tail).await;
    };
    let count = track.manifest.layout().count();
    let end = u64::from(r.first.0) + u64::from(r.count);
    if end > u64::from(count) {
        let msg = format!("chunks {}..{end} asked, track has {count}", r.first);
        return write_error(send, ErrorCode::UnknownChunk, msg).await;
    }
    let _ = send.set_priority(priority(r.deadline_ms, epoch.elapsed()));
    let file = match shared.open_file(&track).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("{}: cannot open ({e}); no longer serving it", track.path.display());
            drop_track(shared, &track);
            return write_error(send, ErrorCode::Internal, "file unavailable".into()).await;
        }
    };
    for i in r.first.0..r.first.0 + r.count {
        let index = chorus_protocol::ChunkIndex(i);
        // The first chunk of a reply is the one its asker may be waiting
        // on: it goes in groups, usable as they arrive.
        let how = SendAs::reply(tail, i == r.first.0);
        let to = (conn, &mut *send, Some(&mut *turn));
        if !send_library_chunk(shared, budget, to, &track, &file, index, how).await? {
            break;
        }
    }
    Ok(())
}

/// How a chunk is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SendAs {
    /// Whole, checked whole by its receiver.
    Whole,
    /// With its group values, checked a group at a time as it arrives.
    Groups,
    /// Its group values and its bytes from this offset on (a tail).
    Tail(usize),
}

impl SendAs {
    /// How a chunk of a reply goes: the tail from byte `tail` (if not 0),
    /// else in groups if it is the reply's `first` (the one its asker
    /// may be waiting on, usable as it arrives), else whole.
    fn reply(tail: usize, first: bool) -> Self {
        match tail {
            0 if first => SendAs::Groups,
            0 => SendAs::Whole,
            from => SendAs::Tail(from),
        }
    }

    /// The chunk's bytes and group values (`groups`: empty for a chunk
    /// checked whole) as this says to send them, or why it cannot be sent
    /// so (a tail must start at one of its groups).
    fn cut(self, groups: Bytes, data: Bytes) -> std::result::Result<(Bytes, Bytes), String> {
        match self {
            SendAs::Whole => Ok((Bytes::new(), data)),
            SendAs::Groups => Ok((groups, data)),
            SendAs::Tail(from) => {
                let group = chorus_protocol::groups::GROUP_LEN;
                if groups.is_empty() || from % group != 0 || from >= data.len() {
                    return Err(format!("no tail from byte {from} of a {}-byte chunk", data.len()));
                }
                Ok((groups, data.slice(from..)))
            }
        }
    }
}

/// Reads one chunk of a library track, checks it against the manifest and
/// sends it as `how` says (see [`crate::wire::write_chunk`]). Returns false
/// (after an error frame) if the file changed since it was indexed (the
/// track is then withdrawn), or a tail was asked that it has not.
#[allow(clippy::too_many_arguments)]
async fn send_library_chunk(
    shared: &Arc<Shared>,
    budget: &Semaphore,
    (conn, send, turn): (&Connection, &mut SendStream, Option<&mut Turn>),
    track: &Arc<LibraryTrack>,
    file: &Arc<File>,
    index: chorus_protocol::ChunkIndex,
    how: SendAs,
) -> Result<bool> {
    let range = track.manifest.layout().byte_range(index);
    let len = (range.end - range.start) as usize;
    let permit = budget
        .acquire_many(u32::try_from(len).unwrap_or(u32::MAX))
        .await
        .map_err(|_| Error::UnexpectedReply("budget closed"))?;
    let (f, m) = (file.clone(), track.clone());
    let read = tokio::task::spawn_blocking(move || -> std::result::Result<_, String> {
        let mut buf = BytesMut::zeroed(len);
        f.read_exact_at(&mut buf, range.start).map_err(|e| e.to_string())?;
        // Never send bytes that do not match the manifest: the file may
        // have changed since it was indexed. (The group values come from
        // the same pass over the bytes.)
        let buf = buf.freeze();
        if how == SendAs::Whole {
            m.manifest.verify_chunk(index, &buf).map_err(|e| e.to_string())?;
            Ok((Bytes::new(), buf))
        } else {
            let (groups, c) =
                m.manifest.verify_with_groups(index, buf).map_err(|e| e.to_string())?;
            Ok((groups, c.into_data()))
        }
    })
    .await
    .map_err(|_| Error::UnexpectedReply("reader task failed"))?;
    let read = match read.map(|(groups, data)| how.cut(groups, data)) {
        Ok(Err(bad)) => {
            write_error(send, ErrorCode::BadRequest, bad).await?;
            return Ok(false);
        }
        Ok(Ok(cut)) => Ok(cut),
        Err(e) => Err(e),
    };
    match read {
        Ok((groups, data)) => {
            if let Some(turn) = turn.as_deref() {
                turn.wait().await;
            }
            write_chunk(send, track.manifest.id(), index, path_report(conn), groups, data).await?;
            if let Some(turn) = turn {
                turn.begin();
            }
            shared.stats.chunks_served.fetch_add(1, Ordering::Relaxed);
            shared.stats.bytes_served.fetch_add(len, Ordering::Relaxed);
            drop(permit);
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(
                "{}: changed since it was indexed ({e}); no longer serving it until rescanned",
                track.path.display()
            );
            drop_track(shared, track);
            write_error(send, ErrorCode::Internal, "file changed on the server".into()).await?;
            Ok(false)
        }
    }
}

/// Answers a start request: the best match's catalog entry (for a query),
/// the manifest (and what a cache holds), then the header chunks and the
/// chunks from the start point within the asker's budget, at the highest
/// priority. Everything a decoder needs to start, in one response.
async fn serve_start(
    shared: &Arc<Shared>,
    budget: &Semaphore,
    conn: &Connection,
    epoch: Instant,
    send: &mut SendStream,
    r: StartRequest,
) -> Result<()> {
    let _ = send.set_priority(priority(0, epoch.elapsed()));
    shared.stats.starts.fetch_add(1, Ordering::Relaxed);
    let at = Duration::from_millis(u64::from(r.at_ms));
    let id = match &r.want {
        Want::Track(id) => *id,
        Want::Query(q) => {
            // A node serving a cache answers from the tracks whose start
            // it holds: a listener asks whichever peer answers first, and
            // each refusal would cost it a round trip (a peer that had
            // played a track, not to its end, refused it by query though
            // it answered it by id).
            let best = shared.library.read().ok().and_then(|l| l.best_match(q)).or_else(|| {
                let cache = shared.cache.as_ref()?;
                crate::library::best_match_among(&cache.startable_tracks_now(at), q)
            });
            let Some(entry) = best else {
                let msg = format!("no track matches '{q}'");
                return write_error(send, ErrorCode::UnknownTrack, msg).await;
            };
            let id = entry.track;
            let reply = SearchResponse { results: vec![entry] };
            write_message(send, &Message::SearchResponse(reply)).await?;
            id
        }
    };
    let want = u64::from(r.budget.min(limits::MAX_START_BUDGET));
    if let Some(track) = find(shared, &id) {
        let reply = ManifestResponse {
            track: id,
            manifest: track.manifest.encoded().clone(),
            origin: true,
        };
        write_message(send, &Message::ManifestResponse(reply)).await?;
        let file = match shared.open_file(&track).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("{}: cannot open ({e}); no longer serving it", track.path.display());
                drop_track(shared, &track);
                return write_error(send, ErrorCode::Internal, "file unavailable".into()).await;
            }
        };
        let order = start_order(&track.manifest, at, want);
        write_hashes(send, &track.manifest, order.pages).await?;
        // Every chunk of the first flight goes in groups: the start rule
        // may wait on any of them.
        for index in order.chunks {
            let to = (conn, &mut *send, None);
            if !send_library_chunk(shared, budget, to, &track, &file, index, SendAs::Groups).await?
            {
                return Ok(());
            }
        }
        return write_hashes(send, &track.manifest, order.other_pages).await;
    }
    let Some((cache, manifest)) =
        shared.cache.as_ref().and_then(|c| c.manifest(&id).map(|m| (c.clone(), m)))
    else {
        return unknown_track(send, &id).await;
    };
    let reply = ManifestResponse { track: id, manifest: manifest.encoded().clone(), origin: false };
    write_message(send, &Message::ManifestResponse(reply)).await?;
    write_message(send, &Message::Have(Have { track: id, runs: cache.have(&id) })).await?;
    let order = start_order(&manifest, at, want);
    write_hashes(send, &manifest, order.pages).await?;
    for index in order.chunks {
        let c = cache.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            c.get_chunk_with_groups(&id, index).map(|(g, c)| (g, c.into_data()))
        })
        .await
        .map_err(|_| Error::UnexpectedReply("reader task failed"))?;
        // What the cache lacks the asker fetches by deadline (it has the
        // Have list).
        if let Some((groups, data)) = chunk {
            let len = data.len();
            write_chunk(send, id, index, path_report(conn), groups, data).await?;
            shared.stats.chunks_served.fetch_add(1, Ordering::Relaxed);
            shared.stats.bytes_served.fetch_add(len, Ordering::Relaxed);
        }
    }
    write_hashes(send, &manifest, order.other_pages).await
}

/// What a start response sends after the manifest, in order: the pages of
/// the hash list its chunks need, the head (the header chunks and the chunk
/// playback starts in: checked as soon as it is in), the rest of its chunks
/// within the budget, then the other pages. The asker's fetch meanwhile
/// asks for chunks whose pages it has.
fn start_order(manifest: &Manifest, at: Duration, budget: u64) -> StartOrder {
    let (head, rest): (Vec<ChunkIndex>, Vec<ChunkIndex>) =
        manifest.start_chunks(at, budget).into_iter().partition(|i| manifest.is_head(*i, at));
    let mut pages: Vec<u32> = head.iter().chain(&rest).map(|i| Manifest::page_of(*i)).collect();
    pages.sort_unstable();
    pages.dedup();
    let other_pages =
        (0..manifest.page_count()).filter(|p| pages.binary_search(p).is_err()).collect();
    let mut chunks = head;
    chunks.extend(rest);
    StartOrder { pages, chunks, other_pages }
}

/// What a start response sends after the manifest ([`start_order`]).
struct StartOrder {
    /// The pages of the hash list `chunks` need (sorted).
    pages: Vec<u32>,
    /// The head, then the rest of the start's chunks.
    chunks: Vec<ChunkIndex>,
    /// The other pages, last (sorted).
    other_pages: Vec<u32>,
}

/// Most pages of a hash list in one message: a page is 2 KiB of hashes
/// and its index points (at most [`chorus_protocol::manifest::MAX_PAGE_POINTS`],
/// 20 bytes each), so 256 keep a message under 2 MiB, within a frame.
const PAGES_PER_MESSAGE: u32 = 256;

/// Writes pages of a manifest's hash list, a message per run of
/// consecutive pages (sorted; a long run in several). Pages this node does
/// not know are left out (a cache holds only tracks whose list is whole).
async fn write_hashes(
    send: &mut SendStream,
    manifest: &Manifest,
    pages: impl IntoIterator<Item = u32>,
) -> Result<()> {
    let mut pages = pages.into_iter().peekable();
    while let Some(first) = pages.next() {
        let mut end = first + 1;
        while end - first < PAGES_PER_MESSAGE && pages.next_if_eq(&end).is_some() {
            end += 1;
        }
        if let Some(data) = manifest.hash_pages(first..end) {
            let msg = Hashes { track: manifest.id(), first_page: first, data };
            write_message(send, &Message::Hashes(msg)).await?;
        }
    }
    Ok(())
}

/// Serves chunks of a track this node holds only in its cache; every chunk
/// is verified again as it is read back.
async fn serve_cached_chunks(
    shared: &Shared,
    (conn, send, turn): (&Connection, &mut SendStream, &mut Turn),
    epoch: Instant,
    r: ChunkRequest,
    tail: usize,
) -> Result<()> {
    let Some((cache, manifest)) =
        shared.cache.as_ref().and_then(|c| c.manifest(&r.track).map(|m| (c.clone(), m)))
    else {
        return unknown_track(send, &r.track).await;
    };
    let count = manifest.layout().count();
    if u64::from(r.first.0) + u64::from(r.count) > u64::from(count) {
        let msg = format!("chunks from {} asked, track has {count}", r.first);
        return write_error(send, ErrorCode::UnknownChunk, msg).await;
    }
    let _ = send.set_priority(priority(r.deadline_ms, epoch.elapsed()));
    for i in r.first.0..r.first.0 + r.count {
        let index = chorus_protocol::ChunkIndex(i);
        let c = cache.clone();
        // The first chunk of a reply goes in groups (see serve_chunks).
        let how = SendAs::reply(tail, i == r.first.0);
        let data = tokio::task::spawn_blocking(move || {
            if how == SendAs::Whole {
                c.get_chunk(&r.track, index).map(|c| (Bytes::new(), c.into_data()))
            } else {
                c.get_chunk_with_groups(&r.track, index).map(|(g, c)| (g, c.into_data()))
            }
        })
        .await
        .map_err(|_| Error::UnexpectedReply("reader task failed"))?;
        let data = match data.map(|(groups, data)| how.cut(groups, data)) {
            Some(Err(bad)) => return write_error(send, ErrorCode::BadRequest, bad).await,
            Some(Ok(cut)) => Some(cut),
            None => None,
        };
        let Some((groups, data)) = data else {
            return write_error(
                send,
                ErrorCode::UnknownChunk,
                format!("chunk {i} is not cached here"),
            )
            .await;
        };
        let len = data.len();
        turn.wait().await;
        write_chunk(send, r.track, index, path_report(conn), groups, data).await?;
        turn.begin();
        shared.stats.chunks_served.fetch_add(1, Ordering::Relaxed);
        shared.stats.bytes_served.fetch_add(len, Ordering::Relaxed);
    }
    Ok(())
}

/// Files open for serving, most recently used last. The scheduler asks for
/// one chunk per request, so without this every 16 KiB chunk would cost an
/// open(2). Bounded so a large library cannot exhaust file descriptors.
#[derive(Default)]
struct OpenFiles {
    files: Vec<(TrackId, Arc<File>)>,
}

/// Files held open at once: enough for every track a busy seed streams.
const OPEN_FILES: usize = 64;

impl Shared {
    /// The track's file, opened once and reused while it stays among the
    /// recently served. (A file replaced under us keeps its old bytes behind
    /// the open handle; they still verify against the old manifest, so
    /// serving them stays correct.)
    async fn open_file(&self, track: &Arc<LibraryTrack>) -> std::io::Result<Arc<File>> {
        let id = track.manifest.id();
        if let Ok(mut open) = self.open_files.lock() {
            if let Some(pos) = open.files.iter().position(|(t, _)| *t == id) {
                let entry = open.files.remove(pos);
                let file = entry.1.clone();
                open.files.push(entry);
                return Ok(file);
            }
        }
        let path = track.path.clone();
        let file = tokio::task::spawn_blocking(move || File::open(&path))
            .await
            .map_err(|_| std::io::Error::other("opener task failed"))??;
        let file = Arc::new(file);
        if let Ok(mut open) = self.open_files.lock() {
            if open.files.len() >= OPEN_FILES {
                open.files.remove(0);
            }
            open.files.push((id, file.clone()));
        }
        Ok(file)
    }

    fn forget_file(&self, id: &TrackId) {
        if let Ok(mut open) = self.open_files.lock() {
            open.files.retain(|(t, _)| t != id);
        }
    }
}

/// Withdraws a track whose file changed or vanished under the node, and
/// indexes the file again a moment later: what it holds now is served as
/// the new track it is (a file still being written is left for the next
/// scan).
fn drop_track(shared: &Arc<Shared>, track: &LibraryTrack) {
    shared.forget_file(&track.manifest.id());
    if let Ok(mut l) = shared.library.write() {
        l.remove(&track.manifest.id());
    }
    let path = track.path.clone();
    let fresh = shared.reindexing.lock().is_ok_and(|mut r| r.insert(path.clone()));
    if !fresh {
        return;
    }
    let (shared, chunk_size) = (shared.clone(), track.manifest.layout().chunk_size());
    tokio::spawn(async move {
        tokio::time::sleep(REINDEX_AFTER).await;
        let p = path.clone();
        let indexed =
            tokio::task::spawn_blocking(move || crate::library::index_file(&p, chunk_size)).await;
        match indexed {
            Ok(Ok(t)) => {
                tracing::info!(
                    "{}: indexed again as {}",
                    path.display(),
                    t.manifest.id().fmt_short()
                );
                if let Ok(mut l) = shared.library.write() {
                    l.add(t);
                }
            }
            Ok(Err(e)) => tracing::warn!("{}: not served until the next scan: {e}", path.display()),
            Err(e) => tracing::warn!("{}: indexing failed: {e}", path.display()),
        }
        if let Ok(mut r) = shared.reindexing.lock() {
            r.remove(&path);
        }
    });
}

/// How long after a library file changed under the node it is indexed
/// again: a program rewriting it has usually finished by then.
const REINDEX_AFTER: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_go_in_the_order_their_requests_are_due_whenever_they_were_sent() {
        let ms = Duration::from_millis;
        // Asked first, due in 300 ms; asked 250 ms later, due 100 ms after
        // that (350 ms into the connection): the first goes first. Ranked
        // by deadline_ms alone, the second would overtake it.
        assert!(priority(300, ms(0)) > priority(100, ms(250)));
        assert!(priority(300, ms(0)) < priority(100, ms(150)));
        // Equally due: equal.
        assert_eq!(priority(0, ms(40)), priority(30, ms(10)));
        // Without a deadline: after everything; a connection open for
        // weeks: everything equally late, no overflow.
        assert_eq!(priority(NO_DEADLINE, ms(0)), i32::MIN);
        assert!(priority(u32::MAX - 1, ms(0)) > i32::MIN);
        let weeks = Duration::from_secs(30 * 24 * 3600);
        assert_eq!(priority(0, weeks), priority(5, weeks));
    }
}
