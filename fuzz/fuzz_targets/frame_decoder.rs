//! Feeds arbitrary bytes to the frame decoder, whole and in pieces. Any frame
//! that decodes must re-encode to bytes that decode to the same message.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::frames(data));
