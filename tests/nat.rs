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

use common::netns::{Netns, chorus_in, ip};
use common::*;

#[derive(Clone, Copy, PartialEq)]
enum Nat {
    /// One mapping per local port, whatever the destination.
    Cone,
    /// A random port per destination.
    Symmetric,
    /// Cone-like, and running a UPnP IGD (Debian's `miniupnpd`).
    Upnp,
    /// Cone-like, and answering PCP and NAT-PMP (the same daemon).
    Pcp,
}

/// The public namespace and two homes (router, host) behind NATs.
struct Internet {
    public: Netns,
    homes: Vec<(Netns, Netns)>,
    /// The routers' UPnP daemons.
    _upnp: Vec<Running>,
    _upnp_dir: tempfile::TempDir,
}

const PUBLIC_IP: &str = "100.200.0.1";

/// Builds the internet; `None` (and a note) where namespaces cannot be made.
/// `name` tells the tests' namespaces apart (they run in parallel).
fn internet(name: &str, nats: [Nat; 2]) -> Option<Internet> {
    let tag = format!("{name}{}", std::process::id() % 100_000);
    let public = Netns::new(format!("chorus-pub{tag}"))?;
    if Command::new("nft").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs nftables (scripts/setup)");
        eprintln!("skipped: nft (nftables) is not installed");
        return None;
    }
    public.ip(&["link", "add", "br0", "type", "bridge"]);
    public.ip(&["addr", "add", &format!("{PUBLIC_IP}/24"), "dev", "br0"]);
    public.ip(&["link", "set", "br0", "up"]);
    let mut homes = Vec::new();
    let mut upnp = Vec::new();
    let upnp_dir = tempfile::tempdir().unwrap();
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
        // Unsolicited packets from outside are dropped, but for ports the
        // router forwards (UPnP's mappings: DNAT).
        let mut rules = include_str!("../lab/home-router.nft").replace("MASQUERADE", masquerade);
        if matches!(nat, Nat::Upnp | Nat::Pcp) {
            rules.push_str(include_str!("../lab/miniupnpd.nft"));
        }
        nft(&router, &rules);
        if matches!(nat, Nat::Upnp | Nat::Pcp) {
            upnp.push(miniupnpd(&router, upnp_dir.path(), n, nat == Nat::Upnp));
        }
        homes.push((router, host));
    }
    Some(Internet { public, homes, _upnp: upnp, _upnp_dir: upnp_dir })
}

/// Runs Debian's miniupnpd on `router`: UPnP IGD (`upnp`) or PCP and
/// NAT-PMP on the LAN side, mapping to the WAN side, for hosts of the home
/// network only. Returns once it serves.
fn miniupnpd(router: &Netns, dir: &std::path::Path, n: usize, upnp: bool) -> Running {
    let (upnp, pmp) = if upnp { ("yes", "no") } else { ("no", "yes") };
    let conf = dir.join(format!("miniupnpd{n}.conf"));
    std::fs::write(
        &conf,
        format!(
            "ext_ifname=wan\nlistening_ip=lan\nport=0\nenable_upnp={upnp}\nenable_natpmp={pmp}\n\
             secure_mode=yes\nsystem_uptime=yes\nupnp_table_name=miniupnpd\n\
             upnp_nat_table_name=miniupnpd\nuuid=3a1f8e2c-0b6d-4f5e-9c1a-00000000000{n}\n\
             allow 1024-65535 192.168.{n}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        ),
    )
    .unwrap();
    let pid = dir.join(format!("miniupnpd{n}.pid"));
    let mut child = router
        .exec()
        .arg("miniupnpd")
        .arg("-d")
        .arg("-f")
        .arg(&conf)
        .arg("-P")
        .arg(&pid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("miniupnpd (scripts/setup installs it)");
    use std::io::BufRead;
    let err = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(err).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    let ready = lines.find(|l| {
        seen.push(l.clone());
        l.contains("HTTP listening on port") || l.contains("Listening for NAT-PMP")
    });
    assert!(ready.is_some(), "miniupnpd did not start:\n{}", seen.join("\n"));
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Running(child)
}

/// The `PEER_ID@ADDR` a seed prints.
fn reach_line(lines: &mut impl Iterator<Item = String>) -> String {
    let line = lines.find(|l| l.starts_with("peers can reach it with --peer ")).unwrap();
    line.trim_start_matches("peers can reach it with --peer ").to_owned()
}

/// The public peer, and a seed behind NAT B joined to it.
struct Seeded {
    /// The public peer, as `PEER_ID@ADDR`.
    public: String,
    /// The seed's one track.
    track: String,
    /// The seed's output up to its joining the public peer.
    seed_log: Vec<String>,
    /// The seed, still running.
    seed: Running,
    _public: Running,
    _dirs: Vec<tempfile::TempDir>,
}

/// Starts the public peer and, behind NAT B, a seed of `sample` joined to
/// it (mapping its port on the router if `port_map`).
fn seed_behind_nat(net: &Internet, sample_name: &str, port_map: bool) -> Seeded {
    let empty = tempfile::tempdir().unwrap();
    let public_data = tempfile::tempdir().unwrap();
    let (public_peer, mut lines) = spawn_lines(
        chorus_in(&net.public, public_data.path())
            .args(["seed", "--listen", &format!("{PUBLIC_IP}:0")])
            .arg(empty.path()),
    );
    let public = reach_line(&mut lines);
    let lib = library_dir(&[sample_name]);
    let seed_data = tempfile::tempdir().unwrap();
    let (seed, mut seed_lines) = spawn_lines(
        chorus_in(&net.homes[1].1, seed_data.path())
            .env("CHORUS_PORT_MAP", if port_map { "on" } else { "off" })
            .args(["seed", "--listen", "0.0.0.0:0", "--peer", &public])
            .arg(lib.path()),
    );
    let mut seed_log = Vec::new();
    for l in seed_lines.by_ref() {
        seed_log.push(l.clone());
        if l.starts_with("joined") {
            break;
        }
    }
    let joined = seed_log.last().cloned().unwrap_or_default();
    assert!(joined.starts_with("joined 1 of 1"), "{seed_log:?}");
    std::thread::spawn(move || seed_lines.for_each(drop));
    let (library, _, _) = scan(lib.path(), tempfile::tempdir().unwrap().path());
    let track = library.tracks().next().unwrap().manifest.id().to_string();
    Seeded {
        public,
        track,
        seed_log,
        seed,
        _public: public_peer,
        _dirs: vec![empty, public_data, lib, seed_data],
    }
}

/// `chorus peers` in `data`, inside `ns`.
fn peers_in(ns: &Netns, data: &std::path::Path) -> String {
    let o = chorus_in(ns, data).arg("peers").output().unwrap();
    let peers = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{peers}");
    peers
}

/// A seed behind NAT B (see [`seed_behind_nat`]) and the listener behind
/// NAT A playing its track given only the public peer, sample-exact.
/// Returns the seed and what `chorus peers` says in the listener's data dir.
fn play_across(net: &Internet, port_map: bool) -> (Seeded, String) {
    let seeded = seed_behind_nat(net, "apex-aleph.ogg", port_map);
    let listener = tempfile::tempdir().unwrap();
    let wav = listener.path().join("out.wav");
    let o = chorus_in(&net.homes[0].1, listener.path())
        .args(["play", &seeded.track, "--peer", &seeded.public, "--out"])
        .arg(&wav)
        .args(["--duration", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(assert_plays_start_of(&wav, "apex-aleph.ogg"), 2 * 48_000 * 2);
    let peers = peers_in(&net.homes[0].1, listener.path());
    (seeded, peers)
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
    let Some(net) = internet("c", [Nat::Cone, Nat::Cone]) else { return };
    let (_seeded, peers) = play_across(&net, false);
    let row = seed_row(&peers);
    assert!(row.contains("punched"), "{peers}");
    assert!(row.contains("100.200.0.3"), "reached at the seed's public address: {peers}");
}

#[test]
fn behind_two_symmetric_nats_the_listener_plays_through_a_relay() {
    let Some(net) = internet("s", [Nat::Symmetric, Nat::Symmetric]) else { return };
    let (_seeded, peers) = play_across(&net, false);
    let row = seed_row(&peers);
    assert!(row.contains("relayed"), "{peers}");
    assert!(row.contains(PUBLIC_IP), "through the public peer's relay: {peers}");
}

/// A seed behind a router of kind `nat` maps its port with `protocol`, is
/// reached there directly, and removes the mapping when stopped.
fn mapped_directly(name: &str, nat: Nat, protocol: &str) {
    let Some(net) = internet(name, [Nat::Cone, nat]) else { return };
    let (mut seeded, peers) = play_across(&net, true);
    let mapped = seeded.seed_log.iter().find(|l| l.starts_with("mapped UDP port"));
    let mapped = mapped.unwrap_or_else(|| panic!("the seed mapped no port: {:?}", seeded.seed_log));
    assert!(mapped.contains(&format!("({protocol})")), "{mapped}");
    assert!(mapped.contains("reachable at 100.200.0.3:"), "{mapped}");
    let external = mapped.rsplit(' ').next().unwrap().to_owned();
    // Reached at the mapped address, directly (no punch, no relay), and
    // known to be mapped: the seed's hello names the address.
    let row = seed_row(&peers);
    assert!(row.contains("mapped") && row.contains(&external), "{peers}");
    let rules = |router: &Netns| {
        let o = router.exec().args(["nft", "list", "table", "inet", "miniupnpd"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let port = external.rsplit(':').next().unwrap().to_owned();
    let mapping = format!("dport {port} dnat");
    assert!(rules(&net.homes[1].0).contains(&mapping), "{}", rules(&net.homes[1].0));
    // Stopped, the seed removes its mapping from the router.
    let pid = seeded.seed.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(seeded.seed.0.wait().unwrap().success());
    assert!(!rules(&net.homes[1].0).contains(&mapping), "{}", rules(&net.homes[1].0));
}

#[test]
fn a_seed_behind_a_upnp_router_maps_its_port_and_is_reached_directly() {
    mapped_directly("u", Nat::Upnp, "UPnP");
}

#[test]
fn a_seed_behind_a_pcp_router_maps_its_port_and_is_reached_directly() {
    mapped_directly("p", Nat::Pcp, "PCP");
}

/// Runs `nft` on `router` with `rules` on standard input.
fn nft(router: &Netns, rules: &str) {
    use std::io::Write;
    let mut nft =
        router.exec().args(["nft", "-f", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    nft.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft rules:\n{rules}");
}

#[test]
fn a_relayed_listener_moves_to_a_direct_path_once_one_opens() {
    let Some(net) = internet("r", [Nat::Cone, Nat::Cone]) else { return };
    // Home B's router first blocks everything between the two homes: no
    // punch can work, the listener plays through the public peer's relay.
    let block = "table inet block {\n chain forward {\n  type filter hook forward priority -10;\n  \
                 ip daddr 100.200.0.2 drop\n }\n}\n";
    nft(&net.homes[1].0, block);

    let seeded = seed_behind_nat(&net, "awakening.flac", false);
    let (track, public) = (&seeded.track, &seeded.public);

    // Ten seconds of audio on the paced null sink, logging what it does.
    let listener = tempfile::tempdir().unwrap();
    let mut play = chorus_in(&net.homes[0].1, listener.path())
        .args(["-v", "play", track, "--peer", public, "--out", "null", "--duration", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let stderr = play.stderr.take().unwrap();
    let mut log = std::io::BufReader::new(stderr).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    let relayed = log.by_ref().find(|l| {
        seen.push(l.clone());
        l.contains("by a relayed path")
    });
    assert!(relayed.is_some(), "never relayed:\n{}", seen.join("\n"));
    // Now the homes can reach each other: the listener's next try for a
    // direct path punches through, and the fetch moves to it.
    nft(&net.homes[1].0, "delete table inet block\n");
    let rest: Vec<String> = log.collect();
    assert!(play.wait().unwrap().success(), "{}", rest.join("\n"));
    let upgraded = |l: &String| l.contains("takes over from its relayed path");
    assert!(rest.iter().any(upgraded), "no upgrade:\n{}", rest.join("\n"));
    let peers = peers_in(&net.homes[0].1, listener.path());
    // Its bytes came over the punched path too (the seed's public address,
    // not the relay's, is remembered only for bytes received directly).
    let row = seed_row(&peers);
    assert!(row.contains("punched") && row.contains("100.200.0.3"), "{peers}");
}

/// `chorus bench --scenario nat` as a user runs it (as root): for each NAT
/// case the listener got the path the case should give (the bench fails
/// otherwise), and the figures carry the delay lines' latency (80 ms RTT
/// host to host, 40 ms to the public peer): a connection to the seed
/// takes at least a round trip; first audio over the mapped path at least
/// four and a half (to the public peer and its who-has to the seed: 1.5;
/// handshake and hello with the seed: 2; the manifest: 1), which loopback
/// namespaces without the lines come nowhere near.
#[test]
fn the_nat_bench_reports_setup_and_first_audio_for_each_case() {
    // Only to learn whether namespaces can be made here.
    let Some(_probe) = Netns::new(format!("chorus-probe{}", std::process::id() % 100_000)) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("bench.json");
    let run = chorus_cmd(&out.path().join("data"))
        .args(["bench", "--samples"])
        .arg(samples())
        .args(["--profile", "transatlantic", "--plays", "1", "--scenario", "nat", "--json"])
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let results = json["results"].as_array().unwrap();
    let value = |metric: &str| {
        let s = results
            .iter()
            .find(|r| r["scenario"] == "nat" && r["metric"] == metric)
            .unwrap_or_else(|| panic!("no nat/{metric} in:\n{stdout}"));
        s["samples"][0].as_f64().unwrap()
    };
    for case in ["cone_punched", "symmetric_relayed", "upnp_mapped"] {
        let setup = value(&format!("{case}_setup_ms"));
        let audio = value(&format!("{case}_first_audio_ms"));
        assert!(setup >= 80.0, "{case}: set up in {setup} ms, under the 80 ms RTT");
        assert!(audio > setup, "{case}: audio at {audio} ms before the seed was reached");
        assert!(value(&format!("{case}_setup_rtt")) >= 1.0, "{case}");
    }
    let mapped = value("upnp_mapped_first_audio_rtt");
    assert!(mapped >= 4.5, "first audio over the mapped path after {mapped} RTT");
}
