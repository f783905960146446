//! The verified chunk store of one track, shared by the fetcher (async,
//! inserts) and the decoder's reader (a blocking thread, reads).
//!
//! Only chunks that match the manifest's hashes get in: [`TrackStore::insert`]
//! takes a [`VerifiedChunk`], which only `Manifest::verify` makes. A read of a missing chunk marks it urgent, wakes the fetcher
//! and blocks until the chunk arrives, the store is closed, or the fetcher
//! gives up ([`TrackStore::fail`]); it never hands out unverified bytes.
//!
//! Locking: one `std::sync::Mutex` held only for bookkeeping (no I/O, no
//! await while held); the reader waits on a `Condvar`, the fetcher on a
//! `tokio::sync::Notify`.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::{ChunkIndex, Manifest, ProtocolError, VerifiedChunk};

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
    present: u32,
    urgent: VecDeque<u32>,
    /// The chunk the reader read last: where the playhead's data is.
    cursor: u32,
    /// Chunks to fetch next because a seek is coming (from the time index).
    hint: Option<u32>,
    failed: Option<String>,
    closed: bool,
}

/// One track's verified chunks.
#[derive(Debug)]
pub struct TrackStore {
    manifest: Manifest,
    inner: Mutex<Inner>,
    arrived: Condvar,
    wake_fetcher: tokio::sync::Notify,
}

impl TrackStore {
    /// An empty store for `manifest`'s track.
    pub fn new(manifest: Manifest) -> Self {
        let n = manifest.layout().count() as usize;
        Self {
            manifest,
            inner: Mutex::new(Inner {
                chunks: vec![None; n],
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
        let slot = &mut inner.chunks[index.as_usize()];
        if slot.is_some() {
            return Ok(false);
        }
        *slot = Some(data);
        inner.present += 1;
        inner.urgent.retain(|&u| u != index.0);
        drop(inner);
        self.arrived.notify_all();
        Ok(true)
    }

    /// True if the chunk is present.
    pub fn has(&self, index: u32) -> bool {
        self.lock().chunks.get(index as usize).is_some_and(Option::is_some)
    }

    /// Chunks present.
    pub fn present(&self) -> u32 {
        self.lock().present
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
        inner.cursor = index.0;
        loop {
            if let Some(data) = &inner.chunks[index.as_usize()] {
                let start = layout.byte_range(index).start;
                let within = (offset - start) as usize;
                let n = buf.len().min(data.len() - within);
                buf[..n].copy_from_slice(&data[within..within + n]);
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

    /// Tells the fetcher that a seek to `chunk` is coming.
    pub fn hint(&self, chunk: ChunkIndex) {
        self.lock().hint = Some(chunk.0);
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
            .filter(|&u| inner.chunks[u as usize].is_none())
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
        let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let layout = ChunkLayout::new(len as u64, ChunkSize::new(1024).unwrap()).unwrap();
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
