//! User files are read-only: `chorus bench` and `chorus demo` pointed at a
//! folder of the user's own leave it exactly as it was; `samples/build.sh
//! --out` refuses a folder it did not build; a cache on a full disk leaves no
//! temp files behind; a read-only data dir still plays, without caching.
//!
//! The mount tests need root (CI runs as root) for a tmpfs of their own.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn chorus(data_dir: &std::path::Path) -> Command {
    chorus_cmd(data_dir)
}

/// Every file and folder under `dir`: relative path → contents (None for a
/// folder).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A user's music folder: a track under a name of the user's, notes, and a
/// subfolder with another track.
fn music_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample("apex-aleph.ogg"), dir.path().join("my favourite song.ogg")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "bought at the gig, 2009").unwrap();
    std::fs::create_dir(dir.path().join("live")).unwrap();
    std::fs::copy(sample("awakening.flac"), dir.path().join("live/encore.flac")).unwrap();
    dir
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn bench_and_demo_leave_a_folder_of_user_files_untouched() {
    let music = music_folder();
    let before = snapshot(music.path());
    let data = tempfile::tempdir().unwrap();

    let bench = chorus(data.path())
        .arg("bench")
        .arg("--samples")
        .arg(music.path())
        .args(["--scenario", "single", "--profile", "lan", "--plays", "1", "--peers", "1"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "bench failed: {}", text(&bench));
    assert_eq!(snapshot(music.path()), before, "bench changed the user's folder");

    let demo = chorus(data.path())
        .arg("demo")
        .arg("--samples")
        .arg(music.path())
        .args(["--out", "null", "--duration", "1.5"])
        .output()
        .unwrap();
    assert!(demo.status.success(), "demo failed: {}", text(&demo));
    // Its three nodes answer at once: no warning that some did not (the
    // start, one round trip, comes before the others' handshakes end, and
    // that is no news).
    assert!(!text(&demo).contains("have not answered"), "{}", text(&demo));
    assert_eq!(snapshot(music.path()), before, "demo changed the user's folder");
}

#[test]
fn a_folder_without_tracks_is_an_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "no music here").unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let before = snapshot(dir.path());
    let data = tempfile::tempdir().unwrap();
    for cmd in [&["bench", "--scenario", "single", "--profile", "lan"][..], &["demo"][..]] {
        let run = chorus(data.path())
            .args(&cmd[..1])
            .arg("--samples")
            .arg(dir.path())
            .args(&cmd[1..])
            .args(["--out", "null"].iter().filter(|_| cmd[0] == "demo"))
            .output()
            .unwrap();
        assert!(!run.status.success(), "{} succeeded on a folder without music", cmd[0]);
        assert!(text(&run).contains("no playable tracks"), "{}: {}", cmd[0], text(&run));
        assert_eq!(snapshot(dir.path()), before, "{} changed the folder", cmd[0]);
    }
}

#[test]
fn build_script_refuses_a_folder_it_did_not_build() {
    let music = music_folder();
    let before = snapshot(music.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/build.sh");
    let run = Command::new("bash").arg(&script).arg("--out").arg(music.path()).output().unwrap();
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    assert!(text(&run).contains("refusing"), "{}", text(&run));
    assert_eq!(snapshot(music.path()), before);
    // An empty folder is not the builder's either.
    let empty = tempfile::tempdir().unwrap();
    let run = Command::new("bash").arg(&script).arg("--out").arg(empty.path()).output().unwrap();
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    assert!(snapshot(empty.path()).is_empty());
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(tempfile::TempDir);

impl Mount {
    /// None (and a note) when this is not root, who alone may mount.
    fn tmpfs(options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must be able to mount a tmpfs"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some(Self(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_keys().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect()
}

/// Plays `name` from a seed on loopback into a WAV file, with the data dir
/// given. Returns the run's output.
async fn play_to_wav(seed: &Seed, name: &str, data: &Path, wav: &Path) -> Output {
    let (data, wav) = (data.to_path_buf(), wav.to_path_buf());
    let (peer, name) = (format!("{}@{}", seed.id, seed.addr), name.to_owned());
    tokio::task::spawn_blocking(move || {
        chorus(&data)
            .args(["-q", "play", &name, "--peer", &peer, "--out"])
            .arg(&wav)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_disk_leaves_no_temp_files_and_playback_goes_on() {
    let Some(disk) = Mount::tmpfs("size=2m") else { return };
    let lib = library_dir(&["inevitable.mp3"]);
    let index = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), index.path());
    let seed = Seed::start(library);
    let out = tempfile::tempdir().unwrap();

    // 6 MB of track into 2 MiB of disk: most cache writes fail.
    let run = play_to_wav(&seed, "inevitable", disk.path(), &out.path().join("a.wav")).await;
    assert!(run.status.success(), "play failed on a full disk: {}", text(&run));
    assert_eq!(temp_files(disk.path()), Vec::<PathBuf>::new(), "failed writes left temp files");
    let full = std::fs::metadata(out.path().join("a.wav")).unwrap().len();

    // A crash mid-write leaves temp files: the next start removes them.
    let cache = disk.path().join("cache");
    let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    let planted = [entry.join("7.tmp"), entry.join("manifest.tmp")];
    for p in &planted {
        let _ = std::fs::write(p, b"x");
    }
    assert!(!temp_files(disk.path()).is_empty(), "the planted temp files fit on the disk");
    let run = play_to_wav(&seed, "inevitable", disk.path(), &out.path().join("b.wav")).await;
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(temp_files(disk.path()), Vec::<PathBuf>::new(), "temp files survived a start");
    assert_eq!(std::fs::metadata(out.path().join("b.wav")).unwrap().len(), full);
    seed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_plays_without_caching_and_says_so_once() {
    let Some(data) = Mount::tmpfs("ro,size=1m") else { return };
    let lib = library_dir(&["apex-aleph.ogg"]);
    let index = tempfile::tempdir().unwrap();
    let (library, _, _) = scan(lib.path(), index.path());
    let seed = Seed::start(library);
    let out = tempfile::tempdir().unwrap();
    let wav = out.path().join("out.wav");

    let run = play_to_wav(&seed, "apex aleph", data.path(), &wav).await;
    assert!(run.status.success(), "play refused a read-only data dir: {}", text(&run));
    let said = text(&run);
    assert_eq!(said.matches("without caching").count(), 1, "{said}");
    let (_, _, samples) = chorus_player::decode::decode_file(&wav, None).unwrap();
    assert!(samples.len() > 48_000, "the track played: {} samples", samples.len());
    assert!(snapshot(data.path()).is_empty(), "nothing was written to the data dir");
    seed.stop().await;
}
