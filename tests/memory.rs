//! The node remembers the network: a listener that played from a peer once
//! finds it again with nothing configured, and `chorus peers` lists what it
//! knows (how it learned of each peer, verified, RTT, bytes served).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;

#[test]
fn a_restarted_listener_is_back_in_the_swarm_without_asking_anyone() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["apex-aleph.ogg"]);
    let seed_data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), seed_data.path());
    let seed = rt.block_on(async { Seed::start(library) });
    let peer = format!("{}@{}", seed.id, seed.addr);
    let data = tempfile::tempdir().unwrap();

    // Nothing remembered yet.
    let o = chorus_cmd(data.path()).arg("peers").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("no peers remembered"));

    let o = chorus_cmd(data.path())
        .args(["play", "apex", "--peer", &peer, "--out", "null", "--duration", "0.5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = chorus_cmd(data.path()).arg("peers").output().unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    let short = &seed.id.to_string()[..8];
    let row = listing.lines().find(|l| l.starts_with(short)).expect("the seed is listed");
    assert!(row.contains(&seed.addr.to_string()) && row.contains("flag"), "{row}");
    let served = row.contains("kB") || row.contains("MB");
    assert!(row.contains(" ms") && served, "RTT and bytes served: {row}");

    // Again, with no peer given (no config, no LAN, no DHT): from memory.
    // The seed gave a start ticket last time: the request rides in the
    // handshake, and the answer comes with the seed's.
    let o = chorus_cmd(data.path())
        .args(["play", "apex", "--out", "null", "--duration", "0.5", "-v"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("from 1 peer(s)"), "played from the remembered seed: {stdout}");
    let start = stdout.lines().find(|l| l.contains("start: dial")).expect("the start timeline");
    assert!(start.contains("start sealed in the handshake"), "{start}");
    assert!(!start.contains("start request sent"), "{start}");
    assert!(start.contains("decoder ready") && start.contains("first sample"), "{start}");
    rt.block_on(seed.stop());
}
