//! The tokio driver of the [`Scheduler`]: fetches one track's chunks from
//! peers into a [`TrackStore`].
//!
//! The loop feeds the scheduler what happened (chunks that landed, requests
//! that failed, where the reader is, each peer's RTT from QUIC) and carries
//! out what it decides: each request is one QUIC stream for one chunk,
//! carrying its deadline (the server sets the stream's priority from it); a
//! cancel aborts the request's task, which drops the stream and tells the
//! peer to stop sending. Chunks are verified before they reach the store.
//! When the start rule is met the driver raises [`FetchControl::ready`]; when
//! no peer is left it fails the store with the reason, which ends playback
//! with a clear error instead of a hang.
//!
//! Tasks: the driver loop; one task per request, reporting back over a
//! bounded channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chorus_protocol::message::{ChunkRun, ErrorCode};
use chorus_protocol::{ChunkIndex, PeerId, ProtocolError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cache::ChunkCache;
use crate::client::{Arrival, HeadRest, Peer};
use crate::error::Error;
use crate::scheduler::{Action, Failure, PeerInfo, PeerKey, Playhead, Scheduler, SchedulerConfig};
use crate::store::TrackStore;
use chorus_protocol::groups::VerifiedPart;

/// Fetch settings.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// A request that delivers nothing for this long has failed (timeout).
    /// 5 s: far above any RTT we serve, short enough that a silent peer is
    /// noticed well before a typical buffer drains (the scheduler hedges
    /// late requests long before this).
    pub stall_timeout: Duration,
    /// Scheduler policy.
    pub scheduler: SchedulerConfig,
    /// Longest the driver sleeps when no event comes and no timer of the
    /// scheduler is due ([`crate::scheduler::Scheduler::poll_timeout`]): it
    /// re-reads then what changes without telling it (the audible
    /// playhead's drift, the peers' RTTs). 250 ms.
    pub max_sleep: Duration,
    /// Where verified chunks are also kept, to serve to others and to play
    /// again offline.
    pub cache: Option<Arc<ChunkCache>>,
    /// The baseline a benchmark compares against: download the whole track
    /// from the first source in file order, as one stream, and let playback
    /// start at once (no deadlines, no other peers, no start rule).
    pub plain_order: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(5),
            scheduler: SchedulerConfig::default(),
            max_sleep: Duration::from_millis(250),
            cache: None,
            plain_order: false,
        }
    }
}

/// A peer to fetch from, and what it holds.
#[derive(Clone, Debug)]
pub struct Source {
    /// The connection.
    pub peer: Peer,
    /// It serves the track from its library (the original seed): used only
    /// when other peers cannot meet a deadline.
    pub is_seed: bool,
    /// The chunks it holds, or `None` for all of them.
    pub have: Option<Vec<ChunkRun>>,
    /// The rest of a start response this peer is still sending: the
    /// fetcher takes it over (once) and counts its chunks as in flight.
    pub head_rest: Option<Arc<std::sync::Mutex<Option<HeadRest>>>>,
}

/// Counters of a fetch.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Verified chunk bytes received (duplicates from hedging included).
    pub bytes: AtomicU64,
    /// Chunks received.
    pub chunks: AtomicU64,
    /// Requests that failed.
    pub failures: AtomicU64,
    /// Requests sent to a second peer for a chunk already in flight.
    pub hedges: AtomicU64,
    /// Tails asked: a (re)start's chunk asked of a second peer from its
    /// middle on ([`Action::RequestTail`]).
    pub tails: AtomicU64,
    /// Tails that came in whole (others were withdrawn when their chunk
    /// was whole first, or failed).
    pub tails_done: AtomicU64,
    /// Verified bytes received from each peer: id, address, bytes, is seed.
    pub by_peer: std::sync::Mutex<Vec<(PeerId, std::net::SocketAddr, u64, bool)>>,
    /// Peers dropped for sending bad data: not to be dialled again.
    pub banned: std::sync::Mutex<Vec<PeerId>>,
    /// Chunk requests sent.
    pub requests: AtomicU64,
    /// Chunk requests sent before the start rule was first met (seeks
    /// not counted).
    pub requests_before_start: AtomicU64,
    /// The start rule's margin when it was first met, in microseconds (0:
    /// not met yet), and whether the peers reported the path clean.
    pub start_margin_us: AtomicU64,
    /// See [`FetchStats::start_margin_us`].
    pub start_clean: std::sync::atomic::AtomicBool,
    /// Times the driver went to sleep (after each event, change and timer).
    pub wakeups: AtomicU64,
}

impl FetchStats {
    /// Credits `bytes` received from `peer` outside a request: the head of
    /// the track that came in its start response.
    pub fn credit(&self, peer: &Peer, is_seed: bool, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.add_peer_bytes((peer, is_seed), bytes);
    }

    fn add_peer_bytes(&self, (peer, is_seed): (&Peer, bool), bytes: u64) {
        if let Ok(mut v) = self.by_peer.lock() {
            let id = peer.id();
            match v.iter_mut().find(|e| e.0 == id) {
                Some(e) => {
                    e.2 += bytes;
                    // A direct path's address over a relay's (a relayed
                    // peer reached directly later).
                    if peer.path() != crate::nat::Path::Relayed {
                        e.1 = peer.addr();
                    }
                }
                None => v.push((id, peer.addr(), bytes, is_seed)),
            }
        }
    }
}

/// Shared between the driver and the player.
#[derive(Debug, Default)]
pub struct FetchControl {
    /// Raised once the start rule allows playback to begin.
    pub ready: Arc<AtomicBool>,
    /// Media position of the audible playhead in microseconds, and whether
    /// the clock runs; the player keeps it current.
    position_us: AtomicU64,
    playing: AtomicBool,
    /// Sources that answered after the fetch began (bounded by the caller:
    /// one per peer it knows).
    joining: std::sync::Mutex<Vec<Source>>,
    /// Seeks so far: each one withdraws what was asked around the old place.
    seeks: AtomicU64,
    /// Wakes the driver: a source joined, a seek, playback started or
    /// stopped.
    changed: tokio::sync::Notify,
    /// Orders a seek's lowering of `ready` against the driver's raising it
    /// for the place it judged (never taken in the audio callback).
    gate: std::sync::Mutex<()>,
    /// Audio the player has decoded for the place playback starts from:
    /// the seeks seen when it began decoding there, that place (as asked:
    /// a start offset, a seek's target) and the media time decoded to,
    /// contiguously.
    decoded: std::sync::Mutex<Option<(u64, Duration, Duration)>>,
}

impl FetchControl {
    /// The listener seeked to `to`: what was asked for around the old
    /// place is withdrawn, and the start rule is judged at `to` from now
    /// on. With `hold`, playback waits for it there again (`ready` is
    /// lowered until the rule holds at the new place).
    pub fn seeked(&self, to: Duration, hold: bool) {
        {
            let _gate = self.gate.lock();
            self.position_us
                .store(u64::try_from(to.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
            self.playing.store(false, Ordering::Relaxed);
            if hold {
                self.ready.store(false, Ordering::Relaxed);
            }
            // Release: a driver that sees this seek sees its target too.
            self.seeks.fetch_add(1, Ordering::Release);
        }
        self.changed.notify_one();
    }

    /// Raises `ready` for a start rule judged with `seeks` seeks seen: not
    /// if one came since (the rule held at a place playback has left).
    fn raise_ready(&self, seeks: u64) -> bool {
        let _gate = self.gate.lock();
        if self.seeks.load(Ordering::Acquire) != seeks {
            return false;
        }
        self.ready.store(true, Ordering::Relaxed);
        true
    }

    /// Adds a source to a running fetch (a peer whose handshake or
    /// manifest answer came after the first one's): playback starts with
    /// the first peer to answer instead of waiting for the slowest.
    pub fn add_source(&self, source: Source) {
        if let Ok(mut j) = self.joining.lock() {
            j.push(source);
        }
        self.changed.notify_one();
    }

    /// Seeks so far ([`Self::seeked`]): a player reads it when it starts
    /// decoding at a seek's target, for [`Self::set_decoded`].
    pub fn seeks(&self) -> u64 {
        self.seeks.load(Ordering::Acquire)
    }

    /// The player reports audio decoded (into its sink, where it waits to
    /// play) from where playback starts, `from` (as asked), to `until`,
    /// for the place it began decoding with `seeks` seen ([`Self::seeks`]):
    /// the start rule counts it as it is. Reported only while the rule
    /// holds playback back (it wakes the driver); cheap otherwise.
    pub fn set_decoded(&self, seeks: u64, from: Duration, until: Duration) {
        if self.ready.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut d) = self.decoded.lock() {
            *d = Some((seeks, from, until));
        }
        self.changed.notify_one();
    }

    /// Audio decoded past `at`, if the player's report is for playback
    /// starting there with `seeks` seen (the place compared to the
    /// millisecond: a seek's target reaches the decoder in whole
    /// milliseconds); zero otherwise. A report from before a seek, or
    /// for another place, counts nothing.
    fn decoded_past(&self, seeks: u64, at: Duration) -> Duration {
        match self.decoded.lock().ok().and_then(|d| *d) {
            Some((n, from, until)) if n == seeks && from.as_millis() == at.as_millis() => {
                until.saturating_sub(at)
            }
            _ => Duration::ZERO,
        }
    }

    /// The player reports where the audible playhead is.
    pub fn set_playhead(&self, position: Duration, playing: bool) {
        self.position_us
            .store(u64::try_from(position.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if self.playing.swap(playing, Ordering::Relaxed) != playing {
            // Deadlines run from now on (or stop): plan again at once.
            self.changed.notify_one();
        }
    }
}

enum Event {
    Received {
        key: PeerKey,
        chunk: u32,
    },
    /// The first `bytes` of a chunk still arriving are checked and stored.
    Part {
        chunk: u32,
        bytes: u64,
    },
    Failed {
        key: PeerKey,
        chunk: u32,
        failure: Failure,
        gone: bool,
        error: Error,
    },
    /// A chunk's tail ([`Action::RequestTail`]) is over: all in, or why
    /// not.
    TailDone {
        key: PeerKey,
        chunk: u32,
        result: Result<(), Error>,
    },
}

/// Marks a tail's task in the task map: its key is the chunk's index with
/// this bit set (indices stay below [`chorus_protocol::limits::MAX_CHUNKS`]).
const TAIL_TASK: u32 = 1 << 31;

/// A task aborted when the fetch ends.
struct AbortOnExit<T>(Option<JoinHandle<T>>);

impl<T> Drop for AbortOnExit<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Request tasks by peer and chunk; dropping the map aborts them all.
#[derive(Default)]
struct AbortOnDrop(HashMap<(PeerKey, u32), JoinHandle<()>>);

impl std::ops::Deref for AbortOnDrop {
    type Target = HashMap<(PeerKey, u32), JoinHandle<()>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for AbortOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}

/// The baseline fetch ([`FetchConfig::plain_order`]): every chunk from
/// `source`, in file order, one batch request after another.
pub async fn fetch_in_order(
    store: Arc<TrackStore>,
    source: Source,
    stats: Arc<FetchStats>,
    control: Arc<FetchControl>,
) -> Result<(), String> {
    control.ready.store(true, Ordering::Relaxed);
    let manifest = store.manifest().clone();
    let count = manifest.layout().count();
    let run = async {
        let mut first = 0;
        while first < count && !store.is_closed() {
            let n = (count - first).min(crate::client::FETCH_BATCH);
            let deadline = crate::scheduler::NO_DEADLINE_MS;
            let mut stream = source.peer.chunks(&manifest, ChunkIndex(first), n, deadline).await?;
            while let Some(chunk) = stream.next().await? {
                let bytes = chunk.data().len() as u64;
                stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                stats.chunks.fetch_add(1, Ordering::Relaxed);
                stats.add_peer_bytes((&source.peer, source.is_seed), bytes);
                if store.insert(chunk).is_err() || store.is_closed() {
                    return Ok(());
                }
            }
            first += n;
        }
        Ok::<(), Error>(())
    };
    match run.await {
        Ok(()) => Ok(()),
        Err(e) => {
            let reason = format!("{}: {e}", source.peer.addr());
            store.fail(reason.clone());
            Err(reason)
        }
    }
}

/// Fetches the store's track from `sources` until it is complete or the
/// store is closed. Fails the store (and returns the reason) when no peer
/// can serve what is missing.
pub async fn fetch_track(
    store: Arc<TrackStore>,
    sources: Vec<Source>,
    config: FetchConfig,
    stats: Arc<FetchStats>,
    control: Arc<FetchControl>,
) -> Result<(), String> {
    let epoch = Instant::now();
    let manifest = store.manifest().clone();
    let mut sched = Scheduler::for_manifest(config.scheduler.clone(), &manifest);
    let mut keys: HashMap<PeerKey, usize> = HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        let key = sched.add_peer(PeerInfo {
            rtt: s.peer.connection().rtt(),
            // A relayed peer is a fallback too: slow and costly.
            is_seed: s.is_seed || s.peer.path() == crate::nat::Path::Relayed,
            has_all: s.have.is_none(),
        });
        if let Some(path) = s.peer.path_seen() {
            sched.set_path(key, path);
        }
        if let Some(runs) = &s.have {
            sched.peer_has(key, runs.iter().flat_map(|r| r.start..r.start.saturating_add(r.len)));
        }
        keys.insert(key, i);
    }
    let now = || epoch.elapsed();
    // Chunks already here (a cache) need no fetching.
    for i in 0..sched.chunk_count() {
        if store.has(i) {
            sched.mark_here(i);
        }
    }
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    // Aborted when the fetch ends, also when the fetch itself is aborted
    // (playback stopped): a request left running would go on pulling
    // bytes nobody wants through the peers' uplinks.
    let mut tasks = AbortOnDrop::default();
    // The rest of a start response: its chunks are in flight already,
    // and the rest of the hash list behind its chunks.
    let listed = Arc::new(tokio::sync::Notify::new());
    for (key, i) in &keys {
        let (source, t) = (&sources[*i], now());
        let pump = adopt_head(source, *key, &mut sched, t, &store, &config, &stats, &tx, &listed);
        if let Some(pump) = pump {
            tasks.insert((*key, u32::MAX), pump);
        }
    }
    // Pages of the hash list the scheduler has been told of.
    let mut listed_pages: Vec<bool> =
        (0..manifest.page_count()).map(|p| manifest.page_known(p)).collect();
    let mut listed_whole = manifest.hashes_known();
    let mut sources = sources;
    let mut seen_seeks = control.seeks.load(Ordering::Relaxed);
    // The first start (a seek raises `ready` again): what the count of
    // requests before the first note refers to.
    let mut started = control.ready.load(Ordering::Relaxed);
    // When the last live peer was lost (a joining one may still come).
    let mut alone_since: Option<Duration> = None;
    // The hash list's completion, if it had to be asked for.
    let mut completing = AbortOnExit(None);
    let result = loop {
        if store.is_closed() {
            break Ok(());
        }
        let joined: Vec<Source> =
            control.joining.lock().map(|mut j| std::mem::take(&mut *j)).unwrap_or_default();
        for s in joined {
            let relayed = |src: &Source| src.peer.path() == crate::nat::Path::Relayed;
            if let Some(i) = sources.iter().position(|known| known.peer.id() == s.peer.id()) {
                if !relayed(&sources[i]) || relayed(&s) {
                    continue;
                }
                // A peer we had only through a relay, reached directly now:
                // the direct connection takes over, the relayed one's
                // requests go back to be asked again.
                let old: Vec<PeerKey> =
                    keys.iter().filter(|(_, idx)| **idx == i).map(|(k, _)| *k).collect();
                tasks.retain(|(p, _), t| {
                    if old.contains(p) {
                        t.abort();
                    }
                    !old.contains(p)
                });
                for k in old {
                    sched.remove_peer(k);
                }
                tracing::info!("{} takes over from its relayed path", s.peer.addr());
            }
            let key = sched.add_peer(PeerInfo {
                rtt: s.peer.connection().rtt(),
                is_seed: s.is_seed || s.peer.path() == crate::nat::Path::Relayed,
                has_all: s.have.is_none(),
            });
            if let Some(path) = s.peer.path_seen() {
                sched.set_path(key, path);
            }
            if let Some(runs) = &s.have {
                sched.peer_has(
                    key,
                    runs.iter().flat_map(|r| r.start..r.start.saturating_add(r.len)),
                );
            }
            let t = now();
            let pump = adopt_head(&s, key, &mut sched, t, &store, &config, &stats, &tx, &listed);
            if let Some(pump) = pump {
                tasks.insert((key, u32::MAX), pump);
            }
            keys.insert(key, sources.len());
            sources.push(s);
        }
        for lost in store.take_lost() {
            sched.forget(lost);
        }
        if sched.is_complete() {
            // Everything wanted came in before the rule was judged (a
            // short play on a slow machine): it is met now, on all of it.
            if !started {
                record_start(&stats, &sched);
            }
            control.ready.store(true, Ordering::Relaxed);
            break Ok(());
        }
        // Where playback is: the audible playhead if playing. Before the
        // first note or a seek's, where it will start (the player reports
        // the target), unless the reader is still short of it (a demuxer
        // scanning toward a seek's target): the decoder reading ahead into
        // the ring is buffered audio, not a playhead that moved. The seeks
        // are read first: a seek after this point is not judged here.
        let seeks = control.seeks.load(Ordering::Acquire);
        let t = now();
        let playing = control.playing.load(Ordering::Relaxed);
        let audible = Duration::from_micros(control.position_us.load(Ordering::Relaxed));
        let reader = manifest.chunk_media_time(ChunkIndex(store.cursor()));
        let position = if playing { audible } else { reader.min(audible) };
        sched.set_playhead(Playhead { position, at: t, playing });
        sched.set_target(audible);
        sched.set_blocked(store.blocked());

        if seeks != seen_seeks {
            seen_seeks = seeks;
            sched.seeked();
        }
        for (key, i) in &keys {
            sched.set_rtt(*key, sources[*i].peer.connection().rtt());
        }
        // The start rule first: requests sent in the same instant would
        // not delay the first note, but they are not needed for it either.
        // Judged where playback will start (a seek's target), not where a
        // reader is: audio before the target is not heard.
        if !control.ready.load(Ordering::Relaxed)
            && sched.ready_to_start_decoded(audible, control.decoded_past(seeks, audible))
            && control.raise_ready(seeks)
            && !started
        {
            record_start(&stats, &sched);
            started = true;
        }
        // Nothing is asked for before its hash can be checked: the pages
        // of the hash list a start response sends behind its chunks let
        // their chunks be asked for as they come; after HASH_LIST_WAIT
        // without the whole list the sources are asked for it.
        if !listed_whole {
            // Asked for on a task of its own (one peer after another, each
            // bounded by its request timeout): the loop keeps taking events
            // meanwhile, and the task wakes it when done.
            if t >= HASH_LIST_WAIT && !manifest.hashes_known() && completing.0.is_none() {
                let (m, s, done) = (manifest.clone(), sources.clone(), listed.clone());
                completing.0 = Some(tokio::spawn(async move {
                    let r = complete_hash_list(&m, &s).await;
                    done.notify_one();
                    r
                }));
            }
            if let Some(task) = completing.0.take_if(|t| t.is_finished())
                && let Ok(Err(e)) = task.await
            {
                store.fail(e.clone());
                break Err(e);
            }
            for (page, listed) in listed_pages.iter_mut().enumerate() {
                if !*listed && manifest.page_known(page as u32) {
                    let chunks = manifest.page_chunks(page as u32);
                    sched.set_listed(chunks.clone());
                    // Its index points came with it: the times of its
                    // chunks, and of the next page's before that page's
                    // first point, are known better now.
                    let next = manifest.page_chunks(page as u32 + 1);
                    let first = chunks.start;
                    let times = (first..next.end.max(chunks.end))
                        .map(|i| manifest.chunk_media_time(ChunkIndex(i)));
                    sched.set_media_times(first, times);
                    *listed = true;
                }
            }
            listed_whole = listed_pages.iter().all(|l| *l);
            if listed_whole && let Some(cache) = &config.cache {
                cache.list_whole_later(manifest.id());
            }
        }
        for action in sched.poll(t) {
            act(action, &mut sched, &sources, &keys, &store, &config, &stats, &tx, &mut tasks, t);
        }
        // No live peer: others may still be joining (their handshake or
        // manifest answer came later than a source that failed at once), so
        // wait up to the stall timeout for one before giving up.
        if sched.live_peers() == 0 {
            let since = *alone_since.get_or_insert(t);
            if t.saturating_sub(since) >= config.stall_timeout {
                break Err("no peers left to fetch from".to_owned());
            }
        } else {
            alone_since = None;
        }
        // Asleep until an event, a change the player or a joining source
        // reports, the scheduler's next timer, or the stall limit when
        // alone; at most `max_sleep`.
        let mut wake = t + config.max_sleep;
        if let Some(at) = sched.poll_timeout() {
            wake = wake.min(at);
        }
        if let Some(since) = alone_since {
            wake = wake.min(since + config.stall_timeout);
        }
        if !listed_whole && t < HASH_LIST_WAIT {
            wake = wake.min(HASH_LIST_WAIT);
        }
        let wake = tokio::time::Instant::from_std(epoch + wake);
        stats.wakeups.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break Ok(()) };
                let t = now();
                let actions = match ev {
                    Event::Received { key, chunk } => {
                        tasks.remove(&(key, chunk));
                        let seen = keys.get(&key).and_then(|&i| sources[i].peer.path_seen());
                        if let Some(path) = seen {
                            sched.set_path(key, path);
                        }
                        sched.on_received(key, chunk, t)
                    }
                    Event::Part { chunk, bytes } => {
                        sched.part_arrived(chunk, bytes);
                        Vec::new()
                    }
                    Event::TailDone { key, chunk, result } => {
                        tasks.remove(&(key, chunk | TAIL_TASK));
                        sched.on_tail_done(key, chunk, result.is_ok(), t);
                        match result {
                            Err(error) => {
                                let (failure, gone) = classify(&error);
                                let addr = sources[keys[&key]].peer.addr();
                                tracing::debug!("the tail of chunk {chunk} from {addr} failed: {error}");
                                if gone {
                                    sched.remove_peer(key);
                                    Vec::new()
                                } else if failure == Failure::Corrupt {
                                    sched.on_failed(key, chunk, failure, t)
                                } else {
                                    Vec::new()
                                }
                            }
                            Ok(()) => {
                                stats.tails_done.fetch_add(1, Ordering::Relaxed);
                                Vec::new()
                            }
                        }
                    }
                    Event::Failed { key, chunk, failure, gone, error } => {
                        tasks.remove(&(key, chunk));
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        let addr = sources[keys[&key]].peer.addr();
                        if gone {
                            tracing::warn!("lost peer {addr}: {error}");
                            sched.remove_peer(key);
                            Vec::new()
                        } else {
                            tracing::debug!("chunk {chunk} from {addr} failed: {error}");
                            let actions = sched.on_failed(key, chunk, failure, t);
                            if failure == Failure::Corrupt && sched.is_dead(key) {
                                let peer = &sources[keys[&key]].peer;
                                // Requests in flight to a peer just dropped
                                // fail too (corrupt, if it kept lying): ban
                                // it once.
                                let first = stats.banned.lock().is_ok_and(|mut b| {
                                    let first = !b.contains(&peer.id());
                                    if first {
                                        b.push(peer.id());
                                    }
                                    first
                                });
                                if first {
                                    tracing::warn!("peer {addr} sent bad data twice: dropped and banned");
                                    crate::close::Closed::BadData.close(peer.connection());
                                }
                            }
                            actions
                        }
                    }
                };
                for action in actions {
                    act(action, &mut sched, &sources, &keys, &store, &config, &stats, &tx, &mut tasks, t);
                }
            }
            () = store.wait_for_need() => {}
            () = control.changed.notified() => {}
            () = listed.notified() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    };
    drop(tasks);
    // The list may have turned whole after the loop last looked (a start
    // response's pages, read by its pump as the play ended).
    if !listed_whole
        && manifest.hashes_known()
        && let Some(cache) = &config.cache
    {
        cache.list_whole_later(manifest.id());
    }
    match result {
        Ok(()) => Ok(()),
        Err(why) => {
            let reasons: Vec<String> = sources
                .iter()
                .enumerate()
                .filter(|(i, _)| keys.iter().any(|(k, v)| v == i && sched.is_dead(*k)))
                .map(|(_, s)| s.peer.addr().to_string())
                .collect();
            let reason = if sources.is_empty() {
                // None ever joined (a start from the cache, its peers gone).
                format!(
                    "no peer could be reached for the rest of the track ({why}; what the \
                     cache held has played): check that the peers run `chorus seed`"
                )
            } else {
                format!(
                    "no peer can serve the rest of the track: {why} (stopped answering or \
                     failed: {})",
                    reasons.join(", ")
                )
            };
            store.fail(reason.clone());
            Err(reason)
        }
    }
}

/// Records the start rule as first met now: the requests sent before it
/// and the margin it was judged with.
fn record_start(stats: &FetchStats, sched: &Scheduler) {
    let sent = stats.requests.load(Ordering::Relaxed);
    stats.requests_before_start.store(sent, Ordering::Relaxed);
    let (margin, clean) = sched.start_margin_now();
    let us = u64::try_from(margin.as_micros()).unwrap_or(u64::MAX).max(1);
    stats.start_margin_us.store(us, Ordering::Relaxed);
    stats.start_clean.store(clean, Ordering::Relaxed);
}

#[allow(clippy::too_many_arguments)]
fn act(
    action: Action,
    sched: &mut Scheduler,
    sources: &[Source],
    keys: &HashMap<PeerKey, usize>,
    store: &Arc<TrackStore>,
    config: &FetchConfig,
    stats: &Arc<FetchStats>,
    tx: &mpsc::Sender<Event>,
    tasks: &mut HashMap<(PeerKey, u32), JoinHandle<()>>,
    now: Duration,
) {
    match action {
        Action::Request { peer: key, chunk, deadline } => {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            if tasks.keys().any(|(_, c)| *c == chunk) {
                stats.hedges.fetch_add(1, Ordering::Relaxed);
            }
            let Some(&i) = keys.get(&key) else { return };
            let deadline_ms =
                u32::try_from(deadline.saturating_sub(now).as_millis()).unwrap_or(u32::MAX - 1);
            // Begun here, in the order the scheduler decided, so the peer
            // sees (and serves) the requests in that order.
            let msg = Peer::chunk_request(store.manifest(), ChunkIndex(chunk), 1, deadline_ms);
            let opened = sources[i].peer.begin_now(&msg).and_then(Result::ok);
            let task = tokio::spawn(request(
                key,
                opened,
                (sources[i].peer.clone(), sources[i].is_seed),
                store.clone(),
                chunk,
                deadline_ms,
                config.stall_timeout,
                (stats.clone(), config.cache.clone()),
                tx.clone(),
            ));
            if let Some(old) = tasks.insert((key, chunk), task) {
                old.abort();
            }
        }
        Action::RequestTail { peer: key, chunk, from, deadline } => {
            let Some(&i) = keys.get(&key) else { return };
            stats.tails.fetch_add(1, Ordering::Relaxed);
            let deadline_ms =
                u32::try_from(deadline.saturating_sub(now).as_millis()).unwrap_or(u32::MAX - 1);
            // Begun here, before the requests asked after it (see above).
            let msg = Peer::tail_request(store.manifest(), ChunkIndex(chunk), from, deadline_ms);
            let opened = sources[i].peer.begin_now(&msg).and_then(Result::ok);
            let task = tokio::spawn(request_tail(
                key,
                opened,
                sources[i].peer.clone(),
                store.clone(),
                (chunk, from, deadline_ms),
                config.stall_timeout,
                tx.clone(),
            ));
            if let Some(old) = tasks.insert((key, chunk | TAIL_TASK), task) {
                old.abort();
            }
        }
        Action::Cancel { peer, chunk } => {
            for k in [chunk, chunk | TAIL_TASK] {
                if let Some(task) = tasks.remove(&(peer, k)) {
                    task.abort();
                }
            }
        }
        Action::Drop { peer } => {
            let addr = keys.get(&peer).map(|&i| sources[i].peer.addr());
            tracing::warn!("dropping peer {addr:?}: it sent bad data or stopped answering");
            tasks.retain(|(p, _), t| {
                if *p == peer {
                    t.abort();
                }
                *p != peer
            });
            sched.remove_peer(peer);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn request(
    key: PeerKey,
    opened: Option<crate::client::Begun>,
    (peer, is_seed): (Peer, bool),
    store: Arc<TrackStore>,
    chunk: u32,
    deadline_ms: u32,
    stall: Duration,
    (stats, cache): (Arc<FetchStats>, Option<Arc<ChunkCache>>),
    tx: mpsc::Sender<Event>,
) {
    let result = async {
        let asked = peer.chunks_on(opened, store.manifest(), ChunkIndex(chunk), 1, deadline_ms);
        let mut stream = within(stall, "the peer to accept a request", asked).await?;
        loop {
            let next = within(stall, "chunk data", stream.next_arrival()).await?;
            // Verified by the stream (once); the store and the cache take
            // only verified chunks, and checked parts of one.
            match next.ok_or(Error::StreamEnded)? {
                Arrival::Chunk(c) => {
                    if let Some(path) = stream.path() {
                        peer.note_path(path);
                    }
                    break land(&store, &stats, cache, c, (&peer, is_seed));
                }
                Arrival::Part(p) => land_part(&store, &p, &tx).await?,
            }
        }
    }
    .await;
    let ev = match result {
        Ok(_) => Event::Received { key, chunk },
        Err(error) => {
            let (failure, gone) = classify(&error);
            Event::Failed { key, chunk, failure, gone, error }
        }
    };
    let _ = tx.send(ev).await;
}

/// `fut`'s result, or a timeout naming `what` once `stall` has passed.
async fn within<T>(
    stall: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(stall, fut).await.map_err(|_| Error::Timeout(stall, what))?
}

/// Fetches the tail of `chunk` from byte `from` ([`Action::RequestTail`]):
/// its checked parts into the store as they come (where they wait for the
/// bytes before them, from the peer asked for the whole chunk).
async fn request_tail(
    key: PeerKey,
    opened: Option<crate::client::Begun>,
    peer: Peer,
    store: Arc<TrackStore>,
    (chunk, from, deadline_ms): (u32, u32, u32),
    stall: Duration,
    tx: mpsc::Sender<Event>,
) {
    let result = async {
        let asked = peer.tail_on(opened, store.manifest(), ChunkIndex(chunk), from, deadline_ms);
        let mut stream = within(stall, "the peer to accept a request", asked).await?;
        loop {
            let next = within(stall, "chunk data", stream.next_arrival()).await?;
            match next {
                None => break Ok(()),
                Some(Arrival::Part(p)) => land_part(&store, &p, &tx).await?,
                Some(Arrival::Chunk(_)) => {
                    break Err(Error::UnexpectedReply("a chunk, not its tail"));
                }
            }
        }
    }
    .await;
    let _ = tx.send(Event::TailDone { key, chunk, result }).await;
}

/// A verified chunk arrived from `from` (a peer, and whether it is a
/// seed): into the store, the cache, the counters (at once, so what came
/// is credited to its peer even if the fetch ends before the driver hears
/// of it).
fn land(
    store: &TrackStore,
    stats: &FetchStats,
    cache: Option<Arc<ChunkCache>>,
    verified: chorus_protocol::VerifiedChunk,
    from: (&Peer, bool),
) -> Result<(), Error> {
    let len = verified.data().len() as u64;
    if store.insert(verified.clone())?
        && let Some(cache) = cache
    {
        cache.put_chunk_later(verified);
    }
    stats.bytes.fetch_add(len, Ordering::Relaxed);
    stats.chunks.fetch_add(1, Ordering::Relaxed);
    stats.add_peer_bytes(from, len);
    Ok(())
}

/// Checked bytes of a chunk still arriving: into the store, so a reader
/// waiting on it goes on, and to the driver for the start rule. (Counted
/// as fetched when the chunk is whole.) An error: the fetch is over.
async fn land_part(
    store: &TrackStore,
    part: &VerifiedPart,
    tx: &mpsc::Sender<Event>,
) -> Result<(), Error> {
    let bytes = store.insert_part(part)?;
    let ev = Event::Part { chunk: part.index().0, bytes };
    tx.send(ev).await.map_err(|_| Error::UnexpectedReply("the fetch is over"))
}

/// Takes over the rest of a start response `source` is sending, if any:
/// its chunks count as in flight from that peer, and a task reads them
/// as they arrive, reporting like a request would. Chunks the response
/// ends without are reported missing, so they are asked for again.
#[allow(clippy::too_many_arguments)]
fn adopt_head(
    source: &Source,
    key: PeerKey,
    sched: &mut Scheduler,
    now: Duration,
    store: &Arc<TrackStore>,
    config: &FetchConfig,
    stats: &Arc<FetchStats>,
    tx: &mpsc::Sender<Event>,
    listed: &Arc<tokio::sync::Notify>,
) -> Option<JoinHandle<()>> {
    let slot = source.head_rest.as_ref()?;
    let mut rest = slot.lock().ok()?.take()?;
    let mut pending: Vec<u32> = rest.expected().iter().map(|i| i.0).collect();
    if let Some(rate) = rest.delivery_rate() {
        sched.measured_rate(key, rate);
    }
    for &i in &pending {
        sched.expect(key, i, now);
    }
    let (store, stats, cache, tx) =
        (store.clone(), stats.clone(), config.cache.clone(), tx.clone());
    let (listed, from) = (listed.clone(), (source.peer.clone(), source.is_seed));
    Some(tokio::spawn(async move {
        let mut told = false;
        let ended = loop {
            let next = rest.next().await;
            if !told && store.manifest().hashes_known() {
                listed.notify_one();
                told = true;
            }
            match next {
                Ok(Some(Arrival::Part(p))) => {
                    if land_part(&store, &p, &tx).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Arrival::Chunk(chunk))) => {
                    let i = chunk.index().0;
                    pending.retain(|p| *p != i);
                    if let Some(path) = rest.path() {
                        from.0.note_path(path);
                    }
                    let ev = match land(&store, &stats, cache.clone(), chunk, (&from.0, from.1)) {
                        Ok(_) => Event::Received { key, chunk: i },
                        Err(error) => {
                            let (failure, gone) = classify(&error);
                            Event::Failed { key, chunk: i, failure, gone, error }
                        }
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break Failure::Missing,
                Err(e) => break classify(&e).0,
            }
        };
        // Over: the hash list is whole, or will not come this way.
        if !told {
            listed.notify_one();
        }
        for chunk in pending {
            let error = Error::UnexpectedReply("the start response ended without this chunk");
            let ev = Event::Failed { key, chunk, failure: ended, gone: false, error };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }))
}

/// How long a fetch waits for the rest of the hash list, which a start
/// response sends behind its chunks, before asking a peer for it.
const HASH_LIST_WAIT: Duration = Duration::from_secs(1);

/// Completes the hash list the start response did not (it ended early,
/// or its peer went quiet): the sources are asked for the manifest and its
/// list, one after another.
async fn complete_hash_list(
    manifest: &chorus_protocol::Manifest,
    sources: &[Source],
) -> Result<(), String> {
    for s in sources {
        if manifest.hashes_known() {
            break;
        }
        match s.peer.manifest_and_origin(manifest.id()).await {
            Ok((whole, _, _)) => {
                if let Some(list) = whole.hash_pages(0..whole.page_count()) {
                    let _ = manifest.learn_hashes(0, &list);
                }
            }
            Err(e) => tracing::debug!("no hash list from {}: {e}", s.peer.addr()),
        }
    }
    if manifest.hashes_known() { Ok(()) } else { Err("no peer sent the track's hash list".into()) }
}

fn classify(error: &Error) -> (Failure, bool) {
    match error {
        Error::Remote { code: ErrorCode::UnknownTrack | ErrorCode::UnknownChunk, .. } => {
            (Failure::Missing, false)
        }
        Error::Protocol(
            ProtocolError::ChunkHashMismatch { .. } | ProtocolError::ChunkLength { .. },
        )
        | Error::WrongChunk { .. } => (Failure::Corrupt, false),
        Error::Connection(_) => (Failure::Timeout, true),
        _ => (Failure::Timeout, false),
    }
}

/// How far ahead of a track's end the next one is prefetched: Spotify's
/// client looks 30 s ahead.
pub const PREFETCH_AHEAD: Duration = Duration::from_secs(30);

/// Audio prefetched of the next track: 10 s covers the start rule's buffer
/// on any swarm that can carry the track at all, so it starts from the
/// cache while the network catches up.
pub const PREFETCH_LEAD: Duration = Duration::from_secs(10);

/// Fetches what a track needs to start playing (its header chunks and the
/// first `lead` of audio) into `cache`, from the sources in turn (other
/// peers before seeds). Chunks already cached are skipped. Returns the
/// number of chunks fetched.
pub async fn prefetch(
    cache: Arc<ChunkCache>,
    manifest: &chorus_protocol::Manifest,
    sources: &[Source],
    lead: Duration,
) -> Result<usize, Error> {
    let id = manifest.id();
    {
        let (c, m) = (cache.clone(), manifest.clone());
        tokio::task::spawn_blocking(move || c.put_manifest(&m))
            .await
            .map_err(|_| Error::UnexpectedReply("cache task failed"))??;
    }
    let layout = manifest.layout();
    let mut wanted: Vec<u32> = manifest
        .media()
        .header_ranges
        .iter()
        .flat_map(|r| layout.chunks_covering(r.clone()))
        .chain(0..=manifest.chunk_at_time(lead).0)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let held: std::collections::HashSet<u32> =
        cache.have(&id).iter().flat_map(|r| r.start..r.start + r.len).collect();
    wanted.retain(|c| !held.contains(c));
    let mut order: Vec<&Source> = sources.iter().filter(|s| !s.is_seed).collect();
    order.extend(sources.iter().filter(|s| s.is_seed));
    let mut fetched = 0;
    for source in order {
        if wanted.is_empty() {
            break;
        }
        let has = |c: u32| {
            source
                .have
                .as_ref()
                .is_none_or(|runs| runs.iter().any(|r| c >= r.start && c - r.start < r.len))
        };
        let (mine, mut missed): (Vec<u32>, Vec<u32>) = wanted.drain(..).partition(|&c| has(c));
        // Contiguous chunks go as one range request.
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for c in mine {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == c && *len < 64 => *len += 1,
                _ => runs.push((c, 1)),
            }
        }
        for (start, len) in runs {
            let mut got = 0;
            if let Ok(mut s) = source
                .peer
                .chunks(manifest, ChunkIndex(start), len, crate::scheduler::NO_DEADLINE_MS)
                .await
            {
                while let Ok(Some(verified)) = s.next().await {
                    let c = cache.clone();
                    tokio::task::spawn_blocking(move || c.put_chunk(&verified))
                        .await
                        .map_err(|_| Error::UnexpectedReply("cache task failed"))??;
                    got += 1;
                }
            }
            fetched += got as usize;
            missed.extend(start + got..start + len);
        }
        wanted = missed;
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_audio_counts_only_for_the_place_and_seek_it_was_decoded_for() {
        let c = FetchControl::default();
        let s = Duration::from_secs;
        c.set_decoded(0, s(0), Duration::from_millis(140));
        assert_eq!(c.decoded_past(0, s(0)), Duration::from_millis(140));
        assert_eq!(c.decoded_past(0, Duration::from_millis(20)), Duration::ZERO, "another place");
        // A seek back to the same place: what was decoded before it is
        // gone from the sink.
        c.seeked(s(0), true);
        assert_eq!(c.decoded_past(c.seeks(), s(0)), Duration::ZERO);
        c.set_decoded(c.seeks(), s(0), Duration::from_millis(60));
        assert_eq!(c.decoded_past(c.seeks(), s(0)), Duration::from_millis(60));
        // Once playing, the player's reports are not taken.
        c.ready.store(true, Ordering::Relaxed);
        c.set_decoded(c.seeks(), s(0), s(9));
        assert_eq!(c.decoded_past(c.seeks(), s(0)), Duration::from_millis(60));
    }

    #[test]
    fn a_start_rule_judged_before_a_seek_does_not_open_playback_after_it() {
        let c = FetchControl::default();
        let seen = c.seeks.load(Ordering::Acquire);
        c.seeked(Duration::from_secs(90), true);
        assert!(!c.ready.load(Ordering::Relaxed), "the seek holds playback");
        assert_eq!(c.position_us.load(Ordering::Relaxed), 90_000_000, "the rule's new place");
        assert!(!c.raise_ready(seen), "judged at the old place");
        assert!(!c.ready.load(Ordering::Relaxed));
        assert!(c.raise_ready(c.seeks.load(Ordering::Acquire)));
        assert!(c.ready.load(Ordering::Relaxed));
    }

    #[test]
    fn the_wrong_chunk_is_bad_data_not_a_timeout() {
        let wrong = Error::WrongChunk { expected: 3, got: 4 };
        assert_eq!(classify(&wrong), (Failure::Corrupt, false));
        let hash = Error::Protocol(ProtocolError::ChunkHashMismatch {
            track: chorus_protocol::TrackId::from_bytes([0; 32]),
            index: ChunkIndex(1),
        });
        assert_eq!(classify(&hash), (Failure::Corrupt, false));
        let slow = Error::Timeout(Duration::from_secs(5), "chunk data");
        assert_eq!(classify(&slow), (Failure::Timeout, false));
    }
}
