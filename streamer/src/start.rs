//! The start path every listener takes (`chorus play`, `demo`, `bench`):
//! a [`Pool`] of connections keyed by peer id, dialled in parallel, and
//! [`Pool::start`], which asks the first peer whose QUIC handshake
//! completes for everything needed to start ([`Peer::start`]) on the same
//! flight as the hello. Nothing waits for a slow or dead peer: a peer
//! that has not answered in two of its round trips (and a little) is
//! hedged against by asking the next ([`hedge_after`]), the first answer
//! starts playback, and the others join the running fetch as sources
//! ([`Pool::join_sources`]).
//!
//! Round trips to the first note, to a peer never seen: the QUIC handshake,
//! then one request whose response carries the manifest and the head of the
//! track on the first flight (the server's initial congestion window is
//! sized for it, [`crate::tls::INITIAL_WINDOW`]). To a peer that gave this
//! node a ticket ([`crate::resume`]), from any process, the request rides
//! in the handshake ([`Pool::dial_asking`]) and the answer comes with the
//! peer's: one round trip. With a connection already up (the next track, a
//! replay) only the request remains.
//!
//! Tasks: one dial task per address (handshake, then hello, and beside the
//! hello the answer to a sealed start), reporting to the pool;
//! [`Pool::join_sources`] runs one task that asks each other peer for the
//! manifest and what it holds.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_protocol::message::Want;
use chorus_protocol::{PeerId, TrackId};
use tokio::sync::{Notify, mpsc};

use crate::client::{Peer, START_BUDGET, StartAnswer};
use crate::error::{Error, Result};
use crate::fetch::Source;
use crate::transport::Transport;

/// How long a start waits for a peer's answer before it asks the next
/// peer too: two of its round trips and [`HEDGE_SLACK`]. An honest answer's
/// head comes one round trip after the request and its bytes' time after
/// that; a peer that handshakes at once and then sits on the request (a
/// stranger's way to stall a listener for [`crate::client::REQUEST_TIMEOUT`]
/// per peer, in turn) costs this instead. A slow honest peer hedged
/// against only costs the other peer's answer, stopped when the first
/// answer is in.
pub fn hedge_after(rtt: Duration) -> Duration {
    rtt * 2 + HEDGE_SLACK
}

/// See [`hedge_after`]: a head of 40 KB takes 65 ms at 5 Mbit/s.
pub const HEDGE_SLACK: Duration = Duration::from_millis(100);

/// Sleeps until `at`; never wakes without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When the steps of a start happened, from the pool's creation: for `-v`
/// and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// `(step, offset)` in the order they happened.
    pub steps: Vec<(&'static str, Duration)>,
}

impl Timeline {
    fn mark(&mut self, step: &'static str, since: Instant) {
        self.steps.push((step, since.elapsed()));
    }

    fn mark_at(&mut self, step: &'static str, since: Instant, at: Option<Instant>) {
        if let Some(at) = at {
            self.steps.push((step, at.saturating_duration_since(since)));
        }
    }
}

/// A track ready to play: the start answer and the peer that gave it.
#[derive(Debug)]
pub struct Started {
    /// What came back.
    pub answer: StartAnswer,
    /// The peer that answered, as a fetch source.
    pub source: Source,
    /// When each step happened.
    pub timeline: Timeline,
    /// True if the answer came with the peer's handshake, to a request
    /// sealed in it ([`crate::resume`]): one round trip to the first note.
    pub sealed: bool,
}

#[derive(Default)]
struct State {
    /// Peers whose QUIC handshake completed (their hello may still be on
    /// its way), in that order.
    handshaken: Vec<Peer>,
    /// Peers whose hello arrived: they replace their handshaken entry.
    ready: Vec<Peer>,
    /// Dials still running.
    pending: usize,
    /// Searches still running that may add peers (a LAN browse).
    searching: usize,
    /// How each address came to be dialled ("given", "lan", "dht"…).
    origins: Vec<(SocketAddr, &'static str)>,
    /// Why dials failed, for the error when none succeeds.
    failures: Vec<String>,
    /// Peers dialled with the first start request sealed in the handshake
    /// ([`crate::resume`]).
    sealed: Vec<PeerId>,
    /// Dials that may still seal the first start request.
    seals_left: usize,
    /// Sealed dials whose handshake, or whose answer, has not come yet.
    sealing: usize,
    /// Answers that came with a handshake, in the order they came.
    sealed_answers: Vec<SealedAnswer>,
    /// Sealed dials whose peer sent no answer with its handshake (it
    /// could not open the request): the start asks the usual way.
    sealed_refused: usize,
    /// True once the first start took a sealed answer or gave up on them:
    /// later ones are dropped (which stops their streams).
    sealed_done: bool,
}

impl State {
    /// The first start is settled: sealed answers that came are dropped
    /// (which stops their streams), and later ones will be.
    fn close_sealed(&mut self) {
        self.sealed_done = true;
        self.sealed_answers.clear();
    }
}

/// A start answer that came with a peer's handshake.
struct SealedAnswer {
    peer: Peer,
    answer: StartAnswer,
    /// When the peer's handshake completed.
    handshake: Instant,
}

/// Peers a start's request is sealed to (the first ones dialled that gave a
/// ticket): each sends a start response (the manifest and up to
/// [`START_BUDGET`] of audio) with its handshake, a burst of the initial
/// window. Two such bursts at once overflowed a slow link's queue and
/// slowed both (bench: lossy known starts 215 -> 367 ms), so one.
pub const SEALED_PEERS: usize = 1;

/// How long the other dials wait for a sealed one to send its first
/// packet ([`Pool::dial_asking`]): a task's turn, far less than a round
/// trip.
const SEALED_FIRST: Duration = Duration::from_millis(1);

/// A search for peers under way (see [`Pool::searching`]).
#[derive(Debug)]
pub struct Searching(Arc<Pool>);

impl Drop for Searching {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.searching = s.searching.saturating_sub(1);
        drop(s);
        self.0.changed.notify_waiters();
    }
}

/// Connections to the peers a listener knows, dialled at once.
pub struct Pool {
    transport: Transport,
    /// The start request a listener knows it will make first, sealed into
    /// the handshakes of peers that gave it a ticket.
    first: Option<chorus_protocol::message::StartRequest>,
    epoch: Instant,
    state: Mutex<State>,
    changed: Notify,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("transport", &self.transport).finish_non_exhaustive()
    }
}

impl Pool {
    /// Dials every address at once (each with the transport's connect
    /// timeout) and returns at once.
    pub fn dial(transport: &Transport, addrs: &[(SocketAddr, Option<PeerId>)]) -> Arc<Self> {
        Self::dial_asking(transport, addrs, None)
    }

    /// [`Pool::dial`], knowing the first start: `(want, at)`. To peers that
    /// gave this node a ticket (up to [`SEALED_PEERS`]) the request goes
    /// sealed in the handshake, and [`Pool::start`] takes their answer
    /// from it: one round trip to the first note.
    pub fn dial_asking(
        transport: &Transport,
        addrs: &[(SocketAddr, Option<PeerId>)],
        first: Option<(&Want, Duration)>,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            transport: transport.clone(),
            first: first.map(|(w, at)| crate::client::start_request(w, at, START_BUDGET)),
            epoch: Instant::now(),
            state: Mutex::new(State {
                pending: addrs.len(),
                origins: addrs.iter().map(|(a, _)| (*a, "given")).collect(),
                seals_left: SEALED_PEERS,
                ..State::default()
            }),
            changed: Notify::new(),
        });
        let seals: Vec<bool> = addrs.iter().map(|&(_, id)| pool.take_seal(id)).collect();
        // The sealed dials' first packets go first: the others' would queue
        // ahead of them on the listener's uplink (four 1,252-byte Initials
        // are 2 ms at 20 Mbit/s, 40 ms at 1 Mbit/s), and the first note
        // waits for the sealed answer.
        let wait = if seals.contains(&true) { SEALED_FIRST } else { Duration::ZERO };
        let mut dials: Vec<_> = addrs.iter().copied().zip(seals).collect();
        dials.sort_by_key(|&(_, seal)| !seal);
        for ((addr, id), seal) in dials {
            let pool = pool.clone();
            tokio::spawn(async move {
                if !seal && !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                pool.dial_one(addr, id, true, seal).await;
            });
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a push or a counter change: a poisoned state is
        // still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Dials `addr`; `counted` dials hold a start with no peer yet until
    /// they end; `seal`: with the first start sealed in the handshake
    /// ([`Pool::take_seal`]).
    async fn dial_one(&self, addr: SocketAddr, id: Option<PeerId>, counted: bool, seal: bool) {
        let result = async {
            let (conn, actual, sealed) = match (&self.first, id) {
                (Some(request), Some(id)) if seal => {
                    let dialled = self.transport.dial_sealed(addr, id, request).await;
                    let mut s = self.lock();
                    match &dialled {
                        // Its answer is still to come.
                        Ok((_, actual, true)) => s.sealed.push(*actual),
                        _ => s.sealing -= 1,
                    }
                    drop(s);
                    dialled?
                }
                _ => {
                    let (conn, actual) = self.transport.dial(addr, id).await?;
                    (conn, actual, false)
                }
            };
            let resume = self.transport.resume().clone();
            let provisional =
                Peer::before_hello(conn.clone(), actual, addr).with_resume(resume.clone());
            {
                let mut s = self.lock();
                if s.handshaken.iter().all(|p| p.id() != actual) {
                    s.handshaken.push(provisional.clone());
                }
            }
            self.changed.notify_waiters();
            let hello = self.transport.hello(self.transport.listen_addrs());
            let greet = Peer::handshake(conn, actual, addr, chorus_protocol::Message::Hello(hello));
            // The answer to a sealed start comes with the handshake: read
            // it while the hello goes.
            let (_, greeted) = tokio::join!(self.read_sealed(provisional, sealed), greet);
            greeted.map(|p| p.with_resume(resume))
        }
        .await;
        let mut s = self.lock();
        if counted {
            s.pending -= 1;
        }
        match result {
            Ok(peer) => {
                self.transport.learn_from(&peer);
                if s.ready.iter().all(|p| p.id() != peer.id()) {
                    s.ready.push(peer);
                }
            }
            Err(e) => {
                let why = if e.refused_by_tls() {
                    "the TLS handshake failed: one of us is in a private swarm the other \
                     is not (same --swarm KEY on both?)"
                        .to_owned()
                } else {
                    e.to_string()
                };
                tracing::warn!("skipping peer {addr}: {why}");
                s.handshaken.retain(|p| p.addr() != addr);
                s.failures.push(format!("{addr}: {why}"));
            }
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// True (and one seal fewer left) if the first start may be sealed to
    /// `peer`: it gave this node a ticket. Decided before the dial starts,
    /// so a start never misses a sealed dial about to begin.
    fn take_seal(&self, peer: Option<PeerId>) -> bool {
        let (Some(peer), Some(_)) = (peer, &self.first) else { return false };
        let now = std::time::SystemTime::now();
        let mut s = self.lock();
        if s.seals_left == 0 || self.transport.resume().ticket(&peer, now).is_none() {
            return false;
        }
        s.seals_left -= 1;
        s.sealing += 1;
        true
    }

    /// Reads the start answer that comes with `peer`'s handshake (if its
    /// dial was `sealed`) for [`Pool::start`].
    async fn read_sealed(&self, peer: Peer, sealed: bool) {
        let (Some(request), true) = (&self.first, sealed) else { return };
        let handshake = Instant::now();
        let at = Duration::from_millis(u64::from(request.at_ms));
        let answer = peer.start_sealed(&request.want, at, request.budget).await;
        let mut s = self.lock();
        s.sealing -= 1;
        match answer {
            Ok(answer) if !s.sealed_done => {
                s.sealed_answers.push(SealedAnswer { peer, answer, handshake });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("{}: no start with the handshake: {e}", peer.addr());
                s.sealed_refused += 1;
            }
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// The first answer that comes with a handshake, waiting while sealed
    /// dials are under way: `None` once none can come, or, while no sealed
    /// handshake has completed, a round trip after a peer without one is
    /// ready (asking it is then as quick).
    async fn first_sealed(&self) -> Option<SealedAnswer> {
        let mut until: Option<Instant> = None;
        let answer = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if !s.sealed_answers.is_empty() {
                    // The others are dropped: their streams are stopped.
                    break Some(s.sealed_answers.remove(0));
                }
                if s.sealing == 0 {
                    break None;
                }
                // A sealed peer whose handshake completed is sending its
                // answer: asking another would be slower (and compete with
                // it for the link). One still handshaking may be slow or
                // gone.
                let answering = s.sealed.len() > s.sealed_answers.len() + s.sealed_refused;
                let other = s.handshaken.iter().find(|p| !s.sealed.contains(&p.id()));
                if let Some(p) = other.filter(|_| !answering) {
                    let t = *until.get_or_insert_with(|| Instant::now() + p.connection().rtt());
                    if Instant::now() >= t {
                        break None;
                    }
                }
                if s.pending + s.searching == 0 && s.handshaken.is_empty() {
                    break None;
                }
            }
            match until {
                Some(t) => {
                    let t = tokio::time::Instant::from_std(t);
                    let _ = tokio::time::timeout_at(t, notified).await;
                }
                None => notified.await,
            }
        };
        self.lock().close_sealed();
        answer
    }

    /// The start of `want` will not use an answer that came with a
    /// handshake (it plays from the cache): if it is the start sealed in
    /// the dials, those answers that came, or come, are dropped, which
    /// stops their streams.
    pub fn forgo_sealed(&self, want: &Want) {
        if self.first.as_ref().is_none_or(|r| &r.want != want) {
            return;
        }
        self.lock().close_sealed();
    }

    /// True if the pool has a peer or may still get one (a dial or a
    /// search under way).
    pub fn has_prospects(&self) -> bool {
        let s = self.lock();
        !s.handshaken.is_empty() || !s.ready.is_empty() || s.pending + s.searching > 0
    }

    /// Dials one more peer, found after the pool began (`how`: "lan",
    /// "dht"…), unless the pool has it already.
    pub fn add(self: &Arc<Self>, addr: SocketAddr, id: Option<PeerId>, how: &'static str) {
        if !self.claim(addr, id, how, true) {
            return;
        }
        let pool = self.clone();
        let seal = self.take_seal(id);
        tokio::spawn(async move { pool.dial_one(addr, id, true, seal).await });
    }

    /// Dials a peer that may well be gone (one remembered from an earlier
    /// run): a start with no peer yet waits for it at most `wait`, not the
    /// whole connect timeout; it joins whenever it answers.
    pub fn add_hopeful(
        self: &Arc<Self>,
        addr: SocketAddr,
        id: Option<PeerId>,
        how: &'static str,
        wait: Duration,
    ) {
        if !self.claim(addr, id, how, false) {
            return;
        }
        let guard = self.searching();
        let seal = self.take_seal(id);
        let pool = self.clone();
        tokio::spawn(async move {
            let dial = pool.dial_one(addr, id, false, seal);
            tokio::pin!(dial);
            tokio::select! {
                () = &mut dial => return,
                () = tokio::time::sleep(wait) => drop(guard),
            }
            dial.await;
        });
    }

    /// Records `addr` as dialled (counted in `pending` or not); false if
    /// the pool has that peer already.
    fn claim(
        &self,
        addr: SocketAddr,
        id: Option<PeerId>,
        how: &'static str,
        counted: bool,
    ) -> bool {
        let mut s = self.lock();
        let known = |p: &Peer| Some(p.id()) == id || p.addr() == addr;
        if s.handshaken.iter().any(known)
            || s.ready.iter().any(known)
            || s.origins.iter().any(|(a, _)| *a == addr)
        {
            return false;
        }
        s.origins.push((addr, how));
        if counted {
            s.pending += 1;
        }
        true
    }

    /// How the peer at `addr` came to be dialled.
    pub fn origin(&self, addr: SocketAddr) -> Option<&'static str> {
        self.lock().origins.iter().find(|(a, _)| *a == addr).map(|(_, how)| *how)
    }

    /// Marks a search for more peers under way: while the guard lives, a
    /// start with no peer yet waits for what it finds (each found peer is
    /// [`Pool::add`]ed).
    pub fn searching(self: &Arc<Self>) -> Searching {
        self.lock().searching += 1;
        Searching(self.clone())
    }

    /// When the pool began dialling: the epoch of every [`Timeline`].
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The transport the pool dials with.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Peers whose hello has arrived.
    pub fn peers(&self) -> Vec<Peer> {
        self.lock().ready.clone()
    }

    /// True while some dial has not ended.
    pub fn dialling(&self) -> bool {
        self.lock().pending > 0
    }

    /// Dials still waiting for their QUIC handshake (peers not heard from
    /// at all yet, as opposed to ones whose hello is on its way).
    pub fn unreached(&self) -> usize {
        let s = self.lock();
        let greeting =
            s.handshaken.iter().filter(|p| s.ready.iter().all(|r| r.id() != p.id())).count();
        s.pending.saturating_sub(greeting)
    }

    /// Why dials failed so far.
    pub fn failures(&self) -> Vec<String> {
        self.lock().failures.clone()
    }

    /// Waits until every dial has ended, or `grace` after the first peer
    /// answered, whichever comes first.
    pub async fn settle(&self, grace: Duration) {
        let mut until = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.lock();
                if s.pending + s.searching == 0 {
                    return;
                }
                if !s.ready.is_empty() && until.is_none() {
                    until = Some(tokio::time::Instant::now() + grace);
                }
            }
            match until {
                Some(t) => {
                    if tokio::time::timeout_at(t, notified).await.is_err() {
                        return;
                    }
                }
                None => notified.await,
            }
        }
    }

    /// A handshaken peer not in `tried` (the earliest first), waiting for
    /// one while dials are running; `None` once none is left.
    async fn next_untried(&self, tried: &[PeerId]) -> Option<Peer> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.lock();
                // A peer whose hello arrived is the better handle.
                let fresh = |p: &&Peer| !tried.contains(&p.id());
                if let Some(p) =
                    s.ready.iter().find(fresh).or_else(|| s.handshaken.iter().find(fresh))
                {
                    return Some(p.clone());
                }
                if s.pending + s.searching == 0 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Asks for everything needed to start `want` at `at`, from the first
    /// peer whose handshake completes; if it cannot serve it, from the
    /// next, and if it has not answered in [`hedge_after`] its round trip,
    /// from the next as well (the first answer wins). One request, on the
    /// same flight as that peer's hello.
    pub async fn start(&self, want: &Want, at: Duration) -> Result<Started> {
        let mut timeline = Timeline::default();
        let request = crate::client::start_request(want, at, START_BUDGET);
        if self.first.as_ref() == Some(&request) {
            if let Some(SealedAnswer { peer, answer, handshake }) = self.first_sealed().await {
                // It went with the dial's first packet, at the pool's start.
                timeline.steps.push(("start sealed in the handshake", Duration::ZERO));
                timeline.mark_at("handshake done", self.epoch, Some(handshake));
                return Ok(self.started(peer, answer, timeline, true));
            }
            if self.lock().sealed_refused > 0 {
                timeline.mark("sealed start refused", self.epoch);
            }
        }
        // Ask the first peer; while it has not answered, ask the next one
        // too once its hedge time is up ([`hedge_after`]), and the next at
        // once when one refuses. The first answer wins; dropping the other
        // asks (on return) stops their streams.
        let mut asking: tokio::task::JoinSet<(Peer, Result<StartAnswer>)> =
            tokio::task::JoinSet::new();
        let mut tried = Vec::new();
        let mut last = None;
        let mut hedge_at: Option<tokio::time::Instant> = None;
        let mut no_more = false;
        loop {
            let due = !no_more
                && (asking.is_empty()
                    || hedge_at.is_some_and(|t| t <= tokio::time::Instant::now()));
            if asking.is_empty() && no_more {
                break;
            }
            let hedge = hedge_at.filter(|_| !due && !no_more);
            tokio::select! {
                biased;
                Some(done) = asking.join_next(), if !asking.is_empty() => match done {
                    Ok((peer, Ok(answer))) => {
                        return Ok(self.started(peer, answer, timeline, false));
                    }
                    Ok((peer, Err(e))) => {
                        tracing::debug!("{} cannot start {want:?}: {e}", peer.addr());
                        timeline.mark("start refused", self.epoch);
                        last = Some(e);
                        // The next peer is asked now, not at the hedge.
                        hedge_at = Some(tokio::time::Instant::now());
                    }
                    Err(e) => last = Some(Error::NoPeer(format!("a start task failed: {e}"))),
                },
                peer = self.next_untried(&tried), if due => match peer {
                    None => no_more = true,
                    Some(peer) => {
                        tried.push(peer.id());
                        if timeline.steps.is_empty() {
                            timeline.mark("handshake done", self.epoch);
                        }
                        let step = if asking.is_empty() {
                            "start request sent"
                        } else {
                            "start hedged: another peer asked"
                        };
                        timeline.mark(step, self.epoch);
                        let wait = hedge_after(peer.connection().rtt());
                        hedge_at = Some(tokio::time::Instant::now() + wait);
                        let want = want.clone();
                        asking.spawn(async move {
                            let answer = peer.start(&want, at, START_BUDGET).await;
                            (peer, answer)
                        });
                    }
                },
                () = sleep_until(hedge) => {}
            }
        }
        Err(last.unwrap_or_else(|| {
            let why = self.failures().join("; ");
            Error::NoPeer(if why.is_empty() {
                "no peer to ask".to_owned()
            } else {
                format!("none could be reached ({why})")
            })
        }))
    }

    fn started(
        &self,
        peer: Peer,
        mut answer: StartAnswer,
        mut timeline: Timeline,
        sealed: bool,
    ) -> Started {
        timeline.mark_at("manifest received", self.epoch, answer.arrivals.0);
        timeline.mark_at("first chunk received", self.epoch, answer.arrivals.1);
        timeline.mark("head received", self.epoch);
        let head_rest = answer.rest.take().map(|r| Arc::new(Mutex::new(Some(r))));
        let source = Source { peer, is_seed: answer.origin, have: answer.have.clone(), head_rest };
        Started { answer, source, timeline, sealed }
    }

    /// The other peers of the pool that hold `track` (asked for its
    /// manifest and what they hold), as they answer, including peers whose
    /// dial completes later. `skip` is the source already in use, if any.
    /// Bounded: one answer per peer of the pool.
    pub fn join_sources(
        self: &Arc<Self>,
        track: TrackId,
        skip: Option<PeerId>,
    ) -> mpsc::Receiver<Source> {
        let (tx, rx) = mpsc::channel(16);
        let pool = self.clone();
        tokio::spawn(async move {
            let mut asked: Vec<PeerId> = skip.into_iter().collect();
            while let Some(peer) = pool.next_untried(&asked).await {
                asked.push(peer.id());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match peer.manifest_and_origin(track).await {
                        Ok((_, is_seed, have)) => {
                            let _ = tx.send(Source { peer, is_seed, have, head_rest: None }).await;
                        }
                        Err(e) => {
                            tracing::debug!("{} has no {}: {e}", peer.addr(), track.fmt_short())
                        }
                    }
                });
            }
        });
        rx
    }
}
