//! Controls act at once and never click: with the WAV sink written into a
//! FIFO the test reads at its own pace (so the writer can never run far
//! ahead), a volume change and a pause take effect within 50 ms of audio of
//! the command, and the pause and a seek fade instead of cutting.
//!
//! The track is a slow triangle (0.2 to 0.8 over 4 s and back): its own
//! sample-to-sample steps are tiny, so any cut in the output shows as a
//! step far above them.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_player::play::{PlayOptions, Playback, Player};
use chorus_player::sink::OutputSpec;
use common::*;

const RATE: u32 = 44_100;
const SECONDS: u32 = 8;

/// The triangle at frame `i`, as 16-bit PCM holds it.
fn triangle(i: u64) -> i16 {
    let t = i as f64 / f64::from(RATE);
    let p = (t / f64::from(SECONDS)).fract();
    let tri = if p < 0.5 { 2.0 * p } else { 2.0 - 2.0 * p };
    ((0.2 + 0.6 * tri) * 32767.0).round() as i16
}

fn reference(i: u64) -> f32 {
    f32::from(triangle(i)) / 32768.0
}

/// A mono 16-bit WAV of the triangle.
fn write_triangle(path: &std::path::Path) {
    let frames = u64::from(RATE * SECONDS);
    let data = (frames * 2) as u32;
    let mut b = Vec::with_capacity(44 + data as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&RATE.to_le_bytes());
    b.extend_from_slice(&(RATE * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for i in 0..frames {
        b.extend_from_slice(&triangle(i).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Reads the FIFO's float samples (mono) as the test asks for them.
struct Reader {
    fifo: std::fs::File,
    bytes: Vec<u8>,
}

impl Reader {
    fn frames(&self) -> usize {
        self.bytes.len().saturating_sub(44) / 4
    }

    /// Reads until `n` frames are in, or the stream ends.
    fn until(&mut self, n: usize) {
        let mut buf = [0u8; 4096];
        while self.frames() < n {
            let k = self.fifo.read(&mut buf).unwrap();
            if k == 0 {
                return;
            }
            self.bytes.extend_from_slice(&buf[..k]);
        }
    }
}

fn ms(frames: u64) -> f64 {
    frames as f64 * 1000.0 / f64::from(RATE)
}

#[test]
fn volume_and_pause_act_within_50_ms_and_pause_and_seek_fade_instead_of_cutting() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = tempfile::tempdir().unwrap();
    write_triangle(&lib.path().join("triangle.wav"));
    let data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), data.path());
    let manifest = library.tracks().next().unwrap().manifest.clone();
    let seed = rt.block_on(async { Seed::start(library) });
    let client = rt.block_on(async { client() });
    let peer = rt.block_on(client.connect(seed.addr, Some(seed.id))).unwrap();
    let fifo = data.path().join("out.fifo");
    mkfifo(&fifo);

    // Playback runs on the runtime; this thread reads and sends controls.
    let handle: Arc<Mutex<Option<Playback>>> = Arc::new(Mutex::new(None));
    let h = handle.clone();
    let source =
        chorus_streamer::fetch::Source { peer, is_seed: true, have: None, head_rest: None };
    let out = OutputSpec::Wav(fifo.clone());
    let playing = rt.spawn(async move {
        let mut player = Player::new(out, false);
        let r = player
            .play(manifest, vec![source], PlayOptions::default(), Instant::now(), move |p| {
                *h.lock().unwrap() = Some(p.clone());
            })
            .await;
        player.finish().await.unwrap();
        r.unwrap()
    });
    let mut reader = Reader { fifo: std::fs::File::open(&fifo).unwrap(), bytes: Vec::new() };
    let p = loop {
        if let Some(p) = handle.lock().unwrap().clone() {
            break p;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let played = || p.stats.frames_played.load(Relaxed);
    let second = RATE as usize;

    // Volume to 50% once a second of audio is out.
    reader.until(second);
    let v_before = played();
    p.set_volume(0.5);
    let v_after = played();
    // Pause 0.6 s of audio later, for 100 ms of wall time: the writer holds.
    reader.until(v_after as usize + second * 6 / 10);
    let p_before = played();
    p.set_paused(true);
    let p_after = played();
    // Everything written before the pause comes out (the writer flushes
    // when it holds), and the last of it only once the writer has seen the
    // pause: then time stops for 100 ms.
    reader.until(p_after as usize);
    std::thread::sleep(Duration::from_millis(100));
    p.set_paused(false);
    // Seek back to 0.3 s, 0.6 s of audio after that.
    reader.until(p_after as usize + second * 6 / 10);
    let s_at = played();
    p.seek(Duration::from_millis(300));
    reader.until(usize::MAX);
    let report = rt.block_on(playing).unwrap();
    assert_eq!(report.underruns, 0);
    let (rate, channels, _, out) = parse_float_wav(&reader.bytes);
    assert_eq!((rate, channels), (RATE, 1));

    // Before the volume change: the track, bit for bit.
    let v_effect = (0..out.len())
        .find(|&i| out[i] < 0.75 * reference(i as u64))
        .expect("the volume change shows in the output") as u64;
    assert!(
        (0..v_before as usize).all(|i| (out[i] - reference(i as u64)).abs() < 1e-6),
        "unity volume leaves audio untouched"
    );
    assert!(v_effect >= v_before, "took effect before it was asked: {v_effect} < {v_before}");
    assert!(
        ms(v_effect.saturating_sub(v_after)) <= 50.0,
        "the volume took {:.1} ms of audio to act (asked at frame {v_after}, acted at {v_effect})",
        ms(v_effect - v_after)
    );
    // Settled at half.
    let settled = (v_effect + u64::from(RATE) / 20) as usize;
    assert!((out[settled] - 0.5 * reference(settled as u64)).abs() < 1e-3);

    // The pause: a fade to silence within 50 ms of audio of the command,
    // and the audio goes on from the same place afterwards.
    let dip =
        (settled..out.len()).find(|&i| out[i].abs() < 0.005).expect("the pause fades out") as u64;
    let fade = u64::from(RATE) * 5 / 1000;
    assert!(dip + fade >= p_before, "faded before the pause was asked");
    assert!(
        ms(dip.saturating_sub(p_after)) <= 50.0,
        "the pause took {:.1} ms of audio to act",
        ms(dip - p_after)
    );
    let after = (dip + 2 * fade) as usize;
    assert!(
        (out[after] - 0.5 * reference(after as u64)).abs() < 1e-3,
        "after the pause the track goes on where it was"
    );

    // The seek happened (audio from 0.3 s again: the output is longer than
    // the track), and nowhere in the output is there a cut: every step is
    // as small as the track's own or a 5 ms fade's.
    let total = u64::from(RATE * SECONDS);
    assert!(out.len() as u64 > total + u64::from(RATE), "{} frames", out.len());
    assert!(s_at > p_after);
    let (at, step) = out
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .enumerate()
        .fold((0, 0.0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(step < 0.01, "a step of {step} at frame {at}: a cut, not a fade");
    let last = *out.last().unwrap();
    assert!((last - 0.5 * reference(total - 1)).abs() < 1e-3, "ends at the track's end");
    rt.block_on(seed.stop());
}
