//! A link between two network namespaces with the latency, jitter, loss
//! and rate of a [`LinkProfile`], in user space: two TUN devices, and a
//! thread per direction that reads each IP packet from one, holds it as
//! [`LinkModel`] says, and writes it into the other.
//!
//! This is what gives namespaces a network where the kernel has no netem
//! (`tc qdisc … netem` is missing here, and so is nftables' `queue`): the
//! bench's NAT scenario puts one between each home router and the public
//! namespace, with the real NATs (nftables) on either side.
//!
//! The devices are made in the caller's namespace; the caller moves them
//! where they belong (`ip link set NAME netns NS`), which keeps them
//! attached to this line. Needs root (CAP_NET_ADMIN).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;

use crate::netem::{Fate, LinkModel, LinkProfile};

/// How often an idle thread looks whether the line was dropped.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Packets held in flight per direction; more are dropped, as a full
/// router buffer drops them.
const IN_FLIGHT: usize = 8192;

/// Counters of a delay line, both directions together.
#[derive(Debug, Default)]
pub struct LineStats {
    /// Packets read from either device.
    pub packets: AtomicU64,
    /// Packets the model lost or dropped (or that found the queue full).
    pub lost: AtomicU64,
}

/// Two TUN devices joined by an emulated link; stops when dropped.
#[derive(Debug)]
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<LineStats>,
}

impl DelayLine {
    /// Makes TUN devices `a` and `b` (names of at most 15 bytes, free in
    /// this namespace) and carries packets between them, each direction
    /// behaving as `profile` says of one direction (its one-way delay is
    /// half the profile's RTT); `seed` makes the draws repeat.
    pub fn new(a: &str, b: &str, profile: &LinkProfile, seed: u64) -> io::Result<Self> {
        let (ta, tb) = (Arc::new(open_tun(a)?), Arc::new(open_tun(b)?));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LineStats::default());
        let mut threads = Vec::new();
        for (from, to, seed) in [(ta.clone(), tb.clone(), seed), (tb, ta, seed ^ 0x5eed)] {
            let (tx, rx) = sync_channel(IN_FLIGHT);
            let model = LinkModel::new(profile.clone(), seed);
            let (s, st) = (stop.clone(), stats.clone());
            threads.push(std::thread::spawn(move || carry_in(&from, model, &tx, &s, &st)));
            let s = stop.clone();
            threads.push(std::thread::spawn(move || carry_out(&to, &rx, &s)));
        }
        Ok(Self { stop, threads, stats })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<LineStats> {
        self.stats.clone()
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads packets from `from` and queues each for its arrival time.
fn carry_in(
    from: &File,
    mut model: LinkModel,
    tx: &SyncSender<(Instant, Vec<u8>)>,
    stop: &AtomicBool,
    stats: &LineStats,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match readable(from, IDLE_CHECK) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        let n = match (&*from).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        stats.packets.fetch_add(1, Ordering::Relaxed);
        match model.admit(n, Instant::now()) {
            Fate::Arrives(at) => match tx.try_send((at, buf[..n].to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    stats.lost.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return,
            },
            Fate::Lost | Fate::Dropped => {
                stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes each queued packet into `to` at its time (they come in order).
fn carry_out(to: &File, rx: &Receiver<(Instant, Vec<u8>)>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let (at, packet) = match rx.recv_timeout(IDLE_CHECK) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let wait = at.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        crate::netem::count_delivery(at, Instant::now());
        // A device that is gone (its namespace removed) ends the line; a
        // packet the kernel refuses is a packet lost.
        if let Err(e) = (&*to).write(&packet)
            && e.kind() == io::ErrorKind::NotFound
        {
            return;
        }
    }
}

/// Whether `f` has a packet to read within `timeout`.
fn readable(f: &File, timeout: Duration) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(f, PollFlags::IN)];
    let secs = timeout.as_secs().try_into().unwrap_or(i64::MAX);
    let t = Timespec { tv_sec: secs, tv_nsec: timeout.subsec_nanos().into() };
    match poll(&mut fds, Some(&t)) {
        Ok(0) => Ok(false),
        Ok(_) if fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) => {
            Err(io::Error::other("the TUN device is gone"))
        }
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A new TUN device `name` (IP packets, no packet-info header), as a file
/// whose reads and writes are its packets.
#[allow(unsafe_code)] // TUNSETIFF has no safe wrapper in libc or rustix.
fn open_tun(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    let file = File::options().read(true).write(true).open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data (arrays of integers and a union of
    // plain-old-data members), for which all zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The name is NUL-terminated: it is shorter than IFNAMSIZ and the rest
    // is zero.
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and may write back the name into) one
    // `struct ifreq`, which `req` is, live and exclusively borrowed for the
    // call; the fd is open, owned by `file`.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}
