//! The scheduler property, shared by the fuzz target and the stable test
//! that replays its corpus (`streamer/tests/fuzz_corpus.rs`): arbitrary
//! sequences of what the driver can tell the scheduler (peers joining and
//! leaving, chunks landing or failing, playhead moves, seeks, blocked
//! reads, chunks expected or lost), in the domains the driver uses (chunk
//! indices of the track, keys it was given), at non-decreasing times. It
//! must never panic, and every action it returns must name a chunk of the
//! track and a peer it knows.

use std::time::Duration;

use chorus_streamer::scheduler::{
    Action, Failure, PeerInfo, PeerKey, Playhead, Scheduler, SchedulerConfig,
};

/// Runs the sequence `data` describes; panics if the scheduler misbehaves.
pub fn scheduler(data: &[u8]) {
    let Some((&n, ops)) = data.split_first() else { return };
    let n = usize::from(n % 64) + 1;
    let mut header = vec![false; n];
    header[0] = true;
    let mut s = Scheduler::new(
        SchedulerConfig::default(),
        (0..n).map(|i| 1024 + (i as u32 % 7) * 2560).collect(),
        (0..n as u64).map(|i| Duration::from_millis(i * 300)).collect(),
        header,
        Duration::from_millis(n as u64 * 300),
    );
    let mut peers: Vec<PeerKey> = Vec::new();
    let mut now = Duration::ZERO;
    for op in ops.chunks(3) {
        let [kind, a, b] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
        now += Duration::from_millis(u64::from(b) * 3);
        let chunk = u32::from(a) % n as u32;
        let peer = if peers.is_empty() { None } else { Some(peers[usize::from(b) % peers.len()]) };
        let actions = match (kind % 14, peer) {
            (0, _) => {
                let info = PeerInfo {
                    rtt: Duration::from_millis(u64::from(a) * 4),
                    is_seed: b & 1 == 1,
                    has_all: b & 2 == 2,
                };
                let key = s.add_peer(info);
                if b & 2 == 0 {
                    s.peer_has(key, (0..n as u32).filter(|c| (c + u32::from(a)) % 3 != 0));
                }
                peers.push(key);
                Vec::new()
            }
            (1, Some(p)) => s.on_received(p, chunk, now),
            (2, Some(p)) => s.on_failed(p, chunk, Failure::Timeout, now),
            (3, Some(p)) => s.on_failed(p, chunk, Failure::Missing, now),
            (4, Some(p)) => s.on_failed(p, chunk, Failure::Corrupt, now),
            (5, Some(p)) => {
                s.remove_peer(p);
                Vec::new()
            }
            (6, _) => {
                let position = Duration::from_millis(u64::from(a) * 300 * n as u64 / 256);
                s.set_playhead(Playhead { position, at: now, playing: b & 1 == 1 });
                Vec::new()
            }
            (7, _) => {
                s.seeked();
                Vec::new()
            }
            (8, _) => {
                s.set_blocked(vec![chunk]);
                Vec::new()
            }
            (9, Some(p)) => {
                s.expect(p, chunk, now);
                Vec::new()
            }
            (10, _) => {
                s.forget(chunk);
                Vec::new()
            }
            (11, Some(p)) => {
                s.set_rtt(p, Duration::from_millis(u64::from(a)));
                Vec::new()
            }
            (12, Some(p)) => {
                s.on_tail_done(p, chunk, b & 1 == 1, now);
                Vec::new()
            }
            _ => s.poll(now),
        };
        for action in actions {
            let (peer, chunk) = match action {
                Action::Request { peer, chunk, .. }
                | Action::RequestTail { peer, chunk, .. }
                | Action::Cancel { peer, chunk } => (peer, Some(chunk)),
                Action::Drop { peer } => (peer, None),
            };
            assert!(peers.contains(&peer), "an action for a peer never added: {peer:?}");
            assert!(chunk.is_none_or(|c| (c as usize) < n), "chunk {chunk:?} of {n}");
        }
        let _ = (
            s.ready_to_start(Duration::ZERO),
            s.buffered_ahead(Duration::ZERO),
            s.is_complete(),
            s.live_peers(),
        );
    }
}
