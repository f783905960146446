//! Reading a file's media facts with symphonia: codec, rate, channels,
//! length, tags, and the byte ranges the demuxer reads and when.
//!
//! The time index is *measured*, not guessed: the file is demuxed (not
//! decoded) through a [`MediaSource`] that logs every read. Bytes read while
//! probing and opening the container are headers, due at time zero (for an
//! MP4 with its `moov` atom last, that is the end of the file). Bytes read
//! while fetching the packet with timestamp `t` are due at `t`. A player that
//! streams the file through symphonia reads in the same pattern, so each
//! chunk's deadline is the moment the decoder will actually ask for it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chorus_protocol::{Codec, Container, MediaInfo, Tags, TimePoint};
use symphonia::core::codecs::audio::well_known as codec_ids;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::well_known as format_ids;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::{MetadataOptions, MetadataRevision, StandardTag};
use symphonia::core::units::TimeBase;

use crate::error::{Error, Result};

/// How far apart (in bytes) two time index points must be at least; keeps
/// the index to a few points per chunk for any file.
const MIN_POINT_GAP: u64 = 4096;

/// The most the indexer's source returns per read once the probe is done:
/// symphonia then fetches a kilobyte at a time, so the bytes each packet
/// made it read locate the packet within a kilobyte (for containers the
/// indexer has no frame-exact index of: WAV, MP4).
const READ_GRAIN: usize = 1024;

/// A file's media facts, ready to go into a manifest.
#[derive(Debug, Clone)]
pub struct Probed {
    /// What the manifest needs.
    pub media: MediaInfo,
    /// Bytes right before the first audio that a player never needs (a
    /// FLAC's padding), when they and what comes before them each fit in
    /// a [`POINT_BLOCK`]: a library cuts on each side of them
    /// ([`chorus_protocol::ChunkLayout::with_gap`]), and the index's
    /// blocks count from their end.
    pub gap: Option<Range<u64>>,
}

#[derive(Default)]
struct ReadLog {
    reads: Vec<Range<u64>>,
}

/// A file that logs the ranges read from it. Its length is hidden while
/// the probe opens it, as the player's `ChunkSource` hides it while its
/// decoder opens: symphonia's probe then skips its scan of the file's end
/// for trailing tags, and readers their scans of the end for a duration,
/// so the end is not a header range a listener must fetch before the first
/// note; the tags are read apart ([`trailing_tags`]) and the duration is
/// counted from the packets, into the manifest.
struct LoggingSource {
    file: File,
    /// Where the stream the reader sees starts in the file (after a
    /// leading ID3v2 tag, see [`mpeg_audio_start`]); positions are the
    /// stream's, reads are logged in the file's offsets.
    base: u64,
    pos: u64,
    len: u64,
    log: Arc<Mutex<ReadLog>>,
    len_shown: Arc<std::sync::atomic::AtomicBool>,
    /// Reads of a kilobyte at most ([`READ_GRAIN`]).
    fine: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes the demuxer skips but symphonia reads anyway: see [`skipped_fill`].
    skipped: Option<Range<u64>>,
}

/// The bytes symphonia reads after a forward skip, not for the demuxer:
/// `MediaSourceStream::ignore_bytes` skips a large range (an MP4's `mdat`,
/// on its way to a `moov` at the end) by seeking to its ring buffer's
/// length short of the end and reading the rest, so that the skipped bytes
/// stay rewindable. A forward relative seek comes from nowhere else (no
/// symphonia 0.6 reader seeks forward relatively), so after one landing at
/// `at`, the next ring's length of bytes is that fill. The indexer does not
/// count them as headers and the player's source fills them with zeros
/// unless it has them: an MP4 with its index at the end starts without 64
/// KiB of audio data it does not need first.
pub fn skipped_fill(at: u64) -> Range<u64> {
    let ring = MediaSourceStreamOptions::default().buffer_len as u64;
    at..at.saturating_add(ring)
}

impl Read for LoggingSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Once the probe is done, for a container without a frame-exact
        // index, short reads: each read is then what one packet needed,
        // within a kilobyte (the time index's grain).
        let grain = if self.fine.load(std::sync::atomic::Ordering::Relaxed) {
            READ_GRAIN
        } else {
            buf.len()
        };
        let len = grain.min(buf.len());
        let n = self.file.read(&mut buf[..len])?;
        if n > 0 {
            // What symphonia reads only to keep skipped bytes rewindable
            // is not the demuxer's.
            let end = self.pos + n as u64;
            let from = match &self.skipped {
                Some(s) if s.contains(&self.pos) => s.end.min(end),
                _ => self.pos,
            };
            if from < end {
                if let Ok(mut log) = self.log.lock() {
                    log.reads.push(self.base + from..self.base + end);
                }
            }
            self.pos = end;
        }
        Ok(n)
    }
}

impl Seek for LoggingSource {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start")
        })?;
        self.file.seek(SeekFrom::Start(self.base + target))?;
        self.skipped = match to {
            SeekFrom::Current(d) if d > 0 => Some(skipped_fill(target)),
            _ => None,
        };
        self.pos = target;
        Ok(self.pos)
    }
}

impl MediaSource for LoggingSource {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        self.len_shown.load(std::sync::atomic::Ordering::Relaxed).then_some(self.len)
    }
}

/// Where an MPEG audio stream starts after a leading ID3v2 tag (0 if the
/// file has none, or if an MPEG frame does not follow it). Players read
/// MPEG audio from there (`Manifest` header ranges start there), so a tag
/// holding cover art is not fetched before the first note: its text is in
/// the manifest (`trailing_tags` reads the whole file's tags).
pub fn mpeg_audio_start(file: &mut File, len: u64) -> u64 {
    let mut head = [0u8; 10];
    if file.seek(SeekFrom::Start(0)).is_err() || file.read_exact(&mut head).is_err() {
        return 0;
    }
    let Some(size) = id3v2_len(&head) else { return 0 };
    let mut sync = [0u8; 2];
    let after = file.seek(SeekFrom::Start(size)).is_ok() && file.read_exact(&mut sync).is_ok();
    // An MPEG audio frame header starts with 11 set bits.
    if size < len && after && sync[0] == 0xFF && sync[1] & 0xE0 == 0xE0 { size } else { 0 }
}

/// The whole length of an ID3v2 tag from its 10-byte header.
fn id3v2_len(h: &[u8; 10]) -> Option<u64> {
    if &h[..3] != b"ID3" || h[6..10].iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let size = h[6..10].iter().fold(0u64, |a, b| (a << 7) | u64::from(*b));
    let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + size + footer)
}

/// Tags at the file's end (ID3v1, APEv2) that the streaming probe skips:
/// read with a plain probe, filling only what the leading tags left empty.
fn trailing_tags(path: &Path, tags: &mut Tags) {
    let Ok(file) = File::open(path) else { return };
    let mss = MediaSourceStream::new(Box::new(file), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    if let Ok(mut format) = symphonia::default::get_probe().probe(
        &hint,
        mss,
        FormatOptions::default(),
        MetadataOptions::default(),
    ) {
        collect_all_tags(format.as_mut(), tags);
    }
}

fn not_audio(path: &Path, reason: impl Into<String>) -> Error {
    Error::NotAudio { path: path.to_owned(), reason: reason.into() }
}

fn take_reads(log: &Arc<Mutex<ReadLog>>) -> Vec<Range<u64>> {
    log.lock().map(|mut l| std::mem::take(&mut l.reads)).unwrap_or_default()
}

/// Sorts and merges ranges.
fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Probes and demuxes `path`. `len` is the file's size as stat'ed by the
/// caller.
pub fn probe_file(path: &Path, len: u64) -> Result<Probed> {
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    if len == 0 {
        return Err(not_audio(path, "empty file"));
    }
    let log = Arc::new(Mutex::new(ReadLog::default()));
    let len_shown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fine = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut file = file;
    let base = mpeg_audio_start(&mut file, len);
    file.seek(SeekFrom::Start(base)).map_err(|e| Error::io("reading", path, e))?;
    let source = LoggingSource {
        file,
        base,
        pos: 0,
        len: len - base,
        log: log.clone(),
        len_shown: len_shown.clone(),
        fine: fine.clone(),
        skipped: None,
    };
    let mss = MediaSourceStream::new(Box::new(source), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| not_audio(path, format!("not a supported audio file ({e})")))?;
    let header_reads = take_reads(&log);
    len_shown.store(true, std::sync::atomic::Ordering::Relaxed);

    let track =
        format.default_track(TrackType::Audio).ok_or_else(|| not_audio(path, "no audio track"))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| not_audio(path, "no audio codec parameters"))?
        .clone();
    let sample_rate = params.sample_rate.ok_or_else(|| not_audio(path, "unknown sample rate"))?;
    let channels = params
        .channels
        .as_ref()
        .map(|c| c.count())
        .filter(|&c| c > 0)
        .ok_or_else(|| not_audio(path, "unknown channel count"))?;
    let declared_frames = track.num_frames;
    let start_ts = track.start_ts.get();
    let time_base = track
        .time_base
        .or_else(|| TimeBase::try_from_recip(sample_rate))
        .ok_or_else(|| not_audio(path, "no time base"))?;
    let codec = codec_of(params.codec);
    let container = container_of(format.format_info().format);
    let mut tags = Tags::default();
    collect_all_tags(format.as_mut(), &mut tags);
    if container == Container::Wav {
        // symphonia 0.6 reads a WAVE file's INFO list and then drops it
        // (its reader keeps only external metadata): read it here.
        if let Ok(mut f) = File::open(path) {
            riff_info_tags(&mut f, len, &mut tags);
        }
    }
    // MPEG, FLAC and Ogg Vorbis get a frame-exact index below; the others
    // take their points from the reads, at a kilobyte's grain (more reads).
    let exact = matches!(container, Container::Mpeg | Container::Flac)
        || (container == Container::Ogg && codec == Codec::Vorbis);
    fine.store(!exact, std::sync::atomic::Ordering::Relaxed);

    // Demux every packet, noting which bytes each one needed.
    let to_us = |ts: i64| -> u64 {
        let ticks = u128::try_from(ts.saturating_sub(start_ts)).unwrap_or(0);
        let us = ticks * 1_000_000 * u128::from(time_base.numer.get())
            / u128::from(time_base.denom.get());
        u64::try_from(us).unwrap_or(u64::MAX)
    };
    let mut time_index: Vec<TimePoint> = Vec::new();
    let mut end_us = 0u64;
    let mut packets = 0u64;
    // Each packet's time, for an MPEG stream's frame-exact index.
    let mut packet_times: Vec<u64> = Vec::new();
    let mut flac_frames: Vec<(u64, u64)> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(symphonia::core::errors::Error::ResetRequired) => continue,
            Err(e) => {
                return Err(not_audio(
                    path,
                    format!("truncated or corrupt after {packets} packets ({e})"),
                ));
            }
        };
        let reads = take_reads(&log);
        if packet.track_id != track_id {
            continue;
        }
        packets += 1;
        let t = to_us(packet.pts.get());
        let pkt_end = t.saturating_add(to_us(
            start_ts.saturating_add(i64::try_from(packet.dur.get()).unwrap_or(i64::MAX)),
        ));
        end_us = end_us.max(pkt_end);
        if container == Container::Mpeg && packet_times.len() < MAX_MPEG_FRAMES {
            packet_times.push(t);
        }
        if container == Container::Flac && flac_frames.len() < MAX_MPEG_FRAMES {
            // A FLAC packet is one whole frame, and frames follow each
            // other: their offsets add up.
            flac_frames.push((packet.data.len() as u64, t));
        }
        // The packet ends in its last read, so it starts at or before that
        // read's end less its length: a point there says the audio at that
        // byte starts no later than it does (the start rule never counts
        // audio that is not there). Within a kilobyte where the reads are
        // fine; coarser for MPEG, FLAC and Ogg Vorbis, whose frame-exact
        // index replaces these points (unless it cannot be built).
        if let Some(last) = reads.last() {
            let at = last.end.saturating_sub(packet.data.len() as u64);
            if first_in_block(time_index.last(), at, base) {
                add_point(&mut time_index, at, t);
            }
        }
    }
    if packets == 0 {
        return Err(not_audio(path, "no audio packets"));
    }
    collect_all_tags(format.as_mut(), &mut tags);
    trailing_tags(path, &mut tags);

    // Frames from the packets actually present; a file whose header promises
    // noticeably more than it holds was cut short.
    let found_frames =
        u64::try_from(u128::from(end_us) * u128::from(sample_rate) / 1_000_000).unwrap_or(u64::MAX);
    if let Some(declared) = declared_frames {
        if declared > 0 && found_frames + u64::from(sample_rate) / 2 < declared {
            return Err(not_audio(
                path,
                format!(
                    "truncated: header says {:.1} s, file holds {:.1} s",
                    declared as f64 / f64::from(sample_rate),
                    found_frames as f64 / f64::from(sample_rate)
                ),
            ));
        }
    }
    let frames = declared_frames.unwrap_or(found_frames);
    let header_ranges: Vec<Range<u64>> = merge(header_reads)
        .into_iter()
        .map(|r| r.start..r.end.min(len))
        .filter(|r| r.start < r.end)
        .collect();
    time_index.retain(|p| p.byte_offset < len);
    // The time index's points are frame starts (not a read's neighbourhood).
    let mut exact_points = false;
    if container == Container::Mpeg {
        // Points at frame starts, with their frames' exact times: a player
        // can start a reader there and seek without reading what is before.
        if let Some(exact) = mpeg_index(path, base, len, &packet_times) {
            time_index = exact;
            exact_points = true;
        }
    }
    let mut ogg_comment = None;
    if container == Container::Ogg && codec == Codec::Vorbis {
        // Page starts, with the time their audio starts at.
        if let Some((pages, comment)) = ogg_index(path, len, sample_rate) {
            time_index = pages;
            ogg_comment = comment;
            exact_points = true;
        }
    }
    let header_ranges = match container {
        // Cover art and padding in a FLAC's metadata are not needed to
        // decode: a player reads them as zeros ([`flac_unneeded`]).
        Container::Flac => without(header_ranges, &flac_unneeded(path, len)),
        Container::Mp4 => without(header_ranges, &mp4_unneeded(path, len)),
        // So are the pages of an Ogg Vorbis comment (cover art again).
        Container::Ogg => without(header_ranges, ogg_comment.as_slice()),
        _ => header_ranges,
    };
    let header_ranges = cap_header_ranges(header_ranges);
    let mut gap = None;
    if container == Container::Flac {
        let first = File::open(path).ok().and_then(|mut f| flac_first_frame(&mut f, len));
        gap = first.and_then(|first| gap_before(&header_ranges, first, len));
        // The same for FLAC: frame starts with their exact times.
        let origin = gap.as_ref().map_or(0, |g| g.end);
        if let Some(exact) = first.and_then(|f| flac_index(path, len, f, &flac_frames, origin)) {
            time_index = exact;
            exact_points = true;
        }
    }
    // What the demuxer read past the first frame of a stream indexed
    // frame-exactly is read-ahead into its audio, not header: the range
    // that straddles the first point ends there. (An Ogg's reached 27 KB
    // into its audio: two chunks of "header", so a start's answer came
    // back only once both had, and every seek waited for them.)
    let header_ranges = match time_index.first() {
        Some(first) if exact_points => header_ranges
            .into_iter()
            .map(|r| {
                let straddles = r.start < first.byte_offset && first.byte_offset < r.end;
                if straddles { r.start..first.byte_offset } else { r }
            })
            .collect(),
        _ => header_ranges,
    };
    let channels = u16::try_from(channels).map_err(|_| not_audio(path, "too many channels"))?;
    Ok(Probed {
        gap,
        media: MediaInfo {
            codec,
            container,
            sample_rate,
            channels,
            frames,
            header_ranges,
            time_index,
            tags,
        },
    })
}

/// Frames an MPEG index is built for at most (a 2-hour MP3 has ~280,000).
const MAX_MPEG_FRAMES: usize = 1 << 20;
/// The blocks a frame-exact index (MPEG, FLAC, Ogg) has a point in: the
/// first frame that starts in each block of this many bytes from where the
/// stream starts (where a library cuts its chunks: the blocks are the
/// default chunks). A seek then reads from the point in its target's own
/// chunk, unless the target lies in the frame that straddles into it, and
/// the manifest keeps one point per chunk.
const POINT_BLOCK: u64 = 16 * 1024;

/// True if a frame at `at` is the first to start in its [`POINT_BLOCK`]
/// (counted from `origin`, where the stream starts) after the index's
/// last point.
fn first_in_block(last: Option<&TimePoint>, at: u64, origin: u64) -> bool {
    let block = |offset: u64| offset.saturating_sub(origin) / POINT_BLOCK;
    last.is_none_or(|p| block(at) > block(p.byte_offset))
}

/// The length of the MPEG audio frame whose 4-byte header is `h`, and its
/// sample rate; `None` if `h` is not a valid header.
pub fn mpeg_frame(h: [u8; 4]) -> Option<(u64, u32)> {
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: 2.5, 2: 2, 3: 1
    let layer = (h[1] >> 1) & 3; // 1: III, 2: II, 3: I
    let bitrate_i = usize::from(h[2] >> 4);
    let rate_i = usize::from((h[2] >> 2) & 3);
    let padding = u64::from((h[2] >> 1) & 1);
    if version == 1 || layer == 0 || bitrate_i == 0 || bitrate_i == 15 || rate_i == 3 {
        return None;
    }
    const V1: [[u32; 14]; 3] = [
        [32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
        [32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
        [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    ];
    const V2: [[u32; 14]; 2] = [
        [32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
        [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    let layer_i = usize::from(3 - layer); // 0: I, 1: II, 2: III
    let kbps = if version == 3 {
        V1[layer_i][bitrate_i - 1]
    } else {
        V2[usize::from(layer_i > 0)][bitrate_i - 1]
    };
    let rate =
        [[11_025, 12_000, 8_000], [0, 0, 0], [22_050, 24_000, 16_000], [44_100, 48_000, 32_000]]
            [usize::from(version)][rate_i];
    let br = u64::from(kbps) * 1000;
    let sr = u64::from(rate);
    let len = match (layer_i, version) {
        (0, _) => (12 * br / sr + padding) * 4,
        (2, v) if v != 3 => 72 * br / sr + padding,
        _ => 144 * br / sr + padding,
    };
    (len >= 4).then_some((len, rate))
}

/// A frame-exact index of the MPEG stream from `start`: the start of the
/// first frame in every [`POINT_BLOCK`] of the stream, with that frame's packet
/// time. `None` unless the frames walked match the packets the demuxer
/// gave one for one (a leading Xing/Info frame, which gives none, aside).
fn mpeg_index(path: &Path, start: u64, len: u64, times: &[u64]) -> Option<Vec<TimePoint>> {
    let mut file = std::io::BufReader::with_capacity(64 * 1024, File::open(path).ok()?);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut frames: Vec<u64> = Vec::new();
    let mut at = start;
    while at + 4 <= len && frames.len() <= times.len() + 1 {
        let mut h = [0u8; 4];
        file.read_exact(&mut h).ok()?;
        let Some((flen, _)) = mpeg_frame(h) else { break };
        frames.push(at);
        at += flen;
        file.seek_relative(i64::try_from(flen).ok()? - 4).ok()?;
    }
    let frames = match frames.len().checked_sub(times.len()) {
        Some(0) => &frames[..],
        Some(1) => &frames[1..],
        _ => return None,
    };
    let mut index: Vec<TimePoint> = Vec::new();
    for (&offset, &t) in frames.iter().zip(times) {
        if first_in_block(index.last(), offset, start) {
            index.push(TimePoint { byte_offset: offset, time_us: t });
        }
    }
    Some(index)
}

/// Where a FLAC stream's first frame starts: after "fLaC" and its
/// metadata blocks ([`flac_blocks`]).
fn flac_first_frame(file: &mut File, len: u64) -> Option<u64> {
    flac_blocks(file, len)?.last().map(|b| b.2)
}

/// A FLAC's metadata blocks after "fLaC" (each a 4-byte header: last-block
/// flag, type, length): type, body start, end. `None` if they do not end
/// with a last block within `len` bytes.
fn flac_blocks(file: &mut File, len: u64) -> Option<Vec<(u8, u64, u64)>> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut magic).ok()?;
    if &magic != b"fLaC" {
        return None;
    }
    let mut blocks = Vec::new();
    let mut at = 4u64;
    // Bounded: a block takes at least 4 bytes.
    for _ in 0..len / 4 {
        let mut h = [0u8; 4];
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut h).ok()?;
        let end = at + 4 + u64::from(u32::from_be_bytes([0, h[1], h[2], h[3]]));
        if end > len {
            return None;
        }
        blocks.push((h[0] & 0x7F, at + 4, end));
        if h[0] & 0x80 != 0 {
            return Some(blocks);
        }
        at = end;
    }
    None
}

/// The bytes of a FLAC's metadata that decoding does not need: the image
/// data of each PICTURE block (cover art, often a megabyte: fetched before
/// the first note while it counted as a header) and the body of each
/// PADDING block (zeros by the format). A player reads them as zeros
/// unless it has them: the demuxer still reads the picture's fields (its
/// lengths are real) and skips padding, so decoding is unchanged. Empty if
/// the metadata cannot be walked.
pub fn flac_unneeded(path: &Path, len: u64) -> Vec<Range<u64>> {
    let Ok(mut file) = File::open(path) else { return Vec::new() };
    let Some(blocks) = flac_blocks(&mut file, len) else { return Vec::new() };
    let be32 = |file: &mut File, at: u64| -> Option<u64> {
        let mut b = [0u8; 4];
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut b).ok()?;
        Some(u64::from(u32::from_be_bytes(b)))
    };
    let mut out = Vec::new();
    for (kind, body, end) in blocks {
        match kind {
            1 => out.push(body..end),
            6 => {
                // Type, media type, description, four sizes, then the data.
                let picture = (|| {
                    let mime = be32(&mut file, body + 4)?;
                    let desc = be32(&mut file, body + 8 + mime)?;
                    let data_len_at = body + 12 + mime + desc + 16;
                    let data = be32(&mut file, data_len_at)?;
                    let start = data_len_at + 4;
                    (start + data <= end).then_some(start..start + data)
                })();
                out.extend(picture);
            }
            _ => {}
        }
    }
    out.retain(|r| r.start < r.end);
    out
}

/// The image data of an MP4's cover art (each `data` atom of
/// `moov/udta/meta/ilst/covr`, or `moov/meta/...`, past its 16-byte
/// header): as for a FLAC's picture ([`flac_unneeded`]), a player reads it
/// as zeros unless it has it. Empty if the atoms cannot be walked.
pub fn mp4_unneeded(path: &Path, len: u64) -> Vec<Range<u64>> {
    let Ok(mut file) = File::open(path) else { return Vec::new() };
    let f = &mut file;
    let mut metas = Vec::new();
    for moov in mp4_children(f, (0, len), b"moov") {
        metas.extend(mp4_children(f, moov, b"meta"));
        for udta in mp4_children(f, moov, b"udta") {
            metas.extend(mp4_children(f, udta, b"meta"));
        }
    }
    let mut out = Vec::new();
    for (meta, end) in metas {
        // `meta` is a full box: a version and flags come first.
        for ilst in mp4_children(f, (meta + 4, end), b"ilst") {
            for covr in mp4_children(f, ilst, b"covr") {
                // Each `data` atom: a type and a locale, then the image.
                let images = mp4_children(f, covr, b"data").into_iter();
                out.extend(images.filter(|(d, end)| d + 8 < *end).map(|(d, end)| d + 8..end));
            }
        }
    }
    out
}

/// The bodies (start, end) of the atoms of `kind` within `parent`'s body.
fn mp4_children(file: &mut File, parent: (u64, u64), kind: &[u8; 4]) -> Vec<(u64, u64)> {
    let atoms = mp4_atoms(file, parent.0, parent.1).into_iter();
    atoms.filter(|a| &a.0 == kind).map(|a| (a.1, a.2)).collect()
}

/// The atoms between `start` and `end` of an MP4: kind, body start, end.
/// At most 4096, and none past `end`; a malformed one ends the list.
fn mp4_atoms(file: &mut File, start: u64, end: u64) -> Vec<([u8; 4], u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    while at + 8 <= end && out.len() < 4096 {
        let mut h = [0u8; 16];
        if file.seek(SeekFrom::Start(at)).is_err() || file.read_exact(&mut h[..8]).is_err() {
            break;
        }
        let kind = [h[4], h[5], h[6], h[7]];
        let (size, header) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
            0 => (end - at, 8),
            1 => {
                if file.read_exact(&mut h[8..16]).is_err() {
                    break;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[8..16]);
                (u64::from_be_bytes(b), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header || at.saturating_add(size) > end {
            break;
        }
        out.push((kind, at + header, at + size));
        at += size;
    }
    out
}

/// `ranges` (sorted, disjoint) less every range in `cut`.
fn without(ranges: Vec<Range<u64>>, cut: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut pieces = vec![r];
        for c in cut.iter().filter(|c| c.start < c.end) {
            pieces = pieces
                .into_iter()
                .flat_map(|p| {
                    [p.start..p.end.min(c.start), p.start.max(c.end)..p.end]
                        .into_iter()
                        .filter(|q| q.start < q.end)
                })
                .collect();
        }
        out.extend(pieces);
    }
    out
}

/// The bytes between the last header range before `first_audio` and
/// `first_audio` (none of them a header: a player reads them as zeros),
/// if there are any, and they and the bytes before them each fit in a
/// [`POINT_BLOCK`] and audio follows: see [`Probed::gap`].
fn gap_before(headers: &[Range<u64>], first_audio: u64, len: u64) -> Option<Range<u64>> {
    let start = headers.iter().filter(|h| h.start < first_audio).map(|h| h.end).max()?;
    let gap = start..first_audio;
    let fits = |n: u64| (1..=POINT_BLOCK).contains(&n);
    (start < first_audio && fits(start) && fits(gap.end - gap.start) && first_audio < len)
        .then_some(gap)
}

/// True if a FLAC frame header's sync code starts at `at`.
fn flac_sync_at(file: &mut File, at: u64) -> bool {
    let mut h = [0u8; 2];
    file.seek(SeekFrom::Start(at)).is_ok()
        && file.read_exact(&mut h).is_ok()
        && h[0] == 0xFF
        && (h[1] & 0xFE) == 0xF8
}

/// Frame starts of a FLAC file, the first in every [`POINT_BLOCK`] from
/// `origin`, with their exact times (µs from the start): from the first
/// frame's offset (`first`) and the frames' lengths and times (`frames`,
/// as the demuxer read them). `None` if the frames do not add up to the
/// file (each point is checked for a frame sync code) or there are none.
fn flac_index(
    path: &Path,
    len: u64,
    first: u64,
    frames: &[(u64, u64)],
    origin: u64,
) -> Option<Vec<TimePoint>> {
    let mut file = File::open(path).ok()?;
    let mut at = first;
    let mut index: Vec<TimePoint> = Vec::new();
    for &(flen, t) in frames {
        if first_in_block(index.last(), at, origin) {
            if !flac_sync_at(&mut file, at) {
                return None;
            }
            index.push(TimePoint { byte_offset: at, time_us: t });
        }
        at += flen;
    }
    (!index.is_empty() && at <= len).then_some(index)
}

/// The fixed part of an Ogg page's header (RFC 3533).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OggPageHeader {
    /// The granule position (for Vorbis, the PCM sample count at the end
    /// of the last packet the page ends; -1: none ends on it).
    pub granule: i64,
    /// The serial number of the page's logical stream.
    pub serial: u32,
    /// How many lacing values follow the header's 27 bytes.
    pub segments: usize,
    /// The page's first packet goes on from the page before.
    pub continued: bool,
}

/// Bytes in the fixed part of an Ogg page header.
pub const OGG_PAGE_HEADER_LEN: usize = 27;

/// Reads the fixed part of an Ogg page header from the start of `h`;
/// `None` if `h` is shorter or does not start with a version-0 page.
pub fn ogg_page_header(h: &[u8]) -> Option<OggPageHeader> {
    let h = h.get(..OGG_PAGE_HEADER_LEN)?;
    if &h[..4] != b"OggS" || h[4] != 0 {
        return None;
    }
    Some(OggPageHeader {
        granule: i64::from_le_bytes(h[6..14].try_into().ok()?),
        serial: u32::from_le_bytes(h[14..18].try_into().ok()?),
        segments: usize::from(h[26]),
        continued: h[5] & 0x01 != 0,
    })
}

/// Page starts of an Ogg Vorbis stream (one logical stream), the first in
/// every [`POINT_BLOCK`], each with the time of the samples its packets
/// start at: the previous page's granule position (a Vorbis granule is the
/// PCM sample count), in µs. The first point is the first audio page (what
/// is before it holds the three header packets). With it, the pages that
/// carry nothing but the comment header ([`ogg_comment_only`]). `None` for
/// anything else (several streams, a bad page).
fn ogg_index(path: &Path, len: u64, rate: u32) -> Option<(Vec<TimePoint>, Option<Range<u64>>)> {
    let mut file = std::io::BufReader::with_capacity(64 * 1024, File::open(path).ok()?);
    let mut at = 0u64;
    let mut serial = None;
    let mut prev_granule: Option<u64> = None;
    let mut index: Vec<TimePoint> = Vec::new();
    // Packets ended on the pages before this one (lacing values under 255).
    let mut ended = 0usize;
    let mut comment: Option<Range<u64>> = None;
    while at + 27 <= len {
        let mut h = [0u8; 27];
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut h).ok()?;
        let page = ogg_page_header(&h)?;
        let granule = page.granule;
        if *serial.get_or_insert(page.serial) != page.serial {
            return None;
        }
        let mut segments = vec![0u8; page.segments];
        file.read_exact(&mut segments).ok()?;
        let page_len =
            27 + segments.len() as u64 + segments.iter().map(|&l| u64::from(l)).sum::<u64>();
        let ended_here = segments.iter().filter(|&&l| l < 255).count();
        if ended < 3 {
            // A header page (the three header packets come first; the
            // pages that carry only the comment have no granule: -1).
            if ogg_comment_only(ended, &segments) {
                let start = comment.as_ref().map_or(at, |c| c.start);
                if comment.as_ref().is_none_or(|c| c.end == at) {
                    comment = Some(start..at + page_len);
                }
            }
        } else if let Some(prev) = prev_granule {
            if first_in_block(index.last(), at, 0) {
                let us = u64::try_from(u128::from(prev) * 1_000_000 / u128::from(rate)).ok()?;
                index.push(TimePoint { byte_offset: at, time_us: us });
            }
        } else if index.is_empty() {
            if granule < 0 {
                // The first audio page ends no packet: no position to
                // start the index from that we can trust.
                return None;
            }
            // The first audio page: it starts at sample 0.
            index.push(TimePoint { byte_offset: at, time_us: 0 });
        }
        if ended >= 3 && granule > 0 {
            prev_granule = Some(granule as u64);
        }
        ended += ended_here;
        at += page_len;
    }
    (index.len() > 1).then_some((index, comment))
}

/// True if a header page whose lacing values are `segments` carries only
/// bytes of the comment header (the second packet), `ended` packets having
/// ended before it: a Vorbis comment holding cover art (a base64
/// METADATA_BLOCK_PICTURE) runs over many such pages. A player need not
/// read them: symphonia's reader finds the next page and drops the
/// comment's tail from it (a continued packet it has no start of), and the
/// codec is made from the identification and setup headers alone.
fn ogg_comment_only(ended: usize, segments: &[u8]) -> bool {
    let ended_here = segments.iter().filter(|&&l| l < 255).count();
    // The identification header has ended and the comment has not; the
    // page ends nothing but the comment, at its last segment if at all.
    let ends_only_it = ended_here == 0 || (ended_here == 1 && segments.last() < Some(&255));
    ended == 1 && ends_only_it && !segments.is_empty()
}

/// Keeps the index strictly rising in offset and bounded in size.
fn add_point(index: &mut Vec<TimePoint>, offset: u64, t: u64) {
    match index.last() {
        None => index.push(TimePoint { byte_offset: offset, time_us: t }),
        Some(last) if offset >= last.byte_offset + MIN_POINT_GAP && t >= last.time_us => {
            index.push(TimePoint { byte_offset: offset, time_us: t })
        }
        _ => {}
    }
}

/// Header reads can be scattered (tag probes at both ends); keep at most
/// the manifest's limit by joining the closest neighbours.
fn cap_header_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let max = chorus_protocol::limits::MAX_HEADER_RANGES;
    while ranges.len() > max {
        let (i, _) = ranges
            .windows(2)
            .enumerate()
            .min_by_key(|(_, w)| w[1].start - w[0].end)
            .unwrap_or((0, &ranges[..2]));
        let next = ranges.remove(i + 1);
        ranges[i].end = next.end;
    }
    ranges
}

fn codec_of(id: symphonia::core::codecs::audio::AudioCodecId) -> Codec {
    use codec_ids::*;
    match id {
        CODEC_ID_MP3 | CODEC_ID_MP2 | CODEC_ID_MP1 => Codec::Mp3,
        CODEC_ID_VORBIS => Codec::Vorbis,
        CODEC_ID_FLAC => Codec::Flac,
        CODEC_ID_AAC => Codec::Aac,
        CODEC_ID_ALAC => Codec::Alac,
        CODEC_ID_OPUS => Codec::Opus,
        id if (CODEC_ID_PCM_S32LE..=CODEC_ID_PCM_MULAW).contains(&id) => Codec::Pcm,
        _ => Codec::Other(0),
    }
}

fn container_of(id: symphonia::core::formats::FormatId) -> Container {
    use format_ids::*;
    match id {
        FORMAT_ID_MP1 | FORMAT_ID_MP2 | FORMAT_ID_MP3 => Container::Mpeg,
        FORMAT_ID_OGG => Container::Ogg,
        FORMAT_ID_FLAC => Container::Flac,
        FORMAT_ID_ISOMP4 => Container::Mp4,
        FORMAT_ID_WAVE => Container::Wav,
        FORMAT_ID_AIFF => Container::Aiff,
        FORMAT_ID_MKV => Container::Mkv,
        FORMAT_ID_ADTS => Container::Adts,
        _ => Container::Other(0),
    }
}

/// Most bytes of a RIFF INFO list read for tags.
const MAX_RIFF_INFO: u32 = 64 * 1024;

/// Most chunks walked before the data chunk, and entries of an INFO list.
const MAX_RIFF_CHUNKS: usize = 64;

/// Fills `tags`' empty fields from a WAVE file's `LIST`/`INFO` chunk
/// before its data chunk: INAM title, IART artist, IPRD album, ICRD year,
/// ITRK (or IPRT) track number. Bounded in chunks and bytes; a file that
/// does not parse gives no tags.
fn riff_info_tags(file: &mut File, len: u64, tags: &mut Tags) {
    let mut at = 12u64;
    for _ in 0..MAX_RIFF_CHUNKS {
        let mut head = [0u8; 12];
        if at + 8 > len || file.seek(SeekFrom::Start(at)).is_err() {
            return;
        }
        if file.read_exact(&mut head[..8]).is_err() {
            return;
        }
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let id = [head[0], head[1], head[2], head[3]];
        match &id {
            b"data" => return,
            b"LIST"
                if size >= 4
                    && file.read_exact(&mut head[8..]).is_ok()
                    && &head[8..12] == b"INFO" =>
            {
                let n = (size - 4).min(MAX_RIFF_INFO) as usize;
                let mut buf = vec![0u8; n];
                if file.read_exact(&mut buf).is_ok() {
                    apply_riff_info(&buf, tags);
                }
            }
            _ => {}
        }
        at += 8 + u64::from(size) + u64::from(size & 1);
    }
}

/// [`riff_info_tags`] on an INFO list's entries.
fn apply_riff_info(mut buf: &[u8], tags: &mut Tags) {
    for _ in 0..MAX_RIFF_CHUNKS {
        if buf.len() < 8 {
            return;
        }
        let id: [u8; 4] = [buf[0], buf[1], buf[2], buf[3]];
        let size = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        let Some(raw) = 8usize.checked_add(size).and_then(|end| buf.get(8..end)) else { return };
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        let set = |slot: &mut Option<String>| set_tag(slot, text);
        match &id {
            b"INAM" => set(&mut tags.title),
            b"IART" => set(&mut tags.artist),
            b"IPRD" => set(&mut tags.album),
            b"ICRD" => tags.year = tags.year.or_else(|| text.get(..4).and_then(|y| y.parse().ok())),
            b"ITRK" | b"IPRT" => {
                let digits = text.split('/').next().unwrap_or("");
                tags.track_number = tags.track_number.or_else(|| digits.trim().parse().ok());
            }
            _ => {}
        }
        let next = 8 + size + (size & 1);
        buf = buf.get(next..).unwrap_or(&[]);
    }
}

/// Sets an empty tag field to `v` (cut to [`chorus_protocol::limits::MAX_TAG_LEN`]
/// bytes on a character boundary); an empty `v` or a field already set is
/// left alone (the first source of a tag wins).
fn set_tag(slot: &mut Option<String>, v: &str) {
    if slot.is_none() && !v.is_empty() {
        let mut end = v.len().min(chorus_protocol::limits::MAX_TAG_LEN);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        *slot = Some(v[..end].to_owned());
    }
}

fn collect_all_tags(format: &mut dyn FormatReader, tags: &mut Tags) {
    let mut meta = format.metadata();
    while let Some(rev) = meta.pop() {
        apply_revision(&rev, tags);
    }
    if let Some(rev) = meta.current() {
        apply_revision(rev, tags);
    }
}

fn apply_revision(rev: &MetadataRevision, tags: &mut Tags) {
    let all =
        rev.media.tags.iter().chain(rev.per_track.iter().flat_map(|t| t.metadata.tags.iter()));
    for tag in all {
        let Some(std) = &tag.std else { continue };
        let set_str = |slot: &mut Option<String>, v: &str| set_tag(slot, v.trim());
        match std {
            StandardTag::TrackTitle(v) => set_str(&mut tags.title, v),
            StandardTag::Artist(v) => set_str(&mut tags.artist, v),
            StandardTag::Album(v) => set_str(&mut tags.album, v),
            StandardTag::AlbumArtist(v) => set_str(&mut tags.album_artist, v),
            StandardTag::TrackNumber(n) => {
                tags.track_number = tags.track_number.or(u32::try_from(*n).ok())
            }
            StandardTag::DiscNumber(n) => {
                tags.disc_number = tags.disc_number.or(u32::try_from(*n).ok())
            }
            StandardTag::ReleaseDate(v) | StandardTag::OriginalReleaseDate(v) => {
                tags.year = tags.year.or_else(|| v.get(..4).and_then(|y| y.parse().ok()))
            }
            StandardTag::ReplayGainTrackGain(v) => {
                tags.track_gain_db = tags.track_gain_db.or(gain(v))
            }
            StandardTag::ReplayGainTrackPeak(v) => tags.track_peak = tags.track_peak.or(gain(v)),
            StandardTag::ReplayGainAlbumGain(v) => {
                tags.album_gain_db = tags.album_gain_db.or(gain(v))
            }
            StandardTag::ReplayGainAlbumPeak(v) => tags.album_peak = tags.album_peak.or(gain(v)),
            _ => {}
        }
    }
}

/// Parses "-6.54 dB" or "0.98".
fn gain(v: &str) -> Option<f32> {
    let num = v.trim().trim_end_matches(|c: char| c.is_alphabetic() || c.is_whitespace());
    num.parse::<f32>().ok().filter(|g| g.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit stereo WAVE file of `frames` frames of silence with the
    /// INFO list `info` (id, value; an odd length gets its pad byte).
    fn wave_with_info(info: &[(&[u8; 4], &[u8])], frames: u32) -> Vec<u8> {
        let mut list = b"INFO".to_vec();
        for (id, v) in info {
            list.extend_from_slice(*id);
            list.extend_from_slice(&(v.len() as u32).to_le_bytes());
            list.extend_from_slice(v);
            if v.len() % 2 == 1 {
                list.push(0);
            }
        }
        let mut body = b"WAVE".to_vec();
        body.extend_from_slice(b"fmt ");
        body.extend_from_slice(&16u32.to_le_bytes());
        for v in [1u16, 2] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&44_100u32.to_le_bytes());
        body.extend_from_slice(&(44_100u32 * 4).to_le_bytes());
        for v in [4u16, 16] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(b"LIST");
        body.extend_from_slice(&(list.len() as u32).to_le_bytes());
        body.extend_from_slice(&list);
        body.extend_from_slice(b"data");
        body.extend_from_slice(&(frames * 4).to_le_bytes());
        body.resize(body.len() + frames as usize * 4, 0);
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_wave_files_info_list_gives_its_tags() {
        // symphonia 0.6 reads the list and drops it; the probe reads it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        let info: [(&[u8; 4], &[u8]); 6] = [
            (b"IART", b"Max McCracken\0"),
            (b"ICMT", b"odd length!"),
            (b"INAM", b"Deprecation (excerpt)\0"),
            (b"IPRD", b"Endgame\0"),
            (b"ICRD", b"2008-05-01\0"),
            (b"ITRK", b"7/12\0"),
        ];
        std::fs::write(&path, wave_with_info(&info, 44_100)).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let tags = probe_file(&path, len).unwrap().media.tags;
        assert_eq!(tags.title.as_deref(), Some("Deprecation (excerpt)"));
        assert_eq!(tags.artist.as_deref(), Some("Max McCracken"));
        assert_eq!(tags.album.as_deref(), Some("Endgame"));
        assert_eq!((tags.year, tags.track_number), (Some(2008), Some(7)));
    }

    #[test]
    fn a_wave_files_info_list_that_lies_about_sizes_gives_what_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        let mut bytes = wave_with_info(&[(b"INAM", b"Kept"), (b"IART", b"Cut")], 4_410);
        // The second entry claims 4 GiB: it is left out, the first kept.
        let at = bytes.windows(4).position(|w| w == b"IART").unwrap();
        bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut tags = Tags::default();
        riff_info_tags(&mut File::open(&path).unwrap(), bytes.len() as u64, &mut tags);
        assert_eq!((tags.title.as_deref(), tags.artist), (Some("Kept"), None));
        // A LIST claiming more than the file: nothing past it is read.
        let at = bytes.windows(4).position(|w| w == b"LIST").unwrap();
        bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut tags = Tags::default();
        riff_info_tags(&mut File::open(&path).unwrap(), bytes.len() as u64, &mut tags);
        assert_eq!(tags.title, None);
    }

    #[test]
    fn merging_and_capping_ranges() {
        assert_eq!(merge(vec![10..20, 0..5, 4..8, 20..25]), vec![0..8, 10..25]);
        let many: Vec<_> = (0..100u64).map(|i| i * 10..i * 10 + 5).collect();
        let capped = cap_header_ranges(many);
        assert_eq!(capped.len(), chorus_protocol::limits::MAX_HEADER_RANGES);
        assert_eq!(capped.first().map(|r| r.start), Some(0));
        assert_eq!(capped.last().map(|r| r.end), Some(995));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one range is the case
    fn cutting_ranges_out_of_ranges() {
        let r = without(vec![0..100, 200..300], &[10..20, 90..210, 250..250, 400..500]);
        assert_eq!(r, vec![0..10, 20..90, 210..300]);
        assert_eq!(without(vec![0..10], &[0..10]), Vec::<Range<u64>>::new());
        assert_eq!(without(vec![5..10], &[]), vec![5..10]);
    }

    #[test]
    fn only_pages_that_carry_nothing_but_the_vorbis_comment_are_unneeded() {
        // The identification header's page: not the comment's.
        assert!(!ogg_comment_only(0, &[30]));
        // Starting or going on with the comment, ending it at the last
        // segment or not at all.
        assert!(ogg_comment_only(1, &[255; 255]));
        assert!(ogg_comment_only(1, &[255, 255, 7]));
        // The setup header begins on it (after the comment's end), or the
        // comment has ended before it, or the page is empty.
        assert!(!ogg_comment_only(1, &[255, 7, 255, 30]));
        assert!(!ogg_comment_only(2, &[255, 255]));
        assert!(!ogg_comment_only(1, &[]));
    }

    /// A FLAC's metadata blocks: STREAMINFO, a PICTURE, PADDING (last).
    #[test]
    fn a_flac_s_picture_data_and_padding_are_unneeded() {
        let mut f = b"fLaC".to_vec();
        f.extend_from_slice(&[0, 0, 0, 34]);
        f.extend_from_slice(&[0; 34]);
        let mut pic = Vec::new();
        pic.extend_from_slice(&3u32.to_be_bytes());
        pic.extend_from_slice(&3u32.to_be_bytes());
        pic.extend_from_slice(b"png");
        pic.extend_from_slice(&2u32.to_be_bytes());
        pic.extend_from_slice(b"hi");
        pic.extend_from_slice(&[0; 16]);
        pic.extend_from_slice(&100u32.to_be_bytes());
        pic.extend_from_slice(&[7; 100]);
        f.push(6);
        f.extend_from_slice(&(pic.len() as u32).to_be_bytes()[1..]);
        let data_start = (f.len() + pic.len() - 100) as u64;
        f.extend_from_slice(&pic);
        f.extend_from_slice(&[0x81, 0, 0, 50]);
        let pad = f.len() as u64;
        f.extend_from_slice(&[0; 50]);
        f.extend_from_slice(&[0xFF, 0xF8, 1, 2]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flac");
        std::fs::write(&path, &f).unwrap();
        let len = f.len() as u64;
        assert_eq!(flac_unneeded(&path, len), vec![data_start..data_start + 100, pad..pad + 50]);
        // A picture that claims more than its block holds: only the padding.
        let mut bad = f.clone();
        let at = (data_start - 4) as usize;
        bad[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(flac_unneeded(&path, len), vec![pad..pad + 50]);
        // A block past the file's end: nothing (the walk gives up).
        std::fs::write(&path, &f[..f.len() - 30]).unwrap();
        assert_eq!(flac_unneeded(&path, len - 30), Vec::<Range<u64>>::new());
    }

    #[test]
    fn gains_parse_with_and_without_units() {
        assert_eq!(gain("-6.5 dB"), Some(-6.5));
        assert_eq!(gain("0.98"), Some(0.98));
        assert_eq!(gain("loud"), None);
    }
}
