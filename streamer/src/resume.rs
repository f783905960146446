//! Starts that ride in the TLS handshake: the first note one round trip
//! after the click, to a peer this node has talked to before, from a fresh
//! process.
//!
//! QUIC 0-RTT would carry a request in early data, but rustls 0.23 keeps a
//! session ticket opaque (it cannot be stored across processes: rustls
//! issue 2287). So Chorus does the same at its own layer:
//!
//! - A node gives each peer that greets it a [`Ticket`] in its hello
//!   reply: an id (its expiry and random bytes) and a key the node derives
//!   from the id with a secret of its own ([`Opener`]), so it keeps
//!   nothing per ticket and tickets outlive restarts.
//! - Next time, from any process, the peer seals its start request with
//!   that key (ChaCha20-Poly1305, the ticket id as associated data) and
//!   puts it in the new connection's TLS server name ([`seal`]): the
//!   request reaches the node in the ClientHello, on the first packet.
//! - The node opens it and sends the start response on a stream it opens
//!   at once, as 0.5-RTT data behind its handshake flight; the peer reads
//!   it when its handshake completes. A request the node cannot open gets
//!   an error on that stream, and the peer asks the usual way (one round
//!   trip more, never an error).
//! - Until a client's address is validated QUIC lets a server send only
//!   three times what it received (~3.6 KB), not a start response. The
//!   node also hands out QUIC address-validation tokens (NEW_TOKEN; keyed
//!   by a secret derived from its identity, [`token_key`]); the peer keeps
//!   them with the ticket ([`ResumeStore`], a file in the data dir) and
//!   presents one in its first packet, so the whole response goes out with
//!   the handshake.
//!
//! Safety: a sealed request proves its sender holds a ticket the node gave
//! a peer that completed a handshake with it (in a private swarm, a
//! member); without the key nothing opens. It is a start request, which is
//! idempotent: a replayed ClientHello makes the node send the response to
//! whoever did that handshake, which only the original sender can decrypt,
//! and QUIC's address validation bounds what goes to an unproven address.
//! The server name travels in the clear: it shows a ticket id and sealed
//! bytes, not the track.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus_protocol::message::{PathReport, StartRequest, Ticket};
use chorus_protocol::{Message, PeerId, frame};
use ring::aead;

use crate::identity::Identity;
use crate::scheduler::CLEAN_AFTER_PACKETS;

/// How long a ticket is good for.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The server-name suffix that marks a sealed start request.
const SUFFIX: &str = ".start.chorus";
/// The sealed format's version, its first byte.
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest DNS name (RFC 1035), and longest label.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;
/// Peers whose tickets a store keeps; QUIC tokens kept per peer.
const MAX_PEERS: usize = 256;
const TOKENS_PER_PEER: usize = 2;
/// Largest token kept (quinn's are ~60 bytes).
const MAX_TOKEN: usize = 256;

/// The node's side: issues tickets and opens the requests sealed with them.
pub struct Opener {
    secret: [u8; 32],
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener(..)")
    }
}

/// Why a sealed request was not opened (sent back to the asker, which
/// then asks the usual way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not in the sealed format (or another version of it).
    #[error("not a sealed start request")]
    Format,
    /// The ticket's lifetime is over (or its expiry is implausibly far).
    #[error("the ticket has expired")]
    Expired,
    /// The key does not open it: a ticket from another node (or an
    /// earlier identity of this one), or tampered bytes.
    #[error("the ticket is not one of this node's")]
    Unknown,
    /// It opened, but is not a start request.
    #[error("the sealed request is not a start request")]
    NotStart,
}

impl Opener {
    /// The opener of `identity`: its secret is derived from the node's key,
    /// so tickets stay good across restarts.
    pub fn new(identity: &Identity) -> Self {
        Self { secret: identity.derive_secret("chorus 2026-11 start tickets") }
    }

    /// A new ticket, good for [`TICKET_LIFETIME`] from `now`.
    pub fn issue(&self, now: SystemTime) -> Ticket {
        let expiry = secs(now).saturating_add(TICKET_LIFETIME.as_secs());
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&u32::try_from(expiry).unwrap_or(u32::MAX).to_be_bytes());
        crate::identity::fill_unique(&mut id[4..]);
        Ticket { id, key: self.key(&id) }
    }

    fn key(&self, id: &[u8; 16]) -> [u8; 32] {
        *blake3::keyed_hash(&self.secret, id).as_bytes()
    }

    /// Opens the start request sealed in a TLS server name.
    pub fn open(&self, name: &str, now: SystemTime) -> Result<StartRequest, Refusal> {
        let bytes = unlabel(name).ok_or(Refusal::Format)?;
        if bytes.len() < 1 + 16 + NONCE_LEN + TAG_LEN || bytes[0] != FORMAT {
            return Err(Refusal::Format);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[1..17]);
        let expiry = expiry_of(&id);
        let now = secs(now);
        if expiry < now || expiry > now.saturating_add(TICKET_LIFETIME.as_secs() + 3600) {
            return Err(Refusal::Expired);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[17..17 + NONCE_LEN]);
        let mut sealed = bytes[17 + NONCE_LEN..].to_vec();
        let key = aead_key(&self.key(&id));
        let plain = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&id),
                &mut sealed,
            )
            .map_err(|_| Refusal::Unknown)?;
        match frame::decode(&Bytes::copy_from_slice(plain)).map(|f| f.message) {
            Ok(Message::StartRequest(r)) => Ok(r),
            _ => Err(Refusal::NotStart),
        }
    }
}

/// True if `name` is a sealed start request's server name.
pub fn is_sealed(name: &str) -> bool {
    name.len() > SUFFIX.len() && name.ends_with(SUFFIX)
}

/// `request` sealed with `ticket` as a TLS server name, or `None` if it
/// does not fit one (a long query: the start then goes the usual way).
pub fn seal(ticket: &Ticket, request: &StartRequest) -> Option<String> {
    let plain = frame::encode(&Message::StartRequest(request.clone())).ok()?;
    let mut nonce = [0u8; NONCE_LEN];
    crate::identity::fill_unique(&mut nonce);
    let mut sealed = plain.to_vec();
    aead_key(&ticket.key)
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&ticket.id),
            &mut sealed,
        )
        .ok()?;
    let mut bytes = Vec::with_capacity(1 + 16 + NONCE_LEN + sealed.len());
    bytes.push(FORMAT);
    bytes.extend_from_slice(&ticket.id);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    let name = label(&bytes);
    (name.len() <= MAX_NAME).then_some(name)
}

fn aead_key(key: &[u8; 32]) -> aead::LessSafeKey {
    // A 32-byte key is the length ChaCha20-Poly1305 takes: this cannot fail.
    let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key)
        .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 takes 32-byte keys"));
    aead::LessSafeKey::new(unbound)
}

/// When a ticket expires (Unix seconds): its id's first four bytes.
fn expiry_of(id: &[u8; 16]) -> u64 {
    u64::from(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `bytes` in lowercase base32 (RFC 4648, no padding), cut into DNS
/// labels, with [`SUFFIX`].
fn label(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 8 / 5 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        text.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    let mut name = String::with_capacity(text.len() + text.len() / MAX_LABEL + SUFFIX.len());
    for (i, part) in text.as_bytes().chunks(MAX_LABEL).enumerate() {
        if i > 0 {
            name.push('.');
        }
        name.push_str(std::str::from_utf8(part).unwrap_or_default());
    }
    name.push_str(SUFFIX);
    name
}

fn unlabel(name: &str) -> Option<Vec<u8>> {
    let body = name.strip_suffix(SUFFIX)?;
    if body.len() > MAX_NAME {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes().filter(|c| *c != b'.') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_lowercase())? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The QUIC address-validation token key of `identity`: derived from the
/// node's key, so tokens handed out survive restarts.
pub fn token_key(identity: &Identity) -> std::sync::Arc<dyn quinn::crypto::HandshakeTokenKey> {
    let secret = identity.derive_secret("chorus 2026-11 quic address tokens");
    std::sync::Arc::new(ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, &secret))
}

#[derive(Clone)]
struct Entry {
    peer: PeerId,
    ticket: Option<Ticket>,
    tokens: Vec<Bytes>,
    /// Server names of this process's recent dials to the peer: QUIC
    /// stores and takes tokens by server name.
    names: Vec<String>,
    /// What the peer reported of the path from it on earlier connections
    /// (kept in the file), and on the live one: (its `stable_id`, the
    /// latest report). See [`ResumeStore::note_path`].
    history: PathReport,
    live: Option<(usize, PathReport)>,
}

impl Entry {
    fn path(&self) -> PathReport {
        let live = self.live.map(|(_, r)| r).unwrap_or_default();
        PathReport {
            sent: self.history.sent.saturating_add(live.sent),
            lost: self.history.lost.saturating_add(live.lost),
        }
    }
}

/// Packets of path history kept per peer: older counts are halved past
/// this, so the record follows a path that changes (a new router, a move
/// from Wi-Fi to 4G) within a few sessions.
const PATH_HISTORY: u64 = 20_000;

fn decayed(mut r: PathReport) -> PathReport {
    while r.sent > PATH_HISTORY {
        r.sent /= 2;
        r.lost /= 2;
    }
    r
}

#[derive(Default)]
struct StoreState {
    path: Option<PathBuf>,
    /// Least recently used first.
    entries: Vec<Entry>,
}

impl StoreState {
    /// `peer`'s entry, made (dropping the least recently used) if new, and
    /// moved to the back.
    fn entry(&mut self, peer: PeerId) -> &mut Entry {
        let e = match self.entries.iter().position(|e| e.peer == peer) {
            Some(i) => self.entries.remove(i),
            None => Entry {
                peer,
                ticket: None,
                tokens: Vec::new(),
                names: Vec::new(),
                history: PathReport::default(),
                live: None,
            },
        };
        if self.entries.len() >= MAX_PEERS {
            self.entries.remove(0);
        }
        self.entries.push(e);
        let last = self.entries.len() - 1;
        &mut self.entries[last]
    }

    fn by_name(&mut self, name: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.names.iter().any(|n| n == name))
    }
}

/// A listener's tickets and QUIC tokens, by peer: in memory, and in a file
/// of the data dir once [`ResumeStore::load`]ed, so the next process starts
/// in one round trip too. Bounded: `MAX_PEERS` peers, two tokens and
/// four dial names each.
#[derive(Default)]
pub struct ResumeStore {
    state: Mutex<StoreState>,
}

impl std::fmt::Debug for ResumeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeStore").field("peers", &self.lock().entries.len()).finish()
    }
}

impl ResumeStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        // Every update leaves the state whole: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the store from `path` (a missing or damaged file is an empty
    /// store: tickets are only a way to start sooner) and saves to it from
    /// then on ([`ResumeStore::save`]).
    pub fn load(&self, path: &Path) {
        let entries = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::debug!("{}: {e}; starting without tickets", path.display());
                Vec::new()
            }
        };
        let mut s = self.lock();
        s.path = Some(path.to_owned());
        for e in entries {
            if !s.entries.iter().any(|x| x.peer == e.peer) {
                s.entries.insert(0, e);
            }
        }
        let over = s.entries.len().saturating_sub(MAX_PEERS);
        s.entries.drain(..over);
    }

    /// Writes the store to its file (if it has one), atomically and
    /// readable only by the user: it holds keys.
    pub fn save(&self) -> std::io::Result<()> {
        let (path, text) = {
            let s = self.lock();
            let Some(path) = s.path.clone() else { return Ok(()) };
            (path, render(&s.entries))
        };
        let tmp = path.with_extension("tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        let written = opts.open(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        let result = written.and_then(|()| std::fs::rename(&tmp, &path));
        if result.is_err() {
            // A full disk: leave the old file, not half a new one.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Keeps `ticket` from `peer` (replacing an older one).
    pub fn remember(&self, peer: PeerId, ticket: Ticket) {
        self.lock().entry(peer).ticket = Some(ticket);
    }

    /// `peer`'s ticket, if one is kept and still good.
    pub fn ticket(&self, peer: &PeerId, now: SystemTime) -> Option<Ticket> {
        let s = self.lock();
        let t = s.entries.iter().find(|e| e.peer == *peer)?.ticket.as_ref()?;
        let expiry = expiry_of(&t.id);
        // A minute's margin for the other's clock.
        (expiry > secs(now) + 60).then(|| t.clone())
    }

    /// Notes that `peer` is being dialled with server name `name`, so QUIC
    /// tokens given on that connection are kept for it, and tokens kept
    /// for it are used.
    pub fn dialling(&self, peer: PeerId, name: &str) {
        let mut s = self.lock();
        let e = s.entry(peer);
        if e.names.len() >= 4 {
            e.names.remove(0);
        }
        e.names.push(name.to_owned());
    }

    /// Notes what `peer` reported of the path from it on the connection
    /// `conn` (its `stable_id`): its packets sent and lost so far. Reports
    /// grow over a connection; a new connection's first report folds the
    /// last one's into the history.
    pub fn note_path(&self, peer: PeerId, conn: usize, report: PathReport) {
        let mut s = self.lock();
        let e = s.entry(peer);
        match e.live {
            Some((c, r)) if c == conn => {
                if report.sent >= r.sent {
                    e.live = Some((c, report));
                }
            }
            old => {
                if let Some((_, r)) = old {
                    e.history = decayed(PathReport {
                        sent: e.history.sent.saturating_add(r.sent),
                        lost: e.history.lost.saturating_add(r.lost),
                    });
                }
                e.live = Some((conn, report));
            }
        }
    }

    /// What the peers reported of the paths from them to this node: over
    /// the connections this store remembers
    /// (earlier processes' too), packets sent and lost; the worst of all
    /// peers' counts together and of each peer's own that has reported
    /// [`CLEAN_AFTER_PACKETS`] or more. Most loss is on the listener's own
    /// link (Wi-Fi, a cell), which every path shares: on a link losing 1%,
    /// one of five peers shows none in its first 200 packets one time in
    /// eight, and the whole tells the truth sooner; the peer a known start
    /// is sealed to (the seed) is often one that sent little before, being
    /// a fallback. And the counts are each peer's word: taking the worst,
    /// a peer that claims a clean path cannot hide the losses others
    /// report (claiming losses only makes starts cautious).
    pub fn path(&self) -> Option<PathReport> {
        let s = self.lock();
        let all = s.entries.iter().map(Entry::path).fold(PathReport::default(), |a, p| {
            PathReport { sent: a.sent.saturating_add(p.sent), lost: a.lost.saturating_add(p.lost) }
        });
        // Loss rates compared without division.
        let worse = |a: PathReport, b: PathReport| {
            u128::from(a.lost) * u128::from(b.sent) > u128::from(b.lost) * u128::from(a.sent)
        };
        let p = s
            .entries
            .iter()
            .map(Entry::path)
            .filter(|p| p.sent >= CLEAN_AFTER_PACKETS)
            .fold(all, |w, p| if worse(p, w) { p } else { w });
        (p.sent > 0).then_some(p)
    }

    /// QUIC tokens kept for `peer` (for tests and diagnostics).
    pub fn tokens(&self, peer: &PeerId) -> usize {
        self.lock().entries.iter().find(|e| e.peer == *peer).map_or(0, |e| e.tokens.len())
    }
}

/// A server name for a dial that carries no sealed request: unique, so the
/// QUIC tokens it brings can be told apart ([`ResumeStore::dialling`]).
pub fn dial_name() -> String {
    let mut r = [0u8; 5];
    crate::identity::fill_unique(&mut r);
    let tag = label(&r);
    format!("{}.dial.chorus", tag.trim_end_matches(SUFFIX))
}

impl quinn::TokenStore for ResumeStore {
    fn insert(&self, server_name: &str, token: Bytes) {
        if token.len() > MAX_TOKEN {
            return;
        }
        if let Some(e) = self.lock().by_name(server_name) {
            if e.tokens.len() >= TOKENS_PER_PEER {
                e.tokens.remove(0);
            }
            e.tokens.push(token);
        }
    }

    fn take(&self, server_name: &str) -> Option<Bytes> {
        // A token is used once (reuse would link the connections).
        self.lock().by_name(server_name)?.tokens.pop()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// One line per peer, least recently used first: `peer ticket-id key
/// token,token sent/lost`, hex (the counts decimal), `-` for none.
fn render(entries: &[Entry]) -> String {
    let mut out =
        String::from("# chorus start tickets: peer ticket-id key tokens packets-sent/lost\n");
    // A peer dialled that gave nothing yet is not worth a line.
    for e in entries.iter().filter(|e| e.ticket.is_some() || !e.tokens.is_empty()) {
        let tokens: Vec<String> = e.tokens.iter().map(|t| hex(t)).collect();
        let (id, key) =
            e.ticket.as_ref().map_or(("-".into(), "-".into()), |t| (hex(&t.id), hex(&t.key)));
        let tokens = if tokens.is_empty() { "-".to_owned() } else { tokens.join(",") };
        let path = decayed(e.path());
        out.push_str(&format!(
            "{} {id} {key} {tokens} {}/{}\n",
            hex(e.peer.as_bytes()),
            path.sent,
            path.lost
        ));
    }
    out
}

/// `sent/lost`, lost at most sent.
fn parse_path(field: &str) -> Option<PathReport> {
    let (sent, lost) = field.split_once('/')?;
    let r = PathReport { sent: sent.parse().ok()?, lost: lost.parse().ok()? };
    (r.lost <= r.sent).then_some(r)
}

fn parse(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Files written before the path history have four fields.
        let (peer, id, key, tokens, path) = match f.as_slice() {
            [peer, id, key, tokens] => (peer, id, key, tokens, None),
            [peer, id, key, tokens, path] => (peer, id, key, tokens, Some(*path)),
            _ => continue,
        };
        let Some(peer) = unhex(peer).and_then(|p| <[u8; 32]>::try_from(p).ok()) else { continue };
        let ticket = match (unhex(id), unhex(key)) {
            (Some(id), Some(key)) => match (<[u8; 16]>::try_from(id), <[u8; 32]>::try_from(key)) {
                (Ok(id), Ok(key)) => Some(Ticket { id, key }),
                _ => None,
            },
            _ => None,
        };
        let tokens = tokens
            .split(',')
            .filter(|t| *t != "-")
            .filter_map(unhex)
            .filter(|t| t.len() <= MAX_TOKEN)
            .take(TOKENS_PER_PEER)
            .map(Bytes::from)
            .collect();
        let history = path.and_then(parse_path).map(decayed).unwrap_or_default();
        entries.push(Entry {
            peer: PeerId::from_bytes(peer),
            ticket,
            tokens,
            names: Vec::new(),
            history,
            live: None,
        });
        if entries.len() >= MAX_PEERS {
            break;
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::TrackId;
    use chorus_protocol::message::Want;
    use quinn::TokenStore;

    fn request() -> StartRequest {
        StartRequest { want: Want::Track(TrackId::from_bytes([9; 32])), at_ms: 1234, budget: 49152 }
    }

    #[test]
    fn a_sealed_request_opens_with_the_issuer_only_and_fits_a_server_name() {
        let node = Identity::ephemeral().unwrap();
        let opener = Opener::new(&node);
        let now = SystemTime::now();
        let ticket = opener.issue(now);
        let name = seal(&ticket, &request()).unwrap();
        assert!(name.len() <= MAX_NAME && is_sealed(&name), "{name}");
        assert!(name.split('.').all(|l| !l.is_empty() && l.len() <= MAX_LABEL), "{name}");
        rustls::pki_types::ServerName::try_from(name.as_str()).expect("a valid DNS name");
        assert_eq!(opener.open(&name, now), Ok(request()));
        // The same identity (a restarted node) opens it; another does not.
        let again = Opener::new(&node);
        assert_eq!(again.open(&name, now), Ok(request()));
        let other = Opener::new(&Identity::ephemeral().unwrap());
        assert_eq!(other.open(&name, now), Err(Refusal::Unknown));
        // Expired, tampered, foreign.
        let later = now + TICKET_LIFETIME + Duration::from_secs(10);
        assert_eq!(opener.open(&name, later), Err(Refusal::Expired));
        let mut bytes = unlabel(&name).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(opener.open(&label(&bytes), now), Err(Refusal::Unknown));
        assert_eq!(opener.open("chorus", now), Err(Refusal::Format));
        assert_eq!(opener.open("zz.start.chorus", now), Err(Refusal::Format));
        // A query too long for a server name is not sealed.
        let long = StartRequest { want: Want::Query("x".repeat(200)), ..request() };
        assert_eq!(seal(&ticket, &long), None);
    }

    #[test]
    fn the_store_keeps_tickets_and_tokens_across_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets");
        let node = Identity::ephemeral().unwrap();
        let now = SystemTime::now();
        let ticket = Opener::new(&node).issue(now);
        let name = seal(&ticket, &request()).unwrap();
        let store = ResumeStore::default();
        store.load(&path);
        store.remember(node.peer_id(), ticket.clone());
        store.insert(&name, Bytes::from_static(b"lost: a name never dialled"));
        assert_eq!(store.tokens(&node.peer_id()), 0);
        // A peer dialled that gave nothing is not written.
        store.dialling(Identity::ephemeral().unwrap().peer_id(), "x.dial.chorus");
        store.dialling(node.peer_id(), &name);
        store.insert(&name, Bytes::from_static(b"token-1"));
        store.insert(&name, Bytes::from_static(b"token-2"));
        store.insert(&name, Bytes::from_static(b"token-3"));
        assert_eq!(store.tokens(&node.peer_id()), TOKENS_PER_PEER);
        store.save().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2, "header, one peer");
        let again = ResumeStore::default();
        again.load(&path);
        assert_eq!(again.ticket(&node.peer_id(), now), Some(ticket));
        assert_eq!(again.take(&name), None, "names are this process's dials");
        again.dialling(node.peer_id(), &name);
        assert_eq!(again.take(&name), Some(Bytes::from_static(b"token-3")));
        assert_eq!(again.take(&name), Some(Bytes::from_static(b"token-2")));
        assert_eq!(again.take(&name), None, "each token is used once");
        assert_eq!(again.ticket(&node.peer_id(), now + TICKET_LIFETIME), None);
        // A damaged file is an empty store.
        std::fs::write(&path, "garbage\nff 00 11 22\n").unwrap();
        let damaged = ResumeStore::default();
        damaged.load(&path);
        assert_eq!(damaged.ticket(&node.peer_id(), now), None);
    }

    fn report(sent: u64, lost: u64) -> PathReport {
        PathReport { sent, lost }
    }

    #[test]
    fn path_reports_from_many_peers_keep_the_store_bounded() {
        // Every peer that sends a chunk reply leaves its counts: strangers
        // by the hundred make the store drop its least recently used.
        let store = ResumeStore::default();
        for i in 0..(MAX_PEERS + 50) {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            store.note_path(PeerId::from_bytes(id), i, report(1_000, 0));
        }
        assert_eq!(store.lock().entries.len(), MAX_PEERS);
        assert_eq!(store.path(), Some(report(1_000 * MAX_PEERS as u64, 0)));
    }

    #[test]
    fn path_reports_add_up_over_connections_and_outlive_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets");
        let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
        let store = ResumeStore::default();
        store.load(&path);
        assert_eq!(store.path(), None, "nothing reported yet");
        // Reports grow over a connection: the latest stands.
        store.note_path(a, 7, report(100, 1));
        store.note_path(a, 7, report(300, 2));
        store.note_path(a, 7, report(250, 2));
        assert_eq!(store.path(), Some(report(300, 2)));
        // A new connection's counts start again: the old ones are kept.
        store.note_path(a, 8, report(50, 0));
        assert_eq!(store.path(), Some(report(350, 2)));
        // A peer is judged by the worst of all peers' counts together and
        // of each one's with enough packets: one that claims a clean path
        // does not hide the others' losses.
        store.note_path(b, 9, report(40, 0));
        assert_eq!(store.path(), Some(report(350, 2)));
        store.note_path(b, 9, report(u64::MAX, 0));
        assert_eq!(store.path(), Some(report(350, 2)));
        let c = PeerId::from_bytes([3; 32]);
        store.note_path(c, 10, report(150, 1));
        assert_eq!(store.path(), Some(report(350, 2)), "150 packets are too few alone");
        // Kept with the ticket, and read back by the next process.
        store.remember(a, Ticket { id: [3; 16], key: [4; 32] });
        store.remember(b, Ticket { id: [5; 16], key: [6; 32] });
        store.save().unwrap();
        let again = ResumeStore::default();
        again.load(&path);
        assert_eq!(again.path(), Some(report(350, 2)));
        again.note_path(a, 7, report(10, 0));
        assert_eq!(again.path(), Some(report(360, 2)), "a new process's connection adds");
        // A file from before the counts, or with bad ones, loads without them.
        let line = |end: &str| format!("{} - - - {end}\n", hex(a.as_bytes()));
        for text in [line("").trim_end().to_owned() + "\n", line("5/9"), line("x/1")] {
            std::fs::write(&path, text).unwrap();
            let old = ResumeStore::default();
            old.load(&path);
            assert_eq!(old.path(), None);
        }
        // Old counts fade: a path that changed is judged by its new
        // behaviour within a few sessions.
        assert_eq!(decayed(report(80_000, 800)), report(20_000, 200));
    }
}
