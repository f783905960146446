//! Checking a chunk while it arrives, [`GROUP_LEN`] bytes at a time.
//!
//! A chunk's hash is a BLAKE3 tree over its 1 KiB blocks. A sender may put
//! the chaining values of the chunk's 4 KiB subtrees (its groups) before
//! the data: the receiver merges them up the tree and compares the root
//! with the manifest's hash of the chunk before any data comes, then checks
//! each group as soon as its bytes are in. A decoder can read the first
//! 4 KiB of a chunk a quarter of a chunk's transfer earlier (at 20 Mbit/s,
//! 5 ms of the 6.5 a 16 KiB chunk takes), and no byte reaches it unchecked.
//!
//! A chunk of one group or less has none: it is checked whole.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};
use crate::ids::{ChunkHash, ChunkIndex, TrackId};
use crate::manifest::VerifiedChunk;

/// Bytes in a group: four BLAKE3 blocks, a subtree of the chunk's tree.
pub const GROUP_LEN: usize = 4096;

/// Bytes of one group's chaining value on the wire.
pub const GROUP_HASH_LEN: usize = 32;

/// The groups a chunk of `len` bytes is checked in: 0 if it is one group
/// or less (checked whole).
pub fn group_count(len: usize) -> usize {
    if len <= GROUP_LEN { 0 } else { len.div_ceil(GROUP_LEN) }
}

/// The chaining values of `data`'s groups, concatenated: what a sender
/// puts before the chunk (empty for a chunk of one group or less).
pub fn group_hashes(data: &[u8]) -> Bytes {
    if group_count(data.len()) == 0 {
        return Bytes::new();
    }
    let mut out = BytesMut::with_capacity(group_count(data.len()) * GROUP_HASH_LEN);
    for (i, group) in data.chunks(GROUP_LEN).enumerate() {
        out.put_slice(&group_cv(i, group));
    }
    out.freeze()
}

fn group_cv(i: usize, group: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset((i * GROUP_LEN) as u64);
    h.update(group);
    h.finalize_non_root()
}

/// The chaining value of the subtree over `len` bytes from `start` (a
/// multiple of [`GROUP_LEN`]): a group's, or its two halves' merged.
/// BLAKE3 splits `n` bytes at the largest power of two below `n`, which
/// for `n > GROUP_LEN` is a multiple of it, so every subtree is made of
/// whole groups.
fn subtree(cvs: &[ChainingValue], start: usize, len: usize) -> Option<ChainingValue> {
    if len <= GROUP_LEN {
        return cvs.get(start / GROUP_LEN).copied();
    }
    let left = left_subtree_len(len as u64) as usize;
    let l = subtree(cvs, start, left)?;
    let r = subtree(cvs, start + left, len - left)?;
    Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

/// The root hash of a chunk of `len > GROUP_LEN` bytes from its groups'
/// chaining values.
fn root(cvs: &[ChainingValue], len: usize) -> Option<ChunkHash> {
    let left = left_subtree_len(len as u64) as usize;
    let l = subtree(cvs, 0, left)?;
    let r = subtree(cvs, left, len - left)?;
    Some(ChunkHash::from_bytes(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()))
}

/// Bytes of a chunk that matched their group's chaining value, whose
/// values matched the manifest's hash of the chunk: made only by
/// [`ChunkReceiver::push`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPart {
    track: TrackId,
    index: ChunkIndex,
    offset: usize,
    data: Bytes,
}

impl VerifiedPart {
    /// The track.
    pub fn track(&self) -> TrackId {
        self.track
    }

    /// The chunk.
    pub fn index(&self) -> ChunkIndex {
        self.index
    }

    /// Where in the chunk the bytes start (a multiple of [`GROUP_LEN`]).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

/// One chunk arriving: takes its bytes as they come and hands out those
/// checked. Made by [`crate::Manifest::receive_chunk`], which has checked
/// the length and the group values against the manifest.
#[derive(Debug)]
pub struct ChunkReceiver {
    track: TrackId,
    index: ChunkIndex,
    len: usize,
    expected: ChunkHash,
    /// The groups' chaining values, empty when the chunk is checked whole.
    cvs: Vec<ChainingValue>,
    buf: BytesMut,
    /// The whole chunk, when it came in one piece (kept without a copy).
    whole: Option<Bytes>,
    /// Where in the chunk its bytes begin: 0, or for the tail of a
    /// chunk ([`crate::Manifest::receive_tail`]) a multiple of
    /// [`GROUP_LEN`].
    from: usize,
    /// The chunk's offset up to which its bytes are checked (whole groups).
    verified: usize,
    /// False: no parts are handed out (nobody waits on this chunk), the
    /// groups are checked when it is whole.
    parts: bool,
}

impl ChunkReceiver {
    pub(crate) fn new(
        track: TrackId,
        index: ChunkIndex,
        len: usize,
        expected: ChunkHash,
        groups: &[u8],
    ) -> Result<Self> {
        let cvs = if groups.is_empty() {
            Vec::new()
        } else {
            if groups.len() != group_count(len) * GROUP_HASH_LEN {
                return Err(ProtocolError::Invalid("group hashes for another chunk length"));
            }
            let cvs: Vec<ChainingValue> = groups
                .chunks_exact(GROUP_HASH_LEN)
                .map(|c| {
                    let mut cv = [0u8; GROUP_HASH_LEN];
                    cv.copy_from_slice(c);
                    cv
                })
                .collect();
            if root(&cvs, len) != Some(expected) {
                return Err(ProtocolError::ChunkHashMismatch { track, index });
            }
            cvs
        };
        let buf = BytesMut::new();
        let whole = None;
        Ok(Self { track, index, len, expected, cvs, buf, whole, from: 0, verified: 0, parts: true })
    }

    /// Takes the chunk's bytes from `from` on (a multiple of
    /// [`GROUP_LEN`], inside the chunk) rather than all of it: its tail,
    /// which another peer sends while the first sends the chunk from its
    /// start. Only a chunk checked in groups can be taken so; the tail's
    /// groups come out checked like any part, and it is done once
    /// [`Self::remaining`] is 0 (it never makes a whole chunk).
    pub(crate) fn tail_from(mut self, from: usize) -> Result<Self> {
        if self.cvs.is_empty() || from % GROUP_LEN != 0 || from >= self.len {
            return Err(ProtocolError::Invalid("a chunk's tail must start at one of its groups"));
        }
        self.from = from;
        self.verified = from;
        Ok(self)
    }

    /// Where the bytes taken begin in the chunk: 0, or a tail's start.
    pub fn from(&self) -> usize {
        self.from
    }

    /// Hands out no parts (the chunk is for later: copying its groups out
    /// for a reader would be wasted); [`Self::finish`] checks it all.
    pub fn whole_only(mut self) -> Self {
        self.parts = false;
        self
    }

    /// The chunk.
    pub fn index(&self) -> ChunkIndex {
        self.index
    }

    /// True if the chunk is checked group by group (its parts come before
    /// it is whole).
    pub fn in_groups(&self) -> bool {
        !self.cvs.is_empty()
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> usize {
        self.len - self.received()
    }

    fn received(&self) -> usize {
        self.from + self.whole.as_ref().map_or(self.buf.len(), Bytes::len)
    }

    /// Takes the next bytes of the chunk. Returns the groups they complete,
    /// checked (none when the chunk is checked whole). More bytes than the
    /// chunk holds, or a group that does not match, is an error: the
    /// sender sent bad data.
    pub fn push(&mut self, data: Bytes) -> Result<Option<VerifiedPart>> {
        if data.len() > self.remaining() {
            return Err(ProtocolError::ChunkLength {
                index: self.index,
                len: self.received() + data.len(),
                expected: self.len as u64,
            });
        }
        if self.received() == 0 && data.len() == self.len && (self.cvs.is_empty() || !self.parts) {
            // (`received` is 0 only for a chunk taken from its start.)
            self.whole = Some(data);
            return Ok(None);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.len - self.from);
        }
        self.buf.extend_from_slice(&data);
        if self.cvs.is_empty() || !self.parts {
            return Ok(None);
        }
        let start = self.verified;
        self.check_groups()?;
        if self.verified == start {
            return Ok(None);
        }
        let bytes = &self.buf[start - self.from..self.verified - self.from];
        Ok(Some(VerifiedPart {
            track: self.track,
            index: self.index,
            offset: start,
            data: Bytes::copy_from_slice(bytes),
        }))
    }

    /// Checks the groups whose bytes are all in, from the first unchecked.
    fn check_groups(&mut self) -> Result<()> {
        // The bytes here, from `from` on.
        let data: &[u8] = self.whole.as_deref().unwrap_or(&self.buf);
        while self.verified < self.len {
            let end = (self.verified + GROUP_LEN).min(self.len);
            if self.from + data.len() < end {
                break;
            }
            let group = self.verified / GROUP_LEN;
            let bytes = &data[self.verified - self.from..end - self.from];
            if self.cvs.get(group) != Some(&group_cv(group, bytes)) {
                return Err(ProtocolError::ChunkHashMismatch {
                    track: self.track,
                    index: self.index,
                });
            }
            self.verified = end;
        }
        Ok(())
    }

    /// The chunk, once every byte is in: its groups were checked (their
    /// values against the hash when it began), or it is checked whole.
    pub fn finish(mut self) -> Result<VerifiedChunk> {
        if self.from > 0 {
            return Err(ProtocolError::Invalid("a chunk's tail is not the chunk"));
        }
        if self.remaining() > 0 {
            return Err(ProtocolError::ChunkLength {
                index: self.index,
                len: self.received(),
                expected: self.len as u64,
            });
        }
        if !self.cvs.is_empty() {
            self.check_groups()?;
        }
        let data = self.whole.unwrap_or_else(|| self.buf.freeze());
        if self.cvs.is_empty() && ChunkHash::of(&data) != self.expected {
            return Err(ProtocolError::ChunkHashMismatch { track: self.track, index: self.index });
        }
        Ok(VerifiedChunk::new(self.track, self.index, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 977) as u8).collect()
    }

    #[test]
    fn group_values_merge_to_the_chunks_blake3_hash_at_every_length() {
        let data = bytes(64 * 1024 + 3);
        for len in (GROUP_LEN + 1..=64 * 1024 + 3).step_by(509).chain([8192, 8193, 16384, 65536]) {
            let chunk = &data[..len];
            let cvs: Vec<ChainingValue> = group_hashes(chunk)
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32 bytes"))
                .collect();
            assert_eq!(cvs.len(), len.div_ceil(GROUP_LEN));
            assert_eq!(root(&cvs, len), Some(ChunkHash::of(chunk)), "length {len}");
        }
        assert!(group_hashes(&data[..GROUP_LEN]).is_empty());
    }

    fn receiver(data: &[u8], groups: &[u8]) -> Result<ChunkReceiver> {
        let track = TrackId::from_bytes([7; 32]);
        ChunkReceiver::new(track, ChunkIndex(3), data.len(), ChunkHash::of(data), groups)
    }

    #[test]
    fn parts_come_out_checked_as_their_groups_complete() {
        let data = bytes(16 * 1024 - 100);
        let mut r = receiver(&data, &group_hashes(&data)).expect("values match the hash");
        assert!(r.in_groups());
        let mut parts = Vec::new();
        for piece in data.chunks(1100) {
            if let Some(p) = r.push(Bytes::copy_from_slice(piece)).expect("honest bytes") {
                parts.push(p);
            }
        }
        let offsets: Vec<usize> = parts.iter().map(VerifiedPart::offset).collect();
        assert_eq!(offsets, [0, 4096, 8192, 12288]);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data().to_vec()).collect();
        assert_eq!(joined, data);
        assert_eq!(r.finish().expect("whole").data().as_ref(), &data[..]);
    }

    #[test]
    fn a_tail_comes_out_checked_from_its_group_on_and_is_never_a_whole_chunk() {
        let data = bytes(16 * 1024 - 100);
        let groups = group_hashes(&data);
        let tail = || receiver(&data, &groups).expect("values match the hash");
        let mut r = tail().tail_from(8192).expect("a group's start");
        assert_eq!((r.from(), r.remaining()), (8192, data.len() - 8192));
        let mut parts = Vec::new();
        for piece in data[8192..].chunks(1000) {
            if let Some(p) = r.push(Bytes::copy_from_slice(piece)).expect("honest bytes") {
                parts.push(p);
            }
        }
        let offsets: Vec<usize> = parts.iter().map(VerifiedPart::offset).collect();
        assert_eq!(offsets, [8192, 12288]);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data().to_vec()).collect();
        assert_eq!(joined, &data[8192..]);
        assert_eq!(r.remaining(), 0);
        assert!(r.finish().is_err(), "a tail is not the chunk");
        // A changed byte fails its group; too many bytes fail too.
        let mut bad = data[8192..].to_vec();
        bad[5000] ^= 1;
        let mut r = tail().tail_from(8192).expect("a group's start");
        assert!(r.push(Bytes::copy_from_slice(&bad[..4096])).expect("first group").is_some());
        let err = r.push(Bytes::copy_from_slice(&bad[4096..]));
        assert!(matches!(err, Err(ProtocolError::ChunkHashMismatch { .. })));
        let mut r = tail().tail_from(12288).expect("a group's start");
        assert!(r.push(Bytes::copy_from_slice(&data[8192..])).is_err());
        // Only at a group's start inside the chunk, and only in groups.
        for from in [0, 100, 4095, 16384] {
            assert_eq!(tail().tail_from(from).is_ok(), from == 0, "{from}");
        }
        let small = bytes(4000);
        let whole = receiver(&small, &[]).expect("checked whole");
        assert!(whole.tail_from(0).is_err());
    }

    #[test]
    fn a_changed_byte_fails_its_group_and_nothing_after_it_comes_out() {
        let data = bytes(16 * 1024);
        let groups = group_hashes(&data);
        let mut bad = data.clone();
        bad[5000] ^= 1;
        let mut r = receiver(&data, &groups).expect("values match the hash");
        let first = r.push(Bytes::copy_from_slice(&bad[..4096])).expect("first group honest");
        assert_eq!(first.map(|p| p.data().len()), Some(4096));
        let err = r.push(Bytes::copy_from_slice(&bad[4096..8192]));
        assert!(matches!(err, Err(ProtocolError::ChunkHashMismatch { .. })));
    }

    #[test]
    fn group_values_that_do_not_merge_to_the_hash_are_refused_before_any_data() {
        let data = bytes(16 * 1024);
        let mut groups = group_hashes(&data).to_vec();
        groups[40] ^= 1;
        assert!(matches!(receiver(&data, &groups), Err(ProtocolError::ChunkHashMismatch { .. })));
        // Values of other data, consistent among themselves, fail too.
        let other = group_hashes(&bytes(16 * 1024 + 1)[1..]);
        assert!(receiver(&data, &other).is_err());
        // The wrong number of values.
        assert!(receiver(&data, &groups[..96]).is_err());
    }

    #[test]
    fn a_chunk_taken_whole_only_still_has_its_groups_checked() {
        let data = bytes(16 * 1024);
        let groups = group_hashes(&data);
        let mut bad = data.clone();
        bad[16000] ^= 1;
        let mut r = receiver(&data, &groups).expect("values match").whole_only();
        for piece in bad.chunks(1000) {
            assert_eq!(r.push(Bytes::copy_from_slice(piece)).expect("no check yet"), None);
        }
        assert!(matches!(r.finish(), Err(ProtocolError::ChunkHashMismatch { .. })));
        let mut r = receiver(&data, &groups).expect("values match").whole_only();
        r.push(Bytes::from(data.clone())).expect("one piece");
        assert_eq!(r.finish().expect("honest").data().as_ref(), &data[..]);
    }

    #[test]
    fn a_chunk_without_groups_is_checked_whole_and_too_many_bytes_are_refused() {
        let data = bytes(9000);
        let mut r = receiver(&data, &[]).expect("no groups");
        assert!(!r.in_groups());
        assert_eq!(r.push(Bytes::copy_from_slice(&data[..5000])).expect("bytes"), None);
        assert!(r.push(Bytes::copy_from_slice(&data[..5000])).is_err());
        let mut r = receiver(&data, &[]).expect("no groups");
        let mut bad = data.clone();
        bad[1] ^= 1;
        r.push(Bytes::from(bad)).expect("whole piece");
        assert!(matches!(r.finish(), Err(ProtocolError::ChunkHashMismatch { .. })));
        let mut r = receiver(&data, &[]).expect("no groups");
        r.push(Bytes::copy_from_slice(&data[..10])).expect("bytes");
        assert!(r.finish().is_err(), "a chunk cut short is not whole");
    }

    #[test]
    fn a_sender_checks_a_chunk_and_gets_its_group_values_in_one_pass() {
        use crate::manifest::{Codec, Container, MediaInfo, Tags};
        use crate::{ChunkLayout, ChunkSize, Manifest, chunk};
        let data = Bytes::from(bytes(40_000));
        let layout = ChunkLayout::new(40_000, ChunkSize::new(16 * 1024).unwrap()).unwrap();
        let (hashes, chunks) = chunk::chunk_bytes(&data, &layout).unwrap();
        let media = MediaInfo {
            codec: Codec::Pcm,
            container: Container::Wav,
            sample_rate: 8000,
            channels: 1,
            frames: 40_000,
            header_ranges: std::iter::once(0..10).collect(),
            time_index: vec![],
            tags: Tags::default(),
        };
        let m = Manifest::new(media, layout, hashes).unwrap();
        let (groups, c) = m.verify_with_groups(ChunkIndex(1), chunks[1].clone()).unwrap();
        assert_eq!(groups, group_hashes(&chunks[1]));
        assert_eq!(c.data(), &chunks[1]);
        let mut bad = chunks[1].to_vec();
        bad[100] ^= 1;
        assert!(m.verify_with_groups(ChunkIndex(1), Bytes::from(bad)).is_err());
        // The last chunk (40,000 - 32,768 = 7,232 bytes) has two groups.
        let (groups, _) = m.verify_with_groups(ChunkIndex(2), chunks[2].clone()).unwrap();
        assert_eq!(groups.len(), 64);
    }
}
