//! `chorus seed`: index music directories and serve them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chorus_protocol::ChunkSize;
use chorus_streamer::library::{self, ScanConfig, ScanProgress};
use chorus_streamer::node::{Node, NodeLimits};

use crate::cli::{Global, SeedArgs};
use crate::output;
use crate::peers;

/// `chorus seed`.
pub async fn run(global: &Global, args: SeedArgs) -> Result<()> {
    for d in &args.dirs {
        if !d.is_dir() {
            bail!("{} is not a directory; give the folders that hold your music", d.display());
        }
    }
    let chunk_size = args
        .chunk_kib
        .checked_mul(1024)
        .and_then(|b| ChunkSize::new(b).ok())
        .context("--chunk-kib must be a power of two from 1 to 1024")?;
    let data_dir = peers::data_dir(global)?;
    let identity = peers::identity(global)?;

    // Index on a blocking thread: probing and hashing are CPU and disk work.
    let (dirs, dd, quiet) = (args.dirs.clone(), data_dir.clone(), global.quiet);
    let (library, report) = tokio::task::spawn_blocking(move || {
        let previous = library::load_index(&dd);
        let bar = output::bar(0, "{spinner} indexing {pos}/{len} files {wide_bar} {eta}");
        if quiet {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let progress = |p: ScanProgress| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        };
        let warn = |w: &str| bar.suspend(|| tracing::warn!("{w}"));
        let config = ScanConfig { chunk_size, ..ScanConfig::default() };
        let result = library::scan(&dirs, previous, &config, &progress, &warn);
        bar.finish_and_clear();
        result
    })
    .await
    .context("the indexing thread failed")?;
    library::save_index(&data_dir, &library).context("saving the library index")?;

    let formats: Vec<String> = report.formats.iter().map(|(f, n)| format!("{n} {f}")).collect();
    if !global.quiet {
        println!(
            "{} tracks ({}), {} of audio; indexed in {:.2}s ({} new, {} unchanged, {} removed, {} skipped)",
            library.len(),
            if formats.is_empty() { "none".to_owned() } else { formats.join(", ") },
            output::span(report.duration),
            report.elapsed.as_secs_f64(),
            report.indexed,
            report.reused,
            report.removed,
            report.skipped,
        );
    }
    if library.is_empty() {
        tracing::warn!("no playable audio found; the node will serve nothing");
    }
    if args.index_only {
        return Ok(());
    }

    let cache = peers::cache(global, 2048)?;
    let node = Node::bind_with_cache(
        identity.clone(),
        args.listen,
        library,
        Some(cache.clone()),
        NodeLimits {
            relay: chorus_streamer::nat::RelayLimits {
                max_relays: if args.relay == crate::cli::Switch::Off { 0 } else { 16 },
                ..Default::default()
            },
            ..NodeLimits::default()
        },
    )
    .with_context(|| {
        format!("cannot listen on {} (in use? pick another with --listen)", args.listen)
    })?;
    let addr = node.transport().local_addr()?;
    println!("serving on {addr} as peer {}", identity.peer_id());
    println!("peers can reach it with --peer {}@{}", identity.peer_id(), shown_addr(addr));
    let serving = {
        let node = node.clone();
        tokio::spawn(async move { node.serve().await })
    };
    // A port mapped on the home router (not for a node only this machine
    // can reach), before joining anyone: peers then learn the mapped
    // address from our hello.
    let mapping = match (args.port_map, addr.ip().is_loopback()) {
        (crate::cli::Switch::On, false) => map_port(&node, addr.port(), global.quiet).await,
        _ => None,
    };
    // On the LAN, with no configuration: announced while serving (not for a
    // node only this machine can reach).
    let _announced = match (global.lan, addr.ip().is_loopback()) {
        (crate::cli::Switch::On, false) => {
            match chorus_streamer::lan::Announcer::start(
                identity.peer_id(),
                addr.port(),
                identity.swarm(),
            ) {
                Ok(a) => {
                    let a = Arc::new(a);
                    let (announcer, quiet) = (a.clone(), global.quiet);
                    tokio::task::spawn_blocking(move || {
                        let on_lan = announcer.wait_announced(Duration::from_secs(5));
                        if on_lan && !quiet {
                            println!(
                                "announced on the local network (mDNS {})",
                                chorus_streamer::lan::SERVICE
                            );
                        }
                    });
                    Some(a)
                }
                Err(e) => {
                    tracing::warn!("{e}; peers on the LAN must be given this node's address");
                    None
                }
            }
        }
        _ => None,
    };
    // On the DHT, when asked: every track served or cached whole, and the
    // words of their tags, renewed before the DHT forgets them.
    let dht = peers::dht(global);
    let announcing = dht.clone().map(|dht| {
        let (node, quiet, port) = (node.clone(), global.quiet, addr.port());
        let global = global.clone();
        tokio::spawn(async move {
            if !dht.bootstrapped().await {
                tracing::warn!("the DHT bootstrap nodes did not answer; announcing anyway");
            }
            let mut first = true;
            loop {
                let tracks: Vec<_> = node
                    .with_library(|l| {
                        l.tracks()
                            .map(|t| {
                                let text = chorus_streamer::dht::index_text(
                                    t.manifest.tags(),
                                    &t.file_name,
                                );
                                (t.manifest.id(), text)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let cached: Vec<_> = {
                    let cache = cache.clone();
                    tokio::task::spawn_blocking(move || cache.complete_tracks())
                        .await
                        .unwrap_or_default()
                        .iter()
                        .map(|m| m.id())
                        .filter(|id| tracks.iter().all(|(t, _)| t != id))
                        .collect()
                };
                let keys = dht.announce(&tracks, &cached, port).await;
                if first && !quiet {
                    output::say!("announced {} tracks on the DHT ({keys} keys)", tracks.len());
                }
                first = false;
                peers::remember_dht(&global, Some(&dht)).await;
                tokio::time::sleep(chorus_streamer::dht::REANNOUNCE).await;
            }
        })
    });
    if !args.peers.is_empty() {
        let addrs: Vec<_> = args.peers.iter().map(|p| (p.addr, p.id)).collect();
        let joined = node.join(&addrs).await;
        if !global.quiet {
            println!(
                "joined {joined} of {} peers; {} peers known",
                addrs.len(),
                node.known_peers().len()
            );
            if let Some(seen) = node.transport().observed() {
                let nat = match seen.mapping {
                    chorus_streamer::transport::Mapping::Stable => "the same port for every peer",
                    chorus_streamer::transport::Mapping::PerDestination => {
                        "a different port per peer: a symmetric NAT"
                    }
                };
                println!("seen by {} peers at {} ({nat})", seen.agreeing, seen.addr);
            }
        }
    }
    crate::signals::stop_requested().await;
    if let Some(a) = announcing {
        a.abort();
    }
    peers::remember_dht(global, dht.as_ref()).await;
    eprintln!("shutting down…");
    if let Some((m, renewing)) = mapping {
        renewing.abort();
        let _ = renewing.await;
        let removed = match Arc::try_unwrap(m) {
            Ok(m) => tokio::time::timeout(Duration::from_secs(3), m.remove()).await.ok(),
            Err(_) => None,
        };
        if !matches!(removed, Some(Ok(()))) {
            tracing::warn!(
                "could not remove the port mapping; the router drops it when its lease ends"
            );
        }
    }
    node.shutdown().await;
    serving.abort();
    let stats = node.stats();
    if !global.quiet {
        use std::sync::atomic::Ordering::Relaxed;
        println!(
            "served {} chunks ({})",
            stats.chunks_served.load(Relaxed),
            output::size(stats.bytes_served.load(Relaxed) as u64)
        );
    }
    drop(Arc::clone(&identity));
    Ok(())
}

/// The address to tell peers: the unspecified address means "this host".
fn shown_addr(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("<this-host>:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Maps `port` on the home router (PCP, NAT-PMP or UPnP), if there is one,
/// and renews the lease while serving. A node without a router to ask goes
/// on without.
async fn map_port(
    node: &Node,
    port: u16,
    quiet: bool,
) -> Option<(Arc<chorus_streamer::portmap::PortMapping>, tokio::task::JoinHandle<()>)> {
    use chorus_streamer::portmap::{LEASE, PortMapping};
    let m = match PortMapping::map(port).await {
        Ok(m) => Arc::new(m),
        Err(e) => {
            tracing::info!(
                "{e}; peers behind other NATs reach this node by hole punching or relays"
            );
            return None;
        }
    };
    node.transport().set_mapped(Some(m.external()));
    if !quiet {
        println!(
            "mapped UDP port {port} on the router at {} ({}): reachable at {}",
            m.router(),
            m.protocol(),
            m.external()
        );
    }
    let renewing = {
        let m = m.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 2).await;
                if let Err(e) = m.renew().await {
                    tracing::warn!("{e}");
                }
            }
        })
    };
    Some((m, renewing))
}
