//! Network namespaces a test makes (and removes when dropped), for tests
//! of what crosses a network: the LAN and NAT tests. Making them needs
//! root; without it a test skips itself, saying so (CI runs as root and
//! requires them).

use std::path::Path;
use std::process::Command;

/// A network namespace of the test's own, removed when dropped.
pub struct Netns(pub String);

impl Netns {
    /// Makes namespace `name` with its loopback up; `None` (and a note)
    /// where namespaces cannot be made (not root), which CI does not allow.
    pub fn new(name: String) -> Option<Self> {
        if !ip(&["netns", "add", &name]) {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root and must make namespaces");
            eprintln!("skipped: making network namespaces needs root");
            return None;
        }
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// A command run inside the namespace.
    pub fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }

    /// `ip -n NAME ARGS…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
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

/// `ip ARGS…`; true if it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

/// `chorus` inside `ns`, with the test settings of [`super::chorus_cmd`].
pub fn chorus_in(ns: &Netns, data: &Path) -> Command {
    let mut c = ns.exec();
    c.arg(env!("CARGO_BIN_EXE_chorus"));
    super::test_settings(&mut c, data);
    c
}
