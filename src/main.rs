//! `chorus`: the command line of the Chorus peer-to-peer music streaming node.

use clap::Parser;

/// Peer-to-peer music streaming: seed a library, search, fetch and play
/// tracks from peers over QUIC.
#[derive(Debug, Parser)]
#[command(name = "chorus", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
