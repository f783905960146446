//! Playing one track: the fetcher fills a [`TrackStore`] from peers while a
//! decode thread reads it through a [`ChunkSource`], decodes, converts and
//! hands samples to the sink.
//!
//! Tasks: the fetch task (async, [`fetch_track`]) and one decode thread
//! (blocking: it waits on the store for missing chunks). The sink may add a
//! real-time consumer (cpal's callback, or the null sink's clock thread).
//! They share the store and [`PlaybackStats`]; nothing else.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chorus_protocol::Manifest;
use chorus_streamer::fetch::{FetchConfig, FetchControl, FetchStats, Source, fetch_track};
use chorus_streamer::store::TrackStore;

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
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            start: Duration::ZERO,
            prebuffer: Duration::from_millis(50),
            max_wait: Duration::from_secs(30),
            fetch: FetchConfig::default(),
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
}

/// A playback in progress: counters to show while it runs, and a way to
/// stop it.
#[derive(Clone)]
pub struct Playback {
    /// Live counters.
    pub stats: Arc<PlaybackStats>,
    /// Live fetch counters.
    pub fetch: Arc<FetchStats>,
    /// The track's chunks.
    pub store: Arc<TrackStore>,
}

impl Playback {
    /// Stops playback as soon as possible: blocked reads and writes return
    /// and the sink is released.
    pub fn stop(&self) {
        self.stats.stop.store(true, Relaxed);
        self.store.close();
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
    let store = Arc::new(TrackStore::new(manifest.clone()));
    if let Some(cache) = &options.fetch.cache {
        prefill_from_cache(cache, &store).await;
    }
    let control = Arc::new(FetchControl::default());
    let stats = Arc::new(PlaybackStats::with_gate(started, control.ready.clone()));
    let fetch_stats = Arc::new(FetchStats::default());
    if !options.start.is_zero() {
        store.hint(manifest.chunk_at_time(options.start));
    }
    on_start(&Playback { stats: stats.clone(), fetch: fetch_stats.clone(), store: store.clone() });
    let fetcher = tokio::spawn(fetch_track(
        store.clone(),
        sources,
        options.fetch.clone(),
        fetch_stats.clone(),
        control.clone(),
    ));
    // Tell the scheduler where the audible playhead is.
    let playhead = {
        let (stats, control, offset) = (stats.clone(), control.clone(), options.start);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let playing = stats.time_to_first_audio().is_some();
                control.set_playhead(offset + stats.position(), playing);
            }
        })
    };

    let (s, st, opts) = (store.clone(), stats.clone(), options.clone());
    let hint = extension_hint(manifest.media().container);
    let decoded =
        tokio::task::spawn_blocking(move || decode_into_sink(s, st, &output, &opts, hint)).await;
    store.close();
    fetcher.abort();
    playhead.abort();
    let (track_rate, output_rate, started_at) = match decoded {
        Ok(r) => r?,
        Err(_) => return Err(Error::Source("the decode thread failed".into())),
    };
    Ok(PlaybackReport {
        time_to_first_audio: stats.time_to_first_audio(),
        underruns: stats.underruns.load(Relaxed),
        silent: stats.silent(),
        played: stats.position(),
        bytes_fetched: fetch_stats.bytes.load(Relaxed),
        stalls: stats.stalls.load(Relaxed),
        track_rate,
        output_rate,
        started_at,
        sources: fetch_stats.by_peer.lock().map(|v| v.clone()).unwrap_or_default(),
        hedges: fetch_stats.hedges.load(Relaxed),
        banned: fetch_stats.banned.lock().map(|v| v.clone()).unwrap_or_default(),
    })
}

/// Loads what the cache holds of the track into the store (each chunk is
/// verified on the way), and registers the track with the cache.
async fn prefill_from_cache(
    cache: &Arc<chorus_streamer::cache::ChunkCache>,
    store: &Arc<TrackStore>,
) {
    let (cache, store) = (cache.clone(), store.clone());
    let _ = tokio::task::spawn_blocking(move || {
        let id = store.manifest().id();
        if let Err(e) = cache.put_manifest(store.manifest()) {
            tracing::warn!("cache unavailable: {e}");
            return;
        }
        for run in cache.have(&id) {
            for i in run.start..run.start + run.len {
                let index = chorus_protocol::ChunkIndex(i);
                if let Some(chunk) = cache.get_chunk(&id, index) {
                    let _ = store.insert(chunk);
                }
            }
        }
    })
    .await;
}

fn decode_into_sink(
    store: Arc<TrackStore>,
    stats: Arc<PlaybackStats>,
    output: &OutputSpec,
    options: &PlayOptions,
    hint: Option<&str>,
) -> Result<(u32, u32, Duration)> {
    let st = stats.clone();
    let on_stall = Box::new(move |chunk: u32| {
        st.stalls.fetch_add(1, Relaxed);
        tracing::warn!("stalled: waiting for chunk {chunk} from peers");
    });
    let source = ChunkSource::new(store, options.max_wait, on_stall);
    let mut decoder = match Decoder::open(Box::new(source), hint) {
        Err(Error::Source(_)) if stats.stop.load(Relaxed) => {
            return Ok((0, 0, Duration::ZERO));
        }
        d => d?,
    };
    let started_at =
        if options.start.is_zero() { Duration::ZERO } else { decoder.seek(options.start)? };
    let (rate, channels) = (decoder.sample_rate(), decoder.channels());
    let mut sink = sink::open(output, rate, channels, options.prebuffer, stats.clone())?;
    let mut converter = Converter::new(rate, channels, sink.format())?;
    let result = (|| -> Result<()> {
        while let Some(block) = decoder.next_block()? {
            if stats.stop.load(Relaxed) {
                return Ok(());
            }
            converter.push(block, &mut |s| sink.write(s))?;
        }
        converter.finish(&mut |s| sink.write(s))
    })();
    // Stop the sink even when decoding failed, so the device is released.
    stats.end_of_stream.store(true, Relaxed);
    let finished = sink.finish();
    match result {
        // Stopped on purpose: the store was closed under the reader.
        Err(Error::Source(_)) if stats.stop.load(Relaxed) => {}
        r => r?,
    }
    finished?;
    Ok((rate, sink.format().rate, started_at))
}
