//! The QUIC endpoint of a node and dialling peers.
//!
//! [`Transport::bind`] opens one UDP socket (with large kernel buffers) and
//! one quinn endpoint that both accepts (when given a server config) and
//! dials. [`Transport::connect`] dials a peer, checks its certificate
//! against the expected [`PeerId`] if one was given, and exchanges hellos.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::message::{Hello, StartRequest};
use chorus_protocol::{Message, PeerId, TrackId, frame};
use quinn::Endpoint;
use socket2::{Domain, Protocol, Socket, Type};

use crate::client::{ManifestAnswer, Peer};
use crate::close::Closed;
use crate::error::{Error, Result};
use crate::identity::{Identity, peer_id_of_cert};
use crate::resume::ResumeStore;
use crate::tls::{self, TransportLimits};

/// UDP socket buffer size asked of the kernel. With the default (~200 KiB)
/// buffers, 1,000 concurrent request loops against one quinn server on
/// this machine lost 12% of packets and stalled for seconds; 4 MiB removed
/// every drop.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// How long dialling may take before we give up on a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's QUIC endpoint and identity.
#[derive(Clone)]
pub struct Transport {
    endpoint: Endpoint,
    identity: Arc<Identity>,
    client_config: quinn::ClientConfig,
    agent: Arc<str>,
    serving: bool,
    /// Peers that sent bad data: never dialled again by this node.
    banned: Arc<std::sync::Mutex<std::collections::HashSet<PeerId>>>,
    /// The emulated link's counters, when sends go through one.
    #[cfg(feature = "testkit")]
    link: Option<Arc<crate::netem::LinkStats>>,
    /// Where peers say they see this node: (the reporter's address, what it
    /// saw), the latest per reporter IP, at most [`MAX_OBSERVATIONS`].
    observations: Arc<std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>>>,
    /// The endpoint's own UDP socket (a second handle), for the few bare
    /// packets a hole punch or a relay registration sends from the port
    /// QUIC uses.
    raw: Option<Arc<std::net::UdpSocket>>,
    /// How each peer reached through a NAT was reached (others: direct).
    paths: Arc<std::sync::Mutex<std::collections::HashMap<PeerId, crate::nat::Path>>>,
    /// The port the router maps to this endpoint (UPnP), if any.
    mapped: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    /// Tickets and QUIC tokens peers gave this node, for starts in one
    /// round trip ([`crate::resume`]).
    resume: Arc<ResumeStore>,
}

/// Reports of this node's address kept (one per reporting IP).
pub const MAX_OBSERVATIONS: usize = 32;

/// How whatever stands between this node and its peers (a NAT) maps its
/// port, as the peers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Every peer sees the same address and port: no NAT, or one that keeps
    /// a mapping for all destinations (cone-like: hole punching works).
    Stable,
    /// Peers see different ports: a new mapping per destination (a
    /// symmetric NAT: peers must relay).
    PerDestination,
}

/// This node's address as its peers see it, once at least two peers at
/// different IPs agree on the IP (one peer's word is not believed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The address most of them see.
    pub addr: SocketAddr,
    /// How many peers (distinct IPs) see this IP.
    pub agreeing: usize,
    /// What the ports they see say about the NAT.
    pub mapping: Mapping,
}

/// The consensus of `reports` (reporter, seen): see [`Observed`].
pub fn consensus(reports: &[(SocketAddr, SocketAddr)]) -> Option<Observed> {
    let mut by_ip: Vec<(std::net::IpAddr, Vec<u16>)> = Vec::new();
    for (_, seen) in reports {
        let ip = seen.ip().to_canonical();
        match by_ip.iter_mut().find(|(i, _)| *i == ip) {
            Some((_, ports)) => ports.push(seen.port()),
            None => by_ip.push((ip, vec![seen.port()])),
        }
    }
    let (ip, ports) = by_ip.into_iter().max_by_key(|(_, p)| p.len())?;
    if ports.len() < 2 {
        return None;
    }
    let mut counted: Vec<(u16, usize)> = Vec::new();
    for p in &ports {
        match counted.iter_mut().find(|(q, _)| q == p) {
            Some((_, n)) => *n += 1,
            None => counted.push((*p, 1)),
        }
    }
    let port = counted.iter().max_by_key(|(_, n)| *n).map(|(p, _)| *p)?;
    let mapping = if counted.len() == 1 { Mapping::Stable } else { Mapping::PerDestination };
    Some(Observed { addr: SocketAddr::new(ip, port), agreeing: ports.len(), mapping })
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("peer_id", &self.identity.peer_id())
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish()
    }
}

/// Binds a UDP socket with [`SOCKET_BUFFER`]-sized buffers, warning when the
/// kernel grants less.
fn bind_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let io = |e| Error::io("binding UDP socket", addr.to_string(), e);
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
    if addr.is_ipv6() {
        // Accept IPv4 too where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    for (name, set, get) in [
        (
            "receive",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> std::io::Result<()>,
            Socket::recv_buffer_size as fn(&Socket) -> std::io::Result<usize>,
        ),
        ("send", Socket::set_send_buffer_size, Socket::send_buffer_size),
    ] {
        let _ = set(&socket, SOCKET_BUFFER);
        match get(&socket) {
            // Linux reports double the granted size.
            Ok(got) if got < SOCKET_BUFFER => tracing::warn!(
                "UDP {name} buffer is {} KiB, less than the {} KiB asked for; under load packets \
                 may drop. Raise it with: sysctl -w net.core.{}mem_max={}",
                got / 1024,
                SOCKET_BUFFER / 1024,
                if name == "receive" { "r" } else { "w" },
                SOCKET_BUFFER
            ),
            _ => {}
        }
    }
    socket.bind(&addr.into()).map_err(io)?;
    Ok(socket.into())
}

impl Transport {
    /// Binds an endpoint on `addr`. With `server`, it accepts connections.
    pub fn bind(
        identity: Arc<Identity>,
        addr: SocketAddr,
        server: Option<quinn::ServerConfig>,
        limits: &TransportLimits,
    ) -> Result<Self> {
        let socket = bind_socket(addr)?;
        let raw = socket.try_clone().ok().map(Arc::new);
        let serving = server.is_some();
        let runtime = quinn::default_runtime()
            .ok_or_else(|| Error::Identity("no async runtime for QUIC".into()))?;
        let endpoint = Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
            .map_err(|e| Error::io("starting QUIC endpoint", addr.to_string(), e))?;
        Self::around(endpoint, raw, identity, serving, limits)
    }

    /// Binds an endpoint whose sends go through an emulated link
    /// ([`crate::netem`]), with `seed` for its random draws (`None`: a
    /// plain one). For tests and the bench: only with the `testkit`
    /// feature.
    #[cfg(feature = "testkit")]
    pub fn bind_emulated(
        identity: Arc<Identity>,
        addr: SocketAddr,
        server: Option<quinn::ServerConfig>,
        limits: &TransportLimits,
        link: Option<(crate::netem::LinkProfile, u64)>,
    ) -> Result<Self> {
        let Some((profile, seed)) = link else {
            return Self::bind(identity, addr, server, limits);
        };
        let socket = bind_socket(addr)?;
        let raw = socket.try_clone().ok().map(Arc::new);
        let serving = server.is_some();
        let runtime = quinn::default_runtime()
            .ok_or_else(|| Error::Identity("no async runtime for QUIC".into()))?;
        let io = |e| Error::io("starting QUIC endpoint", addr.to_string(), e);
        let inner = runtime.wrap_udp_socket(socket).map_err(io)?;
        let emulated = crate::netem::EmulatedSocket::wrap(inner, profile, seed);
        let stats = emulated.stats();
        let endpoint = Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            server,
            emulated,
            runtime,
        )
        .map_err(io)?;
        let mut t = Self::around(endpoint, raw, identity, serving, limits)?;
        t.link = Some(stats);
        Ok(t)
    }

    fn around(
        endpoint: Endpoint,
        raw: Option<Arc<std::net::UdpSocket>>,
        identity: Arc<Identity>,
        serving: bool,
        limits: &TransportLimits,
    ) -> Result<Self> {
        let resume = Arc::new(ResumeStore::default());
        let client_config = tls::client_config(&identity, limits, resume.clone())?;
        let agent: Arc<str> = Arc::from(format!("chorus/{}", env!("CARGO_PKG_VERSION")));
        Ok(Self {
            endpoint,
            identity,
            client_config,
            agent,
            serving,
            banned: Arc::default(),
            #[cfg(feature = "testkit")]
            link: None,
            observations: Arc::default(),
            raw,
            paths: Arc::default(),
            mapped: Arc::default(),
            resume,
        })
    }

    /// A dial-only endpoint on an ephemeral port (for one-shot clients).
    pub fn client(identity: Arc<Identity>, limits: &TransportLimits) -> Result<Self> {
        let addr: SocketAddr = ([0, 0, 0, 0], 0).into();
        Self::bind(identity, addr, None, limits)
    }

    /// The quinn endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint.local_addr().map_err(|e| Error::io("reading local address", "socket", e))
    }

    /// Where this endpoint accepts connections (empty if it only dials). An
    /// unspecified IP is completed by whoever receives it.
    /// The address a router maps to this endpoint (see
    /// [`crate::portmap`]) comes first.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        match self.endpoint.local_addr() {
            Ok(a) if self.serving => {
                let mapped = self.mapped.lock().ok().and_then(|m| *m);
                mapped.into_iter().chain([a]).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The address a router maps to this endpoint, if any.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped.lock().ok().and_then(|m| *m)
    }

    /// Notes (or forgets) the address a router maps to this endpoint.
    pub fn set_mapped(&self, addr: Option<SocketAddr>) {
        if let Ok(mut m) = self.mapped.lock() {
            *m = addr;
        }
    }

    /// Our hello, advertising `listen_addrs`.
    pub fn hello(&self, listen_addrs: Vec<SocketAddr>) -> Hello {
        Hello {
            min_version: frame::MIN_VERSION,
            max_version: frame::VERSION,
            peer_id: self.peer_id(),
            listen_addrs,
            agent: self.agent.to_string(),
            observed: None,
            mapped: self.mapped(),
            ticket: None,
        }
    }

    /// The emulated link's counters, if this endpoint sends through one.
    #[cfg(feature = "testkit")]
    pub fn link_stats(&self) -> Option<Arc<crate::netem::LinkStats>> {
        self.link.clone()
    }

    /// Never dial this peer again (it sent data that failed verification).
    pub fn ban(&self, id: PeerId) {
        if let Ok(mut b) = self.banned.lock() {
            b.insert(id);
        }
    }

    /// Notes where the peer at `reporter` says it sees this node.
    pub fn note_observed(&self, reporter: SocketAddr, seen: SocketAddr) {
        if seen.port() == 0 || seen.ip().is_unspecified() {
            return;
        }
        if let Ok(mut o) = self.observations.lock() {
            o.retain(|(r, _)| r.ip() != reporter.ip());
            if o.len() >= MAX_OBSERVATIONS {
                o.remove(0);
            }
            o.push((reporter, seen));
        }
    }

    /// Sends one bare UDP packet from the endpoint's port (a punch or a
    /// relay registration; QUIC drops what it cannot parse). Best effort:
    /// a full send buffer loses it, like the network may.
    pub fn send_raw(&self, to: SocketAddr, packet: &[u8]) {
        if let Some(raw) = &self.raw {
            if let Err(e) = raw.send_to(packet, to) {
                tracing::debug!("bare packet to {to}: {e}");
            }
        }
    }

    /// Notes how `peer` was reached (a punched or relayed path).
    pub fn note_path(&self, peer: PeerId, path: crate::nat::Path) {
        if let Ok(mut p) = self.paths.lock() {
            if p.len() < crate::nat::MAX_PATHS || p.contains_key(&peer) {
                p.insert(peer, path);
            }
        }
    }

    /// How `peer` was reached: direct unless a NAT traversal said otherwise.
    pub fn path_of(&self, peer: &PeerId) -> crate::nat::Path {
        self.paths
            .lock()
            .ok()
            .and_then(|p| p.get(peer).copied())
            .unwrap_or(crate::nat::Path::Direct)
    }

    /// This node's address as its peers see it (see [`Observed`]).
    pub fn observed(&self) -> Option<Observed> {
        self.observations.lock().ok().and_then(|o| consensus(&o))
    }

    /// Notes what a peer's hello says it sees of us, and whether we reached
    /// it at a port its router maps to it.
    pub(crate) fn learn_from(&self, peer: &Peer) {
        if let Some(ticket) = &peer.hello().ticket {
            self.resume.remember(peer.id(), ticket.clone());
        }
        if peer.hello().mapped == Some(peer.addr()) {
            self.note_path(peer.id(), crate::nat::Path::Mapped);
        }
        if let Some(seen) = peer.hello().observed {
            self.note_observed(peer.addr(), seen);
        }
    }

    /// True if the peer is banned.
    pub fn is_banned(&self, id: &PeerId) -> bool {
        self.banned.lock().is_ok_and(|b| b.contains(id))
    }

    /// Dials `addr`. If `expected` is given, the peer's certificate must
    /// carry that id, or the connection is closed with
    /// [`Error::PeerIdMismatch`] before anything is sent.
    pub async fn connect(&self, addr: SocketAddr, expected: Option<PeerId>) -> Result<Peer> {
        let (conn, actual) = self.dial(addr, expected).await?;
        let listen = self.listen_addrs();
        let peer = Peer::handshake(conn, actual, addr, Message::Hello(self.hello(listen))).await?;
        self.learn_from(&peer);
        Ok(peer.with_resume(self.resume().clone()))
    }

    /// [`Transport::connect`], asking for `track`'s manifest along with the
    /// hello (one round trip for both): how a listener that knows what it
    /// wants starts.
    pub async fn connect_asking(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        track: TrackId,
    ) -> Result<(Peer, Result<ManifestAnswer>)> {
        let (conn, actual) = self.dial(addr, expected).await?;
        let hello = Message::Hello(self.hello(self.listen_addrs()));
        let (peer, answer) = Peer::handshake_asking(conn, actual, addr, hello, track).await?;
        self.learn_from(&peer);
        Ok((peer.with_resume(self.resume().clone()), answer))
    }

    /// This node's identity.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// Tickets and QUIC tokens peers gave this node: load it from a file
    /// to start in one round trip across processes ([`crate::resume`]).
    pub fn resume(&self) -> &Arc<ResumeStore> {
        &self.resume
    }

    /// The QUIC handshake, with the peer id and ban checks.
    pub(crate) async fn dial(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<(quinn::Connection, PeerId)> {
        self.dial_named(addr, expected, crate::resume::dial_name()).await
    }

    /// [`Transport::dial`], with `request` sealed into the handshake if
    /// `peer` gave this node a ticket: the peer then sends the start
    /// response with its handshake ([`crate::resume`]). True if sealed.
    pub(crate) async fn dial_sealed(
        &self,
        addr: SocketAddr,
        peer: PeerId,
        request: &StartRequest,
    ) -> Result<(quinn::Connection, PeerId, bool)> {
        let sealed = self
            .resume
            .ticket(&peer, std::time::SystemTime::now())
            .and_then(|t| crate::resume::seal(&t, request));
        let is_sealed = sealed.is_some();
        let name = sealed.unwrap_or_else(crate::resume::dial_name);
        let (conn, id) = self.dial_named(addr, Some(peer), name).await?;
        Ok((conn, id, is_sealed))
    }

    async fn dial_named(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        name: String,
    ) -> Result<(quinn::Connection, PeerId)> {
        if let Some(id) = expected.filter(|id| self.is_banned(id)) {
            return Err(Error::Banned(id));
        }
        // Before the dial, so a token kept for the peer is used.
        if let Some(id) = expected {
            self.resume.dialling(id, &name);
        }
        let connecting = self.endpoint.connect_with(self.client_config.clone(), addr, &name)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::Timeout(CONNECT_TIMEOUT, "the QUIC handshake"))??;
        let actual = peer_id_from_connection(&conn)?;
        if expected.is_none() {
            // Tokens the peer gives on this connection are kept for it.
            self.resume.dialling(actual, &name);
        }
        if self.is_banned(&actual) {
            Closed::Banned.close(&conn);
            return Err(Error::Banned(actual));
        }
        if let Some(expected) = expected {
            if expected != actual {
                Closed::UnexpectedPeer.close(&conn);
                return Err(Error::PeerIdMismatch { expected, actual });
            }
        }
        Ok((conn, actual))
    }

    /// Stops accepting, closes every connection, and waits (bounded) for
    /// peers to be told.
    pub async fn close(&self) {
        self.endpoint.close(Closed::Normal.code(), Closed::Normal.reason().as_bytes());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// The id in a connected peer's certificate.
pub fn peer_id_from_connection(conn: &quinn::Connection) -> Result<PeerId> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .ok_or_else(|| Error::Identity("peer presented no certificate".into()))?;
    let first = certs.first().ok_or_else(|| Error::Identity("empty certificate chain".into()))?;
    Ok(peer_id_of_cert(first)?)
}
