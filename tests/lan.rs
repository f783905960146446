//! Zero-configuration discovery on a LAN: two network namespaces joined by
//! a veth pair (made and removed by the test; CI runs as root). A seed in
//! one announces itself over mDNS; in the other, `chorus search` and
//! `chorus play` with no peer given find it and play from it. No packet
//! leaves the two namespaces.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::netns::{Netns, chorus_in, ip};
use common::*;

/// Two namespaces on one link, 10.251.0.1/24 and 10.251.0.2/24; `None`
/// (and a note) where namespaces cannot be made (not root).
fn link() -> Option<(Netns, Netns)> {
    let tag = std::process::id() % 100_000;
    let a = Netns::new(format!("chorus-a{tag}"))?;
    let b = Netns::new(format!("chorus-b{tag}")).unwrap();
    let (va, vb) = (format!("cva{tag}"), format!("cvb{tag}"));
    assert!(ip(&[
        "link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns", &b.0
    ]));
    for (ns, dev, addr) in [(&a, &va, "10.251.0.1/24"), (&b, &vb, "10.251.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    Some((a, b))
}

/// `chorus` inside `ns`, LAN discovery on.
fn chorus_on_lan(ns: &Netns, data: &std::path::Path) -> Command {
    let mut c = chorus_in(ns, data);
    c.env("CHORUS_LAN", "on");
    c
}

#[test]
fn a_node_on_the_lan_is_found_by_mdns_with_no_configuration_and_played_from() {
    let Some((seed_ns, listener_ns)) = link() else { return };
    let lib = library_dir(&["apex-aleph.ogg"]);
    let seed_data = tempfile::tempdir().unwrap();
    let (seed, mut lines) = spawn_lines(
        chorus_on_lan(&seed_ns, seed_data.path())
            .args(["seed", "--listen", "0.0.0.0:0"])
            .arg(lib.path()),
    );
    let announced = lines.find(|l| l.starts_with("announced"));
    assert!(announced.is_some(), "the seed did not announce itself");

    let data = tempfile::tempdir().unwrap();
    // Search with nothing configured: the LAN answers.
    let o = chorus_on_lan(&listener_ns, data.path()).args(["search", "apex"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("Apex Aleph"), "{stdout}");

    // Play, likewise: sample-exact against a local decode.
    let wav = data.path().join("out.wav");
    let o = chorus_on_lan(&listener_ns, data.path())
        .args(["play", "apex aleph", "--out"])
        .arg(&wav)
        .args(["--duration", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("playing \"Apex Aleph\""), "{stdout}");
    assert_eq!(assert_plays_start_of(&wav, "apex-aleph.ogg"), 2 * 48_000 * 2);

    // With discovery off, a new listener finds nobody.
    let fresh = tempfile::tempdir().unwrap();
    let o = chorus_on_lan(&listener_ns, fresh.path())
        .env("CHORUS_LAN", "off")
        .args(["search", "apex"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no peer to ask"));
    drop(seed);
}
