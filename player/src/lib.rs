//! # chorus-player
//!
//! The Chorus player: chunk-backed media source, symphonia decode, rubato
//! resampling, the lock-free ring buffer and audio sinks. Built up by the
//! play work; see `../shared/DESIGN.md` for the plan.
