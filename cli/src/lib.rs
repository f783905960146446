//! The commands of the `chorus` node, called by its binary: each command
//! lives in its own module and only calls into the library crates. The
//! start path `chorus play` runs ([`play::prepare`]) is here, so that
//! `chorus bench` (crate `chorus-bench`) times the very same code.

pub mod cli;
pub mod config;
pub mod demo;
pub mod fetch;
pub mod memory;
pub mod output;
pub mod peers;
pub mod play;
pub mod resources;
pub mod search;
pub mod seed;
pub mod signals;
pub mod tui;
