//! The properties the fuzz targets check, shared with the stable test that
//! replays the committed corpora (`protocol/tests/fuzz_corpus.rs`), so CI
//! keeps every input the fuzzers found without a nightly toolchain.

use bytes::{Bytes, BytesMut};
use chorus_protocol::Manifest;
use chorus_protocol::frame::{self, FrameDecoder};

/// Arbitrary bytes through the frame decoder, whole and in pieces (the
/// first byte sets the piece size): any frame that decodes re-encodes to
/// bytes that decode to the same message; nothing panics.
pub fn frames(data: &[u8]) {
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
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish(&buf);
}

/// Arbitrary bytes as a manifest: whatever decodes is canonical (its
/// encoding is the input); nothing panics.
pub fn manifests(data: &[u8]) {
    if let Ok(m) = Manifest::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(&m.encoded()[..], data);
    }
}
