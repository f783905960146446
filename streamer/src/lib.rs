//! # chorus-streamer
//!
//! The Chorus node: QUIC endpoint and identity, library index, chunk store,
//! catalog, peer table, deadline scheduler and discovery. Built up by the
//! seed and swarm work; see `../shared/DESIGN.md` for the plan.
