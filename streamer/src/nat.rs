//! Reaching nodes behind NATs: hole punching through an introducer, and a
//! relay when no direct path works.
//!
//! Three nodes: the asker A (a listener), the target B (a seed behind a
//! home router, connected to the introducer) and the introducer P, a peer
//! both reach. P sees each of them at its public address (the NAT's
//! mapping); that is what it tells the other.
//!
//! **Punch.** A sends P a [`Connect`](chorus_protocol::message::Connect); P tells B, on B's own connection, a
//! [`Rendezvous`] naming A's public address; B sends a few bare packets
//! there from its QUIC port (its NAT now expects A) and echoes; P answers A
//! with B's public address; A dials it. A's own dial opened A's NAT to B.
//! With NATs that keep one mapping per local port (cone-like), the
//! handshake goes through: an ordinary, verified Chorus connection.
//!
//! **Relay.** With a new mapping per destination (symmetric NATs) the
//! addresses P saw are of no use to the other side. A asks again with
//! `relay`: P opens a UDP port of its own, B and A each register there
//! with a token (from their QUIC ports), and P forwards datagrams between
//! the two registered addresses. The QUIC session is still A's with B,
//! end to end: P sees ciphertext only. Relays are bounded in number,
//! rate, bytes and time ([`RelayLimits`]), and a node can refuse to run
//! them.
//!
//! Everything a stranger can make a node do here is bounded: a target
//! acts only on rendezvous from peers it dialled itself, at a limited rate,
//! sending [`PUNCH_PACKETS`] tiny packets each; an introducer answers at a
//! limited rate too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chorus_protocol::PeerId;
use chorus_protocol::message::Rendezvous;

use crate::client::Peer;
use crate::error::{Error, Result};
use crate::transport::Transport;

/// How a peer was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Straight to the address it was heard at.
    Direct,
    /// Straight to a port its router maps to it (UPnP, PCP, NAT-PMP).
    Mapped,
    /// Through a hole both sides punched, introduced by a third peer.
    Punched,
    /// Through a third peer's relay (slow and costly: a last resort).
    Relayed,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Mapped => "mapped",
            Self::Punched => "punched",
            Self::Relayed => "relayed",
        })
    }
}

/// Peers whose path a transport remembers.
pub const MAX_PATHS: usize = 4096;
/// Bare packets a target sends to open its NAT (a few, in case one is lost).
pub const PUNCH_PACKETS: usize = 3;
/// How long a direct dial goes alone before a punch is asked for (at
/// least three round trips to the introducer).
pub const PUNCH_DELAY: Duration = Duration::from_millis(250);
/// How long a punch may take at least, from the request to the introducer,
/// before the asker turns to a relay; on a slow path, eight round trips to
/// the introducer (see [`punch_window`]).
pub const PUNCH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a punch through `via` may take: [`PUNCH_TIMEOUT`], or eight
/// round trips to `via` when that is longer (the introduction is two, the
/// handshake one, and a lost packet costs a retransmission).
pub fn punch_window(via: &Peer) -> Duration {
    PUNCH_TIMEOUT.max(via.connection().rtt() * 8)
}
/// How long dialling through a relay may take.
pub const RELAY_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an introducer waits for the target to act.
pub const INTRODUCE_TIMEOUT: Duration = Duration::from_secs(3);

/// The start of a relay registration packet (then the 32-byte token). A
/// QUIC packet never starts so: its first byte has the fixed bit (0x40)
/// set, and `0x00` does not.
const REGISTER: &[u8; 8] = b"\0chorusR";
/// A punch packet: one byte QUIC drops (the fixed bit is clear).
const PUNCH: &[u8; 1] = &[0];

/// A token bucket: `burst` at once, then `per_sec`.
#[derive(Debug)]
pub struct Bucket {
    state: std::sync::Mutex<(f64, Instant)>,
    burst: f64,
    per_sec: f64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(burst: f64, per_sec: f64) -> Self {
        Self { state: std::sync::Mutex::new((burst, Instant::now())), burst, per_sec }
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&self, n: f64) -> bool {
        let Ok(mut s) = self.state.lock() else { return false };
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_sec).min(self.burst);
        s.1 = now;
        if s.0 >= n {
            s.0 -= n;
            true
        } else {
            false
        }
    }
}

/// What the target of a rendezvous does: punch towards the asker, or
/// register at the relay (whose IP is the introducer's, `introducer`).
/// Returns once the first packets are on their way.
pub async fn act_on(transport: &Transport, introducer: IpAddr, r: &Rendezvous) {
    let (to, packet): (SocketAddr, Vec<u8>) = match r.relay {
        None => (r.addr, PUNCH.to_vec()),
        Some(token) => {
            let mut p = REGISTER.to_vec();
            p.extend_from_slice(&token);
            (SocketAddr::new(introducer, r.addr.port()), p)
        }
    };
    if to.port() == 0 || to.ip().is_unspecified() || to.ip().is_multicast() {
        return;
    }
    transport.send_raw(to, &packet);
    // The rest a moment later, in case the first is lost.
    let t = transport.clone();
    tokio::spawn(async move {
        for _ in 1..PUNCH_PACKETS {
            tokio::time::sleep(Duration::from_millis(30)).await;
            t.send_raw(to, &packet);
        }
    });
}

/// Reaches `target`, heard of from `via` (at `heard`, if an address was
/// given): a direct dial and a punch through `via` race; if neither
/// connects within [`punch_window`] (after the direct dial's head start),
/// through `via`'s relay. The path taken
/// is noted on the transport ([`Transport::path_of`]).
pub async fn reach(
    transport: &Transport,
    via: &Peer,
    target: PeerId,
    heard: Option<SocketAddr>,
) -> Result<Peer> {
    let began = std::time::Instant::now();
    let reached = |path: Path| {
        let ms = began.elapsed().as_secs_f64() * 1e3;
        tracing::info!("reached {} by a {path} path in {ms:.1} ms", target.fmt_short());
    };
    let delay = PUNCH_DELAY.max(via.connection().rtt() * 3);
    let direct = async {
        match heard {
            Some(a) => transport.connect(a, Some(target)).await,
            None => std::future::pending().await,
        }
    };
    // Once the target has punched towards us, a direct dial that gets
    // through may owe it to that hole.
    let introduced = std::sync::atomic::AtomicBool::new(false);
    let punched = async {
        if heard.is_some() {
            // The direct dial first, alone for a moment: a reachable peer
            // (public, or with a port mapped on its router) costs nobody a
            // punch.
            tokio::time::sleep(delay).await;
        }
        let r = via.connect_to(target, false).await?;
        introduced.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!("{} introduced us to {} at {}", via.addr(), target.fmt_short(), r.addr);
        transport.connect(r.addr, Some(target)).await
    };
    let window = delay + punch_window(via);
    let raced = tokio::time::timeout(window, first_ok(direct, punched)).await;
    match raced {
        Ok(Ok((peer, direct_won))) => {
            let punch_sent = introduced.load(std::sync::atomic::Ordering::Relaxed);
            let path = match direct_won {
                true if peer.hello().mapped == Some(peer.addr()) => Path::Mapped,
                true if !punch_sent => Path::Direct,
                _ => Path::Punched,
            };
            transport.note_path(target, path);
            reached(path);
            return Ok(peer.with_path(path));
        }
        Ok(Err(e)) => tracing::debug!("no direct path to {}: {e}", target.fmt_short()),
        Err(_) => tracing::debug!("no direct path to {} in {window:?}", target.fmt_short()),
    }
    let r = via.connect_to(target, true).await?;
    let token = r.relay.ok_or(Error::UnexpectedReply("a relay without a token"))?;
    let relay = SocketAddr::new(via.addr().ip(), r.addr.port());
    act_on(
        transport,
        via.addr().ip(),
        &Rendezvous { peer: target, addr: relay, relay: Some(token) },
    )
    .await;
    let peer = tokio::time::timeout(RELAY_DIAL_TIMEOUT, transport.connect(relay, Some(target)))
        .await
        .map_err(|_| Error::Timeout(RELAY_DIAL_TIMEOUT, "dialling through a relay"))??;
    tracing::debug!("{} relays for us to {}", via.addr(), target.fmt_short());
    reached(Path::Relayed);
    transport.note_path(target, Path::Relayed);
    Ok(peer.with_path(Path::Relayed))
}

/// A hole punch to `target` through `via` (no direct dial, no relay),
/// bounded by [`punch_window`]; the path is noted as punched.
pub async fn punch(transport: &Transport, via: &Peer, target: PeerId) -> Result<Peer> {
    let attempt = async {
        let r = via.connect_to(target, false).await?;
        transport.connect(r.addr, Some(target)).await
    };
    let window = punch_window(via);
    let peer = tokio::time::timeout(window, attempt)
        .await
        .map_err(|_| Error::Timeout(window, "a hole punch"))??;
    transport.note_path(target, Path::Punched);
    Ok(peer.with_path(Path::Punched))
}

/// How long a listener waits before each new try for a direct path to a
/// peer it reached through a relay (NATs change, mappings expire).
pub const UPGRADE_AFTER: [Duration; 5] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// Tries, now and then ([`UPGRADE_AFTER`]), to punch a direct path to
/// `target`, reached through `via`'s relay; the direct connection if one
/// works.
pub async fn upgrade(transport: &Transport, via: &Peer, target: PeerId) -> Option<Peer> {
    for wait in UPGRADE_AFTER {
        tokio::time::sleep(wait).await;
        if via.connection().close_reason().is_some() {
            return None;
        }
        match punch(transport, via, target).await {
            Ok(peer) => {
                tracing::info!("reached {} directly now (no more relay)", target.fmt_short());
                return Some(peer);
            }
            Err(e) => tracing::debug!("still no direct path to {}: {e}", target.fmt_short()),
        }
    }
    None
}

/// The first of two fallible futures to succeed (and whether it was the
/// first one), or the last error.
async fn first_ok<A, B>(a: A, b: B) -> Result<(Peer, bool)>
where
    A: std::future::Future<Output = Result<Peer>>,
    B: std::future::Future<Output = Result<Peer>>,
{
    tokio::pin!(a, b);
    let (mut a_done, mut b_done) = (false, false);
    let mut last = None;
    loop {
        tokio::select! {
            r = &mut a, if !a_done => match r {
                Ok(p) => return Ok((p, true)),
                Err(e) => { a_done = true; last = Some(e); }
            },
            r = &mut b, if !b_done => match r {
                Ok(p) => return Ok((p, false)),
                Err(e) => { b_done = true; last = Some(e); }
            },
            else => return Err(last.unwrap_or(Error::StreamEnded)),
        }
    }
}

/// What a node gives to relaying for others.
#[derive(Clone, Debug)]
pub struct RelayLimits {
    /// Relays open at once (0: this node does not relay).
    pub max_relays: usize,
    /// Bytes a second one relay forwards, both ways together (more is
    /// dropped, as a congested link would): 256 KiB/s carries lossless
    /// audio several times over.
    pub bytes_per_sec: f64,
    /// Bytes one relay forwards in all.
    pub max_bytes: u64,
    /// A relay idle this long is closed.
    pub idle: Duration,
    /// A relay is closed after this long, busy or not.
    pub lifetime: Duration,
    /// Relays open at once for askers at one IP address.
    pub per_ip: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_relays: 16,
            bytes_per_sec: 256.0 * 1024.0,
            max_bytes: 1024 * 1024 * 1024,
            idle: Duration::from_secs(60),
            lifetime: Duration::from_secs(2 * 3600),
            per_ip: 2,
        }
    }
}

/// A node's relays.
#[derive(Debug)]
pub struct Relays {
    limits: RelayLimits,
    open: Arc<AtomicUsize>,
    /// Relays open by asker IP.
    per_ip: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
    /// Relays opened in all, for tests and the status line.
    pub opened: AtomicUsize,
    /// Bytes forwarded by all relays.
    pub forwarded: Arc<AtomicUsize>,
}

/// One open relay: its port and token; forwarding runs in its own task.
#[derive(Debug)]
pub struct Relay {
    /// The UDP port.
    pub port: u16,
    /// What each side registers with.
    pub token: [u8; 32],
    /// Set once the first side (the target) has registered.
    first: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::AbortHandle,
}

impl Relay {
    /// Closes the relay now (its target never came).
    pub fn close(&self) {
        self.task.abort();
    }
}

/// A relay's claim on the limits, given back when its task ends (or is
/// aborted).
struct Claim {
    open: Arc<AtomicUsize>,
    per_ip: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
    asker: IpAddr,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut m) = self.per_ip.lock() {
            if let Some(n) = m.get_mut(&self.asker) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.asker);
                }
            }
        }
    }
}

impl Relay {
    /// Waits (at most `wait`) until the target has registered: only then is
    /// the asker told to dial, so its first packets are not dropped.
    pub async fn target_registered(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.first.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }
}

impl Relays {
    /// No relay open yet.
    pub fn new(limits: RelayLimits) -> Self {
        Self {
            limits,
            open: Arc::default(),
            per_ip: Arc::default(),
            opened: AtomicUsize::new(0),
            forwarded: Arc::default(),
        }
    }

    /// Relays open now.
    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Opens a relay on a new UDP port of `ip` for an asker at `asker`,
    /// unless at a limit (in all, or for that asker's IP); it closes at the
    /// latest when `ends` completes (the asker's connection closes).
    pub async fn open(
        &self,
        ip: IpAddr,
        asker: IpAddr,
        ends: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<Relay> {
        {
            let Ok(mut m) = self.per_ip.lock() else { return None };
            let mine = m.get(&asker).copied().unwrap_or(0);
            if mine >= self.limits.per_ip {
                return None;
            }
            if self.open.fetch_add(1, Ordering::Relaxed) >= self.limits.max_relays {
                self.open.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            *m.entry(asker).or_default() += 1;
        }
        let claim = Claim { open: self.open.clone(), per_ip: self.per_ip.clone(), asker };
        let socket = match tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot open a relay port: {e}");
                return None;
            }
        };
        let port = socket.local_addr().ok()?.port();
        let token: [u8; 32] = rand_bytes();
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.opened.fetch_add(1, Ordering::Relaxed);
        let (forwarded, limits) = (self.forwarded.clone(), self.limits.clone());
        let task = tokio::spawn(async move {
            let _claim = claim;
            tokio::select! {
                () = forward(socket, token, tx, &limits, &forwarded) => {}
                () = ends => tracing::debug!("relay closed: its asker left"),
            }
        });
        Some(Relay { port, token, first: rx, task: task.abort_handle() })
    }
}

/// A fresh relay token: it only has to be unguessable for the relay's
/// short life, and only the two ends are told it.
fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    crate::identity::fill_unique(&mut b);
    b
}

/// Forwards between the two registered addresses until idle, spent or
/// too old.
async fn forward(
    socket: tokio::net::UdpSocket,
    token: [u8; 32],
    registered: tokio::sync::watch::Sender<bool>,
    limits: &RelayLimits,
    forwarded: &AtomicUsize,
) {
    let mut register = REGISTER.to_vec();
    register.extend_from_slice(&token);
    let (mut target, mut asker): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
    let rate = Bucket::new(limits.bytes_per_sec, limits.bytes_per_sec);
    let end = tokio::time::Instant::now() + limits.lifetime;
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 65_536];
    loop {
        let until = end.min(tokio::time::Instant::now() + limits.idle);
        let Ok(Ok((n, from))) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await
        else {
            break;
        };
        let packet = &buf[..n];
        if packet == register.as_slice() {
            match (target, asker) {
                (None, _) => {
                    target = Some(from);
                    let _ = registered.send(true);
                }
                (Some(t), None) if t != from => asker = Some(from),
                _ => {}
            }
            continue;
        }
        let to = match (target, asker) {
            (Some(t), Some(a)) if from == t => a,
            (Some(t), Some(a)) if from == a => t,
            _ => continue,
        };
        if !rate.take(n as f64) {
            continue;
        }
        total += n as u64;
        if total > limits.max_bytes {
            tracing::info!("relay spent its {} bytes; closing it", limits.max_bytes);
            break;
        }
        forwarded.fetch_add(n, Ordering::Relaxed);
        let _ = socket.send_to(packet, to).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_waits() {
        let b = Bucket::new(3.0, 0.001);
        assert!(b.take(1.0) && b.take(1.0) && b.take(1.0));
        assert!(!b.take(1.0));
    }

    #[tokio::test]
    async fn a_relay_forwards_between_its_two_registered_ends_only() {
        let relays = Relays::new(RelayLimits { max_relays: 1, ..Default::default() });
        let ip: IpAddr = [127, 0, 0, 1].into();
        let mut relay = relays.open(ip, ip, std::future::pending()).await.unwrap();
        assert!(
            relays.open(ip, [127, 0, 0, 9].into(), std::future::pending()).await.is_none(),
            "over the limit"
        );
        let at = SocketAddr::new(ip, relay.port);
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut reg = REGISTER.to_vec();
        reg.extend_from_slice(&relay.token);
        b.send_to(&reg, at).await.unwrap();
        assert!(relay.target_registered(Duration::from_secs(5)).await);
        a.send_to(&reg, at).await.unwrap();
        // A stranger's packets (a wrong token, or none) go nowhere.
        stranger.send_to(b"\0chorusR-wrong-token", at).await.unwrap();
        stranger.send_to(b"hello", at).await.unwrap();
        let mut buf = [0u8; 64];
        // Registration is in order on loopback: a's is in before this.
        a.send_to(b"\x40from a", at).await.unwrap();
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"\x40from a"[..], at));
        b.send_to(b"\x40from b", at).await.unwrap();
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\x40from b");
        assert_eq!(relays.forwarded.load(Ordering::Relaxed), 14);
        relay.close();
        // Closed, its slot is free again.
        for _ in 0..100 {
            if relays.open_now() == 0 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(relays.open_now(), 0);
    }

    #[tokio::test]
    async fn one_asker_ip_holds_few_relays() {
        let relays = Relays::new(RelayLimits::default());
        let ip: IpAddr = [127, 0, 0, 1].into();
        let asker: IpAddr = [127, 0, 0, 2].into();
        let held: Vec<_> = [
            relays.open(ip, asker, std::future::pending()).await,
            relays.open(ip, asker, std::future::pending()).await,
        ]
        .into();
        assert!(held.iter().all(Option::is_some));
        assert!(
            relays.open(ip, asker, std::future::pending()).await.is_none(),
            "a third for the same IP"
        );
        assert!(
            relays.open(ip, [127, 0, 0, 3].into(), std::future::pending()).await.is_some(),
            "another IP's"
        );
    }

    #[tokio::test]
    async fn a_relay_closes_when_its_asker_leaves() {
        let relays = Relays::new(RelayLimits { per_ip: 1, ..Default::default() });
        let ip: IpAddr = [127, 0, 0, 1].into();
        let (left, ends) = tokio::sync::oneshot::channel::<()>();
        let held = relays.open(ip, ip, async move { drop(ends.await) }).await;
        assert!(held.is_some());
        assert!(relays.open(ip, ip, std::future::pending()).await.is_none(), "one per IP");
        left.send(()).unwrap();
        // Its idle limit is a minute away; the asker's leaving frees the
        // slot now.
        for _ in 0..500 {
            if relays.open_now() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(relays.open_now(), 0);
        assert!(relays.open(ip, ip, std::future::pending()).await.is_some(), "the slot is free");
    }
}
