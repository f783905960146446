//! Feeds arbitrary bytes to the manifest decoder; whatever decodes must be
//! canonical (its encoding is the input).
#![no_main]

use bytes::Bytes;
use chorus_protocol::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(&m.encoded()[..], data);
    }
});
