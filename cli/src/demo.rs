//! `chorus demo`: a seed and two peers on loopback, in this process, and a
//! sample track played through them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chorus_player::play::PlayOptions;
use chorus_player::sink::OutputSpec;
use chorus_streamer::cache::ChunkCache;
use chorus_streamer::identity::Identity;
use chorus_streamer::library::{self, ScanConfig};
use chorus_streamer::node::{Node, NodeLimits};
use chorus_streamer::start::Pool;
use chorus_streamer::transport::Transport;

use crate::cli::{DemoArgs, Global, OutputArgs};
use crate::{output, play};

/// The track the demo plays when none is named.
const DEMO_TRACK: &str = "apex aleph";

/// The source tree this was built from (the workspace root, where
/// `samples/` is; this crate is one folder below it).
fn source_tree() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn default_samples() -> PathBuf {
    source_tree().join("samples/out")
}

/// The folder of tracks to use. A folder the user names (`--samples DIR`) is
/// input only: it is read, never written, renamed or deleted, and a folder
/// without playable tracks is an error later, when it is scanned. With no
/// folder named, the sample set in the source tree's `samples/out`, built by
/// `samples/build.sh` the first time (into that folder only).
pub fn sample_dir(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = given {
        if !dir.is_dir() {
            bail!("--samples {}: no such folder", dir.display());
        }
        return Ok(dir.to_path_buf());
    }
    let dir = default_samples();
    if dir.join("SHA256SUMS").exists() {
        return Ok(dir);
    }
    let script = source_tree().join("samples/build.sh");
    if !script.exists() {
        bail!(
            "no sample set at {} and no samples/build.sh to make one; pass --samples DIR",
            dir.display()
        );
    }
    eprintln!("building the sample set (once) in {}…", dir.display());
    let status = std::process::Command::new("bash").arg(&script).status()?;
    if !status.success() {
        bail!("samples/build.sh failed; run it by hand to see why");
    }
    Ok(dir)
}

/// Indexes `dir` and starts a node serving it on 127.0.0.1.
async fn start_node(dir: &Path, data: &Path) -> Result<Node> {
    let (dir, data_dir) = (dir.to_path_buf(), data.to_path_buf());
    let data = data_dir.clone();
    let lib = tokio::task::spawn_blocking(move || {
        let (lib, _) = library::scan(
            &[dir],
            library::load_index(&data),
            &ScanConfig::default(),
            &|_| {},
            &|w| tracing::warn!("{w}"),
        );
        let _ = library::save_index(&data, &lib);
        lib
    })
    .await?;
    let identity = Arc::new(Identity::load_or_create(&data_dir)?);
    let node = Node::bind(identity, ([127, 0, 0, 1], 0).into(), lib, NodeLimits::default())?;
    let n = node.clone();
    tokio::spawn(async move { n.serve().await });
    Ok(node)
}

/// `chorus demo`.
pub async fn run(global: &Global, args: DemoArgs) -> Result<()> {
    let samples = sample_dir(args.samples.as_deref())?;
    let work = tempfile::tempdir().context("making a temp dir")?;
    let say = |s: String| {
        if !global.quiet {
            println!("{s}");
        }
    };

    let seed = start_node(&samples, &work.path().join("seed")).await?;
    let seed_addr = seed.transport().local_addr()?;
    let tracks = seed.with_library(|l| l.len()).unwrap_or(0);
    if tracks == 0 {
        seed.shutdown().await;
        bail!("no playable tracks in {}", samples.display());
    }
    say(format!(
        "seed   {} on {seed_addr}: {tracks} sample tracks",
        seed.transport().peer_id().fmt_short()
    ));

    // Two peers fetch the track from the seed and serve their copies.
    let client = Transport::client(
        Arc::new(Identity::load_or_create(&work.path().join("listener"))?),
        &Default::default(),
    )?;
    let seed_peer = client.connect(seed_addr, Some(seed.transport().peer_id())).await?;
    let seeds = std::slice::from_ref(&seed_peer);
    let (entry, _) = match &args.track {
        Some(words) => play::resolve(seeds, words).await?,
        None => match play::resolve(seeds, DEMO_TRACK).await {
            Ok(found) => found,
            // A folder of the user's own: any track will do.
            Err(_) => play::resolve(seeds, "").await?,
        },
    };
    let manifest = seed_peer.manifest(entry.track).await?;
    let mut nodes = vec![seed.clone()];
    // Two listeners played the track before: its chunks are in their caches,
    // and they serve what they cached (their libraries are empty). They are
    // peers, not seeds: the swarm the listener below streams from.
    for name in ["peer-a", "peer-b"] {
        let data = work.path().join(name);
        let cache = Arc::new(ChunkCache::open(&data.join("cache"), 1 << 30)?);
        let bytes = fetch_into_cache(&seed_peer, &manifest, &cache).await?;
        let identity = Arc::new(Identity::load_or_create(&data)?);
        let node = Node::bind_with_cache(
            identity,
            ([127, 0, 0, 1], 0).into(),
            Default::default(),
            Some(cache),
            NodeLimits::default(),
        )?;
        let n = node.clone();
        tokio::spawn(async move { n.serve().await });
        say(format!(
            "{name} {} on {}: played the track before ({} in its cache), serving its cache",
            node.transport().peer_id().fmt_short(),
            node.transport().local_addr()?,
            output::size(bytes)
        ));
        nodes.push(node);
    }

    // The listener streams from all three, on the start path `chorus play`
    // takes; its clock starts now.
    let started = Instant::now();
    let addrs: Vec<_> = nodes
        .iter()
        .filter_map(|n| Some((n.transport().local_addr().ok()?, Some(n.transport().peer_id()))))
        .collect();
    let pool = Pool::dial(&client, &addrs);
    let cache = ChunkCache::disabled();
    let prepared = play::prepare(&pool, &cache, &entry.track.to_string(), Duration::ZERO).await?;
    say(format!("playing {} from {} peers", play::describe(&prepared.entry), addrs.len()));
    if let Some(o) = &args.output.out {
        play::check_out(o)?;
    }
    let mut out = OutputArgs {
        out: args.output.out.clone(),
        device: args.output.device.clone(),
        duration: args.output.duration,
    };
    if matches!(play::output_spec(&out), OutputSpec::Device(_))
        && !device_available(out.device.as_deref())
    {
        eprintln!(
            "no audio device can be opened here: playing to the null sink (real-time, silent) instead"
        );
        out.out = Some("null".into());
    }
    let report = play::play_track(global, prepared, &out, PlayOptions::default(), started).await?;
    play::print_report(global, &report);
    client.close().await;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// Fetches every chunk of `manifest` from `from` into `cache`, verified, as
/// a listener's playback leaves it. Returns the bytes cached.
async fn fetch_into_cache(
    from: &chorus_streamer::client::Peer,
    manifest: &chorus_protocol::Manifest,
    cache: &Arc<ChunkCache>,
) -> Result<u64> {
    cache.put_manifest(manifest)?;
    let count = manifest.layout().count();
    let mut bytes = 0u64;
    let mut first = 0u32;
    while first < count {
        let n = (count - first).min(256);
        let mut stream =
            from.chunks(manifest, chorus_protocol::ChunkIndex(first), n, 10_000).await?;
        while let Some(chunk) = stream.next().await? {
            bytes += chunk.data().len() as u64;
            cache.put_chunk(&chunk)?;
        }
        first += n;
    }
    Ok(bytes)
}

/// True if the output device opens (checked without playing anything).
fn device_available(name: Option<&str>) -> bool {
    use chorus_player::sink::Sink;
    let stats = Arc::new(chorus_player::stats::PlaybackStats::new(Instant::now()));
    match chorus_player::sink::device::DeviceSink::open(
        name,
        48_000,
        2,
        std::time::Duration::ZERO,
        stats,
    ) {
        Ok(mut s) => {
            let _ = s.finish();
            true
        }
        Err(_) => false,
    }
}
