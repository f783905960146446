//! Finding peers: the peer table, peer exchange, and "who has track X"
//! queries forwarded at most two hops (Spotify's neighbourhood search).
//!
//! A node learns peers from the hellos of those that connect to it (if they
//! serve), from peer exchanges, and from the addresses it is started with.
//! A [`WhoHas`](chorus_protocol::message::WhoHas) is answered with this node (if it holds the track, in its
//! library or cache) plus, while `hops_left > 0`, the answers of up to
//! [`FORWARD_FANOUT`] known peers asked with one hop less. A query id seen
//! before gets an empty answer, so loops end.
//!
//! An address with an unspecified IP (a node listening on 0.0.0.0) is
//! completed with the IP the node was seen from, at each hop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chorus_protocol::PeerId;
use chorus_protocol::limits::{MAX_ADDRS, MAX_PEERS};
use chorus_protocol::message::PeerInfo;

/// Most peers a node remembers.
pub const MAX_KNOWN: usize = 1024;
/// Peers a who-has query is forwarded to at each hop: 8 × 8 reaches 64
/// nodes in two hops, Spotify's neighbourhood size order.
pub const FORWARD_FANOUT: usize = 8;
/// How long a forwarded query waits for each answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Query ids remembered to break loops.
const SEEN_QUERIES: usize = 4096;

/// Completes addresses with an unspecified IP with `seen_from`, and drops
/// unusable ones (port 0).
pub fn complete_addrs(addrs: &[SocketAddr], seen_from: IpAddr) -> Vec<SocketAddr> {
    addrs
        .iter()
        .filter(|a| a.port() != 0)
        .map(|a| if a.ip().is_unspecified() { SocketAddr::new(seen_from, a.port()) } else { *a })
        .take(MAX_ADDRS)
        .collect()
}

/// The peers a node knows, bounded, oldest forgotten first. An entry is
/// *verified* when a connection proved the id (the peer connected to us, or
/// we dialled it); addresses heard from others stay unverified: they never
/// replace a verified entry's, and are neither passed on nor dialled in bulk.
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: HashMap<PeerId, (Vec<SocketAddr>, bool)>,
    order: VecDeque<PeerId>,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
}

impl PeerTable {
    /// Records (or refreshes) a peer a connection proved: verified.
    pub fn insert(&mut self, id: PeerId, addrs: Vec<SocketAddr>) {
        self.put(id, addrs, true);
    }

    fn put(&mut self, id: PeerId, addrs: Vec<SocketAddr>, verified: bool) {
        if addrs.is_empty() {
            return;
        }
        if !verified && self.peers.get(&id).is_some_and(|(_, v)| *v) {
            // A stranger's word does not move a peer we have seen.
            return;
        }
        if self.peers.insert(id, (addrs, verified)).is_none() {
            self.order.push_back(id);
            while self.order.len() > MAX_KNOWN {
                if let Some(old) = self.order.pop_front() {
                    self.peers.remove(&old);
                }
            }
        }
    }

    /// Records every peer in `infos` except `me`, unverified (heard from
    /// another peer).
    pub fn merge(&mut self, infos: &[PeerInfo], me: PeerId) {
        for p in infos.iter().filter(|p| p.id != me) {
            self.put(p.id, p.addrs.clone(), false);
        }
    }

    /// Up to `n` verified peers other than `except`, newest first: what a
    /// node passes on.
    pub fn sample(&self, n: usize, except: &[PeerId]) -> Vec<PeerInfo> {
        self.order
            .iter()
            .rev()
            .filter(|id| !except.contains(id))
            .filter_map(|id| match self.peers.get(id) {
                Some((addrs, true)) => Some(PeerInfo { id: *id, addrs: addrs.clone() }),
                _ => None,
            })
            .take(n.min(MAX_PEERS))
            .collect()
    }

    /// True if a connection proved this peer's id.
    pub fn is_verified(&self, id: &PeerId) -> bool {
        self.peers.get(id).is_some_and(|(_, v)| *v)
    }

    /// Number of peers known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True if none are known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// True the first time a query id is seen.
    pub fn first_sight(&mut self, query_id: u64) -> bool {
        if !self.seen.insert(query_id) {
            return false;
        }
        self.seen_order.push_back(query_id);
        while self.seen_order.len() > SEEN_QUERIES {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// A query id nobody else will pick: hashed from the time and a per-process
/// random state.
pub fn new_query_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Merges peer lists, one entry per id.
pub fn dedup(mut peers: Vec<PeerInfo>) -> Vec<PeerInfo> {
    let mut seen = HashSet::new();
    peers.retain(|p| seen.insert(p.id));
    peers.truncate(MAX_PEERS);
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> PeerId {
        PeerId::from_bytes([b; 32])
    }

    #[test]
    fn table_is_bounded_and_samples_newest_first() {
        let mut t = PeerTable::default();
        for i in 0..(MAX_KNOWN + 10) {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            t.insert(PeerId::from_bytes(b), vec![([127, 0, 0, 1], 1000).into()]);
        }
        assert_eq!(t.len(), MAX_KNOWN);
        t.insert(id(7), vec![([127, 0, 0, 1], 7).into()]);
        assert_eq!(t.sample(1, &[])[0].id, id(7));
        assert!(t.sample(1, &[id(7)])[0].id != id(7));
        t.insert(id(8), vec![]);
        assert!(t.sample(MAX_KNOWN, &[]).iter().all(|p| p.id != id(8)), "no address, not kept");
    }

    #[test]
    fn heard_addresses_are_not_passed_on_nor_replace_verified_ones() {
        let mut t = PeerTable::default();
        let real: SocketAddr = ([127, 0, 0, 1], 1).into();
        let fake: SocketAddr = ([127, 0, 0, 9], 9).into();
        t.insert(id(1), vec![real]);
        t.merge(
            &[PeerInfo { id: id(1), addrs: vec![fake] }, PeerInfo { id: id(2), addrs: vec![fake] }],
            id(0),
        );
        assert_eq!(t.sample(10, &[]), vec![PeerInfo { id: id(1), addrs: vec![real] }]);
        assert!(t.is_verified(&id(1)) && !t.is_verified(&id(2)));
        assert_eq!(t.len(), 2, "heard of, remembered, not passed on");
        t.insert(id(2), vec![real]);
        assert!(t.is_verified(&id(2)), "a connection proves it");
    }

    #[test]
    fn unspecified_addresses_are_completed() {
        let seen: IpAddr = [10, 0, 0, 5].into();
        let got = complete_addrs(
            &[([0, 0, 0, 0], 47800).into(), ([127, 0, 0, 1], 9).into(), ([0, 0, 0, 0], 0).into()],
            seen,
        );
        assert_eq!(got, vec![SocketAddr::new(seen, 47800), ([127, 0, 0, 1], 9).into()]);
    }

    #[test]
    fn a_query_is_seen_once() {
        let mut t = PeerTable::default();
        assert!(t.first_sight(42));
        assert!(!t.first_sight(42));
    }
}
