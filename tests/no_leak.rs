//! Nothing Chorus runs in tests, `demo` or `bench` sends a packet beyond
//! loopback. Each command runs in a network namespace of the test's own
//! whose only way out (the default route) is one end of a veth pair whose
//! other end is in the same namespace: a packet to any other host is
//! counted there, and goes nowhere. Positive
//! controls prove the counter sees traffic: the public DHT (`--dht on`)
//! and LAN discovery (`--lan on`) both send through it.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;

/// A namespace with loopback and a dummy default route.
struct Sealed(String);

impl Sealed {
    fn new() -> Option<Self> {
        let name = format!("chorus-s{}", std::process::id() % 100_000);
        let ok =
            Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        if !ok {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root and must make namespaces");
            eprintln!("skipped: making network namespaces needs root");
            return None;
        }
        let me = Self(name);
        // No IPv6 here: the kernel's own router solicitations and multicast
        // reports would be counted as if Chorus had sent them.
        for key in ["all", "default"] {
            let ok = Command::new("ip")
                .args(["netns", "exec", &me.0, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
                .status()
                .unwrap();
            assert!(ok.success());
        }
        for args in [
            &["link", "set", "lo", "up"][..],
            // A veth pair with both ends here: what leaves by `out0` ends
            // at `sink0` and goes no further.
            &["link", "add", "out0", "type", "veth", "peer", "name", "sink0"],
            &["addr", "add", "10.251.9.1/24", "dev", "out0"],
            &["link", "set", "out0", "up"],
            &["link", "set", "sink0", "up"],
            &["route", "add", "default", "dev", "out0"],
        ] {
            let ok = Command::new("ip").args(["-n", &me.0]).args(args).status().unwrap();
            assert!(ok.success(), "ip {args:?}");
        }
        Some(me)
    }

    /// Packets sent out of the namespace so far.
    fn sent(&self) -> u64 {
        let o = Command::new("ip").args(["-n", &self.0, "-s", "link", "show", "out0"]).output();
        let text = String::from_utf8(o.unwrap().stdout).unwrap();
        let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with("TX:"));
        let counts = lines.nth(1).expect("TX counters");
        counts.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// `chorus` inside the namespace, with the settings tests use.
    fn chorus(&self, data: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, env!("CARGO_BIN_EXE_chorus")])
            .arg("--data-dir")
            .arg(data)
            .env("XDG_CONFIG_HOME", data.join("config-home"))
            .env_remove("CHORUS_CONFIG")
            .env_remove("CHORUS_LOG")
            .env_remove("CHORUS_DHT")
            .env_remove("CHORUS_DHT_BOOTSTRAP")
            .env("CHORUS_LAN", "off")
            .env("CHORUS_PORT_MAP", "off");
        c
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn seed_play_search_demo_and_bench_send_nothing_beyond_loopback() {
    let Some(ns) = Sealed::new() else { return };
    let quiet = ns.sent();
    let lib = library_dir(&["apex-aleph.ogg"]);
    let seed_data = tempfile::tempdir().unwrap();
    let (_seed, mut lines) = spawn_lines(
        ns.chorus(seed_data.path()).args(["seed", "--listen", "127.0.0.1:0"]).arg(lib.path()),
    );
    let peer = lines
        .find_map(|l| l.strip_prefix("peers can reach it with --peer ").map(str::to_owned))
        .unwrap()
        .replace("<this-host>", "127.0.0.1");

    let data = tempfile::tempdir().unwrap();
    let runs: Vec<Vec<String>> = vec![
        vec!["search".into(), "apex".into(), "--peer".into(), peer.clone()],
        vec![
            "play".into(),
            "apex".into(),
            "--peer".into(),
            peer.clone(),
            "--out".into(),
            "null".into(),
            "--duration".into(),
            "0.5".into(),
        ],
        // Nothing configured: the remembered seed, and nothing else.
        vec![
            "play".into(),
            "apex".into(),
            "--out".into(),
            "null".into(),
            "--duration".into(),
            "0.5".into(),
        ],
        vec![
            "demo".into(),
            "--samples".into(),
            lib.path().display().to_string(),
            "--out".into(),
            "null".into(),
            "--duration".into(),
            "0.5".into(),
        ],
        vec![
            "bench".into(),
            "--samples".into(),
            lib.path().display().to_string(),
            "--scenario".into(),
            "single".into(),
            "--profile".into(),
            "lan".into(),
            "--plays".into(),
            "1".into(),
            "--peers".into(),
            "1".into(),
        ],
    ];
    for args in &runs {
        let o = ns.chorus(data.path()).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(ns.sent(), quiet, "a packet left loopback");

    // A local DHT through a loopback bootstrap stays on loopback too.
    let testnet_data = tempfile::tempdir().unwrap();
    let o = ns
        .chorus(testnet_data.path())
        .args(["search", "apex", "--dht-bootstrap", "127.0.0.1:9", "--peer", &peer])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ns.sent(), quiet, "a DHT with a loopback bootstrap left loopback");

    // Controls: the public DHT and LAN discovery do go out (and are
    // counted), so the zeros above mean something.
    let _ =
        ns.chorus(data.path()).args(["search", "apex", "--dht", "on", "--peer", &peer]).output();
    let after_dht = ns.sent();
    assert!(after_dht > quiet, "the public DHT was not seen leaving");
    let _ = ns.chorus(data.path()).env("CHORUS_LAN", "on").args(["search", "apex"]).output();
    assert!(ns.sent() > after_dht, "mDNS was not seen leaving");
}
