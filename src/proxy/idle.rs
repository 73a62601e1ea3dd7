//! Timers against clients that hold resources without using them: a connection or
//! tunnel on which no byte moves for a while is closed, and a listener that cannot
//! accept (out of file descriptors) backs off instead of spinning.

use std::time::{Duration, Instant};

/// Resolves once `progress()` (a byte count that only grows) has not changed for
/// `timeout`. Checks four times per `timeout`, so the close comes between `timeout`
/// and 1.25 × `timeout` after the last byte: a timer per connection that wakes a few
/// times per period costs nothing next to a byte count per read.
pub(crate) async fn stalled(timeout: Duration, progress: impl Fn() -> u64) {
    let step = (timeout / 4).max(Duration::from_millis(5));
    let mut last = progress();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(step).await;
        let now = progress();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= timeout {
            return;
        }
    }
}

/// The pause after a failed `accept`: doubles from 10 ms up to 1 s while accept keeps
/// failing, back to the start once it succeeds. Out of file descriptors, the pending
/// connection stays in the backlog and every retry fails at once; without a pause the
/// loop would spin on it.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(crate) fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..10).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(10));
    }

    #[tokio::test]
    async fn stalled_waits_for_a_quiet_period_not_a_fixed_time() {
        let timeout = Duration::from_millis(200);
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let watch = tokio::spawn(async move {
            stalled(timeout, || c.load(Ordering::Relaxed)).await;
            Instant::now()
        });
        // A byte every 120 ms keeps it open, for longer than the timeout.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(120)).await;
            count.fetch_add(1, Ordering::Relaxed);
            assert!(!watch.is_finished());
        }
        let last_byte = Instant::now();
        let closed = watch.await.unwrap();
        let quiet = closed - last_byte;
        assert!(
            quiet >= timeout && quiet < timeout * 2,
            "closed after {quiet:?} without bytes"
        );
    }
}
