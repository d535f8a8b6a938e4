//! Tickets for "a pass of that loop that started after my change": a caller takes a ticket once
//! its change is made, the loop notes at the start of each pass the last ticket it covers and
//! reports it when the pass is done, and the caller waits for its own ticket, not for any pass.
//!
//! The API uses it to answer a write once the directory watcher has loaded a snapshot that
//! includes that write (issue 11: it used to return on any reload, even one that had read the
//! directory before the write).
//!
//! # Guarantees
//! - A pass that began ([`Tickets::begin`]) before a ticket was taken never serves that ticket:
//!   the taker's change happened before the ticket, the ticket before the pass's `begin`.
//! - Served numbers only grow, so a slow pass finishing late never un-serves a later ticket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Tickets taken by changers and served by the passes of one loop.
#[derive(Debug)]
pub struct Tickets {
    /// The last ticket taken (0: none yet).
    taken: AtomicU64,
    /// The last ticket a finished pass covered.
    served: watch::Sender<u64>,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets {
            taken: AtomicU64::new(0),
            served: watch::channel(0).0,
        }
    }
}

impl Tickets {
    /// A ticket for a change already made: served by the first pass that begins after this call.
    pub fn take(&self) -> u64 {
        self.taken.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Called by the loop before a pass reads anything: the last ticket this pass covers.
    pub fn begin(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// Called by the loop when the pass that [`begin`](Self::begin) returned `covered` is done.
    pub fn served(&self, covered: u64) {
        self.served.send_if_modified(|s| {
            let newer = covered > *s;
            if newer {
                *s = covered;
            }
            newer
        });
    }

    /// Waits until `ticket` is served, at most `limit`. True when it was.
    pub async fn wait(&self, ticket: u64, limit: Duration) -> bool {
        let mut rx = self.served.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|s| *s >= ticket))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pass_begun_before_the_ticket_does_not_serve_it() {
        let t = Tickets::default();
        let early = t.begin();
        let ticket = t.take();
        t.served(early);
        assert!(!t.wait(ticket, Duration::from_secs(1)).await);
        let next = t.begin();
        t.served(next);
        assert!(t.wait(ticket, Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_a_later_pass_ends_and_late_passes_never_go_back() {
        let t = std::sync::Arc::new(Tickets::default());
        let ticket = t.take();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.wait(ticket, Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        let covered = t.begin();
        let later = t.take();
        t.served(covered);
        assert!(waiter.await.unwrap());
        // A slow earlier pass reporting after a newer one changes nothing.
        t.served(later);
        t.served(covered);
        assert!(t.wait(later, Duration::from_millis(1)).await);
    }
}
