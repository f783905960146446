//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::peers::PeerAddr;

/// Peer-to-peer music streaming: seed a library, search, fetch and play
/// tracks from peers over QUIC.
#[derive(Debug, Parser)]
#[command(name = "chorus", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Where the node keeps its identity key, library index and cache
    /// [default: $XDG_DATA_HOME/chorus or ~/.local/share/chorus]
    #[arg(long, global = true, env = "CHORUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); CHORUS_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Index music directories and serve them to peers over QUIC
    Seed(SeedArgs),
    /// List the tracks a peer serves that match a query
    Search(SearchArgs),
    /// Download a whole track from a peer, verifying every chunk
    Fetch(FetchArgs),
    /// Stream a track from peers and play it
    Play(PlayArgs),
    /// List the audio output devices
    Devices,
    /// Run a seed and two peers on this machine and play a sample track through them
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    /// What to play, in order: each argument is one track, as words to search
    /// for (quote several words) or a track id (or a unique prefix of one)
    #[arg(required = true, value_name = "QUERY|TRACK_ID")]
    pub what: Vec<String>,
    /// Peers to stream from: HOST:PORT or PEER_ID@HOST:PORT (repeat for more)
    #[arg(long = "peer", required = true, value_name = "ADDR")]
    pub peers: Vec<PeerAddr>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Start this many seconds into the track
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub start: f64,
    /// While playing, serve what this node has cached to other peers on this UDP address
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Largest size of the chunk cache in the data dir, in MiB
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub cache_mib: u64,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Where the sound goes: `default` (the audio device), `null` (real-time pace,
    /// no sound) or a FILE.wav (written as fast as possible)
    #[arg(long, default_value = "default", value_name = "default|null|FILE.wav")]
    pub out: String,
    /// The output device to use with --out default (see `chorus devices`)
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// Stop after this many seconds of audio
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The sample set to seed [default: samples/out in the source tree, built if missing]
    #[arg(long, value_name = "DIR")]
    pub samples: Option<PathBuf>,
    /// Which sample track to play (words of its title or file name)
    #[arg(long, default_value = "apex aleph")]
    pub track: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Music directories to serve (searched recursively)
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// UDP address to listen on
    #[arg(long, default_value_t = default_listen(), value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Chunk size in KiB for newly indexed files (a power of two, 1 to 1024)
    #[arg(long, default_value_t = 16, value_name = "KIB")]
    pub chunk_kib: u32,
    /// Index the library, print the summary and exit without serving
    #[arg(long)]
    pub index_only: bool,
    /// Peers to join: HOST:PORT or PEER_ID@HOST:PORT (repeat for more); the
    /// rest of the swarm is found through them
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<PeerAddr>,
}

fn default_listen() -> std::net::SocketAddr {
    ([0, 0, 0, 0], chorus_streamer::node::DEFAULT_PORT).into()
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to look for in title, artist, album and file name; empty lists all
    #[arg(default_value = "")]
    pub query: String,
    /// The peer to ask: HOST:PORT or PEER_ID@HOST:PORT (the port defaults to 47800)
    #[arg(long, required = true, value_name = "ADDR")]
    pub peer: PeerAddr,
    /// Print JSON, one object per track, instead of a table
    #[arg(long)]
    pub json: bool,
    /// Most results to list
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The track: its 64-hex-digit id, or a unique prefix of it
    #[arg(value_name = "TRACK_ID")]
    pub track: String,
    /// The peer to fetch from: HOST:PORT or PEER_ID@HOST:PORT
    #[arg(long, required = true, value_name = "ADDR")]
    pub peer: PeerAddr,
    /// Where to write the track [default: its file name on the peer]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}
