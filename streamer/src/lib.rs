//! # chorus-streamer
//!
//! The Chorus node: QUIC endpoint and identity, library index, catalog and
//! chunk serving, and the client side of the protocol.
//!
//! Entry points:
//!
//! - [`library::scan`]: index music directories into manifests, reusing the
//!   previous index ([`library::load_index`], [`library::save_index`]).
//! - [`node::Node`]: serve a library over QUIC.
//! - [`transport::Transport`]: a QUIC endpoint with this node's
//!   [`identity::Identity`]; [`transport::Transport::connect`] dials a peer
//!   and returns a [`client::Peer`] to search, fetch manifests and chunks.
//! - [`probe::probe_file`]: symphonia-based media facts and time index.

pub mod cache;
pub mod client;
pub mod close;
#[cfg(all(feature = "testkit", target_os = "linux"))]
pub mod delayline;
pub mod dht;
pub mod discovery;
pub mod error;
pub mod fetch;
pub mod identity;
pub mod lan;
pub mod library;
pub mod nat;
#[cfg(feature = "testkit")]
pub mod netem;
pub mod node;
mod order;
pub mod portmap;
pub mod probe;
pub mod resume;
pub mod scheduler;
#[cfg(feature = "testkit")]
pub mod sim;
pub mod start;
pub mod store;
pub mod tls;
pub mod transport;
pub mod wire;

pub use error::{Error, Result};
