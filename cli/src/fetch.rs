//! `chorus fetch`: download a whole track from a peer, verified.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chorus_protocol::TrackId;
use chorus_streamer::client::{MAX_SEARCH_RESULTS, Peer};

use crate::cli::{FetchArgs, Global};
use crate::{output, peers};

/// `chorus fetch`.
pub async fn run(global: &Global, args: FetchArgs) -> Result<()> {
    let (transport, peer) = peers::dial(global, &args.peer).await?;
    let result = fetch(global, &args, &peer).await;
    transport.close().await;
    result
}

async fn fetch(global: &Global, args: &FetchArgs, peer: &Peer) -> Result<()> {
    let (track, file_name) = resolve(peer, &args.track).await?;
    let manifest =
        peer.manifest(track).await.with_context(|| format!("fetching the manifest of {track}"))?;
    let output: PathBuf = match &args.output {
        Some(o) => o.clone(),
        None => PathBuf::from(
            file_name
                .as_deref()
                .and_then(safe_file_name)
                .unwrap_or_else(|| format!("{}.audio", track.fmt_short())),
        ),
    };
    let total = manifest.layout().byte_len();
    let bar = output::bar(total, "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}");
    if global.quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let n = peer
        .fetch_to_file(&manifest, &output, &|done| bar.set_position(done))
        .await
        .with_context(|| format!("fetching {track} into {}", output.display()))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if !global.quiet {
        println!(
            "fetched {} in {:.2}s ({}/s), {} chunks verified -> {}",
            output::size(n),
            secs,
            output::size((n as f64 / secs.max(1e-6)) as u64),
            manifest.layout().count(),
            output.display()
        );
    }
    Ok(())
}

/// A full id, or a unique prefix looked up in the peer's catalog.
async fn resolve(peer: &Peer, wanted: &str) -> Result<(TrackId, Option<String>)> {
    let wanted = wanted.to_ascii_lowercase();
    if !wanted.chars().all(|c| c.is_ascii_hexdigit()) || wanted.is_empty() {
        bail!("'{wanted}' is not a track id; find one with `chorus search`");
    }
    let catalog = peer.search("", MAX_SEARCH_RESULTS).await?;
    let matches: Vec<_> =
        catalog.iter().filter(|e| e.track.to_string().starts_with(&wanted)).collect();
    match (matches.as_slice(), wanted.parse::<TrackId>()) {
        ([one], _) => Ok((one.track, Some(one.file_name.clone()))),
        ([], Ok(full)) => Ok((full, None)),
        ([], Err(_)) => bail!("the peer has no track whose id starts with {wanted}"),
        (many, _) => bail!("{} tracks start with {wanted}; give more digits", many.len()),
    }
}

/// The peer chose this name: keep only a plain file name, never a path, a
/// hidden file or anything that climbs out of the current directory.
fn safe_file_name(name: &str) -> Option<String> {
    let base = std::path::Path::new(name).file_name()?.to_str()?;
    let ok = !base.starts_with('.') && !base.contains(['/', '\\', '\0']) && !base.is_empty();
    ok.then(|| base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::safe_file_name;

    #[test]
    fn peer_chosen_names_cannot_escape() {
        assert_eq!(safe_file_name("song.flac").as_deref(), Some("song.flac"));
        assert_eq!(safe_file_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(safe_file_name("/root/.bashrc"), None);
        assert_eq!(safe_file_name(".."), None);
        assert_eq!(safe_file_name(""), None);
        assert_eq!(safe_file_name("a\\..\\b").as_deref(), None);
    }
}
