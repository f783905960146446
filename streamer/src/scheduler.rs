//! The deadline scheduler: which chunk to ask of which peer, and when.
//!
//! A pure state machine (see `STYLE.md`: like `quinn-proto`): it never reads a
//! clock or touches a socket. Inputs are events with the time they happened
//! ([`Scheduler::on_received`], [`Scheduler::on_failed`],
//! [`Scheduler::set_playhead`], peers coming and going); outputs are
//! [`Action`]s from [`Scheduler::poll`], and from
//! [`Scheduler::poll_timeout`] when it next needs polling if nothing else
//! happens (the driver sleeps until then, as quinn-proto's endpoint users
//! sleep until `poll_timeout`). The tokio driver
//! ([`crate::fetch`]) and the virtual-time simulator ([`crate::sim`]) run the
//! same code, so thousands of simulated peers test exactly what plays.
//!
//! ## Policy (anchors: Spotify's 2010 P2P client; libtorrent's
//! `set_piece_deadline`)
//!
//! - **Deadlines from media time.** Chunk `i` is due when the decoder
//!   reaches it: `at + (media(i) − position) − margin` while playing; header
//!   chunks are due at once. Pause and seek move every deadline (they only
//!   change the playhead).
//! - **Earliest deadline first** within the urgent horizon.
//! - **Lowest expected completion time.** Each request goes to the peer that
//!   would finish it first: `rtt + (bytes queued there + chunk) ÷ its rate`.
//!   A peer's queue is capped in *time* (a round trip and 150 ms of work
//!   at its rate, [`SchedulerConfig::queue_over_rtt`]), not in count, so a
//!   fast peer takes more requests than a slow one, and no peer is given
//!   enough to overfill the queue at its bottleneck.
//! - **The seed is a fallback.** Among peers that can meet the deadline, any
//!   non-seed peer is preferred; the seed is used only when no other peer
//!   can make it in time.
//! - **Hedging.** A chunk whose request is overdue (past the expected
//!   completion, the deadline near, and the request stuck: its peer has
//!   delivered nothing since, or has completed a request sent with it or
//!   after it and due later) or expected to miss its deadline where
//!   another peer would make it, is asked of a second peer; whichever copy
//!   lands first wins and the other is cancelled. Expected: when asked, or
//!   later at the peer's pace now (what is queued ahead of it there at its
//!   measured rate; past a repair's time with nothing completed, a chunk
//!   per that silence): a path that slows keeps delivering in order, so
//!   nothing is stuck, yet the queue planned at its old rate is late.
//! - **Rescue.** A request that presumably lost packets (overtaken: its
//!   peer, which sends by deadline, finished one due later; or past its
//!   expected completion with nothing from its peer since) waits for their
//!   repair, a round trip from now at the soonest. Once that would come
//!   after its deadline, the chunk goes at once to whichever peer would
//!   send it soonest, seeds and busy peers too: a peer sends it before
//!   its work due later, so only work due sooner is ahead of it. On a
//!   lossy link a repair waits behind the queue the sender keeps at the
//!   bottleneck (hundreds of ms on `4g`), longer than a start's buffer.
//! - **Rarest first** beyond the urgent horizon, with spare capacity only,
//!   so the swarm spreads what few peers have.
//! - **Rates** are measured over runs of deliveries (from when a request
//!   to an idle peer could first deliver, its RTT after it was sent), not
//!   chunk by chunk: chunks read in one go do not look infinitely fast. A
//!   start response's head, sent back to back, gives a first measurement
//!   for the start rule; work is planned at no more than the cautious
//!   initial rate until a run of 10 ms or more measures the peer (a head
//!   of 4 KiB read in one burst claimed 4 MB/s of a path giving 150 KB/s).
//! - **Scores.** Timeouts halve a peer's rate estimate; a second timeout in a
//!   row or a second corrupt chunk drops the peer for good.
//! - **Start rule.** Playback may start once the audio that can play (what
//!   is buffered, less the frame straddling into the first missing chunk)
//!   covers the time to fetch the rest of the track at the measured rate
//!   with 15% headroom (less the time the rest takes to play), plus a
//!   safety margin: a round trip and two chunks' fetch time at a cautious
//!   rate, or, on a path the peers report clean ([`Scheduler::set_path`]),
//!   1.5 round trips, the checked part of a later chunk counted.
//!   With no peer yet (a start from the cache while the peers are
//!   asked), 3 s of audio in hand ([`ALONE_START_AHEAD`]).
//! - **Slow start.** Until a peer's rate is measured it may hold at most two
//!   requests, so a guess never strands a queue at a slow peer.
//!
//! ## Invariants
//!
//! - A chunk is in exactly one state: missing, requested (from one or two
//!   peers), or here. `here` is final.
//! - `Peer::queued` is the sum of the sizes of the chunks it has been asked
//!   for and not yet delivered, failed or been cancelled for.

use std::time::Duration;

use chorus_protocol::message::PathReport;

/// The request deadline that means "whenever" (prefetch), in milliseconds.
pub const NO_DEADLINE_MS: u32 = chorus_protocol::message::NO_DEADLINE;

/// A peer's index in the scheduler (stable for the scheduler's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub usize);

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask `peer` for `chunk`, due at `deadline` (scheduler time).
    Request {
        /// Whom to ask.
        peer: PeerKey,
        /// Which chunk.
        chunk: u32,
        /// When the decoder needs it.
        deadline: Duration,
    },
    /// Ask `peer` for the tail of `chunk` from byte `from`, due at
    /// `deadline`: a chunk playback (re)starts with is asked of one peer
    /// whole and of a second from its middle on, so its bytes come over
    /// two links at once ([`Scheduler::on_tail_done`] when it is over).
    RequestTail {
        /// Whom to ask.
        peer: PeerKey,
        /// Which chunk.
        chunk: u32,
        /// The tail's first byte in the chunk (a group's start).
        from: u32,
        /// When the decoder needs the chunk.
        deadline: Duration,
    },
    /// Withdraw the request for `chunk` from `peer` (another copy landed),
    /// or its tail.
    Cancel {
        /// Whom.
        peer: PeerKey,
        /// Which chunk.
        chunk: u32,
    },
    /// Stop using `peer` for good (bad data twice, or it stopped answering).
    Drop {
        /// Whom.
        peer: PeerKey,
    },
}

/// How a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer in time, or the connection broke.
    Timeout,
    /// The peer does not have the chunk.
    Missing,
    /// The peer sent bytes that failed verification.
    Corrupt,
}

/// Tuning; every default says why.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Subtracted from every deadline: 150 ms absorbs decode time, the
    /// sink's period and scheduling jitter.
    pub margin: Duration,
    /// Chunks due within this horizon are fetched earliest-deadline-first;
    /// beyond it, rarest-first with spare capacity. 8 s, Spotify's
    /// "urgent" window for playback-critical data.
    pub horizon: Duration,
    /// Most work queued at one peer, in time at its rate. 1 s: deep enough
    /// to keep a link busy across one RTT of up to ~500 ms, shallow enough
    /// that a slowing peer strands at most a second of requests. Nearer
    /// peers hold less: see [`SchedulerConfig::queue_over_rtt`].
    pub queue_cap: Duration,
    /// Most work queued at one peer beyond its round trip, in time at its
    /// rate: 100 ms. A peer's congestion control fills whatever it is
    /// given into the queue at its bottleneck until that overflows; with
    /// a second of work queued, a peer 80 ms away overfilled a 250 ms
    /// drop-tail queue (bench: 1-2.5% of its packets lost on
    /// `transatlantic`, a path no longer clean for the next start, and a
    /// seek's chunks stuck behind the standing queue). A round trip's
    /// work keeps the link busy; the rest is slack for a rate estimate
    /// that runs high or low. 150 ms held while rates ran below the
    /// link's (idle time counted as transfer); at the link's rate it let
    /// a seek's work overfill that queue (`tests/netem.rs`).
    pub queue_over_rtt: Duration,
    /// Rate assumed for a peer before anything arrived from it: 256 KB/s
    /// (2 Mbit/s), a cautious broadband uplink.
    pub initial_rate: f64,
    /// Chunks past the horizon looked at for rarest-first.
    pub lookahead: usize,
    /// A request counts as overdue this long after its expected completion
    /// (plus one RTT).
    pub overdue_slack: Duration,
    /// An overdue request is hedged once its chunk is due within this long:
    /// 2 s leaves a second peer several round trips to deliver, without
    /// doubling requests whose deadline is far off.
    pub hedge_window: Duration,
    /// Chunks a peer may have queued before its rate has been measured
    /// (slow start): 2 keeps its link busy without betting on a guess.
    pub unmeasured_queue: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            margin: Duration::from_millis(150),
            horizon: Duration::from_secs(8),
            queue_cap: Duration::from_secs(1),
            queue_over_rtt: Duration::from_millis(100),
            initial_rate: 256.0 * 1024.0,
            lookahead: 256,
            overdue_slack: Duration::from_millis(250),
            hedge_window: Duration::from_secs(2),
            unmeasured_queue: 2,
        }
    }
}

/// The longest frame the start rule takes off what is buffered
/// ([`Scheduler::playable_ahead`]), whatever a manifest claims.
const MAX_FRAME: Duration = Duration::from_secs(1);

/// How long the rest of the window waits after the chunks playback starts
/// with were asked: long enough for a peer to read them and queue them
/// first, short against any round trip.
pub const FIRST_ALONE: Duration = Duration::from_millis(5);

/// Audio a start needs in hand with no peer to fetch from yet (a track
/// whose start is in the cache, its peers still being asked): 3 s, many
/// round trips for a peer to join and deliver, even on a slow link.
pub const ALONE_START_AHEAD: Duration = Duration::from_secs(3);

/// The shortest time a rate is measured over.
const MIN_RUN: Duration = Duration::from_millis(1);

/// The shortest run a peer's first rate is measured over: a chunk read in
/// one go with the head of a start response (the rest of a burst a
/// retransmission released) took 0.3 ms and claimed 50 MB/s of a path
/// giving 150 KB/s.
const FIRST_RUN: Duration = Duration::from_millis(10);

/// The longest a rate is measured over before its run begins anew.
const RUN_SPAN: Duration = Duration::from_secs(1);

/// What the scheduler knows of a peer when it joins.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Its round-trip time as measured by QUIC.
    pub rtt: Duration,
    /// True for a peer used only as a fallback: the track's original seed,
    /// or a peer reached through a relay (slow, and a cost to the relay).
    pub is_seed: bool,
    /// True if it holds the whole track.
    pub has_all: bool,
}

#[derive(Clone, Debug)]
struct Peer {
    rtt: Duration,
    /// The least `rtt` seen: the path's own delay, without the queueing
    /// that work given to the peer adds to `rtt`.
    min_rtt: Duration,
    /// Bytes per second (EWMA).
    rate: f64,
    /// Rate measurements so far (the first replaces the initial guess).
    samples: u32,
    is_seed: bool,
    has_all: bool,
    have: Vec<bool>,
    /// Bytes asked for and not yet settled.
    queued: u64,
    /// When its last request settled (a request sent before and still
    /// open has stalled).
    last_done: Duration,
    /// While it has work queued, the run of deliveries the rate is
    /// measured over: when the run could first deliver (a request to an
    /// idle peer: sent plus its RTT; a response already flowing: when it
    /// was adopted) and the bytes delivered since. Measured over the run,
    /// two chunks read in one go do not look infinitely fast, and a
    /// request's wait for its first byte is not counted as transfer.
    run_since: Duration,
    run_bytes: u64,
    /// When its latest completed requests were sent, and their deadlines
    /// ([`Peer::overtook`]).
    done: [(Duration, Duration); DONE_KEPT],
    done_next: usize,
    timeouts_in_row: u32,
    corrupt: u32,
    dead: bool,
    bytes: u64,
    /// What it reported of the path from it (see [`Scheduler::set_path`]):
    /// packets sent and lost, this connection and earlier ones.
    path: PathReport,
    /// It did not serve a chunk's tail (a node that does not know the
    /// request): it is not asked for one again.
    no_tails: bool,
    /// The most its rate counts for when work is planned (queues, expected
    /// completions): the cautious initial rate while the only measurement
    /// is the start response's head ([`Scheduler::measured_rate`]), no
    /// limit once a run of deliveries has measured it.
    plan_cap: f64,
}

/// Completions a peer's record keeps to tell an overtaken request.
const DONE_KEPT: usize = 8;

/// Packets a peer must have reported sending, with none in a thousand of
/// them lost, before its path counts as clean
/// ([`Scheduler::set_path`]): about 240 KB of replies. On the `lossy`
/// profile (5% in bursts of 3) a path shows losses well before; on `4g`
/// (1%) 200 packets pass with none lost one time in eight.
pub const CLEAN_AFTER_PACKETS: u64 = 200;

impl Peer {
    fn has(&self, chunk: u32) -> bool {
        self.has_all || self.have.get(chunk as usize).copied().unwrap_or(false)
    }

    /// True if a request sent with `f` or after it, due later, has
    /// completed while `f` is open: a peer serves its requests by deadline
    /// (the stream priorities it sets), so `f` lost packets and waits for
    /// their repair.
    fn overtook(&self, f: &InFlight) -> bool {
        self.done.iter().any(|&(sent, deadline)| sent >= f.sent && deadline > f.deadline)
    }

    fn completed(&mut self, f: &InFlight) {
        self.done[self.done_next] = (f.sent, f.deadline);
        self.done_next = (self.done_next + 1) % DONE_KEPT;
    }

    fn secs(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.rate.min(self.plan_cap).max(1.0))
    }

    /// Since when it has sent nothing while it had work: its last
    /// completion, or the start of its current run.
    fn busy_since(&self) -> Duration {
        self.last_done.max(self.run_since)
    }
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    peer: PeerKey,
    sent: Duration,
    /// The soonest its first byte could come: the peer's least round
    /// trip after it was sent, or at once for a reply already flowing
    /// ([`Scheduler::expect`]).
    soonest: Duration,
    expected: Duration,
    /// The chunk's deadline when it was asked.
    deadline: Duration,
}

#[derive(Clone, Debug)]
enum ChunkState {
    Missing,
    Requested(Vec<InFlight>),
    Here,
}

/// Where playback is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Playhead {
    /// Media position.
    pub position: Duration,
    /// Scheduler time at which `position` was reached.
    pub at: Duration,
    /// True while the clock runs (false when paused or not yet started).
    pub playing: bool,
}

/// The scheduler for one track.
#[derive(Clone, Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    sizes: Vec<u32>,
    /// The largest chunk (the chunk size: the first may be shorter).
    largest: u32,
    media: Vec<Duration>,
    header: Vec<bool>,
    /// Chunks whose hash is not known yet (their page of the hash list has
    /// not arrived): not asked for, since what came could not be checked.
    unlisted: Vec<bool>,
    state: Vec<ChunkState>,
    /// How many live peers hold each chunk.
    avail: Vec<u32>,
    here: u32,
    peers: Vec<Peer>,
    playhead: Playhead,
    duration: Duration,
    /// Chunks the decoder is blocked on: due now, whatever the playhead says.
    blocked: Vec<u32>,
    /// Where playback (re)starts when not playing: the start offset or a
    /// seek's target (the playhead may be a reader's place before it).
    target: Duration,
    /// When the chunks playback (re)starts with were first asked for, while
    /// they are not all here: the rest waits [`FIRST_ALONE`] after it.
    first_asked: Option<Duration>,
    /// The playhead jumped (a seek): what is in flight around the old place
    /// is withdrawn at the next poll.
    jumped: bool,
    /// When the last poll's decisions change with time alone.
    wake: Option<Duration>,
    /// The codec's longest frame: buffered audio plays only up to the frame
    /// that straddles into a missing chunk (`playable_ahead`).
    frame: Duration,
    /// Bytes checked so far of chunks arriving in groups (their parts are
    /// readable before they are whole).
    partial: Vec<u32>,
    /// Tails asked for ([`Action::RequestTail`]) and not yet over.
    tails: Vec<Tail>,
}

/// A chunk's tail asked of a peer.
#[derive(Clone, Copy, Debug)]
struct Tail {
    peer: PeerKey,
    chunk: u32,
    /// Its bytes (queued at the peer until it is over).
    bytes: u64,
}

impl Scheduler {
    /// A scheduler for a track whose chunks have these sizes and media times
    /// (`header[i]`: the chunk holds bytes needed before any audio).
    pub fn new(
        config: SchedulerConfig,
        sizes: Vec<u32>,
        media: Vec<Duration>,
        header: Vec<bool>,
        duration: Duration,
    ) -> Self {
        let n = sizes.len();
        Self {
            config,
            state: vec![ChunkState::Missing; n],
            unlisted: vec![false; n],
            avail: vec![0; n],
            here: 0,
            largest: sizes.iter().copied().max().unwrap_or(0),
            sizes,
            media,
            header,
            peers: Vec::new(),
            playhead: Playhead { position: Duration::ZERO, at: Duration::ZERO, playing: false },
            duration,
            blocked: Vec::new(),
            jumped: false,
            first_asked: None,
            target: Duration::ZERO,
            wake: None,
            frame: Duration::ZERO,
            partial: vec![0; n],
            tails: Vec::new(),
        }
    }

    /// A scheduler for a manifest's track.
    pub fn for_manifest(config: SchedulerConfig, m: &chorus_protocol::Manifest) -> Self {
        let layout = m.layout();
        let sizes = layout.indices().map(|i| layout.chunk_len(i) as u32).collect();
        let media = layout.indices().map(|i| m.chunk_media_time(i)).collect();
        let header = layout
            .indices()
            .map(|i| {
                let r = layout.byte_range(i);
                m.media().header_ranges.iter().any(|h| h.start < r.end && r.start < h.end)
            })
            .collect();
        let mut s = Self::new(config, sizes, media, header, m.duration());
        // The manifest's sample rate is its peer's word: a frame is taken
        // as a second at most.
        let media = m.media();
        let frame = f64::from(media.codec.frame_samples()) / f64::from(media.sample_rate.max(1));
        s.frame = Duration::try_from_secs_f64(frame).unwrap_or(MAX_FRAME).min(MAX_FRAME);
        for i in layout.indices() {
            s.unlisted[i.as_usize()] = !m.page_known(chorus_protocol::Manifest::page_of(i));
        }
        s
    }

    /// The hashes of `chunks` are known now: they may be asked for.
    pub fn set_listed(&mut self, chunks: std::ops::Range<u32>) {
        let n = self.unlisted.len();
        let end = (chunks.end as usize).min(n);
        for u in &mut self.unlisted[(chunks.start as usize).min(end)..end] {
            *u = false;
        }
    }

    /// The media times of the chunks from `first` on, known better now (a
    /// page of the time index learned: [`chorus_protocol::Manifest`]).
    pub fn set_media_times(&mut self, first: u32, times: impl IntoIterator<Item = Duration>) {
        let from = (first as usize).min(self.media.len());
        for (m, t) in self.media[from..].iter_mut().zip(times) {
            *m = t;
        }
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.sizes.len() as u32
    }

    /// True once every chunk is here.
    pub fn is_complete(&self) -> bool {
        self.here as usize == self.sizes.len()
    }

    /// True if the chunk is here.
    pub fn is_here(&self, chunk: u32) -> bool {
        matches!(self.state.get(chunk as usize), Some(ChunkState::Here))
    }

    /// The first `bytes` of a chunk still arriving are checked and in the
    /// store: playback may start on them ([`Self::ready_to_start`]).
    pub fn part_arrived(&mut self, chunk: u32, bytes: u64) {
        if let Some(p) = self.partial.get_mut(chunk as usize) {
            *p = (*p).max(u32::try_from(bytes).unwrap_or(u32::MAX));
        }
    }

    /// True if every byte of the chunk can be read: it is here, or all its
    /// parts are (its tail from a second peer joined the first's bytes).
    fn is_readable(&self, chunk: u32) -> bool {
        let i = chunk as usize;
        self.is_here(chunk)
            || self.partial.get(i).zip(self.sizes.get(i)).is_some_and(|(p, s)| p >= s)
    }

    /// True if the chunk is here or its first bytes are.
    fn is_begun(&self, chunk: u32) -> bool {
        self.is_here(chunk) || self.partial.get(chunk as usize).is_some_and(|&p| p > 0)
    }

    /// Media time in the checked bytes of a chunk not yet whole: its share
    /// of the chunk's time, as its share of the bytes.
    fn part_time(&self, chunk: u32) -> Duration {
        let i = chunk as usize;
        let (Some(&part), Some(&size), Some(&start)) =
            (self.partial.get(i), self.sizes.get(i), self.media.get(i))
        else {
            return Duration::ZERO;
        };
        if part == 0 || size == 0 {
            return Duration::ZERO;
        }
        let end = self.media.get(i + 1).copied().unwrap_or(self.duration);
        end.saturating_sub(start).mul_f64(f64::from(part.min(size)) / f64::from(size))
    }

    /// A chunk is already here (from a cache) without a request.
    pub fn mark_here(&mut self, chunk: u32) {
        if let Some(state) = self.state.get_mut(chunk as usize) {
            if !matches!(state, ChunkState::Here) {
                *state = ChunkState::Here;
                self.here += 1;
            }
        }
    }

    /// Adds a peer.
    pub fn add_peer(&mut self, info: PeerInfo) -> PeerKey {
        let n = self.sizes.len();
        if info.has_all {
            for a in &mut self.avail {
                *a += 1;
            }
        }
        self.peers.push(Peer {
            rtt: info.rtt,
            min_rtt: info.rtt,
            rate: self.config.initial_rate,
            samples: 0,
            is_seed: info.is_seed,
            has_all: info.has_all,
            have: if info.has_all { Vec::new() } else { vec![false; n] },
            queued: 0,
            last_done: Duration::ZERO,
            run_since: Duration::ZERO,
            run_bytes: 0,
            done: [(Duration::ZERO, Duration::ZERO); DONE_KEPT],
            done_next: 0,
            timeouts_in_row: 0,
            corrupt: 0,
            dead: false,
            bytes: 0,
            path: PathReport::default(),
            no_tails: false,
            plan_cap: f64::INFINITY,
        });
        PeerKey(self.peers.len() - 1)
    }

    /// The peer announced that it holds `chunks`.
    pub fn peer_has(&mut self, peer: PeerKey, chunks: impl IntoIterator<Item = u32>) {
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        if p.has_all {
            return;
        }
        for c in chunks {
            if let Some(slot) = p.have.get_mut(c as usize) {
                if !*slot {
                    *slot = true;
                    if !p.dead {
                        self.avail[c as usize] += 1;
                    }
                }
            }
        }
    }

    /// Updates a peer's RTT (from QUIC's estimate).
    pub fn set_rtt(&mut self, peer: PeerKey, rtt: Duration) {
        if let Some(p) = self.peers.get_mut(peer.0) {
            p.rtt = rtt;
            p.min_rtt = p.min_rtt.min(rtt);
        }
    }

    /// The peer is gone (connection closed): its requests return to missing.
    pub fn remove_peer(&mut self, peer: PeerKey) {
        self.kill(peer);
    }

    fn kill(&mut self, peer: PeerKey) {
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        if p.dead {
            return;
        }
        p.dead = true;
        p.queued = 0;
        self.tails.retain(|t| t.peer != peer);
        for (i, a) in self.avail.iter_mut().enumerate() {
            if p.has_all || p.have[i] {
                *a = a.saturating_sub(1);
            }
        }
        for s in &mut self.state {
            if let ChunkState::Requested(list) = s {
                list.retain(|f| f.peer != peer);
                if list.is_empty() {
                    *s = ChunkState::Missing;
                }
            }
        }
    }

    /// True if the peer was dropped.
    pub fn is_dead(&self, peer: PeerKey) -> bool {
        self.peers.get(peer.0).is_none_or(|p| p.dead)
    }

    /// Live peers.
    pub fn live_peers(&self) -> usize {
        self.peers.iter().filter(|p| !p.dead).count()
    }

    /// The playhead moved (play, pause, seek, or simply time passing).
    pub fn set_playhead(&mut self, playhead: Playhead) {
        self.playhead = playhead;
    }

    /// Where playback will (re)start once it is not playing: the start
    /// offset, a seek's target. The chunks from the playhead (a reader's
    /// place, which may be before it) through a margin past it are asked
    /// first.
    pub fn set_target(&mut self, target: Duration) {
        self.target = target;
    }

    /// The listener seeked: requests outside the new urgent window are
    /// withdrawn at the next poll.
    pub fn seeked(&mut self) {
        self.jumped = true;
        self.first_asked = None;
    }

    /// Chunks the decoder is waiting for right now (they are due at once).
    pub fn set_blocked(&mut self, chunks: Vec<u32>) {
        self.blocked = chunks;
    }

    /// When chunk `i` is due, in scheduler time.
    pub fn deadline(&self, i: u32, now: Duration) -> Duration {
        let ph = self.playhead;
        if self.blocked.contains(&i) {
            return now;
        }
        if self.header[i as usize] {
            return now.min(ph.at);
        }
        let ahead = self.media[i as usize].saturating_sub(ph.position);
        let base = if ph.playing { ph.at } else { now.max(ph.at) };
        (base + ahead).saturating_sub(self.config.margin)
    }

    /// The first chunk playback still needs: the one at the playhead.
    fn playhead_chunk(&self) -> u32 {
        self.chunk_at(self.playhead.position)
    }

    /// The chunk holding media time `t`.
    fn chunk_at(&self, t: Duration) -> u32 {
        let i = self.media.partition_point(|&m| m <= t);
        i.saturating_sub(1) as u32
    }

    fn expected_completion(&self, p: &Peer, chunk: u32, now: Duration) -> Duration {
        now + p.rtt + p.secs(p.queued + u64::from(self.sizes[chunk as usize]))
    }

    /// When `ahead` bytes of `p`'s requests (the last of them `f`) will be
    /// in at its pace: from now (or when `f` reaches it), at its measured
    /// rate, and once it has sent nothing for longer than a lost packet's
    /// repair takes (two round trips and a chunk), at no more than a chunk
    /// per that time (its rate is measured only as chunks complete, and a
    /// path that slowed shows first in the silence).
    fn pace(&self, p: &Peer, f: &InFlight, ahead: u64, now: Duration) -> Duration {
        let from = now.max(f.sent + p.rtt);
        let at_rate = from + p.secs(ahead);
        let silent = now.saturating_sub(p.busy_since());
        if silent > self.repair_time(p) {
            at_rate.max(from + silent.mul_f64(ahead as f64 / f64::from(self.largest.max(1))))
        } else {
            at_rate
        }
    }

    /// A lost packet's repair, at most: two round trips and a chunk's
    /// transfer ([`Self::pace`]).
    fn repair_time(&self, p: &Peer) -> Duration {
        p.rtt * 2 + p.secs(u64::from(self.largest))
    }

    /// When [`Self::pace`] will pass `deadline` with time alone (the
    /// silence growing): for the driver's timer.
    fn pace_turns_late(&self, p: &Peer, ahead: u64, deadline: Duration) -> Duration {
        let since = p.busy_since();
        let k = ahead as f64 / f64::from(self.largest.max(1));
        // t + (t - since) k = deadline (from is t once the request has
        // reached the peer; a timer before that only polls early).
        let t = (deadline.as_secs_f64() + since.as_secs_f64() * k) / (1.0 + k);
        let t = Duration::from_secs_f64(t.max(0.0)).max(since + self.repair_time(p));
        t + Duration::from_millis(1)
    }

    /// Most work queued at `p`, in time at its rate: its least round trip
    /// and [`SchedulerConfig::queue_over_rtt`], at most
    /// [`SchedulerConfig::queue_cap`]. Not the current round trip: the
    /// queue the work builds lengthens it, and a cap that grew with it
    /// would feed the queue it bounds.
    fn queue_cap(&self, p: &Peer) -> Duration {
        self.config.queue_cap.min(p.min_rtt + self.config.queue_over_rtt)
    }

    /// The peer to ask for `chunk` (not `exclude`): the lowest expected
    /// completion among non-seed peers that meet the deadline, else the
    /// lowest overall. A peer's queue may not exceed `queue_cap` of work.
    /// `None` also when a non-seed peer will meet the deadline once its
    /// queue drains: the chunk waits rather than going to the seed.
    fn best_peer(
        &self,
        chunk: u32,
        deadline: Duration,
        now: Duration,
        exclude: &[InFlight],
    ) -> Option<(PeerKey, Duration)> {
        if self.unlisted[chunk as usize] {
            return None;
        }
        let size = u64::from(self.sizes[chunk as usize]);
        let mut best_peer: Option<(PeerKey, Duration)> = None;
        let mut best_any: Option<(PeerKey, Duration)> = None;
        let mut peer_later = false;
        for (i, p) in self.peers.iter().enumerate() {
            if p.dead || !p.has(chunk) || exclude.iter().any(|f| f.peer.0 == i) {
                continue;
            }
            let ect = self.expected_completion(p, chunk, now);
            let full = if p.samples == 0 {
                p.queued + size > self.config.unmeasured_queue * size
            } else {
                p.queued > 0 && p.secs(p.queued + size) > self.queue_cap(p)
            };
            if full {
                peer_later |= !p.is_seed && ect <= deadline;
                continue;
            }
            let key = (PeerKey(i), ect);
            if best_any.is_none_or(|(_, e)| ect < e) {
                best_any = Some(key);
            }
            if !p.is_seed && ect <= deadline && best_peer.is_none_or(|(_, e)| ect < e) {
                best_peer = Some(key);
            }
        }
        match (best_peer, peer_later) {
            (Some(b), _) => Some(b),
            (None, true) => None,
            (None, false) => best_any,
        }
    }

    /// The peer that would deliver `chunk` soonest (not `exclude`), seeds
    /// and peers with full queues too, and when: a peer sends a request
    /// before those it has queued that are due later (the stream
    /// priorities it sets from their deadlines), so only work due sooner
    /// is ahead of it. For a chunk whose request lost packets, close to
    /// its deadline: what it costs another peer is one chunk.
    fn rescuer(
        &self,
        chunk: u32,
        deadline: Duration,
        now: Duration,
        exclude: &[InFlight],
    ) -> Option<(PeerKey, Duration)> {
        let can = |(i, p): &(usize, &Peer)| {
            !p.dead && p.has(chunk) && exclude.iter().all(|f| f.peer.0 != *i)
        };
        // Often nobody else has it (one seed): no walk over the track then,
        // at every poll until the repair comes.
        if self.unlisted[chunk as usize] || !self.peers.iter().enumerate().any(|x| can(&x)) {
            return None;
        }
        let mut ahead = vec![0u64; self.peers.len()];
        for (i, state) in self.state.iter().enumerate() {
            if let ChunkState::Requested(list) = state {
                for f in list.iter().filter(|f| f.deadline <= deadline) {
                    ahead[f.peer.0] += u64::from(self.sizes[i]);
                }
            }
        }
        let size = u64::from(self.sizes[chunk as usize]);
        self.peers
            .iter()
            .enumerate()
            .filter(can)
            .map(|(i, p)| (PeerKey(i), now + p.rtt + p.secs(ahead[i] + size)))
            .min_by_key(|&(_, ect)| ect)
    }

    /// A chunk that was here is missing again (the cache it was kept in
    /// lost it): it will be asked for like any missing chunk.
    pub fn forget(&mut self, chunk: u32) {
        if let Some(ChunkState::Here) = self.state.get(chunk as usize) {
            self.state[chunk as usize] = ChunkState::Missing;
            self.partial[chunk as usize] = 0;
            self.here -= 1;
        }
    }

    /// Records a chunk already on its way from `peer` without a request
    /// of ours (the rest of a start response): it is in flight like a
    /// request, so it is not asked for again unless it is late.
    pub fn expect(&mut self, peer: PeerKey, chunk: u32, now: Duration) {
        let Some(ChunkState::Missing) = self.state.get(chunk as usize) else { return };
        let Some(p) = self.peers.get(peer.0) else { return };
        let expected = self.expected_completion(p, chunk, now);
        let deadline = self.deadline(chunk, now);
        self.start_run(peer, now);
        self.peers[peer.0].queued += u64::from(self.sizes[chunk as usize]);
        self.state[chunk as usize] = ChunkState::Requested(vec![InFlight {
            peer,
            sent: now,
            soonest: now,
            expected,
            deadline,
        }]);
    }

    /// A peer with nothing queued gets work: a new run of deliveries
    /// begins (its first byte can come no sooner than `from`).
    fn start_run(&mut self, peer: PeerKey, from: Duration) {
        let p = &mut self.peers[peer.0];
        if p.queued == 0 {
            p.run_since = from;
            p.run_bytes = 0;
        }
    }

    /// A rate measured on the peer's connection before the scheduler
    /// asked it anything (the start response's head, sent back to back):
    /// it replaces the guess for the start rule, as a first measurement
    /// would, but plans work at no more than the cautious initial rate
    /// until a run of deliveries measures the peer. The head is a few KB
    /// (the first 4 KiB of audio, the manifest before it): read in one
    /// burst, as a stream a retransmission releases is, it claimed 4 MB/s
    /// of a `4g` path giving 150 KB/s, and the peer was given 59 chunks
    /// (5.5 s of a WAV) that came too late while the peers that joined
    /// fetched seconds ahead.
    pub fn measured_rate(&mut self, peer: PeerKey, bytes_per_sec: f64) {
        let cautious = self.config.initial_rate;
        if let Some(p) = self.peers.get_mut(peer.0)
            && p.samples == 0
            && bytes_per_sec.is_finite()
            && bytes_per_sec > 0.0
        {
            p.rate = bytes_per_sec;
            p.samples = 1;
            p.plan_cap = cautious;
        }
    }

    /// What the peer reported of the path from it (packets sent and lost,
    /// over this connection and earlier ones: `Peer::path_seen`). A path
    /// with enough packets and almost no loss is clean: a start from it
    /// holds a round trip and a half of audio, not a retransmission's
    /// worth more ([`Self::ready_to_start`]).
    pub fn set_path(&mut self, peer: PeerKey, report: PathReport) {
        if let Some(p) = self.peers.get_mut(peer.0) {
            p.path = report;
        }
    }

    fn request(
        &mut self,
        chunk: u32,
        peer: PeerKey,
        ect: Duration,
        now: Duration,
        actions: &mut Vec<Action>,
    ) {
        let deadline = self.deadline(chunk, now);
        let first_byte = now + self.peers[peer.0].rtt;
        self.start_run(peer, first_byte);
        self.peers[peer.0].queued += u64::from(self.sizes[chunk as usize]);
        let soonest = now + self.peers[peer.0].min_rtt;
        let f = InFlight { peer, sent: now, soonest, expected: ect, deadline };
        match &mut self.state[chunk as usize] {
            ChunkState::Requested(list) => list.push(f),
            s => *s = ChunkState::Requested(vec![f]),
        }
        actions.push(Action::Request { peer, chunk, deadline });
    }

    /// When [`Scheduler::poll`] next needs calling if no event comes and
    /// no input changes: the earliest time a decision of the last poll
    /// turns with time alone (a chunk enters the urgent window, a stuck
    /// request becomes overdue, a chunk waiting for a busy peer would miss
    /// its deadline there and goes elsewhere). `None`: only an event or a
    /// new input (a peer, the playhead, a blocked read) changes anything.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.wake
    }

    /// Decides what to request now.
    pub fn poll(&mut self, now: Duration) -> Vec<Action> {
        let mut wake: Option<Duration> = None;
        // Times at or before `now` were acted on (or cannot be): only later
        // ones wake the driver, at least a millisecond on.
        let mut note = |t: Duration| {
            if t > now {
                let t = t.max(now + Duration::from_millis(1));
                wake = Some(wake.map_or(t, |w: Duration| w.min(t)));
            }
        };
        // Deadlines stand still while playing or before the playhead's
        // start; otherwise (paused, starting late) they move with `now`,
        // and what depends on them does not change with time alone.
        let fixed = self.playhead.playing || now < self.playhead.at;
        let mut actions = Vec::new();
        let n = self.sizes.len() as u32;
        // Not playing (starting, or seeking): the reader races ahead of any
        // clock (a demuxer may scan to a seek target), so more is asked at
        // once; a loss then stalls one chunk, not the whole window.
        let horizon =
            now + if self.playhead.playing { self.config.horizon } else { self.config.horizon * 3 };
        // Chunks the decoder is blocked on, then header chunks wherever they
        // are, then earliest deadline first from the playhead.
        let start = self.playhead_chunk();
        let mut urgent: Vec<u32> = self.blocked.iter().copied().filter(|&i| i < n).collect();
        urgent.extend((0..n).filter(|&i| self.header[i as usize] && !self.blocked.contains(&i)));
        let mut last_urgent = start;
        for i in start..n {
            if self.header[i as usize] || self.blocked.contains(&i) {
                continue;
            }
            let deadline = self.deadline(i, now);
            if deadline > horizon {
                // It enters the window when the horizon reaches it.
                if fixed {
                    note(now + (deadline - horizon));
                }
                break;
            }
            last_urgent = i;
            urgent.push(i);
        }
        if std::mem::take(&mut self.jumped) {
            self.withdraw_outside(&urgent, &mut actions);
        }
        // Not playing (starting, or seeking): what playback starts with is
        // asked first, and the rest a moment later. Asked in one burst, the
        // peer reads them from disk in parallel and sends whichever is read
        // first; its link's queue is first in, first out, so a chunk 20 s
        // ahead could go before the one at the seek's target.
        let first = if self.playhead.playing { None } else { self.first_needed(start) };
        let holding = match (&first, self.first_asked) {
            (None, _) => {
                self.first_asked = None;
                false
            }
            (Some(_), None) => {
                self.first_asked = Some(now);
                note(now + FIRST_ALONE);
                true
            }
            (Some(_), Some(at)) => {
                note(at + FIRST_ALONE);
                now < at + FIRST_ALONE
            }
        };
        // Bytes each peer has yet to send of the requests met so far (they
        // come in deadline order, as a peer sends them): what is ahead of
        // the next one asked of it.
        let mut ahead = vec![0u64; self.peers.len()];
        for i in urgent {
            if let ChunkState::Requested(list) = &self.state[i as usize] {
                let left = self.sizes[i as usize].saturating_sub(self.partial[i as usize]);
                for f in list {
                    if let Some(a) = ahead.get_mut(f.peer.0) {
                        *a += u64::from(left);
                    }
                }
            }
            if holding
                && let Some(range) = &first
                && !range.contains(&i)
                && !self.header[i as usize]
                && !self.blocked.contains(&i)
            {
                continue;
            }
            let deadline = self.deadline(i, now);
            match &self.state[i as usize] {
                ChunkState::Here => {}
                ChunkState::Missing => {
                    if let Some((peer, ect)) = self.best_peer(i, deadline, now, &[]) {
                        self.request(i, peer, ect, now, &mut actions);
                        if first.as_ref().is_some_and(|r| r.contains(&i)) {
                            self.split(i, (peer, ect), now, &mut actions);
                        }
                        // When it turns overdue if its peer sends nothing
                        // (with no other timer, the driver slept past it).
                        let rtt = self.peers[peer.0].rtt;
                        let due = deadline.saturating_sub(self.config.hedge_window);
                        if fixed || due <= now {
                            let past = ect + rtt + self.config.overdue_slack;
                            note(past.max(due) + Duration::from_millis(1));
                        }
                        // When it would count as lost, with a repair too
                        // late for its deadline (see below).
                        let lost_at =
                            if fixed { ect.max(deadline.saturating_sub(rtt)) } else { ect };
                        note(lost_at + Duration::from_millis(1));
                    } else if let Some(slack) = self.busy_slack(i, deadline, now)
                        && fixed
                    {
                        // Waiting for a busy peer that would make it in
                        // time: once it no longer would, ask elsewhere.
                        note(now + slack + Duration::from_millis(1));
                    }
                }
                ChunkState::Requested(list) if list.len() == 1 => {
                    let f = list[0];
                    let p = &self.peers[f.peer.0];
                    // Overdue: past its expected completion, due soon, and
                    // stuck: the peer has delivered nothing since it was
                    // asked (stalled), or one sent with it or after it and
                    // due later has already completed (overtaken, e.g. by a
                    // loss). A peer that is merely busy keeps delivering in
                    // order.
                    let overtaken = p.overtook(&f);
                    let stalled = p.last_done <= f.sent;
                    let stuck = stalled || overtaken;
                    let overdue = now > f.expected + p.rtt + self.config.overdue_slack
                        && stuck
                        && deadline < now + self.config.hedge_window;
                    // Overtaken (a peer sends its responses by deadline: the
                    // stream priorities it sets), or past its expected
                    // completion with nothing from its peer since, it has
                    // presumably lost packets, whose repair comes a round
                    // trip from now at the soonest.
                    let lost = overtaken || (stalled && now > f.expected);
                    // Expected when asked, or later if what is ahead of it
                    // at the peer's pace now says so: a path that slowed
                    // keeps delivering in order (not stuck, but late).
                    let expected = f.expected.max(self.pace(p, &f, ahead[f.peer.0], now));
                    if fixed && expected <= deadline {
                        note(self.pace_turns_late(p, ahead[f.peer.0], deadline));
                    }
                    let expected = if lost { expected.max(now + p.rtt) } else { expected };
                    let late = expected > deadline;
                    if stuck && !overdue {
                        // It turns overdue once past its expected completion
                        // with the deadline within the hedge window.
                        let past = f.expected + p.rtt + self.config.overdue_slack;
                        let due = deadline.saturating_sub(self.config.hedge_window);
                        if fixed || due <= now {
                            note(past.max(due) + Duration::from_millis(1));
                        }
                    }
                    if stuck && !(lost && late) {
                        // It counts as lost past its expected completion,
                        // and is rescued once a repair would come after its
                        // deadline (with deadlines moving with time, that
                        // turns only with the first).
                        let ms = Duration::from_millis(1);
                        let repair_late = deadline.saturating_sub(p.rtt);
                        match (lost, fixed) {
                            (false, true) => note(f.expected.max(repair_late) + ms),
                            (false, false) => note(f.expected + ms),
                            (true, true) => note(repair_late + ms),
                            (true, false) => {}
                        }
                    }
                    let list = list.clone();
                    if lost && late && !overdue {
                        // Rescued: to whichever peer would send it soonest.
                        if let Some((peer, ect)) = self.rescuer(i, deadline, now, &list) {
                            self.request(i, peer, ect, now, &mut actions);
                        }
                    } else if overdue || late {
                        if let Some((peer, ect)) = self.best_peer(i, deadline, now, &list) {
                            // A late request is hedged only if the second copy
                            // would make the deadline: otherwise it only
                            // duplicates load on a saturated swarm. An overdue
                            // one (the peer may have stalled) is re-asked anyway.
                            if overdue || (ect <= deadline && ect < expected) {
                                self.request(i, peer, ect, now, &mut actions);
                            }
                        }
                    }
                }
                ChunkState::Requested(_) => {}
            }
        }
        // Everything from the playhead on is here or on its way: fill in
        // what lies behind it (an MP3's leading tag, which the player skips;
        // what a seek jumped over), a few chunks at a time, so the cache
        // ends up with the whole track.
        if holding {
            self.wake = wake;
            return actions;
        }
        if (start..n).all(|i| !matches!(self.state[i as usize], ChunkState::Missing)) {
            let behind: Vec<u32> = (0..start)
                .filter(|&i| {
                    matches!(self.state[i as usize], ChunkState::Missing)
                        && self.avail[i as usize] > 0
                })
                .take(2)
                .collect();
            for i in behind {
                let deadline = now + self.config.horizon * 3;
                if let Some((peer, ect)) = self.best_peer(i, deadline, now, &[]) {
                    self.request(i, peer, ect, now, &mut actions);
                }
            }
        }
        // Beyond the horizon: rarest first, into spare capacity only.
        let mut later: Vec<u32> = (last_urgent + 1..n)
            .filter(|&i| matches!(self.state[i as usize], ChunkState::Missing))
            .take(self.config.lookahead)
            .collect();
        later.sort_by_key(|&i| (self.avail[i as usize], i));
        for i in later {
            if self.avail[i as usize] == 0 {
                continue;
            }
            let deadline = self.deadline(i, now);
            if let Some((peer, ect)) = self.best_peer(i, deadline, now, &[]) {
                let p = &self.peers[peer.0];
                // Spare capacity only, and never the seed: at most two
                // chunks queued at the peer (a rate estimate can run high,
                // and a standing queue of prefetch at the bottleneck delays
                // every urgent request behind it, a seek's most of all).
                let two = 2 * u64::from(self.sizes[i as usize]);
                if p.is_seed || p.queued >= two || p.secs(p.queued) > self.queue_cap(p) / 2 {
                    continue;
                }
                self.request(i, peer, ect, now, &mut actions);
            }
        }
        self.wake = wake;
        actions
    }

    /// How long `chunk` can still wait for a busy (full) non-seed peer that
    /// would deliver it by `deadline`, if one would: the most slack of them.
    fn busy_slack(&self, chunk: u32, deadline: Duration, now: Duration) -> Option<Duration> {
        let size = u64::from(self.sizes[chunk as usize]);
        self.peers
            .iter()
            .filter(|p| !p.dead && !p.is_seed && p.has(chunk))
            .filter(|p| {
                if p.samples == 0 {
                    p.queued + size > self.config.unmeasured_queue * size
                } else {
                    p.queued > 0 && p.secs(p.queued + size) > self.queue_cap(p)
                }
            })
            .map(|p| self.expected_completion(p, chunk, now))
            .filter(|ect| *ect <= deadline)
            .map(|ect| deadline - ect)
            .max()
    }

    /// After a seek: cancels every request outside the new urgent window, so
    /// the peers' queues (and uplinks) are free for what is needed now.
    fn withdraw_outside(&mut self, keep: &[u32], actions: &mut Vec<Action>) {
        let mut wanted = vec![false; self.sizes.len()];
        for &i in keep {
            if let Some(w) = wanted.get_mut(i as usize) {
                *w = true;
            }
        }
        for (i, wanted) in wanted.iter().enumerate() {
            if *wanted {
                continue;
            }
            let ChunkState::Requested(list) = &self.state[i] else { continue };
            let size = u64::from(self.sizes[i]);
            for f in list.clone() {
                actions.push(Action::Cancel { peer: f.peer, chunk: i as u32 });
                let p = &mut self.peers[f.peer.0];
                p.queued = p.queued.saturating_sub(size);
            }
            self.state[i] = ChunkState::Missing;
        }
        self.withdraw_tails(|c| !wanted.get(c as usize).copied().unwrap_or(false), actions);
    }

    /// Withdraws the tails of the chunks `gone` picks: cancelled, their
    /// bytes no longer queued at their peers.
    fn withdraw_tails(&mut self, gone: impl Fn(u32) -> bool, actions: &mut Vec<Action>) {
        let mut i = 0;
        while i < self.tails.len() {
            if gone(self.tails[i].chunk) {
                let t = self.tails.swap_remove(i);
                self.tail_over(t);
                actions.push(Action::Cancel { peer: t.peer, chunk: t.chunk });
            } else {
                i += 1;
            }
        }
    }

    /// A chunk of the range playback (re)starts with, just asked of
    /// `whole` (expected in full at `whole_done`), not begun: its tail
    /// from the middle is asked of the live peer that would send it
    /// soonest, if that is before `whole` would have it all. Its bytes
    /// then come over two links at once: the chunk is readable a
    /// half-chunk's transfer sooner (at 20 Mbit/s, 3 ms of a 16 KiB
    /// chunk's 6.5), which is what a seek waits for past its round trip.
    /// Not a seed (it serves what peers cannot), not a peer that refused
    /// a tail, and not a peer not yet measured: at a track's start, a
    /// tail in an unmeasured peer's slow start takes the place of a chunk
    /// after the first ones (two plays of 390 stuttered just after their
    /// start on `lossy` and `4g` with tails asked of such peers, none of
    /// 540 before).
    fn split(
        &mut self,
        chunk: u32,
        (whole, whole_done): (PeerKey, Duration),
        now: Duration,
        actions: &mut Vec<Action>,
    ) {
        let i = chunk as usize;
        let group = chorus_protocol::groups::GROUP_LEN as u32;
        let size = self.sizes[i];
        let from = size / 2 / group * group;
        if from == 0 || self.partial[i] > 0 || self.tails.iter().any(|t| t.chunk == chunk) {
            return;
        }
        let bytes = u64::from(size - from);
        let tail_peer = self
            .peers
            .iter()
            .enumerate()
            .filter(|(k, p)| {
                let able = !p.dead && !p.is_seed && !p.no_tails && p.samples > 0;
                *k != whole.0 && able && p.has(chunk)
            })
            .map(|(k, p)| (PeerKey(k), now + p.rtt + p.secs(p.queued + bytes)))
            .min_by_key(|&(_, done)| done);
        let Some((peer, done)) = tail_peer else {
            return;
        };
        if done >= whole_done {
            return;
        }
        let deadline = self.deadline(chunk, now);
        let first_byte = now + self.peers[peer.0].rtt;
        self.start_run(peer, first_byte);
        self.peers[peer.0].queued += bytes;
        self.tails.push(Tail { peer, chunk, bytes });
        actions.push(Action::RequestTail { peer, chunk, from, deadline });
    }

    /// A tail's bytes are no longer queued at its peer.
    fn tail_over(&mut self, t: Tail) {
        if let Some(p) = self.peers.get_mut(t.peer.0) {
            p.queued = p.queued.saturating_sub(t.bytes);
        }
    }

    /// The tail of `chunk` asked of `peer` is over: all in (`done`), or
    /// it failed (then it is not asked of that peer again: a node that
    /// does not know the request, or cannot serve it). Its bytes count
    /// toward the peer's run of deliveries, as a chunk's would.
    pub fn on_tail_done(&mut self, peer: PeerKey, chunk: u32, done: bool, now: Duration) {
        let Some(pos) = self.tails.iter().position(|t| t.peer == peer && t.chunk == chunk) else {
            return;
        };
        let t = self.tails.swap_remove(pos);
        self.tail_over(t);
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        if done {
            p.run_bytes += t.bytes;
            p.bytes += t.bytes;
            p.last_done = now;
        } else {
            p.no_tails = true;
        }
    }

    fn settle(&mut self, peer: PeerKey, chunk: u32) -> Option<InFlight> {
        let size = u64::from(self.sizes[chunk as usize]);
        let ChunkState::Requested(list) = &mut self.state[chunk as usize] else { return None };
        let pos = list.iter().position(|f| f.peer == peer)?;
        let f = list.remove(pos);
        if list.is_empty() {
            self.state[chunk as usize] = ChunkState::Missing;
        }
        let p = &mut self.peers[peer.0];
        p.queued = p.queued.saturating_sub(size);
        Some(f)
    }

    /// A verified chunk arrived from `peer`. Returns cancels for any other
    /// copy still in flight.
    pub fn on_received(&mut self, peer: PeerKey, chunk: u32, now: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        let size = u64::from(self.sizes[chunk as usize]);
        let settled = self.settle(peer, chunk);
        if let Some(p) = self.peers.get_mut(peer.0) {
            p.bytes += size;
            p.timeouts_in_row = 0;
            if let Some(f) = settled {
                // A reply that could not begin before the peer's last one
                // was all in: the link was idle between them (the peer was
                // asked at the deadlines' pace, not the link's), and that
                // time is not transfer: the run leaves it out. Otherwise a
                // paced peer's rate is the pace (traced on `transatlantic`:
                // 200 KB/s on 2.5 MB/s paths, and a seek's chunks went two
                // to one peer while the others, measured slower, idled).
                // The run goes on over the replies around the gap, so one
                // reply's jitter does not make the rate.
                let could_begin = f.soonest.min(now);
                if p.run_bytes > 0 && could_begin > p.last_done {
                    p.run_since = (p.run_since + (could_begin - p.last_done)).min(now);
                }
                // The rate over the run so far (at least a millisecond:
                // bytes read in one go say nothing of time).
                p.run_bytes += size;
                let span = now.saturating_sub(p.run_since);
                let secs = span.max(MIN_RUN).as_secs_f64();
                let sample = p.run_bytes as f64 / secs;
                // Measured only by a start response's head so far: a run
                // too short to measure the path leaves that as it is (the
                // run goes on); the first that can replaces it.
                let provisional = p.plan_cap.is_finite();
                if !provisional || span >= FIRST_RUN {
                    // A long run begins anew, so the rate follows the path.
                    if secs > RUN_SPAN.as_secs_f64() {
                        (p.run_since, p.run_bytes) = (now, 0);
                    }
                    let first = p.samples == 0 || provisional;
                    p.rate = if first { sample } else { 0.7 * p.rate + 0.3 * sample };
                    p.samples += 1;
                    p.plan_cap = f64::INFINITY;
                }
                p.completed(&f);
            }
            p.last_done = now;
        }
        let mut stalled = Vec::new();
        if let ChunkState::Requested(list) = &self.state[chunk as usize] {
            for f in list.clone() {
                actions.push(Action::Cancel { peer: f.peer, chunk });
                let p = &mut self.peers[f.peer.0];
                p.queued = p.queued.saturating_sub(size);
                if f.peer != peer && !p.dead {
                    // Overtaken by a hedge: slower than thought; and if it
                    // delivered nothing since this request went out, and
                    // the request was overdue (not a rescue's quick win
                    // over a loss), a stall, counted like a timeout (two
                    // in a row and it is out).
                    p.rate /= 2.0;
                    let overdue = now > f.expected + p.rtt + self.config.overdue_slack;
                    if p.last_done <= f.sent && overdue {
                        p.timeouts_in_row += 1;
                        if p.timeouts_in_row >= 2 {
                            stalled.push(f.peer);
                        }
                    }
                }
            }
        }
        for slow in stalled {
            self.kill(slow);
            actions.push(Action::Drop { peer: slow });
        }
        // Its tail from another peer is not needed now.
        self.withdraw_tails(|c| c == chunk, &mut actions);
        if !matches!(self.state[chunk as usize], ChunkState::Here) {
            self.state[chunk as usize] = ChunkState::Here;
            self.here += 1;
        }
        actions
    }

    /// A request failed. Returns a `Drop` if the peer is now out.
    pub fn on_failed(
        &mut self,
        peer: PeerKey,
        chunk: u32,
        failure: Failure,
        now: Duration,
    ) -> Vec<Action> {
        let settled = self.settle(peer, chunk);
        let Some(p) = self.peers.get_mut(peer.0) else { return Vec::new() };
        let drop = match failure {
            // A peer that delivered other chunks while this one waited is
            // alive, only busy (this request queued behind more urgent
            // ones): slower than thought, not gone.
            Failure::Timeout
                if settled.is_some_and(|f| p.last_done > f.sent)
                    && now.saturating_sub(p.last_done) < self.config.hedge_window =>
            {
                p.rate /= 2.0;
                false
            }
            Failure::Timeout => {
                p.timeouts_in_row += 1;
                p.rate /= 2.0;
                p.timeouts_in_row >= 2
            }
            Failure::Missing => {
                if p.has_all {
                    // It claimed everything; believe the refusal for this chunk.
                    p.has_all = false;
                    p.have = vec![true; self.sizes.len()];
                }
                if let Some(h) = p.have.get_mut(chunk as usize) {
                    if *h {
                        *h = false;
                        self.avail[chunk as usize] = self.avail[chunk as usize].saturating_sub(1);
                    }
                }
                false
            }
            Failure::Corrupt => {
                p.corrupt += 1;
                p.rate /= 2.0;
                p.corrupt >= 2
            }
        };
        if drop {
            self.kill(peer);
            vec![Action::Drop { peer }]
        } else {
            Vec::new()
        }
    }

    /// The chunks playback (re)starts with from `start` (the reader's
    /// chunk), while any of them, a header or a chunk a reader is blocked
    /// on is not here yet: through twice the start rule's margin (a round
    /// trip and a chunk from the best peer) of audio past the target (or
    /// the chunk, if later), at most 8 chunks past the target's. `None`
    /// once they are all here.
    fn first_needed(&self, start: u32) -> Option<std::ops::RangeInclusive<u32>> {
        let n = self.chunk_count();
        let margin = self.start_margin();
        let from = self.media.get(start as usize).copied().unwrap_or_default().max(self.target);
        let until = from + margin * 2;
        let mut end = start.max(self.chunk_at(self.target));
        let last = end + 7;
        while end + 1 < n && end < last && self.media[end as usize + 1] <= until {
            end += 1;
        }
        let range = start..=end;
        let waiting = range.clone().any(|i| !self.is_here(i))
            || (0..n).any(|i| self.header[i as usize] && !self.is_here(i))
            || self.blocked.iter().any(|&i| i < n && !self.is_here(i));
        waiting.then_some(range)
    }

    /// Media time buffered contiguously from `from`: whole chunks, or the
    /// checked part of the chunk `from` is in. A part of a later chunk
    /// does not count: the margin was measured with whole chunks, and
    /// counting such parts, lossless starts began with less buffered and
    /// ran dry on the lossy profile (6 of 100 starts, WAV at 208-339 ms,
    /// against 3-4 before).
    pub fn buffered_ahead(&self, from: Duration) -> Duration {
        self.buffered_counting(from, false)
    }

    /// [`Self::buffered_ahead`]; `later_parts`: also the checked part of a
    /// later chunk (a start from a clean path, whose margin is thin and
    /// whose rest of that chunk is on its way).
    fn buffered_counting(&self, from: Duration, later_parts: bool) -> Duration {
        let start = self.chunk_at(from);
        let first_missing = (start..self.chunk_count()).find(|&i| !self.is_readable(i));
        match first_missing {
            None => self.duration.saturating_sub(from),
            Some(i) if i == start || later_parts => {
                (self.media[i as usize] + self.part_time(i)).saturating_sub(from)
            }
            Some(i) => self.media[i as usize].saturating_sub(from),
        }
    }

    /// The start rule for playback starting at `from` (the track's start,
    /// a start offset or a seek's target; not where a reader scanning
    /// toward it is, nor an old place): true once the audio that can play
    /// from there (`playable_ahead`) covers the time to fetch the
    /// rest at the measured aggregate rate, less the time the rest takes to
    /// play, plus the margin (`start_margin`).
    pub fn ready_to_start(&self, from: Duration) -> bool {
        self.ready_to_start_decoded(from, Duration::ZERO)
    }

    /// [`Self::ready_to_start`], with `decoded` of audio past `from`
    /// already decoded (by the player, from the chunks here). On a path
    /// the peers report clean that audio counts as it is: the estimate
    /// from the chunks takes off a whole longest frame for the one that
    /// straddles into a missing byte (the codec's longest: 96 ms for a
    /// 48 kHz FLAC), where the decoder knows where its frames end. On
    /// other paths the estimate alone counts: their margin was measured
    /// with it, and with the decoded audio counting there the WAV's warm
    /// starts on `4g` ran dry 2 times in 40, none in 40 without.
    pub fn ready_to_start_decoded(&self, from: Duration, decoded: Duration) -> bool {
        let start = self.chunk_at(from);
        // Headers and the first chunk of audio are always needed.
        let headers_here =
            (0..self.chunk_count()).all(|i| !self.header[i as usize] || self.is_begun(i));
        if !headers_here || !self.is_begun(start) {
            return false;
        }
        if self.is_complete() {
            return true;
        }
        let live: Vec<&Peer> = self.peers.iter().filter(|p| !p.dead).collect();
        if live.is_empty() {
            // No peer yet (a start from the cache while the peers are
            // asked): the audio here must last until one can deliver.
            return self.playable(from, false) >= ALONE_START_AHEAD;
        }
        // Only rates measured count: a peer's assumed rate is a guess, and
        // on a slow swarm the guesses of peers not yet heard from started
        // playback that then stuttered. With none measured, the guess of
        // one peer.
        let measured: f64 = live.iter().filter(|p| p.samples > 0).map(|p| p.rate).sum();
        let guess = live.iter().map(|p| p.rate).fold(0.0, f64::max);
        let rate = if measured > 0.0 { measured } else { guess }.max(1.0);
        let remaining: u64 = (start..self.chunk_count())
            .filter(|&i| !self.is_here(i))
            .map(|i| u64::from(self.sizes[i as usize].saturating_sub(self.partial[i as usize])))
            .sum();
        // 15% headroom: rates are estimates, and a peer with one request in
        // flight loses a round trip per chunk that the estimate leaves out.
        let fetch = Duration::from_secs_f64(remaining as f64 * 1.15 / rate);
        let play = self.duration.saturating_sub(from);
        let (margin, clean) = self.start_margin_now();
        let decoded = if clean { decoded } else { Duration::ZERO };
        self.playable(from, clean).max(decoded) >= fetch.saturating_sub(play) + margin
    }

    /// Media time playable from `from` with the chunks here: what is
    /// buffered, less the frame that straddles into the first missing
    /// chunk (the decoder outputs no part of it until that chunk is here;
    /// a FLAC start counted 161 ms in its first chunk where 93 could play,
    /// and stuttered at 96 ms on a lossy link).
    #[cfg(test)]
    fn playable_ahead(&self, from: Duration) -> Duration {
        self.playable(from, false)
    }

    /// [`Self::playable_ahead`], counting later chunks' parts if
    /// `later_parts` ([`Self::buffered_counting`]).
    fn playable(&self, from: Duration, later_parts: bool) -> Duration {
        let ahead = self.buffered_counting(from, later_parts);
        if from + ahead >= self.duration { ahead } else { ahead.saturating_sub(self.frame) }
    }

    /// The start rule's margin: from the best live peer, its round trip
    /// and two chunks at its rate, but no faster than the cautious initial
    /// rate (a rate measured is the path without loss, and the margin is
    /// what covers a retransmission and the chunk behind it); with none,
    /// [`ALONE_START_AHEAD`] (what the rule asks then). One chunk was
    /// enough while the start rule overcounted the audio it had (a WAV's
    /// coarse index, the frame that straddles into a missing chunk);
    /// counted exactly, one chunk stuttered in 4 of 15 WAV starts on the
    /// lossy profile, two in 2 of 15.
    ///
    /// From a peer whose path is clean (it reported
    /// [`CLEAN_AFTER_PACKETS`] packets or more, under one in a thousand
    /// lost), one and a half round trips: what recovering a lost packet
    /// takes (QUIC declares it lost 9/8 of a round trip after it was due
    /// and sends it again), not the chunks behind it at a loss-proof
    /// rate; and the checked part of a later chunk counts toward it, the
    /// rest of that chunk being on its way at the path's rate.
    fn start_margin(&self) -> Duration {
        self.start_margin_now().0
    }

    /// [`Self::start_margin`] now, and whether it comes from a path the
    /// peers report clean (the start rule's own, `-v` and the benchmark).
    pub fn start_margin_now(&self) -> (Duration, bool) {
        let chunk = f64::from(self.largest);
        let cautious = self.config.initial_rate;
        self.peers
            .iter()
            .filter(|p| !p.dead)
            .map(|p| {
                let clean = p.path.sent >= CLEAN_AFTER_PACKETS
                    && p.path.lost.saturating_mul(1000) <= p.path.sent;
                if clean {
                    (p.rtt + p.rtt / 2, true)
                } else {
                    let chunks = 2.0 * chunk / p.rate.min(cautious).max(1.0);
                    (p.rtt + Duration::from_secs_f64(chunks), false)
                }
            })
            .min()
            .unwrap_or((ALONE_START_AHEAD, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// 100 chunks of 16 KiB, 400 ms each (320 kb/s), chunk 0 a header.
    fn track() -> Scheduler {
        let n = 100;
        let mut header = vec![false; n];
        header[0] = true;
        Scheduler::new(
            SchedulerConfig::default(),
            vec![16_384; n],
            (0..n as u64).map(|i| ms(i * 400)).collect(),
            header,
            ms(40_000),
        )
    }

    /// [`track`], playing from its start at time 0.
    fn playing_track() -> Scheduler {
        let mut s = track();
        s.set_playhead(Playhead { position: ms(0), at: ms(0), playing: true });
        s
    }

    fn requests(actions: &[Action]) -> Vec<(usize, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Request { peer, chunk, .. } => Some((peer.0, *chunk)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn earliest_deadline_first_to_the_fastest_peer() {
        let mut s = playing_track();
        let slow = s.add_peer(PeerInfo { rtt: ms(200), is_seed: false, has_all: true });
        let fast = s.add_peer(PeerInfo { rtt: ms(20), is_seed: false, has_all: true });
        let r = requests(&s.poll(ms(0)));
        assert_eq!(r.first(), Some(&(fast.0, 0)), "the header chunk, from the low-RTT peer");
        // Slow start: two requests each until rates are measured.
        assert_eq!(r, vec![(fast.0, 0), (fast.0, 1), (slow.0, 2), (slow.0, 3)]);
        // Once measured, the fast peer takes the next chunks, in deadline order.
        s.on_received(fast, 0, ms(40));
        s.on_received(fast, 1, ms(60));
        let r = requests(&s.poll(ms(60)));
        let chunks: Vec<u32> = r.iter().map(|(_, c)| *c).collect();
        assert_eq!(chunks[..5], [4, 5, 6, 7, 8]);
        assert!(r.iter().all(|(p, _)| *p == fast.0), "{r:?}");
    }

    #[test]
    fn a_seek_withdraws_what_was_asked_around_the_old_place() {
        let mut s = track();
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.set_playhead(Playhead { position: ms(0), at: ms(0), playing: true });
        s.on_received(p, 0, ms(5));
        s.on_received(p, 1, ms(10));
        let before = requests(&s.poll(ms(10)));
        assert!(before.iter().any(|(_, c)| *c == 2), "{before:?}");
        // Playing on normally: nothing is withdrawn.
        s.set_playhead(Playhead { position: ms(500), at: ms(500), playing: true });
        assert!(!s.poll(ms(500)).iter().any(|a| matches!(a, Action::Cancel { .. })));
        // A seek to 20 s (chunk 50): chunk 2's request is withdrawn, and the
        // new place is asked for.
        s.seeked();
        s.set_playhead(Playhead { position: ms(20_000), at: ms(600), playing: true });
        let after = s.poll(ms(600));
        assert!(after.contains(&Action::Cancel { peer: p, chunk: 2 }), "{after:?}");
        assert!(requests(&after).iter().any(|(_, c)| *c == 50), "{after:?}");
        // The header chunk (0) is never withdrawn; it is here anyway.
        assert!(!after.contains(&Action::Cancel { peer: p, chunk: 0 }));
    }

    fn tails(actions: &[Action]) -> Vec<(usize, u32, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::RequestTail { peer, chunk, from, .. } => Some((peer.0, *chunk, *from)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_seeks_first_chunks_come_over_two_links_at_once() {
        let mut s = track();
        let info = PeerInfo { rtt: ms(80), is_seed: false, has_all: true };
        let (a, b) = (s.add_peer(info.clone()), s.add_peer(info));
        s.mark_here(0);
        // Not before the peers are measured (a start's slow start).
        s.set_target(ms(10_000));
        s.set_playhead(Playhead { position: ms(10_000), at: ms(0), playing: false });
        let asked = s.poll(ms(0));
        assert!(requests(&asked).iter().any(|r| r.1 == 25) && tails(&asked).is_empty());
        for p in [a, b] {
            s.measured_rate(p, 2e6);
        }
        // A seek to 20 s (chunk 50): its chunk is asked of one peer whole
        // and of the other from its middle on.
        let seek = |s: &mut Scheduler, to: u64, at: u64| {
            s.seeked();
            s.set_target(ms(to));
            s.set_playhead(Playhead { position: ms(to), at: ms(at), playing: false });
            s.poll(ms(at))
        };
        let asked = seek(&mut s, 20_000, 0);
        let whole = requests(&asked);
        assert!(whole.contains(&(a.0, 50)) || whole.contains(&(b.0, 50)), "{asked:?}");
        let other = if whole.contains(&(a.0, 50)) { b } else { a };
        assert!(tails(&asked).contains(&(other.0, 50, 8192)), "{asked:?}");
        // Its tail in before the first half: the chunk counts once the
        // bytes before the tail are in too, and the next chunk's parts
        // count after it.
        s.part_arrived(50, 4096);
        assert_eq!(s.buffered_ahead(ms(20_000)), ms(100));
        s.part_arrived(50, 16_384);
        assert_eq!(s.buffered_ahead(ms(20_000)), ms(400));
        s.part_arrived(51, 8192);
        assert_eq!(s.buffered_counting(ms(20_000), true), ms(600));
        // The whole chunk landing first withdraws the tail.
        let first = if other == a { b } else { a };
        let landed = s.on_received(first, 50, ms(200));
        assert!(landed.contains(&Action::Cancel { peer: other, chunk: 50 }), "{landed:?}");
        // A peer that did not serve a tail is not asked for one again:
        // the chunks of the next seek come whole.
        let asked = seek(&mut s, 30_000, 300);
        let tail = tails(&asked);
        assert!(tail.iter().any(|t| t.1 == 75), "{asked:?}");
        s.on_tail_done(PeerKey(tail[0].0), tail[0].1, false, ms(300));
        let asked = seek(&mut s, 10_000, 400);
        assert!(tails(&asked).iter().all(|t| t.0 != tail[0].0), "{asked:?}");
        assert!(requests(&asked).contains(&(tail[0].0, 25)), "the whole chunk: {asked:?}");
        // While playing, no tails: the chunks come well ahead of need.
        let mut s = playing_track();
        s.add_peer(PeerInfo { rtt: ms(80), is_seed: false, has_all: true });
        s.add_peer(PeerInfo { rtt: ms(80), is_seed: false, has_all: true });
        assert!(tails(&s.poll(ms(0))).is_empty());
    }

    #[test]
    fn a_peers_queue_is_capped_in_time_a_round_trip_and_a_little_more() {
        let queued = |rtt: u64| {
            let mut s = track();
            let p = s.add_peer(PeerInfo { rtt: ms(rtt), is_seed: false, has_all: true });
            s.poll(ms(0));
            // Measured at 16 KiB per 100 ms (~170 KB/s) after the round trip.
            s.on_received(p, 0, ms(rtt + 95));
            s.on_received(p, 1, ms(rtt + 200));
            let r = requests(&s.poll(ms(rtt + 200)));
            assert!(r.iter().all(|(q, _)| *q == p.0));
            r.len()
        };
        // 10 ms away: 160 ms of work, one chunk (two would be 200 ms).
        assert_eq!(queued(10), 1);
        // 400 ms away: 550 ms, five chunks.
        assert_eq!(queued(400), 5);
        // However far: 1 s at most, nine or ten chunks.
        assert!((8..=10).contains(&queued(2_000)), "{}", queued(2_000));
        // A round trip lengthened by the queue (10 ms, now 400 ms) does
        // not lengthen the cap: it would feed the queue.
        let mut s = track();
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.poll(ms(0));
        s.on_received(p, 0, ms(105));
        s.on_received(p, 1, ms(210));
        s.set_rtt(p, ms(400));
        assert_eq!(requests(&s.poll(ms(210))).len(), 1);
    }

    #[test]
    fn the_seed_serves_only_what_peers_cannot_make_in_time() {
        let mut s = track();
        let seed = s.add_peer(PeerInfo { rtt: ms(5), is_seed: true, has_all: true });
        let peer = s.add_peer(PeerInfo { rtt: ms(30), is_seed: false, has_all: true });
        let r = requests(&s.poll(ms(0)));
        // The header is due now: nobody makes it in time, the fastest (seed) gets it.
        assert_eq!(r[0], (seed.0, 0));
        // Chunks due later go to the peer although the seed is faster.
        assert!(r.iter().filter(|(_, c)| *c >= 5).all(|(p, _)| *p == peer.0), "{r:?}");
    }

    #[test]
    fn a_stalled_request_is_hedged_and_the_loser_cancelled() {
        let mut s = track();
        let a = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.poll(ms(0));
        let b = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        // Much later nothing has arrived from `a`: chunk 0 is overdue.
        let r = requests(&s.poll(ms(5_000)));
        assert!(r.contains(&(b.0, 0)), "chunk 0 hedged to b: {r:?}");
        let cancels = s.on_received(b, 0, ms(5_030));
        assert_eq!(cancels, vec![Action::Cancel { peer: a, chunk: 0 }]);
        assert!(s.is_here(0));
    }

    #[test]
    fn a_new_request_sets_the_timer_for_when_it_would_turn_overdue_or_lost() {
        // Four chunks, all in the window at once: no chunk enters it later,
        // so the only timers are stuck requests'. Chunk 0, 16 KiB at the
        // measured 256 KB/s behind nothing, is expected at 72.5 ms; past
        // a round trip and 250 ms of slack it is overdue, but it is due at
        // once: past its expected completion with nothing from its peer it
        // counts as lost, and a repair would be late.
        let n = 4;
        let mut s = Scheduler::new(
            SchedulerConfig::default(),
            vec![16_384; n],
            (0..n as u64).map(|i| ms(i * 400)).collect(),
            vec![false; n],
            ms(1_600),
        );
        s.config.queue_over_rtt = Duration::from_secs(1);
        let a = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.measured_rate(a, 256.0 * 1024.0);
        s.set_playhead(Playhead { position: ms(0), at: ms(0), playing: true });
        assert_eq!(requests(&s.poll(ms(0))).len(), n);
        assert_eq!(s.poll_timeout(), Some(ms(72) + Duration::from_micros(500) + ms(1)));
        // Due later (chunk 0 at 350 ms: 500 less the 150 ms margin), as
        // far off as the overdue timer (333.5 ms): sooner than that, the
        // silence paces it (a chunk per the time since its first byte
        // could come, 10 ms: t + (t - 10 ms) > 350 ms past 180 ms).
        let mut later = s.clone();
        later.set_playhead(Playhead { position: ms(0), at: ms(500), playing: true });
        later.poll(ms(1));
        assert_eq!(later.poll_timeout(), Some(ms(180 + 1)));
    }

    #[test]
    fn a_request_overtaken_near_its_deadline_is_rescued_before_its_repair() {
        // Peer a (60 ms, 1.25 MB/s measured) is asked for the first
        // chunks; b joins. a delivers chunk 0, then chunk 2 before chunk 1:
        // it sends by deadline, so chunk 1 lost packets, and their repair
        // comes a round trip from now at the soonest. Chunk 1 is due at
        // 250 ms (400 ms in, 150 ms of margin): from 190 ms on a repair
        // would be late, and b gets it then, not before.
        let setup = || {
            let mut s = playing_track();
            // Room for the three chunks at the cautious rate a's head
            // leaves it planned at (60 ms and 150 ms of work at 256 KB/s).
            s.config.queue_over_rtt = ms(150);
            let a = s.add_peer(PeerInfo { rtt: ms(60), is_seed: false, has_all: true });
            s.measured_rate(a, 1.25e6);
            let r = requests(&s.poll(ms(0)));
            assert!((0..3).all(|c| r.contains(&(a.0, c))), "{r:?}");
            let b = s.add_peer(PeerInfo { rtt: ms(60), is_seed: false, has_all: true });
            s.measured_rate(b, 1.25e6);
            s.on_received(a, 0, ms(80));
            (s, a, b)
        };
        let hedged = |s: &mut Scheduler, from: Duration| {
            let mut now = from;
            for _ in 0..50 {
                let r = requests(&s.poll(now));
                if let Some((p, _)) = r.iter().find(|(_, c)| *c == 1) {
                    return Some((now, *p));
                }
                match s.poll_timeout() {
                    Some(t) if t < ms(400) => now = t,
                    _ => return None,
                }
            }
            None
        };
        let (mut s, a, b) = setup();
        s.on_received(a, 2, ms(95));
        let (at, to) = hedged(&mut s, ms(95)).expect("chunk 1 rescued");
        assert_eq!(to, b.0);
        assert!(at > ms(190) && at < ms(192), "{at:?}");

        // Nothing done after chunk 0: a is still sending chunk 1, which
        // it expects by 86 ms; it may be late, but not lost, and its
        // deadline is far: not rescued.
        let (mut s, _, _) = setup();
        assert_eq!(hedged(&mut s, ms(95)), None);
    }

    #[test]
    fn poll_timeout_is_when_a_chunk_enters_the_window_or_a_request_turns_overdue() {
        // Playing from 0 with a fast peer (measured: it delivers at once):
        // chunks due within 8 s are asked for; chunk 21 (media 8.4 s, due
        // at 8.25 s) enters the window at 0.25 s, and the timer says so.
        // (No prefetch beyond the window here: it would fetch chunk 21 in
        // spare capacity.)
        let mut s = track();
        s.config.lookahead = 0;
        let a = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.set_playhead(Playhead { position: ms(0), at: ms(0), playing: true });
        let mut now = ms(0);
        for _ in 0..10 {
            for (_, c) in requests(&s.poll(now)) {
                now += Duration::from_micros(100);
                s.on_received(a, c, now);
            }
        }
        assert!((0..21).all(|c| s.is_here(c)) && !s.is_here(21), "the window, not beyond");
        let wake = s.poll_timeout().expect("a timer");
        assert_eq!(wake, ms(250), "chunk 21 enters the window");
        assert!(requests(&s.poll(wake - ms(2))).is_empty(), "nothing before the timer");
        assert_eq!(requests(&s.poll(wake)), vec![(a.0, 21)], "chunk 21 at the timer");

        // A stuck request due at once (the header): the only peer delivers
        // nothing; past its expected completion (10 ms RTT + 16 KiB at the
        // assumed 256 KB/s: 72.5 ms) it counts as lost, and its repair, a
        // round trip later, would come after its deadline: a timer says
        // when, and a second peer gets it then, not before.
        let mut s = track();
        let a = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.set_playhead(Playhead { position: ms(0), at: ms(0), playing: true });
        assert!(requests(&s.poll(ms(0))).contains(&(a.0, 0)));
        // b holds chunk 0 only (so its slow-start queue is free for it).
        let b = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: false });
        s.peer_has(b, [0]);
        let t = hedged_at_a_timer(&mut s, (b, 0));
        assert!(t > ms(73) && t < ms(75), "{t:?}");

        // A stuck request due later (chunk 3, due at 1.05 s, fourth in a
        // queue of a second's work at 256 KB/s: expected at 260 ms): it
        // would turn overdue past its expected completion + RTT + 250 ms
        // of slack (520 ms), but past a repair's time (two round trips
        // and a chunk, 82.5 ms) its peer's silence paces it, a chunk per
        // the time since its first byte could come (10 ms), four chunks
        // to it: late past 218 ms (t + 4 (t - 10 ms) > 1.05 s), and a
        // timer says when.
        let mut s = track();
        s.config.queue_over_rtt = Duration::from_secs(1);
        let a = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.measured_rate(a, 256.0 * 1024.0);
        s.set_playhead(Playhead { position: ms(0), at: ms(0), playing: true });
        assert!(requests(&s.poll(ms(0))).contains(&(a.0, 3)));
        let b = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: false });
        s.peer_has(b, [3]);
        let t = hedged_at_a_timer(&mut s, (b, 3));
        assert!(t > ms(218) && t < ms(221), "{t:?}");
    }

    /// Polls `s` at its timers (and 2 ms before each: nothing then) until
    /// `hedge` (peer, chunk) is asked; returns when (at most 50 timers).
    fn hedged_at_a_timer(s: &mut Scheduler, hedge: (PeerKey, u32)) -> Duration {
        let want = (hedge.0.0, hedge.1);
        for _ in 0..50 {
            let t = s.poll_timeout().expect("a timer");
            let early = requests(&s.poll(t - ms(2)));
            assert!(!early.contains(&want), "hedged before its time: {t:?}");
            if requests(&s.poll(t)).contains(&want) {
                return t;
            }
        }
        panic!("not hedged at 50 timers");
    }

    #[test]
    fn corrupt_twice_drops_the_peer_and_its_work_returns() {
        let mut s = playing_track();
        let bad = s.add_peer(PeerInfo { rtt: ms(1), is_seed: false, has_all: true });
        let good = s.add_peer(PeerInfo { rtt: ms(50), is_seed: false, has_all: true });
        let r = requests(&s.poll(ms(0)));
        let bad_chunks: Vec<u32> = r.iter().filter(|(p, _)| *p == bad.0).map(|(_, c)| *c).collect();
        assert!(bad_chunks.len() >= 2);
        assert!(s.on_failed(bad, bad_chunks[0], Failure::Corrupt, ms(10)).is_empty());
        assert_eq!(
            s.on_failed(bad, bad_chunks[1], Failure::Corrupt, ms(11)),
            vec![Action::Drop { peer: bad }]
        );
        assert!(s.is_dead(bad));
        // The good peer delivers what it had, then takes the lost chunks.
        for (_, c) in r.iter().filter(|(p, _)| *p == good.0) {
            s.on_received(good, *c, ms(100));
        }
        let r = requests(&s.poll(ms(100)));
        assert!(r.iter().all(|(p, _)| *p == good.0));
        assert!(
            r.iter().any(|(_, c)| *c == bad_chunks[0]),
            "the lost chunks are asked again: {bad_chunks:?} {r:?}"
        );
    }

    #[test]
    fn a_peer_overtaken_by_hedges_without_delivering_loses_its_place() {
        let setup = || {
            let mut s = playing_track();
            let stalling = s.add_peer(PeerInfo { rtt: ms(1), is_seed: false, has_all: true });
            let honest = s.add_peer(PeerInfo { rtt: ms(50), is_seed: false, has_all: true });
            let r = requests(&s.poll(ms(0)));
            let stuck: Vec<u32> =
                r.iter().filter(|(p, _)| *p == stalling.0).map(|(_, c)| *c).collect();
            assert!(stuck.len() >= 2, "{r:?}");
            (s, stalling, honest, stuck)
        };
        // The honest peer wins the stalling peer's chunks (as hedges would)
        // once they are overdue (expected at 65 and 129 ms, overdue 251 ms
        // after).
        let (mut s, stalling, honest, stuck) = setup();
        let first = s.on_received(honest, stuck[0], ms(400));
        assert!(!first.contains(&Action::Drop { peer: stalling }));
        assert!(!s.is_dead(stalling), "one overtaken request is only slowness");
        let second = s.on_received(honest, stuck[1], ms(410));
        assert!(second.contains(&Action::Drop { peer: stalling }), "{second:?}");
        assert!(s.is_dead(stalling));
        assert!(requests(&s.poll(ms(420))).iter().all(|(p, _)| *p == honest.0));

        // Won sooner (rescues of requests that lost packets): only
        // slowness.
        let (mut s, stalling, honest, stuck) = setup();
        s.on_received(honest, stuck[0], ms(300));
        s.on_received(honest, stuck[1], ms(310));
        assert!(!s.is_dead(stalling));
    }

    #[test]
    fn a_reader_not_yet_playing_gets_three_horizons_in_flight() {
        let deepest = |playing: bool| {
            let mut s = track();
            s.config.queue_cap = Duration::from_secs(60);
            s.config.queue_over_rtt = Duration::from_secs(60);
            let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
            s.set_playhead(Playhead { position: ms(0), at: ms(0), playing });
            s.poll(ms(0));
            // Its first two requests measure it: 16 KiB in 5 ms.
            s.on_received(p, 0, ms(15));
            s.on_received(p, 1, ms(20));
            s.set_playhead(Playhead { position: ms(0), at: ms(20), playing });
            let r = requests(&s.poll(ms(20)));
            r.iter().map(|(_, c)| *c).max().unwrap_or(0)
        };
        // 400 ms chunks: 8 s is 20 chunks, 24 s is 60 (less the margin).
        assert!(deepest(true) <= 21, "{}", deepest(true));
        assert!(deepest(false) >= 55, "{}", deepest(false));
    }

    #[test]
    fn rarest_first_beyond_the_horizon() {
        let mut s = track();
        let a = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: false });
        let b = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: false });
        s.peer_has(a, 0..100);
        s.peer_has(b, (0..100).filter(|c| *c != 90));
        for c in 0..30 {
            s.on_received(a, c, ms(1));
        }
        s.set_playhead(Playhead { position: ms(0), at: ms(0), playing: true });
        // Playing, with the first 30 chunks here, chunk 90 (held by one
        // peer) comes before its neighbours beyond the horizon.
        let r = requests(&s.poll(ms(2)));
        let beyond: Vec<u32> = r.iter().map(|(_, c)| *c).filter(|&c| c > 50).collect();
        assert_eq!(beyond.first(), Some(&90), "{r:?}");
    }

    #[test]
    fn header_chunks_anywhere_and_blocked_reads_come_first() {
        let mut s = track();
        s.header[99] = true; // tags at the end of the file
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        let r = requests(&s.poll(ms(0)));
        assert_eq!(r, vec![(p.0, 0), (p.0, 99)], "both header chunks, before any audio");
        s.on_received(p, 0, ms(50));
        s.on_received(p, 99, ms(60));
        // The reader seeks to 30 s and blocks there: that chunk is due now.
        s.set_blocked(vec![75]);
        assert_eq!(s.deadline(75, ms(70)), ms(70));
        let r = requests(&s.poll(ms(70)));
        assert_eq!(r.first(), Some(&(p.0, 75)), "{r:?}");
    }

    #[test]
    fn pause_and_seek_move_deadlines() {
        let mut s = track();
        s.set_playhead(Playhead { position: ms(0), at: ms(1000), playing: true });
        assert_eq!(s.deadline(10, ms(1000)), ms(1000 + 4000 - 150));
        s.set_playhead(Playhead { position: ms(20_000), at: ms(2000), playing: true });
        assert_eq!(s.deadline(60, ms(2000)), ms(2000 + 4000 - 150));
        assert_eq!(s.playhead_chunk(), 50);
        // Paused: deadlines slide with `now`.
        s.set_playhead(Playhead { position: ms(20_000), at: ms(2000), playing: false });
        assert_eq!(s.deadline(60, ms(9000)), ms(9000 + 4000 - 150));
    }

    #[test]
    fn a_chunk_whose_hash_is_not_known_yet_is_not_asked_for() {
        let mut s = playing_track();
        for u in &mut s.unlisted[4..] {
            *u = true;
        }
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.on_received(p, 0, ms(5));
        s.on_received(p, 1, ms(6));
        let asked: Vec<u32> = requests(&s.poll(ms(10))).iter().map(|r| r.1).collect();
        assert_eq!(asked, [2, 3], "only the listed chunks");
        s.on_received(p, 2, ms(30));
        s.on_received(p, 3, ms(31));
        assert!(requests(&s.poll(ms(32))).is_empty(), "nothing it could not check");
        s.set_listed(4..100);
        let asked: Vec<u32> = requests(&s.poll(ms(33))).iter().map(|r| r.1).collect();
        assert_eq!(asked.first(), Some(&4));
    }

    #[test]
    fn rates_are_measured_over_a_run_of_deliveries() {
        // 50 ms RTT, 2 MB/s: two chunks asked at 0 start flowing at 50 ms
        // and are read in one go at 66 ms (16 ms for 32 KiB).
        let mut s = playing_track();
        let p = s.add_peer(PeerInfo { rtt: ms(50), is_seed: false, has_all: true });
        assert_eq!(requests(&s.poll(ms(0))), vec![(p.0, 0), (p.0, 1)]);
        s.on_received(p, 0, ms(66));
        s.on_received(p, 1, ms(66));
        let rate = s.peers[p.0].rate;
        // Per chunk, the second would look infinitely fast (the old
        // estimate said ~50 MB/s); over the run it is what the path did.
        assert!((1.0e6..4.2e6).contains(&rate), "{rate}");
        // The wait for the first byte is not transfer time: a lone request
        // to the idle peer, its 16 KiB in 8 ms after the round trip.
        let before = s.peers[p.0].rate;
        s.request(2, p, ms(100), ms(100), &mut Vec::new());
        s.on_received(p, 2, ms(158));
        let sample = (s.peers[p.0].rate - 0.7 * before) / 0.3;
        assert!((sample - 2.048e6).abs() < 1e3, "{sample}");
    }

    #[test]
    fn a_peer_asked_at_the_deadlines_pace_is_measured_at_its_links_rate() {
        // 80 ms away, 2 MB/s (8 ms a chunk): chunk 0 asked at 0 is in at
        // 88 ms; chunk 1, asked at 50 ms while 0 was still on its way,
        // flows from 130 and is in at 138. The peer idled from 88 to 130:
        // over the run from 80 it would measure 565 KB/s, the pace.
        let mut s = playing_track();
        let p = s.add_peer(PeerInfo { rtt: ms(80), is_seed: false, has_all: true });
        s.request(0, p, ms(88), ms(0), &mut Vec::new());
        s.request(1, p, ms(138), ms(50), &mut Vec::new());
        s.on_received(p, 0, ms(88));
        let first = s.peers[p.0].rate;
        assert!((first - 2.048e6).abs() < 1e3, "{first}");
        s.on_received(p, 1, ms(138));
        let sample = (s.peers[p.0].rate - 0.7 * first) / 0.3;
        assert!((sample - 2.048e6).abs() < 1e3, "{sample}");
        // Replies back to back (asked before the last was in) stay one
        // run: 2 and 3 asked at 140, in at 228 and 236.
        s.request(2, p, ms(228), ms(140), &mut Vec::new());
        s.request(3, p, ms(236), ms(140), &mut Vec::new());
        s.on_received(p, 2, ms(228));
        s.on_received(p, 3, ms(236));
        assert_eq!(s.peers[p.0].run_bytes, 32_768);
    }

    #[test]
    fn a_head_read_in_one_burst_gives_its_peer_no_more_than_a_cautious_queue() {
        // A start response's rest (chunks 0-2) is in flight from `p`, 80
        // ms away; its head, 4 KiB read in one burst, claimed 4 MB/s.
        let requested = |head_rate: Option<f64>| {
            let mut s = playing_track();
            let p = s.add_peer(PeerInfo { rtt: ms(80), is_seed: false, has_all: true });
            if let Some(r) = head_rate {
                s.measured_rate(p, r);
            }
            for i in 0..3 {
                s.expect(p, i, ms(0));
            }
            let mut r = requests(&s.poll(ms(0)));
            r.extend(requests(&s.poll(ms(10))));
            (s, p, r.len())
        };
        // Planned at the cautious rate: at most a round trip and 150 ms of
        // work at 256 KB/s, with the 48 KiB in flight: nothing more yet
        // (planned at 4 MB/s: 18 more chunks).
        let (mut s, p, n) = requested(Some(4.0e6));
        assert_eq!(n, 0);
        assert_eq!(s.peers[p.0].rate, 4.0e6, "the start rule still counts it");
        // A chunk of the burst settling 0.3 ms in is no measurement...
        s.on_received(p, 0, Duration::from_micros(300));
        assert!(s.peers[p.0].plan_cap.is_finite());
        // ...the next one 134 ms in is: 32 KiB over the run, 245 KB/s,
        // which replaces the head's rate.
        s.on_received(p, 1, ms(134));
        let rate = s.peers[p.0].rate;
        assert!((rate - 32_768.0 / 0.134).abs() < 1.0, "{rate}");
        assert!(s.peers[p.0].plan_cap.is_infinite());
    }

    #[test]
    fn a_rate_measured_before_any_request_replaces_the_guess_but_not_the_start_margin() {
        let mut s = track();
        let p = s.add_peer(PeerInfo { rtt: ms(80), is_seed: false, has_all: true });
        s.measured_rate(p, 2.5e6);
        assert_eq!((s.peers[p.0].rate, s.peers[p.0].samples), (2.5e6, 1));
        s.measured_rate(p, 1.0);
        assert_eq!(s.peers[p.0].rate, 2.5e6, "a first measurement only");
        // A start has no room for a retransmission: its margin assumes no
        // more than the cautious initial rate (2 × 16 KiB at 256 KB/s).
        assert_eq!(s.start_margin(), ms(80) + ms(125));
    }

    #[test]
    fn start_rule_starts_at_once_on_a_fast_swarm_and_waits_on_a_slow_one() {
        // 256 KB/s against a 40 KB/s track: one chunk of audio (0.4 s)
        // covers the next chunk's fetch, so playback starts right away.
        let mut s = track();
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.poll(ms(0));
        assert!(!s.ready_to_start(ms(0)), "nothing here yet");
        s.on_received(p, 0, ms(70));
        assert!(s.ready_to_start(ms(0)));
        // At ~18 KB/s the 40 KB/s track cannot start after 1.6 s buffered:
        // the rest would take ~87 s to fetch and only 38 s to play.
        let mut slow = track();
        let q = slow.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        for c in 0..4 {
            slow.poll(ms(u64::from(c) * 1000));
            slow.on_received(q, c, ms(u64::from(c) * 1000 + 900));
        }
        assert!(!slow.ready_to_start(ms(0)));
        // Once the whole track is here it starts, whatever the rate.
        for c in 4..100 {
            slow.on_received(q, c, ms(10_000 + u64::from(c)));
        }
        assert!(slow.ready_to_start(ms(0)));
    }

    #[test]
    fn with_no_peer_yet_the_start_needs_three_seconds_in_hand() {
        // A track whose start is in the cache, no peer added yet: 7 chunks
        // of 400 ms (2.8 s, less a frame) are not enough, 8 are.
        let mut s = track();
        for c in 0..7 {
            s.mark_here(c);
        }
        assert!(!s.ready_to_start(ms(0)));
        s.mark_here(7);
        assert!(s.ready_to_start(ms(0)));
        // From 1 s in, the same chunks hold 2.2 s: not enough.
        assert!(!s.ready_to_start(ms(1_000)));
        // Once a peer is there, the usual rule: one chunk of this 40 KB/s
        // track is enough at 256 KB/s.
        let mut t = track();
        t.mark_here(0);
        assert!(!t.ready_to_start(ms(0)));
        let p = t.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        t.measured_rate(p, 256.0 * 1024.0);
        assert!(t.ready_to_start(ms(0)));
    }

    #[test]
    fn what_playback_starts_with_is_asked_a_moment_before_the_rest() {
        // A seek to 20 s (chunk 50) on a 100 ms link: the chunks covering
        // twice the start rule's margin are asked at once, the rest of the
        // window FIRST_ALONE later (the driver is woken for it).
        let mut s = track();
        let p = s.add_peer(PeerInfo { rtt: ms(100), is_seed: false, has_all: true });
        // Measured (an unmeasured peer holds two requests at most).
        s.measured_rate(p, 2.5e6);
        s.on_received(p, 0, ms(0));
        s.set_playhead(Playhead { position: ms(20_000), at: ms(0), playing: false });
        // Twice the margin (100 ms + 2 chunks at 256 KB/s) is 450 ms: two
        // chunks of 400 ms.
        assert_eq!(requests(&s.poll(ms(0))), vec![(p.0, 50), (p.0, 51)]);
        assert_eq!(s.poll_timeout(), Some(FIRST_ALONE));
        assert!(requests(&s.poll(ms(1))).is_empty(), "the rest waits");
        let rest = requests(&s.poll(FIRST_ALONE));
        assert!(rest.contains(&(p.0, 52)), "{rest:?}");
        assert!(rest.iter().all(|&(_, c)| c != 50 && c != 51), "asked once: {rest:?}");
        // Playing, nothing waits.
        let mut t = playing_track();
        let q = t.add_peer(PeerInfo { rtt: ms(100), is_seed: false, has_all: true });
        assert_eq!(requests(&t.poll(ms(0))), vec![(q.0, 0), (q.0, 1)]);
    }

    #[test]
    fn the_start_rule_counts_audio_from_where_playback_starts() {
        // 10 chunks of 400 ms here from the track's start, on a fast swarm.
        let mut s = track();
        let p = s.add_peer(PeerInfo { rtt: ms(100), is_seed: false, has_all: true });
        s.poll(ms(0));
        for c in 0..10 {
            s.on_received(p, c, ms(200));
        }
        assert!(s.ready_to_start(ms(0)));
        assert_eq!(s.buffered_ahead(ms(3_990)), ms(10));
        // 10 ms before the buffer's end: less than a round trip left, so a
        // seek there waits (the playhead, still at 0, has 4 s).
        assert!(!s.ready_to_start(ms(3_990)));
        assert!(!s.ready_to_start(ms(20_000)), "nothing at a seek's target");
    }

    #[test]
    fn a_frame_is_the_codecs_and_a_manifests_claims_cannot_stretch_it() {
        use chorus_protocol::{ChunkLayout, ChunkSize, Codec, Container, MediaInfo, Tags, chunk};
        let data = bytes::Bytes::from(vec![7u8; 40_000]);
        let layout = ChunkLayout::new(40_000, ChunkSize::new(16_384).unwrap()).unwrap();
        let (hashes, _) = chunk::chunk_bytes(&data, &layout).unwrap();
        let with = |codec, sample_rate| {
            let media = MediaInfo {
                codec,
                container: Container::Flac,
                sample_rate,
                channels: 2,
                frames: 1000,
                header_ranges: Vec::new(),
                time_index: vec![],
                tags: Tags::default(),
            };
            let m = chorus_protocol::Manifest::new(media, layout, hashes.clone()).unwrap();
            Scheduler::for_manifest(SchedulerConfig::default(), &m).frame
        };
        assert_eq!(with(Codec::Flac, 48_000), ms(96));
        assert_eq!(with(Codec::Mp3, 48_000), ms(24));
        assert_eq!(with(Codec::Flac, 1), MAX_FRAME, "a rate of 1 Hz claimed");
    }

    /// A FLAC-like track: 10 chunks of 16 KiB, 161 ms of audio each,
    /// frames of 93 ms.
    fn flac_like() -> Scheduler {
        let n = 10;
        let mut s = Scheduler::new(
            SchedulerConfig::default(),
            vec![16_384; n],
            (0..n as u64).map(|i| ms(i * 161)).collect(),
            vec![false; n],
            ms(n as u64 * 161),
        );
        s.frame = ms(93);
        s
    }

    #[test]
    fn the_start_rule_does_not_count_the_frame_that_straddles_into_a_missing_chunk() {
        // A FLAC-like track: 161 ms of audio per 16 KiB chunk, frames of
        // 93 ms; a 10 ms round trip makes the margin 135 ms, less than
        // the first chunk's 161.
        let (n, mut s) = (10, flac_like());
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.poll(ms(0));
        s.on_received(p, 0, ms(60));
        assert_eq!(s.start_margin(), ms(135));
        assert_eq!(s.buffered_ahead(ms(0)), ms(161));
        assert!(!s.ready_to_start(ms(0)), "68 ms of it can play: under the margin");
        s.on_received(p, 1, ms(70));
        assert!(s.ready_to_start(ms(0)), "229 ms can play");
        // The last frame plays whole: nothing straddles past the end.
        for c in 2..n as u32 {
            s.on_received(p, c, ms(80));
        }
        assert_eq!(s.playable_ahead(ms(1_400)), ms(210));
    }

    #[test]
    fn audio_the_player_has_decoded_counts_as_it_is_on_a_clean_path() {
        // The FLAC-like track's first chunk is here (161 ms of audio, of
        // which the estimate counts 68: a whole 93 ms frame may straddle
        // into the missing chunk); from a clean path 80 ms away the
        // margin is 120 ms.
        let clean = PathReport { sent: CLEAN_AFTER_PACKETS, lost: 0 };
        let mut s = flac_like();
        let p = s.add_peer(PeerInfo { rtt: ms(80), is_seed: false, has_all: true });
        s.set_path(p, clean);
        s.poll(ms(0));
        s.on_received(p, 0, ms(60));
        assert_eq!(s.start_margin(), ms(120));
        assert!(!s.ready_to_start_decoded(ms(0), ms(119)));
        // The decoder's frames ended 125 ms in: that much plays.
        assert!(s.ready_to_start_decoded(ms(0), ms(125)));
        // A path not known clean: its margin was measured with the
        // estimate, which alone counts there.
        let mut u = flac_like();
        let q = u.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        u.poll(ms(0));
        u.on_received(q, 0, ms(60));
        assert!(!u.ready_to_start_decoded(ms(0), ms(1_000)));
        // Still only what is here: a missing head holds it back.
        let mut t = flac_like();
        t.header[0] = true;
        let q = t.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        t.poll(ms(0));
        t.on_received(q, 1, ms(60));
        assert!(!t.ready_to_start_decoded(ms(161), ms(1_000)), "the header chunk is missing");
    }

    #[test]
    fn a_clean_path_starts_with_a_round_trip_and_a_half_of_audio_and_counts_later_parts() {
        // The FLAC-like track (161 ms per chunk, 93 ms frames) from a peer
        // 80 ms away that delivered its head at 2.5 MB/s.
        let start = |path: Option<PathReport>| {
            let mut s = flac_like();
            let p = s.add_peer(PeerInfo { rtt: ms(80), is_seed: false, has_all: true });
            s.measured_rate(p, 2.5e6);
            if let Some(path) = path {
                s.set_path(p, path);
            }
            s.poll(ms(0));
            s.on_received(p, 0, ms(90));
            // Half of the second chunk: 80.5 ms more audio.
            s.part_arrived(1, 8192);
            s
        };
        let clean = PathReport { sent: CLEAN_AFTER_PACKETS, lost: 0 };
        let s = start(Some(clean));
        assert_eq!(s.start_margin(), ms(120));
        // 161 + 80.5 ms here, less a frame: 148.5 ms can play, over 120.
        assert_eq!(s.playable(ms(0), true), Duration::from_micros(148_500));
        assert!(s.ready_to_start(ms(0)));
        // Unknown, too few packets, or one in a hundred lost: the margin
        // is a round trip and two chunks at the cautious rate (80 + 125
        // ms), and the part of a later chunk does not count (68 ms).
        let few = PathReport { sent: CLEAN_AFTER_PACKETS - 1, lost: 0 };
        let lossy = PathReport { sent: 10_000, lost: 100 };
        for path in [None, Some(few), Some(lossy)] {
            let s = start(path);
            assert!(s.start_margin() > ms(200), "{path:?}");
            assert!(!s.ready_to_start(ms(0)), "{path:?}");
        }
        // One in a thousand is still clean.
        let s = start(Some(PathReport { sent: 10_000, lost: 10 }));
        assert!(s.ready_to_start(ms(0)));
    }

    #[test]
    fn checked_parts_of_the_chunk_playback_starts_in_count_toward_the_start() {
        // The 320 kb/s track: 400 ms per 16 KiB chunk (chunk 0 a header);
        // a 10 ms round trip makes the margin 135 ms.
        let mut s = track();
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.poll(ms(0));
        s.on_received(p, 0, ms(20));
        // A quarter of the first audio chunk: 100 ms, under the margin;
        // half: 200 ms, enough.
        s.part_arrived(1, 4096);
        assert_eq!(s.buffered_ahead(ms(400)), ms(100));
        assert!(!s.ready_to_start(ms(400)));
        s.part_arrived(1, 8192);
        assert!(s.ready_to_start(ms(400)), "200 ms can play");
        // Parts of a later chunk do not count: the FLAC-like track's first
        // chunk leaves 68 ms to play, and half of its second is not added.
        let mut s = flac_like();
        let p = s.add_peer(PeerInfo { rtt: ms(10), is_seed: false, has_all: true });
        s.poll(ms(0));
        s.on_received(p, 0, ms(60));
        s.part_arrived(1, 8192);
        assert_eq!(s.buffered_ahead(ms(0)), ms(161));
        assert!(!s.ready_to_start(ms(0)));
    }
}
