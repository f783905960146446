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
        // One server per test: tests of this file run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("chorus-test-{}-{n}", std::process::id());
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
        "env XDG_CONFIG_HOME={cfg} CHORUS_LOG=error CHORUS_LAN=off {bin} --data-dir {data} play 'apex aleph' inevitable --peer {id}@{addr} --out null; echo EXITED $?; sleep 60",
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

/// CPU time (user + system, in clock ticks) a live process has used;
/// `None` once it has exited (gone, or a zombie nobody reaped yet).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// How a terminal session of `chorus play` is ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The terminal goes away: the tmux server is killed under the pane.
    CloseTerminal,
    /// `kill -TERM`.
    Term,
    /// `kill -HUP`.
    Hup,
}

/// Plays a long track on a terminal, ends it as `ending` says, and returns
/// how long the process took to go, the CPU it used meanwhile, and its
/// exit status (when the pane could report it).
fn end_a_playing_terminal(ending: Ending) -> (Duration, u64, Option<i32>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(&["awakening.flac"]);
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let seed = rt.block_on(async { Seed::start(library) });
    let client = tempfile::tempdir().unwrap();
    let pid_file = client.path().join("pid");
    let rc_file = client.path().join("rc");
    let command = format!(
        "sh -c 'echo $$ > {pid}; env XDG_CONFIG_HOME={cfg} CHORUS_LOG=error CHORUS_LAN=off {bin} --data-dir {data} play awakening --peer {id}@{addr} --out null --duration 600; echo $? > {rc}; sleep 60'",
        pid = pid_file.display(),
        rc = rc_file.display(),
        cfg = client.path().join("config").display(),
        bin = env!("CARGO_BIN_EXE_chorus"),
        data = client.path().display(),
        id = seed.id,
        addr = seed.addr,
    );
    let tmux = Tmux::new();
    tmux.run(&["new-session", "-d", "-s", "play", "-x", "200", "-y", "12", &command]);
    tmux.wait_for("the status line", Duration::from_secs(30), |s| {
        position(s, "Awakening").is_some()
    });
    // The shell's one child is chorus.
    let shell: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let before = cpu_ticks(pid).expect("playing");
    let t = Instant::now();
    match ending {
        Ending::CloseTerminal => {
            tmux.run(&["kill-server"]);
        }
        Ending::Term | Ending::Hup => {
            let sig = if matches!(ending, Ending::Term) { "-TERM" } else { "-HUP" };
            assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
        }
    }
    // Polled every 10 ms, for at most 5 s.
    let mut last = before;
    while let Some(ticks) = cpu_ticks(pid) {
        last = ticks;
        if t.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed();
    let status = match ending {
        Ending::CloseTerminal => None,
        _ => {
            // The shell writes it once chorus has exited (polled, ≤ 5 s).
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let rc = std::fs::read_to_string(&rc_file).unwrap_or_default();
                if let Ok(code) = rc.trim().parse() {
                    break Some(code);
                }
                assert!(Instant::now() < deadline, "no exit status: {rc:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    rt.block_on(seed.stop());
    (took, last - before, status)
}

#[test]
fn closing_the_terminal_ends_playback_at_once_without_spinning() {
    let (took, cpu, _) = end_a_playing_terminal(Ending::CloseTerminal);
    assert!(took < Duration::from_secs(2), "still running {took:?} after the terminal closed");
    // A key thread spinning on the dead terminal would burn a core.
    assert!(cpu < 50, "{cpu} ticks of CPU while ending");
}

#[test]
fn sigterm_and_sighup_end_playback_cleanly_with_their_exit_codes() {
    for (ending, code) in [(Ending::Term, 143), (Ending::Hup, 129)] {
        let (took, cpu, status) = end_a_playing_terminal(ending);
        assert!(took < Duration::from_secs(2), "{ending:?}: still running after {took:?}");
        assert!(cpu < 50, "{ending:?}: {cpu} ticks of CPU while ending");
        assert_eq!(status, Some(code), "{ending:?}");
    }
}
