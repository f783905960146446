//! What this node remembers of the network: the peers it has talked to
//! (each verified by its certificate when it was), how it first learned of
//! each, the last round-trip time and how many bytes each served. Kept in
//! `peers.json` in the data dir, written atomically; entries unseen for 30
//! days are forgotten, and at most 1024 are kept. A restarted listener with
//! no peer configured dials the most recent ones, so it is back in the
//! swarm without asking anyone. `chorus peers` lists them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use chorus_protocol::PeerId;
use serde::{Deserialize, Serialize};

use crate::cli::Global;
use crate::output;

/// The file in the data dir.
const FILE: &str = "peers.json";
/// Most peers remembered.
const MAX_REMEMBERED: usize = 1024;
/// Unseen this long, a peer is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);
/// Remembered peers a listener with none configured dials.
pub const DIAL_REMEMBERED: usize = 8;
/// How long a start waits for a remembered peer (it may well be gone).
pub const REMEMBERED_WAIT: Duration = Duration::from_secs(2);

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Remembered {
    /// Its id (hex), proven by its certificate when we talked.
    pub id: String,
    /// Where we reached it last.
    pub addr: SocketAddr,
    /// How we first learned of it: flag, config, lan, dht, exchange.
    pub how: String,
    /// Unix seconds.
    pub first_seen: u64,
    /// Unix seconds.
    pub last_seen: u64,
    /// The last round-trip time measured, ms.
    pub rtt_ms: Option<f64>,
    /// Verified bytes it has served us, over all runs.
    pub bytes_served: u64,
    /// How we reached it last: direct, mapped (at a port its router maps),
    /// punched (through a NAT, helped by a third peer) or relayed.
    #[serde(default = "direct")]
    pub path: String,
}

fn direct() -> String {
    "direct".to_owned()
}

/// The remembered peers of one data dir.
pub struct Memory {
    path: Option<PathBuf>,
    entries: Vec<Remembered>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Memory {
    /// Loads the data dir's memory (empty when there is none yet, or when
    /// it cannot be read: it is a cache of the network, not user data).
    pub fn load(global: &Global) -> Self {
        let path = crate::peers::data_dir(global).ok().map(|d| d.join(FILE));
        if let Some(p) = &path {
            // Left by a crash mid-write.
            let _ = std::fs::remove_file(p.with_extension("json.tmp"));
        }
        let entries = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| match serde_json::from_slice::<Vec<Remembered>>(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!("forgetting an unreadable {FILE}: {e}");
                    None
                }
            })
            .unwrap_or_default();
        Self { path, entries }
    }

    /// Notes that we talked to `id` at `addr`.
    pub fn record(
        &mut self,
        id: PeerId,
        addr: SocketAddr,
        how: &str,
        rtt: Option<Duration>,
        bytes: u64,
        path: chorus_streamer::nat::Path,
    ) {
        let hex = id.to_string();
        let t = now();
        let rtt_ms = rtt.map(|d| d.as_secs_f64() * 1e3);
        match self.entries.iter_mut().find(|e| e.id == hex) {
            Some(e) => {
                e.addr = addr;
                e.last_seen = t;
                e.rtt_ms = rtt_ms.or(e.rtt_ms);
                e.bytes_served = e.bytes_served.saturating_add(bytes);
                e.path = path.to_string();
            }
            None => self.entries.push(Remembered {
                id: hex,
                addr,
                how: how.to_owned(),
                first_seen: t,
                last_seen: t,
                rtt_ms,
                bytes_served: bytes,
                path: path.to_string(),
            }),
        }
    }

    /// The most recently seen peers, newest first.
    pub fn recent(&self, n: usize) -> Vec<(SocketAddr, PeerId)> {
        let mut v: Vec<&Remembered> = self.entries.iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        v.into_iter().filter_map(|e| Some((e.addr, e.id.parse().ok()?))).take(n).collect()
    }

    /// How we first learned of `id`, if we know it.
    pub fn how(&self, id: &PeerId) -> Option<String> {
        let hex = id.to_string();
        self.entries.iter().find(|e| e.id == hex).map(|e| e.how.clone())
    }

    /// Forgets stale entries and writes the file (atomically). A data dir
    /// that cannot be written only costs the memory.
    pub fn save(&mut self) {
        let t = now();
        self.entries.retain(|e| t.saturating_sub(e.last_seen) < FORGET_AFTER.as_secs());
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        self.entries.truncate(MAX_REMEMBERED);
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("json.tmp");
        let write = || -> Result<()> {
            std::fs::write(&tmp, serde_json::to_vec_pretty(&self.entries)?)?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        };
        if let Err(e) = write() {
            // A full or read-only disk: no half-written file stays behind.
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!("not remembering peers in {}: {e:#}", path.display());
        }
    }
}

/// Dials the remembered peers when none is configured (a start waits at
/// most [`REMEMBERED_WAIT`] for them: they may be gone).
pub fn dial_remembered(memory: &Memory, pool: &std::sync::Arc<chorus_streamer::start::Pool>) {
    for (addr, id) in memory.recent(DIAL_REMEMBERED) {
        pool.add_hopeful(addr, Some(id), "remembered", REMEMBERED_WAIT);
    }
}

/// Remembers the peers of `pool` that answered (each learned as its pool
/// origin says; `given` is what "given" addresses were: flag or config)
/// and every peer that served bytes (`served`: id, address, bytes).
pub fn remember(
    memory: &mut Memory,
    pool: &chorus_streamer::start::Pool,
    given: &str,
    served: &[(PeerId, SocketAddr, u64)],
) {
    let peers = pool.peers();
    for p in &peers {
        let how = match pool.origin(p.addr()) {
            Some("given") => given.to_owned(),
            Some("remembered") => memory.how(&p.id()).unwrap_or_else(|| "remembered".into()),
            Some(h) => h.to_owned(),
            None => "exchange".to_owned(),
        };
        let bytes = served.iter().filter(|s| s.0 == p.id()).map(|s| s.2).sum();
        let path = pool.transport().path_of(&p.id());
        memory.record(p.id(), p.addr(), &how, Some(p.connection().rtt()), bytes, path);
    }
    for (id, addr, bytes) in served {
        if peers.iter().all(|p| p.id() != *id) {
            let path = pool.transport().path_of(id);
            memory.record(*id, *addr, "exchange", None, *bytes, path);
        }
    }
    memory.save();
}

/// `chorus peers`: what this node remembers of the network.
pub fn show(global: &Global) -> Result<()> {
    let memory = Memory::load(global);
    let dir = crate::peers::data_dir(global).context("the data dir")?;
    if memory.entries.is_empty() {
        println!(
            "no peers remembered in {} yet: play or search with --peer, on a LAN, or with --dht",
            dir.display()
        );
        return Ok(());
    }
    let mut v = memory.entries.clone();
    v.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
    println!(
        "{:<10}  {:<22}  {:<8}  {:<8}  {:<8}  {:>9}  {:>9}  {:<9}",
        "PEER", "ADDRESS", "LEARNED", "VERIFIED", "PATH", "RTT", "SERVED", "LAST SEEN"
    );
    let t = now();
    for e in &v {
        let rtt = e.rtt_ms.map(|r| format!("{r:.1} ms")).unwrap_or_else(|| "-".into());
        println!(
            "{:<10}  {:<22}  {:<8}  {:<8}  {:<8}  {:>9}  {:>9}  {} ago",
            &e.id[..8.min(e.id.len())],
            e.addr.to_string(),
            e.how,
            "yes",
            e.path,
            rtt,
            output::size(e.bytes_served),
            output::span(Duration::from_secs(t.saturating_sub(e.last_seen))),
        );
    }
    println!("{} peers remembered in {}", v.len(), dir.join(FILE).display());
    Ok(())
}
