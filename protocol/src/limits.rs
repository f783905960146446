//! Hard limits of the protocol. A decoder rejects anything beyond them before
//! allocating for it; an encoder refuses to produce it.

/// Largest frame body (version + kind + payload): 4 MiB. The largest
/// message is a manifest response; see [`MAX_MANIFEST_LEN`].
pub const MAX_FRAME_LEN: u32 = 4 * 1024 * 1024;

/// Largest manifest encoding: the frame limit less room for the response's
/// own fields.
pub const MAX_MANIFEST_LEN: usize = MAX_FRAME_LEN as usize - 1024;

/// Smallest chunk size: below 1 KiB the 32-byte hash and per-request
/// overhead stop being small.
pub const MIN_CHUNK_SIZE: u32 = 1024;

/// Largest chunk size: 1 MiB keeps one chunk's transfer well under a second
/// on a 10 Mbit/s link.
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;

/// Most chunks in one track. 120,000 hashes take 3.84 MB, leaving room in
/// the manifest for its time index, and at the default 16 KiB chunk size
/// cover a 1.8 GiB file (13 hours of 320 kb/s MP3, about 3 hours of
/// 24-bit/96 kHz stereo FLAC). Larger files need a larger chunk size.
pub const MAX_CHUNKS: u32 = 120_000;

/// Most chunks one request may ask for.
pub const MAX_CHUNKS_PER_REQUEST: u32 = 4096;

/// Most header ranges in a manifest.
pub const MAX_HEADER_RANGES: usize = 64;

/// Most time index points in a manifest.
pub const MAX_TIME_POINTS: usize = 2 * MAX_CHUNKS as usize;

/// Longest tag value, file name or agent string, in bytes.
pub const MAX_TAG_LEN: usize = 1024;

/// Longest search query or error message, in bytes.
pub const MAX_QUERY_LEN: usize = 4096;

/// Most results in one search response.
pub const MAX_SEARCH_RESULTS: usize = 5000;

/// Most addresses per peer.
pub const MAX_ADDRS: usize = 16;

/// Most peers in one exchange or who-has reply.
pub const MAX_PEERS: usize = 256;

/// Most runs in one availability announcement.
pub const MAX_HAVE_RUNS: usize = 65_536;

/// Most hops a who-has query travels (Spotify's neighbourhood search).
pub const MAX_HOPS: u8 = 2;

/// Highest sample rate accepted in a manifest.
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Most channels accepted in a manifest.
pub const MAX_CHANNELS: u16 = 64;

/// Most chunk bytes a start request may ask for: 1 MiB, far more than any
/// first flight carries (the rest of the track is fetched by deadline).
pub const MAX_START_BUDGET: u32 = 1024 * 1024;

/// Largest request frame a node reads: the largest request, a
/// `PeerExchange` of [`MAX_PEERS`] peers with [`MAX_ADDRS`] addresses each,
/// is about 86 KiB; everything else is far smaller. Replies (manifests,
/// chunk data, search pages) may use up to [`MAX_FRAME_LEN`].
pub const MAX_REQUEST_FRAME_LEN: u32 = 128 * 1024;
