//! What `chorus play` writes: exactly --duration of audio to a WAV file for
//! every format, a WAV stream on standard output, a FIFO, and a track's
//! name when it is played by id.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Read;
use std::process::Stdio;

use common::*;

struct Setup {
    rt: tokio::runtime::Runtime,
    seed: Option<Seed>,
    peer: String,
    tracks: Vec<(String, chorus_protocol::Manifest)>,
    _lib: tempfile::TempDir,
    _seed_data: tempfile::TempDir,
}

fn setup(names: &[&str]) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = library_dir(names);
    let seed_data = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), seed_data.path());
    let tracks = library.tracks().map(|t| (t.file_name.clone(), t.manifest.clone())).collect();
    let seed = rt.block_on(async { Seed::start(library) });
    let peer = format!("{}@{}", seed.id, seed.addr);
    Setup { rt, seed: Some(seed), peer, tracks, _lib: lib, _seed_data: seed_data }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(seed) = self.seed.take() {
            self.rt.block_on(seed.stop());
        }
    }
}

#[test]
fn wav_duration_is_exact_to_the_sample_for_every_format() {
    let names = ["apex-aleph.ogg", "awakening.flac", "beat-thee.mp3", "coherence.m4a"];
    let s = setup(&names);
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Durations that fall inside packets, on odd sample counts, and one
    // longer than a chunk of audio.
    for (i, (name, manifest)) in s.tracks.iter().enumerate() {
        for secs in [0.25, 1.0 + i as f64 * 0.3333, 7.77] {
            let wav = out.path().join(format!("{name}-{secs}.wav"));
            let o = chorus_cmd(data.path())
                .args(["play", &manifest.id().to_string(), "--peer", &s.peer, "--out"])
                .arg(&wav)
                .args(["--duration", &secs.to_string(), "-q"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
            let (rate, channels, data_len, samples) =
                parse_float_wav(&std::fs::read(&wav).unwrap());
            let frames = samples.len() / usize::from(channels);
            let want = (secs * f64::from(rate)).round() as usize;
            assert_eq!(frames, want, "{name} at {secs} s: {frames} frames, not {want}");
            assert_eq!(data_len as usize, samples.len() * 4, "{name}: the header's size");
            assert_eq!(rate, manifest.media().sample_rate);
        }
    }
}

#[test]
fn out_dash_streams_wav_to_stdout_and_text_to_stderr() {
    let s = setup(&["apex-aleph.ogg"]);
    let data = tempfile::tempdir().unwrap();
    let id = s.tracks[0].1.id().to_string();
    let mut child = chorus_cmd(data.path())
        .args(["play", &id, "--peer", &s.peer, "--out", "-", "--duration", "1.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A reader of the pipe, as `| sox -` or `| ffmpeg -i -` would be.
    let mut bytes = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let (rate, channels, data_len, samples) = parse_float_wav(&bytes);
    assert_eq!(data_len, u32::MAX, "a stream's length is unknown in its header");
    assert_eq!(samples.len() / usize::from(channels), (1.5 * f64::from(rate)) as usize);
    assert!(samples.iter().any(|s| s.abs() > 0.01), "real audio, not silence");
    // The summary went to stderr, and nothing but audio to stdout.
    assert!(stderr.contains("playing \"Apex Aleph\""), "{stderr}");

    // Our decoder (symphonia) reads the stream as it was written.
    let file = data.path().join("stream.wav");
    std::fs::write(&file, &bytes).unwrap();
    let (r, _, decoded) = chorus_player::decode::decode_file(&file, None).unwrap();
    assert_eq!(r, rate);
    assert_eq!(decoded.len(), samples.len());

    // A reader that goes away early ends playback quietly, exit 0.
    let mut child = chorus_cmd(data.path())
        .args(["play", &id, "--peer", &s.peer, "--out", "-", "--duration", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 4096];
    child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "a closed pipe is not an error: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn a_fifo_output_works_and_errors_are_said_once() {
    let s = setup(&["awakening.flac"]);
    let data = tempfile::tempdir().unwrap();
    let fifo = data.path().join("audio.fifo");
    mkfifo(&fifo);
    let f = fifo.clone();
    let reader = std::thread::spawn(move || std::fs::read(f).unwrap());
    let id = s.tracks[0].1.id().to_string();
    let o = chorus_cmd(data.path())
        .args(["play", &id, "--peer", &s.peer, "--out"])
        .arg(&fifo)
        .args(["--duration", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (rate, channels, _, samples) = parse_float_wav(&reader.join().unwrap());
    assert_eq!(samples.len() / usize::from(channels), 2 * rate as usize);

    // An output that cannot be written: one message, naming the file.
    let o = chorus_cmd(data.path())
        .args(["play", &id, "--peer", &s.peer, "--out", "/nonexistent-dir/x.wav"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let error = stderr.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(error.contains("/nonexistent-dir/x.wav"), "{stderr}");
    assert_eq!(error.matches("No such file or directory").count(), 1, "said once: {error}");

    // A device's name given as the output (as `chorus devices` lists it) is
    // refused with a pointer to --device, not written as a WAV file of that
    // name in the current folder.
    let cwd = tempfile::tempdir().unwrap();
    let o = chorus_cmd(data.path())
        .current_dir(cwd.path())
        .args(["play", &id, "--peer", &s.peer, "--out", "alsa:null"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--device"), "{stderr}");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "nothing written");
}

#[test]
fn a_track_played_by_id_is_shown_by_its_name() {
    let s = setup(&["apex-aleph.ogg", "deprecation.wav"]);
    let data = tempfile::tempdir().unwrap();
    for (name, manifest) in &s.tracks {
        let o = chorus_cmd(data.path())
            .args(["play", &manifest.id().to_string(), "--peer", &s.peer])
            .args(["--out", "null", "--duration", "0.2"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want = match &manifest.tags().title {
            Some(t) => format!("playing \"{t}\""),
            None => format!("playing \"track {}\"", manifest.id().fmt_short()),
        };
        assert!(stdout.contains(&want), "{name}: {stdout}");
        assert!(!stdout.contains("playing \"\""), "{stdout}");
    }
}

#[test]
fn the_demo_streams_from_the_peers_that_cached_the_track_not_the_seed() {
    let data = tempfile::tempdir().unwrap();
    let o = chorus_cmd(data.path())
        .arg("demo")
        .arg("--samples")
        .arg(samples())
        .args(["--out", "null", "--duration", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("played the track before"), "{stdout}");
    // The summary: bytes from the peers, and the seed's share.
    let summary = stdout.lines().find(|l| l.starts_with("played ")).expect("a summary");
    let seed_share = if summary.contains("none from the seed") {
        0.0
    } else {
        let pct = summary.rsplit("from the seed: ").next().unwrap();
        pct.split('%').next().unwrap().parse::<f64>().unwrap_or(100.0)
    };
    assert!(summary.contains("from 2 peers") || summary.contains("from 1 peer"), "{summary}");
    assert!(seed_share < 50.0, "the seed served {seed_share}%: {summary}");
}
