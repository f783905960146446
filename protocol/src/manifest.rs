//! The manifest: everything a player needs to know about a track before it
//! fetches a byte of audio, and the root of trust for every chunk.
//!
//! A [`Manifest`] holds the codec and container hints, sample rate, channels,
//! length in frames, the byte length and chunk size, one hash per page of
//! the chunk hash list, a time index and the tags. Its canonical encoding is
//! hashed to make the [`TrackId`]; [`Manifest::decode_verified`] checks
//! received bytes against the id they were asked for.
//!
//! ## The hash list, in pages
//!
//! Each chunk has a blake3 hash; the list of them is cut into pages of
//! [`HASHES_PER_PAGE`] (2 KiB), and the manifest holds a hash of each page.
//! So a manifest stays small (a FLAC of 886 chunks: 14 page hashes, not 886
//! chunk hashes), and a start response can send the page its first chunk
//! needs before that chunk and the rest of the list after it: the first
//! chunk is checked as soon as it is in, not after the whole list. Pages are
//! learned with [`Manifest::learn_hashes`], checked against their hash, into
//! a table every clone of the manifest shares.
//!
//! ## The time index
//!
//! A sorted list of [`TimePoint`]s maps byte offsets to media time (the time
//! at which the decoder reaches that byte). Between points, time is
//! interpolated linearly; after the last point, toward (byte length,
//! duration). Since version 5 the index is split: the manifest holds the
//! first point in each page's bytes (and the last point), and each page of
//! the hash list carries its other points after its hashes. The index has
//! a point per chunk, so in the manifest it grew with the track (5.3 KB of
//! the sample FLAC's manifest, about 90 KB for an hour-long mix) and all of
//! it came before a start's first chunk; now a start's first flight holds
//! the points of the page it plays from, and a page's points are learned,
//! checked, with its hashes. Until a page is learned, times in its bytes
//! are interpolated between the manifest's points
//! ([`Manifest::time_at_offset`] and [`Manifest::chunk_at_time`] use what
//! is known). Byte ranges the demuxer needs before any audio plays (headers,
//! an MP4 `moov` atom at the end of the file) are listed as `header_ranges`
//! and are due at time zero; a FLAC's or an MP4's cover art and a FLAC's
//! padding are left out (a player reads them as zeros). From these two, every chunk gets a deadline
//! ([`Manifest::chunk_media_time`]) and every seek target a chunk
//! ([`Manifest::chunk_at_time`]).

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::chunk::{ChunkLayout, ChunkSize};
use crate::codec::{Put, Reader, put_tags, read_tags};
use crate::error::{ProtocolError, Result};
use crate::ids::{ChunkHash, ChunkIndex, TrackId};
use crate::limits;

/// The newest manifest encoding version this implementation writes and
/// reads (2: page hashes in place of the chunk hash list; 3: the first
/// chunk's length, so a cut falls where the audio begins; 4: and the
/// second's, a gap of bytes no player needs before the audio; 5: the time
/// index split between the manifest and the pages of the hash list).
/// Versions 3 and 4 are read (a cache's manifests, and a peer's not yet
/// indexed again, keep theirs) and no longer written.
pub const MANIFEST_VERSION: u8 = 5;
/// The oldest manifest encoding version this implementation reads.
pub const MANIFEST_MIN_VERSION: u8 = 3;
const MAGIC: &[u8; 4] = b"CHMF";

/// Chunk hashes per page of the hash list: a page is 2 KiB of hashes (and,
/// since version 5, its time index points).
pub const HASHES_PER_PAGE: u32 = 64;

/// Most time index points a page carries (a library makes one per chunk at
/// most; four leave room for other cuts).
pub const MAX_PAGE_POINTS: usize = 4 * HASHES_PER_PAGE as usize;

/// The blake3 key-derivation context of page hashes: a page hash can never
/// be mistaken for a chunk's or a manifest's.
const PAGE_CONTEXT: &str = "chorus 2026-11-26 hash list page";

/// The hash of one page of a hash list (its chunk hashes, concatenated).
fn page_hash(hashes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(PAGE_CONTEXT);
    h.update(hashes);
    *h.finalize().as_bytes()
}

/// How many pages a list of `chunks` hashes has.
fn pages_for(chunks: u32) -> u32 {
    chunks.div_ceil(HASHES_PER_PAGE)
}

/// One page of the hash list, learned.
struct Page {
    hashes: Box<[ChunkHash]>,
    /// The time index points in the page's bytes after its first (which
    /// the manifest holds); none in a version 3 or 4 manifest's pages.
    points: Box<[TimePoint]>,
    /// Its encoding, as sent: the hashes, then (version 5) the points.
    encoded: Bytes,
}

/// The pages learned so far; shared by a manifest's clones.
struct HashList {
    pages: Vec<OnceLock<Page>>,
    /// The whole list's encoding and where each page begins in it (one
    /// more offset: the end), once every page is known: what a seed sends,
    /// as slices, with no copy.
    whole: OnceLock<(Bytes, Box<[usize]>)>,
}

impl std::fmt::Debug for HashList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.pages.iter().filter(|p| p.get().is_some()).count();
        write!(f, "HashList({known} of {} pages)", self.pages.len())
    }
}

macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A code this version does not know, kept as is so it
            /// round-trips.
            Other(u8),
        }

        impl $name {
            /// The wire code.
            pub fn code(self) -> u8 {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(c) => c,
                }
            }

            /// From the wire code.
            pub fn from_code(c: u8) -> Self {
                match c {
                    $($code => Self::$variant,)*
                    c => Self::Other(c),
                }
            }
        }
    };
}

code_enum!(
    /// The audio codec, a hint for choosing a decoder.
    Codec {
        /// MPEG-1/2 Layer III.
        Mp3 = 1,
        /// Vorbis.
        Vorbis = 2,
        /// FLAC.
        Flac = 3,
        /// AAC (LC/HE).
        Aac = 4,
        /// Apple Lossless.
        Alac = 5,
        /// Uncompressed PCM.
        Pcm = 6,
        /// Opus.
        Opus = 7,
    }
);

code_enum!(
    /// The container format, a hint for choosing a demuxer.
    Container {
        /// A raw MPEG audio stream (with optional ID3 tags).
        Mpeg = 1,
        /// Ogg.
        Ogg = 2,
        /// Native FLAC.
        Flac = 3,
        /// ISO MP4 / M4A.
        Mp4 = 4,
        /// RIFF WAVE.
        Wav = 5,
        /// AIFF.
        Aiff = 6,
        /// Matroska / WebM.
        Mkv = 7,
        /// Raw ADTS AAC.
        Adts = 8,
    }
);

impl Codec {
    /// The longest frame (packet) of this codec as its usual encoders make
    /// it, in samples: a decoder outputs a frame only once all of it is
    /// here, so the audio playable from the bytes before a gap ends up to
    /// this much before the byte where the gap begins (what a start rule
    /// counting bytes must take off). FLAC and ALAC: 4096 (4608 at 48 kHz
    /// for some FLAC encoders); MP3 1152; AAC 1024 (doubled for the
    /// decoder's overlap); Vorbis 2048 (its long block); Opus at most
    /// 120 ms; PCM as symphonia packs it (1152).
    pub fn frame_samples(self) -> u32 {
        match self {
            Self::Mp3 | Self::Pcm => 1152,
            Self::Aac | Self::Vorbis => 2048,
            Self::Flac => 4608,
            Self::Alac => 4096,
            Self::Opus => 5760,
            Self::Other(_) => 8192,
        }
    }

    /// A short lowercase name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mp3 => "mp3",
            Self::Vorbis => "vorbis",
            Self::Flac => "flac",
            Self::Aac => "aac",
            Self::Alac => "alac",
            Self::Pcm => "pcm",
            Self::Opus => "opus",
            Self::Other(_) => "other",
        }
    }
}

/// A point of the time index: the decoder reaches `byte_offset` at media
/// time `time_us` microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimePoint {
    /// Offset in the file.
    pub byte_offset: u64,
    /// Media time in microseconds.
    pub time_us: u64,
}

/// Descriptive tags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tags {
    /// Track title.
    pub title: Option<String>,
    /// Track artist.
    pub artist: Option<String>,
    /// Album title.
    pub album: Option<String>,
    /// Album artist, when it differs from the track artist.
    pub album_artist: Option<String>,
    /// Position on the album, from 1.
    pub track_number: Option<u32>,
    /// Disc number, from 1.
    pub disc_number: Option<u32>,
    /// Release year.
    pub year: Option<u32>,
    /// ReplayGain track gain in dB.
    pub track_gain_db: Option<f32>,
    /// ReplayGain track peak (linear, 1.0 = full scale).
    pub track_peak: Option<f32>,
    /// ReplayGain album gain in dB.
    pub album_gain_db: Option<f32>,
    /// ReplayGain album peak.
    pub album_peak: Option<f32>,
}

/// What the library scanner learns about a file's media, the input to
/// [`Manifest::new`] besides the chunk hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaInfo {
    /// Codec hint.
    pub codec: Codec,
    /// Container hint.
    pub container: Container,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Number of channels.
    pub channels: u16,
    /// Length in frames (samples per channel); 0 when unknown.
    pub frames: u64,
    /// Byte ranges needed before the first audio packet can be decoded.
    pub header_ranges: Vec<Range<u64>>,
    /// Sorted byte offset → media time points.
    pub time_index: Vec<TimePoint>,
    /// Tags.
    pub tags: Tags,
}

/// A verified, canonical track manifest. Build one with [`Manifest::new`] or
/// decode one with [`Manifest::decode_verified`]. Clones share the hash
/// list learned so far.
#[derive(Clone, Debug)]
pub struct Manifest {
    id: TrackId,
    encoded: Bytes,
    /// Its `time_index`: the points the manifest holds (version 5: the
    /// first in each page's bytes and the last; before: all of them).
    media: MediaInfo,
    layout: ChunkLayout,
    pages: Vec<[u8; 32]>,
    /// Version 5 on: the pages carry the points the manifest leaves out.
    split_index: bool,
    list: Arc<HashList>,
}

impl PartialEq for Manifest {
    /// The same track (the encoding decides; what was learned is not part
    /// of it).
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}

impl Manifest {
    /// Builds a manifest with its whole hash list and time index (in
    /// `media`), validating every field, and computes its id.
    pub fn new(mut media: MediaInfo, layout: ChunkLayout, hashes: Vec<ChunkHash>) -> Result<Self> {
        if hashes.len() != layout.count() as usize {
            return Err(ProtocolError::Invalid("chunk hash count does not match the layout"));
        }
        check_index(&media.time_index, &layout)?;
        let (core, in_pages) = split_index(&media.time_index, &layout);
        media.time_index = core;
        let per_page = hashes.chunks(HASHES_PER_PAGE as usize);
        let mut whole = BytesMut::with_capacity(32 * hashes.len() + 8 * in_pages.len());
        let mut offsets = vec![0];
        let mut page_hashes = Vec::with_capacity(in_pages.len());
        for (p, (page, points)) in per_page.clone().zip(&in_pages).enumerate() {
            check_count("time index points in a page", points.len(), MAX_PAGE_POINTS)?;
            let start = whole.len();
            page.iter().for_each(|h| whole.put_slice(h.as_bytes()));
            let base = first_point_in(&media.time_index, &layout, p as u32);
            put_page_points(&mut whole, base, points);
            page_hashes.push(page_hash(&whole[start..]));
            offsets.push(whole.len());
        }
        let m = Self::build(media, layout, page_hashes, MANIFEST_VERSION)?;
        let whole = whole.freeze();
        for (p, ((slot, page), points)) in
            m.list.pages.iter().zip(per_page).zip(in_pages).enumerate()
        {
            let encoded = whole.slice(offsets[p]..offsets[p + 1]);
            let _ = slot.set(Page { hashes: page.into(), points: points.into(), encoded });
        }
        let _ = m.list.whole.set((whole, offsets.into()));
        Ok(m)
    }

    /// A manifest with page hashes and no hash list learned yet.
    fn build(
        media: MediaInfo,
        layout: ChunkLayout,
        pages: Vec<[u8; 32]>,
        version: u8,
    ) -> Result<Self> {
        let split_index = version >= 5;
        validate(&media, &layout, pages.len(), split_index)?;
        let mut buf = BytesMut::with_capacity(encoded_len_hint(&media, pages.len()));
        encode(&mut buf, &media, &layout, &pages, version);
        let encoded = buf.freeze();
        if encoded.len() > limits::MAX_MANIFEST_LEN {
            return Err(ProtocolError::TooMany {
                what: "manifest bytes",
                count: encoded.len() as u64,
                max: limits::MAX_MANIFEST_LEN as u64,
            });
        }
        let id = TrackId::of_manifest_bytes(&encoded);
        let list = Arc::new(HashList {
            pages: pages.iter().map(|_| OnceLock::new()).collect(),
            whole: OnceLock::new(),
        });
        Ok(Self { id, encoded, media, layout, pages, split_index, list })
    }

    /// Decodes manifest bytes received for `expected`, checking the hash
    /// first, so nothing is parsed from bytes that are not what was asked for.
    pub fn decode_verified(bytes: Bytes, expected: TrackId) -> Result<Self> {
        let actual = TrackId::of_manifest_bytes(&bytes);
        if actual != expected {
            return Err(ProtocolError::TrackIdMismatch { expected, actual });
        }
        Self::decode(bytes)
    }

    /// Decodes manifest bytes of unknown provenance (a local index file, a
    /// fuzzer). The id is computed from the bytes.
    pub fn decode(bytes: Bytes) -> Result<Self> {
        if bytes.len() > limits::MAX_MANIFEST_LEN {
            return Err(ProtocolError::TooMany {
                what: "manifest bytes",
                count: bytes.len() as u64,
                max: limits::MAX_MANIFEST_LEN as u64,
            });
        }
        let (media, layout, pages, version) = decode(&bytes)?;
        let m = Self::build(media, layout, pages, version)?;
        // Canonical: the only encoding of this value is the one we got.
        if m.encoded != bytes {
            return Err(ProtocolError::NonCanonical("manifest"));
        }
        Ok(m)
    }

    /// The track id: blake3 of [`Self::encoded`].
    pub fn id(&self) -> TrackId {
        self.id
    }

    /// The canonical encoding.
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// Media parameters, the time index points the manifest itself holds
    /// (since version 5 not all of them: see [`Self::time_points`]) and
    /// tags.
    pub fn media(&self) -> &MediaInfo {
        &self.media
    }

    /// Tags.
    pub fn tags(&self) -> &Tags {
        &self.media.tags
    }

    /// The chunk layout.
    pub fn layout(&self) -> &ChunkLayout {
        &self.layout
    }

    /// The number of pages of the hash list.
    pub fn page_count(&self) -> u32 {
        self.pages.len() as u32
    }

    /// The page of the hash list that holds a chunk's hash.
    pub fn page_of(index: ChunkIndex) -> u32 {
        index.0 / HASHES_PER_PAGE
    }

    /// True once this page of the hash list is known.
    pub fn page_known(&self, page: u32) -> bool {
        self.list.pages.get(page as usize).is_some_and(|p| p.get().is_some())
    }

    /// True once the whole hash list is known.
    pub fn hashes_known(&self) -> bool {
        self.list.pages.iter().all(|p| p.get().is_some())
    }

    /// Learns pages of the hash list from `first` on: `data` is their
    /// encodings, concatenated (every page whole; the last page of the
    /// list holds the rest): a page is its chunk hashes, then (version 5)
    /// its time index points. Each page is checked against its hash, and
    /// its points against the manifest's, before it is kept; pages already
    /// known are checked and left as they are.
    pub fn learn_hashes(&self, first: u32, data: &[u8]) -> Result<()> {
        let data = Bytes::copy_from_slice(data);
        let mut at = 0;
        let mut page = first;
        while at < data.len() {
            if page >= self.page_count() {
                return Err(ProtocolError::Invalid("hash list page beyond the track"));
            }
            let chunks = self.page_chunks(page);
            let hash_len = 32 * (chunks.end - chunks.start) as usize;
            if data.len() - at < hash_len {
                return Err(ProtocolError::Truncated);
            }
            let after = data.slice(at + hash_len..);
            let mut r = Reader::new(&after);
            let points =
                if self.split_index { self.read_page_points(page, &mut r)? } else { [].into() };
            let encoded = data.slice(at..at + hash_len + r.position());
            if page_hash(&encoded) != self.pages[page as usize] {
                return Err(ProtocolError::HashPageMismatch { track: self.id, page });
            }
            let slot = &self.list.pages[page as usize];
            if slot.get().is_none() {
                let hashes: Box<[ChunkHash]> = encoded[..hash_len]
                    .chunks_exact(32)
                    .map(|h| {
                        let mut a = [0u8; 32];
                        a.copy_from_slice(h);
                        ChunkHash::from_bytes(a)
                    })
                    .collect();
                let _ = slot.set(Page { hashes, points, encoded: encoded.clone() });
            }
            at += encoded.len();
            page += 1;
        }
        // Whole now: kept as one buffer too, served as slices.
        if self.list.whole.get().is_none() && self.hashes_known() {
            let mut whole = BytesMut::new();
            let mut offsets = vec![0];
            for p in self.list.pages.iter().filter_map(|p| p.get()) {
                whole.put_slice(&p.encoded);
                offsets.push(whole.len());
            }
            let _ = self.list.whole.set((whole.freeze(), offsets.into()));
        }
        Ok(())
    }

    /// Reads the points page `page` carries (version 5): a count, then
    /// each point as the difference from the one before, from the first
    /// point in the page's bytes (the manifest's). They must rise inside
    /// the page's bytes and before the manifest's next point, in offset
    /// and (not falling) in time: a page that passes its hash was made
    /// with the manifest, but that maker may lie.
    fn read_page_points(&self, page: u32, r: &mut Reader<'_>) -> Result<Box<[TimePoint]>> {
        let n = r.len("time index points in a page", MAX_PAGE_POINTS)?;
        if n == 0 {
            return Ok([].into());
        }
        let core = &self.media.time_index;
        let bad = ProtocolError::Invalid("a page's time index points");
        let Some((k, base)) = first_point_in(core, &self.layout, page) else { return Err(bad) };
        let Some(next) = core.get(k + 1) else { return Err(bad) };
        let end = page_bytes(&self.layout, page).end.min(next.byte_offset);
        let mut out = Vec::with_capacity(n);
        let mut prev = base;
        for _ in 0..n {
            let step = r.varint("time index")?;
            let byte_offset = prev.byte_offset.saturating_add(step);
            let time_us = prev.time_us.saturating_add(r.varint("time index")?);
            if step == 0 || byte_offset >= end || time_us > next.time_us {
                return Err(bad);
            }
            prev = TimePoint { byte_offset, time_us };
            out.push(prev);
        }
        Ok(out.into())
    }

    /// The hash list's pages `pages`, concatenated, if all of them are
    /// known: what [`Manifest::learn_hashes`] takes.
    pub fn hash_pages(&self, pages: Range<u32>) -> Option<Bytes> {
        if let Some((whole, offsets)) = self.list.whole.get()
            && pages.start <= pages.end
            && pages.end <= self.page_count()
        {
            let (from, to) = (offsets[pages.start as usize], offsets[pages.end as usize]);
            return Some(whole.slice(from..to));
        }
        let mut out = BytesMut::new();
        for page in pages {
            out.put_slice(&self.list.pages.get(page as usize)?.get()?.encoded);
        }
        Some(out.freeze())
    }

    /// The chunks whose hashes a page holds.
    pub fn page_chunks(&self, page: u32) -> Range<u32> {
        page_chunks(&self.layout, page)
    }

    /// The hash of one chunk: an error if it is beyond the track or its
    /// page of the hash list is not known yet.
    pub fn chunk_hash(&self, index: ChunkIndex) -> Result<ChunkHash> {
        if index.0 >= self.layout.count() {
            return Err(ProtocolError::ChunkOutOfRange { index, count: self.layout.count() });
        }
        let page = self.list.pages.get(Self::page_of(index) as usize).and_then(|p| p.get());
        page.and_then(|p| p.hashes.get((index.0 % HASHES_PER_PAGE) as usize))
            .copied()
            .ok_or(ProtocolError::HashUnknown { index })
    }

    /// True if `index` is in the head of a start at `at`: a header chunk,
    /// or the chunk playback starts in. A start response sends the head
    /// first, after the hash list pages it needs.
    pub fn is_head(&self, index: ChunkIndex, at: Duration) -> bool {
        index == self.chunk_at_time(at) || self.is_header_chunk(index)
    }

    /// Checks a received chunk and, if it passes, returns it as a
    /// [`VerifiedChunk`]: the only way to make one, so code that takes a
    /// `VerifiedChunk` cannot be handed unverified bytes.
    pub fn verify(&self, index: ChunkIndex, data: Bytes) -> Result<VerifiedChunk> {
        self.verify_chunk(index, &data)?;
        Ok(VerifiedChunk { track: self.id, index, data })
    }

    /// Starts receiving chunk `index` of `len` bytes, with the chaining
    /// values of its groups if the sender put them before it (see
    /// [`crate::groups`]): the length and the values are checked now, the
    /// bytes as they come.
    pub fn receive_chunk(
        &self,
        index: ChunkIndex,
        len: usize,
        groups: &[u8],
    ) -> Result<crate::groups::ChunkReceiver> {
        let expected = self.chunk_hash(index)?;
        let want = self.layout.chunk_len(index);
        if len as u64 != want {
            return Err(ProtocolError::ChunkLength { index, len, expected: want });
        }
        crate::groups::ChunkReceiver::new(self.id, index, len, expected, groups)
    }

    /// Begins taking the tail of chunk `index` from byte `from` (a
    /// [`crate::message::TailRequest`]'s reply): `len` bytes of data with
    /// the group values of the whole chunk, which must merge to its hash.
    pub fn receive_tail(
        &self,
        index: ChunkIndex,
        from: usize,
        len: usize,
        groups: &[u8],
    ) -> Result<crate::groups::ChunkReceiver> {
        let whole = self.layout.chunk_len(index);
        if (from as u64).saturating_add(len as u64) != whole {
            return Err(ProtocolError::ChunkLength { index, len: from + len, expected: whole });
        }
        self.receive_chunk(index, whole as usize, groups)?.tail_from(from)
    }

    /// Checks a chunk about to be sent, as [`Self::verify`] does, and
    /// returns its group values ([`crate::groups::group_hashes`]) for the
    /// receiver with it: one pass over the bytes does both.
    pub fn verify_with_groups(
        &self,
        index: ChunkIndex,
        data: Bytes,
    ) -> Result<(Bytes, VerifiedChunk)> {
        let groups = crate::groups::group_hashes(&data);
        if groups.is_empty() {
            return Ok((groups, self.verify(index, data)?));
        }
        // The values merge to the chunk's hash, and they are the bytes'.
        self.receive_chunk(index, data.len(), &groups)?;
        Ok((groups, VerifiedChunk::new(self.id, index, data)))
    }

    /// Checks a received chunk: right length, right hash. Only bytes that
    /// pass may be stored, decoded or served.
    pub fn verify_chunk(&self, index: ChunkIndex, data: &[u8]) -> Result<()> {
        let expected = self.chunk_hash(index)?;
        let len = self.layout.chunk_len(index);
        if data.len() as u64 != len {
            return Err(ProtocolError::ChunkLength { index, len: data.len(), expected: len });
        }
        if ChunkHash::of(data) != expected {
            return Err(ProtocolError::ChunkHashMismatch { track: self.id, index });
        }
        Ok(())
    }

    /// The track's duration (zero when the frame count is unknown).
    pub fn duration(&self) -> Duration {
        if self.media.sample_rate == 0 {
            return Duration::ZERO;
        }
        let us = u128::from(self.media.frames) * 1_000_000 / u128::from(self.media.sample_rate);
        Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// The media time at which the decoder needs the first byte of `index`:
    /// zero for chunks that hold headers, otherwise interpolated from the
    /// time index. A chunk's deadline is playback start + this − start time.
    pub fn chunk_media_time(&self, index: ChunkIndex) -> Duration {
        if self.is_header_chunk(index) {
            return Duration::ZERO;
        }
        Duration::from_micros(self.time_at_offset(self.layout.byte_range(index).start))
    }

    /// True if the chunk holds bytes of a header range (needed before any
    /// audio, wherever playback starts).
    pub fn is_header_chunk(&self, index: ChunkIndex) -> bool {
        let range = self.layout.byte_range(index);
        self.media.header_ranges.iter().any(|h| h.start < range.end && range.start < h.end)
    }

    /// The chunks a start response carries to begin playing at `at`, in
    /// sending order: every header chunk, then the chunk at `at` and those
    /// after it while their bytes stay within `budget` (audio only: the
    /// headers are needed whatever the budget). The header chunks and the
    /// first audio chunk are always included: without them the decoder
    /// cannot produce a sample.
    pub fn start_chunks(&self, at: Duration, budget: u64) -> Vec<ChunkIndex> {
        let mut out: Vec<ChunkIndex> =
            self.layout.indices().filter(|i| self.is_header_chunk(*i)).collect();
        let mut bytes = 0;
        let first = self.chunk_at_time(at);
        for i in first.0..self.layout.count() {
            let index = ChunkIndex(i);
            if out.contains(&index) {
                continue;
            }
            let len = self.layout.chunk_len(index);
            if i != first.0 && bytes + len > budget {
                break;
            }
            bytes += len;
            out.push(index);
        }
        out
    }

    /// The media time in microseconds at which the decoder reaches `offset`,
    /// from the index points known (the manifest's and those of the pages
    /// learned).
    pub fn time_at_offset(&self, offset: u64) -> u64 {
        let core = &self.media.time_index;
        let i = core.partition_point(|p| p.byte_offset <= offset);
        let Some(mut a) = i.checked_sub(1).map(|k| core[k]) else { return 0 };
        let mut b = core.get(i).copied().unwrap_or(TimePoint {
            byte_offset: self.layout.byte_len(),
            time_us: u64::try_from(self.duration().as_micros()).unwrap_or(u64::MAX),
        });
        if let Some(fine) = self.points_after(a) {
            let j = fine.partition_point(|p| p.byte_offset <= offset);
            if let Some(k) = j.checked_sub(1) {
                a = fine[k];
            }
            if let Some(p) = fine.get(j) {
                b = *p;
            }
        }
        interpolate(a, b, offset)
    }

    /// The last index point known at or before media time `t`.
    pub fn point_before(&self, t: Duration) -> Option<TimePoint> {
        let t_us = u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
        let core = &self.media.time_index;
        let i = core.partition_point(|p| p.time_us <= t_us);
        let base = core[i.checked_sub(1)?];
        let Some(fine) = self.points_after(base) else { return Some(base) };
        let j = fine.partition_point(|p| p.time_us <= t_us);
        Some(j.checked_sub(1).map_or(base, |k| fine[k]))
    }

    /// The points of a page learned, if `first` is the manifest's point
    /// that page begins with (they lie between it and the manifest's next
    /// point).
    fn points_after(&self, first: TimePoint) -> Option<&[TimePoint]> {
        if !self.split_index {
            return None;
        }
        let page = self.layout.chunk_at(first.byte_offset)?.0 / HASHES_PER_PAGE;
        let fine = &self.list.pages.get(page as usize)?.get()?.points;
        fine.first().is_some_and(|p| p.byte_offset > first.byte_offset).then_some(&fine[..])
    }

    /// Every index point known, rising: the manifest's and those of the
    /// pages learned (all of them once [`Self::hashes_known`]).
    pub fn time_points(&self) -> Vec<TimePoint> {
        let mut out = Vec::with_capacity(self.media.time_index.len());
        for p in &self.media.time_index {
            out.push(*p);
            out.extend_from_slice(self.points_after(*p).unwrap_or_default());
        }
        out
    }

    /// The chunk to fetch first to start playing at media time `t`: the one
    /// holding the last index point known at or before `t`.
    pub fn chunk_at_time(&self, t: Duration) -> ChunkIndex {
        let offset = self.point_before(t).map_or(0, |p| p.byte_offset);
        self.layout.chunk_at(offset).unwrap_or(ChunkIndex(self.layout.count() - 1))
    }
}

/// Chunk bytes that matched their manifest's hash; made only by
/// [`Manifest::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChunk {
    track: TrackId,
    index: ChunkIndex,
    data: Bytes,
}

impl VerifiedChunk {
    pub(crate) fn new(track: TrackId, index: ChunkIndex, data: Bytes) -> Self {
        Self { track, index, data }
    }

    /// The track it belongs to.
    pub fn track(&self) -> TrackId {
        self.track
    }

    /// Its position in the track.
    pub fn index(&self) -> ChunkIndex {
        self.index
    }

    /// Its bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Its bytes, by value (a cheap `Bytes` handle).
    pub fn into_data(self) -> Bytes {
        self.data
    }
}

/// Linear interpolation of media time between two index points.
fn interpolate(a: TimePoint, b: TimePoint, offset: u64) -> u64 {
    if b.byte_offset <= a.byte_offset || b.time_us <= a.time_us {
        return a.time_us;
    }
    let num = u128::from(offset - a.byte_offset) * u128::from(b.time_us - a.time_us);
    let den = u128::from(b.byte_offset - a.byte_offset);
    a.time_us + u64::try_from(num / den).unwrap_or(u64::MAX).min(b.time_us - a.time_us)
}

fn validate(media: &MediaInfo, layout: &ChunkLayout, pages: usize, split: bool) -> Result<()> {
    if pages != pages_for(layout.count()) as usize {
        return Err(ProtocolError::Invalid("hash list page count does not match the layout"));
    }
    if media.sample_rate == 0 || media.sample_rate > limits::MAX_SAMPLE_RATE {
        return Err(ProtocolError::Invalid("sample rate"));
    }
    if media.channels == 0 || media.channels > limits::MAX_CHANNELS {
        return Err(ProtocolError::Invalid("channel count"));
    }
    check_count("header ranges", media.header_ranges.len(), limits::MAX_HEADER_RANGES)?;
    let mut prev_end = 0;
    for (i, r) in media.header_ranges.iter().enumerate() {
        if r.start >= r.end || r.end > layout.byte_len() || (i > 0 && r.start <= prev_end) {
            return Err(ProtocolError::Invalid("header ranges (sorted, disjoint, in the track)"));
        }
        prev_end = r.end;
    }
    check_index(&media.time_index, layout)?;
    // Split (version 5): the first point in each page's bytes, and the
    // last point, which may share the page of the one before it.
    let points = &media.time_index;
    if split && points.len() > 1 {
        let page = |p: &TimePoint| layout.chunk_at(p.byte_offset).map(|c| c.0 / HASHES_PER_PAGE);
        let last = points.len() - 2;
        for (k, w) in points.windows(2).enumerate() {
            if page(&w[1]) <= page(&w[0]) && (k < last || page(&w[1]) < page(&w[0])) {
                return Err(ProtocolError::Invalid("time index (a page's first points, the last)"));
            }
        }
    }
    let t = &media.tags;
    for s in [&t.title, &t.artist, &t.album, &t.album_artist].into_iter().flatten() {
        check_count("tag bytes", s.len(), limits::MAX_TAG_LEN)?;
    }
    for g in [t.track_gain_db, t.track_peak, t.album_gain_db, t.album_peak].into_iter().flatten() {
        if !g.is_finite() {
            return Err(ProtocolError::Invalid("ReplayGain value"));
        }
    }
    Ok(())
}

/// A time index's own rules: at most [`limits::MAX_TIME_POINTS`], offsets
/// rising inside the track, times not falling.
fn check_index(points: &[TimePoint], layout: &ChunkLayout) -> Result<()> {
    check_count("time index points", points.len(), limits::MAX_TIME_POINTS)?;
    for w in points.windows(2) {
        if w[1].byte_offset <= w[0].byte_offset || w[1].time_us < w[0].time_us {
            return Err(ProtocolError::Invalid("time index (offsets rising, times not falling)"));
        }
    }
    if points.last().is_some_and(|p| p.byte_offset >= layout.byte_len()) {
        return Err(ProtocolError::Invalid("time index offset beyond the track"));
    }
    Ok(())
}

/// The chunks page `page` of a hash list covers.
fn page_chunks(layout: &ChunkLayout, page: u32) -> Range<u32> {
    let count = layout.count();
    let start = page.saturating_mul(HASHES_PER_PAGE).min(count);
    start..start.saturating_add(HASHES_PER_PAGE).min(count)
}

/// The bytes page `page`'s chunks cover.
fn page_bytes(layout: &ChunkLayout, page: u32) -> Range<u64> {
    let chunks = page_chunks(layout, page);
    if chunks.is_empty() {
        return layout.byte_len()..layout.byte_len();
    }
    layout.byte_range(ChunkIndex(chunks.start)).start
        ..layout.byte_range(ChunkIndex(chunks.end - 1)).end
}

/// The first of `points` (rising) in page `page`'s bytes, and where it is.
fn first_point_in(
    points: &[TimePoint],
    layout: &ChunkLayout,
    page: u32,
) -> Option<(usize, TimePoint)> {
    let bytes = page_bytes(layout, page);
    let i = points.partition_point(|p| p.byte_offset < bytes.start);
    points.get(i).filter(|p| p.byte_offset < bytes.end).map(|p| (i, *p))
}

/// Splits a whole time index (checked) into the points the manifest holds
/// (the first in each page's bytes, and the last) and, by page, the rest.
fn split_index(
    points: &[TimePoint],
    layout: &ChunkLayout,
) -> (Vec<TimePoint>, Vec<Vec<TimePoint>>) {
    let mut pages = vec![Vec::new(); pages_for(layout.count()) as usize];
    let mut core = Vec::new();
    let mut page_before = None;
    for (i, p) in points.iter().enumerate() {
        let page = layout.chunk_at(p.byte_offset).map_or(0, |c| (c.0 / HASHES_PER_PAGE) as usize);
        if page_before != Some(page) || i + 1 == points.len() {
            core.push(*p);
        } else if let Some(fine) = pages.get_mut(page) {
            fine.push(*p);
        }
        page_before = Some(page);
    }
    (core, pages)
}

/// A page's points after its hashes (version 5): their count, then each as
/// the difference from the point before, from the page's first (`base`,
/// the manifest's; present whenever `points` are).
fn put_page_points(buf: &mut BytesMut, base: Option<(usize, TimePoint)>, points: &[TimePoint]) {
    buf.put_varint(points.len() as u64);
    let mut prev = base.map_or(TimePoint { byte_offset: 0, time_us: 0 }, |b| b.1);
    for p in points {
        buf.put_varint(p.byte_offset - prev.byte_offset);
        buf.put_varint(p.time_us - prev.time_us);
        prev = *p;
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<()> {
    if count > max {
        return Err(ProtocolError::TooMany { what, count: count as u64, max: max as u64 });
    }
    Ok(())
}

fn encoded_len_hint(media: &MediaInfo, pages: usize) -> usize {
    64 + 32 * pages + 20 * media.header_ranges.len() + 10 * media.time_index.len() + 256
}

/// Field order is the format; see PROTOCOL.md. Offsets and times in the
/// index are delta-coded from the previous point.
fn encode(
    buf: &mut BytesMut,
    media: &MediaInfo,
    layout: &ChunkLayout,
    pages: &[[u8; 32]],
    version: u8,
) {
    buf.put_slice(MAGIC);
    // A version-3 or -4 manifest read is written back as it came: 4 with
    // a gap, 3 without.
    let version = match version {
        5.. => MANIFEST_VERSION,
        _ if layout.gap() > 0 => 4,
        _ => MANIFEST_MIN_VERSION,
    };
    buf.put_u8(version);
    buf.put_u8(media.codec.code());
    buf.put_u8(media.container.code());
    buf.put_varint(u64::from(media.sample_rate));
    buf.put_varint(u64::from(media.channels));
    buf.put_varint(media.frames);
    buf.put_varint(layout.byte_len());
    buf.put_varint(u64::from(layout.chunk_size().get()));
    buf.put_varint(u64::from(layout.lead()));
    if version >= 5 || layout.gap() > 0 {
        buf.put_varint(u64::from(layout.gap()));
    }
    for p in pages {
        buf.put_slice(p);
    }
    buf.put_varint(media.header_ranges.len() as u64);
    for r in &media.header_ranges {
        buf.put_varint(r.start);
        buf.put_varint(r.end - r.start);
    }
    buf.put_varint(media.time_index.len() as u64);
    let mut prev = TimePoint { byte_offset: 0, time_us: 0 };
    for p in &media.time_index {
        buf.put_varint(p.byte_offset - prev.byte_offset);
        buf.put_varint(p.time_us - prev.time_us);
        prev = *p;
    }
    put_tags(buf, &media.tags);
}

fn decode(bytes: &Bytes) -> Result<(MediaInfo, ChunkLayout, Vec<[u8; 32]>, u8)> {
    let mut r = Reader::new(bytes);
    let mut magic = [0u8; 4];
    for m in &mut magic {
        *m = r.u8()?;
    }
    if &magic != MAGIC {
        return Err(ProtocolError::Invalid("manifest magic"));
    }
    let version = r.u8()?;
    if !(MANIFEST_MIN_VERSION..=MANIFEST_VERSION).contains(&version) {
        return Err(ProtocolError::UnsupportedVersion {
            version,
            min: MANIFEST_MIN_VERSION,
            max: MANIFEST_VERSION,
        });
    }
    let codec = Codec::from_code(r.u8()?);
    let container = Container::from_code(r.u8()?);
    let sample_rate = r.varint_u32("sample rate")?;
    let channels =
        u16::try_from(r.varint("channels")?).map_err(|_| ProtocolError::Overflow("channels"))?;
    let frames = r.varint("frames")?;
    let byte_len = r.varint("byte length")?;
    let chunk_size = ChunkSize::new(r.varint_u32("chunk size")?)?;
    let lead = r.varint_u32("first chunk length")?;
    // (A version-4 manifest with a gap of 0 re-encodes as version 3: not
    // canonical, refused.)
    let gap = if version >= 4 { r.varint_u32("second chunk length")? } else { 0 };
    let layout = ChunkLayout::with_gap(byte_len, chunk_size, lead, gap)?;
    // Check the page hashes fit before allocating for them.
    let n = pages_for(layout.count()) as usize;
    if r.remaining() < 32 * n {
        return Err(ProtocolError::Truncated);
    }
    let mut pages = Vec::with_capacity(n);
    for _ in 0..n {
        pages.push(r.array32()?);
    }
    let nh = r.len("header ranges", limits::MAX_HEADER_RANGES)?;
    let mut header_ranges = Vec::with_capacity(nh);
    for _ in 0..nh {
        let start = r.varint("header range")?;
        let len = r.varint("header range")?;
        let end = start.checked_add(len).ok_or(ProtocolError::Overflow("header range"))?;
        header_ranges.push(start..end);
    }
    let np = r.len("time index points", limits::MAX_TIME_POINTS)?;
    let mut time_index = Vec::with_capacity(np.min(r.remaining() / 2));
    let mut prev = TimePoint { byte_offset: 0, time_us: 0 };
    for _ in 0..np {
        let byte_offset = prev
            .byte_offset
            .checked_add(r.varint("time index")?)
            .ok_or(ProtocolError::Overflow("time index"))?;
        let time_us = prev
            .time_us
            .checked_add(r.varint("time index")?)
            .ok_or(ProtocolError::Overflow("time index"))?;
        prev = TimePoint { byte_offset, time_us };
        time_index.push(prev);
    }
    let tags = read_tags(&mut r)?;
    r.finish_ref()?;
    let media = MediaInfo {
        codec,
        container,
        sample_rate,
        channels,
        frames,
        header_ranges,
        time_index,
        tags,
    };
    Ok((media, layout, pages, version))
}
