//! The verified chunk store of one track, shared by the fetcher (async,
//! inserts) and the decoder's reader (a blocking thread, reads).
//!
//! Only chunks that match the manifest's hashes get in: [`TrackStore::insert`]
//! takes a [`VerifiedChunk`], which only `Manifest::verify` makes. A read of a missing chunk marks it urgent, wakes the fetcher
//! and blocks until the chunk arrives, the store is closed, or the fetcher
//! gives up ([`TrackStore::fail`]); it never hands out unverified bytes.
//!
//! Memory is bounded when the store has a cache to spill to
//! ([`TrackStore::with_cache`]): at most [`MEMORY_WINDOW`] bytes of chunks
//! stay in memory; those farthest from the reader are dropped once the
//! cache holds them, and read back (verified again) when the reader comes
//! back to them. A chunk the cache has lost meanwhile is reported to the
//! fetcher ([`TrackStore::take_lost`]) and fetched again.
//!
//! Locking: one `std::sync::Mutex` held only for bookkeeping (no await while
//! held; the cache's own lock may be taken inside it, never the other way
//! round); disk reads happen outside it. The reader waits on a `Condvar`,
//! the fetcher on a `tokio::sync::Notify`.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::sync::Arc;

use bytes::Bytes;
use chorus_protocol::groups::VerifiedPart;
use chorus_protocol::{ChunkIndex, Manifest, ProtocolError, VerifiedChunk};

use crate::cache::ChunkCache;

/// Chunk bytes a store with a cache keeps in memory: 8 MiB is over three
/// minutes of 320 kb/s audio and a minute of lossless, around the reader;
/// the rest lives in the cache files. (Without a cache, the whole track
/// stays in memory: it has nowhere else to be.)
pub const MEMORY_WINDOW: u64 = 8 * 1024 * 1024;

/// Why a blocking read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The fetcher gave up: no peer can serve the chunk.
    #[error("{0}")]
    Failed(String),
    /// The store was closed (playback stopped).
    #[error("playback stopped")]
    Closed,
    /// The chunk did not arrive within the wait limit.
    #[error("chunk {0} did not arrive in time")]
    TimedOut(u32),
}

#[derive(Debug)]
struct Inner {
    chunks: Vec<Option<Bytes>>,
    /// Checked groups of chunks still arriving, in order from the chunk's
    /// start ([`TrackStore::insert_part`]); dropped when the chunk is in.
    parts: Vec<(u32, Vec<Bytes>)>,
    /// Checked parts past the end of those (a chunk's tail from another
    /// peer): chunk, offset, bytes. They join `parts` once the bytes
    /// before them are in; a part inside one held is not kept twice.
    ahead: Vec<(u32, usize, Bytes)>,
    /// Present, but only in the cache (dropped from memory).
    spilled: Vec<bool>,
    /// Bytes of `chunks` held in memory.
    held: u64,
    /// Spilled chunks the cache no longer had: for the fetcher.
    lost: Vec<u32>,
    present: u32,
    urgent: VecDeque<u32>,
    /// The chunk the reader read last: where the playhead's data is.
    cursor: u32,
    /// Chunks to fetch next because a seek is coming (from the time index).
    hint: Option<u32>,
    failed: Option<String>,
    closed: bool,
}

/// Copies from the checked parts of chunk `index` at `within` into `buf`:
/// `None` if those bytes are not in yet.
fn read_part(
    parts: &[(u32, Vec<Bytes>)],
    index: u32,
    within: usize,
    buf: &mut [u8],
) -> Option<usize> {
    let (_, groups) = parts.iter().find(|(c, _)| *c == index)?;
    let mut start = 0;
    for g in groups {
        if within < start + g.len() {
            let at = within - start;
            let n = buf.len().min(g.len() - at);
            buf[..n].copy_from_slice(&g[at..at + n]);
            return Some(n);
        }
        start += g.len();
    }
    None
}

/// One track's verified chunks.
#[derive(Debug)]
pub struct TrackStore {
    manifest: Manifest,
    /// Where chunks beyond the memory window live, and the window.
    spill: Option<(Arc<ChunkCache>, u64)>,
    inner: Mutex<Inner>,
    arrived: Condvar,
    wake_fetcher: tokio::sync::Notify,
}

impl TrackStore {
    /// An empty store for `manifest`'s track.
    pub fn new(manifest: Manifest) -> Self {
        Self::build(manifest, None)
    }

    /// An empty store that keeps at most `window` bytes of chunks in
    /// memory and the rest in `cache` (when the cache stores anything).
    pub fn with_cache(manifest: Manifest, cache: Arc<ChunkCache>, window: u64) -> Self {
        let spill = cache.stores().then_some((cache, window));
        Self::build(manifest, spill)
    }

    fn build(manifest: Manifest, spill: Option<(Arc<ChunkCache>, u64)>) -> Self {
        let n = manifest.layout().count() as usize;
        Self {
            manifest,
            spill,
            inner: Mutex::new(Inner {
                chunks: vec![None; n],
                parts: Vec::new(),
                ahead: Vec::new(),
                spilled: vec![false; n],
                held: 0,
                lost: Vec::new(),
                present: 0,
                urgent: VecDeque::new(),
                cursor: 0,
                hint: None,
                failed: None,
                closed: false,
            }),
            arrived: Condvar::new(),
            wake_fetcher: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the bookkeeping
        // half-updated in a way that matters (every update is one field
        // write), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Stores a verified chunk of this track. Returns `Ok(true)` if it was
    /// new. (The type guarantees the hash was checked; only the track is.)
    pub fn insert(&self, chunk: VerifiedChunk) -> Result<bool, ProtocolError> {
        if chunk.track() != self.manifest.id() {
            return Err(ProtocolError::TrackIdMismatch {
                expected: self.manifest.id(),
                actual: chunk.track(),
            });
        }
        let index = chunk.index();
        let data = chunk.into_data();
        let mut inner = self.lock();
        let i = index.as_usize();
        if inner.chunks[i].is_some() || inner.spilled[i] {
            return Ok(false);
        }
        inner.held += data.len() as u64;
        inner.chunks[i] = Some(data);
        inner.present += 1;
        inner.urgent.retain(|&u| u != index.0);
        inner.parts.retain(|(c, _)| *c != index.0);
        inner.ahead.retain(|(c, _, _)| *c != index.0);
        self.trim(&mut inner);
        drop(inner);
        self.arrived.notify_all();
        Ok(true)
    }

    /// Stores checked bytes of a chunk still arriving, so a reader waiting
    /// on it goes on before the chunk is whole. What is readable runs from
    /// the chunk's start: a part that overlaps its end adds what is new,
    /// and a part past its end (the chunk's tail, from another peer) is
    /// held until the bytes before it come. Returns the bytes of the chunk
    /// readable from its start (0 once the chunk is whole here).
    pub fn insert_part(&self, part: &VerifiedPart) -> Result<u64, ProtocolError> {
        if part.track() != self.manifest.id() {
            return Err(ProtocolError::TrackIdMismatch {
                expected: self.manifest.id(),
                actual: part.track(),
            });
        }
        let index = part.index().0;
        let mut inner = self.lock();
        let i = index as usize;
        if inner.chunks.get(i).is_none_or(Option::is_some) || inner.spilled[i] {
            return Ok(0);
        }
        let pos = match inner.parts.iter().position(|(c, _)| *c == index) {
            Some(pos) => pos,
            None => {
                inner.parts.push((index, Vec::new()));
                inner.parts.len() - 1
            }
        };
        let Inner { parts, ahead, .. } = &mut *inner;
        let groups = &mut parts[pos].1;
        let mut have: usize = groups.iter().map(Bytes::len).sum();
        let (start, data) = (part.offset(), part.data());
        if start > have {
            let end = start + data.len();
            let held =
                ahead.iter().any(|(c, s, b)| *c == index && *s <= start && s + b.len() >= end);
            if !held {
                ahead.push((index, start, data.clone()));
            }
            return Ok(have as u64);
        }
        // A part that starts where the bytes here end, or overlaps their
        // end (another peer's copy of the chunk, after the first one's
        // reply broke off: checked against the same hash, so the same
        // bytes), adds what is new; so do the held parts it reaches.
        let before = have;
        let mut next = Some((start, data.clone()));
        while let Some((start, data)) = next.take() {
            if start + data.len() > have {
                groups.push(data.slice(have - start..));
                have = start + data.len();
            }
            if let Some(pos) = ahead.iter().position(|(c, s, _)| *c == index && *s <= have) {
                let (_, s, b) = ahead.swap_remove(pos);
                next = Some((s, b));
            }
        }
        drop(inner);
        if have > before {
            self.arrived.notify_all();
        }
        Ok(have as u64)
    }

    /// Records chunks the cache holds as present without reading them (a
    /// replay): they are read from the cache when the reader gets there.
    /// Returns their bytes. Without a cache to spill to, does nothing.
    pub fn adopt_cached(&self, chunks: impl IntoIterator<Item = u32>) -> u64 {
        if self.spill.is_none() {
            return 0;
        }
        let layout = *self.manifest.layout();
        let mut inner = self.lock();
        let mut bytes = 0;
        for c in chunks {
            let Ok(index) = layout.index(c) else { continue };
            let i = index.as_usize();
            if inner.chunks[i].is_none() && !inner.spilled[i] {
                inner.spilled[i] = true;
                inner.present += 1;
                bytes += layout.chunk_len(index);
            }
        }
        drop(inner);
        self.arrived.notify_all();
        bytes
    }

    /// Keeps the bytes in memory within the window: the chunks farthest
    /// from the reader go first, and only those the cache holds.
    fn trim(&self, inner: &mut Inner) {
        let Some((cache, window)) = &self.spill else { return };
        if inner.held <= *window {
            return;
        }
        let id = self.manifest.id();
        let cursor = inner.cursor;
        let mut candidates: Vec<u32> = (0..inner.chunks.len() as u32)
            .filter(|&c| inner.chunks[c as usize].is_some() && c.abs_diff(cursor) > 1)
            .collect();
        candidates.sort_by_key(|&c| std::cmp::Reverse(c.abs_diff(cursor)));
        // Down to three quarters, so trimming is not redone every insert.
        for c in candidates {
            if inner.held <= window - window / 4 {
                break;
            }
            if cache.holds(&id, ChunkIndex(c)) {
                if let Some(data) = inner.chunks[c as usize].take() {
                    inner.held -= data.len() as u64;
                    inner.spilled[c as usize] = true;
                }
            }
        }
    }

    /// Chunk bytes held in memory now.
    pub fn held_bytes(&self) -> u64 {
        self.lock().held
    }

    /// Chunks that were present but that the cache lost (evicted, or rot):
    /// they are missing again and must be fetched again.
    pub fn take_lost(&self) -> Vec<u32> {
        std::mem::take(&mut self.lock().lost)
    }

    /// True if the chunk is present (in memory or in the cache).
    pub fn has(&self, index: u32) -> bool {
        let inner = self.lock();
        let i = index as usize;
        inner.chunks.get(i).is_some_and(Option::is_some) || inner.spilled.get(i) == Some(&true)
    }

    /// Chunks present.
    pub fn present(&self) -> u32 {
        self.lock().present
    }

    /// True if every chunk still missing lies before the reader (what
    /// playback skipped: an MP3's leading tag, what a seek jumped over),
    /// and some is missing.
    pub fn missing_only_behind(&self) -> bool {
        let inner = self.lock();
        let here = |i: usize| inner.chunks[i].is_some() || inner.spilled[i];
        let cursor = inner.cursor as usize;
        let n = inner.chunks.len();
        (cursor..n).all(here) && !(0..cursor).all(here)
    }

    /// True when every chunk is here.
    pub fn is_complete(&self) -> bool {
        self.present() == self.manifest.layout().count()
    }

    /// Reads bytes at `offset` into `buf`, waiting up to `wait` for a missing
    /// chunk (marking it urgent). Returns the number of bytes copied (0 at
    /// the end of the track).
    pub fn read_at(&self, offset: u64, buf: &mut [u8], wait: Duration) -> Result<usize, ReadError> {
        let layout = *self.manifest.layout();
        let Some(index) = layout.chunk_at(offset) else { return Ok(0) };
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        // Header bytes are read wherever playback is (a reader opened for a
        // seek reads the stream's header first): they do not move it.
        if !self.manifest.is_header_chunk(index) {
            inner.cursor = index.0;
        }
        loop {
            if inner.spilled[index.as_usize()] {
                inner = self.unspill(inner, index);
            }
            let within = (offset - layout.byte_range(index).start) as usize;
            if let Some(data) = &inner.chunks[index.as_usize()] {
                let n = buf.len().min(data.len() - within);
                buf[..n].copy_from_slice(&data[within..within + n]);
                return Ok(n);
            }
            if let Some(n) = read_part(&inner.parts, index.0, within, buf) {
                return Ok(n);
            }
            if let Some(reason) = &inner.failed {
                return Err(ReadError::Failed(reason.clone()));
            }
            if inner.closed {
                return Err(ReadError::Closed);
            }
            if !inner.urgent.contains(&index.0) {
                inner.urgent.push_back(index.0);
                self.wake_fetcher.notify_one();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadError::TimedOut(index.0));
            }
            inner = self
                .arrived
                .wait_timeout(inner, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Reads a spilled chunk back from the cache (outside the lock). A
    /// chunk the cache no longer has is missing again: reported lost.
    fn unspill<'a>(
        &'a self,
        inner: MutexGuard<'a, Inner>,
        index: ChunkIndex,
    ) -> MutexGuard<'a, Inner> {
        let Some((cache, _)) = &self.spill else { return inner };
        drop(inner);
        let chunk = cache.get_chunk(&self.manifest.id(), index);
        let mut inner = self.lock();
        let i = index.as_usize();
        if !inner.spilled[i] {
            return inner;
        }
        inner.spilled[i] = false;
        match chunk {
            Some(c) => {
                let data = c.into_data();
                inner.held += data.len() as u64;
                inner.chunks[i] = Some(data);
                self.trim(&mut inner);
            }
            None => {
                inner.present -= 1;
                inner.lost.push(index.0);
                self.wake_fetcher.notify_one();
            }
        }
        inner
    }

    /// Tells the fetcher that a seek to `chunk` is coming.
    pub fn hint(&self, chunk: ChunkIndex) {
        let mut inner = self.lock();
        inner.hint = Some(chunk.0);
        // The reader goes there next (a demuxer scanning toward it moves
        // the cursor back as it reads): the old place is behind it.
        inner.cursor = chunk.0;
        drop(inner);
        self.wake_fetcher.notify_one();
    }

    /// The fetcher gives up: every blocked and future read of a missing chunk
    /// fails with `reason`.
    pub fn fail(&self, reason: String) {
        self.lock().failed = Some(reason);
        self.arrived.notify_all();
    }

    /// Playback is over: wakes and fails any blocked read, stops the fetcher.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
        self.wake_fetcher.notify_one();
    }

    /// True once closed or failed.
    pub fn is_closed(&self) -> bool {
        let inner = self.lock();
        inner.closed || inner.failed.is_some()
    }

    /// Waits until a reader needs something (or a short while passes).
    pub async fn wait_for_need(&self) {
        self.wake_fetcher.notified().await;
    }

    /// Chunks a reader is blocked on (oldest first), and the seek target
    /// hint if any.
    pub fn blocked(&self) -> Vec<u32> {
        let inner = self.lock();
        inner
            .urgent
            .iter()
            .copied()
            .filter(|&u| inner.chunks[u as usize].is_none() && !inner.spilled[u as usize])
            .chain(inner.hint)
            .collect()
    }

    /// The reader's current chunk.
    pub fn cursor(&self) -> u32 {
        self.lock().cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::{ChunkLayout, ChunkSize, Codec, Container, MediaInfo, Tags, chunk};
    use std::sync::Arc;

    fn store(len: usize, header: std::ops::Range<u64>) -> (Arc<TrackStore>, Vec<Bytes>) {
        store_of(len, 1024, header)
    }

    fn store_of(
        len: usize,
        chunk_size: u32,
        header: std::ops::Range<u64>,
    ) -> (Arc<TrackStore>, Vec<Bytes>) {
        let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let layout = ChunkLayout::new(len as u64, ChunkSize::new(chunk_size).unwrap()).unwrap();
        let (hashes, chunks) = chunk::chunk_bytes(&data, &layout).unwrap();
        let media = MediaInfo {
            codec: Codec::Pcm,
            container: Container::Wav,
            sample_rate: 8000,
            channels: 1,
            frames: len as u64,
            header_ranges: vec![header],
            time_index: vec![],
            tags: Tags::default(),
        };
        (Arc::new(TrackStore::new(Manifest::new(media, layout, hashes).unwrap())), chunks)
    }

    #[test]
    fn only_verified_chunks_get_in() {
        let (s, chunks) = store(4096, 0..10);
        let m = s.manifest().clone();
        assert!(m.verify(ChunkIndex(1), Bytes::from_static(&[0u8; 1024])).is_err());
        assert!(!s.has(1));
        assert!(s.insert(m.verify(ChunkIndex(1), chunks[1].clone()).unwrap()).unwrap());
        assert!(!s.insert(m.verify(ChunkIndex(1), chunks[1].clone()).unwrap()).unwrap());
        assert_eq!(s.present(), 1);
    }

    /// The checked parts of `data` (chunk `index` of `s`'s track) that a
    /// receiver hands out when the bytes come in `pieces`.
    fn parts_of(s: &TrackStore, index: u32, data: &Bytes, pieces: &[usize]) -> Vec<VerifiedPart> {
        let m = s.manifest();
        let groups = chorus_protocol::groups::group_hashes(data);
        let mut r = m.receive_chunk(ChunkIndex(index), data.len(), &groups).unwrap();
        let mut at = 0;
        let mut parts = Vec::new();
        for &n in pieces {
            parts.extend(r.push(data.slice(at..at + n)).unwrap());
            at += n;
        }
        parts
    }

    #[test]
    fn parts_of_a_chunk_are_read_before_it_is_whole_from_either_peer() {
        let (s, chunks) = store_of(64 * 1024, 16 * 1024, 0..10);
        let at = 16 * 1024;
        // One peer's reply: the first two groups, then it broke off.
        let a = parts_of(&s, 1, &chunks[1], &[4096, 4096]);
        assert_eq!(a.len(), 2);
        assert_eq!(s.insert_part(&a[0]).unwrap(), 4096);
        assert_eq!(s.insert_part(&a[0]).unwrap(), 4096, "the same part again adds nothing");
        assert_eq!(s.insert_part(&a[1]).unwrap(), 8192);
        let mut buf = [0u8; 100];
        assert_eq!(s.read_at(at + 8000, &mut buf, Duration::ZERO), Ok(100));
        assert_eq!(&buf[..], &chunks[1][8000..8100]);
        assert!(s.read_at(at + 8192, &mut buf, Duration::ZERO).is_err(), "not here yet");
        // Another peer's copy: its first part (three groups) overlaps what
        // is here and adds the third; its last part follows on.
        let b = parts_of(&s, 1, &chunks[1], &[12288, 4096]);
        assert_eq!(s.insert_part(&b[0]).unwrap(), 12288);
        assert_eq!(s.insert_part(&b[1]).unwrap(), 16384);
        let mut all = vec![0u8; 16 * 1024];
        let mut got = 0;
        while got < all.len() {
            got += s.read_at(at + got as u64, &mut all[got..], Duration::ZERO).unwrap();
        }
        assert_eq!(&all[..], &chunks[1][..]);
        // A part past the end of what is here (a tail another peer sends)
        // waits for the bytes before it, then counts with them.
        let c = parts_of(&s, 2, &chunks[2], &[4096, 4096, 4096, 4096]);
        assert_eq!(s.insert_part(&c[3]).unwrap(), 0);
        assert_eq!(s.insert_part(&c[3]).unwrap(), 0, "held once");
        assert!(s.read_at(2 * at + 12288, &mut buf, Duration::ZERO).is_err(), "not readable yet");
        assert_eq!(s.insert_part(&c[0]).unwrap(), 4096);
        assert_eq!(s.insert_part(&c[1]).unwrap(), 8192);
        assert_eq!(s.insert_part(&c[2]).unwrap(), 16384, "the held tail joins");
        let mut all = vec![0u8; 16 * 1024];
        let mut got = 0;
        while got < all.len() {
            got += s.read_at(2 * at + got as u64, &mut all[got..], Duration::ZERO).unwrap();
        }
        assert_eq!(&all[..], &chunks[2][..]);
        // The whole chunk replaces its parts.
        let m = s.manifest().clone();
        assert!(s.insert(m.verify(ChunkIndex(1), chunks[1].clone()).unwrap()).unwrap());
        assert_eq!(s.insert_part(&a[0]).unwrap(), 0, "a part of a chunk here is left out");
    }

    #[test]
    fn reading_header_bytes_does_not_move_the_cursor() {
        // A reader opened for a seek reads the header (chunk 0) after the
        // bytes at the target (chunk 3): the fetch still sees it at 3.
        let (s, chunks) = store(4096, 0..10);
        let m = s.manifest().clone();
        for i in [0, 3] {
            s.insert(m.verify(ChunkIndex(i), chunks[i as usize].clone()).unwrap()).unwrap();
        }
        let mut buf = [0u8; 4];
        s.read_at(3 * 1024, &mut buf, Duration::ZERO).unwrap();
        assert_eq!(s.cursor(), 3);
        s.read_at(0, &mut buf, Duration::ZERO).unwrap();
        assert_eq!(s.cursor(), 3, "a header read leaves the reader where it was");
    }

    #[test]
    fn only_chunks_behind_the_reader_missing_is_told_apart() {
        let (s, chunks) = store(4096, 0..10);
        let m = s.manifest().clone();
        let mut buf = [0u8; 4];
        for i in [1, 2] {
            s.insert(m.verify(ChunkIndex(i), chunks[i as usize].clone()).unwrap()).unwrap();
        }
        s.read_at(1024, &mut buf, Duration::ZERO).unwrap();
        assert!(!s.missing_only_behind(), "chunk 3, ahead of the reader, is missing");
        s.insert(m.verify(ChunkIndex(3), chunks[3].clone()).unwrap()).unwrap();
        assert!(s.missing_only_behind(), "only chunk 0, behind it, is missing");
        s.insert(m.verify(ChunkIndex(0), chunks[0].clone()).unwrap()).unwrap();
        assert!(!s.missing_only_behind(), "nothing is missing");
    }

    #[test]
    fn a_blocked_read_is_reported_and_wakes_on_arrival() {
        let (s, chunks) = store(4096, 3000..3010);
        let reader = {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 100];
                s.read_at(2100, &mut buf, Duration::from_secs(30)).map(|n| buf[..n].to_vec())
            })
        };
        // The reader's chunk shows up as blocked, for the scheduler.
        let mut blocked = Vec::new();
        for _ in 0..1000 {
            blocked = s.blocked();
            if blocked == [2] {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(blocked, [2]);
        s.insert(s.manifest().verify(ChunkIndex(2), chunks[2].clone()).unwrap()).unwrap();
        let got = reader.join().unwrap().unwrap();
        assert_eq!(got, chunks[2][52..152].to_vec());
        assert!(s.blocked().is_empty());
    }

    #[test]
    fn with_a_cache_memory_stays_in_the_window_and_spilled_chunks_read_back() {
        let (s0, chunks) = store(16 * 1024, 0..10);
        let m = s0.manifest().clone();
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ChunkCache::open(dir.path(), 1 << 20).unwrap());
        cache.put_manifest(&m).unwrap();
        let s = TrackStore::with_cache(m.clone(), cache.clone(), 4 * 1024);
        let mut most = 0;
        for (i, c) in chunks.iter().enumerate() {
            let v = m.verify(ChunkIndex(i as u32), c.clone()).unwrap();
            cache.put_chunk(&v).unwrap();
            s.insert(v).unwrap();
            most = most.max(s.held_bytes());
        }
        assert!(most <= 4 * 1024, "held {most} bytes, window 4096");
        assert!(s.is_complete() && (0..16).all(|i| s.has(i)));
        // The reader goes back to the start: read from the cache, verified.
        let mut buf = [0u8; 1024];
        assert_eq!(s.read_at(0, &mut buf, Duration::from_secs(1)), Ok(1024));
        assert_eq!(&buf[..], &chunks[0][..]);
        assert!(s.held_bytes() <= 4 * 1024);
        // A chunk the cache lost is missing again, and the fetcher is told.
        let gone = (1..16).find(|&i| s.lock().chunks[i as usize].is_none()).unwrap();
        std::fs::remove_file(dir.path().join(m.id().to_string()).join(gone.to_string())).unwrap();
        let offset = u64::from(gone) * 1024;
        assert_eq!(
            s.read_at(offset, &mut buf, Duration::from_millis(20)),
            Err(ReadError::TimedOut(gone))
        );
        assert_eq!(s.take_lost(), vec![gone]);
        assert!(!s.has(gone) && s.blocked().contains(&gone));
    }

    #[test]
    fn a_replay_adopts_cached_chunks_without_reading_them() {
        let (s0, chunks) = store(8 * 1024, 0..10);
        let m = s0.manifest().clone();
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ChunkCache::open(dir.path(), 1 << 20).unwrap());
        cache.put_manifest(&m).unwrap();
        for (i, c) in chunks.iter().enumerate() {
            cache.put_chunk(&m.verify(ChunkIndex(i as u32), c.clone()).unwrap()).unwrap();
        }
        let s = TrackStore::with_cache(m, cache, 2 * 1024);
        assert_eq!(s.adopt_cached(0..8), 8 * 1024);
        assert!(s.is_complete());
        assert_eq!(s.held_bytes(), 0, "nothing read yet");
        let mut buf = [0u8; 1024];
        assert_eq!(s.read_at(5 * 1024, &mut buf, Duration::from_secs(1)), Ok(1024));
        assert_eq!(&buf[..], &chunks[5][..]);
    }

    #[test]
    fn failure_and_close_unblock_readers() {
        let (s, _) = store(4096, 0..10);
        let r = {
            let s = s.clone();
            std::thread::spawn(move || s.read_at(0, &mut [0u8; 10], Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(20));
        s.fail("no peer can serve chunk 0".into());
        assert_eq!(r.join().unwrap(), Err(ReadError::Failed("no peer can serve chunk 0".into())));
        let (s, _) = store(4096, 0..10);
        s.close();
        assert_eq!(s.read_at(0, &mut [0u8; 10], Duration::from_secs(30)), Err(ReadError::Closed));
        assert_eq!(
            store(4096, 0..10).0.read_at(0, &mut [0u8; 10], Duration::from_millis(10)),
            Err(ReadError::TimedOut(0))
        );
    }
}
