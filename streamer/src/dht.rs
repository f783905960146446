//! The BitTorrent Mainline DHT (through `mainline`) as Chorus's
//! internet-scale directory: a node announces its QUIC port under a key
//! for every track it serves and under a key for every word of each
//! track's title, artist and album (a keyword index in the style of
//! eMule's Kad); a listener that knows no peer looks up the words of its
//! query (or a track id) and asks the holders it finds.
//!
//! Keys are the first 20 bytes of BLAKE3 over a domain tag and the track id
//! or the normalised word, so Chorus keys never collide with torrents'.
//! What the DHT returns is a stranger's word: addresses only, dialled at
//! most [`MAX_DHT_DIALS`] per lookup, without a peer id (the certificate
//! then names the peer, and everything it sends is verified as usual).
//!
//! The public DHT is opt-in: with no bootstrap list given, `mainline`'s
//! default (public) bootstrap nodes are used, so callers only start a
//! [`Dht`] when the user asked for one.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chorus_protocol::{Tags, TrackId};
use futures_lite::StreamExt;
use mainline::Id;

/// Addresses one lookup hands back to be dialled.
pub const MAX_DHT_DIALS: usize = 8;
/// How long a lookup may take before its answers so far are used.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a lookup goes on collecting after its first answer.
pub const FIRST_ANSWER_GRACE: Duration = Duration::from_millis(50);
/// Words of a query looked up (the longest first: the rarest, usually).
pub const MAX_QUERY_WORDS: usize = 3;
/// Keys one node announces at most (tracks and words together).
pub const MAX_ANNOUNCED_KEYS: usize = 4096;
/// How often announcements are renewed: DHT nodes forget a peer after
/// about 30 minutes.
pub const REANNOUNCE: Duration = Duration::from_secs(25 * 60);
/// Routing-table nodes kept for the next run.
pub const MAX_REMEMBERED: usize = 64;
/// Remembered nodes enough to join without the public bootstrap nodes.
pub const MIN_REMEMBERED: usize = 8;
/// Announcements in flight at once.
const ANNOUNCE_CONCURRENCY: usize = 16;

/// Errors of the DHT.
#[derive(Debug, thiserror::Error)]
#[error("DHT: {0}")]
pub struct DhtError(String);

/// A running DHT node.
#[derive(Clone, Debug)]
pub struct Dht {
    dht: mainline::async_dht::AsyncDht,
    /// A private swarm's key for its DHT keys (outsiders can neither find
    /// nor recognise them).
    salt: Option<[u8; 32]>,
}

impl Dht {
    /// Joins the DHT through `bootstrap` (`HOST:PORT` each); with `None`,
    /// through the public bootstrap nodes. When every bootstrap address is
    /// on loopback, the node binds 127.0.0.1 too (a local testnet: nothing
    /// leaves this machine).
    pub fn start(
        bootstrap: Option<&[String]>,
        swarm: Option<&crate::identity::SwarmKey>,
    ) -> Result<Self, DhtError> {
        Self::start_at(bootstrap, &[], swarm, None)
    }

    /// [`Dht::start`], also through `remembered` nodes (the routing table a
    /// previous run left: see [`Dht::routing_nodes`]) and sending from
    /// `bind` (a node announces the IP its queries come from: a node
    /// serving on one loopback address among several announces from that
    /// one).
    ///
    /// With [`MIN_REMEMBERED`] remembered nodes or more, the public
    /// bootstrap nodes are not asked: a restarted node is back in the DHT
    /// through the nodes it knew. Joined through a local testnet, only
    /// remembered loopback nodes are used.
    pub fn start_at(
        bootstrap: Option<&[String]>,
        remembered: &[SocketAddr],
        swarm: Option<&crate::identity::SwarmKey>,
        bind: Option<Ipv4Addr>,
    ) -> Result<Self, DhtError> {
        let is_local = |a: &String| {
            a.parse::<SocketAddr>().is_ok_and(|s| s.ip().is_loopback())
                || a.starts_with("localhost:")
        };
        let given_local = bootstrap.is_some_and(|l| !l.is_empty() && l.iter().all(is_local));
        let remembered = remembered
            .iter()
            .filter(|a| a.is_ipv4() && (!given_local || a.ip().is_loopback()))
            .take(MAX_REMEMBERED)
            .map(|a| a.to_string());
        let mut list: Vec<String> = bootstrap.unwrap_or_default().to_vec();
        list.extend(remembered);
        if bootstrap.is_none() && list.len() < MIN_REMEMBERED {
            list.extend(mainline::DEFAULT_BOOTSTRAP_NODES.iter().map(|s| (*s).to_owned()));
        }
        let mut builder = mainline::Dht::builder();
        builder.bootstrap(&list);
        if !list.is_empty() && list.iter().all(is_local) {
            builder.bind_address(Ipv4Addr::LOCALHOST);
        }
        if let Some(ip) = bind {
            builder.bind_address(ip);
        }
        let dht = builder.build().map_err(|e| DhtError(e.to_string()))?;
        let salt = swarm.map(|k| k.derive(b"chorus/dht/v1"));
        Ok(Self { dht: dht.as_async(), salt })
    }

    /// The nodes of the routing table that answered lately (at most
    /// [`MAX_REMEMBERED`]), for the next run to join through.
    pub async fn routing_nodes(&self) -> Vec<SocketAddr> {
        let mut nodes: Vec<SocketAddr> =
            self.dht.to_bootstrap().await.iter().filter_map(|a| a.parse().ok()).collect();
        nodes.truncate(MAX_REMEMBERED);
        nodes
    }

    /// The UDP address the node sends from.
    pub async fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.dht.info().await.local_addr())
    }

    /// Waits until the node has found its place in the DHT.
    pub async fn bootstrapped(&self) -> bool {
        self.dht.bootstrapped().await
    }

    /// Announces `port` under the key of each track (`listed` ones in the
    /// library, with the text a search of this node matches: see
    /// [`index_text`]; `cached` ones held whole, found by id) and of each
    /// word of the listed ones' text. Returns how many keys were announced. Bounded: at most
    /// [`MAX_ANNOUNCED_KEYS`] keys, `ANNOUNCE_CONCURRENCY` at a time.
    pub async fn announce(
        &self,
        listed: &[(TrackId, String)],
        cached: &[TrackId],
        port: u16,
    ) -> usize {
        let mut keys: Vec<Id> = Vec::new();
        for id in listed.iter().map(|(id, _)| id).chain(cached) {
            keys.push(self.track_key(id));
        }
        let mut words: Vec<String> = listed.iter().flat_map(|(_, t)| words(t)).collect();
        words.sort();
        words.dedup();
        keys.extend(words.iter().map(|w| self.word_key(w)));
        keys.truncate(MAX_ANNOUNCED_KEYS);
        // A node that has just joined may not know the nodes close to a
        // key yet: what fails is tried again, twice, a moment later.
        let mut done = 0;
        let mut left = keys;
        for round in 0..3 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut failed = Vec::new();
            for batch in left.chunks(ANNOUNCE_CONCURRENCY) {
                let puts: Vec<_> = batch
                    .iter()
                    .map(|k| {
                        let (dht, k) = (self.dht.clone(), *k);
                        (k, tokio::spawn(async move { dht.announce_peer(k, Some(port)).await }))
                    })
                    .collect();
                for (k, p) in puts {
                    match p.await {
                        Ok(Ok(_)) => done += 1,
                        Ok(Err(e)) => {
                            tracing::debug!("DHT announce: {e}");
                            failed.push(k);
                        }
                        Err(_) => failed.push(k),
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            left = failed;
        }
        done
    }

    /// Peers announced for `track`.
    pub async fn holders(&self, track: &TrackId) -> Vec<SocketAddr> {
        ranked(vec![self.lookup(self.track_key(track)).await])
    }

    /// Peers announced for the words of `query` (the rarest few looked
    /// up at once), those under more of the words first.
    pub async fn holders_of_words(&self, query: &str) -> Vec<SocketAddr> {
        let mut words = words(query);
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        words.truncate(MAX_QUERY_WORDS);
        let lookups = words.iter().map(|w| {
            let this = self.clone();
            let key = this.word_key(w);
            tokio::spawn(async move { this.lookup(key).await })
        });
        let lookups: Vec<_> = lookups.collect();
        let mut found = Vec::new();
        for l in lookups {
            found.push(l.await.unwrap_or_default());
        }
        ranked(found)
    }

    /// The key of a track (in a private swarm, the swarm's own).
    pub fn track_key(&self, track: &TrackId) -> Id {
        key(self.salt.as_ref(), b"chorus/track/v1\0", track.as_bytes())
    }

    /// The key of a normalised word (in a private swarm, the swarm's own).
    pub fn word_key(&self, word: &str) -> Id {
        key(self.salt.as_ref(), b"chorus/word/v1\0", word.as_bytes())
    }

    /// The addresses announced under `key`: the lookup ends
    /// [`FIRST_ANSWER_GRACE`] after the first holders are found (more
    /// rarely come from farther nodes, and a lookup otherwise waits on the
    /// slowest node it asked), or at [`LOOKUP_TIMEOUT`].
    async fn lookup(&self, key: Id) -> Vec<SocketAddr> {
        let mut stream = self.dht.get_peers(key);
        let mut out: Vec<SocketAddr> = Vec::new();
        let deadline = tokio::time::Instant::now() + LOOKUP_TIMEOUT;
        loop {
            let until = if out.is_empty() {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + FIRST_ANSWER_GRACE)
            };
            let Ok(Some(batch)) = tokio::time::timeout_at(until, stream.next()).await else {
                break;
            };
            for a in batch {
                let a = SocketAddr::V4(a);
                if a.port() != 0 && !a.ip().is_unspecified() && !out.contains(&a) {
                    out.push(a);
                }
            }
            if out.len() >= 256 {
                break;
            }
        }
        out
    }
}

/// Addresses found under several keys first, at most [`MAX_DHT_DIALS`].
fn ranked(lists: Vec<Vec<SocketAddr>>) -> Vec<SocketAddr> {
    let mut count: HashMap<SocketAddr, usize> = HashMap::new();
    let mut order = Vec::new();
    for list in lists {
        for a in list {
            let c = count.entry(a).or_insert(0);
            if *c == 0 {
                order.push(a);
            }
            *c += 1;
        }
    }
    order.sort_by_key(|a| std::cmp::Reverse(count[a]));
    order.truncate(MAX_DHT_DIALS);
    order
}

fn key(salt: Option<&[u8; 32]>, tag: &[u8], value: &[u8]) -> Id {
    let mut h = match salt {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    };
    h.update(tag);
    h.update(value);
    let bytes = h.finalize();
    // 20 of 32 bytes: always the right length.
    Id::from_bytes(&bytes.as_bytes()[..20]).unwrap_or_else(|_| Id::random())
}

/// The words of `text` as the index keeps them: lowercase letters and
/// digits, two characters or more, each once, at most 16.
pub fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if w.chars().count() >= 2 && !out.contains(&w) {
            out.push(w);
        }
        if out.len() >= 16 {
            break;
        }
    }
    out
}

/// The text a track is found by, as a node's search matches it: title,
/// artist, album and file name.
pub fn index_text(tags: &Tags, file_name: &str) -> String {
    [tags.title.as_deref(), tags.artist.as_deref(), tags.album.as_deref(), Some(file_name)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_normalised_and_keys_are_stable_and_distinct() {
        assert_eq!(words("Apex ALEPH – Max McCracken!"), ["apex", "aleph", "max", "mccracken"]);
        assert_eq!(words("a b cd cd"), ["cd"]);
        let word = |salt: Option<&[u8; 32]>, w: &str| key(salt, b"chorus/word/v1\0", w.as_bytes());
        assert_eq!(word(None, "apex"), word(None, "apex"));
        assert_ne!(word(None, "apex"), word(None, "aleph"));
        let id = TrackId::from_bytes([7; 32]);
        assert_ne!(key(None, b"chorus/track/v1\0", id.as_bytes()), word(None, "apex"));
        // A private swarm's keys are its own.
        assert_ne!(word(Some(&[1; 32]), "apex"), word(None, "apex"));
        assert_ne!(word(Some(&[1; 32]), "apex"), word(Some(&[2; 32]), "apex"));
    }

    #[test]
    fn addresses_under_more_words_rank_first() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(ranked(vec![vec![a, b], vec![b]]), vec![b, a]);
    }
}
