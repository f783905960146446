//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::peers::PeerAddr;

/// Peer-to-peer music streaming: seed a library, search, fetch and play
/// tracks from peers over QUIC.
#[derive(Debug, Parser)]
#[command(
    name = "chorus",
    version,
    about = "Peer-to-peer music streaming node: seed, search, fetch and play tracks from peers over QUIC",
    propagate_version = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Where the node keeps its identity key, library index and cache
    /// [default: $XDG_DATA_HOME/chorus or ~/.local/share/chorus]
    #[arg(long, global = true, env = "CHORUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); CHORUS_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors; `play` prints one line per track instead of the live status
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The config file [default: $XDG_CONFIG_HOME/chorus/config.toml or
    /// ~/.config/chorus/config.toml]
    #[arg(long, global = true, env = "CHORUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Local network discovery (mDNS): `seed` announces itself, `play` and
    /// `search` find the nodes on the LAN without addresses
    #[arg(long, global = true, env = "CHORUS_LAN", value_name = "on|off", default_value = "on")]
    pub lan: Switch,
    /// The BitTorrent Mainline DHT: `seed` announces its tracks and their
    /// words, `play` and `search` look them up to find peers nobody named.
    /// Off unless asked: `on` joins the public DHT
    #[arg(long, global = true, env = "CHORUS_DHT", value_name = "on|off", default_value = "off")]
    pub dht: Switch,
    /// Join the DHT through these nodes instead of the public bootstrap
    /// nodes (a private or local DHT; implies --dht on)
    #[arg(
        long,
        global = true,
        env = "CHORUS_DHT_BOOTSTRAP",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub dht_bootstrap: Vec<String>,
    /// Be a member of the private swarm with this key (`chorus swarm new`):
    /// only members are accepted or dialled, and the LAN and DHT
    /// announcements are the swarm's own
    #[arg(long, global = true, env = "CHORUS_SWARM", value_name = "KEY", hide_env_values = true)]
    pub swarm: Option<String>,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The commands.
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
    /// Measure start, seek, stutter and seed load on emulated networks (swarms on loopback)
    Bench(BenchArgs),
    /// Print the settings in effect (config file, defaults) and where each comes from
    Config,
    /// List the peers this node remembers: how it learned of each, RTT, bytes served
    Peers,
    /// Private swarms: `chorus swarm new` makes a key to share with friends
    Swarm(SwarmArgs),
}

/// `chorus swarm`.
#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SwarmAction,
}

/// `chorus swarm` actions.
#[derive(Debug, clap::Subcommand)]
pub enum SwarmAction {
    /// Make a new swarm key and print it
    New,
}

/// `chorus play`.
#[derive(Debug, Args)]
#[command(
    after_help = "On a terminal, keys control playback: space pause/resume, \u{2190}/\u{2192} seek \u{b1}10 s, \u{2191}/\u{2193} volume, n/p next/previous track, q quit.\n\nA peer played from before gave this node a start ticket (kept in the data dir's `tickets` file): to it the first track's request goes inside the QUIC handshake and the answer comes back with the peer's: the first audio one round trip (and the transfer) after the click. `-v` prints each start's timeline.\n\nExit status: 0 when the queue played (or q was pressed); 1 on an error; 130, 143 or 129 when SIGINT, SIGTERM or SIGHUP (the terminal closed) stopped playback, which ends cleanly within a fraction of a second, terminal and cache intact."
)]
pub struct PlayArgs {
    /// What to play, in order: each argument is one track, as words to search
    /// for (quote several words) or a track id (or a unique prefix of one)
    #[arg(value_name = "QUERY|TRACK_ID", required_unless_present = "album")]
    pub what: Vec<String>,
    /// Queue every track of the album whose name contains NAME, in track order
    #[arg(long, value_name = "NAME")]
    pub album: Option<String>,
    /// Play the queue in random order
    #[arg(long)]
    pub shuffle: bool,
    /// Peers to stream from: HOST:PORT or PEER_ID@HOST:PORT (repeat for more)
    /// [default: `peers` in the config file; none: play from the cache]
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<PeerAddr>,
    /// Where audio goes.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Start this many seconds into the (first) track
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub start: f64,
    /// While playing, serve what this node has cached to other peers on this UDP address
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Largest size of the chunk cache in the data dir, in MiB [default: 2048]
    #[arg(long, value_name = "MIB")]
    pub cache_mib: Option<u64>,
    /// Volume in percent, 0 to 200 [default: 100]
    #[arg(long, value_name = "PERCENT")]
    pub volume: Option<u32>,
    /// Level tracks by their ReplayGain tags (track gain, kept below clipping by the peak)
    #[arg(long)]
    pub normalize: bool,
}

/// Where audio goes.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Where the sound goes: `default` (the audio device), `null` (real-time pace,
    /// no sound), a FILE.wav (32-bit float, written as fast as possible; a FIFO
    /// works too) or `-` (a WAV stream of unknown length on standard output;
    /// text then goes to stderr) [default: default]
    #[arg(long, value_name = "default|null|FILE.wav|-")]
    pub out: Option<String>,
    /// The output device to use with --out default (see `chorus devices`)
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// Play exactly this many seconds of audio of each track (to the sample)
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

/// `chorus demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// A folder of tracks to seed, read only: never written, renamed or deleted
    /// [default: the sample set in samples/out of the source tree, built there if missing]
    #[arg(long, value_name = "DIR")]
    pub samples: Option<PathBuf>,
    /// Which track to play (words of its title or file name)
    /// [default: "apex aleph" from the sample set, else the first track found]
    #[arg(long, value_name = "WORDS")]
    pub track: Option<String>,
    /// Where audio goes.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `chorus bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A folder of tracks to seed, read only: never written, renamed or deleted
    /// [default: the sample set in samples/out of the source tree, built there if missing]
    #[arg(long, value_name = "DIR")]
    pub samples: Option<PathBuf>,
    /// Link profile: lan, broadband, transatlantic, 4g, lossy or all (repeat for several)
    /// [default: all]
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// Peers besides the seed that already hold every track
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub peers: usize,
    /// Plays per profile in `single`, `versus`, `seek-storm`, `discovery` and per case in `nat`
    /// (each takes the next track)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub plays: usize,
    /// Scenario: single, versus (`chorus play` processes next to a plain HTTP server with
    /// ffmpeg, through the same emulated link), seek-storm, flash-crowd, churn, discovery (a
    /// local DHT testnet), nat (root only: `chorus play` between two homes behind NATs in
    /// network namespaces, set-up and first audio punched, relayed and mapped), serve or all
    /// (repeat for several)
    #[arg(long = "scenario", value_name = "NAME", default_values_t = ["single".to_owned(), "versus".to_owned(), "serve".to_owned()])]
    pub scenarios: Vec<String>,
    /// Listeners in flash-crowd and churn
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub listeners: usize,
    /// Seconds of audio each measured play listens to (crowds listen twice as long)
    #[arg(long, default_value_t = 1.5, value_name = "SECONDS")]
    pub listen: f64,
    /// serve: client connections
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub connections: usize,
    /// serve: requests in flight per connection
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub streams: usize,
    /// serve: seconds each server is measured
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub serve_seconds: f64,
    /// Seed of every random draw (links, start times, seek targets)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write every sample and summary as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of the cold starts' time to first audio per profile,
    /// and beside it (FILE-rtt.svg) one of the four start scenarios (cold,
    /// known, warm, replay) in round trips of each profile
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// `chorus seed`.
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
    /// Map the UDP port on the home router (PCP, NAT-PMP or UPnP IGD), so peers outside
    /// reach this node directly; the mapping is renewed while serving and
    /// removed on exit
    #[arg(long, env = "CHORUS_PORT_MAP", value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub port_map: Switch,
    /// Relay for peers behind NATs that cannot reach each other directly
    /// (at most 16 relays, 256 KiB/s each; they see only ciphertext)
    #[arg(long, value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub relay: Switch,
}

fn default_listen() -> std::net::SocketAddr {
    ([0, 0, 0, 0], chorus_streamer::node::DEFAULT_PORT).into()
}

/// `chorus search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to look for in title, artist, album and file name; empty lists all
    #[arg(default_value = "")]
    pub query: String,
    /// Peers to ask: HOST:PORT or PEER_ID@HOST:PORT (the port defaults to 47800;
    /// repeat for more) [default: `peers` in the config file]. The peers they
    /// know are asked too.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<PeerAddr>,
    /// Print JSON, one object per track, instead of a table
    #[arg(long)]
    pub json: bool,
    /// Most results to list
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// `chorus fetch`.
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
