//! The order a connection's replies go out in.
//!
//! A node serves each request on its own task, and a chunk is read and
//! checked on a blocking thread: two requests that came together finish
//! their reads in either order, and whichever writes first is sent first.
//! Stream priorities cannot undo that once the bytes are sent: the queue
//! at the bottleneck of the node's uplink is first in, first out, and a
//! congestion window grown over a long play lets quinn hand it a whole
//! chunk at once. Traced on `transatlantic`: a seek's chunk asked of a
//! peer before another chunk came after it, 6.5 ms later than it could.
//!
//! So each request takes a [`Turn`] in the order it was accepted (the
//! order its asker sent it), and a reply's first bytes wait for the
//! replies to the requests before it to have begun, at most
//! [`ORDER_WAIT`]: a reply slow to begin (a disk read, a search) holds the
//! ones after it that long once, not for as long as it takes.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// The longest a reply waits for those to requests accepted before it:
/// ten times a 16 KiB chunk's read and check from the page cache, short
/// against any round trip.
pub const ORDER_WAIT: Duration = Duration::from_millis(2);

/// Most turns kept as begun past one not begun: past this many, the
/// turns not begun before them are passed over (a peer whose chunk
/// request is held up, say behind its own unread replies, and which
/// goes on sending other requests cannot grow the record without bound).
pub const MAX_EARLY: usize = 256;

/// One connection's replies, in the order their requests were accepted.
#[derive(Debug)]
pub struct ReplyOrder {
    /// Turns handed out.
    taken: AtomicU64,
    /// Every turn below this has begun (or was passed over).
    begun: watch::Sender<u64>,
    /// Turns at or above `begun` that have begun.
    early: Mutex<BTreeSet<u64>>,
}

impl Default for ReplyOrder {
    fn default() -> Self {
        Self { taken: AtomicU64::new(0), begun: watch::Sender::new(0), early: Mutex::default() }
    }
}

impl ReplyOrder {
    /// The next turn: take it as a request is accepted.
    pub fn take(self: &std::sync::Arc<Self>) -> Turn {
        let ticket = self.taken.fetch_add(1, Ordering::Relaxed);
        Turn { order: self.clone(), ticket, begun: false }
    }

    fn mark(&self, ticket: u64) {
        let Ok(mut early) = self.early.lock() else { return };
        let mut low = *self.begun.borrow();
        if ticket < low {
            return;
        }
        early.insert(ticket);
        if early.len() > MAX_EARLY {
            low = early.first().copied().unwrap_or(low);
        }
        while early.remove(&low) {
            low += 1;
        }
        self.begun.send_if_modified(|b| {
            let moved = low > *b;
            *b = (*b).max(low);
            moved
        });
    }

    /// Passes over every turn below `ticket` (they were waited for long
    /// enough).
    fn pass_to(&self, ticket: u64) {
        let Ok(mut early) = self.early.lock() else { return };
        let mut low = (*self.begun.borrow()).max(ticket);
        early.retain(|&t| t >= low);
        while early.remove(&low) {
            low += 1;
        }
        self.begun.send_if_modified(|b| {
            let moved = low > *b;
            *b = (*b).max(low);
            moved
        });
    }
}

/// A request's place in its connection's [`ReplyOrder`]. Dropped without
/// [`Turn::begin`], it begins then (a request that sent nothing, or
/// failed, holds no one up).
#[derive(Debug)]
pub struct Turn {
    order: std::sync::Arc<ReplyOrder>,
    ticket: u64,
    begun: bool,
}

impl Turn {
    /// Waits until the replies to the requests accepted before this one
    /// have begun, or [`ORDER_WAIT`] has passed (then those still not
    /// begun are passed over).
    pub async fn wait(&self) {
        if self.begun {
            return;
        }
        let mut rx = self.order.begun.subscribe();
        let ticket = self.ticket;
        let waited = tokio::time::timeout(ORDER_WAIT, rx.wait_for(|b| *b >= ticket)).await;
        if waited.is_err() {
            self.order.pass_to(ticket);
        }
    }

    /// This reply has begun: the next may go.
    pub fn begin(&mut self) {
        if !self.begun {
            self.begun = true;
            self.order.mark(self.ticket);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.begin();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::future::Future;

    use super::*;

    /// Whether `turn`'s wait is over now (polled once, without blocking).
    fn ready(turn: &Turn) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut wait = std::pin::pin!(turn.wait());
        wait.as_mut().poll(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn a_reply_waits_for_those_asked_before_it_and_no_longer_than_the_limit() {
        let order = Arc::new(ReplyOrder::default());
        let (mut a, mut b, c) = (order.take(), order.take(), order.take());
        assert!(ready(&a), "the first goes at once");
        assert!(!ready(&b) && !ready(&c));
        // The third waits for the first two, in any order they begin.
        b.begin();
        assert!(!ready(&c));
        a.begin();
        assert!(ready(&c) && ready(&b));
        // One that never begins holds the next up only for the limit,
        // and the ones after it not at all once it was passed over.
        let (stuck, mut d, e) = (order.take(), order.take(), order.take());
        drop(c);
        assert!(!ready(&d));
        d.wait().await;
        assert!(ready(&d), "the one before it passed over after the limit");
        assert!(!ready(&e));
        d.begin();
        assert!(ready(&e), "not held up by the one passed over");
        drop(stuck);
        assert!(ready(&e));
        // A dropped turn begins: it holds no one up.
        drop((d, e));
        let (f, g) = (order.take(), order.take());
        assert!(!ready(&g));
        drop(f);
        assert!(ready(&g));
        // One never begun while many after it begin: the record of those
        // stays bounded, and they pass over it.
        let stuck = order.take();
        drop(g);
        for _ in 0..MAX_EARLY + 10 {
            order.take().begin();
            assert!(order.early.lock().unwrap().len() <= MAX_EARLY);
        }
        assert!(ready(&order.take()), "the one held up was passed over");
        drop(stuck);
    }
}
