//! The library: which files a node serves, indexed into manifests.
//!
//! [`scan`] walks the library directories, probes and hashes every new or
//! changed file and reuses the previous index for the rest (matched by path,
//! size and modification time). The index lives in the data dir
//! ([`INDEX_FILE`]) and is replaced atomically (temp file, fsync, rename),
//! so a crash or Ctrl-C never leaves it half-written. Files that cannot be
//! served are remembered with their reason, so a restart does not re-probe
//! them unless they change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use chorus_protocol::message::CatalogEntry;
use chorus_protocol::{ChunkHash, ChunkLayout, ChunkSize, Manifest, TrackId};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::probe;

/// The index file's name in the data dir.
pub const INDEX_FILE: &str = "library.idx";
/// 5: manifests v3 (a cut where the audio begins); 6: index points at the
/// first frame in each chunk; 7: no header range for what symphonia reads
/// only to keep skipped bytes rewindable; 8: WAV and MP4 time points
/// within a kilobyte of their packets (no longer a 32 KiB read's); 9: a
/// FLAC's cover art and padding, and an MP4's cover art, are not headers;
/// 10: nor are an Ogg Vorbis comment's own pages (its cover art), and an
/// Ogg whose comment spans pages gets a frame-exact index; 11: a FLAC's
/// padding before its first frame is a chunk of its own; 12: an MP3's, a
/// FLAC's or an Ogg Vorbis stream's header ranges end at its first frame;
/// 13: manifests of version 5 (the time index in the hash list's pages:
/// a start's first flight no longer grows with the track); 14: an MP4
/// whose index follows its audio is cut where the index begins.
const INDEX_VERSION: u32 = 14;

/// One servable track: a file and its manifest.
#[derive(Debug)]
pub struct LibraryTrack {
    /// Where the file is.
    pub path: PathBuf,
    /// Its name without directories.
    pub file_name: String,
    /// Size when indexed.
    pub size: u64,
    /// Modification time when indexed (ns since the epoch).
    pub mtime_ns: u128,
    /// Its manifest.
    pub manifest: Manifest,
}

impl LibraryTrack {
    /// The catalog listing of this track.
    pub fn catalog_entry(&self) -> CatalogEntry {
        catalog_entry(&self.manifest, self.file_name.clone())
    }

    /// Lowercased text that a search matches against.
    fn haystack(&self) -> String {
        haystack(&self.manifest, &self.file_name)
    }
}

/// Lowercased text that a search matches against: the tags and the file
/// name (empty where unknown).
fn haystack(m: &Manifest, file_name: &str) -> String {
    let t = m.tags();
    [t.title.as_deref(), t.artist.as_deref(), t.album.as_deref(), Some(file_name)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\u{1f}")
        .to_lowercase()
}

/// The best match for `query` among tracks known by their manifests alone
/// (a cache's): the rule of [`Library::best_match`], on the tags; among
/// equals the lowest id, so every node picks the same.
pub fn best_match_among(manifests: &[Manifest], query: &str) -> Option<CatalogEntry> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut best: Option<(u32, CatalogEntry)> = None;
    for m in manifests {
        let text = haystack(m, "");
        if !words.iter().all(|w| text.contains(w.as_str())) {
            continue;
        }
        let e = catalog_entry(m, String::new());
        let score = match_score(&e, query);
        let better = best.as_ref().is_none_or(|(b, be)| {
            score > *b || (score == *b && e.track.as_bytes() < be.track.as_bytes())
        });
        if better {
            best = Some((score, e));
        }
    }
    best.map(|(_, e)| e)
}

/// The catalog listing of a track from its manifest (and its file name,
/// where known).
pub fn catalog_entry(m: &Manifest, file_name: String) -> CatalogEntry {
    CatalogEntry {
        track: m.id(),
        file_name,
        tags: m.tags().clone(),
        codec: m.media().codec,
        duration_ms: u64::try_from(m.duration().as_millis()).unwrap_or(u64::MAX),
        byte_len: m.layout().byte_len(),
        sample_rate: m.media().sample_rate,
        channels: m.media().channels,
    }
}

/// How well a catalog entry matches a query, higher is better: an exact
/// title beats a title that contains the query, which beats a match
/// elsewhere (artist, album, file name).
pub fn match_score(e: &CatalogEntry, query: &str) -> u32 {
    let q = query.to_lowercase();
    let title = e.tags.title.as_deref().unwrap_or(&e.file_name).to_lowercase();
    if title == q {
        3
    } else if title.contains(&q) {
        2
    } else {
        1
    }
}

/// The tracks a node serves from its own files.
#[derive(Debug, Default)]
pub struct Library {
    tracks: HashMap<TrackId, Arc<LibraryTrack>>,
    /// Tracks in a stable order (artist, album, track number, file name).
    order: Vec<TrackId>,
    search_text: HashMap<TrackId, String>,
    skipped: Vec<Skipped>,
}

/// A file the scan could not serve, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Size when looked at.
    pub size: u64,
    /// Modification time when looked at.
    pub mtime_ns: u128,
    /// Why it was skipped.
    pub reason: String,
}

impl Library {
    /// Number of tracks.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True if there are no tracks.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// A track by id.
    pub fn get(&self, id: &TrackId) -> Option<&Arc<LibraryTrack>> {
        self.tracks.get(id)
    }

    /// Every track, in catalog order.
    pub fn tracks(&self) -> impl Iterator<Item = &Arc<LibraryTrack>> {
        self.order.iter().filter_map(|id| self.tracks.get(id))
    }

    /// Files that were skipped, with reasons.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Tracks whose title, artist, album or file name contains every word
    /// of `query`, case-insensitively; an empty query lists everything.
    pub fn search(&self, query: &str, limit: usize) -> Vec<CatalogEntry> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        self.order
            .iter()
            .filter(|id| {
                let text = self.search_text.get(*id).map_or("", String::as_str);
                words.iter().all(|w| text.contains(w.as_str()))
            })
            .filter_map(|id| self.tracks.get(id))
            .take(limit)
            .map(|t| t.catalog_entry())
            .collect()
    }

    /// The best match for a query ([`match_score`]; the first in library
    /// order among equals), as a listener playing by query wants it.
    pub fn best_match(&self, query: &str) -> Option<CatalogEntry> {
        let mut best: Option<(u32, CatalogEntry)> = None;
        for e in self.search(query, usize::MAX) {
            let score = match_score(&e, query);
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, e));
            }
        }
        best.map(|(_, e)| e)
    }

    /// Removes a track (its file changed under us); it comes back at the
    /// next scan as a new track if the file is still audio.
    pub fn remove(&mut self, id: &TrackId) -> Option<Arc<LibraryTrack>> {
        self.order.retain(|t| t != id);
        self.search_text.remove(id);
        self.tracks.remove(id)
    }

    /// Adds a track indexed on its own (a file indexed again after it
    /// changed), keeping the library's order.
    pub fn add(&mut self, track: LibraryTrack) {
        self.insert(track);
        self.sort();
    }

    fn insert(&mut self, track: LibraryTrack) {
        let id = track.manifest.id();
        if self.tracks.contains_key(&id) {
            // The same bytes under two names: serve one.
            return;
        }
        self.search_text.insert(id, track.haystack());
        self.tracks.insert(id, Arc::new(track));
        self.order.push(id);
    }

    fn sort(&mut self) {
        let tracks = &self.tracks;
        self.order.sort_by_cached_key(|id| {
            let t = &tracks[id];
            let tags = t.manifest.tags();
            (
                tags.album_artist.clone().or_else(|| tags.artist.clone()).unwrap_or_default(),
                tags.album.clone().unwrap_or_default(),
                tags.disc_number.unwrap_or(0),
                tags.track_number.unwrap_or(0),
                t.file_name.clone(),
            )
        });
    }
}

/// What a scan did.
#[derive(Debug, Default, Clone)]
pub struct ScanReport {
    /// Files probed and hashed this time.
    pub indexed: usize,
    /// Files whose previous index entry was reused.
    pub reused: usize,
    /// Entries of the previous index whose files are gone.
    pub removed: usize,
    /// Files skipped this scan (new or old reasons).
    pub skipped: usize,
    /// Tracks by codec name.
    pub formats: BTreeMap<&'static str, usize>,
    /// Total playing time.
    pub duration: Duration,
    /// Wall time the scan took.
    pub elapsed: Duration,
}

/// Progress of a scan, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct ScanProgress {
    /// Files looked at so far.
    pub done: usize,
    /// Files found in all.
    pub total: usize,
}

/// Scan settings.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// Chunk size for new manifests.
    pub chunk_size: ChunkSize,
    /// Threads that probe and hash at once; defaults to the number of cores.
    pub threads: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            chunk_size: ChunkSize::DEFAULT,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    tracks: Vec<IndexEntry>,
    skipped: Vec<Skipped>,
}

#[derive(Serialize, Deserialize)]
struct IndexEntry {
    path: PathBuf,
    size: u64,
    mtime_ns: u128,
    manifest: Vec<u8>,
    /// The chunk hash list (the manifest holds a hash per page of it).
    hashes: Vec<u8>,
}

/// Loads the previous index from `data_dir`. A missing index is empty; an
/// unreadable one is reported and treated as empty (everything is
/// re-indexed; nothing else is lost).
pub fn load_index(data_dir: &Path) -> (Vec<LibraryTrack>, Vec<Skipped>) {
    let path = data_dir.join(INDEX_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; re-indexing the library", path.display());
            return (Vec::new(), Vec::new());
        }
    };
    let index: IndexFile = match postcard::from_bytes(&bytes) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("{} is corrupt ({e}); re-indexing the library", path.display());
            return (Vec::new(), Vec::new());
        }
    };
    if index.version != INDEX_VERSION {
        tracing::info!("library index is version {}; re-indexing", index.version);
        return (Vec::new(), Vec::new());
    }
    let tracks = index
        .tracks
        .into_iter()
        .filter_map(|e| {
            let manifest = Manifest::decode(Bytes::from(e.manifest)).ok()?;
            // A track whose list does not check out is indexed again.
            manifest.learn_hashes(0, &e.hashes).ok()?;
            manifest.hashes_known().then_some(())?;
            Some(LibraryTrack {
                file_name: file_name_of(&e.path),
                path: e.path,
                size: e.size,
                mtime_ns: e.mtime_ns,
                manifest,
            })
        })
        .collect();
    (tracks, index.skipped)
}

/// Writes the index atomically: temp file, fsync, rename.
pub fn save_index(data_dir: &Path, library: &Library) -> Result<()> {
    fs::create_dir_all(data_dir).map_err(|e| Error::io("creating data dir", data_dir, e))?;
    let index = IndexFile {
        version: INDEX_VERSION,
        tracks: library
            .tracks()
            .map(|t| IndexEntry {
                path: t.path.clone(),
                size: t.size,
                mtime_ns: t.mtime_ns,
                manifest: t.manifest.encoded().to_vec(),
                hashes: t
                    .manifest
                    .hash_pages(0..t.manifest.page_count())
                    .map(|b| b.to_vec())
                    .unwrap_or_default(),
            })
            .collect(),
        skipped: library.skipped.clone(),
    };
    let bytes = postcard::to_stdvec(&index)?;
    let path = data_dir.join(INDEX_FILE);
    let tmp = data_dir.join(format!("{INDEX_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        // Make the rename itself durable.
        File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| Error::io("writing library index", &path, e))
}

fn file_name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn mtime_ns(meta: &fs::Metadata) -> u128 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

/// Finds every regular file under `roots`. Symlinks are followed only when
/// their target lies inside one of the roots; each one that leads out is
/// reported. Hidden files and directories (dot-names) are passed over.
pub fn walk(roots: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut warnings = Vec::new();
    let canon_roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|r| match fs::canonicalize(r) {
            Ok(c) => Some(c),
            Err(e) => {
                warnings.push(format!("{}: {e}", r.display()));
                None
            }
        })
        .collect();
    let mut files = Vec::new();
    let mut seen_dirs = HashSet::new();
    let mut stack: Vec<PathBuf> = canon_roots.clone();
    while let Some(dir) = stack.pop() {
        if !seen_dirs.insert(dir.clone()) {
            continue;
        }
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("{}: cannot list ({e})", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            let target = if ft.is_symlink() {
                match fs::canonicalize(&path) {
                    Ok(t) if canon_roots.iter().any(|r| t.starts_with(r)) => t,
                    Ok(t) => {
                        warnings.push(format!(
                            "{}: symlink leads outside the library (to {}); skipped",
                            path.display(),
                            t.display()
                        ));
                        continue;
                    }
                    Err(e) => {
                        warnings.push(format!("{}: broken symlink ({e}); skipped", path.display()));
                        continue;
                    }
                }
            } else {
                path.clone()
            };
            match fs::metadata(&target) {
                Ok(m) if m.is_dir() => stack.push(target),
                Ok(m) if m.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    files.dedup();
    (files, warnings)
}

/// Where a track is cut (see [`ChunkLayout::aligned`]): where the decoder
/// starts reading, when that is past a leading tag it skips (an MP3's ID3
/// tag, often a cover picture of 100 KB and more), so the chunk a start
/// plays first is the stream from its first byte, not the tag's tail with
/// a few KB of audio; 0 (no cut) when the first header range begins the
/// file (the decoder reads from there: a cut past the header would only
/// split the chunk the header shares with the first audio).
pub fn stream_start(media: &chorus_protocol::MediaInfo) -> u64 {
    media.header_ranges.first().map_or(0, |h| h.start)
}

/// Where a track without a gap is cut ([`ChunkLayout::aligned`]): where an
/// index at the file's end begins (an MP4's `moov` after its audio: the
/// first header range past the first audio; the index may be several,
/// around cover art), so the chunks there that every start waits for
/// hold the index, not up to a chunk of audio before it (12 KB of the
/// sample AAC's, 5 ms at 20 Mbit/s); else where the stream starts
/// ([`stream_start`]).
pub fn cut_at(media: &chorus_protocol::MediaInfo) -> u64 {
    let audio = media.time_index.first().map(|p| p.byte_offset);
    let tail = audio.and_then(|a| media.header_ranges.iter().skip(1).find(|h| h.start > a));
    tail.map_or_else(|| stream_start(media), |h| h.start)
}

/// Indexes one file: probe, then read and hash every chunk. The file is
/// stat'ed before and after; if it changed meanwhile the result is thrown
/// away.
pub fn index_file(path: &Path, chunk_size: ChunkSize) -> Result<LibraryTrack> {
    let before = fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    let size = before.len();
    let probed = probe::probe_file(path, size)?;
    // A cut on each side of bytes no player needs right before the audio
    // (a FLAC's padding), when they fit in a chunk; else one where the
    // stream starts.
    let gapped = probed.gap.as_ref().and_then(|g| {
        let lead = u32::try_from(g.start).ok()?;
        let gap = u32::try_from(g.end - g.start).ok()?;
        ChunkLayout::with_gap(size, chunk_size, lead, gap).ok()
    });
    let layout = match gapped {
        Some(layout) => Ok(layout),
        None => ChunkLayout::aligned(size, chunk_size, cut_at(&probed.media)),
    }
    .map_err(|e| Error::NotAudio {
        path: path.to_owned(),
        reason: format!("cannot be chunked ({e})"),
    })?;
    let hashes = hash_file(path, &layout)?;
    let after = fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if after.len() != size || mtime_ns(&after) != mtime_ns(&before) {
        return Err(Error::NotAudio {
            path: path.to_owned(),
            reason: "changed while being indexed; will retry at the next scan".into(),
        });
    }
    let manifest = Manifest::new(probed.media, layout, hashes).map_err(|e| Error::NotAudio {
        path: path.to_owned(),
        reason: format!("cannot make a manifest ({e})"),
    })?;
    Ok(LibraryTrack {
        file_name: file_name_of(path),
        path: path.to_owned(),
        size,
        mtime_ns: mtime_ns(&before),
        manifest,
    })
}

fn hash_file(path: &Path, layout: &ChunkLayout) -> Result<Vec<ChunkHash>> {
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; layout.chunk_size().get() as usize];
    let mut hashes = Vec::with_capacity(layout.count() as usize);
    for index in layout.indices() {
        let len = layout.chunk_len(index) as usize;
        reader.read_exact(&mut buf[..len]).map_err(|e| Error::io("reading", path, e))?;
        hashes.push(ChunkHash::of(&buf[..len]));
    }
    Ok(hashes)
}

/// Extensions of files that may hold audio: failures to index these are
/// worth a warning each; anything else that fails is summarised in one
/// line (cover art, playlists and notes sit in most album folders).
const AUDIO_EXTENSIONS: &[&str] = &[
    "mp3", "mp2", "mp1", "ogg", "oga", "opus", "flac", "m4a", "m4b", "mp4", "aac", "alac", "wav",
    "wave", "aif", "aiff", "aifc", "caf", "mka", "mkv", "webm", "adts",
];

fn looks_like_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Scans `roots`, reusing `previous` entries whose size and mtime still
/// match, and reports each file it skips through `warn`.
pub fn scan(
    roots: &[PathBuf],
    previous: (Vec<LibraryTrack>, Vec<Skipped>),
    config: &ScanConfig,
    progress: &(dyn Fn(ScanProgress) + Sync),
    warn: &(dyn Fn(&str) + Sync),
) -> (Library, ScanReport) {
    let started = Instant::now();
    let (files, walk_warnings) = walk(roots);
    for w in &walk_warnings {
        warn(w);
    }
    let (prev_tracks, prev_skipped) = previous;
    let mut prev: HashMap<PathBuf, LibraryTrack> =
        prev_tracks.into_iter().map(|t| (t.path.clone(), t)).collect();
    let prev_skipped: HashMap<PathBuf, Skipped> =
        prev_skipped.into_iter().map(|s| (s.path.clone(), s)).collect();
    let present: HashSet<&PathBuf> = files.iter().collect();
    let mut report = ScanReport {
        removed: prev.keys().filter(|p| !present.contains(p)).count(),
        ..ScanReport::default()
    };

    let mut library = Library::default();
    let mut to_index = Vec::new();
    for path in &files {
        let Ok(meta) = fs::metadata(path) else { continue };
        let (size, mtime) = (meta.len(), mtime_ns(&meta));
        match prev.remove(path) {
            Some(t)
                if t.size == size
                    && t.mtime_ns == mtime
                    && t.manifest.layout().chunk_size() == config.chunk_size =>
            {
                report.reused += 1;
                library.insert(t);
                continue;
            }
            _ => {}
        }
        if let Some(s) = prev_skipped.get(path) {
            if s.size == size && s.mtime_ns == mtime {
                report.skipped += 1;
                library.skipped.push(s.clone());
                continue;
            }
        }
        to_index.push((path.clone(), size, mtime));
    }

    let total = files.len();
    let done = AtomicUsize::new(total - to_index.len());
    progress(ScanProgress { done: done.load(Ordering::Relaxed), total });
    let next = AtomicUsize::new(0);
    let threads = config.threads.clamp(1, 16).min(to_index.len().max(1));
    let results: Vec<Vec<(usize, Result<LibraryTrack>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, _, _)) = to_index.get(i) else { break };
                        // A panic inside the demuxer costs that file only.
                        let indexed =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                index_file(path, config.chunk_size)
                            }))
                            .unwrap_or_else(|_| {
                                Err(Error::NotAudio {
                                    path: path.clone(),
                                    reason: "the demuxer crashed on it".into(),
                                })
                            });
                        out.push((i, indexed));
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        progress(ScanProgress { done: d, total });
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let mut results: Vec<_> = results.into_iter().flatten().collect();
    results.sort_by_key(|(i, _)| *i);
    let mut not_audio = Vec::new();
    for (i, result) in results {
        let (path, size, mtime) = &to_index[i];
        match result {
            Ok(track) => {
                report.indexed += 1;
                library.insert(track);
            }
            Err(e) => {
                report.skipped += 1;
                let reason = match &e {
                    Error::NotAudio { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                if looks_like_audio(path) || !matches!(e, Error::NotAudio { .. }) {
                    warn(&format!("skipping {}: {reason}", path.display()));
                } else {
                    not_audio.push(file_name_of(path));
                }
                library.skipped.push(Skipped {
                    path: path.clone(),
                    size: *size,
                    mtime_ns: *mtime,
                    reason,
                });
            }
        }
    }
    if !not_audio.is_empty() {
        let shown: Vec<&str> = not_audio.iter().take(5).map(String::as_str).collect();
        let more = not_audio.len().saturating_sub(shown.len());
        warn(&format!(
            "skipping {} files that are not audio: {}{}",
            not_audio.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    library.sort();
    for t in library.tracks.values() {
        *report.formats.entry(t.manifest.media().codec.name()).or_default() += 1;
        report.duration += t.manifest.duration();
    }
    report.elapsed = started.elapsed();
    (library, report)
}
