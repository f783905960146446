//! Playing one track: the fetcher fills a [`TrackStore`] from peers while a
//! decode thread reads it through a [`ChunkSource`], decodes, converts and
//! hands samples to the sink.
//!
//! Tasks: the fetch task (async, [`fetch_track`]) and one decode thread
//! (blocking: it waits on the store for missing chunks). The sink may add a
//! real-time consumer (cpal's callback, or the null sink's clock thread).
//! They share the store and [`PlaybackStats`]; nothing else.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chorus_protocol::Manifest;
use chorus_streamer::fetch::{
    FetchConfig, FetchControl, FetchStats, Source, fetch_in_order, fetch_track,
};
use chorus_streamer::store::{MEMORY_WINDOW, TrackStore};

/// Longest a track that played to its end waits for the fetch to get what
/// playback skipped (so the cache holds the whole track).
const FINISH_GRACE: Duration = Duration::from_secs(3);

use crate::convert::Converter;
use crate::decode::{Decoder, extension_hint};
use crate::error::{Error, Result};
use crate::sink::{self, OutputSpec};
use crate::source::ChunkSource;
use crate::stats::PlaybackStats;

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Where in the track to start.
    pub start: Duration,
    /// Decoded audio to hold before a real-time sink starts, besides the
    /// fetcher's start rule: 50 ms covers decoder jitter and is far less
    /// than one chunk of audio at any bitrate we serve, so it costs no
    /// extra round trip.
    pub prebuffer: Duration,
    /// Longest a read waits for one chunk before playback gives up, as a
    /// backstop behind the fetcher's own per-peer stall detection.
    pub max_wait: Duration,
    /// Fetcher settings.
    pub fetch: FetchConfig,
    /// The track's own gain (linear; from ReplayGain with `--normalize`),
    /// applied under the listener's volume.
    pub gain: f32,
    /// Chunks already here (the head a start response carried): they go
    /// into the store (and the cache) before anything is fetched.
    pub head: Vec<chorus_protocol::VerifiedChunk>,
    /// Play at most this much audio of the track (exact to the output
    /// sample, for every sink).
    pub duration: Option<Duration>,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            start: Duration::ZERO,
            prebuffer: Duration::from_millis(50),
            max_wait: Duration::from_secs(30),
            fetch: FetchConfig::default(),
            gain: 1.0,
            head: Vec::new(),
            duration: None,
        }
    }
}

/// What happened, measured.
#[derive(Debug, Clone)]
pub struct PlaybackReport {
    /// From the `started` instant to the first sample handed to the sink.
    pub time_to_first_audio: Option<Duration>,
    /// Underrun episodes (each played silence).
    pub underruns: u64,
    /// Total silence played because of underruns.
    pub silent: Duration,
    /// Where in the track the last underrun began (if this track had one).
    pub underrun_at: Option<Duration>,
    /// Audio played.
    pub played: Duration,
    /// Verified chunk bytes fetched from peers.
    pub bytes_fetched: u64,
    /// Times a read waited on the network for more than a moment.
    pub stalls: u64,
    /// The track's sample rate.
    pub track_rate: u32,
    /// The sink's sample rate.
    pub output_rate: u32,
    /// Where playback actually started (a seek lands on a packet edge).
    pub started_at: Duration,
    /// Verified bytes received from each peer: id, address, bytes, seed.
    pub sources: Vec<(chorus_protocol::PeerId, std::net::SocketAddr, u64, bool)>,
    /// Requests hedged to a second peer.
    pub hedges: u64,
    /// Peers dropped for sending bad data (ban them from further dialling).
    pub banned: Vec<chorus_protocol::PeerId>,
    /// Chunk bytes that came from the local cache instead of the network.
    pub bytes_from_cache: u64,
    /// The track followed the previous one in the same open sink, without
    /// a gap.
    pub joined: bool,
    /// Chunk requests the fetcher sent before playback was allowed to
    /// start (0 when the head given in [`PlayOptions::head`] sufficed).
    pub requests_before_start: u64,
    /// The start rule's margin when playback was allowed to start, and
    /// whether the peers reported the path clean (`None`: the head
    /// sufficed, the track was whole, or the rule was not judged).
    pub start_margin: Option<(Duration, bool)>,
    /// When the decoder was open at the start point, from the start
    /// (`None` when joined without a gap).
    pub decoder_ready: Option<Duration>,
    /// When the output was open, from the start (`None` when joined).
    pub output_open: Option<Duration>,
}

/// A playback in progress: counters to show while it runs, and controls.
#[derive(Clone)]
pub struct Playback {
    /// Live counters (of the sink: they carry over a gapless join).
    pub stats: Arc<PlaybackStats>,
    /// Live fetch counters.
    pub fetch: Arc<FetchStats>,
    /// The track's chunks.
    pub store: Arc<TrackStore>,
    /// Raised to end this track early (the next one starts at once).
    cancel: Arc<AtomicBool>,
    /// This track's start rule (raised by its fetcher).
    ready: Arc<AtomicBool>,
    /// The fetcher's controls.
    control: Arc<FetchControl>,
}

impl Playback {
    /// Stops playback as soon as possible: blocked reads and writes return
    /// and the sink is released.
    pub fn stop(&self) {
        self.stats.stop.store(true, Relaxed);
        self.store.close();
    }

    /// Ends this track now; what it left in the sink is dropped when the
    /// next track starts.
    pub fn skip(&self) {
        self.cancel.store(true, Relaxed);
        self.stats.skip.store(true, Relaxed);
        self.store.close();
    }

    /// Seeks to `t` in the track (the latest request wins). Its latency
    /// is measured to the first sample played from there.
    pub fn seek(&self, t: Duration) {
        let m = self.store.manifest();
        let t = t.min(m.duration());
        self.store.hint(m.chunk_at_time(crate::decode::reads_from(m, t)));
        // Play from the new place once the start rule holds there again
        // (the fetcher re-raises it), not with one chunk in hand. Only
        // while fetching, and only for the sink's own gate (a gapless join
        // keeps the first track's). The fetch hears of the seek first: the
        // decoder that takes it then reads this seek in the fetch's count,
        // for the audio it reports decoded there.
        let hold = !self.store.is_complete() && Arc::ptr_eq(&self.stats.gate, &self.ready);
        self.control.seeked(t, hold);
        self.stats.request_seek(t);
    }

    /// Adds a peer to fetch from while playing (one that answered late).
    pub fn add_source(&self, source: Source) {
        self.control.add_source(source);
    }

    /// Pauses or resumes.
    pub fn set_paused(&self, paused: bool) {
        self.stats.paused.store(paused, Relaxed);
    }

    /// Sets the volume (linear gain; ramped, so no click).
    pub fn set_volume(&self, gain: f32) {
        self.stats.set_volume(gain);
    }
}

/// Plays `manifest`'s track from `sources` into `output`. `started` is when
/// the user asked (the clock for time to first audio). `on_start` is called
/// once the playback's counters exist, for a status display.
pub async fn play(
    manifest: Manifest,
    sources: Vec<Source>,
    output: OutputSpec,
    options: PlayOptions,
    started: Instant,
    on_start: impl FnOnce(&Playback),
) -> Result<PlaybackReport> {
    let mut player = Player::new(output, false);
    let report = player.play(manifest, sources, options, started, on_start).await;
    let finished = player.finish().await;
    let report = report?;
    finished?;
    Ok(report)
}

/// What one decode job hands back.
/// Track rate, sink rate, where playback started, and the track position
/// after the last sample written.
type JobResult = Result<(u32, u32, Duration, Duration)>;

struct Job {
    store: Arc<TrackStore>,
    stats: Arc<PlaybackStats>,
    cancel: Arc<AtomicBool>,
    /// Open a new sink (finishing the old one), or continue the open one.
    new_sink: bool,
    /// Drop what the previous track left in the sink (it was skipped).
    discard: bool,
    /// Leave the sink open afterwards for a gapless join.
    keep_open: bool,
    options: PlayOptions,
    hint: Option<&'static str>,
    /// The fetch's controls: the decoder reports the audio it has ready.
    control: Arc<FetchControl>,
    done: tokio::sync::oneshot::Sender<JobResult>,
}

enum Command {
    Play(Box<Job>),
    Finish(tokio::sync::oneshot::Sender<Result<()>>),
}

/// The sink a player holds between tracks, with the format it was opened
/// for.
struct OpenSink {
    sink: Box<dyn sink::Sink>,
    stats: Arc<PlaybackStats>,
}

/// Plays tracks one after another through one output. With `gapless`,
/// consecutive tracks of the same rate and channel count share one open
/// sink: the next track's first sample follows the last one's with no gap.
/// The sink lives on one decode thread for the player's whole life.
pub struct Player {
    gapless: bool,
    commands: std::sync::mpsc::SyncSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The open sink's input format and counters, when one is open.
    current: Option<(u32, usize, Arc<PlaybackStats>)>,
    /// The last track was skipped: drop what it left in the sink.
    skipped: bool,
}

impl Player {
    /// A player writing to `output`.
    pub fn new(output: OutputSpec, gapless: bool) -> Self {
        let (commands, rx) = std::sync::mpsc::sync_channel::<Command>(1);
        let thread = std::thread::Builder::new()
            .name("chorus-decode".into())
            .spawn(move || decode_thread(&output, &rx))
            .ok();
        Self { gapless, commands, thread, current: None, skipped: false }
    }

    /// Plays one track (see [`play`]); returns when its last sample is in
    /// the sink, or, without gapless, when it has played out.
    pub async fn play(
        &mut self,
        manifest: Manifest,
        sources: Vec<Source>,
        options: PlayOptions,
        started: Instant,
        on_start: impl FnOnce(&Playback),
    ) -> Result<PlaybackReport> {
        let store = Arc::new(match &options.fetch.cache {
            Some(cache) => TrackStore::with_cache(manifest.clone(), cache.clone(), MEMORY_WINDOW),
            None => TrackStore::new(manifest.clone()),
        });
        let bytes_from_cache = match &options.fetch.cache {
            Some(cache) => prefill_from_cache(cache, &store).await,
            None => 0,
        };
        if !options.head.is_empty() {
            let head = options.head.clone();
            for chunk in &head {
                let _ = store.insert(chunk.clone());
            }
            if let Some(cache) = &options.fetch.cache {
                for chunk in head {
                    cache.put_chunk_later(chunk);
                }
            }
        }
        let control = Arc::new(FetchControl::default());
        let media = manifest.media();
        let format = (media.sample_rate, usize::from(media.channels));
        let (stats, new_sink) = match &self.current {
            Some((rate, ch, stats))
                if self.gapless && (*rate, *ch) == format && !stats.stop.load(Relaxed) =>
            {
                // The sink is already playing: the start rule has nothing to
                // hold back.
                control.ready.store(true, Relaxed);
                (stats.clone(), false)
            }
            _ => (Arc::new(PlaybackStats::with_gate(started, control.ready.clone())), true),
        };
        let before = Counters::read(&stats);
        let fetch_stats = Arc::new(FetchStats::default());
        // The head came in the first source's start response: its bytes
        // are that peer's (a short play may end before any other lands).
        if let Some(s) = sources.first() {
            let head: u64 = options.head.iter().map(|c| c.data().len() as u64).sum();
            if head > 0 {
                fetch_stats.credit(&s.peer, s.is_seed, head);
            }
        }
        if !options.start.is_zero() {
            store.hint(manifest.chunk_at_time(crate::decode::reads_from(&manifest, options.start)));
        }
        if new_sink {
            stats.plan_start(options.start);
            control.set_playhead(options.start, false);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let playback = Playback {
            stats: stats.clone(),
            fetch: fetch_stats.clone(),
            store: store.clone(),
            cancel: cancel.clone(),
            ready: control.ready.clone(),
            control: control.clone(),
        };
        on_start(&playback);
        let has_cache = options.fetch.cache.is_some();
        let mut fetcher = match sources.first() {
            Some(first) if options.fetch.plain_order => tokio::spawn(fetch_in_order(
                store.clone(),
                first.clone(),
                fetch_stats.clone(),
                control.clone(),
            )),
            _ => tokio::spawn(fetch_track(
                store.clone(),
                sources,
                options.fetch.clone(),
                fetch_stats.clone(),
                control.clone(),
            )),
        };
        // Tell the scheduler where the audible playhead is.
        let playhead = {
            let (stats, control) = (stats.clone(), control.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tick.tick().await;
                    // While a seek is under way the fetch follows the
                    // reader, which may scan a long way to the target.
                    let playing = stats.time_to_first_audio().is_some() && !stats.seeking();
                    control.set_playhead(stats.target_position(), playing);
                }
            })
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let job = Job {
            store: store.clone(),
            stats: stats.clone(),
            cancel: cancel.clone(),
            new_sink,
            discard: std::mem::take(&mut self.skipped),
            keep_open: self.gapless,
            hint: extension_hint(manifest.media().container),
            options,
            control: control.clone(),
            done,
        };
        let sent = self.commands.send(Command::Play(Box::new(job)));
        let decoded = match sent {
            Ok(()) => result.await.unwrap_or_else(|_| Err(thread_failed())),
            Err(_) => Err(thread_failed()),
        };
        // Every sample of the track is in the sink: nothing is left for
        // the start rule to wait for (a short --duration can end decoding
        // before the fetcher has judged it).
        if decoded.is_ok() {
            control.ready.store(true, Relaxed);
        }
        // Played to its end with only what playback skipped still missing
        // (an MP3's leading tag, what a seek jumped over): a moment for the
        // fetch to get it, so the cache holds the whole track.
        if decoded.is_ok() && has_cache && !cancel.load(Relaxed) && store.missing_only_behind() {
            let _ = tokio::time::timeout(FINISH_GRACE, &mut fetcher).await;
        }
        store.close();
        fetcher.abort();
        playhead.abort();
        if new_sink && decoded.is_ok() {
            wait_for_first_audio(&stats, &cancel).await;
        }
        self.skipped = cancel.load(Relaxed);
        self.current = match (&decoded, self.gapless) {
            (Ok(_), true) => Some((format.0, format.1, stats.clone())),
            _ => None,
        };
        let (track_rate, output_rate, started_at, end) = decoded?;
        // Played to its end: all of it is heard, even if (gapless) the sink
        // still holds the last of it. Stopped or skipped: what was heard.
        let whole = !cancel.load(Relaxed) && !stats.stop.load(Relaxed);
        let heard = if whole { end } else { stats.position() };
        let after = Counters::read(&stats);
        Ok(PlaybackReport {
            time_to_first_audio: if new_sink {
                stats.time_to_first_audio()
            } else {
                // Joined without a gap: the first sample came as the last
                // one of the previous track played.
                Some(Duration::ZERO)
            },
            underruns: after.underruns - before.underruns,
            silent: after.silent.saturating_sub(before.silent),
            underrun_at: if after.underruns > before.underruns {
                stats.underrun_at()
            } else {
                None
            },
            played: heard.saturating_sub(started_at),
            bytes_fetched: fetch_stats.bytes.load(Relaxed),
            stalls: after.stalls - before.stalls,
            track_rate,
            output_rate,
            started_at,
            sources: fetch_stats.by_peer.lock().map(|v| v.clone()).unwrap_or_default(),
            hedges: fetch_stats.hedges.load(Relaxed),
            banned: fetch_stats.banned.lock().map(|v| v.clone()).unwrap_or_default(),
            bytes_from_cache,
            joined: !new_sink,
            requests_before_start: fetch_stats.requests_before_start.load(Relaxed),
            start_margin: match fetch_stats.start_margin_us.load(Relaxed) {
                0 => None,
                us => Some((Duration::from_micros(us), fetch_stats.start_clean.load(Relaxed))),
            },
            decoder_ready: if new_sink { stats.time_to_decoder_ready() } else { None },
            output_open: if new_sink { stats.time_to_output_open() } else { None },
        })
    }

    /// Plays out what the sink holds and closes it.
    pub async fn finish(mut self) -> Result<()> {
        self.current = None;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Finish(tx)).is_err() {
            return Err(thread_failed());
        }
        let r = rx.await.unwrap_or_else(|_| Err(thread_failed()));
        if let Some(t) = self.thread.take() {
            // Closing the channel ends the thread; it is idle now.
            drop(self);
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        r
    }
}

/// Waits (bounded) until a sink that plays in real time has played the
/// first sample of what it was given, so the report can say when it did.
/// A track shorter than the sink's buffer is all written before that.
async fn wait_for_first_audio(stats: &PlaybackStats, cancel: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.time_to_first_audio().is_none()
        && !stats.stop.load(Relaxed)
        && !cancel.load(Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn thread_failed() -> Error {
    Error::Source("the decode thread failed".into())
}

/// Counters read before and after a track, for its own share.
struct Counters {
    underruns: u64,
    silent: Duration,
    stalls: u64,
}

impl Counters {
    fn read(s: &PlaybackStats) -> Self {
        Self {
            underruns: s.underruns.load(Relaxed),
            silent: s.silent(),
            stalls: s.stalls.load(Relaxed),
        }
    }
}

/// Registers the track with the cache and marks what the cache holds of
/// it as present in the store, without reading it: the reader loads each
/// chunk from the cache (verified again) when it gets there. Returns those
/// chunks' bytes.
async fn prefill_from_cache(
    cache: &Arc<chorus_streamer::cache::ChunkCache>,
    store: &Arc<TrackStore>,
) -> u64 {
    let (cache, store) = (cache.clone(), store.clone());
    tokio::task::spawn_blocking(move || {
        let id = store.manifest().id();
        if let Err(e) = cache.put_manifest(store.manifest()) {
            tracing::warn!("cache unavailable: {e}");
            return 0;
        }
        let held = cache.have(&id).into_iter().flat_map(|r| r.start..r.start + r.len);
        if cache.stores() {
            return store.adopt_cached(held);
        }
        // A read-only cache cannot take chunks back after the store drops
        // them: read what it holds into the store.
        let mut bytes = 0;
        for i in held {
            if let Some(chunk) = cache.get_chunk(&id, chorus_protocol::ChunkIndex(i)) {
                let len = chunk.data().len() as u64;
                if store.insert(chunk).is_ok() {
                    bytes += len;
                }
            }
        }
        bytes
    })
    .await
    .unwrap_or(0)
}

/// The decode thread: runs jobs one by one, holding the sink in between.
fn decode_thread(output: &OutputSpec, commands: &std::sync::mpsc::Receiver<Command>) {
    let mut open: Option<OpenSink> = None;
    // Sinks opened so far: a second WAV file gets a numbered name instead of
    // overwriting the first.
    let mut opened = 0usize;
    while let Ok(command) = commands.recv() {
        match command {
            Command::Play(job) => {
                let Job {
                    store,
                    stats,
                    cancel,
                    new_sink,
                    discard,
                    keep_open,
                    options,
                    hint,
                    control,
                    done,
                } = *job;
                if new_sink && let Some(mut old) = open.take() {
                    old.stats.clear_seek();
                    old.stats.end_of_stream.store(true, Relaxed);
                    if let Err(e) = old.sink.finish() {
                        tracing::warn!("{e}");
                    }
                }
                stats.skip.store(false, Relaxed);
                // A seek asked of the previous track is not this one's.
                stats.clear_seek();
                let track = Track { store, stats, cancel, options, hint, discard, control };
                let spec = numbered(output, opened);
                let was_open = open.is_some();
                // A panic inside the decoder ends this track with an error;
                // the thread, the player and the queue go on.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decode_track(&track, &spec, &mut open)
                }))
                .unwrap_or_else(|_| {
                    tracing::error!("the decoder crashed on this track; skipping it");
                    Err(Error::NotPlayable("the decoder crashed on this track"))
                });
                if !was_open && open.is_some() {
                    opened += 1;
                }
                if !keep_open || result.is_err() {
                    if let Some(mut s) = open.take() {
                        s.stats.clear_seek();
                        s.stats.end_of_stream.store(true, Relaxed);
                        let finished = s.sink.finish();
                        let _ = done.send(result.and_then(|r| finished.map(|()| r)));
                        continue;
                    }
                }
                let _ = done.send(result);
            }
            Command::Finish(done) => {
                let mut r = Ok(());
                if let Some(mut s) = open.take() {
                    s.stats.clear_seek();
                    s.stats.end_of_stream.store(true, Relaxed);
                    r = s.sink.finish();
                }
                let _ = done.send(r);
            }
        }
    }
}

/// `FILE.wav` for the first sink, `FILE-2.wav`, `FILE-3.wav`… after.
fn numbered(output: &OutputSpec, opened: usize) -> OutputSpec {
    match output {
        OutputSpec::Wav(path) if opened > 0 => {
            let stem =
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let ext =
                path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
            OutputSpec::Wav(path.with_file_name(format!("{stem}-{}{ext}", opened + 1)))
        }
        other => other.clone(),
    }
}

struct Track {
    store: Arc<TrackStore>,
    stats: Arc<PlaybackStats>,
    cancel: Arc<AtomicBool>,
    options: PlayOptions,
    hint: Option<&'static str>,
    discard: bool,
    control: Arc<FetchControl>,
}

/// Decodes one track into the open sink (opening one if there is none).
/// Returns the track's rate, the sink's rate and where playback started.
fn decode_track(t: &Track, output: &OutputSpec, open: &mut Option<OpenSink>) -> JobResult {
    let st = t.stats.clone();
    let on_stall = Box::new(move |chunk: u32| {
        st.stalls.fetch_add(1, Relaxed);
        tracing::warn!("stalled: waiting for chunk {chunk} from peers");
    });
    let stopped = || t.stats.stop.load(Relaxed) || t.cancel.load(Relaxed);
    // A sound card opens while the first chunks are on their way, at the
    // manifest's format (the converter makes up any difference): an audio
    // server takes milliseconds to tens of them to open a stream, which
    // after the decoder would come on top of the network's time. Files
    // and standard output open once the track is known to decode.
    if open.is_none() && matches!(output, OutputSpec::Device(_) | OutputSpec::Null) {
        let media = t.store.manifest().media();
        let (rate, channels) = (media.sample_rate, usize::from(media.channels));
        if rate > 0 && channels > 0 {
            *open = Some(open_output(t, output, rate, channels)?);
        }
    }
    let source = ChunkSource::new(t.store.clone(), t.options.max_wait, on_stall);
    let shown = source.length_shown();
    let early = early_codec(&t.store, EARLY_CODEC_WAIT);
    // With the codec made, an Ogg's first audio page is read a packet at a
    // time from the manifest's first index point.
    let first_audio = t.store.manifest().media().time_index.first().map(|p| p.byte_offset);
    let opened = match (early, first_audio) {
        (Some(early), Some(at)) => Decoder::open_by_packets(Box::new(source), early, at),
        (early, _) => Decoder::open_with(Box::new(source), t.hint, early),
    };
    let mut decoder = match opened {
        Err(Error::Source(_)) if stopped() => return Ok((0, 0, Duration::ZERO, Duration::ZERO)),
        d => d?,
    };
    shown.store(true, Relaxed);
    if decoder.codec_made_early() {
        tracing::debug!("codec made from the header pages while the first audio page came");
    }
    let media = t.store.manifest().media();
    let indexed = match media.container {
        chorus_protocol::Container::Mpeg => Some(crate::decode::IndexedFormat::Mpeg),
        chorus_protocol::Container::Flac => Some(crate::decode::IndexedFormat::Flac),
        chorus_protocol::Container::Ogg if media.codec == chorus_protocol::Codec::Vorbis => {
            Some(crate::decode::IndexedFormat::Ogg)
        }
        _ => None,
    };
    if let Some(format) = indexed.filter(|_| !media.time_index.is_empty()) {
        // Seeks start from the manifest's frame-exact index points: only
        // the chunks from the target (a little before, for MPEG) are read.
        let m = t.store.manifest().clone();
        let points: crate::decode::Points =
            Box::new(move || m.time_points().iter().map(|p| (p.byte_offset, p.time_us)).collect());
        let (store, stats, max_wait) = (t.store.clone(), t.stats.clone(), t.options.max_wait);
        let open_at: crate::decode::OpenAt = Box::new(move |base| {
            let st = stats.clone();
            let on_stall = Box::new(move |chunk: u32| {
                st.stalls.fetch_add(1, Relaxed);
                tracing::warn!("stalled: waiting for chunk {chunk} from peers");
            });
            Box::new(ChunkSource::at(store.clone(), base, max_wait, on_stall))
        });
        let preroll = crate::decode::preroll(t.store.manifest());
        decoder = decoder.with_index(crate::decode::SeekIndex { points, open_at, format, preroll });
    }
    let started_at =
        if t.options.start.is_zero() { Duration::ZERO } else { decoder.seek(t.options.start)? };
    t.stats.mark_decoder_ready();
    let (rate, channels) = (decoder.sample_rate(), decoder.channels());
    let out = match open {
        Some(o) => o,
        None => open.insert(open_output(t, output, rate, channels)?),
    };
    let sink = &mut out.sink;
    sink.begin_segment(started_at, t.discard);
    let mut converter = Converter::new(rate, channels, sink.format())?;
    let mut gain = Gain::new(t.options.gain);
    let format = sink.format();
    let ch = format.channels.max(1);
    // Where the last sample written is: the segment's base plus its frames.
    let (mut base, mut frames) = (started_at, 0u64);
    // --duration, in output frames: counted over every segment.
    let limit =
        t.options.duration.map(|d| (d.as_secs_f64() * f64::from(format.rate)).round() as u64);
    let mut written = 0u64;
    // The audio decoded for the place playback starts from (`from`, as
    // asked, with the fetch's seeks seen then): reported to the start
    // rule while it holds playback back.
    let mut from = (t.control.seeks(), t.options.start);
    let report = |from: (u64, Duration), base: Duration, frames: u64| {
        let until = base + Duration::from_secs_f64(frames as f64 / f64::from(format.rate.max(1)));
        t.control.set_decoded(from.0, from.1, until);
    };
    // How many of `n` frames fit under the limit (counting them).
    let mut room = move |n: usize| -> usize {
        let left = limit.map_or(u64::MAX, |l| l.saturating_sub(written));
        let k = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        written += k as u64;
        k
    };
    let result = (|| -> Result<()> {
        let mut full = false;
        loop {
            if stopped() || full {
                return Ok(());
            }
            if let Some(to) = t.stats.take_seek() {
                from = (t.control.seeks(), to);
                let at = decoder.seek(to)?;
                converter.reset();
                sink.begin_segment(at, true);
                (base, frames) = (at, 0);
                continue;
            }
            let Some(block) = decoder.next_block()? else {
                // A seek asked for as the track ended is still served.
                if t.stats.seek_requested() {
                    continue;
                }
                break;
            };
            converter.push(block, &mut |s| {
                let n = room(s.len() / ch);
                full |= n * ch < s.len();
                frames += n as u64;
                sink.write(gain.apply(&s[..n * ch]))
            })?;
            report(from, base, frames);
        }
        converter.finish(&mut |s| {
            let n = room(s.len() / ch);
            frames += n as u64;
            sink.write(gain.apply(&s[..n * ch]))
        })
    })();
    match result {
        // Stopped on purpose: the store was closed under the reader.
        Err(Error::Source(_)) if stopped() => {}
        r => r?,
    }
    // All of the track that will be played is in the sink: a real-time
    // sink kept open for the next track starts now even if it holds less
    // than its prebuffer (a --duration shorter than it), instead of
    // waiting for audio that is not coming.
    if frames > 0 {
        t.stats.primed.store(true, Relaxed);
    }
    let end = base + Duration::from_secs_f64(frames as f64 / f64::from(format.rate.max(1)));
    Ok((rate, format.rate, started_at, end))
}

/// How long the decode thread waits for an Ogg's header pages to make its
/// codec early ([`early_codec`]): they are the first bytes a start brings;
/// past this the reader opens the usual way (and reports a stall).
const EARLY_CODEC_WAIT: Duration = Duration::from_millis(500);

/// The Vorbis codec of an Ogg track, made from its header pages as soon
/// as they are here (the start brings them first, and its answer comes
/// with their first bytes): ready while the first audio page is still
/// arriving ([`crate::decode::vorbis_from_headers`]). The pages are the
/// header ranges before the first audio page, one after the other (a
/// comment holding cover art is left out of them), each byte waited for
/// up to `wait`. `None` for other tracks, or if those bytes do not come.
pub fn early_codec(store: &TrackStore, wait: Duration) -> Option<crate::decode::EarlyCodec> {
    use chorus_protocol::{Codec, Container};
    let manifest = store.manifest();
    let media = manifest.media();
    if media.container != Container::Ogg || media.codec != Codec::Vorbis {
        return None;
    }
    let first_audio = media.time_index.first()?.byte_offset;
    let mut header = Vec::new();
    for r in &media.header_ranges {
        let r = r.start..r.end.min(first_audio);
        let room = crate::decode::MAX_VORBIS_HEADERS - header.len();
        if r.start >= r.end || room == 0 {
            continue;
        }
        let r = r.start..r.end.min(r.start + room as u64);
        let from = header.len();
        header.resize(from + usize::try_from(r.end - r.start).ok()?, 0);
        let mut at = from;
        while at < header.len() {
            let offset = r.start + (at - from) as u64;
            match store.read_at(offset, &mut header[at..], wait) {
                Ok(n) if n > 0 => at += n,
                _ => return None,
            }
        }
    }
    crate::decode::vorbis_from_headers(&header)
}

/// Opens `output` for `t` at `rate` and `channels`, recording when.
fn open_output(t: &Track, output: &OutputSpec, rate: u32, channels: usize) -> Result<OpenSink> {
    let sink = sink::open(output, rate, channels, t.options.prebuffer, t.stats.clone())?;
    t.stats.mark_output_open();
    Ok(OpenSink { sink, stats: t.stats.clone() })
}

/// The track's own gain (ReplayGain), applied in the decode thread: it
/// never changes during a track. The listener's volume is applied later,
/// at the sink's consumer end, where a change is heard at once.
struct Gain {
    base: f32,
    scratch: Vec<f32>,
}

impl Gain {
    fn new(base: f32) -> Self {
        let base = if base.is_finite() { base.max(0.0) } else { 1.0 };
        Self { base, scratch: Vec::new() }
    }

    /// `samples` with the gain applied; untouched (no copy) at unity.
    fn apply<'a>(&'a mut self, samples: &'a [f32]) -> &'a [f32] {
        if self.base == 1.0 {
            return samples;
        }
        self.scratch.clear();
        self.scratch.extend(samples.iter().map(|s| s * self.base));
        &self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracks_gain_applies_from_its_start_and_unity_copies_nothing() {
        let ones = [1.0f32; 200];
        assert_eq!(Gain::new(1.0).apply(&ones).as_ptr(), ones.as_ptr());
        let mut g = Gain::new(0.5);
        assert!(g.apply(&ones).iter().all(|&s| s == 0.5));
    }
}
