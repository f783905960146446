//! Zero-configuration discovery on a LAN: two network namespaces joined by
//! a veth pair (made and removed by the test; CI runs as root). A seed in
//! one announces itself over mDNS; in the other, `chorus search` and
//! `chorus play` with no peer given find it and play from it. No packet
//! leaves the two namespaces.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;

/// A network namespace of the test's own, removed when dropped.
struct Netns(String);

impl Netns {
    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

/// Two namespaces on one link, 10.251.0.1/24 and 10.251.0.2/24; `None`
/// (and a note) where namespaces cannot be made (not root).
fn link() -> Option<(Netns, Netns)> {
    let tag = std::process::id() % 100_000;
    let (a, b) = (format!("chorus-a{tag}"), format!("chorus-b{tag}"));
    if !ip(&["netns", "add", &a]) {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root and must make namespaces");
        eprintln!("skipped: making network namespaces needs root");
        return None;
    }
    let a = Netns(a);
    assert!(ip(&["netns", "add", &b]));
    let b = Netns(b);
    let (va, vb) = (format!("cva{tag}"), format!("cvb{tag}"));
    assert!(ip(&[
        "link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns", &b.0
    ]));
    for (ns, dev, addr) in [(&a, &va, "10.251.0.1/24"), (&b, &vb, "10.251.0.2/24")] {
        assert!(ip(&["-n", &ns.0, "addr", "add", addr, "dev", dev]));
        assert!(ip(&["-n", &ns.0, "link", "set", dev, "up"]));
        assert!(ip(&["-n", &ns.0, "link", "set", "lo", "up"]));
    }
    Some((a, b))
}

fn chorus_in(ns: &Netns, data: &std::path::Path) -> Command {
    let mut c = ns.exec();
    c.arg(env!("CARGO_BIN_EXE_chorus"))
        .arg("--data-dir")
        .arg(data)
        .env("XDG_CONFIG_HOME", data.join("config-home"))
        .env_remove("CHORUS_CONFIG")
        .env_remove("CHORUS_LOG")
        .env("CHORUS_LAN", "on")
        .env("CHORUS_PORT_MAP", "off");
    c
}

#[test]
fn a_node_on_the_lan_is_found_by_mdns_with_no_configuration_and_played_from() {
    let Some((seed_ns, listener_ns)) = link() else { return };
    let lib = library_dir(&["apex-aleph.ogg"]);
    let seed_data = tempfile::tempdir().unwrap();
    let (seed, mut lines) = spawn_lines(
        chorus_in(&seed_ns, seed_data.path())
            .args(["seed", "--listen", "0.0.0.0:0"])
            .arg(lib.path()),
    );
    let announced = lines.find(|l| l.starts_with("announced"));
    assert!(announced.is_some(), "the seed did not announce itself");

    let data = tempfile::tempdir().unwrap();
    // Search with nothing configured: the LAN answers.
    let o = chorus_in(&listener_ns, data.path()).args(["search", "apex"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("Apex Aleph"), "{stdout}");

    // Play, likewise: sample-exact against a local decode.
    let wav = data.path().join("out.wav");
    let o = chorus_in(&listener_ns, data.path())
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
    let o = chorus_in(&listener_ns, fresh.path())
        .env("CHORUS_LAN", "off")
        .args(["search", "apex"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no peer to ask"));
    drop(seed);
}
