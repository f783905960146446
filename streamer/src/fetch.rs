//! Fetching one track's chunks from peers into a [`TrackStore`].
//!
//! [`fetch_track`] keeps a few range requests in flight per peer, choosing
//! chunks in the store's order of need ([`TrackStore::next_wanted`]). Each
//! request runs as its own task and inserts verified chunks straight into
//! the store, so a blocked reader wakes the moment its chunk lands. A peer
//! that fails (timeout, lost connection, bad data, or does not have the
//! track) is dropped; when no peer is left, the store is failed with the
//! reason, which ends playback with a clear error instead of a hang.
//!
//! Tasks: the fetch loop; one task per request, reporting back over a
//! bounded channel.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chorus_protocol::message::ErrorCode;
use chorus_protocol::{ChunkIndex, PeerId};
use tokio::sync::mpsc;

use crate::client::Peer;
use crate::error::Error;
use crate::store::TrackStore;

/// Fetch settings.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Requests in flight per peer. 4 × 8 chunks × 16 KiB = 512 KiB in
    /// flight, enough to fill 40 Mbit/s at 100 ms RTT per peer.
    pub requests_per_peer: usize,
    /// Chunks per request after the first few: 8 × 16 KiB.
    pub batch: u32,
    /// A request that delivers nothing for this long has stalled: the peer
    /// is dropped. 5 s: far above any RTT we serve, short enough that a
    /// vanished peer is noticed well before a typical 2–10 s buffer drains.
    pub stall_timeout: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self { requests_per_peer: 4, batch: 8, stall_timeout: Duration::from_secs(5) }
    }
}

/// Counters of a fetch.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Verified chunk bytes received (duplicates included).
    pub bytes: AtomicU64,
    /// Chunks received.
    pub chunks: AtomicU64,
    /// Requests that failed.
    pub failures: AtomicU64,
    /// Verified bytes received from each peer.
    pub by_peer: std::sync::Mutex<Vec<(PeerId, std::net::SocketAddr, u64)>>,
}

impl FetchStats {
    fn add_peer_bytes(&self, peer: &Peer, bytes: u64) {
        if let Ok(mut v) = self.by_peer.lock() {
            match v.iter_mut().find(|(id, _, _)| *id == peer.id()) {
                Some(e) => e.2 += bytes,
                None => v.push((peer.id(), peer.addr(), bytes)),
            }
        }
    }
}

enum Event {
    Done { peer: usize, chunks: Vec<u32>, bytes: u64 },
    Failed { peer: usize, chunks: Vec<u32>, bytes: u64, error: Error },
}

struct PeerSlot {
    peer: Peer,
    in_flight: usize,
    dead: Option<String>,
}

/// Fetches every chunk of the store's track from `peers`, most needed
/// first, until the store is complete or closed. Fails the store (and
/// returns the reason) when no peer can serve what is missing.
pub async fn fetch_track(
    store: Arc<TrackStore>,
    peers: Vec<Peer>,
    config: FetchConfig,
    stats: Arc<FetchStats>,
) -> Result<(), String> {
    let mut slots: Vec<PeerSlot> =
        peers.into_iter().map(|peer| PeerSlot { peer, in_flight: 0, dead: None }).collect();
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut busy: HashSet<u32> = HashSet::new();
    let mut requests_made = 0u32;
    loop {
        if store.is_complete() || store.is_closed() {
            return Ok(());
        }
        // Fill every live peer's pipeline.
        let mut issued = true;
        while issued {
            issued = false;
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.dead.is_some() || slot.in_flight >= config.requests_per_peer {
                    continue;
                }
                // The first requests are single chunks, so the first bytes
                // arrive after one round trip, not after a whole batch.
                let max = if requests_made < 2 { 1 } else { config.batch };
                let Some((first, count)) = store.next_wanted(&|c| busy.contains(&c), max) else {
                    break;
                };
                let chunks: Vec<u32> = (first.0..first.0 + count).collect();
                busy.extend(chunks.iter().copied());
                slot.in_flight += 1;
                requests_made += 1;
                issued = true;
                let deadline_ms = deadline_ms(&store, first);
                tokio::spawn(request(
                    i,
                    slot.peer.clone(),
                    store.clone(),
                    chunks,
                    deadline_ms,
                    config.stall_timeout,
                    stats.clone(),
                    tx.clone(),
                ));
            }
        }
        if slots.iter().all(|s| s.dead.is_some()) {
            let reasons: Vec<String> = slots
                .iter()
                .map(|s| format!("{}: {}", s.peer.addr(), s.dead.as_deref().unwrap_or("")))
                .collect();
            let reason = if reasons.is_empty() {
                "no peers to fetch from".to_owned()
            } else {
                format!("no peer can serve the rest of the track ({})", reasons.join("; "))
            };
            store.fail(reason.clone());
            return Err(reason);
        }
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Event::Done { peer, chunks, bytes } => {
                        stats.add_peer_bytes(&slots[peer].peer, bytes);
                        slots[peer].in_flight -= 1;
                        for c in chunks { busy.remove(&c); }
                    }
                    Event::Failed { peer, chunks, bytes, error } => {
                        stats.add_peer_bytes(&slots[peer].peer, bytes);
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        let slot = &mut slots[peer];
                        slot.in_flight -= 1;
                        for c in chunks { busy.remove(&c); }
                        if slot.dead.is_none() {
                            tracing::warn!("dropping peer {}: {error}", slot.peer.addr());
                            slot.dead = Some(describe(&error));
                        }
                    }
                }
            }
            () = store.wait_for_need() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

fn describe(error: &Error) -> String {
    match error {
        Error::Remote { code: ErrorCode::UnknownTrack | ErrorCode::UnknownChunk, .. } => {
            "does not have it".into()
        }
        Error::Timeout(..) => "stopped answering".into(),
        Error::Protocol(e) => format!("sent bad data ({e})"),
        e => e.to_string(),
    }
}

/// Milliseconds until the decoder needs `first`, assuming playback runs at
/// 1× from the reader's current position.
fn deadline_ms(store: &TrackStore, first: ChunkIndex) -> u32 {
    let m = store.manifest();
    let now = m.chunk_media_time(ChunkIndex(store.cursor()));
    let due = m.chunk_media_time(first);
    u32::try_from(due.saturating_sub(now).as_millis()).unwrap_or(u32::MAX - 1)
}

#[allow(clippy::too_many_arguments)]
async fn request(
    peer_index: usize,
    peer: Peer,
    store: Arc<TrackStore>,
    chunks: Vec<u32>,
    deadline_ms: u32,
    stall: Duration,
    stats: Arc<FetchStats>,
    tx: mpsc::Sender<Event>,
) {
    let first = ChunkIndex(chunks[0]);
    let count = chunks.len() as u32;
    let mut bytes = 0u64;
    let result = async {
        let mut stream =
            tokio::time::timeout(stall, peer.chunks(store.manifest(), first, count, deadline_ms))
                .await
                .map_err(|_| Error::Timeout(stall, "the peer to accept a request"))??;
        loop {
            let next = tokio::time::timeout(stall, stream.next())
                .await
                .map_err(|_| Error::Timeout(stall, "chunk data"))??;
            let Some((index, data)) = next else { return Ok(()) };
            stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            bytes += data.len() as u64;
            stats.chunks.fetch_add(1, Ordering::Relaxed);
            // Verified already by the stream; the store checks again.
            store.insert(index, data)?;
            if store.is_closed() {
                return Ok(());
            }
        }
    }
    .await;
    let ev = match result {
        Ok(()) => Event::Done { peer: peer_index, chunks, bytes },
        Err(error) => Event::Failed { peer: peer_index, chunks, bytes, error },
    };
    let _ = tx.send(ev).await;
}
