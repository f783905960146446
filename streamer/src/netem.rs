//! Network emulation in user space: a wrapper around quinn's
//! [`AsyncUdpSocket`] that gives every packet this endpoint sends a one-way
//! delay, jitter, loss (random or bursty) and a rate limit, from a seeded RNG
//! so runs repeat. The kernel here has no netem; this is how latency figures
//! get their network.
//!
//! Each endpoint emulates its own sending direction, so two endpoints with
//! the same [`LinkProfile`] see its full round-trip time between them.
//!
//! Model, per packet, in order:
//! 1. **Loss**: independent with probability `loss`, or, for a bursty
//!    profile, a Gilbert–Elliott chain whose bad state drops every packet,
//!    with the same mean loss and a mean burst of `burst` packets.
//! 2. **Rate**: the packet departs when the link has serialised everything
//!    before it (`bytes × 8 ÷ rate`); if that would queue more than
//!    [`QUEUE_LIMIT`] of traffic, it is dropped (a drop-tail bottleneck).
//! 3. **Delay**: it arrives `delay ± jitter` after departing, never before
//!    the packet sent ahead of it (no reordering).
//!
//! Tasks: one sender task per socket releases packets at their time.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::time::Instant;

use crate::sim::Rng;

/// Most queueing delay the emulated bottleneck holds before it drops:
/// 250 ms, a typical home router buffer.
pub const QUEUE_LIMIT: Duration = Duration::from_millis(250);

/// A link's behaviour, applied to each direction.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkProfile {
    /// A name for tables and the command line.
    pub name: &'static str,
    /// Round-trip time between two endpoints with this profile (each
    /// direction gets half).
    pub rtt: Duration,
    /// Up to this much extra one-way delay, uniformly drawn.
    pub jitter: Duration,
    /// Fraction of packets lost.
    pub loss: f64,
    /// Mean burst length in packets (1 = independent losses).
    pub burst: f64,
    /// Bits per second each direction carries, if limited.
    pub rate: Option<u64>,
}

impl LinkProfile {
    /// The named profiles.
    pub fn all() -> Vec<LinkProfile> {
        let ms = Duration::from_millis;
        let p = |name, rtt, jitter, loss, burst, rate| LinkProfile {
            name,
            rtt: ms(rtt),
            jitter: ms(jitter),
            loss,
            burst,
            rate,
        };
        vec![
            p("lan", 1, 0, 0.0, 1.0, None),
            p("broadband", 20, 1, 0.0, 1.0, Some(50_000_000)),
            p("transatlantic", 80, 2, 0.0, 1.0, Some(20_000_000)),
            p("4g", 60, 15, 0.01, 1.0, Some(10_000_000)),
            p("lossy", 40, 5, 0.05, 3.0, Some(5_000_000)),
        ]
    }

    /// A profile by name.
    pub fn by_name(name: &str) -> Option<LinkProfile> {
        Self::all().into_iter().find(|p| p.name == name)
    }
}

/// A packet the delivery thread hands to the real socket this long or more
/// after its time is late: the machine held the thread up (a busy core, or
/// a virtual machine's host taking the CPU), not the emulated link. A
/// thread's sleep overshoots by 0.1-0.2 ms when the machine is idle.
pub const LATE_AFTER: Duration = Duration::from_millis(1);

/// What every emulated socket and delay line of this process delivered so
/// far, and how far after the link model's times: how far the machine let
/// the emulator keep to its model (what a run's figures carry beyond the
/// profile). Counters only grow: a run's share is the difference of two
/// readings ([`Deliveries::since`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deliveries {
    /// Packets delivered.
    pub packets: u64,
    /// Of those, delivered [`LATE_AFTER`] or more after their time.
    pub late: u64,
    /// Their lateness added up, in microseconds.
    pub late_us: u64,
}

impl Deliveries {
    /// What was delivered between `earlier` and this reading.
    pub fn since(&self, earlier: &Deliveries) -> Deliveries {
        Deliveries {
            packets: self.packets.saturating_sub(earlier.packets),
            late: self.late.saturating_sub(earlier.late),
            late_us: self.late_us.saturating_sub(earlier.late_us),
        }
    }

    /// The mean lateness of a packet, if any was delivered.
    pub fn mean_late(&self) -> Option<Duration> {
        (self.packets > 0).then(|| Duration::from_micros(self.late_us / self.packets))
    }
}

/// The counts so far ([`Deliveries`]).
pub fn deliveries() -> Deliveries {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Deliveries {
        packets: load(&DELIVERED),
        late: load(&DELIVERED_LATE),
        late_us: load(&DELIVERED_LATE_US),
    }
}

static DELIVERED: AtomicU64 = AtomicU64::new(0);
static DELIVERED_LATE: AtomicU64 = AtomicU64::new(0);
static DELIVERED_LATE_US: AtomicU64 = AtomicU64::new(0);

/// Counts a packet due `at` and handed over `now` (by an emulated socket
/// or a [`crate::delayline`]): true if late.
pub(crate) fn count_delivery(at: Instant, now: Instant) -> bool {
    let behind = now.saturating_duration_since(at);
    let late = behind >= LATE_AFTER;
    // At most an hour a packet: the sum wraps only after billions of them.
    let us = u64::try_from(behind.as_micros()).unwrap_or(u64::MAX).min(3_600_000_000);
    DELIVERED_LATE_US.fetch_add(us, Ordering::Relaxed);
    DELIVERED.fetch_add(1, Ordering::Relaxed);
    if late {
        DELIVERED_LATE.fetch_add(1, Ordering::Relaxed);
    }
    late
}

/// Counters of one emulated socket.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Packets handed to the link.
    pub sent: AtomicU64,
    /// Packets lost (random or burst).
    pub lost: AtomicU64,
    /// Packets dropped at the full queue.
    pub dropped: AtomicU64,
    /// Packets delivered [`LATE_AFTER`] or more after their time.
    pub late: AtomicU64,
}

/// What happens to one packet on the link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fate {
    /// It arrives at this time.
    Arrives(Instant),
    /// Lost on the way (random or in a burst).
    Lost,
    /// Dropped at the bottleneck's full queue.
    Dropped,
}

/// One direction of a link: the model above, packet by packet, for the
/// emulated socket and for anything else that carries packets (the bench's
/// delay lines between network namespaces).
#[derive(Debug)]
pub struct LinkModel {
    profile: LinkProfile,
    rng: Rng,
    bad: bool,
    link_free: Instant,
    last_arrival: Instant,
}

impl LinkModel {
    /// A link behaving as `profile`; `seed` makes its draws repeat.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        let now = Instant::now();
        Self { profile, rng: Rng::new(seed), bad: false, link_free: now, last_arrival: now }
    }

    /// The fate of a packet of `len` bytes sent `now`.
    pub fn admit(&mut self, len: usize, now: Instant) -> Fate {
        let p = &self.profile;
        // 1. Loss.
        let lost = if p.loss <= 0.0 {
            false
        } else if p.burst <= 1.0 {
            self.rng.next_f64() < p.loss
        } else {
            // Gilbert–Elliott: leave the bad state with 1/burst; enter it so
            // that the stationary share of bad packets is `loss`.
            let leave = 1.0 / p.burst;
            let enter = (p.loss * leave / (1.0 - p.loss)).min(1.0);
            let draw = self.rng.next_f64();
            self.bad = if self.bad { draw >= leave } else { draw < enter };
            self.bad
        };
        if lost {
            return Fate::Lost;
        }
        // 2. Rate, with a drop-tail queue.
        let start = self.link_free.max(now);
        if start.duration_since(now) > QUEUE_LIMIT {
            return Fate::Dropped;
        }
        let serialise =
            p.rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(len as f64 * 8.0 / r as f64));
        let departs = start + serialise;
        self.link_free = departs;
        // 3. Delay and jitter, without reordering.
        let jitter = p.jitter.mul_f64(self.rng.next_f64());
        let arrives = (departs + p.rtt / 2 + jitter).max(self.last_arrival);
        self.last_arrival = arrives;
        Fate::Arrives(arrives)
    }
}

struct Packet {
    at: Instant,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<std::net::IpAddr>,
    contents: Vec<u8>,
}

/// A UDP socket whose sends go through an emulated link.
pub struct EmulatedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    profile: LinkProfile,
    model: Mutex<LinkModel>,
    queue: std::sync::mpsc::Sender<Packet>,
    stats: Arc<LinkStats>,
}

impl fmt::Debug for EmulatedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedSocket")
            .field("profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

impl EmulatedSocket {
    /// Wraps `inner`; `seed` makes the loss and jitter draws repeat. Must be
    /// called inside a tokio runtime (`inner` is a tokio socket).
    pub fn wrap(inner: Arc<dyn AsyncUdpSocket>, profile: LinkProfile, seed: u64) -> Arc<Self> {
        let (queue, rx) = std::sync::mpsc::channel::<Packet>();
        let sender = inner.clone();
        let stats = Arc::new(LinkStats::default());
        let counted = stats.clone();
        // A thread of its own, sleeping to each packet's time: tokio's
        // timer wheel rounds a deadline up to the next millisecond, which
        // delivered packets a millisecond late on average (2 ms on every
        // round trip the profile did not ask for). It ends when the socket
        // is dropped.
        let delivery = std::thread::Builder::new().name("chorus-netem".into()).spawn(move || {
            while let Ok(p) = rx.recv() {
                let wait = p.at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                if count_delivery(p.at, Instant::now()) {
                    counted.late.fetch_add(1, Ordering::Relaxed);
                }
                let t = Transmit {
                    destination: p.destination,
                    ecn: p.ecn,
                    contents: &p.contents,
                    segment_size: None,
                    src_ip: p.src_ip,
                };
                // A full kernel buffer is a loss, as on a real link; retry
                // briefly first.
                for _ in 0..3 {
                    match sender.try_send(&t) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        _ => break,
                    }
                }
            }
        });
        if let Err(e) = delivery {
            tracing::warn!("emulated link: no delivery thread ({e}); every packet is lost");
        }
        Arc::new(Self {
            inner,
            model: Mutex::new(LinkModel::new(profile.clone(), seed)),
            profile,
            queue,
            stats,
        })
    }

    /// Counters.
    pub fn stats(&self) -> Arc<LinkStats> {
        self.stats.clone()
    }
}

impl AsyncUdpSocket for EmulatedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let fate = model.admit(transmit.contents.len(), Instant::now());
        drop(model);
        let arrives = match fate {
            Fate::Arrives(at) => at,
            Fate::Lost => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Fate::Dropped => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        let packet = Packet {
            at: arrives,
            destination: transmit.destination,
            ecn: transmit.ecn,
            src_ip: transmit.src_ip,
            contents: transmit.contents.to_vec(),
        };
        self.queue.send(packet).map_err(|_| io::Error::other("emulated link closed"))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The emulator queues every send, so the socket is always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_handed_over_a_millisecond_after_its_time_counts_late() {
        let at = Instant::now();
        let before = deliveries();
        assert!(!count_delivery(at, at));
        assert!(!count_delivery(at, at + Duration::from_micros(999)));
        // Early (a clock read before the time) is not late either.
        assert!(!count_delivery(at + Duration::from_millis(5), at));
        assert!(count_delivery(at, at + LATE_AFTER));
        assert!(count_delivery(at, at + Duration::from_millis(12)));
        // The process-wide counts include these (other tests may add more).
        let after = deliveries().since(&before);
        assert!(after.packets >= 5);
        assert!(after.late >= 2);
        // 999 us, 1 ms and 12 ms behind; the others on time or early.
        assert!(after.late_us >= 999 + 1000 + 12_000);
    }
}
