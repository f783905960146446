//! Reaching a seed behind a home router, on a small internet made of
//! network namespaces (made and removed by the test; CI runs as root):
//!
//! ```text
//!   home A: host 192.168.1.2 ── router (NAT) 100.200.0.2 ─┐
//!                                                         ├─ bridge: public peer 100.200.0.1
//!   home B: host 192.168.2.2 ── router (NAT) 100.200.0.3 ─┘
//! ```
//!
//! Each router masquerades its home behind its public address with
//! nftables and drops unsolicited inbound packets, as home routers do.
//! "Cone" routers keep a host's port for every destination (Linux's
//! masquerade); "symmetric" ones pick a random port per destination
//! (`masquerade random`). The seed in home B joins the public peer; the
//! listener in home A, told only the public peer, plays the seed's track.
//! No packet leaves the namespaces (the 100.200.0.0/24 "internet" is a
//! bridge inside one of them, with no route out).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;

/// A network namespace of the test's own, removed when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Option<Self> {
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Self(name);
        assert!(ip(&["-n", &ns.0, "link", "set", "lo", "up"]));
        Some(ns)
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        assert!(ip(&all), "ip {all:?}");
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

#[derive(Clone, Copy, PartialEq)]
enum Nat {
    /// One mapping per local port, whatever the destination.
    Cone,
    /// A random port per destination.
    Symmetric,
}

/// The public namespace and two homes (router, host) behind NATs.
struct Internet {
    public: Netns,
    homes: Vec<(Netns, Netns)>,
}

const PUBLIC_IP: &str = "100.200.0.1";

/// Builds the internet; `None` (and a note) where namespaces cannot be made.
fn internet(nats: [Nat; 2]) -> Option<Internet> {
    let kind = if nats[0] == Nat::Cone { "c" } else { "s" };
    let tag = format!("{kind}{}", std::process::id() % 100_000);
    let Some(public) = Netns::new(format!("chorus-pub{tag}")) else {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root and must make namespaces");
        eprintln!("skipped: making network namespaces needs root");
        return None;
    };
    if Command::new("nft").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs nftables (scripts/setup)");
        eprintln!("skipped: nft (nftables) is not installed");
        return None;
    }
    public.ip(&["link", "add", "br0", "type", "bridge"]);
    public.ip(&["addr", "add", &format!("{PUBLIC_IP}/24"), "dev", "br0"]);
    public.ip(&["link", "set", "br0", "up"]);
    let mut homes = Vec::new();
    for (i, nat) in nats.into_iter().enumerate() {
        let n = i + 1;
        let router = Netns::new(format!("chorus-r{n}-{tag}")).unwrap();
        let host = Netns::new(format!("chorus-h{n}-{tag}")).unwrap();
        // The router's WAN end on the public bridge.
        let port = format!("port{n}");
        assert!(ip(&[
            "link", "add", "wan", "netns", &router.0, "type", "veth", "peer", "name", &port,
            "netns", &public.0
        ]));
        public.ip(&["link", "set", &port, "master", "br0"]);
        public.ip(&["link", "set", &port, "up"]);
        router.ip(&["addr", "add", &format!("100.200.0.{}/24", n + 1), "dev", "wan"]);
        router.ip(&["link", "set", "wan", "up"]);
        // The home LAN.
        assert!(ip(&[
            "link", "add", "lan", "netns", &router.0, "type", "veth", "peer", "name", "eth0",
            "netns", &host.0
        ]));
        router.ip(&["addr", "add", &format!("192.168.{n}.1/24"), "dev", "lan"]);
        router.ip(&["link", "set", "lan", "up"]);
        host.ip(&["addr", "add", &format!("192.168.{n}.2/24"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host.ip(&["route", "add", "default", "via", &format!("192.168.{n}.1")]);
        let forward =
            router.exec().args(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]).status().unwrap();
        assert!(forward.success());
        let masquerade = if nat == Nat::Symmetric { "masquerade random" } else { "masquerade" };
        let rules = format!(
            "table ip nat {{\n chain postrouting {{\n  type nat hook postrouting priority 100;\n  \
             oifname \"wan\" {masquerade}\n }}\n}}\n\
             table inet filter {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n  \
             iifname \"wan\" ct state new drop\n }}\n chain input {{\n  type filter hook input priority 0; policy accept;\n  \
             iifname \"wan\" ct state new drop\n }}\n}}\n"
        );
        let mut nft = router
            .exec()
            .args(["nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        nft.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(nft.wait().unwrap().success(), "nft rules:\n{rules}");
        homes.push((router, host));
    }
    Some(Internet { public, homes })
}

fn chorus_in(ns: &Netns, data: &std::path::Path) -> Command {
    let mut c = ns.exec();
    c.arg(env!("CARGO_BIN_EXE_chorus"))
        .arg("--data-dir")
        .arg(data)
        .env("XDG_CONFIG_HOME", data.join("config-home"))
        .env_remove("CHORUS_CONFIG")
        .env_remove("CHORUS_LOG")
        .env("CHORUS_LAN", "off");
    c
}

/// The `PEER_ID@ADDR` a seed prints.
fn reach_line(lines: &mut impl Iterator<Item = String>) -> String {
    let line = lines.find(|l| l.starts_with("peers can reach it with --peer ")).unwrap();
    line.trim_start_matches("peers can reach it with --peer ").to_owned()
}

/// The public peer, the seed behind NAT B joined to it, and the listener
/// behind NAT A playing the seed's track given only the public peer.
/// Returns what `chorus peers` says afterwards in the listener's data dir.
fn play_across(net: &Internet) -> String {
    let empty = tempfile::tempdir().unwrap();
    let public_data = tempfile::tempdir().unwrap();
    let (_public, mut lines) = spawn_lines(
        chorus_in(&net.public, public_data.path())
            .args(["seed", "--listen", &format!("{PUBLIC_IP}:0")])
            .arg(empty.path()),
    );
    let public = reach_line(&mut lines);

    let lib = library_dir(&["apex-aleph.ogg"]);
    let seed_data = tempfile::tempdir().unwrap();
    let (_seed, mut seed_lines) = spawn_lines(
        chorus_in(&net.homes[1].1, seed_data.path())
            .args(["seed", "--listen", "0.0.0.0:0", "--peer", &public])
            .arg(lib.path()),
    );
    let joined = seed_lines.find(|l| l.starts_with("joined")).unwrap();
    assert!(joined.starts_with("joined 1 of 1"), "{joined}");
    let (library, _, _) = scan(lib.path(), tempfile::tempdir().unwrap().path());
    let track = library.tracks().next().unwrap().manifest.id().to_string();

    let listener = tempfile::tempdir().unwrap();
    let wav = listener.path().join("out.wav");
    let o = chorus_in(&net.homes[0].1, listener.path())
        .args(["play", &track, "--peer", &public, "--out"])
        .arg(&wav)
        .args(["--duration", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(assert_plays_start_of(&wav, "apex-aleph.ogg"), 2 * 48_000 * 2);
    let o = chorus_in(&net.homes[0].1, listener.path()).arg("peers").output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The row of `chorus peers` for the peer that served bytes (not the
/// public peer, which holds nothing).
fn seed_row(peers: &str) -> &str {
    peers
        .lines()
        .find(|l| l.contains("192.168.") || l.contains("100.200.0.3") || l.contains("relayed"))
        .unwrap_or_else(|| panic!("no row for the seed:\n{peers}"))
}

#[test]
fn behind_two_cone_nats_the_listener_plays_over_a_punched_connection() {
    let Some(net) = internet([Nat::Cone, Nat::Cone]) else { return };
    let peers = play_across(&net);
    eprintln!("{peers}");
    let row = seed_row(&peers);
    assert!(row.contains("punched"), "{peers}");
    assert!(row.contains("100.200.0.3"), "reached at the seed's public address: {peers}");
}

#[test]
fn behind_two_symmetric_nats_the_listener_plays_through_a_relay() {
    let Some(net) = internet([Nat::Symmetric, Nat::Symmetric]) else { return };
    let peers = play_across(&net);
    eprintln!("{peers}");
    let row = seed_row(&peers);
    assert!(row.contains("relayed"), "{peers}");
    assert!(row.contains(PUBLIC_IP), "through the public peer's relay: {peers}");
}
