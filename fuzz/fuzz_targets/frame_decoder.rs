//! Feeds arbitrary bytes to the frame decoder, whole and in pieces. Any frame
//! that decodes must re-encode to bytes that decode to the same message.
#![no_main]

use bytes::BytesMut;
use chorus_protocol::frame::{self, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
