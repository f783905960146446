//! The terminal side of `chorus play`: keys in raw mode, read on their own
//! thread, and the status line.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Key {
    /// Space: pause or resume.
    Pause,
    /// ←/→: seek by this many seconds.
    Seek(i64),
    /// ↑/↓: volume by this many percent.
    Volume(i32),
    /// n: the next track.
    Next,
    /// p: the previous track.
    Prev,
    /// q, Esc or Ctrl-C.
    Quit,
}

fn map(code: KeyCode, mods: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char(' ') => Key::Pause,
        KeyCode::Left => Key::Seek(-10),
        KeyCode::Right => Key::Seek(10),
        KeyCode::Up => Key::Volume(10),
        KeyCode::Down => Key::Volume(-10),
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('n') => Key::Next,
        KeyCode::Char('p') => Key::Prev,
        KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
        _ => return None,
    })
}

/// Keys from the terminal, in raw mode while this lives.
pub struct Keys {
    rx: tokio::sync::mpsc::Receiver<Key>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keys {
    /// Puts the terminal in raw mode and starts reading keys.
    pub fn start() -> std::io::Result<Self> {
        crossterm::terminal::enable_raw_mode()?;
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("chorus-keys".into()).spawn(move || {
            while !s.load(Relaxed) {
                // Keys crossterm has already read come first.
                match event::poll(Duration::ZERO) {
                    Ok(true) => {}
                    Ok(false) => {
                        match wait_for_input(Duration::from_millis(100)) {
                            Input::Ready => {}
                            Input::Idle => continue,
                            // The terminal is gone: input has ended (the
                            // channel closes, which reads as "quit").
                            Input::Ended => break,
                        }
                        continue;
                    }
                    Err(_) => break,
                }
                let Ok(event) = event::read() else { break };
                let Event::Key(k) = event else { continue };
                if k.kind == KeyEventKind::Release {
                    continue;
                }
                if let Some(key) = map(k.code, k.modifiers) {
                    // A full queue drops the key: the listener is far ahead.
                    let _ = tx.try_send(key);
                }
            }
        })?;
        Ok(Self { rx, stop, thread: Some(thread) })
    }

    /// The next key; `None` once input has ended (the terminal closed).
    pub async fn next(&mut self) -> Option<Key> {
        self.rx.recv().await
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // The thread notices within one wait (100 ms); never hang on it.
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_millis(300);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// What waiting on the terminal found.
enum Input {
    /// Bytes to read.
    Ready,
    /// Nothing within the wait.
    Idle,
    /// The terminal hung up or failed: no more input will come.
    Ended,
}

/// Blocks until standard input has bytes, hangs up, or `limit` passes.
/// (crossterm's own wait spins on a hung-up terminal: it would eat a core
/// after the window closed.)
#[cfg(unix)]
fn wait_for_input(limit: Duration) -> Input {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let timeout = Timespec { tv_sec: limit.as_secs() as _, tv_nsec: limit.subsec_nanos() as _ };
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) => Input::Idle,
        Ok(_) => {
            let r = fds[0].revents();
            if r.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                Input::Ended
            } else {
                Input::Ready
            }
        }
        Err(rustix::io::Errno::INTR) => Input::Idle,
        Err(_) => Input::Ended,
    }
}

#[cfg(not(unix))]
fn wait_for_input(limit: Duration) -> Input {
    match event::poll(limit) {
        Ok(true) => Input::Ready,
        Ok(false) => Input::Idle,
        Err(_) => Input::Ended,
    }
}

/// Prints a line above the status line (raw mode needs the `\r`).
pub fn line(raw: bool, text: &str) {
    if !raw {
        crate::output::say!("{text}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\r\x1b[2K{text}\r\n");
    let _ = out.flush();
}

/// Redraws the status line in place.
pub fn status(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\r\x1b[2K{text}");
    let _ = out.flush();
}

/// Clears the status line.
pub fn clear_status() {
    status("");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_actions() {
        let none = KeyModifiers::NONE;
        assert_eq!(map(KeyCode::Char(' '), none), Some(Key::Pause));
        assert_eq!(map(KeyCode::Right, none), Some(Key::Seek(10)));
        assert_eq!(map(KeyCode::Down, none), Some(Key::Volume(-10)));
        assert_eq!(map(KeyCode::Char('c'), KeyModifiers::CONTROL), Some(Key::Quit));
        assert_eq!(map(KeyCode::Char('c'), none), None);
        assert_eq!(map(KeyCode::Char('n'), none), Some(Key::Next));
    }
}
