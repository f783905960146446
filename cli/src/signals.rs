//! Ending on signals: SIGINT, SIGTERM and SIGHUP (the terminal went away)
//! all ask for the same clean stop. Whoever waits gets told at once; the
//! process then ends with `128 + the signal's number` (130, 143, 129), as
//! shells report a command a signal ended, so a script can tell "played to
//! the end" (0) from "stopped" — after the terminal is restored and the
//! cache is consistent.

use std::process::ExitCode;
use std::sync::OnceLock;

use tokio::sync::watch;

static SIGNALLED: OnceLock<watch::Receiver<Option<i32>>> = OnceLock::new();

/// Starts listening (once per process; needs the tokio runtime).
pub fn listen() {
    SIGNALLED.get_or_init(|| {
        let (tx, rx) = watch::channel(None);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            for (kind, number) in [
                (SignalKind::interrupt(), 2),
                (SignalKind::terminate(), 15),
                (SignalKind::hangup(), 1),
            ] {
                let tx = tx.clone();
                match signal(kind) {
                    Ok(mut s) => {
                        tokio::spawn(async move {
                            while s.recv().await.is_some() {
                                // The first signal says why we stop.
                                tx.send_if_modified(|v| v.is_none() && v.replace(number).is_none());
                            }
                        });
                    }
                    Err(e) => tracing::warn!("cannot watch signal {number}: {e}"),
                }
            }
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx.send(Some(2));
            }
        });
        rx
    });
}

/// Resolves once a stop was asked for by a signal (at once if it was
/// already). Never resolves when [`listen`] was not called.
pub async fn stop_requested() {
    let Some(rx) = SIGNALLED.get() else { return std::future::pending().await };
    let mut rx = rx.clone();
    let _ = rx.wait_for(Option::is_some).await;
}

/// The signal that asked us to stop, if one did.
pub fn received() -> Option<i32> {
    SIGNALLED.get().and_then(|rx| *rx.borrow())
}

/// The exit code for a run a signal ended.
pub fn exit_code() -> Option<ExitCode> {
    received().map(|n| ExitCode::from(128u8.saturating_add(n as u8)))
}
