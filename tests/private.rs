//! Private swarms: nodes given the same `--swarm` key accept and find only
//! each other. An outsider (no key, or another key) can neither connect,
//! nor search, nor find the swarm's DHT announcements; members stream as
//! usual. The DHT is `mainline`'s testnet on 127.0.0.1.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;

fn new_key() -> String {
    let data = tempfile::tempdir().unwrap();
    let o = chorus_cmd(data.path()).args(["swarm", "new"]).output().unwrap();
    assert!(o.status.success());
    let key = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");
    key
}

#[test]
fn only_members_connect_search_find_and_play() {
    let (key, other) = (new_key(), new_key());
    assert_ne!(key, other);
    let testnet = mainline::Testnet::builder(8).build().unwrap();
    let bootstrap = testnet.bootstrap.join(",");

    let lib = library_dir(&["apex-aleph.ogg"]);
    let seed_data = tempfile::tempdir().unwrap();
    let (_seed, lines) = spawn_lines(
        chorus_cmd(seed_data.path())
            .args(["seed", "--listen", "127.0.0.1:0", "--dht-bootstrap", &bootstrap])
            .args(["--swarm", &key])
            .arg(lib.path()),
    );
    let mut peer = None;
    for line in lines {
        if let Some(p) = line.strip_prefix("peers can reach it with --peer ") {
            peer = Some(p.replace("<this-host>", "127.0.0.1"));
        }
        if line.starts_with("announced") {
            break;
        }
    }
    let peer = peer.expect("the seed's address");
    let run = |swarm: Option<&str>, args: &[&str]| {
        let data = tempfile::tempdir().unwrap();
        let mut c = chorus_cmd(data.path());
        c.args(args);
        if let Some(k) = swarm {
            c.args(["--swarm", k]);
        }
        let o = c.output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        (o.status.success(), text)
    };

    // A member: by address, and through the DHT with no address at all.
    let (ok, out) = run(Some(&key), &["search", "apex", "--peer", &peer]);
    assert!(ok && out.contains("Apex Aleph"), "{out}");
    let (ok, out) = run(Some(&key), &["search", "apex", "--dht-bootstrap", &bootstrap]);
    assert!(ok && out.contains("Apex Aleph"), "{out}");
    let (ok, out) =
        run(Some(&key), &["play", "apex", "--peer", &peer, "--out", "null", "--duration", "0.3"]);
    assert!(ok && out.contains("playing \"Apex Aleph\""), "{out}");

    // Outsiders, without a key or with another: refused at the handshake,
    // and the swarm's DHT keys are not theirs to find.
    for swarm in [None, Some(other.as_str())] {
        let (ok, out) = run(swarm, &["search", "apex", "--peer", &peer]);
        assert!(!ok && !out.contains("Apex Aleph"), "{swarm:?} connected: {out}");
        assert!(out.contains("private swarm"), "the error says why: {out}");
        let (ok, out) = run(swarm, &["search", "apex", "--dht-bootstrap", &bootstrap]);
        assert!(!ok && out.contains("no peer to ask"), "{swarm:?} found the swarm: {out}");
        let (ok, out) =
            run(swarm, &["play", "apex", "--peer", &peer, "--out", "null", "--duration", "0.3"]);
        assert!(!ok && !out.contains("playing \""), "{swarm:?} played: {out}");
    }
}
