//! A swarm of real nodes on loopback, every socket behind the emulated
//! link of one profile: one seed serving the sample set, and peers that
//! already hold every track in their caches (as listeners who played them
//! before would).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chorus_player::play::{PlayOptions, Playback, PlaybackReport};
use chorus_player::sink::OutputSpec;
use chorus_protocol::{ChunkIndex, Manifest};
use chorus_streamer::cache::ChunkCache;
use chorus_streamer::client::Peer;
use chorus_streamer::fetch::Source;
use chorus_streamer::identity::Identity;
use chorus_streamer::library::{self, Library, ScanConfig};
use chorus_streamer::netem::LinkProfile;
use chorus_streamer::node::{Node, NodeLimits};
use chorus_streamer::transport::Transport;

use super::report::Bytes as ByteCounts;

/// A sample track: its manifest and file.
#[derive(Clone)]
pub struct Track {
    /// The manifest.
    pub manifest: Manifest,
    /// The file on the seed.
    pub path: PathBuf,
    /// A short name for tables.
    pub name: String,
}

/// Indexes the sample set once (the index is reused by every swarm).
pub fn scan_samples(samples: &Path, data: &Path) -> Result<(Library, Vec<Track>)> {
    let dir = samples.to_path_buf();
    let (lib, _) =
        library::scan(&[dir], library::load_index(data), &ScanConfig::default(), &|_| {}, &|w| {
            tracing::debug!("{w}")
        });
    let _ = library::save_index(data, &lib);
    let mut tracks: Vec<Track> = lib
        .tracks()
        .map(|t| Track {
            manifest: t.manifest.clone(),
            path: t.path.clone(),
            name: t.file_name.clone(),
        })
        .collect();
    tracks.sort_by(|a, b| a.name.cmp(&b.name));
    if tracks.is_empty() {
        bail!("no playable tracks in {}", samples.display());
    }
    Ok((lib, tracks))
}

/// One profile's swarm.
pub struct Swarm {
    /// The link every socket of this swarm sits behind.
    pub profile: LinkProfile,
    /// The original seed.
    pub seed: Node,
    /// Peers holding every track in their caches.
    pub peers: Vec<Node>,
    /// The sample tracks.
    pub tracks: Vec<Track>,
    work: PathBuf,
    /// Seeds for the links' random draws, so runs repeat.
    next_link_seed: std::sync::atomic::AtomicU64,
    /// Holds the temporary directory for the swarm's lifetime.
    _dir: tempfile::TempDir,
}

impl Swarm {
    /// Starts the seed (indexing `samples` with the index in `index_dir`)
    /// and `peers` warm peers.
    pub async fn start(
        profile: LinkProfile,
        samples: &Path,
        index_dir: &Path,
        peers: usize,
        seed: u64,
    ) -> Result<Self> {
        let dir = tempfile::tempdir().context("making a temp dir")?;
        let (s, i) = (samples.to_path_buf(), index_dir.to_path_buf());
        let (library, tracks) = tokio::task::spawn_blocking(move || scan_samples(&s, &i)).await??;
        let work = dir.path().to_path_buf();
        let links = std::sync::atomic::AtomicU64::new(seed ^ hash_name(profile.name));
        let first = links.fetch_add(LINK_SEED_STEP, std::sync::atomic::Ordering::Relaxed);
        let seed_node =
            start_node(&work.join("seed"), library, None, Some((profile.clone(), first)))?;
        let mut swarm = Self {
            profile,
            seed: seed_node,
            peers: Vec::new(),
            tracks,
            work,
            next_link_seed: links,
            _dir: dir,
        };
        for _ in 0..peers {
            let p = swarm.add_peer().await?;
            swarm.peers.push(p);
        }
        Ok(swarm)
    }

    fn link_seed(&self) -> u64 {
        self.next_link_seed.fetch_add(LINK_SEED_STEP, std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts one more peer whose cache holds every track (filled from the
    /// files directly: how it got them is not what is measured).
    pub async fn add_peer(&self) -> Result<Node> {
        let n = self.next_link_seed.load(std::sync::atomic::Ordering::Relaxed);
        let dir = self.work.join(format!("peer-{n:016x}"));
        let cache = Arc::new(ChunkCache::open(&dir.join("cache"), u64::MAX / 4)?);
        let (c, tracks) = (cache.clone(), self.tracks.clone());
        tokio::task::spawn_blocking(move || warm_cache(&c, &tracks)).await??;
        start_node(
            &dir,
            Library::default(),
            Some(cache),
            Some((self.profile.clone(), self.link_seed())),
        )
    }

    /// Addresses of the seed and every peer, the seed first.
    pub fn nodes(&self) -> Vec<&Node> {
        std::iter::once(&self.seed).chain(self.peers.iter()).collect()
    }

    /// A listener's endpoint on this swarm's link (fresh identity: cold).
    pub fn listener(&self) -> Result<Transport> {
        self.listener_on(next_addr().ip())
    }

    /// A listener's endpoint on `host` (a new process on a host that ran
    /// one before: its address tokens are for that IP).
    pub fn listener_on(&self, host: std::net::IpAddr) -> Result<Transport> {
        let identity = Arc::new(Identity::ephemeral()?);
        Ok(Transport::bind_emulated(
            identity,
            (host, 0).into(),
            None,
            &Default::default(),
            Some((self.profile.clone(), self.link_seed())),
        )?)
    }

    /// A listener that also serves what it caches (for crowds).
    pub fn serving_listener(&self, name: &str) -> Result<(Node, Arc<ChunkCache>)> {
        let dir = self.work.join(name);
        let cache = Arc::new(ChunkCache::open(&dir.join("cache"), u64::MAX / 4)?);
        let node = start_node(
            &dir,
            Library::default(),
            Some(cache.clone()),
            Some((self.profile.clone(), self.link_seed())),
        )?;
        Ok((node, cache))
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for n in self.nodes() {
            n.shutdown().await;
        }
    }
}

const LINK_SEED_STEP: u64 = 0x9e37_79b9_7f4a_7c15;

/// A loopback address of its own for each node and listener of a bench
/// swarm (127.1.0.1, 127.1.0.2, …): peers on a network come from their own
/// addresses, and a seed takes only a few connections from one.
fn next_addr() -> std::net::SocketAddr {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (250 * 250);
    ([127, 1, 1 + (i / 250) as u8, 1 + (i % 250) as u8], 0).into()
}

pub(super) fn hash_name(name: &str) -> u64 {
    name.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A node serving `library` with no link emulation (for the side by side,
/// where proxies are the link).
pub(super) fn plain_node(dir: &Path, library: Library) -> Result<Node> {
    start_node(dir, library, None, None)
}

fn start_node(
    dir: &Path,
    library: Library,
    cache: Option<Arc<ChunkCache>>,
    link: Option<(LinkProfile, u64)>,
) -> Result<Node> {
    std::fs::create_dir_all(dir)?;
    let identity = Arc::new(Identity::load_or_create(dir)?);
    let node =
        Node::bind_emulated(identity, next_addr(), library, cache, NodeLimits::default(), link)?;
    let n = node.clone();
    tokio::spawn(async move { n.serve().await });
    Ok(node)
}

fn warm_cache(cache: &ChunkCache, tracks: &[Track]) -> Result<()> {
    for t in tracks {
        let data = Bytes::from(std::fs::read(&t.path)?);
        cache.put_manifest(&t.manifest)?;
        let layout = t.manifest.layout();
        for i in 0..layout.count() {
            let index = ChunkIndex(i);
            let r = layout.byte_range(index);
            let chunk = data.slice(r.start as usize..r.end as usize);
            cache.put_chunk(&t.manifest.verify(index, chunk)?)?;
        }
    }
    Ok(())
}

/// Connects to every node at once, skipping those that fail.
pub async fn connect(transport: &Transport, nodes: &[&Node]) -> Vec<Peer> {
    let tasks: Vec<_> = nodes
        .iter()
        .filter_map(|n| {
            let addr = n.transport().local_addr().ok()?;
            let (t, id) = (transport.clone(), n.transport().peer_id());
            Some(tokio::spawn(async move { t.connect(addr, Some(id)).await }))
        })
        .collect();
    let mut peers = Vec::new();
    for t in tasks {
        if let Ok(Ok(p)) = t.await {
            peers.push(p);
        }
    }
    peers
}

/// Where to reach each node, with its id.
pub fn addrs(nodes: &[&Node]) -> Vec<(std::net::SocketAddr, Option<chorus_protocol::PeerId>)> {
    nodes
        .iter()
        .filter_map(|n| Some((n.transport().local_addr().ok()?, Some(n.transport().peer_id()))))
        .collect()
}

/// Starts `track` from `nodes` on the path `chorus play` runs: a pool
/// dialling every node at once, one start request to the first to answer,
/// the others joining as they answer.
pub async fn start(
    transport: &Transport,
    nodes: &[&Node],
    track: &Track,
) -> Result<chorus_cli::play::Prepared> {
    let pool = chorus_streamer::start::Pool::dial(transport, &addrs(nodes));
    let id = track.manifest.id().to_string();
    chorus_cli::play::prepare(&pool, &ChunkCache::disabled(), &id, Duration::ZERO)
        .await
        .with_context(|| format!("no node of the swarm serves {}", track.name))
}

/// How one measured play should go.
pub struct PlayPlan {
    /// Stop after this much audio has played (after the last seek, if any).
    pub listen: Duration,
    /// Seek to these positions, one after another, each once the previous
    /// one (or the start) has played `seek_after`.
    pub seeks: Vec<Duration>,
    /// Audio played before each seek.
    pub seek_after: Duration,
    /// Longest the whole play may take.
    pub limit: Duration,
}

/// What one measured play gave.
pub struct PlayResult {
    /// The player's report.
    pub report: PlaybackReport,
    /// Latency of each seek, ask → first sample from the new position.
    pub seeks: Vec<Duration>,
    /// Bytes by kind of source.
    pub bytes: ByteCounts,
}

/// Plays `manifest` from `sources` on the paced null sink following
/// `plan`; `started` is when the listener asked.
pub async fn measured_play(
    manifest: Manifest,
    sources: Vec<Source>,
    late: Option<tokio::sync::mpsc::Receiver<Source>>,
    options: PlayOptions,
    started: Instant,
    plan: &PlayPlan,
) -> Result<PlayResult> {
    let (tx, rx) = tokio::sync::oneshot::channel::<Playback>();
    let mut tx = Some(tx);
    let playing = tokio::spawn(chorus_player::play::play(
        manifest,
        sources,
        OutputSpec::Null,
        options,
        started,
        move |p| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(p.clone());
            }
        },
    ));
    let playback = rx.await.context("the player did not start")?;
    let joiner = late.map(|mut late| {
        let p = playback.clone();
        tokio::spawn(async move {
            while let Some(s) = late.recv().await {
                p.add_source(s);
            }
        })
    });
    let deadline = tokio::time::Instant::now() + plan.limit;
    let mut seeks = Vec::new();
    // Waits until `done` holds, the play ends, or the limit passes.
    let wait = |done: &dyn Fn() -> bool| {
        let finished = playing.is_finished();
        !done() && !finished && tokio::time::Instant::now() < deadline
    };
    let tick = Duration::from_millis(5);
    let stats = playback.stats.clone();
    while wait(&|| stats.time_to_first_audio().is_some()) {
        tokio::time::sleep(tick).await;
    }
    for &to in &plan.seeks {
        let from = stats.played();
        while wait(&|| stats.played() >= from + plan.seek_after) {
            tokio::time::sleep(tick).await;
        }
        let done = stats.seeks_done.load(std::sync::atomic::Ordering::Relaxed);
        playback.seek(to);
        while wait(&|| stats.seeks_done.load(std::sync::atomic::Ordering::Relaxed) > done) {
            tokio::time::sleep(tick).await;
        }
        if let Some(l) = stats
            .last_seek_latency()
            .filter(|_| stats.seeks_done.load(std::sync::atomic::Ordering::Relaxed) > done)
        {
            seeks.push(l);
        }
    }
    let from = stats.played();
    while wait(&|| stats.played() >= from + plan.listen) {
        tokio::time::sleep(tick).await;
    }
    playback.stop();
    if let Some(j) = joiner {
        j.abort();
    }
    let report = playing.await.context("the player failed")??;
    let mut bytes = ByteCounts { cache: report.bytes_from_cache, ..Default::default() };
    for (_, _, b, is_seed) in &report.sources {
        if *is_seed {
            bytes.seed += b;
        } else {
            bytes.peers += b;
        }
    }
    Ok(PlayResult { report, seeks, bytes })
}

/// Asks every peer for the manifest at once; the holders become sources.
pub async fn sources(peers: &[Peer], track: &Track) -> Result<(Manifest, Vec<Source>)> {
    let id = track.manifest.id();
    let asks: Vec<_> = peers
        .iter()
        .map(|p| {
            let p = p.clone();
            tokio::spawn(async move { (p.manifest_and_origin(id).await, p) })
        })
        .collect();
    let mut manifest = None;
    let mut out = Vec::new();
    for a in asks {
        if let Ok((Ok((m, origin, have)), peer)) = a.await {
            manifest.get_or_insert(m);
            out.push(Source { peer, is_seed: origin, have, head_rest: None });
        }
    }
    match manifest {
        Some(m) => Ok((m, out)),
        None => bail!("no node of the swarm serves {}", track.name),
    }
}
