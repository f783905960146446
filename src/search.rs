//! `chorus search`: list a peer's tracks that match a query.

use std::time::Duration;

use anyhow::Result;
use chorus_protocol::message::CatalogEntry;
use serde::Serialize;

use crate::cli::{Global, SearchArgs};
use crate::{output, peers};

#[derive(Serialize)]
struct JsonEntry<'a> {
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

pub async fn run(global: &Global, args: SearchArgs) -> Result<()> {
    let (transport, peer) = peers::dial(global, &args.peer).await?;
    let results = peer.search(&args.query, args.limit).await?;
    transport.close().await;
    if args.json {
        for e in &results {
            println!("{}", serde_json::to_string(&json(e))?);
        }
        return Ok(());
    }
    if results.is_empty() {
        println!("no tracks match '{}'", args.query);
        return Ok(());
    }
    println!(
        "{:<12}  {:<28}  {:<20}  {:<22}  {:>6}  {:<6}  {:>8}",
        "TRACK", "TITLE", "ARTIST", "ALBUM", "TIME", "FORMAT", "SIZE"
    );
    for e in &results {
        println!(
            "{:<12}  {:<28}  {:<20}  {:<22}  {:>6}  {:<6}  {:>8}",
            &e.track.to_string()[..12],
            cut(e.tags.title.as_deref().unwrap_or(&e.file_name), 28),
            cut(e.tags.artist.as_deref().unwrap_or("-"), 20),
            cut(e.tags.album.as_deref().unwrap_or("-"), 22),
            output::clock(Duration::from_millis(e.duration_ms)),
            e.codec.name(),
            output::size(e.byte_len),
        );
    }
    println!(
        "{} tracks; fetch one with: chorus fetch TRACK --peer {}",
        results.len(),
        args.peer.addr
    );
    Ok(())
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
