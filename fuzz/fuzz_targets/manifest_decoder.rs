//! Feeds arbitrary bytes to the manifest decoder; whatever decodes must be
//! canonical (its encoding is the input).
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::manifests(data));
