//! Replays the fuzzers' committed corpora (`fuzz/corpus/`) through the
//! same properties the fuzz targets check: every input they kept still
//! decodes without a panic and round-trips. Runs on stable, in CI.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../fuzz/props.rs"]
mod props;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        check(&data);
        n += 1;
    }
    n
}

#[test]
fn the_frame_decoder_corpus_round_trips() {
    assert!(replay("frame_decoder", props::frames) > 100);
}

#[test]
fn the_manifest_decoder_corpus_is_canonical() {
    assert!(replay("manifest_decoder", props::manifests) > 10);
}
