//! `chorus play`: find a track among peers, stream it and play it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chorus_player::play::{PlayOptions, Playback, PlaybackReport, play};
use chorus_player::sink::OutputSpec;
use chorus_protocol::message::CatalogEntry;
use chorus_protocol::{Manifest, TrackId};
use chorus_streamer::client::{MAX_SEARCH_RESULTS, Peer};
use chorus_streamer::fetch::{PREFETCH_AHEAD, PREFETCH_LEAD, Source, prefetch};
use chorus_streamer::transport::Transport;

use crate::cli::{Global, OutputArgs, PlayArgs};
use crate::output;
use crate::peers::{self, PeerAddr};

pub async fn run(global: &Global, args: PlayArgs) -> Result<()> {
    let started = Instant::now();
    let cache = peers::cache(global, args.cache_mib)?;
    let identity = peers::identity(global)?;
    // With --listen, this node serves its cache to others while it plays,
    // from the same endpoint it fetches with.
    let node = match args.listen {
        Some(addr) => {
            let node = chorus_streamer::node::Node::bind_with_cache(
                identity.clone(),
                addr,
                Default::default(),
                Some(cache.clone()),
                Default::default(),
            )
            .with_context(|| format!("cannot listen on {addr}"))?;
            let n = node.clone();
            tokio::spawn(async move { n.serve().await });
            if !global.quiet {
                println!(
                    "serving the cache on {} as peer {}",
                    node.transport().local_addr()?,
                    identity.peer_id()
                );
            }
            Some(node)
        }
        None => None,
    };
    let transport = match &node {
        Some(n) => n.transport().clone(),
        None => Transport::client(identity, &Default::default())?,
    };
    let result = async {
        let peers = connect_all(&transport, &args.peers).await?;
        let mut upcoming: Option<tokio::task::JoinHandle<Result<Prepared>>> = None;
        let count = args.what.len();
        for (i, query) in args.what.iter().enumerate() {
            let started = if i == 0 { started } else { Instant::now() };
            let prepared = match upcoming.take() {
                Some(task) => task.await.context("preparing the next track")??,
                None => prepare(&transport, &peers, query).await?,
            };
            let Prepared { entry, manifest, sources, prefetched } = prepared;
            if !global.quiet {
                let n = if count > 1 { format!("[{}/{count}] ", i + 1) } else { String::new() };
                let ahead = if prefetched > 0 {
                    format!(", starting from {prefetched} prefetched chunks")
                } else {
                    String::new()
                };
                println!("{n}playing {} from {} peer(s){ahead}", describe(&entry), sources.len());
            }
            let mut options = PlayOptions {
                start: Duration::from_secs_f64(args.start.max(0.0)),
                ..PlayOptions::default()
            };
            if i > 0 {
                options.start = Duration::ZERO;
            }
            options.fetch.cache = Some(cache.clone());
            let next = args.what.get(i + 1).map(|q| NextTrack {
                transport: transport.clone(),
                peers: peers.clone(),
                query: q.clone(),
                cache: cache.clone(),
            });
            let out = numbered(&args.output, i, count);
            let played =
                play_with_status(global, manifest, sources, &out, options, started, next).await?;
            print_report(global, &played.report);
            for id in &played.report.banned {
                transport.ban(*id);
            }
            upcoming = played.next;
            if played.stopped {
                break;
            }
        }
        Ok(())
    }
    .await;
    transport.close().await;
    result
}

/// A track ready to play: what it is, its manifest, who serves it.
pub struct Prepared {
    pub entry: CatalogEntry,
    pub manifest: Manifest,
    pub sources: Vec<Source>,
    /// Chunks fetched ahead into the cache (0 if not prefetched).
    pub prefetched: usize,
}

/// Finds a track among the peers (and the holders they know of).
pub async fn prepare(transport: &Transport, peers: &[Peer], query: &str) -> Result<Prepared> {
    let (entry, mut holders) = resolve(peers, query).await?;
    holders.extend(discover(transport, peers, &holders, entry.track).await);
    let (manifest, sources) = sources_for(&holders, entry.track).await?;
    Ok(Prepared { entry, manifest, sources, prefetched: 0 })
}

/// The track after the current one, to prefetch near the current one's end.
pub struct NextTrack {
    transport: Transport,
    peers: Vec<Peer>,
    query: String,
    cache: Arc<chorus_streamer::cache::ChunkCache>,
}

impl NextTrack {
    /// Looks the track up and fetches what it needs to start into the cache.
    fn start(self) -> tokio::task::JoinHandle<Result<Prepared>> {
        tokio::spawn(async move {
            let mut prepared = prepare(&self.transport, &self.peers, &self.query).await?;
            prepared.prefetched =
                prefetch(self.cache, &prepared.manifest, &prepared.sources, PREFETCH_LEAD).await?;
            Ok(prepared)
        })
    }
}

/// `FILE.wav` for one track; `FILE-1.wav`, `FILE-2.wav`… for several.
fn numbered(out: &OutputArgs, i: usize, count: usize) -> OutputArgs {
    let mut o =
        OutputArgs { out: out.out.clone(), device: out.device.clone(), duration: out.duration };
    if count > 1 && !matches!(out.out.as_str(), "default" | "null") {
        let p = std::path::Path::new(&out.out);
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext = p.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        o.out = p.with_file_name(format!("{stem}-{}{ext}", i + 1)).to_string_lossy().into_owned();
    }
    o
}

/// `chorus devices`.
pub fn devices() -> Result<()> {
    let list = chorus_player::sink::device::list_devices()?;
    if list.is_empty() {
        println!("no audio output devices; use --out null or --out FILE.wav");
    }
    for d in list {
        println!("{d}");
    }
    Ok(())
}

/// Dials every peer at once; unreachable ones are reported and skipped.
pub async fn connect_all(transport: &Transport, addrs: &[PeerAddr]) -> Result<Vec<Peer>> {
    let tasks: Vec<_> = addrs
        .iter()
        .map(|a| {
            let (t, a) = (transport.clone(), a.clone());
            tokio::spawn(async move { (a.addr, t.connect(a.addr, a.id).await) })
        })
        .collect();
    let mut peers = Vec::new();
    for task in tasks {
        match task.await {
            Ok((_, Ok(p))) => peers.push(p),
            Ok((addr, Err(e))) => tracing::warn!("skipping peer {addr}: {e}"),
            Err(e) => tracing::warn!("skipping a peer: {e}"),
        }
    }
    if peers.is_empty() {
        bail!(
            "none of the peers could be reached; check the --peer addresses and that they are running `chorus seed`"
        );
    }
    Ok(peers)
}

/// Asks the peers we know who else holds `track` (the query travels two
/// hops) and dials the new holders. Failures only cost those peers.
pub async fn discover(
    transport: &Transport,
    asked: &[Peer],
    known: &[Peer],
    track: TrackId,
) -> Vec<Peer> {
    let mut found: Vec<chorus_protocol::message::PeerInfo> = Vec::new();
    for p in asked {
        match p.who_has(track, 2).await {
            Ok(peers) => found.extend(peers),
            Err(e) => tracing::debug!("who-has on {} failed: {e}", p.addr()),
        }
    }
    let me = transport.peer_id();
    let mut seen: Vec<_> = known.iter().map(Peer::id).collect();
    let mut new = Vec::new();
    for info in found {
        if info.id == me || seen.contains(&info.id) {
            continue;
        }
        seen.push(info.id);
        let Some(addr) = info.addrs.first() else { continue };
        match transport.connect(*addr, Some(info.id)).await {
            Ok(peer) => new.push(peer),
            Err(e) => tracing::debug!("cannot reach discovered peer {addr}: {e}"),
        }
    }
    if !new.is_empty() {
        tracing::info!("found {} more peer(s) holding the track", new.len());
    }
    new
}

/// Finds the track: by id or id prefix, else the best search match across
/// peers. Returns it and the peers that have it.
pub async fn resolve(peers: &[Peer], query: &str) -> Result<(CatalogEntry, Vec<Peer>)> {
    let is_id = query.len() >= 8 && query.chars().all(|c| c.is_ascii_hexdigit());
    let search = if is_id { "" } else { query };
    let mut found: Vec<(CatalogEntry, Vec<Peer>)> = Vec::new();
    for p in peers {
        let results = match p.search(search, MAX_SEARCH_RESULTS).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("search on {} failed: {e}", p.addr());
                continue;
            }
        };
        for e in results {
            if is_id && !e.track.to_string().starts_with(&query.to_ascii_lowercase()) {
                continue;
            }
            match found.iter_mut().find(|(f, _)| f.track == e.track) {
                Some((_, holders)) => holders.push(p.clone()),
                None => found.push((e, vec![p.clone()])),
            }
        }
    }
    if found.is_empty() {
        if let (true, Ok(id)) = (is_id, query.parse::<TrackId>()) {
            // Not listed, but maybe served: ask every peer.
            return Ok((unlisted(id), peers.to_vec()));
        }
        bail!("no peer has a track matching '{query}'");
    }
    if is_id && found.len() > 1 {
        bail!("{} tracks start with {query}; give more digits", found.len());
    }
    found.sort_by_key(|(e, holders)| {
        (std::cmp::Reverse(score(e, query)), std::cmp::Reverse(holders.len()))
    });
    let (best, holders) = found.swap_remove(0);
    Ok((best, holders))
}

fn unlisted(track: TrackId) -> CatalogEntry {
    CatalogEntry {
        track,
        file_name: String::new(),
        tags: Default::default(),
        codec: chorus_protocol::Codec::Other(0),
        duration_ms: 0,
        byte_len: 0,
        sample_rate: 0,
        channels: 0,
    }
}

/// Higher is better: an exact title beats a title that contains the query,
/// which beats a match elsewhere.
fn score(e: &CatalogEntry, query: &str) -> u32 {
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

pub fn describe(e: &CatalogEntry) -> String {
    let title = e.tags.title.as_deref().unwrap_or(&e.file_name);
    let mut s = format!("\"{title}\"");
    if let Some(a) = &e.tags.artist {
        s.push_str(&format!(" by {a}"));
    }
    if e.duration_ms > 0 {
        s.push_str(&format!(
            " [{} {}]",
            output::clock(Duration::from_millis(e.duration_ms)),
            e.codec.name()
        ));
    }
    s.push_str(&format!(" ({})", e.track.fmt_short()));
    s
}

/// Asks every holder for the manifest at once (one round trip in all): the
/// verified manifest, and the holders that answered as fetch sources,
/// marked as original seeds or not.
pub async fn sources_for(holders: &[Peer], track: TrackId) -> Result<(Manifest, Vec<Source>)> {
    let asks: Vec<_> = holders
        .iter()
        .map(|p| {
            let p = p.clone();
            tokio::spawn(async move { (p.manifest_and_origin(track).await, p) })
        })
        .collect();
    let mut manifest = None;
    let mut sources = Vec::new();
    let mut last = None;
    for ask in asks {
        match ask.await {
            Ok((Ok((m, origin, have)), peer)) => {
                manifest.get_or_insert(m);
                sources.push(Source { peer, is_seed: origin, have });
            }
            Ok((Err(e), peer)) => {
                tracing::warn!("{} cannot serve {}: {e}", peer.addr(), track.fmt_short());
                last = Some(e);
            }
            Err(e) => tracing::warn!("manifest request failed: {e}"),
        }
    }
    match manifest {
        Some(m) => Ok((m, sources)),
        None => {
            Err(last
                .map_or_else(|| anyhow::anyhow!("no peer has track {track}"), anyhow::Error::new))
            .with_context(|| format!("fetching the manifest of {track}"))
        }
    }
}

pub fn output_spec(out: &OutputArgs) -> OutputSpec {
    match out.out.as_str() {
        "default" => OutputSpec::Device(out.device.clone()),
        s => s.parse().unwrap_or(OutputSpec::Null),
    }
}

/// Plays with a status line (on a terminal), Ctrl-C and --duration.
pub async fn play_with_status(
    global: &Global,
    manifest: Manifest,
    sources: Vec<Source>,
    out: &OutputArgs,
    options: PlayOptions,
    started: Instant,
    mut next: Option<NextTrack>,
) -> Result<Played> {
    let spec = output_spec(out);
    let mut upcoming = None;
    let mut stopped = false;
    let total = manifest.duration();
    let handle: Arc<Mutex<Option<Playback>>> = Arc::new(Mutex::new(None));
    let h = handle.clone();
    let playing = play(manifest, sources, spec, options, started, move |p| {
        if let Ok(mut slot) = h.lock() {
            *slot = Some(p.clone());
        }
    });
    tokio::pin!(playing);
    let show = !global.quiet && std::io::stderr().is_terminal();
    let limit = out.duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let result = loop {
        tokio::select! {
            r = &mut playing => break r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\nstopping…");
                stopped = true;
                stop(&handle);
            }
            _ = tick.tick() => {
                let Some(p) = handle.lock().ok().and_then(|h| h.clone()) else { continue };
                let played = p.stats.played();
                let pos = p.stats.position();
                if limit.is_some_and(|l| played >= l) {
                    stop(&handle);
                }
                // Near the end: look up the next track and fetch its start.
                if pos + PREFETCH_AHEAD >= total {
                    if let Some(n) = next.take() {
                        upcoming = Some(n.start());
                    }
                }
                if show {
                    let have = p.store.present() as u64 * 100 / u64::from(p.store.manifest().layout().count()).max(1);
                    eprint!(
                        "\r\x1b[2K▶ {} / {}  fetched {}% ({})  underruns {}",
                        output::clock(pos),
                        output::clock(total),
                        have,
                        output::size(p.fetch.bytes.load(Relaxed)),
                        p.stats.underruns.load(Relaxed)
                    );
                    let _ = std::io::stderr().flush();
                }
            }
        }
    };
    if show {
        eprint!("\r\x1b[2K");
    }
    Ok(Played { report: result?, next: upcoming, stopped })
}

/// A finished playback, and the next track if it was prepared meanwhile.
pub struct Played {
    pub report: PlaybackReport,
    pub next: Option<tokio::task::JoinHandle<Result<Prepared>>>,
    pub stopped: bool,
}

fn stop(handle: &Arc<Mutex<Option<Playback>>>) {
    if let Some(p) = handle.lock().ok().and_then(|h| h.clone()) {
        p.stop();
    }
}

pub fn print_report(global: &Global, r: &PlaybackReport) {
    if global.quiet {
        return;
    }
    let first = r
        .time_to_first_audio
        .map_or("-".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
    let resampled = if r.track_rate != r.output_rate && r.output_rate != 0 {
        format!(", resampled {} → {} Hz", r.track_rate, r.output_rate)
    } else {
        String::new()
    };
    println!(
        "played {} from {}; first audio after {first}; {} underruns ({:.2}s silent); {} fetched{resampled}",
        output::clock(r.played),
        output::clock(r.started_at),
        r.underruns,
        r.silent.as_secs_f64(),
        output::size(r.bytes_fetched),
    );
    let total = r.bytes_fetched.max(1) as f64;
    for (id, addr, bytes, seed) in &r.sources {
        println!(
            "  {:>9} ({:>3.0}%) from {} at {addr}{}",
            output::size(*bytes),
            *bytes as f64 * 100.0 / total,
            id.fmt_short(),
            if *seed { " (seed)" } else { "" }
        );
    }
}
