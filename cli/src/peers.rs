//! Peer addresses on the command line, the data dir, and dialling.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chorus_protocol::PeerId;
use chorus_streamer::Error;
use chorus_streamer::client::Peer;
use chorus_streamer::identity::Identity;
use chorus_streamer::node::DEFAULT_PORT;
use chorus_streamer::tls::TransportLimits;
use chorus_streamer::transport::Transport;

use crate::cli::Global;

/// `HOST[:PORT]` or `PEER_ID@HOST[:PORT]`.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    /// The peer's id, if given (then only that peer is accepted there).
    pub id: Option<PeerId>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{id}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, host) = match s.split_once('@') {
            Some((id, host)) => {
                let id = id.parse::<PeerId>().map_err(|_| {
                    format!("'{id}' is not a peer id (64 hex digits, as printed by `chorus seed`)")
                })?;
                (Some(id), host)
            }
            None => (None, s),
        };
        let first =
            |a: std::io::Result<std::vec::IntoIter<SocketAddr>>| a.ok().and_then(|mut a| a.next());
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = first(host.to_socket_addrs())
            .or_else(|| first((bare, DEFAULT_PORT).to_socket_addrs()))
            .ok_or_else(|| {
                format!("cannot resolve '{host}' (expected HOST:PORT or PEER_ID@HOST:PORT)")
            })?;
        Ok(Self { id, addr })
    }
}

/// The data dir: the flag, else $XDG_DATA_HOME/chorus, else
/// ~/.local/share/chorus.
pub fn data_dir(global: &Global) -> Result<PathBuf> {
    if let Some(d) = &global.data_dir {
        return Ok(d.clone());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("chorus"));
    }
    let home = std::env::var_os("HOME").context("no HOME; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/chorus"))
}

/// This node's identity from the data dir (a member of the private swarm
/// `--swarm` names, if any).
pub fn identity(global: &Global) -> Result<Arc<Identity>> {
    let dir = data_dir(global)?;
    let id = Identity::load_or_create(&dir)
        .with_context(|| format!("loading the node identity from {}", dir.display()))?;
    Ok(Arc::new(join_swarm(global, id)?))
}

/// The private swarm key given with `--swarm` (or CHORUS_SWARM).
pub fn swarm(global: &Global) -> Result<Option<chorus_streamer::identity::SwarmKey>> {
    global
        .swarm
        .as_deref()
        .map(chorus_streamer::identity::SwarmKey::from_hex)
        .transpose()
        .context("--swarm")
}

fn join_swarm(global: &Global, id: Identity) -> Result<Identity> {
    Ok(match swarm(global)? {
        Some(k) => id.in_swarm(k)?,
        None => id,
    })
}

/// Dials one peer from a client-only endpoint.
pub async fn dial(global: &Global, peer: &PeerAddr) -> Result<(Transport, Peer)> {
    let transport = Transport::client(identity(global)?, &TransportLimits::default())?;
    match transport.connect(peer.addr, peer.id).await {
        Ok(connected) => Ok((transport, connected)),
        Err(e @ Error::PeerIdMismatch { .. }) => Err(anyhow::Error::new(e)
            .context(format!("the node at {} is not the peer asked for", peer.addr))),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot reach the peer at {} (is `chorus seed` running there?)",
            peer.addr
        ))),
    }
}

/// This node's identity for a listener: from the data dir, or, where the
/// data dir cannot hold one (read-only, say), a temporary one, said once.
pub fn identity_for_play(global: &Global) -> Result<Arc<Identity>> {
    swarm(global)?;
    match identity(global) {
        Ok(id) => Ok(id),
        Err(e) => {
            eprintln!("warning: {e:#}; using a temporary identity for this run");
            Ok(Arc::new(join_swarm(global, Identity::ephemeral()?)?))
        }
    }
}

/// The chunk cache in the data dir. A cache that cannot be created or
/// written is not an error: playback goes on without caching, said once.
pub fn cache(global: &Global, max_mib: u64) -> Result<Arc<chorus_streamer::cache::ChunkCache>> {
    use chorus_streamer::cache::ChunkCache;
    let dir = data_dir(global)?.join("cache");
    let cache = match ChunkCache::open(&dir, max_mib.saturating_mul(1 << 20)) {
        Ok(c) if c.stores() => c,
        Ok(c) => {
            eprintln!(
                "warning: the chunk cache in {} is read-only: playing without caching",
                dir.display()
            );
            c
        }
        Err(e) => {
            eprintln!(
                "warning: cannot use a chunk cache in {} ({e}): playing without caching",
                dir.display()
            );
            ChunkCache::disabled()
        }
    };
    Ok(Arc::new(cache))
}

/// Browses the LAN for nodes (unless `--lan off`) in the background and
/// adds each found to `pool`; a start with no peer yet waits for the
/// browse (one [`chorus_streamer::lan::BROWSE_WINDOW`] at most).
pub fn browse_lan(global: &Global, pool: &Arc<chorus_streamer::start::Pool>) {
    if global.lan == crate::cli::Switch::Off {
        return;
    }
    let searching = pool.searching();
    let pool = pool.clone();
    let me = pool.transport().peer_id();
    let swarm = swarm(global).ok().flatten();
    let window = chorus_streamer::lan::BROWSE_WINDOW;
    tokio::task::spawn_blocking(move || {
        let _searching = searching;
        let result = chorus_streamer::lan::browse(me, swarm.as_ref(), window, &mut |peer| {
            tracing::info!("found {} on the LAN at {:?}", peer.id.fmt_short(), peer.addrs);
            if let Some(addr) = peer.addrs.first() {
                pool.add(*addr, Some(peer.id), "lan");
            }
            true
        });
        if let Err(e) = result {
            tracing::debug!("{e}");
        }
    });
}

/// The DHT node, when the user asked for one (`--dht on`, or bootstrap
/// nodes given), joined through the nodes the last run knew as well.
/// Failing to start it is a warning, not an error.
pub fn dht(global: &Global) -> Option<chorus_streamer::dht::Dht> {
    let bootstrap = (!global.dht_bootstrap.is_empty()).then_some(global.dht_bootstrap.as_slice());
    if global.dht == crate::cli::Switch::Off && bootstrap.is_none() {
        return None;
    }
    let swarm = swarm(global).ok().flatten();
    let remembered = dht_nodes_file(global).map(|p| load_dht_nodes(&p)).unwrap_or_default();
    match chorus_streamer::dht::Dht::start_at(bootstrap, &remembered, swarm.as_ref(), None) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!("{e}; going on without the DHT");
            None
        }
    }
}

/// The DHT routing table a run leaves for the next, in the data dir.
const DHT_NODES: &str = "dht-nodes.json";
/// A routing table older than this is not used (DHT nodes come and go).
const DHT_NODES_FORGOTTEN: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(serde::Serialize, serde::Deserialize)]
struct DhtNodes {
    /// Unix seconds.
    saved: u64,
    nodes: Vec<SocketAddr>,
}

fn dht_nodes_file(global: &Global) -> Option<PathBuf> {
    data_dir(global).ok().map(|d| d.join(DHT_NODES))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The remembered routing table: nothing when missing, unreadable or old.
fn load_dht_nodes(path: &Path) -> Vec<SocketAddr> {
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    match serde_json::from_slice::<DhtNodes>(&bytes) {
        Ok(t) if unix_now().saturating_sub(t.saved) < DHT_NODES_FORGOTTEN.as_secs() => {
            let mut nodes = t.nodes;
            nodes.truncate(chorus_streamer::dht::MAX_REMEMBERED);
            nodes
        }
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::warn!("forgetting an unreadable {DHT_NODES}: {e}");
            Vec::new()
        }
    }
}

/// Keeps the DHT's routing table for the next run (atomically; a data dir
/// that cannot be written only costs the memory).
pub async fn remember_dht(global: &Global, dht: Option<&chorus_streamer::dht::Dht>) {
    let (Some(dht), Some(path)) = (dht, dht_nodes_file(global)) else { return };
    let nodes = dht.routing_nodes().await;
    if nodes.is_empty() {
        return;
    }
    let tmp = path.with_extension("json.tmp");
    let write = || -> Result<()> {
        let t = DhtNodes { saved: unix_now(), nodes };
        std::fs::write(&tmp, serde_json::to_vec_pretty(&t)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("not remembering the DHT in {}: {e:#}", path.display());
    }
}

/// Looks `queries` up in the DHT in the background (track ids by id, the
/// rest by their words) and adds the holders found to `pool`; a start with
/// no peer yet waits for it (bounded by the lookup timeout).
pub fn lookup_dht(
    dht: Option<chorus_streamer::dht::Dht>,
    pool: &Arc<chorus_streamer::start::Pool>,
    queries: &[String],
) {
    let Some(dht) = dht else { return };
    let searching = pool.searching();
    let pool = pool.clone();
    let queries: Vec<String> = queries.iter().take(4).cloned().collect();
    tokio::spawn(async move {
        let _searching = searching;
        let lookups = queries.into_iter().map(|q| {
            let dht = dht.clone();
            tokio::spawn(async move {
                match q.parse::<chorus_protocol::TrackId>() {
                    Ok(id) => dht.holders(&id).await,
                    Err(_) => dht.holders_of_words(&q).await,
                }
            })
        });
        let lookups: Vec<_> = lookups.collect();
        let mut added = 0;
        for l in lookups {
            for addr in l.await.unwrap_or_default() {
                if added < chorus_streamer::dht::MAX_DHT_DIALS {
                    tracing::info!("found {addr} in the DHT");
                    pool.add(addr, None, "dht");
                    added += 1;
                }
            }
        }
    });
}
