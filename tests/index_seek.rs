//! Seeking in MP3 and FLAC by the manifest's own index: the decoder opens
//! the bytes again at a frame start before the target (a little before, for
//! MP3) and reads no audio earlier (symphonia's accurate MP3 seek parses
//! every frame from the start; its FLAC seek bisects the file, a round trip
//! per probe when streaming), and the audio is the same, sample for
//! sample, as a local decode seeked the long way.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_player::decode::{Decoder, IndexedFormat, SeekIndex, decode_file};
use common::*;
use symphonia::core::io::MediaSource;

/// A file from an offset, noting the lowest byte read.
struct Counting {
    file: std::fs::File,
    base: u64,
    len: u64,
    /// Reads below this (a FLAC stream's header) are not counted.
    floor: u64,
    lowest: Arc<Mutex<u64>>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.file.stream_position()?;
        if at >= self.floor {
            let mut l = self.lowest.lock().unwrap();
            *l = (*l).min(at);
        }
        self.file.read(buf)
    }
}

impl Seek for Counting {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let abs = match to {
            SeekFrom::Start(p) => self.base + p,
            SeekFrom::End(d) => (self.len as i64 + d) as u64,
            SeekFrom::Current(d) => (self.file.stream_position()? as i64 + d) as u64,
        };
        Ok(self.file.seek(SeekFrom::Start(abs))? - self.base)
    }
}

impl MediaSource for Counting {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        Some(self.len - self.base)
    }
}

/// A decoder of the sample `name` with the manifest's seek index, over a
/// source that notes the lowest byte read from the stream's first frame on.
fn indexed_decoder(
    name: &str,
    manifest: &chorus_protocol::Manifest,
    format: IndexedFormat,
) -> (Decoder, Arc<Mutex<u64>>) {
    let points: Vec<(u64, u64)> =
        manifest.time_points().iter().map(|p| (p.byte_offset, p.time_us)).collect();
    let path = sample(name);
    let len = std::fs::metadata(&path).unwrap().len();
    let lowest = Arc::new(Mutex::new(u64::MAX));
    // The first point is the first frame: what comes before is the
    // stream's header, which a FLAC reader reads first.
    let floor = points[0].0;
    let (p, l) = (path.clone(), lowest.clone());
    let open_at = Box::new(move |base: u64| -> Box<dyn MediaSource> {
        let mut file = std::fs::File::open(&p).unwrap();
        file.seek(SeekFrom::Start(base)).unwrap();
        Box::new(Counting { file, base, len, floor, lowest: l.clone() })
    });
    let preroll = chorus_player::decode::preroll(manifest);
    let index = SeekIndex { points: Box::new(move || points.clone()), open_at, format, preroll };
    (Decoder::open_file(&path).unwrap().with_index(index), lowest)
}

#[test]
fn an_indexed_seek_reads_only_from_before_the_target_and_is_sample_exact() {
    let formats = [
        ("inevitable.mp3", IndexedFormat::Mpeg),
        ("beat-thee.mp3", IndexedFormat::Mpeg),
        ("awakening.flac", IndexedFormat::Flac),
        ("apex-aleph.ogg", IndexedFormat::Ogg),
    ];
    for (name, format) in formats {
        let lib = library_dir(&[name]);
        let (library, _, _) = scan(lib.path(), tempfile::tempdir().unwrap().path());
        let manifest = library.tracks().next().unwrap().manifest.clone();
        let points: Vec<(u64, u64)> =
            manifest.time_points().iter().map(|p| (p.byte_offset, p.time_us)).collect();
        assert!(points.len() > 10, "{name}: an index");
        let path = sample(name);
        let (mut d, lowest) = indexed_decoder(name, &manifest, format);
        let target = Duration::from_secs(60);
        let at = d.seek(target).unwrap();
        let mut streamed = Vec::new();
        while let Some(block) = d.next_block().unwrap() {
            streamed.extend_from_slice(block);
        }
        // Nothing read before the index point a quarter second or so
        // before 60 s (well past half the file's bytes to 60 s).
        let target_byte = points
            .iter()
            .rev()
            .find(|(_, us)| *us <= target.as_micros() as u64)
            .map(|(o, _)| *o)
            .unwrap();
        let lowest = *lowest.lock().unwrap();
        assert!(
            lowest <= target_byte && target_byte - lowest < 64 * 1024,
            "{name}: read from {lowest}, target at {target_byte}"
        );
        // The chunk a seek tells the fetch to get first is the first one
        // the decoder reads.
        let first_read = manifest.layout().chunk_at(lowest).unwrap();
        let told = manifest.chunk_at_time(chorus_player::decode::reads_from(&manifest, target));
        assert_eq!(told, first_read, "{name}: the seek hints another chunk than it reads");
        // The same audio as the long way, to the last sample.
        let (_, _, local) = decode_file(&path, Some(target)).unwrap();
        assert_eq!(at.as_secs_f64().round(), 60.0);
        assert_eq!(streamed.len(), local.len(), "{name}: sample count");
        let first = streamed.iter().zip(&local).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first, None, "{name}: first difference");
    }
}

/// A seek reads from the index point in its target's own chunk (points are
/// the first frame in each chunk, the preroll is the few frames the MPEG bit
/// reservoir needs), unless the target is too near that chunk's start: most
/// seeks wait for one chunk, not two.
#[test]
fn most_seeks_read_only_the_chunk_their_target_is_in() {
    for name in ["inevitable.mp3", "beat-thee.mp3", "awakening.flac"] {
        let lib = library_dir(&[name]);
        let (library, _, _) = scan(lib.path(), tempfile::tempdir().unwrap().path());
        let manifest = library.tracks().next().unwrap().manifest.clone();
        let layout = *manifest.layout();
        let format =
            if name.ends_with(".flac") { IndexedFormat::Flac } else { IndexedFormat::Mpeg };
        let (mut own, mut seeks) = (0, 0);
        // 40 targets spread over the track (a fixed, uneven step).
        let step = manifest.duration().as_secs_f64() * 0.9 / 40.0;
        for i in 1..=40 {
            let target = Duration::from_secs_f64(step * f64::from(i) + 0.137 * f64::from(i % 7));
            let (mut d, lowest) = indexed_decoder(name, &manifest, format);
            d.seek(target).unwrap();
            d.next_block().unwrap();
            let first_read = layout.chunk_at(*lowest.lock().unwrap()).unwrap();
            // The chunk the target's audio is in (the frame that holds it
            // may start in the one before).
            let at = manifest.chunk_at_time(target);
            assert!(first_read.0 + 1 >= at.0, "{name} at {target:?}: read from {first_read:?}");
            seeks += 1;
            own += usize::from(first_read == at);
        }
        eprintln!("{name}: {own} of {seeks} seeks read only their target's chunk");
        assert!(own * 4 >= seeks * 3, "{name}: {own} of {seeks} seeks read only their own chunk");
    }
}
