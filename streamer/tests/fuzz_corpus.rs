//! Replays the scheduler fuzzer's committed corpus (`fuzz/corpus/scheduler`)
//! through the same property the fuzz target checks. Runs on stable, in CI.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../fuzz/scheduler_props.rs"]
mod scheduler_props;

#[test]
fn the_scheduler_corpus_neither_panics_nor_names_unknown_peers_or_chunks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/scheduler");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        scheduler_props::scheduler(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 100, "{n} inputs");
}
