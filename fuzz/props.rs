//! The properties the fuzz targets check, shared with the stable test that
//! replays the committed corpora (`protocol/tests/fuzz_corpus.rs`), so CI
//! keeps every input the fuzzers found without a nightly toolchain.

use bytes::{Bytes, BytesMut};
use chorus_protocol::frame::{self, FrameDecoder};
use chorus_protocol::message::{self, MessageKind};
use chorus_protocol::{Manifest, Message};

/// Arbitrary bytes through the frame decoder, whole and in pieces (the
/// first byte sets the piece size): any frame that decodes re-encodes to
/// bytes that decode to the same message, and a chunk-data frame's head
/// read from any prefix of its body agrees with it; nothing panics.
pub fn frames(data: &[u8]) {
    if data.len() > 2 && data[1] == MessageKind::ChunkData as u8 {
        // Arbitrary bytes as a chunk-data body: an answer, never a panic.
        let _ = message::chunk_head(&Bytes::copy_from_slice(data), data.len());
    }
    let split = data.first().map_or(1, |b| usize::from(*b).max(1));
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::new();
    for piece in data.chunks(split) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    let wire = frame::encode(&f.message).expect("a decoded message re-encodes");
                    let again = frame::decode(&wire).expect("a re-encoded message decodes");
                    assert_eq!(again.message, f.message);
                    chunk_heads(&wire, &f.message);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish(&buf);
}

/// The head of a chunk-data frame (`wire`, whole), read from every prefix
/// of its body as a receiver reads it: nothing until the head is in, then
/// the message's fields.
fn chunk_heads(wire: &Bytes, msg: &Message) {
    let Message::ChunkData(c) = msg else { return };
    let body = wire.slice(frame::LEN_PREFIX..);
    let mut seen = false;
    for k in 0..=body.len() {
        match message::chunk_head(&body.slice(..k), body.len()) {
            Ok(None) => assert!(!seen, "a head read, then not with more bytes"),
            Ok(Some(h)) => {
                seen = true;
                assert_eq!((h.track, h.index, &h.groups), (c.track, c.index, &c.groups));
                assert_eq!((h.data_len, h.head_len + h.data_len), (c.data.len(), body.len()));
            }
            Err(e) => panic!("a valid frame's head refused at {k} bytes: {e}"),
        }
    }
    assert!(seen, "the whole body holds the head");
}

/// Arbitrary bytes as a manifest: whatever decodes is canonical (its
/// encoding is the input); nothing panics. The same bytes as pages of its
/// hash list (their index points are read before the page's hash is
/// checked): refused or learned, never a panic, and what is known of the
/// index still rises.
pub fn manifests(data: &[u8]) {
    if let Ok(m) = Manifest::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(&m.encoded()[..], data);
        for first in 0..m.page_count().min(2) {
            let _ = m.learn_hashes(first, data);
        }
        let points = m.time_points();
        assert!(points.windows(2).all(|w| w[0].byte_offset < w[1].byte_offset));
    }
}
