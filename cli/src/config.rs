//! The config file: `$XDG_CONFIG_HOME/chorus/config.toml` (or
//! `~/.config/chorus/config.toml`, or `--config FILE`). Every setting in it
//! is also a flag; a flag wins over the file, the file over the default.
//! `chorus config` prints the settings in effect and where each came from.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::{Global, PlayArgs};
use crate::peers::PeerAddr;

/// What the file may hold.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where identity, index and cache live.
    pub data_dir: Option<PathBuf>,
    /// Peers to stream from and search, as `PEER_ID@HOST:PORT` or `HOST:PORT`.
    pub peers: Option<Vec<String>>,
    /// `default`, `null` or a FILE.wav.
    pub out: Option<String>,
    /// Output device name.
    pub device: Option<String>,
    /// Chunk cache bound, MiB.
    pub cache_mib: Option<u64>,
    /// Start volume, percent.
    pub volume: Option<u32>,
    /// Apply ReplayGain.
    pub normalize: Option<bool>,
}

/// The config file's path.
pub fn path(global: &Global) -> Option<PathBuf> {
    if let Some(p) = &global.config {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("chorus").join("config.toml"))
}

/// Reads the config file; a missing file is an empty config (unless it was
/// named with --config), a malformed one an error naming the file.
pub fn load(global: &Global) -> Result<FileConfig> {
    let Some(path) = path(global) else { return Ok(FileConfig::default()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && global.config.is_none() => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(e).with_context(|| format!("reading the config file {}", path.display())),
    }
}

fn parse(text: &str, path: &Path) -> Result<FileConfig> {
    toml::from_str(text).with_context(|| format!("in the config file {}", path.display()))
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag (or its environment variable).
    Flag,
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

impl Origin {
    fn label(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::File => "config file",
            Origin::Default => "default",
        }
    }
}

fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> (T, Origin) {
    match (flag, file) {
        (Some(v), _) => (v, Origin::Flag),
        (None, Some(v)) => (v, Origin::File),
        (None, None) => (default, Origin::Default),
    }
}

/// The settings `chorus play` runs with.
#[derive(Debug, Clone)]
pub struct PlaySettings {
    /// Peers to stream from.
    pub peers: (Vec<PeerAddr>, Origin),
    /// Where audio goes (`default`, `null`, a file, `-`).
    pub out: (String, Origin),
    /// The output device, if not the default.
    pub device: (Option<String>, Origin),
    /// The chunk cache's size in MiB.
    pub cache_mib: (u64, Origin),
    /// The starting volume, in percent.
    pub volume: (u32, Origin),
    /// Whether ReplayGain evens out loudness.
    pub normalize: (bool, Origin),
}

impl PlaySettings {
    /// Flags over the file over the defaults.
    pub fn resolve(file: &FileConfig, args: Option<&PlayArgs>) -> Result<Self> {
        let file_peers = match &file.peers {
            Some(list) => Some(
                list.iter()
                    .map(|p| p.parse::<PeerAddr>().map_err(|e| anyhow::anyhow!("peer '{p}': {e}")))
                    .collect::<Result<Vec<_>>>()
                    .context("in the config file's peers")?,
            ),
            None => None,
        };
        let flag_peers = args.map(|a| a.peers.clone()).filter(|p| !p.is_empty());
        let out = args.and_then(|a| a.output.out.clone());
        if let Some(out) = out.as_ref().or(file.out.as_ref()) {
            crate::play::check_out(out)?;
        }
        let device = args.and_then(|a| a.output.device.clone()).map(Some);
        let normalize = args.filter(|a| a.normalize).map(|_| true);
        let volume = pick(args.and_then(|a| a.volume), file.volume, 100);
        if volume.0 > 200 {
            anyhow::bail!("volume {}% is out of range: use 0 to 200", volume.0);
        }
        Ok(Self {
            peers: pick(flag_peers, file_peers, Vec::new()),
            out: pick(out, file.out.clone(), "default".into()),
            device: pick(device, file.device.clone().map(Some), None),
            cache_mib: pick(args.and_then(|a| a.cache_mib), file.cache_mib, 2048),
            volume,
            normalize: pick(normalize, file.normalize, false),
        })
    }
}

/// `chorus config`: the file's path and every setting in effect.
pub fn show(global: &Global) -> Result<()> {
    let file = load(global)?;
    let settings = PlaySettings::resolve(&file, None)?;
    let path = path(global);
    match &path {
        Some(p) if p.exists() => println!("# config file: {}", p.display()),
        Some(p) => println!("# config file: {} (not there: defaults in effect)", p.display()),
        None => println!("# no config file location (no HOME or XDG_CONFIG_HOME)"),
    }
    let data_dir = match (&global.data_dir, &file.data_dir) {
        (Some(d), _) => (d.display().to_string(), Origin::Flag),
        (None, Some(d)) => (d.display().to_string(), Origin::File),
        (None, None) => (
            crate::peers::data_dir(global).map(|d| d.display().to_string()).unwrap_or_default(),
            Origin::Default,
        ),
    };
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let peers: Vec<String> = settings.peers.0.iter().map(|p| q(&p.to_string())).collect();
    let rows = [
        ("data_dir", q(&data_dir.0), data_dir.1),
        ("peers", format!("[{}]", peers.join(", ")), settings.peers.1),
        ("out", q(&settings.out.0), settings.out.1),
        (
            "device",
            settings.device.0.as_deref().map_or("# (the default device)".into(), q),
            settings.device.1,
        ),
        ("cache_mib", settings.cache_mib.0.to_string(), settings.cache_mib.1),
        ("volume", settings.volume.0.to_string(), settings.volume.1),
        ("normalize", settings.normalize.0.to_string(), settings.normalize.1),
    ];
    for (key, value, origin) in rows {
        if value.starts_with('#') {
            println!("# {key} = {}  # {}", value.trim_start_matches("# "), origin.label());
        } else {
            println!("{key} = {value}  # {}", origin.label());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_fills_what_flags_leave_open() {
        let file = parse(
            "peers = [\"127.0.0.1:4000\"]\nout = \"null\"\nvolume = 80\nnormalize = true\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let s = PlaySettings::resolve(&file, None).unwrap();
        assert_eq!(s.out, ("null".to_owned(), Origin::File));
        assert_eq!(s.volume, (80, Origin::File));
        assert_eq!(s.cache_mib, (2048, Origin::Default));
        assert!(s.normalize.0);
        assert_eq!(s.peers.0.len(), 1);
    }

    #[test]
    fn a_typo_in_the_file_is_an_error_that_names_it() {
        let e = parse("volum = 3\n", Path::new("/x/config.toml")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("/x/config.toml") && msg.contains("volum"), "{msg}");
    }
}
