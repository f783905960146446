//! Shared helpers for the end-to-end tests: the sample set, a library in a
//! temp dir, and a seed node on 127.0.0.1 port 0.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chorus_streamer::identity::Identity;
use chorus_streamer::library::{self, Library, ScanConfig, ScanReport};
use chorus_streamer::node::{Node, NodeLimits};
use chorus_streamer::tls::TransportLimits;
use chorus_streamer::transport::Transport;

pub mod netns;

/// The built sample set; tests need it (scripts/test builds it first).
pub fn samples() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/out");
    assert!(
        dir.join("SHA256SUMS").exists(),
        "the sample set is missing: run `bash samples/build.sh` (scripts/test does it for you)"
    );
    dir
}

pub fn sample(name: &str) -> PathBuf {
    samples().join(name)
}

/// A temp library holding copies of the named samples.
pub fn library_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for n in names {
        std::fs::copy(sample(n), dir.path().join(n)).expect("copy sample");
    }
    dir
}

/// Scans `dir` with the index in `data_dir`, saving it, like `chorus seed`.
pub fn scan(dir: &Path, data_dir: &Path) -> (Library, ScanReport, Vec<String>) {
    let previous = library::load_index(data_dir);
    let warnings = std::sync::Mutex::new(Vec::new());
    let (lib, report) = library::scan(
        &[dir.to_path_buf()],
        previous,
        &ScanConfig::default(),
        &|_| {},
        &|w: &str| warnings.lock().expect("lock").push(w.to_owned()),
    );
    library::save_index(data_dir, &lib).expect("save index");
    (lib, report, warnings.into_inner().expect("lock"))
}

pub struct Seed {
    pub node: Node,
    pub addr: SocketAddr,
    pub id: chorus_protocol::PeerId,
    task: tokio::task::JoinHandle<()>,
}

impl Seed {
    pub fn start(library: Library) -> Self {
        let identity = Arc::new(Identity::ephemeral().expect("identity"));
        let id = identity.peer_id();
        let node = Node::bind(identity, ([127, 0, 0, 1], 0).into(), library, NodeLimits::default())
            .expect("bind seed");
        let addr = node.transport().local_addr().expect("addr");
        let n = node.clone();
        let task = tokio::spawn(async move { n.serve().await });
        Self { node, addr, id, task }
    }

    pub async fn stop(self) {
        self.node.shutdown().await;
        self.task.abort();
    }
}

/// A dial-only endpoint on 127.0.0.1.
pub fn client() -> Transport {
    let identity = Arc::new(Identity::ephemeral().expect("identity"));
    Transport::bind(identity, ([127, 0, 0, 1], 0).into(), None, &TransportLimits::default())
        .expect("bind client")
}

/// A UDP relay on 127.0.0.1 between one client and `target`: forwards
/// server→client traffic at a limited rate and can be switched to drop
/// everything (a peer that stops answering, to the client).
pub struct UdpRelay {
    pub addr: SocketAddr,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl UdpRelay {
    pub async fn start(target: SocketAddr, bits_per_second: u64) -> Self {
        Self::start_with_cutoff(target, bits_per_second, u64::MAX).await
    }

    /// Like `start`, but the relay itself turns into a black hole once it
    /// has carried `cutoff` bytes toward the client: the fault comes at a
    /// point in the data, not at a time the test thread happens to run.
    pub async fn start_with_cutoff(target: SocketAddr, bits_per_second: u64, cutoff: u64) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::net::UdpSocket;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        back.connect(target).await.expect("connect relay");
        let addr = front.local_addr().expect("relay addr");
        let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let up = {
            let (front, back, client, hole) =
                (front.clone(), back.clone(), client.clone(), blackhole.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().expect("lock") = Some(from);
                    if !hole.load(Relaxed) {
                        let _ = back.send(&buf[..n]).await;
                    }
                }
            })
        };
        let down = {
            let (front, back, client, hole) =
                (front.clone(), back.clone(), client.clone(), blackhole.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                let mut next = tokio::time::Instant::now();
                let mut carried = 0u64;
                while let Ok(n) = back.recv(&mut buf).await {
                    if hole.load(Relaxed) {
                        continue;
                    }
                    carried += n as u64;
                    if carried > cutoff {
                        hole.store(true, Relaxed);
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    next = next.max(now)
                        + std::time::Duration::from_nanos(
                            n as u64 * 8 * 1_000_000_000 / bits_per_second,
                        );
                    tokio::time::sleep_until(next).await;
                    let to = *client.lock().expect("lock");
                    if let Some(to) = to {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            })
        };
        Self { addr, blackhole, tasks: vec![up, down] }
    }

    /// True once nothing gets through.
    pub fn is_blackholed(&self) -> bool {
        self.blackhole.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// From now on, nothing gets through in either direction.
    pub fn blackhole(&self) {
        self.blackhole.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The `chorus` binary with its own data dir, no user config or log
/// settings leaking in, and no LAN discovery (tests stay on loopback; the
/// LAN test turns it on inside its own network namespaces).
pub fn chorus_cmd(data_dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"));
    test_settings(&mut c, data_dir);
    c
}

/// The settings of [`chorus_cmd`], on any command that runs `chorus`.
pub fn test_settings(c: &mut std::process::Command, data_dir: &Path) {
    c.arg("--data-dir")
        .arg(data_dir)
        .env("XDG_CONFIG_HOME", data_dir.join("config-home"))
        .env_remove("CHORUS_CONFIG")
        .env_remove("CHORUS_LOG")
        .env("CHORUS_LAN", "off")
        .env("CHORUS_PORT_MAP", "off");
}

/// A float WAV stream's header fields: rate, channels, data size field,
/// and the samples after the 44-byte header.
pub fn parse_float_wav(bytes: &[u8]) -> (u32, u16, u32, Vec<f32>) {
    assert!(bytes.len() >= 44, "no WAV header: {} bytes", bytes.len());
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 3, "IEEE float");
    assert_eq!(&bytes[36..40], b"data");
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let channels = u16::from_le_bytes([bytes[22], bytes[23]]);
    let samples =
        bytes[44..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (u32_at(24), channels, u32_at(40), samples)
}

/// Makes a FIFO at `path` (with `mkfifo`).
pub fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(ok.success(), "mkfifo {}", path.display());
}

/// A child process killed (and reaped) when dropped, so a failing test
/// leaves nothing running.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout piped and stderr dropped; returns the child
/// and its stdout, line by line.
pub fn spawn_lines(
    cmd: &mut std::process::Command,
) -> (Running, impl Iterator<Item = String> + use<>) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    (Running(child), std::io::BufReader::new(out).lines().map_while(Result::ok))
}

/// Asserts that the WAV at `wav` holds the start of the sample `name`,
/// sample for sample; returns how many samples it holds.
pub fn assert_plays_start_of(wav: &Path, name: &str) -> usize {
    let (_, _, played) = chorus_player::decode::decode_file(wav, None).expect("decode the output");
    let (_, _, local) = chorus_player::decode::decode_file(&sample(name), None).expect("decode");
    assert!(!played.is_empty() && played.len() <= local.len(), "{name}: {} samples", played.len());
    let exact = played.iter().zip(&local).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(exact, "{name}: not sample-exact");
    played.len()
}

/// A seed serving `names` and a listener endpoint, both on 127.0.0.1 and
/// behind `link` (the seed's draws from `seed`, the listener's from
/// `seed + 1`), or on plain loopback with `None`. Call inside a runtime:
/// the seed serves until shut down.
pub fn seed_and_listener(
    names: &[&str],
    link: Option<(chorus_streamer::netem::LinkProfile, u64)>,
) -> (Node, Transport, tempfile::TempDir) {
    let lib = library_dir(names);
    let data = tempfile::tempdir().expect("temp dir");
    let (library, _, _) = scan(lib.path(), data.path());
    let node = Node::bind_emulated(
        Arc::new(Identity::ephemeral().expect("identity")),
        ([127, 0, 0, 1], 0).into(),
        library,
        None,
        NodeLimits::default(),
        link.clone(),
    )
    .expect("bind seed");
    let n = node.clone();
    tokio::spawn(async move { n.serve().await });
    let listener = Transport::bind_emulated(
        Arc::new(Identity::ephemeral().expect("identity")),
        ([127, 0, 0, 1], 0).into(),
        None,
        &TransportLimits::default(),
        link.map(|(l, seed)| (l, seed + 1)),
    )
    .expect("bind listener");
    (node, listener, lib)
}
