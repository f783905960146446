//! The one error type of this crate.

/// What can stop playback.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The media could not be opened or demuxed.
    #[error("cannot decode: {0}")]
    Decode(#[from] symphonia::core::errors::Error),
    /// The data stopped coming: no peer can serve what playback needs.
    #[error("{0}")]
    Source(String),
    /// The track has no playable audio track or parameters.
    #[error("not playable: {0}")]
    NotPlayable(&'static str),
    /// The audio device could not be opened or failed.
    #[error("audio device: {0}")]
    Device(String),
    /// Reading a local file failed.
    #[error("reading {path}: {err}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error (in the message, not repeated as a cause).
        err: std::io::Error,
    },
    /// Writing the output file failed.
    #[error("writing {path}: {err}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error (in the message, not repeated as a cause).
        err: std::io::Error,
    },
    /// The resampler could not be built or failed.
    #[error("resampler: {0}")]
    Resample(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
