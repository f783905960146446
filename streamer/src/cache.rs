//! The chunk cache: verified chunks of tracks this node fetched, kept on
//! disk so it can serve them to others and play them again offline.
//!
//! Layout under the cache dir: one directory per track, named by its id,
//! holding `manifest` (the canonical bytes, checked against the id when
//! loaded) and one file per chunk, named by its index. Every write goes to a
//! temp file and is renamed into place, so a crash never leaves a partial
//! chunk under a chunk's name; every read is verified against the manifest
//! again (a disk can rot), and a chunk that fails is deleted.
//!
//! Size is bounded: when a write would exceed [`ChunkCache::max_bytes`],
//! whole tracks are evicted, least recently used first (never the track
//! being written). A temp file left by a write that failed (a full disk, a
//! crash) is removed at once or, at the latest, when the cache next opens.
//!
//! Opening lists the entries on a thread of its own (a full cache is over
//! 100,000 files); an entry asked for before that scan reaches it is read
//! alone, so a start never waits for the whole cache. Eviction waits for
//! the scan (it needs every entry's bytes), which evicts when it ends.
//! Writes handed to blocking threads ([`ChunkCache::put_chunk_later`]) are
//! counted, so a process can [`ChunkCache::flush`] them before it exits.
//!
//! The cache writes only inside its own directory. Where that directory
//! cannot be written (a read-only data dir), the cache still serves what it
//! holds but stores nothing ([`ChunkCache::stores`] is false), and playback
//! goes on without it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::message::ChunkRun;
use chorus_protocol::{ChunkIndex, Manifest, TrackId, VerifiedChunk};

use crate::error::{Error, Result};

/// Default cache bound: 2 GiB holds ~200 hours of 320 kb/s audio's worth of
/// recently played tracks, small next to any music library.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

#[derive(Debug)]
struct CachedTrack {
    manifest: Manifest,
    /// The hash list is on disk (written once it is whole).
    listed: bool,
    have: Vec<bool>,
    bytes: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Index {
    tracks: HashMap<TrackId, CachedTrack>,
    total: u64,
    clock: u64,
    /// The scan of the whole directory is still going: an entry not in
    /// `tracks` may still be on disk.
    scanning: bool,
    /// Entries being read from disk (by the scan or by a caller that
    /// needed one before the scan came to it), or being created: nobody
    /// else reads or removes them meanwhile.
    loading: HashSet<TrackId>,
}

/// A bounded on-disk store of verified chunks.
#[derive(Debug)]
pub struct ChunkCache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    /// False where the directory cannot be written: puts are then no-ops.
    writable: bool,
    index: Mutex<Index>,
    /// Signalled when an entry has been read and when the scan ends.
    loaded: Condvar,
    /// Raised when the cache is dropped: the scan stops.
    closed: AtomicBool,
    /// Writes handed to [`ChunkCache::put_chunk_later`] (and list writes)
    /// not yet done, and a signal when one is.
    pending: Mutex<usize>,
    written: Condvar,
}

impl Drop for ChunkCache {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }
}

/// A cached track's chunk hash list, beside its manifest.
const HASHES_FILE: &str = "hashes";

/// The suffix of a file being written, renamed into place when whole.
const TMP_SUFFIX: &str = ".tmp";

fn io(context: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::io(context, path, e)
}

impl ChunkCache {
    /// Opens (creating if needed) the cache in `dir`, bounded to
    /// `max_bytes`. Entries that do not check out (a manifest that does not
    /// hash to its directory's name, a chunk file of the wrong size) and
    /// temp files left by failed writes are removed; the rest is kept. A
    /// directory that exists but cannot be written opens read-only.
    ///
    /// Returns at once: the entries are read on a thread of its own (a
    /// full 2 GiB cache is ~130,000 files, 0.2-0.5 s to list), and an entry
    /// asked for before the scan reaches it is read then, alone. A start
    /// waits for its own track's entry, not for the whole cache. Eviction
    /// waits for the scan: the bound may be passed meanwhile by what is
    /// stored before it ends.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        let cache = Self::open_unscanned(dir, max_bytes)?;
        let shared = cache.shared.clone();
        let scan = std::thread::Builder::new()
            .name("chorus-cache-scan".into())
            .spawn(move || shared.scan());
        if scan.is_err() {
            // No thread: read it all here.
            cache.shared.scan();
        }
        Ok(cache)
    }

    /// [`Self::open`] without starting the scan.
    fn open_unscanned(dir: &Path, max_bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| io("creating cache dir", dir, e))?;
        let writable = {
            let probe = dir.join(format!(".probe{TMP_SUFFIX}"));
            let ok = fs::write(&probe, b"").is_ok();
            let _ = fs::remove_file(&probe);
            ok
        };
        let index = Index { scanning: true, ..Index::default() };
        Ok(Self::with(dir.to_owned(), max_bytes, writable, index))
    }

    fn with(dir: PathBuf, max_bytes: u64, writable: bool, index: Index) -> Self {
        let shared = Shared {
            dir,
            max_bytes,
            writable,
            index: Mutex::new(index),
            loaded: Condvar::new(),
            closed: AtomicBool::new(false),
            pending: Mutex::new(0),
            written: Condvar::new(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// A cache that holds nothing and stores nothing: for playing when the
    /// data dir cannot hold one.
    pub fn disabled() -> Self {
        Self::with(PathBuf::new(), 0, false, Index::default())
    }

    /// False if this cache stores nothing (its directory is read-only, or it
    /// is [`ChunkCache::disabled`]).
    pub fn stores(&self) -> bool {
        self.shared.writable
    }

    /// The bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.shared.max_bytes
    }

    /// Bytes of chunks held (once the scan has read every entry).
    pub fn total_bytes(&self) -> u64 {
        self.shared.lock_scanned().total
    }

    /// Manifests of the tracks held whole: what plays with no peer at all
    /// (once the scan has read every entry).
    pub fn complete_tracks(&self) -> Vec<Manifest> {
        complete(&self.shared.lock_scanned())
    }

    /// Manifests of the tracks whose start at `at` this cache holds (their
    /// hash list whole, their header chunks and the chunk playback starts
    /// in here; whole tracks among them), among the entries read so far:
    /// a node serving its cache answers a start by query from these, so
    /// the asker starts on its answer alone and fetches the rest from
    /// whoever holds it, as a start by id does.
    pub fn startable_tracks_now(&self, at: Duration) -> Vec<Manifest> {
        let ix = self.shared.lock();
        ix.tracks
            .values()
            .filter(|t| t.manifest.hashes_known() && holds_start(t, at))
            .map(|t| t.manifest.clone())
            .collect()
    }

    /// Remembers a (verified) manifest, so its chunks can be stored.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        let id = manifest.id();
        if !self.shared.writable {
            return Ok(());
        }
        {
            let mut ix = self.shared.lock_with(&id);
            if ix.tracks.contains_key(&id) {
                return Ok(());
            }
            // Claimed while its files are written: the scan must not read
            // (and drop) an entry half made.
            ix.loading.insert(id);
        }
        let dir = self.shared.track_dir(&id);
        let made = fs::create_dir_all(&dir)
            .map_err(|e| io("creating cache entry", &dir, e))
            .and_then(|()| write_atomic(&dir.join("manifest"), manifest.encoded()))
            .and_then(|()| self.write_list(manifest));
        let entry = made.as_ref().ok().map(|&listed| CachedTrack {
            manifest: manifest.clone(),
            listed,
            have: vec![false; manifest.layout().count() as usize],
            bytes: 0,
            last_used: 0,
        });
        self.shared.loaded_entry(&id, entry);
        // The list may have turned whole since it was written above, and
        // a fetch's word that it did may have come before the entry was
        // in the index: written now, whichever came last.
        self.list_whole(&id);
        made.map(|_| ())
    }

    /// Writes a manifest's hash list if it is whole (it may still be
    /// arriving: the manifest is shared with the fetch that learns it).
    /// True if written.
    fn write_list(&self, manifest: &Manifest) -> Result<bool> {
        match manifest.hash_pages(0..manifest.page_count()) {
            Some(list) if manifest.hashes_known() => {
                write_atomic(&self.shared.track_dir(&manifest.id()).join(HASHES_FILE), &list)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Writes a cached track's hash list once it is whole, if not written
    /// yet: the list that checks chunks on reading (an entry left without
    /// one is dropped when the cache opens). Called by every put and by a
    /// fetch when the list's last page comes (a start response sends the
    /// pages after its chunks: a play stopped before any later chunk came
    /// left its entry unlisted). Claimed under the lock, so callers on
    /// other threads do not write it at the same time.
    pub fn list_whole(&self, id: &TrackId) {
        if !self.shared.writable {
            return;
        }
        let unlisted = match self.shared.lock_with(id).tracks.get_mut(id) {
            Some(t) if !t.listed && t.manifest.hashes_known() => {
                t.listed = true;
                t.manifest.clone()
            }
            _ => return,
        };
        if let Err(e) = self.write_list(&unlisted) {
            // The chunks are still worth keeping; a later call tries again.
            tracing::debug!("cache: hash list of {} not written: {e}", id.fmt_short());
            if let Some(t) = self.shared.lock().tracks.get_mut(id) {
                t.listed = false;
            }
        }
    }

    /// Stores `chunk` on a blocking thread ([`Self::put_chunk`]), counted
    /// until done so that [`Self::flush`] can wait for it: a play that
    /// ends (or a process that exits) right after its chunks came keeps
    /// them. A full disk is not an error here: the cache is a bonus.
    pub fn put_chunk_later(self: &Arc<Self>, chunk: VerifiedChunk) {
        self.later(move |c| {
            if let Err(e) = c.put_chunk(&chunk) {
                tracing::debug!("not caching chunk {}: {e}", chunk.index());
            }
        });
    }

    /// [`Self::list_whole`] on a blocking thread, counted like
    /// [`Self::put_chunk_later`].
    pub fn list_whole_later(self: &Arc<Self>, id: TrackId) {
        self.later(move |c| c.list_whole(&id));
    }

    fn later(self: &Arc<Self>, write: impl FnOnce(&ChunkCache) + Send + 'static) {
        if !self.shared.writable {
            return;
        }
        *self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let cache = self.clone();
        let run = move || {
            write(&cache);
            let mut n = cache.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            *n = n.saturating_sub(1);
            cache.shared.written.notify_all();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(run)),
            Err(_) => run(),
        }
    }

    /// Waits (at most `limit`) for the writes handed to
    /// [`Self::put_chunk_later`] to be done; false if some were not. Blocks:
    /// call it on a blocking thread, before the process exits.
    pub fn flush(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut n = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self.shared.written.wait_timeout(n, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// The manifest of a cached track, once its hash list is whole (what
    /// serving it to others needs).
    pub fn manifest(&self, id: &TrackId) -> Option<Manifest> {
        let ix = self.shared.lock_with(id);
        ix.tracks.get(id).filter(|t| t.manifest.hashes_known()).map(|t| t.manifest.clone())
    }

    /// Stores a verified chunk, evicting least recently used tracks if the
    /// cache would grow past its bound.
    pub fn put_chunk(&self, chunk: &VerifiedChunk) -> Result<()> {
        let (id, index, data) = (&chunk.track(), chunk.index(), &chunk.data()[..]);
        if !self.shared.writable {
            return Ok(());
        }
        match self.shared.lock_with(id).tracks.get(id) {
            None => return Err(Error::UnknownTrack(*id)),
            Some(t) if t.have[index.as_usize()] => return Ok(()),
            Some(_) => {}
        }
        self.list_whole(id);
        self.shared.make_room(Some(id), data.len() as u64);
        write_atomic(&self.shared.track_dir(id).join(index.0.to_string()), data)?;
        let mut ix = self.shared.lock();
        ix.clock += 1;
        let clock = ix.clock;
        if let Some(t) = ix.tracks.get_mut(id) {
            if !t.have[index.as_usize()] {
                t.have[index.as_usize()] = true;
                t.bytes += data.len() as u64;
                t.last_used = clock;
                ix.total += data.len() as u64;
            }
        }
        Ok(())
    }

    /// Reads a chunk back, verifying it again; a chunk that fails is deleted.
    pub fn get_chunk(&self, id: &TrackId, index: ChunkIndex) -> Option<VerifiedChunk> {
        self.read_checked(id, index, |m, data| m.verify(index, data))
    }

    /// [`Self::get_chunk`], with the chunk's group values for a receiver
    /// ([`chorus_protocol::groups`]), from the same pass over its bytes.
    pub fn get_chunk_with_groups(
        &self,
        id: &TrackId,
        index: ChunkIndex,
    ) -> Option<(Bytes, VerifiedChunk)> {
        self.read_checked(id, index, |m, data| m.verify_with_groups(index, data))
    }

    /// Reads a chunk back and checks it with `check`; one that fails is
    /// dropped (the caller fetches it again).
    fn read_checked<T>(
        &self,
        id: &TrackId,
        index: ChunkIndex,
        check: impl FnOnce(&Manifest, Bytes) -> chorus_protocol::Result<T>,
    ) -> Option<T> {
        let manifest = {
            let mut ix = self.shared.lock_with(id);
            ix.clock += 1;
            let clock = ix.clock;
            let t = ix.tracks.get_mut(id)?;
            if !t.have.get(index.as_usize()).copied().unwrap_or(false) {
                return None;
            }
            t.last_used = clock;
            t.manifest.clone()
        };
        let path = self.shared.track_dir(id).join(index.0.to_string());
        let verified = fs::read(&path).ok().and_then(|d| check(&manifest, Bytes::from(d)).ok());
        match verified {
            Some(chunk) => Some(chunk),
            None => {
                tracing::warn!(
                    "cache: chunk {index} of {} failed verification; dropped",
                    id.fmt_short()
                );
                let _ = fs::remove_file(&path);
                let mut ix = self.shared.lock();
                let len = manifest.layout().chunk_len(index);
                if let Some(t) = ix.tracks.get_mut(id) {
                    if t.have[index.as_usize()] {
                        t.have[index.as_usize()] = false;
                        t.bytes -= len;
                        ix.total -= len;
                    }
                }
                None
            }
        }
    }

    /// The chunks held of a track, as runs.
    pub fn have(&self, id: &TrackId) -> Vec<ChunkRun> {
        let ix = self.shared.lock_with(id);
        let Some(t) = ix.tracks.get(id) else { return Vec::new() };
        let mut runs: Vec<ChunkRun> = Vec::new();
        for (i, h) in t.have.iter().enumerate() {
            if !h {
                continue;
            }
            match runs.last_mut() {
                Some(r) if (r.start + r.len) as usize == i => r.len += 1,
                _ => runs.push(ChunkRun { start: i as u32, len: 1 }),
            }
        }
        runs
    }

    /// True if the chunk is held.
    pub fn holds(&self, id: &TrackId, index: ChunkIndex) -> bool {
        let ix = self.shared.lock_with(id);
        ix.tracks.get(id).is_some_and(|t| t.have.get(index.as_usize()) == Some(&true))
    }

    /// True if every chunk of the track is held.
    pub fn is_complete(&self, id: &TrackId) -> bool {
        self.shared.lock_with(id).tracks.get(id).is_some_and(|t| t.have.iter().all(|h| *h))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every update of the index is a handful of field writes that leave
        // it consistent at each step; a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Index>) -> MutexGuard<'a, Index> {
        self.loaded.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    fn track_dir(&self, id: &TrackId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The index, with `id`'s entry read from disk first if the scan has
    /// not come to it yet.
    fn lock_with(&self, id: &TrackId) -> MutexGuard<'_, Index> {
        let mut ix = self.lock();
        loop {
            if !ix.scanning || ix.tracks.contains_key(id) {
                return ix;
            }
            if ix.loading.contains(id) {
                ix = self.wait(ix);
                continue;
            }
            drop(ix);
            let path = self.track_dir(id);
            let on_disk = path.is_dir();
            ix = self.lock();
            if !on_disk {
                return ix;
            }
            if ix.tracks.contains_key(id) || ix.loading.contains(id) || !ix.scanning {
                continue;
            }
            ix.loading.insert(*id);
            drop(ix);
            let entry = load_entry(&path, id);
            self.loaded_entry(id, entry);
            ix = self.lock();
        }
    }

    /// Records an entry read from disk (claimed in `loading` before).
    fn loaded_entry(&self, id: &TrackId, entry: Option<CachedTrack>) {
        let mut ix = self.lock();
        ix.loading.remove(id);
        if let Some(t) = entry
            && !ix.tracks.contains_key(id)
        {
            ix.total += t.bytes;
            ix.tracks.insert(*id, t);
        }
        drop(ix);
        self.loaded.notify_all();
    }

    /// The index once the scan has read every entry.
    fn lock_scanned(&self) -> MutexGuard<'_, Index> {
        let mut ix = self.lock();
        while ix.scanning {
            ix = self.wait(ix);
        }
        ix
    }

    /// Reads every entry not read yet, then marks the scan done.
    fn scan(&self) {
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if self.closed.load(Ordering::Relaxed) {
                break;
            }
            let path = entry.path();
            let Some(id) =
                path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<TrackId>().ok())
            else {
                continue;
            };
            {
                let mut ix = self.lock();
                if ix.tracks.contains_key(&id) || !ix.loading.insert(id) {
                    continue;
                }
            }
            let entry = load_entry(&path, &id);
            self.loaded_entry(&id, entry);
        }
        // What was stored meanwhile may have taken the total past the
        // bound: back within it before anyone sees the scan done.
        self.evict_until(None, 0);
        self.lock().scanning = false;
        self.loaded.notify_all();
    }

    /// Evicts least recently used tracks (not `keep`) until `incoming`
    /// more bytes fit. Not while the scan runs: the total is not known
    /// yet, and a chunk stored meanwhile must not wait for it (a fetch
    /// lands hundreds a second); the scan evicts when it ends.
    fn make_room(&self, keep: Option<&TrackId>, incoming: u64) {
        if !self.lock().scanning {
            self.evict_until(keep, incoming);
        }
    }

    /// The eviction loop of [`Self::make_room`].
    fn evict_until(&self, keep: Option<&TrackId>, incoming: u64) {
        loop {
            let victim = {
                let ix = self.lock();
                if ix.total + incoming <= self.max_bytes {
                    return;
                }
                ix.tracks
                    .iter()
                    .filter(|(id, t)| Some(*id) != keep && t.bytes > 0)
                    .min_by_key(|(_, t)| t.last_used)
                    .map(|(id, _)| *id)
            };
            let Some(victim) = victim else { return };
            self.evict(&victim);
        }
    }

    fn evict(&self, id: &TrackId) {
        let _ = fs::remove_dir_all(self.track_dir(id));
        let mut ix = self.lock();
        if let Some(t) = ix.tracks.remove(id) {
            ix.total -= t.bytes;
            tracing::debug!("cache: evicted {} ({} bytes)", id.fmt_short(), t.bytes);
        }
    }
}

/// The manifests of the tracks `ix` holds whole.
fn complete(ix: &Index) -> Vec<Manifest> {
    ix.tracks
        .values()
        .filter(|t| t.have.iter().all(|h| *h) && t.manifest.hashes_known())
        .map(|t| t.manifest.clone())
        .collect()
}

/// Whether `t` holds what a start at `at` needs: the chunks its header
/// ranges cover and the chunk at `at`.
fn holds_start(t: &CachedTrack, at: Duration) -> bool {
    let (m, layout) = (&t.manifest, t.manifest.layout());
    let has = |i: ChunkIndex| t.have.get(i.0 as usize).copied().unwrap_or(false);
    let headers = m.media().header_ranges.iter().filter(|r| r.start < r.end).all(|r| {
        match (layout.chunk_at(r.start), layout.chunk_at(r.end - 1)) {
            (Some(a), Some(b)) => (a.0..=b.0).all(|i| has(ChunkIndex(i))),
            _ => false,
        }
    });
    headers && has(m.chunk_at_time(at))
}

/// Reads one track's entry: its manifest, hash list and which chunk files
/// it holds. An entry that does not check out is removed (None), as are
/// temp files left by writes that did not finish.
fn load_entry(path: &Path, id: &TrackId) -> Option<CachedTrack> {
    let manifest = fs::read(path.join("manifest"))
        .ok()
        .and_then(|b| Manifest::decode_verified(Bytes::from(b), *id).ok());
    let Some(manifest) = manifest else {
        tracing::warn!("removing unreadable cache entry {}", path.display());
        let _ = fs::remove_dir_all(path);
        return None;
    };
    // Its hash list, without which no chunk can be checked: missing when
    // the play that made the entry ended before the list came.
    let list = fs::read(path.join(HASHES_FILE)).unwrap_or_default();
    if manifest.learn_hashes(0, &list).is_err() || !manifest.hashes_known() {
        tracing::debug!("removing cache entry without its hash list {}", path.display());
        let _ = fs::remove_dir_all(path);
        return None;
    }
    let layout = *manifest.layout();
    let mut have = vec![false; layout.count() as usize];
    let mut bytes = 0;
    for f in fs::read_dir(path).into_iter().flatten().flatten() {
        let name = f.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
            // Left by a write that did not finish.
            let _ = fs::remove_file(f.path());
            continue;
        }
        let Some(i) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let ok = layout
            .index(i)
            .is_ok_and(|idx| f.metadata().is_ok_and(|m| m.len() == layout.chunk_len(idx)));
        if ok {
            have[i as usize] = true;
            bytes += layout.chunk_len(ChunkIndex(i));
        } else {
            let _ = fs::remove_file(f.path());
        }
    }
    Some(CachedTrack { manifest, listed: true, have, bytes, last_used: 0 })
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let result = fs::write(&tmp, data)
        .map_err(|e| io("writing cache", &tmp, e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io("writing cache", path, e)));
    if result.is_err() {
        // A full disk leaves a partial temp file: it must not stay.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::{ChunkLayout, ChunkSize, Codec, Container, MediaInfo, Tags, chunk};

    fn track(seed: u8, len: usize) -> (Manifest, Vec<Bytes>) {
        let data = Bytes::from(
            (0..len as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed)
                .collect::<Vec<_>>(),
        );
        let layout = ChunkLayout::new(len as u64, ChunkSize::new(1024).unwrap()).unwrap();
        let (hashes, chunks) = chunk::chunk_bytes(&data, &layout).unwrap();
        let media = MediaInfo {
            codec: Codec::Pcm,
            container: Container::Wav,
            sample_rate: 8000,
            channels: 1,
            frames: len as u64,
            header_ranges: vec![],
            time_index: vec![],
            tags: Tags { title: Some(format!("t{seed}")), ..Tags::default() },
        };
        (Manifest::new(media, layout, hashes).unwrap(), chunks)
    }

    #[test]
    fn a_track_is_kept_across_a_reopen_only_with_its_whole_hash_list() {
        let dir = tempfile::tempdir().unwrap();
        // 80 chunks: two pages of the hash list.
        let (full, chunks) = track(5, 80 * 1024);
        let m = Manifest::decode(full.encoded().clone()).unwrap();
        let page0 = full.hash_pages(0..1).unwrap();
        m.learn_hashes(0, &page0).unwrap();
        {
            let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
            c.put_manifest(&m).unwrap();
            // A chunk checked with the first page is kept, but the track
            // is not offered to others before its list is whole.
            c.put_chunk(&m.verify(ChunkIndex(0), chunks[0].clone()).unwrap()).unwrap();
            assert!(c.manifest(&m.id()).is_none());
        }
        // Reopened with no list on disk: nothing could check its chunks.
        let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        assert!(c.get_chunk(&m.id(), ChunkIndex(0)).is_none());
        c.put_manifest(&m).unwrap();
        c.put_chunk(&m.verify(ChunkIndex(0), chunks[0].clone()).unwrap()).unwrap();
        m.learn_hashes(1, &full.hash_pages(1..2).unwrap()).unwrap();
        // The next chunk stored writes the list, now whole.
        c.put_chunk(&m.verify(ChunkIndex(70), chunks[70].clone()).unwrap()).unwrap();
        assert!(c.manifest(&m.id()).is_some());
        drop(c);
        let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        assert!(c.manifest(&m.id()).is_some_and(|m| m.hashes_known()));
        assert_eq!(c.get_chunk(&m.id(), ChunkIndex(70)).unwrap().data(), &chunks[70]);
        assert!(c.get_chunk(&m.id(), ChunkIndex(0)).is_some());
    }

    #[test]
    fn a_track_asked_for_before_the_scan_reads_only_its_own_entry() {
        let dir = tempfile::tempdir().unwrap();
        let tracks: Vec<_> = (0..3).map(|i| track(20 + i, 3 * 1024)).collect();
        {
            let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
            for (m, chunks) in &tracks {
                c.put_manifest(m).unwrap();
                for (i, ch) in chunks.iter().enumerate() {
                    c.put_chunk(&m.verify(ChunkIndex(i as u32), ch.clone()).unwrap()).unwrap();
                }
            }
        }
        // Opened with the scan not yet run (it runs on its own thread).
        let c = ChunkCache::open_unscanned(dir.path(), 1 << 20).unwrap();
        let (a, chunks) = &tracks[1];
        assert_eq!(c.have(&a.id()), vec![ChunkRun { start: 0, len: 3 }]);
        assert_eq!(c.get_chunk(&a.id(), ChunkIndex(2)).unwrap().data(), &chunks[2]);
        let read = |c: &ChunkCache| c.shared.lock().tracks.len();
        assert_eq!(read(&c), 1, "only the entry asked for was read");
        // A track that is not there: nothing to read, nothing kept.
        assert!(c.manifest(&TrackId::from_bytes([1; 32])).is_none());
        assert_eq!(read(&c), 1);
        // A track stored meanwhile does not wait for the scan, and the
        // scan does not read it again.
        let (d, dc) = track(30, 2 * 1024);
        c.put_manifest(&d).unwrap();
        c.put_chunk(&d.verify(ChunkIndex(0), dc[0].clone()).unwrap()).unwrap();
        c.shared.scan();
        assert_eq!(read(&c), 4);
        assert_eq!(c.total_bytes(), 9 * 1024 + 1024);
        assert_eq!(c.complete_tracks().len(), 3);
        assert_eq!(c.have(&d.id()), vec![ChunkRun { start: 0, len: 1 }]);
    }

    #[test]
    fn chunks_stored_during_the_scan_are_kept_in_bounds_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ca) = track(40, 3 * 1024);
        let (b, cb) = track(41, 3 * 1024);
        {
            let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
            for (m, chunks) in [(&a, &ca), (&b, &cb)] {
                c.put_manifest(m).unwrap();
                for (i, ch) in chunks.iter().enumerate() {
                    c.put_chunk(&m.verify(ChunkIndex(i as u32), ch.clone()).unwrap()).unwrap();
                }
            }
        }
        // Reopened at 6 KiB, full, the scan not yet run: a new chunk is
        // stored at once, past the bound.
        let c = ChunkCache::open_unscanned(dir.path(), 6 * 1024).unwrap();
        let (d, dc) = track(42, 1024);
        c.put_manifest(&d).unwrap();
        c.put_chunk(&d.verify(ChunkIndex(0), dc[0].clone()).unwrap()).unwrap();
        assert!(c.holds(&d.id(), ChunkIndex(0)));
        c.shared.scan();
        assert!(c.total_bytes() <= 6 * 1024);
        assert!(c.holds(&d.id(), ChunkIndex(0)), "the newest is kept");
        assert_eq!(c.complete_tracks().len(), 2, "one older track was evicted");
    }

    #[test]
    fn writes_handed_to_blocking_threads_are_done_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let (m, chunks) = track(50, 64 * 1024);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let c = Arc::new(ChunkCache::open(dir.path(), 1 << 20).unwrap());
        c.put_manifest(&m).unwrap();
        rt.block_on(async {
            for (i, ch) in chunks.iter().enumerate() {
                c.put_chunk_later(m.verify(ChunkIndex(i as u32), ch.clone()).unwrap());
            }
        });
        assert!(c.flush(Duration::from_secs(30)));
        assert!(c.is_complete(&m.id()), "every write was done before flush returned");
        drop(rt);
        let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(c.have(&m.id()), vec![ChunkRun { start: 0, len: 64 }]);
    }

    #[test]
    fn a_list_that_turns_whole_after_the_last_put_is_written_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let (full, chunks) = track(8, 80 * 1024);
        let m = Manifest::decode(full.encoded().clone()).unwrap();
        m.learn_hashes(0, &full.hash_pages(0..1).unwrap()).unwrap();
        {
            let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
            c.put_manifest(&m).unwrap();
            // A start response: its chunks first, the other pages behind.
            c.put_chunk(&m.verify(ChunkIndex(0), chunks[0].clone()).unwrap()).unwrap();
            m.learn_hashes(1, &full.hash_pages(1..2).unwrap()).unwrap();
            c.list_whole(&m.id());
            assert!(c.manifest(&m.id()).is_some());
        }
        let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        assert!(c.manifest(&m.id()).is_some_and(|m| m.hashes_known()));
        assert_eq!(c.get_chunk(&m.id(), ChunkIndex(0)).unwrap().data(), &chunks[0]);
    }

    #[test]
    fn chunks_put_from_many_threads_as_the_list_turns_whole_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (full, chunks) = track(7, 80 * 1024);
        let m = Manifest::decode(full.encoded().clone()).unwrap();
        m.learn_hashes(0, &full.hash_pages(0..1).unwrap()).unwrap();
        let c = std::sync::Arc::new(ChunkCache::open(dir.path(), 1 << 22).unwrap());
        c.put_manifest(&m).unwrap();
        m.learn_hashes(1, &full.hash_pages(1..2).unwrap()).unwrap();
        // Every thread's first put finds the list whole and unwritten: one
        // writes it, and none loses its chunk to another's write.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (c, m, chunks) = (c.clone(), m.clone(), chunks.clone());
                std::thread::spawn(move || {
                    for i in (t..80).step_by(8) {
                        let v = m.verify(ChunkIndex(i as u32), chunks[i].clone()).unwrap();
                        c.put_chunk(&v).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(c);
        let c = ChunkCache::open(dir.path(), 1 << 22).unwrap();
        for i in 0..80u32 {
            assert!(c.get_chunk(&m.id(), ChunkIndex(i)).is_some(), "chunk {i}");
        }
    }

    #[test]
    fn chunks_survive_a_reopen_and_are_verified_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let (m, chunks) = track(3, 5000);
        {
            let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
            c.put_manifest(&m).unwrap();
            assert!(
                m.verify(ChunkIndex(1), chunks[0].clone()).is_err(),
                "wrong bytes never verify"
            );
            for i in [0u32, 1, 3] {
                c.put_chunk(&m.verify(ChunkIndex(i), chunks[i as usize].clone()).unwrap()).unwrap();
            }
            assert_eq!(
                c.have(&m.id()),
                vec![ChunkRun { start: 0, len: 2 }, ChunkRun { start: 3, len: 1 }]
            );
        }
        let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            c.get_chunk(&m.id(), ChunkIndex(3)).map(|v| v.into_data()),
            Some(chunks[3].clone())
        );
        assert_eq!(c.total_bytes(), 3 * 1024);
        // Rot on disk: the chunk is dropped, not served.
        let path = dir.path().join(m.id().to_string()).join("0");
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert_eq!(c.get_chunk(&m.id(), ChunkIndex(0)), None);
        assert!(!path.exists());
        assert_eq!(
            c.have(&m.id()),
            vec![ChunkRun { start: 1, len: 1 }, ChunkRun { start: 3, len: 1 }]
        );
    }

    #[test]
    fn least_recently_used_tracks_are_evicted_to_stay_in_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let c = ChunkCache::open(dir.path(), 6 * 1024).unwrap();
        let (a, ca) = track(3, 3 * 1024);
        let (b, cb) = track(5, 3 * 1024);
        let (d, cd) = track(7, 3 * 1024);
        for (m, chunks) in [(&a, &ca), (&b, &cb)] {
            c.put_manifest(m).unwrap();
            for (i, ch) in chunks.iter().enumerate() {
                c.put_chunk(&m.verify(ChunkIndex(i as u32), ch.clone()).unwrap()).unwrap();
            }
        }
        // Touch a, so b is the least recently used.
        assert!(c.get_chunk(&a.id(), ChunkIndex(0)).is_some());
        c.put_manifest(&d).unwrap();
        c.put_chunk(&d.verify(ChunkIndex(0), cd[0].clone()).unwrap()).unwrap();
        assert!(c.total_bytes() <= 6 * 1024);
        assert!(c.is_complete(&a.id()));
        assert!(c.manifest(&b.id()).is_none(), "b was evicted");
        assert!(!dir.path().join(b.id().to_string()).exists());
    }

    #[test]
    fn temp_files_left_by_failed_writes_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (m, chunks) = track(4, 3000);
        {
            let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
            c.put_manifest(&m).unwrap();
            c.put_chunk(&m.verify(ChunkIndex(0), chunks[0].clone()).unwrap()).unwrap();
        }
        let entry = dir.path().join(m.id().to_string());
        fs::write(entry.join("1.tmp"), b"half a chunk").unwrap();
        fs::write(entry.join("manifest.tmp"), b"half a manifest").unwrap();
        fs::write(entry.join("notes"), b"not ours to judge").unwrap();
        let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        // Read by the scan, or at once when asked for.
        assert_eq!(c.have(&m.id()), vec![ChunkRun { start: 0, len: 1 }]);
        assert!(!entry.join("1.tmp").exists() && !entry.join("manifest.tmp").exists());
        assert!(entry.join("notes").exists(), "only temp files are removed");
        assert!(c.stores());
    }

    #[test]
    fn a_disabled_cache_stores_nothing_and_says_so() {
        let (m, chunks) = track(6, 2000);
        let c = ChunkCache::disabled();
        assert!(!c.stores());
        c.put_manifest(&m).unwrap();
        c.put_chunk(&m.verify(ChunkIndex(0), chunks[0].clone()).unwrap()).unwrap();
        assert!(c.manifest(&m.id()).is_none());
        assert_eq!(c.total_bytes(), 0);
    }

    #[test]
    fn a_garbage_entry_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let id = TrackId::from_bytes([9; 32]);
        fs::create_dir_all(dir.path().join(id.to_string())).unwrap();
        fs::write(dir.path().join(id.to_string()).join("manifest"), b"junk").unwrap();
        let c = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        assert!(c.manifest(&id).is_none());
        assert!(!dir.path().join(id.to_string()).exists());
    }
}
