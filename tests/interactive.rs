//! `chorus play` on a real terminal: the binary runs in a tmux pane (a
//! pseudo-terminal), keys go in with send-keys, and the status line is read
//! back with capture-pane.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of our own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        let socket = format!("chorus-test-{}", std::process::id());
        Self { socket }
    }

    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is needed for this test: scripts/setup installs it");
        assert!(o.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "play"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "play"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Polls the screen (every 50 ms, at most `limit`) until `ok` holds.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited {limit:?} for {what}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

/// The status line's position in seconds, if `title` is playing.
fn position(screen: &str, title: &str) -> Option<u64> {
    let line = screen.lines().rev().find(|l| l.contains(title) && l.contains(" / "))?;
    let before = line.split(" / ").next()?;
    let clock = before.rsplit(' ').next()?;
    let (m, s) = clock.split_once(':')?;
    Some(m.trim().parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?)
}

#[test]
fn keys_pause_seek_change_volume_skip_and_quit_and_the_status_line_follows() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["apex-aleph.ogg", "inevitable.mp3"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let seed = rt.block_on(async { Seed::start(library) });
    let client = tempfile::tempdir().unwrap();
    let command = format!(
        "env XDG_CONFIG_HOME={cfg} CHORUS_LOG=error {bin} --data-dir {data} play 'apex aleph' inevitable --peer {id}@{addr} --out null; echo EXITED $?; sleep 60",
        cfg = client.path().join("config").display(),
        bin = env!("CARGO_BIN_EXE_chorus"),
        data = client.path().display(),
        id = seed.id,
        addr = seed.addr,
    );
    let tmux = Tmux::new();
    tmux.run(&["new-session", "-d", "-s", "play", "-x", "200", "-y", "12", &command]);
    let long = Duration::from_secs(30);

    let s = tmux.wait_for("the status line", long, |s| position(s, "Apex Aleph").is_some());
    assert!(s.contains("▶ Apex Aleph – Max McCracken") && s.contains("/ 1:44"), "{s}");
    assert!(s.contains("underruns") && s.contains("vol 100%") && s.contains("buffered"), "{s}");

    // Pause: the status says so, and the position stands still.
    tmux.keys(&["Space"]);
    let s = tmux.wait_for("paused", long, |s| s.contains("⏸ paused"));
    let held = position(&s, "Apex Aleph").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let s = tmux.screen();
    assert!(s.contains("⏸ paused"), "{s}");
    assert_eq!(position(&s, "Apex Aleph"), Some(held), "paused, yet the position moved: {s}");

    // Resume, then seek 10 s ahead: the position jumps.
    tmux.keys(&["Space"]);
    tmux.wait_for("playing again", long, |s| !s.contains("⏸ paused") && s.contains("▶ Apex"));
    tmux.keys(&["Right"]);
    tmux.wait_for("the seek", long, |s| position(s, "Apex Aleph").is_some_and(|p| p >= held + 10));

    // Volume up, shown in the status line.
    tmux.keys(&["Up"]);
    tmux.wait_for("the volume", long, |s| s.contains("vol 110%"));

    // Next: the second track plays (at the volume chosen).
    tmux.keys(&["n"]);
    let s = tmux.wait_for("the next track", long, |s| position(s, "Inevitable").is_some());
    assert!(s.contains("[2/2] playing \"Inevitable\""), "{s}");
    assert!(s.contains("vol 110%"), "{s}");

    // Quit: the process ends cleanly.
    tmux.keys(&["q"]);
    let s = tmux.wait_for("the exit", long, |s| s.contains("EXITED"));
    assert!(s.contains("EXITED 0"), "{s}");
    rt.block_on(seed.stop());
}
