//! CPU time and peak memory of this process, from /proc (Linux).
//!
//! `chorus bench` runs a listener as a child process with
//! `CHORUS_RESOURCES=FILE`; the child writes its own figures there as it
//! exits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a process used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Resources {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Peak resident memory (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

/// /proc reports CPU times in USER_HZ ticks, which Linux fixes at 100 for
/// this interface on every architecture we run on.
const TICKS_PER_SECOND: u64 = 100;

/// This process's figures, if /proc has them.
pub fn read_self() -> Option<Resources> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let ticks = utime + stime;
    Some(Resources {
        cpu: Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND),
        peak_rss_kib: peak,
    })
}

/// Writes this process's figures to the file in CHORUS_RESOURCES, if set.
pub fn report_if_asked() {
    let Some(path) = std::env::var_os("CHORUS_RESOURCES") else { return };
    if let Some(r) = read_self() {
        if let Ok(json) = serde_json::to_vec(&r) {
            if let Err(e) = std::fs::write(&path, json) {
                eprintln!("warning: cannot write CHORUS_RESOURCES file: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_memory() {
        let r = read_self().expect("/proc/self is readable on Linux");
        assert!(r.peak_rss_kib > 100, "{r:?}");
    }
}
