//! Formatting for people: durations, sizes, progress bars.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Set when standard output carries audio (`--out -`): text goes to
/// standard error instead.
static STDOUT_IS_AUDIO: AtomicBool = AtomicBool::new(false);

/// Standard output carries audio from now on: text goes to stderr.
pub fn stdout_is_audio() {
    STDOUT_IS_AUDIO.store(true, Relaxed);
}

/// Whether standard output carries audio.
pub fn audio_on_stdout() -> bool {
    STDOUT_IS_AUDIO.load(Relaxed)
}

/// Prints a line for the listener: to stdout, or to stderr when stdout
/// carries audio. Never panics: a terminal that went away (a closed
/// window, a broken pipe) loses the line, not the process.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    if audio_on_stdout() {
        let _ = writeln!(std::io::stderr().lock(), "{args}");
    } else {
        let _ = writeln!(std::io::stdout().lock(), "{args}");
    }
}

/// Prints to stderr without a newline; never panics (see `say`).
pub fn note_inline(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "{args}");
    let _ = e.flush();
}

/// `println!` that never panics and keeps off stdout when it carries audio.
macro_rules! say {
    ($($t:tt)*) => { $crate::output::say_line(format_args!($($t)*)) };
}
pub(crate) use say;

/// `3:05` or `1:02:03`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `1h 02m`, `24m 10s` or `5.2s`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `14.5 MB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(clock(Duration::from_secs(185)), "3:05");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(span(Duration::from_secs(1450)), "24m 10s");
        assert_eq!(size(14_490_838), "14.5 MB");
        assert_eq!(size(999), "999 B");
    }
}
