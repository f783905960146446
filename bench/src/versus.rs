//! Side by side with the simplest alternative: a plain HTTP server with
//! ffmpeg reading from it (what a home media server does), and `chorus
//! play` as users run it (its own process: with a fresh data dir by id
//! and by a query, and by id again with the first run's data dir, so the
//! seed is known and the start rides in the handshake), through the same
//! emulated link.
//!
//! The link is a pair of user-space proxies, one for TCP and one for UDP,
//! each holding every segment or datagram for half the profile's RTT (plus
//! jitter) in each direction and pacing it at the profile's rate, in order.
//! The seed behind the UDP proxy has no emulation of its own. Loss is not
//! emulated here: a TCP proxy cannot drop segments the way the link would,
//! so neither side gets any.
//!
//! The time is from spawning the process to its first byte of decoded audio
//! on standard output: both pay for starting a process, as a user does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chorus_streamer::netem::LinkProfile;
use indicatif::ProgressBar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::report::{Recorder, Unit};
use super::scenarios::{Rng, Settings};
use super::swarm::Track;

/// How long one process may take to its first audio before the run fails.
const FIRST_AUDIO_LIMIT: Duration = Duration::from_secs(60);

/// One direction of the emulated link: when each piece may leave.
struct Link {
    delay: Duration,
    jitter: Duration,
    /// Bytes a second, if limited.
    rate: Option<f64>,
    rng: Rng,
    last: Instant,
}

impl Link {
    fn new(p: &LinkProfile, seed: u64) -> Self {
        Self {
            delay: p.rtt / 2,
            jitter: p.jitter,
            rate: p.rate.map(|bits| bits as f64 / 8.0),
            rng: Rng::new(seed),
            last: Instant::now(),
        }
    }

    /// When `len` bytes arriving now leave: after the delay, not before
    /// the previous piece (order is kept) and its time on the wire.
    fn due(&mut self, len: usize) -> Instant {
        let jitter = self.jitter.mul_f64(self.rng.unit());
        let mut at = Instant::now() + self.delay + jitter;
        let wire = self.rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(len as f64 / r));
        at = at.max(self.last + wire);
        self.last = at;
        at
    }
}

/// Sends what `rx` yields at its time through `send`.
async fn deliver<F, Fut>(mut rx: mpsc::Receiver<(Instant, Bytes)>, mut send: F)
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while let Some((at, b)) = rx.recv().await {
        tokio::time::sleep_until(at.into()).await;
        if !send(b).await {
            break;
        }
    }
}

/// A TCP proxy to `target` on the emulated link; returns its address.
async fn tcp_link(target: SocketAddr, profile: LinkProfile, seed: u64) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else { continue };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            n += 2;
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(tcp_pump(cr, sw, Link::new(&profile, seed ^ n)));
            tokio::spawn(tcp_pump(sr, cw, Link::new(&profile, seed ^ (n + 1))));
        }
    });
    Ok(addr)
}

async fn tcp_pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: Link,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Bytes)>(1024);
    let writer = tokio::spawn(async move {
        let mut rx = rx;
        while let Some((at, b)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if to.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if tx.send((link.due(n), Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A UDP proxy to `target` on the emulated link (one upstream socket per
/// client address, on an address per client host); returns its address.
async fn udp_link(target: SocketAddr, profile: LinkProfile, seed: u64) -> Result<SocketAddr> {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let addr = front.local_addr()?;
    tokio::spawn(async move {
        let mut clients: HashMap<SocketAddr, mpsc::Sender<(Instant, Bytes)>> = HashMap::new();
        let mut host_ips: HashMap<std::net::IpAddr, [u8; 4]> = HashMap::new();
        let mut up = Link::new(&profile, seed);
        let mut buf = vec![0u8; 65_536];
        let mut n: usize = 0;
        while let Ok((len, client)) = front.recv_from(&mut buf).await {
            if !clients.contains_key(&client) {
                if clients.len() >= 64 {
                    continue;
                }
                // Each client host from an address of its own, as on the
                // internet (a seed allows a few connections per address):
                // the processes run here one after another are one host,
                // which keeps its address from run to run (a seed's QUIC
                // address token is for that address).
                let hosts = host_ips.len();
                let ip = *host_ips.entry(client.ip()).or_insert([
                    127,
                    3,
                    (hosts / 250) as u8,
                    (hosts % 250) as u8 + 1,
                ]);
                let at = SocketAddr::from((ip, 0));
                let Ok(upstream) = UdpSocket::bind(at).await else { continue };
                if upstream.connect(target).await.is_err() {
                    continue;
                }
                let upstream = Arc::new(upstream);
                let (tx, rx) = mpsc::channel(4096);
                let u = upstream.clone();
                tokio::spawn(deliver(rx, move |b| {
                    let u = u.clone();
                    async move { u.send(&b).await.is_ok() }
                }));
                // Back: the server's answers, delayed, to the client.
                let (back_tx, back_rx) = mpsc::channel(4096);
                let f = front.clone();
                tokio::spawn(deliver(back_rx, move |b| {
                    let f = f.clone();
                    async move { f.send_to(&b, client).await.is_ok() }
                }));
                let mut down = Link::new(&profile, seed ^ ((n as u64) << 32));
                n += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(len) = upstream.recv(&mut buf).await {
                        let item = (down.due(len), Bytes::copy_from_slice(&buf[..len]));
                        if back_tx.try_send(item).is_err() {
                            // A full queue drops, as a full router buffer does.
                        }
                    }
                });
                clients.insert(client, tx);
            }
            if let Some(tx) = clients.get(&client) {
                let _ = tx.try_send((up.due(len), Bytes::copy_from_slice(&buf[..len])));
            }
        }
    });
    Ok(addr)
}

/// A plain HTTP/1.1 file server: GET with byte ranges, keep-alive.
async fn http_server(files: HashMap<String, PathBuf>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let files = Arc::new(files);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let _ = conn.set_nodelay(true);
                let _ = serve_http(conn, &files).await;
            });
        }
    });
    Ok(addr)
}

async fn serve_http(mut conn: TcpStream, files: &HashMap<String, PathBuf>) -> Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // One request head (bounded).
        let end = loop {
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > 16 * 1024 {
                bail!("request head too long");
            }
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        };
        let text = String::from_utf8_lossy(&head[..end]).into_owned();
        head.drain(..end);
        let mut lines = text.lines();
        let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_owned();
        let range = lines.find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.eq_ignore_ascii_case("range") {
                return None;
            }
            let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()))
        });
        let Some(file) = files.get(path.trim_start_matches('/')) else {
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await?;
            continue;
        };
        let mut f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len();
        let (from, to) = match range {
            Some((a, b)) if a < len => (a, b.unwrap_or(len - 1).min(len - 1)),
            Some(_) => {
                let h = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                );
                conn.write_all(h.as_bytes()).await?;
                continue;
            }
            None => (0, len.saturating_sub(1)),
        };
        let count = to + 1 - from;
        let h = if range.is_some() {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Range: bytes {from}-{to}/{len}\r\nContent-Length: {count}\r\n\r\n"
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: {count}\r\n\r\n"
            )
        };
        conn.write_all(h.as_bytes()).await?;
        use tokio::io::AsyncSeekExt;
        f.seek(std::io::SeekFrom::Start(from)).await?;
        let mut body = f.take(count);
        tokio::io::copy(&mut body, &mut conn).await?;
    }
}

/// What a process did until its first audio.
pub struct Heard {
    /// From spawning it to its first byte of audio.
    pub audio: Duration,
    /// Each line it wrote on stderr meanwhile, with when (from the spawn).
    pub said: Vec<(Duration, String)>,
}

/// Spawns `cmd` and returns how long until it wrote its first byte of
/// audio on stdout (after a WAV header, if `wav`).
async fn first_audio(cmd: tokio::process::Command, wav: bool) -> Result<Duration> {
    Ok(first_audio_heard(cmd, wav).await?.audio)
}

/// [`first_audio`], with what the process said on stderr and when.
pub async fn first_audio_heard(mut cmd: tokio::process::Command, wav: bool) -> Result<Heard> {
    use tokio::io::AsyncBufReadExt;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting the player")?;
    let mut out = child.stdout.take().context("no stdout")?;
    // What it says, timed as it comes (read meanwhile, so it never blocks
    // on a full pipe).
    let err = child.stderr.take().context("no stderr")?;
    let said = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(err).lines();
        let mut v = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            if v.len() < 10_000 {
                v.push((started.elapsed(), l));
            }
        }
        v
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            let n = out.read(&mut buf).await?;
            if n == 0 {
                return Err(anyhow::anyhow!("the player ended before any audio"));
            }
            seen.extend_from_slice(&buf[..n]);
            let header = if wav {
                match seen.windows(4).position(|w| w == b"data") {
                    Some(i) => i + 8,
                    None => continue,
                }
            } else {
                0
            };
            if seen.len() > header {
                return Ok(started.elapsed());
            }
        }
    };
    let t = tokio::time::timeout(FIRST_AUDIO_LIMIT, wait).await;
    // Its reader gone, a player stops writing (quietly) at once.
    drop(out);
    stop(&mut child).await;
    let said = said.await.unwrap_or_default();
    match t {
        Ok(Ok(audio)) => Ok(Heard { audio, said }),
        Ok(Err(e)) => {
            let said: Vec<_> = said.into_iter().map(|(_, l)| l).collect();
            bail!("{e}: {}", said.join("\n").trim())
        }
        Err(_) => bail!("no audio within {FIRST_AUDIO_LIMIT:?}"),
    }
}

/// Stops a player as a user does (SIGTERM: it closes its connections, so
/// peers free what they held for it at once), killing it if it is still
/// there after a few seconds.
async fn stop(child: &mut tokio::process::Child) {
    use rustix::process::{Pid, Signal, kill_process};
    let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
    if let Some(pid) = pid
        && kill_process(pid, Signal::TERM).is_ok()
        && tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok()
    {
        return;
    }
    let _ = child.kill().await;
}

/// Where `chorus` and `ffmpeg` are.
fn ffmpeg_available() -> bool {
    std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The side-by-side runs for one profile.
pub async fn versus(
    profile: &LinkProfile,
    samples: &Path,
    index: &Path,
    s: &Settings,
    rec: &Recorder,
    bar: &ProgressBar,
) -> Result<()> {
    let name = profile.name;
    let dir = tempfile::tempdir()?;
    let (sm, ix) = (samples.to_path_buf(), index.to_path_buf());
    let (library, tracks) =
        tokio::task::spawn_blocking(move || super::swarm::scan_samples(&sm, &ix)).await??;
    // A seed with no emulation of its own: the proxy is the link.
    let seed = super::swarm::plain_node(&dir.path().join("seed"), library)?;
    let seed_at = seed.transport().local_addr()?;
    let seed_id = seed.transport().peer_id();
    let link_seed = s.seed ^ super::swarm::hash_name(name);
    let udp = udp_link(seed_at, profile.clone(), link_seed).await?;
    let files: HashMap<String, PathBuf> =
        tracks.iter().map(|t: &Track| (t.manifest.id().to_string(), t.path.clone())).collect();
    let http = http_server(files).await?;
    let tcp = tcp_link(http, profile.clone(), link_seed ^ 1).await?;
    let ffmpeg = ffmpeg_available();
    if !ffmpeg {
        eprintln!("bench: ffmpeg not found; the HTTP side of the comparison is skipped");
    }
    let rtt = profile.rtt.as_secs_f64();
    let add = |metric: &str, t: Duration| {
        rec.add("versus", name, &format!("{metric}_ms"), Unit::Ms, t.as_secs_f64() * 1e3);
        if rtt > 0.0 {
            rec.add("versus", name, &format!("{metric}_rtt"), Unit::Rtt, t.as_secs_f64() / rtt);
        }
    };
    let exe = std::env::current_exe()?;
    for i in 0..s.plays {
        let track = &tracks[i % tracks.len()];
        let id = track.manifest.id().to_string();
        let words = track.manifest.tags().title.clone().unwrap_or_else(|| track.name.clone());
        // By id with a new data dir (the seed never seen), again with that
        // data dir (a new process, the seed known: its ticket kept), and by
        // query with a new data dir.
        let (first, fresh) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let runs = [
            ("chorus_by_id", id.as_str(), &first),
            ("chorus_known", id.as_str(), &first),
            ("chorus_by_query", words.as_str(), &fresh),
        ];
        for (metric, what, data) in runs {
            if metric == "chorus_known" {
                // The first run's tickets and peers, not its cache: a start
                // from the cache (when the first run fetched far enough
                // ahead) is no round trip at all, the replay's figure.
                match std::fs::remove_dir_all(data.path().join("cache")) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).context("emptying the first run's cache");
                    }
                    _ => {}
                }
            }
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("--quiet")
                .arg("--data-dir")
                .arg(data.path())
                .args(["--lan", "off", "--dht", "off"])
                .args(["play", what, "--peer", &format!("{seed_id}@{udp}")])
                .args(["--out", "-", "--duration", "1"])
                .env_remove("CHORUS_CONFIG")
                .env("XDG_CONFIG_HOME", data.path().join("config"));
            let t = first_audio(cmd, true).await.with_context(|| format!("{metric} {what}"))?;
            add(metric, t);
        }
        if ffmpeg {
            let mut cmd = tokio::process::Command::new("ffmpeg");
            cmd.args(["-nostdin", "-loglevel", "error", "-i"])
                .arg(format!("http://{tcp}/{id}"))
                .args(["-t", "1", "-f", "f32le", "-"]);
            let t = first_audio(cmd, false).await.context("ffmpeg over HTTP")?;
            add("http_ffmpeg", t);
        }
        bar.inc(1);
    }
    seed.shutdown().await;
    Ok(())
}
