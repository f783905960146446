//! The scenarios: what listeners do on one profile's swarm, measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chorus_player::play::PlayOptions;
use chorus_protocol::message::Want;
use chorus_streamer::cache::ChunkCache;
use chorus_streamer::fetch::FetchConfig;
use chorus_streamer::node::Node;
use chorus_streamer::start::Pool;
use indicatif::ProgressBar;

use super::report::{Recorder, Unit};
use super::swarm::{PlayPlan, PlayResult, Swarm, Track, connect, measured_play, sources};

/// Settings shared by the scenarios.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// Plays per profile (single, seek-storm: one per track in turn).
    pub plays: usize,
    /// Audio listened to per play, seconds.
    pub listen_s: f64,
    /// Listeners in a crowd (flash-crowd, churn).
    pub listeners: usize,
    /// Seed of every random draw.
    pub seed: u64,
}

/// A tiny deterministic generator for start offsets and seek targets.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Records what every play reports.
fn record_play(rec: &Recorder, scenario: &str, profile: &str, start_metric: &str, r: &PlayResult) {
    if let Some(t) = r.report.time_to_first_audio {
        rec.add(scenario, profile, start_metric, Unit::Ms, ms(t));
    }
    rec.add(scenario, profile, "underruns", Unit::Count, r.report.underruns as f64);
    rec.add(scenario, profile, "silent_ms", Unit::Ms, ms(r.report.silent));
    // Where in the track it ran dry: just after the start (the start rule),
    // after a seek, or later (the fetch).
    if let Some(at) = r.report.underrun_at {
        rec.add(scenario, profile, "underrun_at_ms", Unit::Ms, ms(at));
    }
    for s in &r.seeks {
        rec.add(scenario, profile, "seek_ms", Unit::Ms, ms(*s));
    }
    rec.add_bytes(scenario, profile, &r.bytes);
}

fn options(cache: Option<Arc<ChunkCache>>) -> PlayOptions {
    PlayOptions { fetch: FetchConfig { cache, ..FetchConfig::default() }, ..Default::default() }
}

/// Records a start in ms and in round trips of the profile.
fn record_start(rec: &Recorder, swarm: &Swarm, metric: &str, r: &PlayResult) {
    let (profile, rtt) = (swarm.profile.name, swarm.profile.rtt);
    record_play(rec, "single", profile, &format!("{metric}_ms"), r);
    // Where the time after the network went: the decoder had its header.
    if let Some(t) = r.report.decoder_ready {
        rec.add("single", profile, &format!("{metric}_decoder_ready_ms"), Unit::Ms, ms(t));
    }
    if let (Some(t), false) = (r.report.time_to_first_audio, rtt.is_zero()) {
        rec.add(
            "single",
            profile,
            &format!("{metric}_rtt"),
            Unit::Rtt,
            t.as_secs_f64() / rtt.as_secs_f64(),
        );
    }
    rec.add(
        "single",
        profile,
        "requests_before_start",
        Unit::Count,
        r.report.requests_before_start as f64,
    );
    if let Some((_, clean)) = r.report.start_margin {
        let pct = if clean { 100.0 } else { 0.0 };
        rec.add("single", profile, &format!("{metric}_clean_path_pct"), Unit::Pct, pct);
    }
}

/// Records where a start's time went: the pool's steps, from when the
/// play was asked, as `{prefix}_{step}_ms`.
fn record_steps(
    rec: &Recorder,
    profile: &str,
    prefix: &str,
    pool: &Pool,
    started: Instant,
    prepared: &chorus_cli::play::Prepared,
) {
    let shift = pool.epoch().saturating_duration_since(started);
    for (step, at) in &prepared.timeline.steps {
        let metric = format!("{prefix}_{}_ms", step.replace(' ', "_"));
        rec.add("single", profile, &metric, Unit::Ms, ms(shift + *at));
    }
    // The round trip QUIC measured on the connection the start came on:
    // the profile's, its jitter, and what this machine adds to each one
    // (the emulator's threads, the sockets, the tasks at both ends).
    if let Some(s) = prepared.sources.first() {
        rec.add("single", profile, "path_rtt_ms", Unit::Ms, ms(s.peer.connection().rtt()));
    }
}

/// Plays what [`chorus_cli::play::prepare`] found, as `chorus play` does.
async fn play_prepared(
    prepared: chorus_cli::play::Prepared,
    cache: Option<Arc<ChunkCache>>,
    started: Instant,
    plan: &PlayPlan,
) -> Result<PlayResult> {
    let mut opts = options(cache);
    opts.head = prepared.head;
    measured_play(prepared.manifest, prepared.sources, prepared.joins, opts, started, plan).await
}

/// `single`: one listener at a time, on the start path `chorus play` runs
/// ([`Pool`] and [`chorus_cli::play::prepare`]). Per play: a cold start by id
/// (new endpoint, peers never seen), a seek into the middle, a warm start
/// of the next track (connections up), a replay of the first track (its
/// start is in the listener's cache), a start by id from a new process on
/// the same host with the tickets the first kept (peers known: the request
/// sealed in the handshake), a cold start by query (the title's words),
/// a start by id from a new process with that data dir to a peer it has
/// never met (no ticket: two round trips; the link's record kept), and the
/// baseline: the same track from the seed alone in plain file order.
pub async fn single(swarm: &Swarm, s: &Settings, rec: &Recorder, bar: &ProgressBar) -> Result<()> {
    // A peer holding every track that no listener's data dir has met:
    // the cold starts dial the others.
    let stranger = swarm.add_peer().await?;
    let r = single_plays(swarm, &stranger, s, rec, bar).await;
    stranger.shutdown().await;
    r
}

async fn single_plays(
    swarm: &Swarm,
    stranger: &Node,
    s: &Settings,
    rec: &Recorder,
    bar: &ProgressBar,
) -> Result<()> {
    let profile = swarm.profile.name;
    let stranger = super::swarm::addrs(&[stranger]);
    let listen = Duration::from_secs_f64(s.listen_s);
    let nodes = swarm.nodes();
    let addrs = super::swarm::addrs(&nodes);
    let no_cache = ChunkCache::disabled();
    for i in 0..s.plays {
        let track = &swarm.tracks[i % swarm.tracks.len()];
        let next = &swarm.tracks[(i + 1) % swarm.tracks.len()];
        let cache_dir = tempfile::tempdir()?;
        let cache = Arc::new(ChunkCache::open(cache_dir.path(), u64::MAX / 4)?);
        let id = track.manifest.id().to_string();
        let want = Want::Track(track.manifest.id());
        // The listener's data dir's tickets file (`chorus play` keeps one).
        let tickets = cache_dir.path().join("tickets");

        // Cold, by id: the clock starts before the endpoint exists.
        let started = Instant::now();
        let listener = swarm.listener()?;
        listener.resume().load(&tickets);
        let pool = Pool::dial_asking(&listener, &addrs, Some((&want, Duration::ZERO)));
        let prepared = chorus_cli::play::prepare(&pool, &no_cache, &id, Duration::ZERO).await?;
        rec.add("single", profile, "connect_cold_ms", Unit::Ms, ms(started.elapsed()));
        record_steps(rec, profile, "cold", &pool, started, &prepared);
        let seek_to = prepared.manifest.duration().mul_f64(0.6);
        let plan = PlayPlan {
            listen,
            seeks: vec![seek_to],
            seek_after: listen,
            limit: Duration::from_secs(20),
        };
        let r = play_prepared(prepared, Some(cache.clone()), started, &plan).await?;
        record_start(rec, swarm, "start_cold", &r);
        bar.inc(1);

        // Warm: connections up, a track never played.
        let started = Instant::now();
        let next_id = next.manifest.id().to_string();
        let prepared =
            chorus_cli::play::prepare(&pool, &no_cache, &next_id, Duration::ZERO).await?;
        rec.add("single", profile, "manifest_warm_ms", Unit::Ms, ms(started.elapsed()));
        let plan =
            PlayPlan { listen, seeks: vec![], seek_after: listen, limit: Duration::from_secs(20) };
        let r = play_prepared(prepared, None, started, &plan).await?;
        record_start(rec, swarm, "start_warm", &r);
        bar.inc(1);

        // Replay: the first track again; its start is in the cache.
        let started = Instant::now();
        let prepared = chorus_cli::play::prepare(&pool, &cache, &id, Duration::ZERO).await?;
        let r = play_prepared(prepared, Some(cache.clone()), started, &plan).await?;
        record_start(rec, swarm, "start_replay", &r);
        bar.inc(1);
        // As `chorus play` does before it exits: the cache's writes done
        // (they would otherwise run into the next process's start).
        let _ = tokio::task::spawn_blocking(move || cache.flush(Duration::from_secs(2))).await;
        listener.resume().save()?;
        let host = listener.local_addr()?.ip();
        listener.close().await;

        // Known, by id: a new process on the same host, with the tickets
        // file the first one left.
        let started = Instant::now();
        let listener = swarm.listener_on(host)?;
        listener.resume().load(&tickets);
        let pool = Pool::dial_asking(&listener, &addrs, Some((&want, Duration::ZERO)));
        let prepared = chorus_cli::play::prepare(&pool, &no_cache, &id, Duration::ZERO).await?;
        let sealed = prepared.timeline.steps.iter().any(|(s, _)| s.contains("sealed in"));
        record_steps(rec, profile, "known", &pool, started, &prepared);
        rec.add("single", profile, "known_sealed_pct", Unit::Pct, if sealed { 100.0 } else { 0.0 });
        let r = play_prepared(prepared, None, started, &plan).await?;
        record_start(rec, swarm, "start_known", &r);
        listener.close().await;
        bar.inc(1);

        // New peer, by id: a new process with the same data dir (what the
        // peers reported of this link kept) to a peer it never met: no
        // ticket, so the request goes once the handshake is done.
        let started = Instant::now();
        let listener = swarm.listener_on(host)?;
        listener.resume().load(&tickets);
        let pool = Pool::dial_asking(&listener, &stranger, Some((&want, Duration::ZERO)));
        let prepared = chorus_cli::play::prepare(&pool, &no_cache, &id, Duration::ZERO).await?;
        record_steps(rec, profile, "new", &pool, started, &prepared);
        let r = play_prepared(prepared, None, started, &plan).await?;
        record_start(rec, swarm, "start_new", &r);
        listener.close().await;
        bar.inc(1);

        // Cold, by query: the title's words instead of the id.
        let started = Instant::now();
        let listener = swarm.listener()?;
        let pool = Pool::dial(&listener, &addrs);
        let words = track.manifest.tags().title.clone().unwrap_or_else(|| track.name.clone());
        let prepared = chorus_cli::play::prepare(&pool, &no_cache, &words, Duration::ZERO).await?;
        record_steps(rec, profile, "query", &pool, started, &prepared);
        let r = play_prepared(prepared, None, started, &plan).await?;
        record_start(rec, swarm, "start_query", &r);
        listener.close().await;
        bar.inc(1);

        // Baseline: the seed alone, file order, no start rule.
        let started = Instant::now();
        let listener = swarm.listener()?;
        let peers = connect(&listener, &nodes[..1]).await;
        let (m, src) = sources(&peers, track).await?;
        let opts = PlayOptions {
            fetch: FetchConfig { plain_order: true, ..FetchConfig::default() },
            ..Default::default()
        };
        // A naive client cannot start some files (an M4A with its index
        // at the end) before it has all of them: give up after 8 s.
        let plan = PlayPlan { limit: Duration::from_secs(8), ..plan };
        let r = measured_play(m, src, None, opts, started, &plan).await?;
        match r.report.time_to_first_audio {
            Some(t) => rec.add("baseline", profile, "start_cold_ms", Unit::Ms, ms(t)),
            None => rec.add("baseline", profile, "no_start_in_8s", Unit::Count, 1.0),
        }
        rec.add("baseline", profile, "underruns", Unit::Count, r.report.underruns as f64);
        rec.add("baseline", profile, "silent_ms", Unit::Ms, ms(r.report.silent));
        rec.add_bytes("baseline", profile, &r.bytes);
        listener.close().await;
        bar.inc(1);
    }
    Ok(())
}

/// Plays per `single` play (for the progress bar).
pub const SINGLE_STEPS: u64 = 7;

/// `seek-storm`: one listener seeks to a random place every half second
/// while playing, `plays` × 8 times.
/// Discovery: a listener that knows only a DHT bootstrap node finds the
/// swarm by the words of a title and plays. The DHT is `mainline`'s
/// testnet of 16 nodes on 127.0.0.1, joined by every swarm node from its
/// own address: its hops are not behind the emulated link (on the
/// internet each costs a round trip), so `dht_lookup_ms` is a lower bound;
/// everything after the lookup is behind it.
pub async fn discovery(
    swarm: &Swarm,
    s: &Settings,
    rec: &Recorder,
    bar: &ProgressBar,
) -> Result<()> {
    use chorus_streamer::dht::Dht;
    let profile = swarm.profile.name;
    let testnet = tokio::task::spawn_blocking(|| mainline::Testnet::builder(16).build())
        .await?
        .context("starting a local DHT testnet")?;
    let bootstrap = testnet.bootstrap.clone();
    // The seed lists the tracks (found by their words); the peers hold
    // them in their caches (found by id), as `chorus seed` announces.
    let listed: Vec<_> = swarm
        .tracks
        .iter()
        .map(|t| (t.manifest.id(), chorus_streamer::dht::index_text(t.manifest.tags(), &t.name)))
        .collect();
    let ids: Vec<_> = swarm.tracks.iter().map(|t| t.manifest.id()).collect();
    let mut announcers = Vec::new();
    for (i, node) in swarm.nodes().into_iter().enumerate() {
        let addr = node.transport().local_addr()?;
        let std::net::IpAddr::V4(ip) = addr.ip() else { continue };
        let dht = Dht::start_at(Some(&bootstrap), &[], None, Some(ip))?;
        dht.bootstrapped().await;
        let keys = match i {
            0 => dht.announce(&listed, &[], addr.port()).await,
            _ => dht.announce(&[], &ids, addr.port()).await,
        };
        tracing::debug!("discovery: node {i} at {addr} announced {keys} keys");
        announcers.push(dht);
    }
    let no_cache = ChunkCache::disabled();
    let listen = Duration::from_secs_f64(s.listen_s);
    for i in 0..s.plays {
        let track = &swarm.tracks[i % swarm.tracks.len()];
        let words = track.manifest.tags().title.clone().unwrap_or_else(|| track.name.clone());
        let started = Instant::now();
        let listener = swarm.listener()?;
        let pool = Pool::dial(&listener, &[]);
        let dht = Dht::start(Some(&bootstrap), None)?;
        let holders = dht.holders_of_words(&words).await;
        rec.add("discovery", profile, "dht_lookup_ms", Unit::Ms, ms(started.elapsed()));
        rec.add("discovery", profile, "dht_holders", Unit::Count, holders.len() as f64);
        for a in holders {
            pool.add(a, None, "dht");
        }
        let prepared = chorus_cli::play::prepare(&pool, &no_cache, &words, Duration::ZERO).await?;
        let plan =
            PlayPlan { listen, seeks: vec![], seek_after: listen, limit: Duration::from_secs(20) };
        let r = play_prepared(prepared, None, started, &plan).await?;
        record_play(rec, "discovery", profile, "start_discovery_ms", &r);
        listener.close().await;
        bar.inc(1);
    }
    drop(announcers);
    Ok(())
}

pub async fn seek_storm(
    swarm: &Swarm,
    s: &Settings,
    rec: &Recorder,
    bar: &ProgressBar,
) -> Result<()> {
    let profile = swarm.profile.name;
    let mut rng = Rng::new(s.seed ^ 0x5eec);
    let nodes = swarm.nodes();
    for i in 0..s.plays {
        let track = &swarm.tracks[i % swarm.tracks.len()];
        let started = Instant::now();
        let listener = swarm.listener()?;
        let prepared = super::swarm::start(&listener, &nodes, track).await?;
        let len = prepared.manifest.duration().as_secs_f64();
        let seeks = (0..8).map(|_| Duration::from_secs_f64(rng.unit() * len * 0.95)).collect();
        let plan = PlayPlan {
            listen: Duration::from_millis(500),
            seeks,
            seek_after: Duration::from_millis(500),
            limit: Duration::from_secs(40),
        };
        let r = play_prepared(prepared, None, started, &plan).await?;
        record_play(rec, "seek-storm", profile, "start_cold_ms", &r);
        listener.close().await;
        bar.inc(1);
    }
    Ok(())
}

/// `flash-crowd`: `listeners` start the same track within one second.
/// Each listener is a node that serves what it has fetched so far, and
/// knows the seed, the warm peers and the listeners that started before
/// it (as a tracker or the DHT would tell it).
pub async fn flash_crowd(
    swarm: &Swarm,
    s: &Settings,
    rec: &Recorder,
    bar: &ProgressBar,
) -> Result<()> {
    crowd(swarm, s, rec, bar, "flash-crowd", Duration::from_secs(1), false).await
}

/// `churn`: listeners start over a few seconds while, every second, a
/// peer leaves and a new one joins.
pub async fn churn(swarm: &Swarm, s: &Settings, rec: &Recorder, bar: &ProgressBar) -> Result<()> {
    crowd(swarm, s, rec, bar, "churn", Duration::from_secs(3), true).await
}

async fn crowd(
    swarm: &Swarm,
    s: &Settings,
    rec: &Recorder,
    bar: &ProgressBar,
    scenario: &'static str,
    spread: Duration,
    churn: bool,
) -> Result<()> {
    let profile = swarm.profile.name;
    let mut rng = Rng::new(s.seed ^ 0xc40d);
    let track: Track =
        swarm.tracks.iter().max_by_key(|t| t.manifest.duration()).cloned().context("no tracks")?;
    let listen = Duration::from_secs_f64(s.listen_s.max(2.0) * 2.0);
    // Who is up: the warm peers (churned) and the listeners so far.
    let peers: Arc<std::sync::Mutex<Vec<Node>>> =
        Arc::new(std::sync::Mutex::new(swarm.peers.clone()));
    let crowd: Arc<std::sync::Mutex<Vec<Node>>> = Arc::default();
    let stop_churn = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churner = churn.then(|| {
        let (peers, stop) = (peers.clone(), stop_churn.clone());
        async move {
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && k < 60 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let leaving = {
                    let mut p = peers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let len = p.len();
                    if len == 0 { None } else { Some(p.remove(k % len)) }
                };
                if let Some(n) = leaving {
                    n.shutdown().await;
                    rec.add(scenario, profile, "peers_left", Unit::Count, 1.0);
                }
                let joined = swarm.add_peer().await?;
                peers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(joined);
                k += 1;
            }
            Ok::<(), anyhow::Error>(())
        }
    });
    let offsets: Vec<Duration> = (0..s.listeners).map(|_| spread.mul_f64(rng.unit())).collect();
    let t0 = tokio::time::Instant::now();
    let plays = offsets.into_iter().enumerate().map(|(i, at)| {
        let (peers, crowd, track) = (peers.clone(), crowd.clone(), track.clone());
        async move {
            tokio::time::sleep_until(t0 + at).await;
            let started = Instant::now();
            let (node, cache) = swarm.serving_listener(&format!("{scenario}-{i}"))?;
            let mut known: Vec<Node> = vec![swarm.seed.clone()];
            known.extend(peers.lock().map(|p| p.clone()).unwrap_or_default());
            known.extend(crowd.lock().map(|c| c.clone()).unwrap_or_default());
            let refs: Vec<&Node> = known.iter().collect();
            let prepared = super::swarm::start(node.transport(), &refs, &track).await?;
            if let Ok(mut c) = crowd.lock() {
                c.push(node.clone());
            }
            let plan = PlayPlan {
                listen,
                seeks: vec![],
                seek_after: listen,
                limit: Duration::from_secs(60),
            };
            let r = play_prepared(prepared, Some(cache), started, &plan).await;
            if let Ok(r) = &r {
                record_play(rec, scenario, profile, "start_cold_ms", r);
                rec.add(scenario, profile, "stalls", Unit::Count, r.report.stalls as f64);
            }
            bar.inc(1);
            r.map(|_| ())
        }
    });
    let results = match churner {
        Some(c) => {
            let all = futures_join_all(plays.collect());
            let (results, churned) = tokio::join!(
                async {
                    let r = all.await;
                    stop_churn.store(true, std::sync::atomic::Ordering::Relaxed);
                    r
                },
                c
            );
            churned?;
            results
        }
        None => futures_join_all(plays.collect()).await,
    };
    for node in crowd.lock().map(|c| c.clone()).unwrap_or_default() {
        node.shutdown().await;
    }
    for node in peers.lock().map(|p| p.clone()).unwrap_or_default() {
        if !swarm.peers.iter().any(|p| p.transport().peer_id() == node.transport().peer_id()) {
            node.shutdown().await;
        }
    }
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        rec.add(scenario, profile, "failed_plays", Unit::Count, failed as f64);
    }
    Ok(())
}

/// Runs futures concurrently on this task and collects their outputs.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).map(Some).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in pinned.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().flatten().collect()
}
