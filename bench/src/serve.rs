//! `serve`: one seed under many concurrent chunk-request streams, and in
//! the same run a bare quinn server sending the same bytes from memory, so
//! the seed's own cost shows next to the transport's.
//!
//! Both servers get the same clients: `connections` connections, each
//! keeping `streams` requests in flight; a request asks for 4 chunks
//! (64 KiB) at a random place of a random track, and the client only
//! counts the bytes (it does not verify them: the clients share the two
//! cores with the server, and should cost the same in both runs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use chorus_protocol::message::ChunkRequest;
use chorus_protocol::{ChunkIndex, Message};
use chorus_streamer::identity::Identity;
use chorus_streamer::tls::{self, TransportLimits};
use chorus_streamer::transport::Transport;
use indicatif::ProgressBar;

use super::report::{Recorder, Unit};
use super::scenarios::Rng;
use super::swarm::{Track, scan_samples};

/// Chunks per request.
const PER_REQUEST: u32 = 4;

/// Load settings.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Client connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub streams: usize,
    /// How long each server is measured.
    pub duration: Duration,
    /// Random seed.
    pub seed: u64,
}

/// Runs both servers under the same load and records their throughput.
pub async fn serve(
    samples: &std::path::Path,
    index_dir: &std::path::Path,
    load: Load,
    rec: &Recorder,
    bar: &ProgressBar,
) -> Result<()> {
    let (s, i) = (samples.to_path_buf(), index_dir.to_path_buf());
    let (library, tracks) = tokio::task::spawn_blocking(move || scan_samples(&s, &i)).await??;
    let limits = TransportLimits {
        max_streams_per_connection: u32::try_from(load.streams).unwrap_or(u32::MAX).max(64),
        ..TransportLimits::default()
    };
    let node_limits = chorus_streamer::node::NodeLimits {
        max_connections: load.connections * 2,
        transport: limits.clone(),
        ..Default::default()
    };

    // The seed, as `chorus seed` runs it (no link emulation: this is about
    // the CPU cost of serving).
    let dir = tempfile::tempdir()?;
    let identity = Arc::new(Identity::load_or_create(dir.path())?);
    let node = chorus_streamer::node::Node::bind(
        identity,
        ([127, 0, 0, 1], 0).into(),
        library,
        node_limits,
    )?;
    let n = node.clone();
    tokio::spawn(async move { n.serve().await });
    let addr = node.transport().local_addr()?;
    let chorus = run_load(addr, &tracks, load, &limits, Protocol::Chorus).await?;
    node.shutdown().await;
    record(rec, "chorus_seed", &chorus, load);
    bar.inc(1);

    // The bare quinn server: same TLS and transport settings, the bytes
    // already in memory, no protocol, no hashing, no file reads.
    let server = BareServer::start(&tracks, &limits)?;
    let bare = run_load(server.addr, &tracks, load, &limits, Protocol::Bare).await?;
    server.endpoint.close(0u32.into(), b"done");
    record(rec, "bare_quinn", &bare, load);
    rec.add(
        "serve",
        "loopback",
        "seed_vs_bare_pct",
        Unit::Pct,
        chorus.mbps() * 100.0 / bare.mbps().max(1e-9),
    );
    bar.inc(1);
    Ok(())
}

fn record(rec: &Recorder, who: &str, r: &Throughput, load: Load) {
    rec.add("serve", "loopback", &format!("{who}_mbps"), Unit::Mbps, r.mbps());
    // A listener at 320 kbit/s needs 40 kB/s.
    rec.add("serve", "loopback", &format!("{who}_listeners_320k"), Unit::Count, r.mbps() / 0.32);
    rec.add(
        "serve",
        "loopback",
        "concurrent_streams",
        Unit::Count,
        (load.connections * load.streams) as f64,
    );
    rec.add("serve", "loopback", &format!("{who}_failed_requests"), Unit::Count, r.failed as f64);
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Chorus,
    Bare,
}

struct Throughput {
    bytes: u64,
    elapsed: Duration,
    failed: u64,
}

impl Throughput {
    fn mbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// The loopback address of the `i`th client: listeners come from their own
/// addresses, as on a network (a seed takes at most a few connections from
/// one address).
fn client_ip(i: usize) -> [u8; 4] {
    [127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8]
}

fn client_endpoint(limits: &TransportLimits, i: usize) -> Result<quinn::Endpoint> {
    let identity = Identity::ephemeral()?;
    let mut endpoint = quinn::Endpoint::client((client_ip(i), 0).into())?;
    let tokens = std::sync::Arc::new(quinn::NoneTokenStore);
    endpoint.set_default_client_config(tls::client_config(&identity, limits, tokens)?);
    Ok(endpoint)
}

async fn run_load(
    addr: SocketAddr,
    tracks: &[Track],
    load: Load,
    limits: &TransportLimits,
    protocol: Protocol,
) -> Result<Throughput> {
    let bytes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // One client endpoint per connection, each on its own loopback address.
    let mut conns = Vec::new();
    match protocol {
        Protocol::Chorus => {
            // Real chorus clients (the hello exchanged); the requests then
            // go on the raw connection.
            for i in 0..load.connections {
                let identity = Arc::new(Identity::ephemeral()?);
                let t = Transport::bind(identity, (client_ip(i), 0).into(), None, limits)?;
                let peer = t.connect(addr, None).await?;
                conns.push(peer.connection().clone());
            }
        }
        Protocol::Bare => {
            for i in 0..load.connections {
                let e = client_endpoint(limits, i)?;
                conns.push(e.connect(addr, "chorus")?.await.context("connecting to the server")?);
            }
        }
    }
    let requests: Arc<Vec<(usize, u32)>> = Arc::new(
        tracks.iter().enumerate().map(|(i, t)| (i, t.manifest.layout().count())).collect(),
    );
    let ids: Arc<Vec<chorus_protocol::TrackId>> =
        Arc::new(tracks.iter().map(|t| t.manifest.id()).collect());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, conn) in conns.iter().enumerate() {
        for s in 0..load.streams {
            let (conn, bytes, failed, stop) =
                (conn.clone(), bytes.clone(), failed.clone(), stop.clone());
            let (requests, ids) = (requests.clone(), ids.clone());
            let mut rng = Rng::new(load.seed ^ ((c as u64) << 32 | s as u64));
            tasks.push(tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    let (t, count) = requests[(rng.unit() * requests.len() as f64) as usize];
                    let first = (rng.unit() * f64::from(count.saturating_sub(PER_REQUEST))) as u32;
                    let n = PER_REQUEST.min(count - first);
                    let request = match protocol {
                        Protocol::Chorus => {
                            chorus_protocol::frame::encode(&Message::ChunkRequest(ChunkRequest {
                                track: ids[t],
                                first: ChunkIndex(first),
                                count: n,
                                deadline_ms: 1000,
                            }))
                        }
                        Protocol::Bare => {
                            let mut b = Vec::with_capacity(12);
                            b.extend_from_slice(&(t as u32).to_be_bytes());
                            b.extend_from_slice(&first.to_be_bytes());
                            b.extend_from_slice(&n.to_be_bytes());
                            Ok(Bytes::from(b))
                        }
                    };
                    match one_request(&conn, request).await {
                        Ok(got) => {
                            bytes.fetch_add(got, Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
    }
    tokio::time::sleep(load.duration).await;
    let counted = bytes.load(Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    for c in &conns {
        c.close(0u32.into(), b"done");
    }
    Ok(Throughput { bytes: counted, elapsed, failed: failed.load(Relaxed) })
}

async fn one_request(
    conn: &quinn::Connection,
    request: Result<Bytes, chorus_protocol::ProtocolError>,
) -> Result<u64> {
    let request = request?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&request).await?;
    let _ = send.finish();
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        got += chunk.bytes.len() as u64;
    }
    Ok(got)
}

struct BareServer {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
}

impl BareServer {
    fn start(tracks: &[Track], limits: &TransportLimits) -> Result<Self> {
        let mut chunks: Vec<Vec<Bytes>> = Vec::new();
        for t in tracks {
            let data = Bytes::from(std::fs::read(&t.path)?);
            let layout = t.manifest.layout();
            chunks.push(
                (0..layout.count())
                    .map(|i| {
                        let r = layout.byte_range(ChunkIndex(i));
                        data.slice(r.start as usize..r.end as usize)
                    })
                    .collect(),
            );
        }
        let chunks = Arc::new(chunks);
        let identity = Identity::ephemeral()?;
        let config = tls::server_config(&identity, limits)?;
        let endpoint = quinn::Endpoint::server(config, ([127, 0, 0, 1], 0).into())?;
        let addr = endpoint.local_addr()?;
        let e = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = e.accept().await {
                let chunks = chunks.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        let chunks = chunks.clone();
                        tokio::spawn(async move {
                            let _ = bare_reply(send, recv, &chunks).await;
                        });
                    }
                });
            }
        });
        Ok(Self { endpoint, addr })
    }
}

async fn bare_reply(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    chunks: &[Vec<Bytes>],
) -> Result<()> {
    let mut req = [0u8; 12];
    recv.read_exact(&mut req).await?;
    let word = |i: usize| u32::from_be_bytes([req[i], req[i + 1], req[i + 2], req[i + 3]]);
    let (t, first, n) = (word(0) as usize, word(4) as usize, word(8) as usize);
    let track = chunks.get(t).context("no such track")?;
    let mut out: Vec<Bytes> = track.iter().skip(first).take(n).cloned().collect();
    send.write_all_chunks(&mut out).await?;
    let _ = send.finish();
    Ok(())
}
