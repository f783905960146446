//! `chorus search`: list a peer's tracks that match a query.

use std::time::Duration;

use anyhow::Result;
use chorus_protocol::message::CatalogEntry;
use serde::Serialize;

use crate::cli::{Global, SearchArgs};
use crate::{output, peers};

/// One track of `chorus search --json`.
#[derive(Serialize)]
pub struct JsonEntry<'a> {
    track_id: String,
    title: Option<&'a str>,
    artist: Option<&'a str>,
    album: Option<&'a str>,
    track_number: Option<u32>,
    duration_ms: u64,
    format: &'static str,
    bytes: u64,
    sample_rate: u32,
    channels: u16,
    file_name: &'a str,
}

/// `chorus search`.
pub async fn run(global: &Global, args: SearchArgs) -> Result<()> {
    let file = crate::config::load(global)?;
    let mut addrs = args.peers.clone();
    if addrs.is_empty() {
        addrs = crate::config::PlaySettings::resolve(&file, None)?.peers.0;
    }
    let transport = chorus_streamer::transport::Transport::client(
        peers::identity_for_play(global)?,
        &Default::default(),
    )?;
    let dial: Vec<_> = addrs.iter().map(|a| (a.addr, a.id)).collect();
    let pool = chorus_streamer::start::Pool::dial(&transport, &dial);
    let mut memory = crate::memory::Memory::load(global);
    if dial.is_empty() {
        crate::memory::dial_remembered(&memory, &pool);
    }
    peers::browse_lan(global, &pool);
    let dht = peers::dht(global);
    peers::lookup_dht(dht.clone(), &pool, std::slice::from_ref(&args.query));
    pool.settle(crate::play::CONNECT_GRACE).await;
    peers::remember_dht(global, dht.as_ref()).await;
    let given = if args.peers.is_empty() { "config" } else { "flag" };
    crate::memory::remember(&mut memory, &pool, given, &[]);
    let mut asked = pool.peers();
    if asked.is_empty() {
        let why = pool.failures().join("; ");
        transport.close().await;
        match (addrs.is_empty(), why.is_empty()) {
            (true, _) => anyhow::bail!(
                "no peer to ask: none found on the local network; pass --peer HOST:PORT or set `peers` in the config file"
            ),
            (false, true) => anyhow::bail!("none of the peers answered"),
            (false, false) => anyhow::bail!(
                "none of the peers could be reached ({why}); check the --peer addresses and that they are running `chorus seed`"
            ),
        }
    }
    // Every known peer: the ones given, and the ones they know.
    asked.extend(crate::play::known_by(&transport, &asked).await);
    let results = search_all(&asked, &args.query, args.limit).await;
    transport.close().await;
    if args.json {
        for (e, holders) in &results {
            let mut v = serde_json::to_value(json(e))?;
            v["holders"] = (*holders).into();
            println!("{v}");
        }
        return Ok(());
    }
    if results.is_empty() {
        println!("no tracks match '{}' on {} peer(s)", args.query, asked.len());
        return Ok(());
    }
    println!(
        "{:<12}  {:<28}  {:<20}  {:<22}  {:>6}  {:<6}  {:>8}  {:>5}",
        "TRACK", "TITLE", "ARTIST", "ALBUM", "TIME", "FORMAT", "SIZE", "PEERS"
    );
    for (e, holders) in &results {
        println!(
            "{:<12}  {:<28}  {:<20}  {:<22}  {:>6}  {:<6}  {:>8}  {:>5}",
            &e.track.to_string()[..12],
            cut(e.tags.title.as_deref().unwrap_or(&e.file_name), 28),
            cut(e.tags.artist.as_deref().unwrap_or("-"), 20),
            cut(e.tags.album.as_deref().unwrap_or("-"), 22),
            output::clock(Duration::from_millis(e.duration_ms)),
            e.codec.name(),
            output::size(e.byte_len),
            holders,
        );
    }
    let hint = match addrs.first() {
        Some(a) => format!("chorus play TRACK --peer {a}"),
        None => "chorus play TRACK".to_owned(),
    };
    println!("{} tracks on {} peer(s); play one with: {hint}", results.len(), asked.len());
    Ok(())
}

/// Asks every peer at once; merges the answers by track id, counting the
/// peers that hold each. Sorted by album, track number, title.
pub async fn search_all(
    peers: &[chorus_streamer::client::Peer],
    query: &str,
    limit: u32,
) -> Vec<(CatalogEntry, usize)> {
    let asks: Vec<_> = peers
        .iter()
        .map(|p| {
            let (p, q) = (p.clone(), query.to_owned());
            tokio::spawn(async move { (p.search(&q, limit).await, p.addr()) })
        })
        .collect();
    let mut merged: Vec<(CatalogEntry, usize)> = Vec::new();
    for ask in asks {
        match ask.await {
            Ok((Ok(entries), _)) => {
                for e in entries {
                    match merged.iter_mut().find(|(m, _)| m.track == e.track) {
                        Some((_, n)) => *n += 1,
                        None => merged.push((e, 1)),
                    }
                }
            }
            Ok((Err(e), addr)) => tracing::warn!("search on {addr} failed: {e}"),
            Err(e) => tracing::warn!("a search failed: {e}"),
        }
    }
    merged.sort_by(|(a, _), (b, _)| {
        let key = |e: &CatalogEntry| {
            (
                e.tags.album.clone().unwrap_or_default().to_lowercase(),
                e.tags.disc_number.unwrap_or(1),
                e.tags.track_number.unwrap_or(u32::MAX),
                e.tags.title.clone().unwrap_or_else(|| e.file_name.clone()).to_lowercase(),
            )
        };
        key(a).cmp(&key(b))
    });
    merged.truncate(limit as usize);
    merged
}

fn json(e: &CatalogEntry) -> JsonEntry<'_> {
    JsonEntry {
        track_id: e.track.to_string(),
        title: e.tags.title.as_deref(),
        artist: e.tags.artist.as_deref(),
        album: e.tags.album.as_deref(),
        track_number: e.tags.track_number,
        duration_ms: e.duration_ms,
        format: e.codec.name(),
        bytes: e.byte_len,
        sample_rate: e.sample_rate,
        channels: e.channels,
        file_name: &e.file_name,
    }
}

/// Shortens `s` to `width` characters, marking the cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}
