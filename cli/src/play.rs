//! `chorus play`: find a track among peers, stream it and play it.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chorus_player::play::{PlayOptions, Playback, PlaybackReport, Player};
use chorus_player::sink::OutputSpec;
use chorus_protocol::VerifiedChunk;
use chorus_protocol::message::CatalogEntry;
use chorus_protocol::message::Want;
use chorus_protocol::{ChunkIndex, Manifest, PeerId, TrackId};
use chorus_streamer::client::{MAX_SEARCH_RESULTS, Peer};
use chorus_streamer::fetch::{PREFETCH_AHEAD, PREFETCH_LEAD, Source, prefetch};
use chorus_streamer::nat::{self, Path};
use chorus_streamer::start::{Pool, Timeline};
use chorus_streamer::transport::Transport;

use crate::cli::{Global, OutputArgs, PlayArgs};
use crate::output;
use crate::peers;
use crate::tui::Key;

/// `chorus play`.
pub async fn run(global: &Global, args: PlayArgs) -> Result<()> {
    let started = Instant::now();
    let file = crate::config::load(global)?;
    let settings = crate::config::PlaySettings::resolve(&file, Some(&args))?;
    if settings.out.0 == "-" {
        output::stdout_is_audio();
    }
    let identity = peers::identity_for_play(global)?;
    // The cache is opened once the dials are out (its entries are listed
    // on a thread of its own; a start reads only its own track's), unless
    // this node serves it.
    let mut opened = None;
    // With --listen, this node serves its cache to others while it plays,
    // from the same endpoint it fetches with.
    let node = match args.listen {
        Some(addr) => {
            let cache = opened.insert(peers::cache(global, settings.cache_mib.0)?);
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
                output::say!(
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
    let addrs: Vec<_> = settings.peers.0.iter().map(|a| (a.addr, a.id)).collect();
    // Tickets from earlier runs: to peers that gave one, the first start
    // request rides in the handshake (one round trip to the first note).
    let tickets = peers::data_dir(global).ok().map(|d| d.join(TICKETS_FILE));
    if let Some(file) = &tickets {
        transport.resume().load(file);
    }
    let first = match (&args.album, args.shuffle, args.what.first()) {
        (None, false, Some(what)) => want_of(what),
        _ => None,
    };
    let first_at = Duration::from_secs_f64(args.start.max(0.0));
    let pool = Pool::dial_asking(&transport, &addrs, first.as_ref().map(|w| (w, first_at)));
    let cache = match opened {
        Some(cache) => cache,
        None => peers::cache(global, settings.cache_mib.0)?,
    };
    let mut memory = crate::memory::Memory::load(global);
    if addrs.is_empty() {
        crate::memory::dial_remembered(&memory, &pool);
    }
    peers::browse_lan(global, &pool);
    let dht = peers::dht(global);
    peers::lookup_dht(dht.clone(), &pool, &args.what);
    let served = Mutex::new(Vec::new());
    let result = async {
        let queue = tokio::select! {
            q = build_queue(&pool, &cache, &args) => q?,
            () = crate::signals::stop_requested() => return Ok(()),
        };
        let session = Session {
            global,
            pool: pool.clone(),
            cache: cache.clone(),
            settings: &settings,
            duration: args.output.duration.map(|s| Duration::from_secs_f64(s.max(0.0))),
            first_start: Duration::from_secs_f64(args.start.max(0.0)),
            served: &served,
        };
        session.run(queue, started).await
    }
    .await;
    // Chunks that came just before the end go to disk before the exit (a
    // short play's are otherwise dropped with the runtime's queue).
    let c = cache.clone();
    let _ = tokio::task::spawn_blocking(move || c.flush(Duration::from_secs(2))).await;
    let given = if settings.peers.1 == crate::config::Origin::Flag { "flag" } else { "config" };
    let served = served.into_inner().unwrap_or_default();
    crate::memory::remember(&mut memory, &pool, given, &served);
    if let Err(e) = transport.resume().save() {
        tracing::debug!("cannot keep the start tickets: {e}");
    }
    peers::remember_dht(global, dht.as_ref()).await;
    transport.close().await;
    match result {
        // Whoever read the audio from our stdout has gone: nothing is wrong.
        Err(e) if output::audio_on_stdout() && is_broken_pipe(&e) => Ok(()),
        r => r,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<chorus_player::Error>(),
            Some(chorus_player::Error::Write { err, .. })
                if err.kind() == std::io::ErrorKind::BrokenPipe
        )
    })
}

/// The queue: the tracks asked for, or an album's tracks in order,
/// shuffled if asked. Each entry is a query or a track id.
async fn build_queue(
    pool: &Pool,
    cache: &chorus_streamer::cache::ChunkCache,
    args: &PlayArgs,
) -> Result<Vec<String>> {
    let mut queue = args.what.clone();
    if let Some(album) = &args.album {
        pool.settle(CONNECT_GRACE).await;
        let peers = &pool.peers();
        let want = album.to_lowercase();
        let on_album = |e: &CatalogEntry| {
            e.tags.album.as_deref().is_some_and(|a| a.to_lowercase().contains(&want))
        };
        let mut found: Vec<CatalogEntry> =
            crate::search::search_all(peers, album, MAX_SEARCH_RESULTS)
                .await
                .into_iter()
                .map(|(e, _)| e)
                .filter(on_album)
                .collect();
        if found.is_empty() {
            found = cache.complete_tracks().iter().map(cached_entry).filter(on_album).collect();
            found.sort_by_key(|e| (e.tags.disc_number, e.tags.track_number));
        }
        if found.is_empty() {
            bail!("no peer has an album matching '{album}'");
        }
        queue.extend(found.iter().map(|e| e.track.to_string()));
    }
    if args.shuffle {
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        for i in (1..queue.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            queue.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    Ok(queue)
}

/// A catalog entry for a track known only from its manifest.
fn cached_entry(m: &Manifest) -> CatalogEntry {
    chorus_streamer::library::catalog_entry(m, String::new())
}

/// The other peers of the pool that hold `track` as they answer, and the
/// holders they know of (who-has), found meanwhile; `first`: the source
/// already in use.
fn sources_joining(
    pool: &Arc<Pool>,
    track: TrackId,
    first: Option<Peer>,
) -> tokio::sync::mpsc::Receiver<Source> {
    let mut joins = pool.join_sources(track, first.as_ref().map(|p| p.id()));
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let p = pool.clone();
    tokio::spawn(async move {
        let discovering = async {
            // In the background: let every dial answer (bounded) so each
            // peer is asked.
            p.settle(CONNECT_GRACE).await;
            let asked = p.peers();
            let mut known = asked.clone();
            known.extend(first);
            let (ups, ups_rx) = tokio::sync::mpsc::channel(8);
            upgrades_to_sources(track, ups_rx, tx.clone());
            for peer in discover(p.transport(), &asked, &known, track, Some(ups)).await {
                if let Ok((_, is_seed, have)) = peer.manifest_and_origin(track).await {
                    let _ = tx.send(Source { peer, is_seed, have, head_rest: None }).await;
                }
            }
        };
        let forwarding = async {
            while let Some(src) = joins.recv().await {
                if tx.send(src).await.is_err() {
                    break;
                }
            }
        };
        tokio::join!(discovering, forwarding);
    });
    rx
}

/// A track by id whose start at `at` is in the cache: its manifest, the
/// header chunks and enough audio from `at` for the start rule with no
/// peer yet ([`chorus_streamer::scheduler::ALONE_START_AHEAD`], and a
/// second more: the rule counts what can play, less a frame).
fn cached_start(
    cache: &chorus_streamer::cache::ChunkCache,
    id: &TrackId,
    at: Duration,
) -> Option<Prepared> {
    let m = cache.manifest(id)?;
    let layout = *m.layout();
    let first = m.chunk_at_time(at);
    let until = m.chunk_at_time(at + chorus_streamer::scheduler::ALONE_START_AHEAD + ONE_SECOND);
    let held = |i: ChunkIndex| cache.holds(id, i);
    let headers = layout.indices().filter(|i| m.is_header_chunk(*i)).all(held);
    let ahead = (first.0..=until.0).map(ChunkIndex).all(held);
    (headers && ahead).then(|| Prepared::new(cached_entry(&m), m, Vec::new()))
}

const ONE_SECOND: Duration = Duration::from_secs(1);

/// Finds a track the cache holds whole, by id (prefix) or words of its
/// title, artist or album.
fn resolve_cached(cache: &chorus_streamer::cache::ChunkCache, query: &str) -> Option<Prepared> {
    let q = query.to_lowercase();
    let mut tracks = cache.complete_tracks();
    tracks.sort_by_key(|m| m.id().to_string());
    let hit = tracks.into_iter().find(|m| {
        let t = m.tags();
        m.id().to_string().starts_with(&q)
            || [&t.title, &t.artist, &t.album].iter().any(|f| {
                f.as_deref().is_some_and(|f| {
                    let f = f.to_lowercase();
                    q.split_whitespace().all(|w| f.contains(w))
                })
            })
    })?;
    Some(Prepared::new(cached_entry(&hit), hit, Vec::new()))
}

/// A track ready to play: what it is, its manifest, who serves it.
pub struct Prepared {
    /// The track's catalog entry, from its verified manifest.
    pub entry: CatalogEntry,
    /// The verified manifest.
    pub manifest: Manifest,
    /// The peers to fetch from.
    pub sources: Vec<Source>,
    /// Chunks fetched ahead into the cache (0 if not prefetched).
    pub prefetched: usize,
    /// The head of the track a start response carried.
    pub head: Vec<VerifiedChunk>,
    /// When the start's steps happened (empty without a start response).
    pub timeline: Timeline,
    /// More sources as they answer (other peers, holders found by who-has).
    pub joins: Option<tokio::sync::mpsc::Receiver<Source>>,
}

impl Prepared {
    fn new(entry: CatalogEntry, manifest: Manifest, sources: Vec<Source>) -> Self {
        // What is known of the track comes from its verified manifest (tags,
        // length, codec), whatever the peer listed; only the file name is
        // the peer's own.
        let entry = chorus_streamer::library::catalog_entry(&manifest, entry.file_name);
        Self {
            entry,
            manifest,
            sources,
            prefetched: 0,
            head: Vec::new(),
            timeline: Timeline::default(),
            joins: None,
        }
    }
}

/// The file in the data dir that keeps peers' start tickets.
const TICKETS_FILE: &str = "tickets";

/// What a start request asks for `query`: a track id, or a query; `None`
/// for an id prefix (that needs a search).
fn want_of(query: &str) -> Option<Want> {
    match query.parse::<TrackId>() {
        Ok(id) => Some(Want::Track(id)),
        Err(_) if is_id_prefix(query) => None,
        Err(_) => Some(Want::Query(query.to_owned())),
    }
}

/// Finds a track and what it takes to start it: one start request to the
/// first peer of the pool that answers (by id or by query alike), whose
/// response carries the manifest and the head of the track; the other
/// peers, and the holders they know of, join while it plays. Peers that
/// cannot answer a start request (an id prefix, an older node) are asked
/// the long way: search, who-has, manifest. With no peer that has the
/// track, the cache.
pub async fn prepare(
    pool: &Arc<Pool>,
    cache: &chorus_streamer::cache::ChunkCache,
    query: &str,
    at: Duration,
) -> Result<Prepared> {
    let want = want_of(query);
    // A track whose start is in the cache plays from it at once, while the
    // peers are asked for the rest (an answer sealed in a handshake for it
    // is forgone). Only with peers to ask: offline, a track the cache
    // holds in part would stop where its cached part ends.
    if let Some(w @ Want::Track(id)) = &want
        && pool.has_prospects()
        && let Some(mut prepared) = cached_start(cache, id, at)
    {
        pool.forgo_sealed(w);
        prepared.timeline.steps.push(("start in the cache", pool.epoch().elapsed()));
        prepared.joins = Some(sources_joining(pool, *id, None));
        return Ok(prepared);
    }
    let started = match &want {
        Some(want) => pool.start(want, at).await,
        None => Err(chorus_streamer::Error::NoPeer("an id prefix needs a search".into())),
    };
    match started {
        Ok(s) => {
            let track = s.answer.manifest.id();
            let rx = sources_joining(pool, track, Some(s.source.peer.clone()));
            if pool.unreached() > 0 {
                // Said only if they are still silent a moment later: a start
                // takes one round trip, and the other peers' handshakes are
                // often still on their way then, which is no news.
                let pool = pool.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SILENT_PEERS_AFTER).await;
                    let n = pool.unreached();
                    if n > 0 {
                        tracing::warn!(
                            "{n} peer(s) have not answered yet, {} ms after the start; \
                             playing without them (they join when they do)",
                            SILENT_PEERS_AFTER.as_millis()
                        );
                    }
                });
            }
            let mut prepared = Prepared::new(s.answer.entry, s.answer.manifest, vec![s.source]);
            prepared.head = s.answer.head;
            prepared.timeline = s.timeline;
            prepared.joins = Some(rx);
            Ok(prepared)
        }
        Err(e) => {
            tracing::debug!("no start response ({e}); asking the long way");
            pool.settle(CONNECT_GRACE).await;
            let peers = pool.peers();
            if peers.is_empty() {
                let failed = pool.failures();
                if let (false, Some(p)) = (failed.is_empty(), resolve_cached(cache, query)) {
                    eprintln!(
                        "warning: no peer could be reached ({}); playing from the cache",
                        failed.join("; ")
                    );
                    return Ok(p);
                }
                return resolve_cached(cache, query).with_context(|| {
                    let why = pool.failures().join("; ");
                    if why.is_empty() {
                        format!("no peer to ask and the cache holds no whole track matching '{query}'")
                    } else {
                        format!(
                            "no peer could be reached ({why}) and the cache holds no whole track \
                             matching '{query}'; check the --peer addresses and that they run `chorus seed`"
                        )
                    }
                });
            }
            let found = async {
                let (entry, listed) = resolve(&peers, query).await?;
                let (ups, ups_rx) = tokio::sync::mpsc::channel(8);
                // Holders found by who-has said they hold the track: the
                // first of them gets the start request (a peer merely
                // listed may be one that has just said it does not).
                let mut holders =
                    discover(pool.transport(), &peers, &listed, entry.track, Some(ups)).await;
                holders.extend(listed);
                let Found { manifest, sources, head } =
                    sources_for(&holders, entry.track, at).await?;
                // Relayed holders reached directly later join the fetch.
                let (joins, joins_rx) = tokio::sync::mpsc::channel(8);
                upgrades_to_sources(entry.track, ups_rx, joins);
                // A peer's word for a track's name counts only if the
                // verified manifest carries the same tags.
                let listed = !entry.file_name.is_empty() || entry.duration_ms > 0;
                if listed && entry.tags != *manifest.tags() {
                    bail!(
                        "a peer listed track {} as {}, but its manifest says otherwise; not playing it",
                        entry.track.fmt_short(),
                        describe(&entry)
                    );
                }
                let mut prepared = Prepared::new(entry, manifest, sources);
                prepared.head = head;
                prepared.joins = Some(joins_rx);
                Ok::<_, anyhow::Error>(prepared)
            }
            .await;
            match found {
                Ok(p) => Ok(p),
                Err(e) => resolve_cached(cache, query).ok_or(e),
            }
        }
    }
}

/// Eight or more hex digits that are not a whole id: a track id prefix.
fn is_id_prefix(query: &str) -> bool {
    query.len() >= 8 && query.chars().all(|c| c.is_ascii_hexdigit())
}

/// Sources joining a running playback, as they answer; those that come
/// before the player has handed back its handle are kept until it has.
struct Joins {
    rx: Option<tokio::sync::mpsc::Receiver<Source>>,
    early: Vec<Source>,
}

impl Joins {
    fn new(rx: Option<tokio::sync::mpsc::Receiver<Source>>) -> Self {
        Self { rx, early: Vec::new() }
    }

    /// The next joining source; pending for ever once there are no more.
    async fn next(&mut self) -> Option<Source> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Takes the answer of [`Joins::next`] (`None`: no more will come) and
    /// hands what is kept to the playback, if it exists yet.
    fn deliver(&mut self, joined: Option<Source>, playback: Option<Playback>) {
        match joined {
            Some(s) => self.early.push(s),
            None => self.rx = None,
        }
        if let Some(p) = playback {
            self.flush(&p);
        }
    }

    /// Hands the kept sources to the playback.
    fn flush(&mut self, playback: &Playback) {
        for s in self.early.drain(..) {
            playback.add_source(s);
        }
    }
}

/// What a track's playback ended with.
enum Outcome {
    /// Played to the end (or its --duration).
    Ended,
    Next,
    Prev,
    Quit,
}

/// One `chorus play` run: the queue, the player, the keys.
struct Session<'a> {
    global: &'a Global,
    pool: Arc<Pool>,
    cache: Arc<chorus_streamer::cache::ChunkCache>,
    settings: &'a crate::config::PlaySettings,
    duration: Option<Duration>,
    first_start: Duration,
    /// Verified bytes each peer served, over the queue.
    served: &'a Mutex<Vec<(PeerId, SocketAddr, u64)>>,
}

impl Session<'_> {
    async fn run(&self, queue: Vec<String>, started: Instant) -> Result<()> {
        let out = OutputArgs {
            out: Some(self.settings.out.0.clone()),
            device: self.settings.device.0.clone(),
            duration: None,
        };
        let interactive =
            !self.global.quiet && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
        let mut keys = if interactive { Some(crate::tui::Keys::start()?) } else { None };
        let raw = keys.is_some();
        let mut player = Player::new(output_spec(&out), true);
        let mut volume = self.settings.volume.0 as f32 / 100.0;
        let mut upcoming: Option<(usize, tokio::task::JoinHandle<Result<Prepared>>)> = None;
        let mut i = 0;
        let mut first = true;
        let result = loop {
            let Some(query) = queue.get(i) else { break Ok(()) };
            let t0 = if first { started } else { Instant::now() };
            let prepared = match upcoming.take() {
                Some((j, task)) if j == i => task.await.context("preparing the next track")?,
                other => {
                    if let Some((_, t)) = other {
                        t.abort();
                    }
                    let at = if first { self.first_start } else { Duration::ZERO };
                    tokio::select! {
                        p = prepare(&self.pool, &self.cache, query, at) => p,
                        () = crate::signals::stop_requested() => break Ok(()),
                    }
                }
            };
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) if queue.len() > 1 => {
                    crate::tui::line(raw, &format!("skipping '{query}': {e:#}"));
                    i += 1;
                    continue;
                }
                Err(e) => break Err(e),
            };
            let header = {
                let n = if queue.len() > 1 {
                    format!("[{}/{}] ", i + 1, queue.len())
                } else {
                    String::new()
                };
                let from = if prepared.sources.is_empty() && prepared.joins.is_some() {
                    // A start from the cache: peers are being asked.
                    "the cache, peers joining".to_owned()
                } else if prepared.sources.is_empty() {
                    "the cache".to_owned()
                } else {
                    format!("{} peer(s)", prepared.sources.len())
                };
                let ahead = if prepared.prefetched > 0 {
                    format!(", starting from {} prefetched chunks", prepared.prefetched)
                } else {
                    String::new()
                };
                format!("{n}playing {} from {from}{ahead}", describe(&prepared.entry))
            };
            if raw {
                crate::tui::line(raw, &header);
            }
            let mut options = PlayOptions::default();
            if first {
                options.start = self.first_start;
            }
            options.duration = self.duration;
            let mut prepared = prepared;
            options.head = std::mem::take(&mut prepared.head);
            options.fetch.cache = Some(self.cache.clone());
            if self.settings.normalize.0 {
                options.gain = replay_gain(prepared.manifest.tags());
            }
            first = false;
            let next = queue.get(i + 1).cloned();
            let timeline = prepared.timeline.clone();
            let played = self
                .play_one(
                    &mut player,
                    prepared,
                    options,
                    t0,
                    keys.as_mut(),
                    &mut volume,
                    next,
                    i + 1,
                )
                .await;
            let (report, outcome, prefetch) = match played {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            if raw {
                // The status line goes; what it measured stays.
                crate::tui::clear_status();
                crate::tui::line(raw, &summary(&report));
            } else {
                // Piped or --quiet: one line per track.
                output::say!("{header}: {}", summary(&report));
            }
            if self.global.verbose > 0 {
                print_sources(&report);
                print_timeline(&timeline, &report, t0, self.pool.epoch());
            }
            for id in &report.banned {
                self.pool.transport().ban(*id);
            }
            if let Ok(mut served) = self.served.lock() {
                served.extend(report.sources.iter().map(|s| (s.0, s.1, s.2)));
            }
            upcoming = prefetch;
            match outcome {
                Outcome::Ended | Outcome::Next => i += 1,
                Outcome::Prev => i = i.saturating_sub(1),
                Outcome::Quit => break Ok(()),
            }
        };
        if let Some((_, t)) = upcoming {
            t.abort();
        }
        let finished = player.finish().await;
        drop(keys);
        result?;
        finished?;
        Ok(())
    }

    /// Plays one track, following keys, Ctrl-C and --duration, with the
    /// status line; starts preparing the next track near the end.
    #[allow(clippy::too_many_arguments)]
    async fn play_one(
        &self,
        player: &mut Player,
        prepared: Prepared,
        options: PlayOptions,
        started: Instant,
        mut keys: Option<&mut crate::tui::Keys>,
        volume: &mut f32,
        next: Option<String>,
        next_index: usize,
    ) -> Result<(PlaybackReport, Outcome, Option<(usize, tokio::task::JoinHandle<Result<Prepared>>)>)>
    {
        let Prepared { entry, manifest, sources, joins, .. } = prepared;
        let mut joins = Joins::new(joins);
        let total = manifest.duration();
        let handle: Arc<Mutex<Option<Playback>>> = Arc::new(Mutex::new(None));
        let h = handle.clone();
        let v = *volume;
        let playing = player.play(manifest, sources, options, started, move |p| {
            p.set_volume(v);
            if let Ok(mut slot) = h.lock() {
                *slot = Some(p.clone());
            }
        });
        tokio::pin!(playing);
        let raw = keys.is_some();
        let show = !self.global.quiet && (raw || std::io::stderr().is_terminal());
        let mut outcome = Outcome::Ended;
        let mut upcoming = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut input_ended = false;
        let current = || handle.lock().ok().and_then(|h| h.clone());
        let result = loop {
            let key = async {
                match keys.as_mut() {
                    Some(k) => k.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut playing => {
                    // Its last sample is in the sink (a short --duration
                    // gets there at once): get the next track ready now.
                    if upcoming.is_none() && matches!(outcome, Outcome::Ended) {
                        if let Some(q) = &next {
                            upcoming = Some((next_index, self.prefetch_next(q.clone())));
                        }
                    }
                    break r;
                }
                () = crate::signals::stop_requested(), if !matches!(outcome, Outcome::Quit) => {
                    outcome = Outcome::Quit;
                    if let Some(p) = current() { p.stop(); }
                }
                source = joins.next() => joins.deliver(source, current()),
                k = key, if !input_ended => {
                    let Some(k) = k else {
                        // The terminal went away: nobody is listening.
                        input_ended = true;
                        outcome = Outcome::Quit;
                        if let Some(p) = current() { p.stop(); }
                        continue;
                    };
                    let Some(p) = current() else { continue };
                    match k {
                        Key::Pause => {
                            let paused = !p.stats.paused.load(Relaxed);
                            p.set_paused(paused);
                        }
                        Key::Seek(by) => {
                            let pos = p.stats.target_position().as_secs_f64();
                            let to = (pos + by as f64).clamp(0.0, total.as_secs_f64());
                            p.seek(Duration::from_secs_f64(to));
                        }
                        Key::Volume(by) => {
                            *volume = (*volume + by as f32 / 100.0).clamp(0.0, 2.0);
                            p.set_volume(*volume);
                        }
                        Key::Next => { outcome = Outcome::Next; p.skip(); }
                        Key::Prev => { outcome = Outcome::Prev; p.skip(); }
                        Key::Quit => { outcome = Outcome::Quit; p.stop(); }
                    }
                }
                _ = tick.tick() => {
                    let Some(p) = current() else { continue };
                    joins.flush(&p);
                    let pos = p.stats.position();
                    // Near the end: look up the next track and fetch its start.
                    if pos + PREFETCH_AHEAD >= total && upcoming.is_none() {
                        if let Some(q) = &next {
                            upcoming = Some((next_index, self.prefetch_next(q.clone())));
                        }
                    }
                    if show {
                        let line = status_line(&entry, &p, total, *volume);
                        if raw { crate::tui::status(&line) } else {
                            output::note_inline(format_args!("\r\x1b[2K{line}"));
                        }
                    }
                }
            }
        };
        if show && !raw {
            output::note_inline(format_args!("\r\x1b[2K"));
        }
        let report = result?;
        Ok((report, outcome, upcoming))
    }

    /// Looks the next track up and fetches what it needs to start into the
    /// cache.
    fn prefetch_next(&self, query: String) -> tokio::task::JoinHandle<Result<Prepared>> {
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        tokio::spawn(async move {
            let mut prepared = prepare(&pool, &cache, &query, Duration::ZERO).await?;
            if !prepared.sources.is_empty() {
                prepared.prefetched =
                    prefetch(cache, &prepared.manifest, &prepared.sources, PREFETCH_LEAD).await?;
            }
            Ok(prepared)
        })
    }
}

/// The track's ReplayGain as a linear gain, held below clipping by its
/// peak; 1 without tags.
pub fn replay_gain(tags: &chorus_protocol::Tags) -> f32 {
    let Some(db) = tags.track_gain_db.or(tags.album_gain_db) else { return 1.0 };
    let gain = 10f32.powf(db / 20.0);
    match tags.track_peak.or(tags.album_peak).filter(|p| *p > 0.0) {
        Some(peak) => gain.min(1.0 / peak),
        None => gain,
    }
}

/// `▶ Title – Artist  1:23 / 4:05  buffered 12.3 s  3 peers (92% peers, 8% seed)  0 underruns  vol 100%`
fn status_line(entry: &CatalogEntry, p: &Playback, total: Duration, volume: f32) -> String {
    let title = title(entry);
    let who = match &entry.tags.artist {
        Some(a) => format!("{title} – {a}"),
        None => title,
    };
    let pos = p.stats.position();
    // Audio here, contiguous from the playhead.
    let m = p.store.manifest();
    let mut i = m.chunk_at_time(pos).0;
    while i < m.layout().count() && p.store.has(i) {
        i += 1;
    }
    let ahead = if i >= m.layout().count() {
        total.saturating_sub(pos)
    } else {
        m.chunk_media_time(chorus_protocol::ChunkIndex(i)).saturating_sub(pos)
    };
    let (mut seed, mut others, mut used) = (0u64, 0u64, 0);
    if let Ok(v) = p.fetch.by_peer.lock() {
        for (_, _, bytes, is_seed) in v.iter() {
            if *bytes > 0 {
                used += 1;
            }
            if *is_seed { seed += bytes } else { others += bytes }
        }
    }
    let all = (seed + others).max(1) as f64;
    let state = if p.stats.paused.load(Relaxed) { "⏸ paused" } else { "▶" };
    format!(
        "{state} {who}  {} / {}  buffered {:.1} s  {used} peers ({:.0}% peers, {:.0}% seed)  {} underruns  vol {:.0}%",
        output::clock(pos),
        output::clock(total),
        ahead.as_secs_f64(),
        others as f64 * 100.0 / all,
        seed as f64 * 100.0 / all,
        p.stats.underruns.load(Relaxed),
        volume * 100.0
    )
}

/// `chorus devices`.
pub fn devices() -> Result<()> {
    let list = chorus_player::sink::device::list_devices()?;
    if list.is_empty() {
        output::say!("no audio output devices; use --out null or --out FILE.wav");
    }
    for d in list {
        output::say!("{d}");
    }
    Ok(())
}

/// How long the other peers get once the first has answered: a peer that is
/// down must not hold playback back for the whole connect timeout.
pub const CONNECT_GRACE: Duration = Duration::from_secs(1);

/// How long after a start peers still dialling are worth a warning: many
/// round trips, so a handshake merely slower than the start's says
/// nothing.
const SILENT_PEERS_AFTER: Duration = Duration::from_millis(500);

/// Holders heard of through who-has that are dialled for one track: each
/// costs a handshake, and their addresses are only a stranger's word.
const MAX_DISCOVERED_DIALS: usize = 8;

/// How long reaching a holder heard of may take (a direct dial or a punch,
/// then a relay): a dead or made-up peer costs this, in parallel with the
/// others, never the first note.
const DISCOVERED_DIAL_TIMEOUT: Duration = Duration::from_secs(9);

/// How long a peer exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);

/// Feeds the peers reached directly after a relay (`ups`) into a running
/// fetch as sources of `track`.
fn upgrades_to_sources(
    track: TrackId,
    mut ups: tokio::sync::mpsc::Receiver<Peer>,
    tx: tokio::sync::mpsc::Sender<Source>,
) {
    tokio::spawn(async move {
        while let Some(peer) = ups.recv().await {
            tracing::debug!("{} joins the fetch directly", peer.addr());
            if let Ok((_, is_seed, have)) = peer.manifest_and_origin(track).await {
                if tx.send(Source { peer, is_seed, have, head_rest: None }).await.is_err() {
                    break;
                }
            }
        }
    });
}

/// Asks the peers we know who else holds `track` (the query travels two
/// hops) and dials up to `MAX_DISCOVERED_DIALS` new holders at once, each
/// with a short timeout; a holder counts only once its certificate proves
/// the id it was announced with. Failures only cost those peers.
pub async fn discover(
    transport: &Transport,
    asked: &[Peer],
    known: &[Peer],
    track: TrackId,
    upgrades: Option<tokio::sync::mpsc::Sender<Peer>>,
) -> Vec<Peer> {
    let mut found: Vec<(chorus_protocol::message::PeerInfo, &Peer)> = Vec::new();
    for p in asked {
        match p.who_has(track, 2).await {
            Ok(peers) => found.extend(peers.into_iter().map(|i| (i, p))),
            Err(e) => tracing::debug!("who-has on {} failed: {e}", p.addr()),
        }
    }
    let me = transport.peer_id();
    let mut seen: Vec<_> = known.iter().map(Peer::id).collect();
    let mut heard = Vec::new();
    for (info, via) in found {
        if info.id == me || seen.contains(&info.id) || transport.is_banned(&info.id) {
            continue;
        }
        seen.push(info.id);
        heard.push((info.addrs.first().copied(), info.id, via.clone()));
    }
    let new = dial_heard(transport, heard, upgrades).await;
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
        (
            std::cmp::Reverse(chorus_streamer::library::match_score(e, query)),
            std::cmp::Reverse(holders.len()),
        )
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

/// A track's name: its title tag, else its file name, else its short id.
pub fn title(e: &CatalogEntry) -> String {
    match (&e.tags.title, e.file_name.is_empty()) {
        (Some(t), _) if !t.trim().is_empty() => t.clone(),
        (_, false) => e.file_name.clone(),
        _ => format!("track {}", e.track.fmt_short()),
    }
}

/// A track in a line: title, artist, length, format and short id.
pub fn describe(e: &CatalogEntry) -> String {
    let mut s = format!("\"{}\"", title(e));
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

/// What asking the holders found: the verified manifest, the holders that
/// answered as fetch sources, and the head of the track if the first
/// holder's start response carried it.
pub struct Found {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The holders that answered.
    pub sources: Vec<Source>,
    /// The head of the track, if a start response carried it.
    pub head: Vec<VerifiedChunk>,
}

/// Asks every holder at once (one round trip in all): the first for
/// everything needed to start at `at` (a start request: manifest, headers
/// and the first audio in one response), the others for the manifest and
/// what they hold; they answer as fetch sources, marked as original seeds
/// or not.
pub async fn sources_for(holders: &[Peer], track: TrackId, at: Duration) -> Result<Found> {
    let asks: Vec<_> = holders
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.clone();
            tokio::spawn(async move {
                let answer = if i == 0 {
                    p.start(&Want::Track(track), at, chorus_streamer::client::START_BUDGET)
                        .await
                        .map(|mut a| {
                            let rest = a.rest.take().map(|r| Arc::new(Mutex::new(Some(r))));
                            (a.manifest, a.origin, a.have, a.head, rest)
                        })
                } else {
                    p.manifest_and_origin(track)
                        .await
                        .map(|(m, origin, have)| (m, origin, have, Vec::new(), None))
                };
                (answer, p)
            })
        })
        .collect();
    let mut manifest = None;
    let mut sources = Vec::new();
    let mut head = Vec::new();
    let mut last = None;
    for ask in asks {
        match ask.await {
            Ok((Ok((m, origin, have, h, head_rest)), peer)) => {
                manifest.get_or_insert(m);
                if head.is_empty() {
                    head = h;
                }
                sources.push(Source { peer, is_seed: origin, have, head_rest });
            }
            Ok((Err(e), peer)) => {
                // A peer without the track is common (one named to find
                // others through); anything else is worth a warning.
                let missing = matches!(
                    e,
                    chorus_streamer::error::Error::Remote {
                        code: chorus_protocol::message::ErrorCode::UnknownTrack,
                        ..
                    }
                );
                if missing {
                    tracing::debug!("{} does not have {}", peer.addr(), track.fmt_short());
                } else {
                    tracing::warn!("{} cannot serve {}: {e}", peer.addr(), track.fmt_short());
                }
                last = Some(e);
            }
            Err(e) => tracing::warn!("manifest request failed: {e}"),
        }
    }
    match manifest {
        Some(manifest) => Ok(Found { manifest, sources, head }),
        None => {
            Err(last
                .map_or_else(|| anyhow::anyhow!("no peer has track {track}"), anyhow::Error::new))
            .with_context(|| format!("fetching the manifest of {track}"))
        }
    }
}

/// Checks an `--out` value: `default`, `null`, `-`, a FILE.wav, or a FIFO
/// or device file that exists. Anything else is refused rather than
/// written as a file of that name in the current folder (`--out alsa:null`,
/// a name from `chorus devices`, made a WAV file called `alsa:null`).
pub fn check_out(out: &str) -> Result<()> {
    if matches!(out, "default" | "null" | "-") {
        return Ok(());
    }
    let path = std::path::Path::new(out);
    let wav = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"));
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
    if wav || special {
        return Ok(());
    }
    anyhow::bail!(
        "--out {out}: not an output. Use `default` (the sound card: choose one with --device \
         NAME, see `chorus devices`), `null`, `-` (standard output) or a file ending in .wav"
    )
}

/// The sink the output options name.
pub fn output_spec(out: &OutputArgs) -> OutputSpec {
    match out.out.as_deref().unwrap_or("default") {
        "default" => OutputSpec::Device(out.device.clone()),
        s => s.parse().unwrap_or(OutputSpec::Null),
    }
}

/// Plays one prepared track with Ctrl-C and --duration handled, sources
/// joining as they answer (for `chorus demo`).
pub async fn play_track(
    global: &Global,
    prepared: Prepared,
    out: &OutputArgs,
    mut options: PlayOptions,
    started: Instant,
) -> Result<PlaybackReport> {
    let Prepared { manifest, sources, head, joins, .. } = prepared;
    let mut joins = Joins::new(joins);
    options.head = head;
    options.duration = out.duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let mut player = Player::new(output_spec(out), false);
    let handle: Arc<Mutex<Option<Playback>>> = Arc::new(Mutex::new(None));
    let h = handle.clone();
    let playing = player.play(manifest, sources, options, started, move |p| {
        if let Ok(mut slot) = h.lock() {
            *slot = Some(p.clone());
        }
    });
    let mut playing = Box::pin(playing);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut stopping = false;
    let report = loop {
        let current = || handle.lock().ok().and_then(|h| h.clone());
        tokio::select! {
            r = &mut playing => break r?,
            () = crate::signals::stop_requested(), if !stopping => {
                stopping = true;
                if !global.quiet { output::note_inline(format_args!("\nstopping…\n")); }
                if let Some(p) = current() { p.stop(); }
            }
            source = joins.next() => joins.deliver(source, current()),
            _ = tick.tick() => {
                if let Some(p) = current() {
                    joins.flush(&p);
                }
            }
        }
    };
    drop(playing);
    player.finish().await?;
    Ok(report)
}

/// Peers the given ones know (by peer exchange), dialled. Failures only
/// cost those peers.
pub async fn known_by(transport: &Transport, peers: &[Peer]) -> Vec<Peer> {
    let me = transport.peer_id();
    let mut seen: Vec<_> = peers.iter().map(Peer::id).collect();
    let mut heard = Vec::new();
    for p in peers {
        let exchange = tokio::time::timeout(EXCHANGE_TIMEOUT, p.exchange_peers(Vec::new()));
        let Ok(Ok(list)) = exchange.await else { continue };
        for info in list {
            if info.id == me || seen.contains(&info.id) || transport.is_banned(&info.id) {
                continue;
            }
            seen.push(info.id);
            heard.push((info.addrs.first().copied(), info.id, p.clone()));
        }
    }
    dial_heard(transport, heard, None).await
}

/// Dials peers heard of from others (their word only): at most
/// [`MAX_DISCOVERED_DIALS`], at once, each within
/// [`DISCOVERED_DIAL_TIMEOUT`]; a peer counts once its certificate proves
/// the id it was announced with.
async fn dial_heard(
    transport: &Transport,
    heard: Vec<(Option<SocketAddr>, PeerId, Peer)>,
    upgrades: Option<tokio::sync::mpsc::Sender<Peer>>,
) -> Vec<Peer> {
    let dials: Vec<_> = heard
        .into_iter()
        .take(MAX_DISCOVERED_DIALS)
        .map(|(addr, id, via)| {
            let t = transport.clone();
            let upgrades = upgrades.clone();
            tokio::spawn(async move {
                // Directly, else through a hole `via` helps punch, else
                // through its relay (behind NATs); each step bounded.
                let reach = nat::reach(&t, &via, id, addr);
                match tokio::time::timeout(DISCOVERED_DIAL_TIMEOUT, reach).await {
                    Ok(Ok(peer)) => {
                        // Relayed: keep trying for a direct path meanwhile.
                        if let (Path::Relayed, Some(ups)) = (peer.path(), upgrades) {
                            tokio::spawn(async move {
                                if let Some(direct) = nat::upgrade(&t, &via, id).await {
                                    let _ = ups.send(direct).await;
                                }
                            });
                        }
                        Some(peer)
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(
                            "cannot reach {}, heard of from {}: {e}",
                            id.fmt_short(),
                            via.addr()
                        );
                        None
                    }
                    Err(_) => None,
                }
            })
        })
        .collect();
    let mut found = Vec::new();
    for d in dials {
        if let Ok(Some(peer)) = d.await {
            found.push(peer);
        }
    }
    found
}

/// Prints a playback's summary (and with `-v` its sources and start).
pub fn print_report(global: &Global, r: &PlaybackReport) {
    if global.quiet {
        return;
    }
    output::say!("{}", summary(r));
    print_sources(r);
}

/// One line: what played, how it started, stutter, bytes and their origin.
pub fn summary(r: &PlaybackReport) -> String {
    let first = match r.time_to_first_audio {
        _ if r.joined => "joined the previous track without a gap".to_owned(),
        Some(d) => format!("first audio after {:.1} ms", d.as_secs_f64() * 1e3),
        None => "no audio".to_owned(),
    };
    let resampled = if r.track_rate != r.output_rate && r.output_rate != 0 {
        format!(", resampled {} → {} Hz", r.track_rate, r.output_rate)
    } else {
        String::new()
    };
    let seed: u64 = r.sources.iter().filter(|s| s.3).map(|s| s.2).sum();
    let peers = r.sources.iter().filter(|s| !s.3 && s.2 > 0).count();
    let plural = if peers == 1 { "" } else { "s" };
    let share = match (r.bytes_fetched, seed) {
        (0, _) => String::new(),
        (_, 0) => format!(" (all from {peers} peer{plural}, none from the seed)"),
        (all, s) if s >= all => " (all from the seed)".to_owned(),
        (all, s) => format!(
            " ({} from {peers} peer{plural}, {} from the seed: {:.0}%)",
            output::size(all - s),
            output::size(s),
            s as f64 * 100.0 / all as f64
        ),
    };
    format!(
        "played {} from {}; {first}; {} underruns ({:.2}s silent); {} fetched{share}{resampled}",
        output::clock(r.played),
        output::clock(r.started_at),
        r.underruns,
        r.silent.as_secs_f64(),
        output::size(r.bytes_fetched),
    )
}

/// `-v`: where start-up time went, from the moment play was asked for.
fn print_timeline(t: &Timeline, r: &PlaybackReport, asked: Instant, epoch: Instant) {
    if r.joined {
        return;
    }
    let shift = epoch.saturating_duration_since(asked);
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let mut line = format!("  start: dial {}", ms(shift));
    for (step, at) in &t.steps {
        line.push_str(&format!(", {step} {}", ms(shift + *at)));
    }
    line.push_str(&format!(", chunk requests before start {}", r.requests_before_start));
    if let Some((margin, clean)) = r.start_margin {
        let path = if clean { "the path clean" } else { "the path's loss unknown or seen" };
        line.push_str(&format!(", start margin {} ({path})", ms(margin)));
    }
    if let Some(open) = r.output_open {
        line.push_str(&format!(", output open {}", ms(open)));
    }
    if let Some(ready) = r.decoder_ready {
        line.push_str(&format!(", decoder ready {}", ms(ready)));
    }
    if let Some(first) = r.time_to_first_audio {
        line.push_str(&format!(", first sample {}", ms(first)));
    }
    output::say!("{line}");
}

fn print_sources(r: &PlaybackReport) {
    let total = r.bytes_fetched.max(1) as f64;
    for (id, addr, bytes, seed) in &r.sources {
        output::say!(
            "  {:>9} ({:>3.0}%) from {} at {addr}{}",
            output::size(*bytes),
            *bytes as f64 * 100.0 / total,
            id.fmt_short(),
            if *seed { " (seed)" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_gain_is_linear_and_never_clips() {
        let mut t = chorus_protocol::Tags::default();
        assert_eq!(replay_gain(&t), 1.0, "no tags: unchanged");
        t.track_gain_db = Some(-6.0);
        assert!((replay_gain(&t) - 0.501).abs() < 0.001);
        t.track_gain_db = Some(6.0);
        t.track_peak = Some(0.8);
        assert_eq!(replay_gain(&t), 1.0 / 0.8, "+6 dB would clip a 0.8 peak");
        t.track_gain_db = None;
        t.album_gain_db = Some(-3.0);
        assert!((replay_gain(&t) - 0.708).abs() < 0.001, "album gain when no track gain");
    }
}
