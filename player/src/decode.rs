//! Decoding with symphonia into interleaved `f32`.
//!
//! [`Decoder`] wraps a format reader and an audio decoder for the default
//! audio track, with gapless trimming on, and reuses one sample buffer for
//! every packet (no allocation per packet once it has grown).

use std::time::Duration;

use chorus_protocol::Container;
use symphonia::core::checksum::Crc32;
use symphonia::core::codecs::audio::well_known::CODEC_ID_VORBIS;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions, Monitor};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;
use symphonia::core::units::{Time, TimeBase, Timestamp};

use crate::error::{Error, Result};
use crate::source::SourceError;

/// A file-name extension hint for symphonia's probe.
pub fn extension_hint(container: Container) -> Option<&'static str> {
    Some(match container {
        Container::Mpeg => "mp3",
        Container::Ogg => "ogg",
        Container::Flac => "flac",
        Container::Mp4 => "m4a",
        Container::Wav => "wav",
        Container::Aiff => "aiff",
        Container::Mkv => "mkv",
        Container::Adts => "aac",
        Container::Other(_) => return None,
    })
}

/// Demuxes and decodes one audio track.
pub struct Decoder {
    /// Always present; taken only while the reader is opened again.
    format: Option<Box<dyn FormatReader>>,
    /// The probe's hint, kept for opening the reader again.
    hint: Option<String>,
    /// The reader was opened again (at most once).
    reopened: bool,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    time_base: TimeBase,
    sample_rate: u32,
    channels: usize,
    /// Frames still to drop after an accurate seek.
    skip_frames: u64,
    buf: Vec<f32>,
    /// Seeking by the manifest's index (MPEG), when given.
    index: Option<SeekIndex>,
    /// The codec was made from the header packets before the stream was
    /// open ([`Decoder::open_with`]).
    codec_made_early: bool,
    /// An Ogg Vorbis stream's first audio page, read a packet at a time
    /// while the reader is not open yet ([`Decoder::open_by_packets`]).
    first_page: Option<FirstPage>,
    /// Packets of the track the reader gives that were decoded already
    /// (the first page's, read before the reader was open).
    skip_packets: u64,
    /// The track's first timestamp and length in frames (without the
    /// encoder's delay and padding), from the demuxer.
    start_ts: i64,
    num_frames: Option<u64>,
    /// Frames left to the track's end, when the reader cannot know (one
    /// opened mid-stream by an indexed seek knows no end padding).
    frames_left: Option<u64>,
}

/// Opens the track's bytes from an offset (a new source each time).
pub type OpenAt = Box<dyn Fn(u64) -> Box<dyn MediaSource> + Send>;

/// The index points a [`SeekIndex`] knows now.
pub type Points = Box<dyn Fn() -> Vec<(u64, u64)> + Send>;

/// An index of frame starts for seeking without reading what lies before
/// the target: `(byte offset, time in µs from the track's first timestamp)`
/// each, at frame starts (an MPEG stream's, from the manifest), and a way to
/// open the bytes from such an offset.
pub struct SeekIndex {
    /// The points known when a seek asks, rising (a manifest learns its
    /// index with the pages of its hash list).
    pub points: Points,
    /// Opens the track from a byte offset.
    pub open_at: OpenAt,
    /// The stream the points are frame starts of.
    pub format: IndexedFormat,
    /// Audio to decode before a target ([`preroll`]).
    pub preroll: Duration,
}

/// Streams whose frames a reader can start at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexedFormat {
    /// MPEG audio (MP3): any frame start begins a valid stream.
    Mpeg,
    /// FLAC: the stream's header (up to the first point, its first frame)
    /// followed by the frames from any frame start is a valid stream whose
    /// frames carry their own sample numbers.
    Flac,
    /// Ogg Vorbis: the header pages (up to the first point, the first
    /// audio page) followed by the pages from any page start; their
    /// granule positions give the times, and the reader scans to the
    /// target from there.
    Ogg,
}

/// Audio decoded before a seek target from an index point, so that the
/// frame at the target decodes whole. MPEG: a frame's data may begin up to
/// 511 bytes before its header (the bit reservoir), and the frame holding
/// those bytes may take its own from up to 511 before it; symphonia's seek
/// goes back to those frames if the reader saw them, so twice 511 bytes (at
/// the stream's average rate) and two frames. Vorbis: 250 ms (a packet
/// overlaps the one before it, and a page holds many). FLAC frames stand
/// alone: none.
pub fn preroll(manifest: &chorus_protocol::Manifest) -> Duration {
    use chorus_protocol::{Codec, Container};
    let media = manifest.media();
    let vorbis = Duration::from_millis(250);
    match media.container {
        Container::Mpeg => {
            let start = media.header_ranges.first().map_or(0, |h| h.start);
            let bytes = manifest.layout().byte_len().saturating_sub(start);
            mpeg_preroll(media.sample_rate, manifest.duration(), bytes).unwrap_or(vorbis)
        }
        Container::Ogg if media.codec == Codec::Vorbis => vorbis,
        _ => Duration::ZERO,
    }
}

/// Longest preroll: a manifest (a peer's word) could claim any duration
/// for few bytes.
const MAX_PREROLL: Duration = Duration::from_secs(1);

/// [`preroll`] for MPEG audio of `bytes` playing for `duration` at
/// `sample_rate`; `None` when those do not make a rate.
fn mpeg_preroll(sample_rate: u32, duration: Duration, bytes: u64) -> Option<Duration> {
    if sample_rate == 0 || duration.is_zero() || bytes == 0 {
        return None;
    }
    // Samples per frame: 1152 for MPEG-1 layer III, 576 below 32 kHz (MPEG-2
    // and 2.5).
    let frame = if sample_rate >= 32_000 { 1152.0 } else { 576.0 };
    let frames = 2.0 * frame / f64::from(sample_rate);
    let reservoir = 2.0 * 511.0 * duration.as_secs_f64() / bytes as f64;
    let preroll = Duration::try_from_secs_f64(frames + reservoir).unwrap_or(MAX_PREROLL);
    Some(preroll.min(MAX_PREROLL))
}

/// Where in the track a seek to `t` begins reading: the index point at
/// least the [`preroll`] before it for the indexed formats (what the fetch
/// should ask for first; [`Decoder::seek`] starts there), else `t`.
pub fn reads_from(manifest: &chorus_protocol::Manifest, t: Duration) -> Duration {
    use chorus_protocol::{Codec, Container};
    let media = manifest.media();
    let indexed = match media.container {
        Container::Mpeg | Container::Flac => true,
        Container::Ogg => media.codec == Codec::Vorbis,
        _ => false,
    };
    let before = t.saturating_sub(preroll(manifest));
    // Not the first point ([`Decoder::seek`] does not start there).
    let first = media.time_index.first().map(|p| p.byte_offset);
    let point = manifest.point_before(before).filter(|p| Some(p.byte_offset) != first);
    match point {
        Some(p) if indexed => Duration::from_micros(p.time_us),
        _ => t,
    }
}

/// Maps a symphonia error, recovering our source's own reason when the
/// data stopped coming.
fn map_err(e: SymError) -> Error {
    if let SymError::IoError(io) = &e {
        if let Some(src) = io.get_ref().and_then(|i| i.downcast_ref::<SourceError>()) {
            return Error::Source(src.to_string());
        }
    }
    Error::Decode(e)
}

/// The audio decoder for `params`, trimming gaps.
fn make_decoder(params: &AudioCodecParameters) -> Result<Box<dyn AudioDecoder>> {
    let mut opts = AudioDecoderOptions::default();
    opts.gapless = true;
    symphonia::default::get_codecs().make_audio_decoder(params, &opts).map_err(map_err)
}

/// A codec made from a stream's header packets before the stream is open
/// ([`vorbis_from_headers`], [`Decoder::open_with`]).
pub struct EarlyCodec {
    /// The header bytes it was made from, as symphonia's reader hands them
    /// to a codec (the identification and setup packets).
    extra_data: Box<[u8]>,
    decoder: Box<dyn AudioDecoder>,
    /// The logical stream's serial number (symphonia's track id for it).
    serial: u32,
    /// The identification header's sample rate and channels.
    rate: u32,
    channels: usize,
}

impl std::fmt::Debug for EarlyCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlyCodec").field("extra_data", &self.extra_data.len()).finish()
    }
}

/// Most bytes of header pages looked at for [`vorbis_from_headers`]; a
/// setup header is a few kilobytes.
pub const MAX_VORBIS_HEADERS: usize = 256 * 1024;

/// Makes the Vorbis codec of an Ogg stream from its first bytes, the pages
/// of its three header packets (`header`: the bytes before the first audio
/// page). Making it (the setup header's codebooks) takes a millisecond and
/// more, ten on a cold process; symphonia's reader makes it only once the
/// first audio page is whole (15 KB and more), so made from the header
/// pages it is ready while that page is on its way. `None` for anything
/// else (another codec, a header cut short, pages that do not parse): the
/// stream then opens as usual, as it does if its own headers differ.
pub fn vorbis_from_headers(header: &[u8]) -> Option<EarlyCodec> {
    let header = &header[..header.len().min(MAX_VORBIS_HEADERS)];
    let is = |p: &[u8], kind: u8| p.len() > 7 && p[0] == kind && &p[1..7] == b"vorbis";
    // The pages of a comment that holds cover art are left out of the
    // header ranges: then the setup header follows the identification's.
    let packets = ogg_first_packets(header, 3).or_else(|| ogg_first_packets(header, 2))?;
    let (ident, setup) = match packets.as_slice() {
        [ident, comment, setup] if is(comment, 3) => (ident, setup),
        [ident, setup] => (ident, setup),
        _ => return None,
    };
    if ident.len() != 30 || !is(ident, 1) || !is(setup, 5) {
        return None;
    }
    let rate = u32::from_le_bytes(ident.get(12..16)?.try_into().ok()?);
    let channels = usize::from(ident[11]);
    let serial = chorus_streamer::probe::ogg_page_header(header)?.serial;
    let extra_data: Box<[u8]> = [ident.as_slice(), setup.as_slice()].concat().into();
    let mut params = AudioCodecParameters::new();
    params.for_codec(CODEC_ID_VORBIS).with_sample_rate(rate).with_extra_data(extra_data.clone());
    let decoder = make_decoder(&params).ok()?;
    Some(EarlyCodec { extra_data, decoder, serial, rate, channels })
}

/// The first `n` packets of the logical stream whose page comes first in
/// `bytes` (Ogg pages: RFC 3533), or `None` if the pages end or break
/// before them. A page that goes on with a packet whose start is not in
/// `bytes` (the pages before it left out) has that packet's end dropped,
/// as symphonia's reader does. Page checksums are not checked: a codec
/// made from bytes that differ from the reader's (which checks them) is
/// not used.
fn ogg_first_packets(bytes: &[u8], n: usize) -> Option<Vec<Vec<u8>>> {
    let (mut at, mut serial) = (0usize, None);
    let (mut packets, mut packet) = (Vec::with_capacity(n), Vec::new());
    while packets.len() < n {
        let page = chorus_streamer::probe::ogg_page_header(bytes.get(at..)?)?;
        let lacing_at = at + chorus_streamer::probe::OGG_PAGE_HEADER_LEN;
        let lacing = bytes.get(lacing_at..lacing_at + page.segments)?;
        let mut body = lacing_at + page.segments;
        let same = *serial.get_or_insert(page.serial) == page.serial;
        // The end of a packet whose start is not here: dropped.
        let mut orphan = page.continued && packet.is_empty();
        for &len in lacing {
            let len = usize::from(len);
            if orphan {
                orphan = len == 255;
            } else if same && packets.len() < n {
                packet.extend_from_slice(bytes.get(body..body + len)?);
                if len < 255 {
                    packets.push(std::mem::take(&mut packet));
                }
            }
            body += len;
        }
        at = body;
    }
    Some(packets)
}

impl Decoder {
    /// Opens `source`, probing with the container's extension as a hint.
    pub fn open(source: Box<dyn MediaSource>, hint_ext: Option<&str>) -> Result<Self> {
        Self::open_with(source, hint_ext, None)
    }

    /// [`Decoder::open`], taking the codec `early` made from the stream's
    /// header packets ([`vorbis_from_headers`]) if the stream's own are
    /// the same bytes.
    pub fn open_with(
        source: Box<dyn MediaSource>,
        hint_ext: Option<&str>,
        early: Option<EarlyCodec>,
    ) -> Result<Self> {
        let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
        let mut hint = Hint::new();
        if let Some(ext) = hint_ext {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
            .map_err(map_err)?;
        let track =
            format.default_track(TrackType::Audio).ok_or(Error::NotPlayable("no audio track"))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or(Error::NotPlayable("no audio parameters"))?;
        let sample_rate = params.sample_rate.ok_or(Error::NotPlayable("unknown sample rate"))?;
        let channels = params.channels.as_ref().map_or(0, |c| c.count());
        if channels == 0 {
            return Err(Error::NotPlayable("unknown channel count"));
        }
        let time_base = track
            .time_base
            .or_else(|| TimeBase::try_from_recip(sample_rate))
            .ok_or(Error::NotPlayable("no time base"))?;
        let track_id = track.id;
        let (start_ts, num_frames) = (track.start_ts.get(), track.num_frames);
        let early = early.filter(|e| {
            params.codec == CODEC_ID_VORBIS && params.extra_data.as_deref() == Some(&e.extra_data)
        });
        let codec_made_early = early.is_some();
        let decoder = match early {
            Some(e) => e.decoder,
            None => make_decoder(params)?,
        };
        Ok(Self {
            codec_made_early,
            format: Some(format),
            hint: hint_ext.map(str::to_owned),
            reopened: false,
            decoder,
            track_id,
            time_base,
            sample_rate,
            channels,
            skip_frames: 0,
            buf: Vec::new(),
            index: None,
            first_page: None,
            skip_packets: 0,
            start_ts,
            num_frames,
            frames_left: None,
        })
    }

    /// Opens an Ogg Vorbis stream whose codec `early` was made from its
    /// header pages, reading its first audio page (at `first_audio`, the
    /// manifest's first index point) a packet at a time: each decodes as
    /// soon as its bytes are here. symphonia's reader takes a page whole
    /// before it gives a packet, and the first (15 KB in the sample, a
    /// second of audio, reaching into the second chunk) then held the
    /// first note until all of it came (6 ms at 20 Mbit/s). The reader is
    /// opened once that page is read, from the stream's start, and the
    /// packets already decoded are passed over; the codec goes on from
    /// the last of them. A page that does not fit (another stream's, the
    /// first or last of its stream, one whose last packet goes on to the
    /// next page) opens the usual way ([`Decoder::open_with`]).
    pub fn open_by_packets(
        source: Box<dyn MediaSource>,
        early: EarlyCodec,
        first_audio: u64,
    ) -> Result<Self> {
        let mut page = match FirstPage::open(source, &early, first_audio) {
            Ok(page) => page,
            Err(mut source) => {
                std::io::Seek::seek(&mut source, std::io::SeekFrom::Start(0))
                    .map_err(|e| map_err(SymError::IoError(e)))?;
                return Self::open_with(source, Some("ogg"), Some(early));
            }
        };
        page.extra_data = early.extra_data;
        let time_base =
            TimeBase::try_from_recip(early.rate).ok_or(Error::NotPlayable("no time base"))?;
        if early.channels == 0 {
            return Err(Error::NotPlayable("unknown channel count"));
        }
        Ok(Self {
            codec_made_early: true,
            format: None,
            hint: Some("ogg".to_owned()),
            reopened: false,
            track_id: early.serial,
            time_base,
            sample_rate: early.rate,
            channels: early.channels,
            skip_frames: 0,
            buf: Vec::new(),
            index: None,
            first_page: Some(page),
            skip_packets: 0,
            // The reader's, once it is open (the first page is read from
            // the start; only an MPEG index seek uses it).
            start_ts: 0,
            num_frames: None,
            frames_left: None,
            decoder: early.decoder,
        })
    }

    /// Opens the reader after the first page was read by packets
    /// ([`Self::open_by_packets`]), from the stream's start, its length
    /// hidden while it opens (as the player's source hides it: the reader
    /// would otherwise read the stream's end first). The packets decoded
    /// already are passed over, unless the page's checksum failed: the
    /// reader drops such a page, and gives what follows it.
    fn open_after_first_page(&mut self) -> Result<()> {
        let Some(page) = self.first_page.take() else { return Ok(()) };
        let intact = page.crc.crc() == page.page_crc;
        if !intact {
            tracing::debug!("the first audio page fails its checksum; the reader drops it");
        }
        let mut source = page.source;
        std::io::Seek::seek(&mut source, std::io::SeekFrom::Start(0))
            .map_err(|e| map_err(SymError::IoError(e)))?;
        let shown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hidden = LengthAfterOpen { inner: source, shown: shown.clone() };
        let mss = MediaSourceStream::new(Box::new(hidden), MediaSourceStreamOptions::default());
        let mut hint = Hint::new();
        hint.with_extension("ogg");
        let format = symphonia::default::get_probe()
            .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
            .map_err(map_err)?;
        shown.store(true, std::sync::atomic::Ordering::Relaxed);
        let track =
            format.default_track(TrackType::Audio).ok_or(Error::NotPlayable("no audio track"))?;
        let same = track.id == self.track_id
            && track.codec_params.as_ref().and_then(|p| p.audio()).is_some_and(|p| {
                p.codec == CODEC_ID_VORBIS && p.extra_data.as_deref() == Some(&page.extra_data)
            });
        if !same {
            return Err(Error::NotPlayable("the stream's headers differ from its first page's"));
        }
        self.time_base = track.time_base.unwrap_or(self.time_base);
        (self.start_ts, self.num_frames) = (track.start_ts.get(), track.num_frames);
        self.format = Some(format);
        self.skip_packets = if intact { page.audio_packets } else { 0 };
        Ok(())
    }

    /// Seeks by `index` from now on (an MPEG or FLAC stream): a seek opens
    /// the bytes again at the last frame start before the target (a little
    /// before, for MPEG), so nothing earlier is read (symphonia's accurate
    /// MP3 seek otherwise parses every frame from the start, and its FLAC
    /// seek bisects the file: a round trip per probe when streaming).
    pub fn with_index(mut self, index: SeekIndex) -> Self {
        self.index = Some(index);
        self
    }

    /// Opens a local file (for reference decodes and tests).
    pub fn open_file(path: &std::path::Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).map_err(|e| Error::Read { path: path.to_owned(), err: e })?;
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_owned);
        Self::open(Box::new(file), ext.as_deref())
    }

    /// True if the codec was made before the stream was open, from its
    /// header packets ([`Decoder::open_with`]).
    pub fn codec_made_early(&self) -> bool {
        self.codec_made_early
    }

    /// Sample rate of the decoded audio.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channels of the decoded audio.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Seeks so that the next samples start at `t` (sample-accurate: frames
    /// before `t` in the first packet are dropped). Returns the position
    /// reached.
    pub fn seek(&mut self, t: Duration) -> Result<Duration> {
        if self.index.is_some() {
            match self.seek_indexed(t) {
                Ok(Some(at)) => return Ok(at),
                Ok(None) => {}
                Err(e) => tracing::debug!("indexed seek failed ({e}); seeking the long way"),
            }
        }
        self.open_after_first_page()?;
        self.skip_packets = 0;
        self.frames_left = None;
        let time =
            Time::try_from_secs_f64(t.as_secs_f64()).ok_or(Error::NotPlayable("seek time"))?;
        let track_id = self.track_id;
        let to = || SeekTo::Time { time, track_id: Some(track_id) };
        let seeked = match self.reader()?.seek(SeekMode::Accurate, to()) {
            // A reader opened while the source hid its length (so it did
            // not scan the file's end before the first note; Ogg does) may
            // need what that scan finds to seek: open it again, now seeing
            // the length, and retry once.
            Err(e) if !self.reopened && !matches!(e, SymError::IoError(_)) => {
                self.reopen()?;
                self.reader()?.seek(SeekMode::Accurate, to())
            }
            r => r,
        }
        .map_err(map_err)?;
        self.decoder.reset();
        let required = self.ts_to_frames(seeked.required_ts.get());
        self.skip_frames = required.saturating_sub(self.ts_to_frames(seeked.actual_ts.get()));
        Ok(Duration::from_secs_f64(required as f64 / f64::from(self.sample_rate)))
    }

    /// A seek from the index point at least the [`preroll`] before `t`: a new
    /// reader over the bytes from that frame on, seeked accurately within
    /// them. `None` when no point serves (too near the start, or the bytes
    /// there are not two frame headers in a row: an index that is not
    /// frame-exact).
    fn seek_indexed(&mut self, t: Duration) -> Result<Option<Duration>> {
        let Some(index) = &self.index else { return Ok(None) };
        let rate = u64::from(self.sample_rate);
        let required = (t.as_secs_f64() * rate as f64) as u64;
        let preroll = index.preroll;
        let before = required.saturating_sub((preroll.as_secs_f64() * rate as f64) as u64);
        // A point's timestamp in the reader's frames (its time was rounded
        // down to whole µs from an exact frame count).
        let ts = |us: u64| (u128::from(us) * u128::from(rate)).div_ceil(1_000_000) as u64;
        // Not the first point: its time is clamped at the start (the
        // encoder's delay); a seek that near the start reads little anyway.
        let points = (index.points)();
        let Some(&(offset, us)) =
            points.iter().skip(1).take_while(|(_, us)| ts(*us) <= before).last()
        else {
            return Ok(None);
        };
        let point_ts = i64::try_from(ts(us)).unwrap_or(i64::MAX).saturating_add(self.start_ts);
        let mut source = (index.open_at)(offset);
        let (source, ext): (Box<dyn MediaSource>, &str) = match index.format {
            IndexedFormat::Mpeg => {
                if !two_frames_at_start(&mut source) {
                    return Ok(None);
                }
                // Its length hidden: the reader would otherwise estimate
                // the track's end from the first frame's bitrate (wrong
                // for VBR) and cut the audio there; the end is known here
                // ([`Self::frames_left`]).
                (Box::new(HiddenLength(source)), "mp3")
            }
            IndexedFormat::Flac | IndexedFormat::Ogg => {
                let flac = index.format == IndexedFormat::Flac;
                let head = points.first().map_or(0, |p| p.0);
                // A FLAC frame's sync code, or an Ogg page's capture pattern.
                let at_point = starts_with(&mut source, |h| {
                    if flac { h[0] == 0xFF && (h[1] & 0xFE) == 0xF8 } else { &h == b"OggS" }
                });
                if !at_point || head == 0 || head > offset {
                    return Ok(None);
                }
                // Ogg not seekable: the reader then finds the target by
                // reading on from the splice, not by bisecting a file it
                // cannot see the end of (FLAC is not asked to seek).
                let spliced = Spliced::new((index.open_at)(0), head, source, flac);
                (Box::new(spliced), if flac { "flac" } else { "ogg" })
            }
        };
        let format_kind = index.format;
        let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
        let mut hint = Hint::new();
        hint.with_extension(ext);
        let mut format = symphonia::default::get_probe()
            .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
            .map_err(map_err)?;
        let Some(track) = format.default_track(TrackType::Audio) else { return Ok(None) };
        let track_id = track.id;
        self.skip_frames = match format_kind {
            IndexedFormat::Mpeg => {
                let within = (required as i64).saturating_sub(point_ts).max(0) as u64;
                let seeked = format
                    .seek(
                        SeekMode::Accurate,
                        SeekTo::Timestamp { ts: Timestamp::from(within as i64), track_id },
                    )
                    .map_err(map_err)?;
                self.ts_to_frames(seeked.required_ts.get())
                    .saturating_sub(self.ts_to_frames(seeked.actual_ts.get()))
            }
            // The first frame read is the point's: decode from it and drop
            // what comes before the target.
            IndexedFormat::Flac => required.saturating_sub(ts(us)),
            // Pages carry absolute times: the reader scans to the target as
            // it does after its own coarse seek.
            IndexedFormat::Ogg => {
                let time = Time::try_from_secs_f64(t.as_secs_f64())
                    .ok_or(Error::NotPlayable("seek time"))?;
                let seeked = format
                    .seek(SeekMode::Accurate, SeekTo::Time { time, track_id: Some(track_id) })
                    .map_err(map_err)?;
                self.ts_to_frames(seeked.required_ts.get())
                    .saturating_sub(self.ts_to_frames(seeked.actual_ts.get()))
            }
        };
        self.format = Some(format);
        (self.first_page, self.skip_packets) = (None, 0);
        self.track_id = track_id;
        self.decoder.reset();
        self.frames_left = self.num_frames.map(|n| n.saturating_sub(required));
        Ok(Some(Duration::from_secs_f64(required as f64 / rate as f64)))
    }

    fn reader(&mut self) -> Result<&mut Box<dyn FormatReader>> {
        self.format.as_mut().ok_or(Error::NotPlayable("the demuxer could not be reopened"))
    }

    /// Opens the format reader again over the same source, from its start.
    fn reopen(&mut self) -> Result<()> {
        self.reopened = true;
        let Some(format) = self.format.take() else { return Ok(()) };
        let mut mss = format.into_inner();
        std::io::Seek::seek(&mut mss, std::io::SeekFrom::Start(0))
            .map_err(|e| map_err(SymError::IoError(e)))?;
        let mut hint = Hint::new();
        if let Some(ext) = &self.hint {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
            .map_err(map_err)?;
        self.format = Some(format);
        Ok(())
    }

    fn ts_to_frames(&self, ts: i64) -> u64 {
        let ticks = u128::try_from(ts).unwrap_or(0);
        let frames = ticks * u128::from(self.sample_rate) * u128::from(self.time_base.numer.get())
            / u128::from(self.time_base.denom.get());
        u64::try_from(frames).unwrap_or(u64::MAX)
    }

    /// The next block of interleaved samples, or `None` at the end. Packets
    /// that fail to decode are skipped (as a player should); a source that
    /// stops delivering is an error.
    pub fn next_block(&mut self) -> Result<Option<&[f32]>> {
        loop {
            if self.frames_left == Some(0) {
                return Ok(None);
            }
            if let Some(page) = self.first_page.as_mut() {
                match page.next_packet().map_err(|e| map_err(SymError::IoError(e)))? {
                    Some(data) => {
                        // No trimming: the codec silences the first packet
                        // itself, and the reader trims only a stream's
                        // first page that is also its last.
                        let packet = Packet::new(
                            self.track_id,
                            Timestamp::ZERO,
                            symphonia::core::units::Duration::ZERO,
                            data,
                        );
                        if let Some(r) = self.decode(&packet)? {
                            return Ok(Some(&self.buf[r]));
                        }
                        continue;
                    }
                    None => self.open_after_first_page()?,
                }
            }
            let packet = match self.reader()?.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                Err(SymError::ResetRequired) => {
                    self.decoder.reset();
                    continue;
                }
                // The end of a stream whose header did not know its length
                // (a WAV written to a pipe says "to the end").
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None);
                }
                Err(e) => return Err(map_err(e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            if self.skip_packets > 0 {
                self.skip_packets -= 1;
                continue;
            }
            if let Some(r) = self.decode(&packet)? {
                return Ok(Some(&self.buf[r]));
            }
        }
    }

    /// Decodes `packet` into the sample buffer: the part of it to play
    /// (after a seek's and the end's trims), or `None` if it gives none or
    /// does not decode (skipped, as a player should).
    fn decode(&mut self, packet: &Packet) -> Result<Option<std::ops::Range<usize>>> {
        let decoded = match self.decoder.decode(packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(e)) => {
                tracing::debug!("skipping a packet that does not decode: {e}");
                return Ok(None);
            }
            Err(e) => return Err(map_err(e)),
        };
        decoded.copy_to_vec_interleaved(&mut self.buf);
        let mut start = 0;
        if self.skip_frames > 0 {
            let frames = (self.buf.len() / self.channels) as u64;
            let skip = self.skip_frames.min(frames);
            self.skip_frames -= skip;
            start = skip as usize * self.channels;
        }
        let mut end = self.buf.len();
        if let Some(left) = self.frames_left.as_mut() {
            let frames = ((end - start) / self.channels) as u64;
            let keep = frames.min(*left);
            *left -= keep;
            end = start + keep as usize * self.channels;
        }
        Ok((start < end).then_some(start..end))
    }
}

/// Decodes a whole local file into interleaved samples (for tests and
/// reference comparisons), from `start` on.
pub fn decode_file(
    path: &std::path::Path,
    start: Option<Duration>,
) -> Result<(u32, usize, Vec<f32>)> {
    let mut d = Decoder::open_file(path)?;
    if let Some(t) = start {
        d.seek(t)?;
    }
    let mut out = Vec::new();
    while let Some(block) = d.next_block()? {
        out.extend_from_slice(block);
    }
    Ok((d.sample_rate(), d.channels(), out))
}

/// True if `source` starts with two MPEG audio frame headers in a row (the
/// second where the first's length says); rewinds it.
fn two_frames_at_start(source: &mut Box<dyn MediaSource>) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let header = |at: u64, s: &mut Box<dyn MediaSource>| -> Option<(u64, u32)> {
        let mut h = [0u8; 4];
        s.seek(SeekFrom::Start(at)).ok()?;
        s.read_exact(&mut h).ok()?;
        chorus_streamer::probe::mpeg_frame(h)
    };
    let ok = header(0, source)
        .and_then(|(len, rate)| header(len, source).filter(|(_, r)| *r == rate))
        .is_some();
    ok && source.seek(SeekFrom::Start(0)).is_ok()
}

/// True if the first 4 bytes pass `test` (the source is then rewound).
fn starts_with(source: &mut Box<dyn MediaSource>, test: impl Fn([u8; 4]) -> bool) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut h = [0u8; 4];
    let ok = source.read_exact(&mut h).is_ok() && test(h);
    ok && source.seek(SeekFrom::Start(0)).is_ok()
}

/// A stream's first `head_len` bytes, then another source's bytes (frames
/// from a later frame start): what a reader sees as one stream, without a
/// length.
struct Spliced {
    head: Box<dyn MediaSource>,
    head_len: u64,
    tail: Box<dyn MediaSource>,
    pos: u64,
    seekable: bool,
    /// Where each inner source stands (to seek it only when it must).
    head_at: Option<u64>,
    tail_at: Option<u64>,
}

impl Spliced {
    fn new(
        head: Box<dyn MediaSource>,
        head_len: u64,
        tail: Box<dyn MediaSource>,
        seekable: bool,
    ) -> Self {
        Self { head, head_len, tail, pos: 0, seekable, head_at: None, tail_at: Some(0) }
    }
}

impl std::io::Read for Spliced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        let n = if self.pos < self.head_len {
            if self.head_at != Some(self.pos) {
                self.head.seek(SeekFrom::Start(self.pos))?;
            }
            let room = usize::try_from(self.head_len - self.pos).unwrap_or(usize::MAX);
            let take = buf.len().min(room);
            let n = self.head.read(&mut buf[..take])?;
            self.head_at = Some(self.pos + n as u64);
            n
        } else {
            let at = self.pos - self.head_len;
            if self.tail_at != Some(at) {
                self.tail.seek(SeekFrom::Start(at))?;
            }
            let n = self.tail.read(buf)?;
            self.tail_at = Some(at + n as u64);
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Spliced {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            std::io::SeekFrom::End(_) => None,
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::Unsupported, "no end to seek from")
        })?;
        Ok(self.pos)
    }
}

impl MediaSource for Spliced {
    fn is_seekable(&self) -> bool {
        self.seekable
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}

/// An Ogg Vorbis stream's first audio page, read a packet at a time
/// ([`Decoder::open_by_packets`]).
struct FirstPage {
    /// The track's bytes, at the next packet.
    source: Box<dyn MediaSource>,
    /// The lengths of the packets still to read, the next last.
    lengths: Vec<usize>,
    /// Audio packets read: the reader's first packets, once it is open.
    audio_packets: u64,
    /// The page's checksum over what was read, and the one it carries.
    crc: Crc32,
    page_crc: u32,
    /// The header packets the codec was made from (the reader's must be
    /// the same).
    extra_data: Box<[u8]>,
}

impl FirstPage {
    /// Reads the header of the page at `at`: one of `early`'s stream that
    /// is neither its first nor its last (symphonia trims those by their
    /// granule positions) nor goes on with a packet from the page before,
    /// whose last packet ends on it. Anything else gives the source back.
    fn open(
        mut source: Box<dyn MediaSource>,
        early: &EarlyCodec,
        at: u64,
    ) -> std::result::Result<FirstPage, Box<dyn MediaSource>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut h = [0u8; chorus_streamer::probe::OGG_PAGE_HEADER_LEN];
        if source.seek(SeekFrom::Start(at)).is_err() || source.read_exact(&mut h).is_err() {
            return Err(source);
        }
        let fits = chorus_streamer::probe::ogg_page_header(&h).filter(|p| {
            // Flags: a continued packet (1), the stream's first page (2),
            // its last (4).
            h[5] == 0 && p.serial == early.serial && p.granule >= 0 && p.segments > 0
        });
        let Some(header) = fits else { return Err(source) };
        let mut lacing = vec![0u8; header.segments];
        if source.read_exact(&mut lacing).is_err() || lacing.last() == Some(&255) {
            return Err(source);
        }
        let page_crc = u32::from_le_bytes([h[22], h[23], h[24], h[25]]);
        // The checksum is over the page with its own field zeroed.
        h[22..26].fill(0);
        let mut crc = Crc32::new(0);
        crc.process_buf_bytes(&h);
        crc.process_buf_bytes(&lacing);
        let mut lengths = Vec::new();
        let mut len = 0;
        for &l in &lacing {
            len += usize::from(l);
            if l < 255 {
                lengths.push(std::mem::take(&mut len));
            }
        }
        lengths.reverse();
        let extra_data = Box::default();
        Ok(FirstPage { source, lengths, audio_packets: 0, crc, page_crc, extra_data })
    }

    /// The next audio packet of the page, read as soon as its bytes are
    /// here; `None` at the page's end. Only what symphonia's Vorbis mapping
    /// gives as audio counts (a packet of even type; not an empty one).
    fn next_packet(&mut self) -> std::io::Result<Option<Box<[u8]>>> {
        use std::io::Read;
        while let Some(len) = self.lengths.pop() {
            let mut data = vec![0u8; len];
            self.source.read_exact(&mut data)?;
            self.crc.process_buf_bytes(&data);
            if data.first().is_some_and(|b| b & 1 == 0) {
                self.audio_packets += 1;
                return Ok(Some(data.into_boxed_slice()));
            }
        }
        Ok(None)
    }
}

/// A source whose length is hidden until `shown` (while a reader opens).
struct LengthAfterOpen {
    inner: Box<dyn MediaSource>,
    shown: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Read for LengthAfterOpen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl std::io::Seek for LengthAfterOpen {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

impl MediaSource for LengthAfterOpen {
    fn is_seekable(&self) -> bool {
        self.inner.is_seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        let shown = self.shown.load(std::sync::atomic::Ordering::Relaxed);
        if shown { self.inner.byte_len() } else { None }
    }
}

/// A source that does not tell its length.
struct HiddenLength(Box<dyn MediaSource>);

impl std::io::Read for HiddenLength {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Seek for HiddenLength {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(to)
    }
}

impl MediaSource for HiddenLength {
    fn is_seekable(&self) -> bool {
        self.0.is_seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ogg page of `serial` carrying `segments` (lacing values) of `body`.
    fn page(serial: u32, lacing: &[u8], body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS\0\0".to_vec();
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        p.push(lacing.len() as u8);
        p.extend_from_slice(lacing);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn ogg_packets_are_read_across_pages_for_the_first_stream_only() {
        let (a, b, c) = (vec![1u8; 10], vec![2u8; 300], vec![3u8; 5]);
        let mut bytes = page(7, &[10, 255], &[&a[..], &b[..255]].concat());
        // Another logical stream's page in between is skipped.
        bytes.extend(page(9, &[4], &[9; 4]));
        bytes.extend(page(7, &[45, 5], &[&b[255..], &c[..]].concat()));
        let packets = ogg_first_packets(&bytes, 3).unwrap();
        assert_eq!(packets, [a.clone(), b.clone(), c.clone()]);
        assert_eq!(ogg_first_packets(&bytes, 2).unwrap(), [a.clone(), b]);
        // Cut short, or not Ogg: none (and no panic).
        for cut in [0, 5, 27, 30, bytes.len() - 1] {
            assert_eq!(ogg_first_packets(&bytes[..cut], 3), None, "cut at {cut}");
        }
        assert_eq!(ogg_first_packets(b"fLaC and more bytes than a page header", 1), None);
        // A page going on with a packet whose start is not here (the pages
        // before it left out): that packet's end is dropped.
        let mut cut = page(7, &[10], &a);
        let mut orphan = page(7, &[255, 20, 5], &[&[0xEE; 275][..], &c[..]].concat());
        orphan[5] |= 0x01;
        cut.extend(orphan);
        assert_eq!(ogg_first_packets(&cut, 2).unwrap(), [a, c]);
        // Not Vorbis headers: no codec.
        assert!(vorbis_from_headers(&bytes).is_none());
    }

    #[test]
    fn the_mpeg_preroll_is_two_frames_and_twice_the_reservoir_and_bounded() {
        // 320 kb/s at 44.1 kHz: 2 × 26.1 ms frames + 1022 bytes at 40 kB/s.
        let four_minutes = Duration::from_secs(240);
        let p = mpeg_preroll(44_100, four_minutes, 40_000 * 240).unwrap();
        assert!((p.as_secs_f64() - (2.0 * 1152.0 / 44_100.0 + 1022.0 / 40_000.0)).abs() < 1e-6);
        // A manifest's claims (a peer's word) cannot make it a panic or an hour.
        assert_eq!(mpeg_preroll(44_100, Duration::MAX, 1), Some(MAX_PREROLL));
        assert_eq!(mpeg_preroll(1, four_minutes, u64::MAX), Some(MAX_PREROLL));
        assert_eq!(mpeg_preroll(0, four_minutes, 1), None);
        assert_eq!(mpeg_preroll(44_100, Duration::ZERO, 1), None);
        assert_eq!(mpeg_preroll(44_100, four_minutes, 0), None);
    }
}
