//! Live connections, counted for the cap and the idle exit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Counts live connections (a tunnel is its connection), for the cap and the idle
/// exit.
#[derive(Clone)]
pub(crate) struct Activity(Arc<watch::Sender<usize>>);

/// One counted connection; the count drops when the last holder (the connection's
/// task or its tunnel) lets go.
pub(crate) struct ActiveGuard(Activity);

impl Activity {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    /// A guard if fewer than `max` connections are live.
    pub(crate) fn try_guard(&self, max: usize) -> Option<ActiveGuard> {
        self.0
            .send_if_modified(|n| {
                let room = *n < max;
                if room {
                    *n += 1;
                }
                room
            })
            .then(|| ActiveGuard(self.clone()))
    }

    /// Resolves once nothing has been active for `idle`.
    pub(crate) async fn idle(&self, idle: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            if *rx.borrow_and_update() == 0 {
                tokio::select! {
                    () = tokio::time::sleep(idle) => return,
                    r = rx.changed() => if r.is_err() { return },
                }
            } else if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}
